/* Per-OS-thread runtime state: the coroutine being run, cancel flags, and
 * the interruptible wait every blocking call goes through (see tstate.h). */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/callinfo.h"
#include "core/clock.h"
#include "core/debughook.h"
#include "core/runtime.h"
#include "core/sigint.h"
#include "core/tstate.h"

/* The innermost tstate of the calling OS thread; each links to the one it
 * was entered from.  Thread-local, so two runtimes never see each other's. */
static _Thread_local pl_tstate *current;

/* ThreadSanitizer delivers a signal only when the thread next enters a call
 * it intercepts, which a pure Lua loop never does.  Under it the hook polls
 * every POLL_COUNT instructions instead of waiting for a poke; the cost does
 * not matter there and the pokes stay in place as well. */
#if defined(__SANITIZE_THREAD__)
#define POLL_COUNT 1000
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define POLL_COUNT 1000
#endif
#endif
#ifndef POLL_COUNT
#define POLL_COUNT 0
#endif

static struct sigaction previous_poke_action;

/* A displaced hook of the script's own comes back, if ours is still in its
 * place (the script may have set another meanwhile). */
static void restore_displaced(pl_tstate *ts) {
  lua_State *L = ts->displaced_L;
  ts->displaced_L = NULL;
  if (lua_gethook(L) == ts->fam->hook)
    pl_sethook_shallow(L, ts->displaced_hook, ts->displaced_mask, ts->displaced_count);
}

/* Arm the family's hook on L, the owner thread (or its signal handler)
 * only; only async-signal-safe calls.  The cost does not depend on the call
 * depth (pl_sethook_shallow).  What the script set stays visible:
 *   - no hook: ours, count `count`, removed when it fires;
 *   - the script's own debug.sethook hook (pl_script_hook): if it fires
 *     often anyway it checks for requests itself and nothing changes;
 *     otherwise a count is added to its mask, and pl_script_hook takes the
 *     count event for ours and puts the script's settings back;
 *   - a hook set from C (lua.c's SIGINT hook, a host's): displaced into the
 *     tstate until ours fires.  Only the running coroutine is ever displaced
 *     (pl_tstate_set_running puts it back when the thread switches away). */
static void arm(pl_tstate *ts, lua_State *L, int count) {
  lua_Hook h = lua_gethook(L);
  if (h == pl_script_hook) {
    int mask = lua_gethookmask(L);
    if (!pl_script_hook_sees_all(mask, lua_gethookcount(L)))
      pl_sethook_shallow(L, h, mask | LUA_MASKCOUNT, count);
    return;
  }
  if (h != NULL && h != ts->fam->hook) {
    if (ts->displaced_L != NULL && ts->displaced_L != L) restore_displaced(ts);
    ts->displaced_L = L;
    ts->displaced_hook = h;
    ts->displaced_mask = lua_gethookmask(L);
    ts->displaced_count = lua_gethookcount(L);
  }
  pl_sethook_shallow(L, ts->fam->hook, LUA_MASKCOUNT, count);
}

/* While the owner changes hooks itself, a poke waits for it to finish
 * (two writers of one coroutine's hook could mix their settings). */
static void hooks_begin(pl_tstate *ts) {
  ts->hooks_busy = 1;
  atomic_signal_fence(memory_order_seq_cst);
}

static void hooks_end(pl_tstate *ts) {
  for (;;) {
    while (ts->poke_deferred) {
      ts->poke_deferred = 0;
      atomic_signal_fence(memory_order_seq_cst);
      lua_State *L = atomic_load(&ts->running);
      if (L != NULL && ts->holds_lock) arm(ts, L, 1);
    }
    atomic_signal_fence(memory_order_seq_cst);
    ts->hooks_busy = 0;
    atomic_signal_fence(memory_order_seq_cst);
    if (!ts->poke_deferred) return;  /* else it came just before we let go */
    ts->hooks_busy = 1;
    atomic_signal_fence(memory_order_seq_cst);
  }
}

/* In a signal handler on ts's own thread: arm the hook on what it runs,
 * or leave it to hooks_end when the thread was changing hooks itself. */
static void arm_from_handler(pl_tstate *ts) {
  if (ts->hooks_busy) {
    ts->poke_deferred = 1;
  } else if (ts->holds_lock) {
    lua_State *L = atomic_load(&ts->running);
    if (L != NULL) arm(ts, L, 1);
  }
}

