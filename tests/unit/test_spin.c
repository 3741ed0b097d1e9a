/* The spin gauge: spins that do not pay (a peer that cannot run because
 * every CPU is taken) make the next chances to spin be skipped, more of
 * them while failures go on; spins that pay bring spinning back. */
#include "runner.h"
#include "core/spin.h"

/* How many of the next `n` chances to spin the gauge allows. */
static int allowed(pl_spin_gauge *g, int n) {
  int k = 0;
  for (int i = 0; i < n; i++) k += pl_spin_gauge_allows(g);
  return k;
}

static void test_fresh_gauge_spins(void) {
  pl_spin_gauge g;
  pl_spin_gauge_init(&g);
  CHECK_EQ_INT(allowed(&g, 100), 100);
}

static void test_failures_back_off(void) {
  pl_spin_gauge g;
  pl_spin_gauge_init(&g);
  pl_spin_gauge_note(&g, 0);  /* skips 1 */
  CHECK_EQ_INT(pl_spin_gauge_allows(&g), 0);
  CHECK_EQ_INT(pl_spin_gauge_allows(&g), 1);
  pl_spin_gauge_note(&g, 0);  /* skips 4 */
  CHECK_EQ_INT(allowed(&g, 4), 0);
  CHECK_EQ_INT(pl_spin_gauge_allows(&g), 1);
  pl_spin_gauge_note(&g, 0);  /* skips 16 */
  CHECK_EQ_INT(allowed(&g, 17), 1);
}

static void test_backoff_is_bounded(void) {
  pl_spin_gauge g;
  pl_spin_gauge_init(&g);
  for (int i = 0; i < 40; i++) pl_spin_gauge_note(&g, 0);
  CHECK_EQ_INT(allowed(&g, 1024), 0);
  CHECK_EQ_INT(pl_spin_gauge_allows(&g), 1);  /* one probe after the longest backoff */
}

static void test_successes_bring_spinning_back(void) {
  pl_spin_gauge g;
  pl_spin_gauge_init(&g);
  for (int i = 0; i < 3; i++) pl_spin_gauge_note(&g, 0);  /* backoff now 64 */
  (void)allowed(&g, 16);
  for (int i = 0; i < 6; i++) pl_spin_gauge_note(&g, 1);  /* halved six times: 1 */
  pl_spin_gauge_note(&g, 0);
  CHECK_EQ_INT(allowed(&g, 2), 1);  /* skips just 1 again */
}

int main(void) {
  static const test_case tests[] = {
      {"a fresh gauge lets every spin happen", test_fresh_gauge_spins},
      {"spins that do not pay skip 1, 4, 16... chances", test_failures_back_off},
      {"the backoff is bounded: spinning is probed again", test_backoff_is_bounded},
      {"spins that pay halve the backoff", test_successes_bring_spinning_back},
      {NULL, NULL}};
  return run_tests(tests, 30);
}
