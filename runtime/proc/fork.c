/* Starting worker processes by fork (see fork.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/debug.h"
#include "lauxlib.h"
#include "core/background.h"
#include "core/enter.h"
#include "proc/conn.h"
#include "proc/fork.h"
#include "proc/portable.h"
#include "proc/pqueue.h"
#include "proc/procpool_watch.h"
#include "core/runtime.h"

static pthread_rwlock_t guard = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

void pl_fork_guard_enter(void) { pthread_rwlock_rdlock(&guard); }
void pl_fork_guard_leave(void) { pthread_rwlock_unlock(&guard); }

int pl_pidfd_open(pid_t pid) {
  const char *e = getenv("PARLUA_NO_PIDFD");
  if (e != NULL && e[0] != '\0' && strcmp(e, "0") != 0) return -1;
#ifdef SYS_pidfd_open
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  return fd >= 0 ? fd : -1;
#else
  (void)pid;
  return -1;
#endif
}

void pl_child_exit(int status) {
  fflush(stdout);
  fflush(stderr);
  _exit(status);
}

/* ---- in the child ---------------------------------------------------- */

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

static void close_range_from(int lo, int hi) {  /* [lo, hi], hi < 0: to the end */
  if (hi >= 0 && hi < lo) return;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned)lo, hi < 0 ? ~0u : (unsigned)hi, 0) == 0) return;
#endif
  /* An old kernel: the descriptors that exist, from /proc. */
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) {
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (int fd = lo; fd < max && (hi < 0 || fd <= hi); fd++) (void)close(fd);
    return;
  }
  int dfd = dirfd(d), n = 0;
  int *list = NULL;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    int fd = atoi(de->d_name);
    if (de->d_name[0] < '0' || de->d_name[0] > '9' || fd == dfd || fd < lo || (hi >= 0 && fd > hi)) continue;
    int *nl = realloc(list, sizeof *list * (size_t)(n + 1));
    if (nl == NULL) break;
    list = nl;
    list[n++] = fd;
  }
  closedir(d);
  for (int i = 0; i < n; i++) (void)close(list[i]);
  free(list);
}

/* Close everything above 2 except keep[] (sorted here). */
static void close_others(int *keep, int nkeep) {
  qsort(keep, (size_t)nkeep, sizeof *keep, cmp_int);
  int lo = 3;
  for (int i = 0; i < nkeep; i++) {
    if (keep[i] < lo) continue;
    close_range_from(lo, keep[i] - 1);
    lo = keep[i] + 1;
  }
  close_range_from(lo, -1);
}

static void reset_signals(void) {
  struct sigaction dfl, ign;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ign = dfl;
  ign.sa_handler = SIG_IGN;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP || sig == PL_POKE_SIGNAL) continue;
    (void)sigaction(sig, sig == SIGINT ? &ign : &dfl, NULL);
  }
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, NULL);
}

static void forker_child_reset(void);

static void guard_child_reset(void) {
  /* This thread held it: start afresh, writers first as in the parent (a
   * pool of this child must be able to fork while its workers run). */
  pthread_rwlockattr_t a;
  pthread_rwlockattr_init(&a);
  pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&guard, &a);
  pthread_rwlockattr_destroy(&a);
}

static void become_child(pid_t parent, const int *keep, int nkeep) {
  funlockfile(stderr);
  funlockfile(stdout);
  guard_child_reset();
  pl_port_child_reset();
  pl_pchan_child_reset();
  pl_conn_child_reset();
  pl_idlewatch_child_reset();
  forker_child_reset();
  pl_gil_trace_child_reset();
  reset_signals();
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(1);
  int mine[PL_WIRE_MAX_FDS + 4];
  int n = nkeep < PL_WIRE_MAX_FDS ? nkeep : PL_WIRE_MAX_FDS;
  memcpy(mine, keep, sizeof(int) * (size_t)n);
  close_others(mine, n);
}

pid_t pl_fork(pl_family *quiet, const int *keep, int nkeep, int (*child_main)(void *ud), void *ud,
              int *pidfd) {
  pid_t parent = getpid();
  pl_tstate *ts = NULL;
  *pidfd = -1;
  pthread_rwlock_wrlock(&guard);
  if (quiet != NULL) ts = pl_enter(quiet, NULL, NULL);
  flockfile(stdout);
  flockfile(stderr);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    become_child(parent, keep, nkeep);
    pl_child_exit(child_main(ud));
  }
  int err = errno;
  funlockfile(stderr);
  funlockfile(stdout);
  if (ts != NULL) pl_leave(ts);
  pthread_rwlock_unlock(&guard);
  if (pid < 0) return -err;
  *pidfd = pl_pidfd_open(pid);
  return pid;
}

