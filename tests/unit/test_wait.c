/* Interruptible waits: timeouts, wake-ups, and forced cancellation reaching
 * a thread blocked on any condition variable. */
#include <stdatomic.h>

#include "core/clock.h"
#include "runner.h"
#include "core/runtime.h"

static pl_family fam;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static int ready;

static void setup(void) {
  CHECK_EQ_INT(pl_family_init(&fam, NULL, 0.005), 0);
  CHECK_EQ_INT(pl_cond_init(&cv), 0);
}

static int wait_for_ready(pl_tstate *ts, double seconds) {
  int rc = PL_OK;
  int64_t deadline = pl_deadline_after(seconds);
  pl_wait_begin(ts, &mu, &cv);
  pthread_mutex_lock(&mu);
  while (!ready && rc == PL_OK) rc = pl_wait(ts, &mu, &cv, deadline);
  pthread_mutex_unlock(&mu);
  pl_wait_end(ts);
  return ready ? PL_OK : rc;
}

static void test_timeout(void) {
  setup();
  pl_tstate *ts = pl_tstate_new(&fam, NULL);
  int64_t t0 = pl_now_ns();
  CHECK_EQ_INT(wait_for_ready(ts, 0.05), PL_ETIMEOUT);
  CHECK((pl_now_ns() - t0) >= 50000000);
  pl_tstate_free(ts);
}

typedef struct { pl_tstate *ts; atomic_int result; atomic_int started; } blocked_arg;

static void *blocked_thread(void *p) {
  blocked_arg *a = p;
  a->ts = pl_tstate_new(&fam, NULL);
  atomic_store(&a->started, 1);
  atomic_store(&a->result, wait_for_ready(a->ts, -1));
  return NULL;
}

static void test_forced_cancel_wakes_waiter(void) {
  setup();
  blocked_arg a = {NULL, -1, 0};
  pthread_t th;
  pthread_create(&th, NULL, blocked_thread, &a);
  while (!atomic_load(&a.started)) usleep(100);
  usleep(20000);  /* let it block */
  pl_tstate_cancel(a.ts, PL_CANCEL_SOFT, 0);
  usleep(20000);
  CHECK_EQ_INT(atomic_load(&a.result), -1);  /* a soft cancel does not wake */
  pl_tstate_cancel(a.ts, PL_CANCEL_FORCED, 0);
  pthread_join(th, NULL);
  CHECK_EQ_INT(atomic_load(&a.result), PL_ECANCELLED);
  pl_tstate_free(a.ts);
}

static void test_cancel_before_wait(void) {
  setup();
  pl_tstate *ts = pl_tstate_new(&fam, NULL);
  pl_tstate_cancel(ts, PL_CANCEL_FORCED, 1);
  CHECK_EQ_INT(wait_for_ready(ts, -1), PL_ECANCELLED);
  CHECK_EQ_INT(atomic_load(&ts->interrupted), 1);
  pl_tstate_reset_cancel(ts);
  CHECK_EQ_INT(pl_tstate_cancel_level(ts), PL_CANCEL_NONE);
  pl_tstate_free(ts);
}

static void test_signal_wakes_waiter(void) {
  setup();
  blocked_arg a = {NULL, -1, 0};
  pthread_t th;
  pthread_create(&th, NULL, blocked_thread, &a);
  while (!atomic_load(&a.started)) usleep(100);
  pthread_mutex_lock(&mu);
  ready = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  pthread_join(th, NULL);
  CHECK_EQ_INT(atomic_load(&a.result), PL_OK);
  pl_tstate_free(a.ts);
}

static void test_tstate_stack(void) {
  setup();
  pl_family other;
  CHECK_EQ_INT(pl_family_init(&other, NULL, 0.005), 0);
  pl_tstate *a = pl_tstate_new(&fam, NULL), *b = pl_tstate_new(&other, NULL);
  CHECK(pl_tstate_current(&fam) == NULL);
  pl_tstate_push(a);
  pl_tstate_push(b);
  CHECK(pl_tstate_current(&fam) == a);
  CHECK(pl_tstate_current(&other) == b);
  pl_tstate_pop(b);
  CHECK(pl_tstate_current(&other) == NULL);
  pl_tstate_pop(a);
  CHECK(pl_tstate_current(&fam) == NULL);
  pl_tstate_free(b);
  pl_tstate_free(a);
}

int main(void) {
  static const test_case tests[] = {
      {"a wait times out", test_timeout},
      {"a forced cancel wakes a blocked waiter, a soft one does not", test_forced_cancel_wakes_waiter},
      {"a cancel before the wait is seen at once", test_cancel_before_wait},
      {"a signal wakes the waiter", test_signal_wakes_waiter},
      {"tstates of two runtimes nest on one thread", test_tstate_stack},
      {NULL, NULL}};
  return run_tests(tests, 30);
}
