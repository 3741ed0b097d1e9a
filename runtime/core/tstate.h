/* Private to the parlua runtime: what the runtime knows about one OS thread
 * running Lua code of one state family.
 *
 * A tstate records which coroutine the thread is running (so another thread
 * can arm the count hook on exactly that coroutine), the thread's cancel
 * flags, and the one condition variable it is blocked on, if any (so a
 * forced cancel or an interrupt can wake it).
 *
 * Arming the hook of another thread's coroutine is not safe in Lua 5.4
 * (lua_sethook walks that coroutine's call chain while it changes), so a
 * poke from another thread is a signal (PL_POKE_SIGNAL) whose handler arms
 * the hook on its own thread, the way lua.c handles SIGINT.  The handler
 * arms only while its thread holds the lock, so no other thread touches
 * the coroutine meanwhile, not even the collector; a thread without the
 * lock is armed when it takes the lock back (pl_tstate_set_running).  The
 * signal still interrupts its blocking system calls, which a forced cancel
 * relies on.
 *
 * Lock order: ts->wait_guard before the mutex of the object waited on.
 */
#ifndef PL_TSTATE_H
#define PL_TSTATE_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include "lua.h"

#include "core/status.h"

typedef struct pl_family pl_family;
typedef struct pl_tstate pl_tstate;
typedef struct pl_held pl_held;

/* SIGURG, as Go's preemption uses: ignored by default and rarely used. */
#define PL_POKE_SIGNAL SIGURG

enum { PL_CANCEL_NONE = 0, PL_CANCEL_SOFT = 1, PL_CANCEL_FORCED = 2 };

struct pl_tstate {
  pl_family *fam;
  pl_tstate *outer;            /* this OS thread's previous tstate (nesting) */
  pl_tstate *next, *prevp;     /* the family's list; guarded by fam->mu */
  int listed;                  /* in that list (owned by a thread); owner only */
  int depth;                   /* parlua_enter nesting, owner thread only */
  int made_by_enter;           /* parlua_leave frees it at depth 0 */
  void *thread;                /* the pl_thread run by this OS thread, or NULL */
  /* A thread of the host's (parlua_enter, or the stock lua5.4 that adopted
   * the state): an interrupt raises lua.c's "interrupted!" string there,
   * not Cancelled, and it is delivered once (see pl_error_raise_cancelled). */
  int host;
  int sigint_taken;            /* sigint.c took SIGINT over for a wait of ours */
  int sigint_depth;            /* waits begun and not ended (they nest) */
  char interrupt_msg[128];     /* the last "interrupted!" raised here */
  char name[64];               /* par.current_thread(); "" is the main thread */

  pthread_t owner;             /* the OS thread this tstate belongs to */
  long ident;                  /* and its kernel thread id (gettid) */
  _Atomic(lua_State *) running;/* written by the owner only */
  /* A hook of the script's own (debug.sethook) that a poke displaced, put
   * back once the poke is handled; owner thread (and its handler) only. */
  lua_State *displaced_L;
  lua_Hook displaced_hook;
  int displaced_mask, displaced_count;
  /* set and cleared by the owner (gil.c), so the owner may read it without
   * the lock's mutex (the libc interposers ask it on every call) */
  volatile sig_atomic_t holds_lock;
  volatile sig_atomic_t hooks_busy;    /* the owner is changing a hook itself */
  volatile sig_atomic_t poke_deferred; /* a poke came meanwhile: arm after */

  atomic_int cancel;           /* PL_CANCEL_*: raised by anyone, reset by the owner */
  atomic_int interrupted;      /* a forced cancel that came from an interrupt */
  atomic_int cancel_delivered; /* the hook has raised it once already */
  /* Time limits of the task this thread runs (pool/limits.c): a soft
   * limit waits to be raised as SoftTimeLimit (once, at the next
   * instruction boundary or blocking call, like a forced cancel but
   * catchable: it leaves no cancel behind); a hard limit is a forced
   * cancel raised as Timeout.  The seconds are written before the flags. */
  atomic_int soft_limit_pending;
  atomic_int hard_limit_hit;
  double soft_limit_s, hard_limit_s;
  int64_t hard_raised_at;      /* owner only: when the hook last raised it */
  int64_t wait_slice_ns;       /* > 0: pl_wait looks at the flags at least this often
                                  (a worker process, whose soft limit comes by signal) */

  pthread_mutex_t wait_guard;
  pthread_mutex_t *wait_mu;    /* guarded by wait_guard */
  pthread_cond_t *wait_cv;     /* guarded by wait_guard */

  pthread_mutex_t sleep_mu;    /* a private condition for par.sleep */
  pthread_cond_t sleep_cv;

  /* Pokes and foreign code (see pl_tstate_set_running). */
  atomic_int pokers;           /* other threads inside pl_tstate_poke */
  atomic_uint pokes_sent;      /* signals sent to this thread */
  unsigned pokes_settled;      /* owner only: pokes_sent when none was last pending */

  /* The parlua locks this thread holds (sync/held.c), and how to let go of
   * the list when the tstate is freed; owner thread only. */
  pl_held *held;
  void (*held_free)(pl_tstate *ts);

  /* The lock timeline's lane of this thread (gil_trace.c), valid while
   * trace_epoch is the trace's; guarded by the trace's mutex. */
  uint64_t trace_epoch;
  uint32_t trace_lane;
};

/* A tstate owned by the calling thread and listed in its family (so a
 * runtime's interrupt reaches it).  NULL when out of memory. */
