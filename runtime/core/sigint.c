/* Ctrl-C as lua.c takes it (see sigint.h).
 *
 * One runtime at a time owns SIGINT (a disposition is process-wide): the
 * owner, the host thread that caught it, and the disposition found before.
 * The handler only uses async-signal-safe calls: sigaction, pthread_kill,
 * write, atomics, and lua_sethook on its own thread's coroutine (as lua.c's
 * handler does).  A SIGINT that lands on another thread is passed on to
 * the host thread, so the handler's work is always done there.
 *
 * The watcher thread blocks every signal and reads an eventfd the handler
 * writes; it then interrupts the runtime's other threads and wakes the
 * host thread's wait.  owner_mu is held across that work, and
 * parlua_release_sigint takes it to clear the owner, so the watcher never
 * touches a runtime its host has released (and may be about to free).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/background.h"
#include "core/runtime.h"
#include "core/sigint.h"

static _Atomic(parlua *) owner;
static pthread_t host;                /* valid while owner is set */
/* What SIGINT goes back to: lua.c's default for a host that catches it
 * (parlua_catch_sigint), the previous handler for a wait in a stock lua5.4. */
static struct sigaction after;
static atomic_int caught;             /* a SIGINT came since the catch, not yet raised */
static pthread_mutex_t owner_mu = PTHREAD_MUTEX_INITIALIZER;

static atomic_int threads_exist;      /* a thread of ours was ever started */
static atomic_int watcher_state;      /* 0 none, 1 starting or running */
static atomic_int watcher_fd = -1;    /* the eventfd the watcher reads */

static int is_function(const struct sigaction *sa) {
  if (sa->sa_flags & SA_SIGINFO) return sa->sa_sigaction != NULL;
  return sa->sa_handler != SIG_DFL && sa->sa_handler != SIG_IGN;
}

/* Run the handler that was there before ours (lua.c's laction).  It arms
 * lua.c's own hook on the main state; the interrupt is delivered by our
 * wait instead, so that hook is put back as it was. */
static void chain(parlua *rt, int sig, siginfo_t *info, void *uctx) {
  if (!is_function(&after)) return;
  lua_State *L = rt->main.L;
  lua_Hook hook = lua_gethook(L);
  int mask = lua_gethookmask(L), count = lua_gethookcount(L);
  if (after.sa_flags & SA_SIGINFO) after.sa_sigaction(sig, info, uctx);
  else after.sa_handler(sig);
  if (lua_gethook(L) != hook || lua_gethookmask(L) != mask || lua_gethookcount(L) != count)
    lua_sethook(L, hook, mask, count);
}

static void on_sigint(int sig, siginfo_t *info, void *uctx) {
  int saved = errno;
  parlua *rt = atomic_load(&owner);
  if (rt != NULL && !pthread_equal(pthread_self(), host)) {
    pthread_kill(host, sig);  /* the host thread's handler does the work */
    errno = saved;
    return;
  }
  /* As lua.c: from now on SIGINT ends the process (or goes to lua.c's own
   * handler, which sees to that), so a second Ctrl-C always works. */
  sigaction(SIGINT, &after, NULL);
  if (rt != NULL) {
    atomic_store(&caught, 1);
    atomic_store(&rt->interrupted, 1);
    pl_tstate *ts = pl_tstate_current(&rt->main);
    if (ts != NULL) pl_tstate_cancel_from_signal(ts);
    int fd = atomic_load(&watcher_fd);
    if (fd >= 0) {
      uint64_t one = 1;
      (void)!write(fd, &one, sizeof one);
    }
    chain(rt, sig, info, uctx);
  }
  errno = saved;
}

/* ---- the watcher ------------------------------------------------------ */

static void *watch_main(void *ud) {
  int fd = (int)(intptr_t)ud;
  for (;;) {
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return NULL;
    }
    pthread_mutex_lock(&owner_mu);
    parlua *rt = atomic_load(&owner);
    if (rt != NULL) pl_runtime_interrupt_others(rt);
    pthread_mutex_unlock(&owner_mu);
  }
}

static void start_watcher(void) {
  int expected = 0;
  if (!atomic_compare_exchange_strong(&watcher_state, &expected, 1)) return;
  int fd = eventfd(0, EFD_CLOEXEC);
  if (fd < 0) {
    atomic_store(&watcher_state, 0);
    return;
  }
  if (pl_background_thread(watch_main, (void *)(intptr_t)fd, 64 * 1024) != 0) {
    close(fd);
    atomic_store(&watcher_state, 0);
    return;
  }
  atomic_store(&watcher_fd, fd);
  /* A SIGINT that came while the watcher was starting found no fd. */
  if (atomic_load(&caught)) {
    uint64_t one = 1;
    (void)!write(fd, &one, sizeof one);
  }
}