/* Runs on the thread that was poked: arm the hook on what it is running. */
static void poke_handler(int sig, siginfo_t *info, void *uctx) {
  pl_tstate *ts = current;
  if (ts != NULL) arm_from_handler(ts);
/* Whoever had the signal before us still gets it. */
  if (previous_poke_action.sa_flags & SA_SIGINFO) {
    if (previous_poke_action.sa_sigaction != NULL) previous_poke_action.sa_sigaction(sig, info, uctx);
  } else if (previous_poke_action.sa_handler != SIG_DFL &&
             previous_poke_action.sa_handler != SIG_IGN) {
    previous_poke_action.sa_handler(sig);
  }
}

/* The handler is process-wide by nature; it is installed once. */
static void install_poke_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = poke_handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);  /* no Ctrl-C handler inside our arming */
  sigaction(PL_POKE_SIGNAL, &sa, &previous_poke_action);
}

int pl_cond_init(pthread_cond_t *cv) {
  pthread_condattr_t attr;
  if (pthread_condattr_init(&attr) != 0) return -1;
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(cv, &attr);
  pthread_condattr_destroy(&attr);
  return rc == 0 ? 0 : -1;
}

pl_tstate *pl_tstate_new_unowned(pl_family *fam) {
  pl_tstate *ts = calloc(1, sizeof *ts);
  if (ts == NULL) return NULL;
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, install_poke_handler);
  ts->fam = fam;
  atomic_init(&ts->running, NULL);
  atomic_init(&ts->cancel, PL_CANCEL_NONE);
  atomic_init(&ts->interrupted, 0);
  atomic_init(&ts->cancel_delivered, 0);
  atomic_init(&ts->soft_limit_pending, 0);
  atomic_init(&ts->hard_limit_hit, 0);
  atomic_init(&ts->pokers, 0);
  atomic_init(&ts->pokes_sent, 0);
  pthread_mutex_init(&ts->wait_guard, NULL);
  pthread_mutex_init(&ts->sleep_mu, NULL);
  pl_cond_init(&ts->sleep_cv);
  return ts;
}

void pl_tstate_own(pl_tstate *ts) {
  ts->owner = pthread_self();
  ts->ident = (long)syscall(SYS_gettid);
  ts->listed = 1;
  pl_family_add_tstate(ts->fam, ts);
}

void pl_tstate_disown(pl_tstate *ts) {
  pl_family_remove_tstate(ts->fam, ts);
  ts->listed = 0;
  if (ts->held_free != NULL) ts->held_free(ts);
  pl_tstate_reset_cancel(ts);
}

pl_tstate *pl_tstate_new(pl_family *fam, lua_State *running) {
  pl_tstate *ts = pl_tstate_new_unowned(fam);
  if (ts == NULL) return NULL;
  atomic_store(&ts->running, running);
  pl_tstate_own(ts);
  return ts;
}

void pl_tstate_free(pl_tstate *ts) {
  if (ts == NULL) return;
  if (ts->held_free != NULL) ts->held_free(ts);
  if (ts->listed) pl_family_remove_tstate(ts->fam, ts);
  pthread_cond_destroy(&ts->sleep_cv);
  pthread_mutex_destroy(&ts->sleep_mu);
  pthread_mutex_destroy(&ts->wait_guard);
  free(ts);
}

void pl_tstate_push(pl_tstate *ts) {
  ts->outer = current;
  current = ts;
}

/* Usually the innermost, but not always: two stock states adopted on one
 * thread may close in any order. */
void pl_tstate_pop(pl_tstate *ts) {
  for (pl_tstate **p = &current; *p != NULL; p = &(*p)->outer) {
    if (*p == ts) {
      *p = ts->outer;
      break;
    }
  }
  ts->outer = NULL;
}

pl_tstate *pl_tstate_current(pl_family *fam) {
  for (pl_tstate *ts = current; ts != NULL; ts = ts->outer)
    if (ts->fam == fam) return ts;
  return NULL;
}

pl_tstate *pl_tstate_innermost(void) { return current; }

static int needs_hook(pl_tstate *ts) {
  return (atomic_load(&ts->cancel) == PL_CANCEL_FORCED &&
          !atomic_load(&ts->cancel_delivered)) ||
         atomic_load(&ts->soft_limit_pending) || pl_gil_drop_requested(&ts->fam->gil);
}