/* ---- the forker thread ----------------------------------------------- */

typedef struct request {
  pl_family *quiet;
  const int *keep;
  int nkeep;
  int (*child_main)(void *);
  void *ud;
  pid_t pid;
  int pidfd;
  int done;
  struct request *next;
} request;

static pthread_mutex_t fk_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fk_cv = PTHREAD_COND_INITIALIZER;     /* a request came */
static pthread_cond_t fk_done = PTHREAD_COND_INITIALIZER;   /* a request was served */
static request *fk_queue;   /* guarded by fk_mu */
static int fk_started;      /* guarded by fk_mu */

static void forker_child_reset(void) {
  pthread_mutex_init(&fk_mu, NULL);
  pthread_cond_init(&fk_cv, NULL);
  pthread_cond_init(&fk_done, NULL);
  fk_queue = NULL;
  fk_started = 0;
}

static void *forker_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&fk_mu);
  for (;;) {
    while (fk_queue == NULL) pthread_cond_wait(&fk_cv, &fk_mu);
    request *r = fk_queue;
    fk_queue = r->next;
    pthread_mutex_unlock(&fk_mu);
    r->pid = pl_fork(r->quiet, r->keep, r->nkeep, r->child_main, r->ud, &r->pidfd);
    pthread_mutex_lock(&fk_mu);
    r->done = 1;
    pthread_cond_broadcast(&fk_done);
  }
  return NULL;
}

/* The forker runs our code for good: in a stock lua5.4, lua_close would
 * dlclose parlua.so under it, so the library stays mapped (the handle is
 * never closed, on purpose). */
static int start_forker_locked(void) {
  PL_ASSERT_HELD(&fk_mu);
  if (fk_started) return 0;
  int err = pl_background_thread(forker_main, NULL, 0);  /* children run Lua on its stack */
  if (err != 0) return -err;
  fk_started = 1;
  return 0;
}

pid_t pl_fork_detached(pl_family *quiet, const int *keep, int nkeep, int (*child_main)(void *ud),
                       void *ud, int *pidfd) {
  request r;
  memset(&r, 0, sizeof r);
  r.quiet = quiet;
  r.keep = keep;
  r.nkeep = nkeep;
  r.child_main = child_main;
  r.ud = ud;
  pthread_mutex_lock(&fk_mu);
  int err = start_forker_locked();
  if (err != 0) {
    pthread_mutex_unlock(&fk_mu);
    return pl_fork(quiet, keep, nkeep, child_main, ud, pidfd);  /* this thread, then */
  }
  r.next = fk_queue;
  fk_queue = &r;
  pthread_cond_signal(&fk_cv);
  while (!r.done) pthread_cond_wait(&fk_done, &fk_mu);
  pthread_mutex_unlock(&fk_mu);
  *pidfd = r.pidfd;
  return r.pid;
}

/* ---- the child's runtime --------------------------------------------- */

/* os.exit([code [, close]]) in a worker process: leave now, as the child
 * of a fork must (no atexit handler of the parent runs). */
static int child_os_exit(lua_State *L) {
  int status;
  if (lua_isboolean(L, 1)) status = lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE;
  else status = (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
  pl_pchan_flush_all();
  pl_child_exit(status);
  return 0;
}

void pl_child_rt_open(pl_child_rt *c, const luaL_Reg *modules, pl_preload *preloads, double interval,
                      const char *name) {
  parlua_config cfg;
  pl_config_init(&cfg);
  cfg.switch_interval = interval;
  c->rt = malloc(sizeof *c->rt);
  if (c->rt == NULL || pl_runtime_open(c->rt, &cfg, modules, preloads) != 0) _exit(70);  /* nothing sensible to do */
  c->L = c->rt->main.L;
  c->ts = pl_enter(&c->rt->main, c->L, name);
  if (c->ts == NULL) _exit(70);
  lua_getglobal(c->L, "os");
  if (lua_istable(c->L, -1)) {
    lua_pushcfunction(c->L, child_os_exit);
    lua_setfield(c->L, -2, "exit");
  }
  lua_pop(c->L, 1);
}

void pl_child_rt_close(pl_child_rt *c) {
  pl_runtime_close_state(c->rt);
  c->L = NULL;
  pl_leave(c->ts);
  pl_runtime_close(c->rt);
  free(c->rt);
  c->rt = NULL;
}

void pl_child_rt_unlock(pl_child_rt *c) { pl_drop_lock(c->ts, PL_GIL_IDLE); }

void pl_child_rt_lock(pl_child_rt *c) { pl_take_lock(c->ts, c->L, 1); }