void pl_sigint_thread_starting(void) {
  if (!atomic_load(&threads_exist)) atomic_store(&threads_exist, 1);
  if (atomic_load(&owner) != NULL && atomic_load(&watcher_state) == 0) start_watcher();
}

/* ---- catching and releasing ------------------------------------------ */

static int catch_sigint(parlua *rt, int chained) {
  struct sigaction ours;
  memset(&ours, 0, sizeof ours);
  ours.sa_sigaction = on_sigint;
  ours.sa_flags = SA_SIGINFO | SA_RESTART;  /* as lua.c's signal(): reads restart */
  sigemptyset(&ours.sa_mask);
  sigaddset(&ours.sa_mask, PL_POKE_SIGNAL);  /* no poke inside our arming */
  struct sigaction previous;
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  parlua *none = NULL;
  int rc = -1;
  if (atomic_compare_exchange_strong(&owner, &none, rt)) {
    host = pthread_self();
    atomic_store(&caught, 0);
    if (sigaction(SIGINT, &ours, &previous) == 0) {
      after = previous;
      if (!chained) {
        memset(&after, 0, sizeof after);
        after.sa_handler = SIG_DFL;
      }
      rc = 0;
    } else {
      pthread_mutex_lock(&owner_mu);
      atomic_store(&owner, NULL);
      pthread_mutex_unlock(&owner_mu);
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  /* Threads already run: only the watcher can reach them. */
  if (rc == 0 && atomic_load(&threads_exist)) start_watcher();
  return rc;
}

static int release_sigint(parlua *rt) {
  if (atomic_load(&owner) != rt || !pthread_equal(pthread_self(), host)) return 0;
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  struct sigaction now;
  /* Still ours: no SIGINT came.  Otherwise the handler already set it
   * (and lua.c's may have changed it since). */
  if (sigaction(SIGINT, NULL, &now) == 0 && (now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_sigint)
    sigaction(SIGINT, &after, NULL);
  pthread_mutex_lock(&owner_mu);
  atomic_store(&owner, NULL);
  pthread_mutex_unlock(&owner_mu);
  int was_caught = atomic_exchange(&caught, 0);
  pthread_sigmask(SIG_SETMASK, &old, NULL);  /* a SIGINT held back meets the old disposition */
  return was_caught;
}

void pl_sigint_delivered(void) { atomic_store(&caught, 0); }

int pl_sigint_catch(parlua *rt) { return catch_sigint(rt, 0); }

int pl_sigint_release(parlua *rt) { return release_sigint(rt); }

/* ---- a stock lua5.4: around the host thread's waits ------------------- */

/* The hook lua.c's handler sets (laction: lua_sethook(L, lstop, ...)). */
#define LUA_C_STOP_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT)

/* lua.c's handler ran before the wait began -- during the C code that led
 * to it, or while a poke had its hook displaced -- so its hook would only
 * fire after the wait: the wait delivers the interrupt instead. */
static int lua_c_interrupt_pending(pl_tstate *ts) {
  return pl_tstate_take_foreign_hook(ts, ts->fam->rt->main.L, LUA_C_STOP_MASK, 1);
}

/* The outermost wait of lua5.4's own thread takes SIGINT over. */
static void take_over(pl_tstate *ts) {
  if (atomic_load(&owner) != NULL) {
    if (atomic_load(&watcher_state) == 0) start_watcher();
    return;
  }
  struct sigaction now;
  /* Only where someone handles Ctrl-C (lua.c, inside a chunk): with the
   * default disposition it ends the process, ignored it does nothing. */
  if (sigaction(SIGINT, NULL, &now) == 0 && is_function(&now) && catch_sigint(ts->fam->rt, 1) == 0) {
    ts->sigint_taken = 1;
    start_watcher();
  }
  /* After the catch: a SIGINT from now on is ours, one before it is seen. */
  if (lua_c_interrupt_pending(ts)) pl_runtime_interrupt(ts->fam->rt);
}

static int adopted_host(pl_tstate *ts) { return ts->host && ts->fam->rt->adopted; }

/* Waits nest (a future's wait inside a map's): only the outermost pair
 * takes SIGINT over and gives it back. */
void pl_sigint_wait_begin(pl_tstate *ts) {
  if (adopted_host(ts)) {
    if (ts->sigint_depth++ == 0) take_over(ts);
  } else if (atomic_load(&owner) != NULL && atomic_load(&watcher_state) == 0) {
    start_watcher();  /* a condition variable wait needs it to be woken */
  }
}

void pl_sigint_wait_end(pl_tstate *ts) {
  if (!adopted_host(ts) || --ts->sigint_depth > 0 || !ts->sigint_taken) return;
  ts->sigint_taken = 0;
  release_sigint(ts->fam->rt);
}

void pl_sigint_thread_runs(parlua *rt) {
  if (!rt->adopted) return;
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, NULL);
}