/* running is NULL now, so no new poke is sent (pl_tstate_poke checks it
 * after counting itself in pokers: one of the two sees the other).  Wait
 * out the pokers that decided before, and take any signal they sent: a
 * pending signal is delivered when a system call returns. */
static void settle_pokes(pl_tstate *ts) {
  while (atomic_load(&ts->pokers) > 0) sched_yield();
  unsigned sent = atomic_load(&ts->pokes_sent);
  if (sent != ts->pokes_settled) {
    sched_yield();
    ts->pokes_settled = sent;
  }
}

void pl_tstate_set_running(pl_tstate *ts, lua_State *L) {
  hooks_begin(ts);
  if (ts->displaced_L != NULL && ts->displaced_L != L) restore_displaced(ts);
  atomic_store(&ts->running, L);
  if (L == NULL) {
    settle_pokes(ts);
    ts->poke_deferred = 0;  /* nothing to arm: L asks again when it is set */
  } else if (needs_hook(ts)) {
    arm(ts, L, 1);
  } else if (POLL_COUNT) {
    arm(ts, L, POLL_COUNT);
  }
  hooks_end(ts);
}

void pl_tstate_poke(pl_tstate *ts) {
  if (pthread_equal(ts->owner, pthread_self())) {
    hooks_begin(ts);
    lua_State *L = atomic_load(&ts->running);
    if (L != NULL) arm(ts, L, 1);
    hooks_end(ts);
  } else {
    atomic_fetch_add(&ts->pokers, 1);
    if (atomic_load(&ts->running) != NULL) {
      atomic_fetch_add(&ts->pokes_sent, 1);
      pthread_kill(ts->owner, PL_POKE_SIGNAL);
    }
    atomic_fetch_sub(&ts->pokers, 1);
  }
}

void pl_tstate_unpoke(pl_tstate *ts, lua_State *L) {
  hooks_begin(ts);
  if (lua_gethook(L) == ts->fam->hook) {
    if (ts->displaced_L == L) restore_displaced(ts);  /* the script's own comes back */
    else if (POLL_COUNT) pl_sethook_shallow(L, ts->fam->hook, LUA_MASKCOUNT, POLL_COUNT);
    else if (atomic_load(&ts->hard_limit_hit))  /* see PL_HARD_LIMIT_REPEAT_NS */
      pl_sethook_shallow(L, ts->fam->hook, LUA_MASKCOUNT, PL_HARD_LIMIT_REPEAT_COUNT);
    else lua_sethook(L, NULL, 0, 0);
  }
  hooks_end(ts);
}

void pl_tstate_put_hook(pl_tstate *ts, lua_State *L, lua_Hook func, int mask, int count) {
  if (ts == NULL) {
    pl_sethook_shallow(L, func, mask, count);
    return;
  }
  hooks_begin(ts);
  pl_sethook_shallow(L, func, mask, count);
  hooks_end(ts);
}

void pl_tstate_set_hook(pl_tstate *ts, lua_State *L, lua_Hook func, int mask, int count) {
  if (ts == NULL) {
    lua_sethook(L, func, mask, count);
    return;
  }
  hooks_begin(ts);
  if (ts->displaced_L == L) ts->displaced_L = NULL;  /* replaced: nothing to put back */
  lua_sethook(L, func, mask, count);
  if (L == atomic_load(&ts->running)) {
    if (needs_hook(ts)) arm(ts, L, 1);
    else if (POLL_COUNT) arm(ts, L, POLL_COUNT);
  }
  hooks_end(ts);
}

/* Wake ts from the wait it is in, if any (it re-checks its flags). */
void pl_tstate_wake(pl_tstate *ts) {
  pthread_mutex_lock(&ts->wait_guard);
  if (ts->wait_mu != NULL) {
    pthread_mutex_lock(ts->wait_mu);
    pthread_cond_broadcast(ts->wait_cv);
    pthread_mutex_unlock(ts->wait_mu);
  }
  pthread_mutex_unlock(&ts->wait_guard);
}

/* Wake ts wherever it is: running Lua (the hook) or blocked in pl_wait. */
static void wake(pl_tstate *ts) {
  pl_tstate_poke(ts);
  pl_tstate_wake(ts);
}