pl_tstate *pl_tstate_new(pl_family *fam, lua_State *running);
void pl_tstate_free(pl_tstate *ts);
/* The same in two steps, for a thread that must not need memory to enter a
 * state: made by any thread, owned by none and listed nowhere yet (NULL
 * when out of memory); then pl_tstate_own by the thread that will use it.
 * pl_tstate_disown unlists it again, as new (its cancel state and held
 * locks forgotten, see held.h), until a thread owns it again. */
pl_tstate *pl_tstate_new_unowned(pl_family *fam);
void pl_tstate_own(pl_tstate *ts);
void pl_tstate_disown(pl_tstate *ts);

/* The calling OS thread's tstates form a stack (a host thread may enter
 * one runtime from inside another). */
void pl_tstate_push(pl_tstate *ts);
void pl_tstate_pop(pl_tstate *ts);
pl_tstate *pl_tstate_current(pl_family *fam);
/* The calling thread's innermost tstate, of whichever family, or NULL. */
pl_tstate *pl_tstate_innermost(void);

/* Switch the coroutine this thread is running; re-arms the hook on it when
 * a request is pending so nothing is lost across resume/yield.
 * NULL means the thread runs no Lua code (it is in a foreign call, or done):
 * no poke signal is sent to it then, and when set_running(NULL) returns none
 * is still on its way -- so a foreign call's sleeping system calls (usleep,
 * poll, read on a pipe...) are never cut short with EINTR by a thread that
 * wants the lock.  A request made meanwhile arms the hook when the thread
 * sets a coroutine again. */
void pl_tstate_set_running(pl_tstate *ts, lua_State *L);
/* Arm the hook on the coroutine ts is running, from any thread.  The
 * caller must ensure ts's thread has not exited (it holds the lock that
 * thread needs to go, or the mutex guarding ts). */
void pl_tstate_poke(pl_tstate *ts);
/* Clear the hook on L (the owner thread, from inside the hook). */
void pl_tstate_unpoke(pl_tstate *ts, lua_State *L);
/* Put back hook settings of the script's on L after ours fired, at a cost
 * independent of the depth (pl_sethook_shallow).  `ts` may be NULL. */
void pl_tstate_put_hook(pl_tstate *ts, lua_State *L, lua_Hook func, int mask, int count);
/* lua_sethook for the script (debug.sethook): a hook of the script's
 * replaces whatever ours displaced, and a pending request stays armed on
 * L.  `ts` may be NULL. */
void pl_tstate_set_hook(pl_tstate *ts, lua_State *L, lua_Hook func, int mask, int count);

/* Raise the cancel level and, when forced, wake the thread wherever it is. */
void pl_tstate_cancel(pl_tstate *ts, int level, int interrupt);
/* A hard limit is hard: unlike a forced cancel, which is raised once so
 * that cleanup code may finish, its Timeout is raised again every
 * PL_HARD_LIMIT_REPEAT_NS for as long as the task goes on (a loop around
 * pcall cannot keep it alive). */
#define PL_HARD_LIMIT_REPEAT_NS (100 * 1000000LL)
#define PL_HARD_LIMIT_REPEAT_COUNT 10000  /* instructions between two looks */

/* A time limit of ts's task ran out (see the fields). */
void pl_tstate_soft_limit(pl_tstate *ts, double seconds);
void pl_tstate_hard_limit(pl_tstate *ts, double seconds);
/* The same as pl_tstate_soft_limit from a signal handler of the owner
 * thread: async-signal-safe, so it only arms the hook; a wait of ts sees
 * it within wait_slice_ns (which the owner must set). */
void pl_tstate_soft_limit_from_handler(pl_tstate *ts, double seconds);

/* A SIGINT handler on ts's own thread: the flags of an interrupt and the
 * hook, but none of the locks pl_tstate_cancel takes (async-signal-safe). */
void pl_tstate_cancel_from_signal(pl_tstate *ts);
/* A hook set from C on L with exactly this mask and count (lua.c's SIGINT
 * hook), in place or displaced by a poke: removed, 1; else 0.  The owner
 * thread only. */
int pl_tstate_take_foreign_hook(pl_tstate *ts, lua_State *L, int mask, int count);
/* Wake ts from the wait it is in, if any (it re-checks its flags). */
void pl_tstate_wake(pl_tstate *ts);
/* The owner clears its cancel state between two tasks. */
void pl_tstate_reset_cancel(pl_tstate *ts);
static inline int pl_tstate_cancel_level(pl_tstate *ts) {
  return atomic_load(&ts->cancel);
}

/* An interruptible wait on (mu, cv), the way every blocking call waits:
 *   pl_wait_begin(ts, mu, cv);          -- mu NOT held
 *   lock(mu); while (!ready) { rc = pl_wait(ts, mu, cv, deadline); if (rc) break; }
 *   unlock(mu);
 *   pl_wait_end(ts);
 * pl_wait returns PL_ECANCELLED at once when a forced cancel (or a soft
 * time limit) is pending.
 * `ts` may be NULL (a thread unknown to the runtime): then nothing cancels. */
void pl_wait_begin(pl_tstate *ts, pthread_mutex_t *mu, pthread_cond_t *cv);
int pl_wait(pl_tstate *ts, pthread_mutex_t *mu, pthread_cond_t *cv, int64_t deadline_ns);
void pl_wait_end(pl_tstate *ts);

/* Condition variables of the runtime all use the monotonic clock. */
int pl_cond_init(pthread_cond_t *cv);

#endif
