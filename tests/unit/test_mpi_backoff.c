/* Kind mpi's wait for a message (runtime/mpi/backoff.h): a pause, then
 * yields up to a millisecond -- never a nap early in a wait, which cost a
 * trivial round trip hundreds of microseconds -- then naps doubling up to
 * their bound.  The steps are asked for at given times: no clock read. */
#include "runner.h"
#include "mpi/backoff.h"

static int64_t nap_at(pl_mpi_backoff *b, int64_t after_ns) {
  int64_t nap = -1;
  CHECK_EQ_INT(pl_mpi_backoff_step(b, b->since + after_ns, &nap), PL_MPI_NAP);
  return nap;
}

static void test_pauses_first(void) {
  pl_mpi_backoff b;
  pl_mpi_backoff_start(&b);
  int64_t nap = -1;
  CHECK_EQ_INT(pl_mpi_backoff_step(&b, b.since, &nap), PL_MPI_PAUSE);
  CHECK_EQ_INT(pl_mpi_backoff_step(&b, b.since + PL_MPI_SPIN_NS - 1, &nap), PL_MPI_PAUSE);
  CHECK_EQ_INT(nap, -1);
}

static void test_yields_and_never_naps_within_a_millisecond(void) {
  pl_mpi_backoff b;
  pl_mpi_backoff_start(&b);
  int64_t nap = -1;
  for (int64_t t = PL_MPI_SPIN_NS; t < 1000 * 1000; t += 10 * 1000)
    CHECK_EQ_INT(pl_mpi_backoff_step(&b, b.since + t, &nap), PL_MPI_YIELD);
  CHECK_EQ_INT(nap, -1);
}

static void test_naps_double_up_to_their_bound(void) {
  pl_mpi_backoff b;
  pl_mpi_backoff_start(&b);
  int64_t prev = nap_at(&b, PL_MPI_YIELD_NS);
  CHECK_EQ_INT(prev, PL_MPI_FIRST_NAP_NS);
  for (int i = 0; i < 20; i++) {
    int64_t nap = nap_at(&b, PL_MPI_YIELD_NS + i);
    CHECK(nap == prev * 2 || nap == PL_MPI_MAX_NAP_NS);
    CHECK(nap <= PL_MPI_MAX_NAP_NS);
    prev = nap;
  }
  CHECK_EQ_INT(prev, PL_MPI_MAX_NAP_NS);
}

static void test_a_new_wait_starts_over(void) {
  pl_mpi_backoff b;
  pl_mpi_backoff_start(&b);
  for (int i = 0; i < 10; i++) (void)nap_at(&b, PL_MPI_YIELD_NS);
  pl_mpi_backoff_start(&b);
  int64_t nap = -1;
  CHECK_EQ_INT(pl_mpi_backoff_step(&b, b.since + 1, &nap), PL_MPI_PAUSE);
  CHECK_EQ_INT(nap_at(&b, PL_MPI_YIELD_NS), PL_MPI_FIRST_NAP_NS);
}

int main(void) {
  static const test_case tests[] = {
      {"a wait pauses first", test_pauses_first},
      {"then yields, and never naps within its first millisecond", test_yields_and_never_naps_within_a_millisecond},
      {"then naps, doubling up to their bound", test_naps_double_up_to_their_bound},
      {"a new wait starts over", test_a_new_wait_starts_over},
      {NULL, NULL}};
  return run_tests(tests, 30);
}