int pl_tstate_take_foreign_hook(pl_tstate *ts, lua_State *L, int mask, int count) {
  int taken = 0;
  hooks_begin(ts);
  if (ts->displaced_L == L && ts->displaced_mask == mask && ts->displaced_count == count) {
    ts->displaced_L = NULL;  /* ours stays until it fires, then nothing comes back */
    taken = 1;
  } else {
    lua_Hook h = lua_gethook(L);
    if (h != NULL && h != ts->fam->hook && h != pl_script_hook && lua_gethookmask(L) == mask &&
        lua_gethookcount(L) == count) {
      lua_sethook(L, NULL, 0, 0);
      taken = 1;
    }
  }
  hooks_end(ts);
  return taken;
}

static void raise_level(pl_tstate *ts, int level, int interrupt) {
  if (interrupt) atomic_store(&ts->interrupted, 1);
  int cur = atomic_load(&ts->cancel);
  while (cur < level && !atomic_compare_exchange_weak(&ts->cancel, &cur, level)) {
  }
}

void pl_tstate_cancel(pl_tstate *ts, int level, int interrupt) {
  raise_level(ts, level, interrupt);
  if (level >= PL_CANCEL_FORCED) wake(ts);
}

void pl_tstate_cancel_from_signal(pl_tstate *ts) {
  raise_level(ts, PL_CANCEL_FORCED, 1);
  arm_from_handler(ts);
}
void pl_tstate_soft_limit(pl_tstate *ts, double seconds) {
  ts->soft_limit_s = seconds;
  atomic_store(&ts->soft_limit_pending, 1);
  wake(ts);
}

void pl_tstate_soft_limit_from_handler(pl_tstate *ts, double seconds) {
  ts->soft_limit_s = seconds;
  atomic_store(&ts->soft_limit_pending, 1);
  lua_State *L = atomic_load(&ts->running);
  if (L != NULL) arm(ts, L, 1);
}

void pl_tstate_hard_limit(pl_tstate *ts, double seconds) {
  ts->hard_limit_s = seconds;
  atomic_store(&ts->hard_limit_hit, 1);
  pl_tstate_cancel(ts, PL_CANCEL_FORCED, 0);
}

void pl_tstate_reset_cancel(pl_tstate *ts) {
  atomic_store(&ts->cancel, PL_CANCEL_NONE);
  atomic_store(&ts->interrupted, 0);
  atomic_store(&ts->cancel_delivered, 0);
  atomic_store(&ts->soft_limit_pending, 0);
  atomic_store(&ts->hard_limit_hit, 0);
}

void pl_wait_begin(pl_tstate *ts, pthread_mutex_t *mu, pthread_cond_t *cv) {
  if (ts == NULL) return;
  pl_sigint_wait_begin(ts);
  pthread_mutex_lock(&ts->wait_guard);
  ts->wait_mu = mu;
  ts->wait_cv = cv;
  pthread_mutex_unlock(&ts->wait_guard);
}

void pl_wait_end(pl_tstate *ts) {
  if (ts == NULL) return;
  pthread_mutex_lock(&ts->wait_guard);
  ts->wait_mu = NULL;
  ts->wait_cv = NULL;
  pthread_mutex_unlock(&ts->wait_guard);
  pl_sigint_wait_end(ts);
}

/* A forced cancel, or a soft time limit to raise. */
static int must_stop(pl_tstate *ts) {
  return ts != NULL && (atomic_load(&ts->cancel) == PL_CANCEL_FORCED || atomic_load(&ts->soft_limit_pending));
}

int pl_wait(pl_tstate *ts, pthread_mutex_t *mu, pthread_cond_t *cv, int64_t deadline_ns) {
  if (must_stop(ts)) return PL_ECANCELLED;
  int sliced = 0;
  if (ts != NULL && ts->wait_slice_ns > 0) {
    int64_t slice = pl_now_ns() + ts->wait_slice_ns;
    if (slice < deadline_ns) {
      deadline_ns = slice;
      sliced = 1;
    }
  }
  int rc;
  if (deadline_ns == INT64_MAX) {
    rc = pthread_cond_wait(cv, mu);
  } else {
    struct timespec until = pl_timespec_of(deadline_ns);
    rc = pthread_cond_timedwait(cv, mu, &until);
  }
  if (must_stop(ts)) return PL_ECANCELLED;
  if (rc == ETIMEDOUT && !sliced) return PL_ETIMEOUT;
  return PL_OK;  /* woken, or a slice over: callers look at what they wait for and wait again */
}
