/* The global lock: exclusion, hand-over on request, forced switching,
 * urgent requests, statistics. */
#include <stdatomic.h>

#include "core/clock.h"
#include "core/enter.h"
#include "core/gil.h"
#include "runner.h"
#include "core/runtime.h"

/* A family without a Lua state: enough for the lock, whose hook requests
 * then go nowhere, so holders here hand over by calling pl_gil_yield when
 * they see a drop request (what the Lua hook does). */
static pl_family fam;

static void setup(double interval) {
  CHECK_EQ_INT(pl_family_init(&fam, NULL, interval), 0);
}

typedef struct {
  pl_tstate *ts;
  atomic_int *inside;
  atomic_int *overlap;
  int rounds;
} worker_arg;

static void *exclusion_worker(void *p) {
  worker_arg *a = p;
  a->ts = pl_tstate_new(&fam, NULL);
  for (int i = 0; i < a->rounds; i++) {
    pl_take_lock(a->ts, NULL, i % 2);
    if (atomic_fetch_add(a->inside, 1) != 0) atomic_store(a->overlap, 1);
    for (volatile int k = 0; k < 200; k++) {
    }
    atomic_fetch_sub(a->inside, 1);
    pl_give_lock(a->ts, PL_GIL_LEAVE);
  }
  pl_tstate_free(a->ts);
  return NULL;
}

static void test_mutual_exclusion(void) {
  setup(0.001);
  atomic_int inside = 0, overlap = 0;
  pthread_t th[4];
  worker_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (worker_arg){NULL, &inside, &overlap, 20000};
    pthread_create(&th[i], NULL, exclusion_worker, &args[i]);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  CHECK_EQ_INT(atomic_load(&overlap), 0);
  pl_gil_stats st;
  pl_gil_get_stats(&fam.gil, &st);
  CHECK_EQ_INT(st.acquisitions, 80000);
}

/* A CPU-bound holder that honours drop requests must let a waiter in after
 * about one switch interval, and not take the lock back before it had it. */
static atomic_int stop_burner;
static atomic_int burner_ready;

static void *burner(void *p) {
  (void)p;
  pl_tstate *ts = pl_tstate_new(&fam, NULL);
  pl_take_lock(ts, NULL, 0);
  atomic_store(&burner_ready, 1);
  while (!atomic_load(&stop_burner))
    if (pl_gil_drop_requested(&fam.gil)) pl_gil_yield(&fam.gil, ts, PL_GIL_SWITCH);
  pl_give_lock(ts, PL_GIL_LEAVE);
  pl_tstate_free(ts);
  return NULL;
}

static void test_waiter_gets_lock_after_interval(void) {
  setup(0.01);
  pthread_t th;
  pthread_create(&th, NULL, burner, NULL);
  while (!atomic_load(&burner_ready)) usleep(100);
  pl_tstate *ts = pl_tstate_new(&fam, NULL);
  int64_t t0 = pl_now_ns();
  pl_take_lock(ts, NULL, 0);
  double waited = (double)(pl_now_ns() - t0) / 1e9;
  /* At least most of one interval (regular waiters are patient), and far
   * from forever (generous bound for a loaded machine). */
  CHECK(waited >= 0.008);
  CHECK(waited < 1.0);
  pl_give_lock(ts, PL_GIL_LEAVE);
  atomic_store(&stop_burner, 1);
  pthread_join(th, NULL);
  pl_tstate_free(ts);
}

static void test_urgent_waiter_does_not_wait_interval(void) {
  setup(1.0);  /* a whole second: an urgent waiter must not wait it out */
  pthread_t th;
  pthread_create(&th, NULL, burner, NULL);
  while (!atomic_load(&burner_ready)) usleep(100);
  pl_tstate *ts = pl_tstate_new(&fam, NULL);
  int64_t t0 = pl_now_ns();
  pl_take_lock(ts, NULL, 1);
  double waited = (double)(pl_now_ns() - t0) / 1e9;
  CHECK(waited < 0.5);
  pl_gil_stats st;
  pl_gil_get_stats(&fam.gil, &st);
  CHECK(st.drop_requests >= 1);
  CHECK(st.switches >= 2);
  pl_give_lock(ts, PL_GIL_LEAVE);
  atomic_store(&stop_burner, 1);
  pthread_join(th, NULL);
  pl_tstate_free(ts);
}

static void test_yield_without_waiters_keeps_lock(void) {
  setup(0.005);
  pl_tstate *ts = pl_tstate_new(&fam, NULL);
  pl_take_lock(ts, NULL, 0);
  pl_gil_yield(&fam.gil, ts, PL_GIL_SWITCH);
  CHECK(pl_gil_held_by(&fam.gil, ts));
  pl_give_lock(ts, PL_GIL_LEAVE);
  CHECK(!pl_gil_held_by(&fam.gil, ts));
  pl_tstate_free(ts);
}

static void test_interval_roundtrip(void) {
  setup(0.005);
  CHECK(pl_gil_get_interval(&fam.gil) > 0.0049 && pl_gil_get_interval(&fam.gil) < 0.0051);
  pl_gil_set_interval(&fam.gil, 0.25);
  CHECK(pl_gil_get_interval(&fam.gil) > 0.2499 && pl_gil_get_interval(&fam.gil) < 0.2501);
}

int main(void) {
  static const test_case tests[] = {
      {"mutual exclusion under 4 threads", test_mutual_exclusion},
      {"waiter gets the lock after an interval", test_waiter_gets_lock_after_interval},
      {"urgent waiter does not wait an interval", test_urgent_waiter_does_not_wait_interval},
      {"yield without waiters keeps the lock", test_yield_without_waiters_keeps_lock},
      {"switch interval round trip", test_interval_roundtrip},
      {NULL, NULL}};
  return run_tests(tests, 60);
}
