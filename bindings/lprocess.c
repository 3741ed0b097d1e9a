/* par.process: Python's multiprocessing.Process -- a function run in a
 * process of its own, forked with a fresh runtime and state (runtime/fork.h).
 *
 *   local p = par.process(fn, ...)          -- or par.process{target=fn,
 *   p:start()                               --   args={...}, name=, daemon=}
 *   p:join([timeout]) -> finished           -- boolean
 *   p:is_alive(), p.exitcode, p.pid, p.name, p.daemon
 *   p:terminate() (SIGTERM), p:kill() (SIGKILL)
 *
 * fn and its arguments are encoded at start() in the portable form (so a
 * lock among them is refused there with a Transfer error naming it, and
 * local functions and closures go as they are -- the tutorial's example
 * that pickle refuses works); pipes and queues among them reach the child
 * with their descriptors.  The child decodes them in its fresh state and
 * calls fn.  An error is printed by the child on stderr with its
 * traceback ("Process Process-1:" then the traceback, as Python does) and
 * gives exit code 1; returning gives 0; os.exit(n) gives n.  exitcode is
 * nil until the process has ended (and been reaped: reading it, like
 * is_alive, reaps a process that has ended), then the exit status, or
 * minus the signal number that killed it.
 *
 * start() returns once the child has made its fresh state (a pipe tells
 * it): a child that has not within STARTUP_SECONDS is stuck on a lock
 * another thread held at the fork -- which only an allocator that is not
 * fork-safe does, AddressSanitizer's -- and is killed and forked again.
 *
 * Processes are forked by a thread that never exits (pl_fork_detached), so
 * the child's parent-death signal fires when the parent process dies --
 * not when the thread that called start() ends.  When the runtime closes
 * it waits for every started process, as Python does at exit; daemon
 * processes, and all of them after an interrupt (Ctrl-C), are terminated
 * instead (SIGTERM, then SIGKILL after a grace period).  A process whose
 * object is collected while it runs is still waited for then; none is
 * left a zombie.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/progress.h"
#include "core/clock.h"
#include "proc/fork.h"
#include "lprocess.h"
#include "proc/portable.h"
#include "proc/pqueue.h"
#include "proc/child.h"

static const char PROCESS_MT[] = "parlua.Process";
static const char PROCESS_COUNTER[] = "parlua.process_counter";

#define GRACE_SECONDS 1.0
#define STARTUP_SECONDS 5.0  /* a child makes its state within this ... */
#define STARTUP_TRIES 3      /* ... or is killed and made again, so many times */

/* P_STARTING: one start() is under way (it gives the lock away around
 * the fork), so a second one, from another thread, is refused. */
enum { P_NEW, P_STARTING, P_STARTED };

typedef struct pl_process {
  atomic_int refs;
  pthread_mutex_t mu;
  int state;                /* guarded by mu */
  pl_proc proc;             /* valid once started */
  char name[64];
  int daemon;
  parlua *rt;
  pl_closer *closer;        /* guarded by rt->mu */
} pl_process;

enum { UV_TARGET = 1, UV_ARGS };

static void process_unref(pl_process *p) {
  if (atomic_fetch_sub(&p->refs, 1) != 1) return;
  pthread_mutex_lock(&p->mu);
  int started = p->state == P_STARTED;
  pthread_mutex_unlock(&p->mu);
  if (started) {
    if (!pl_proc_poll(&p->proc)) {  /* cannot happen: the closer waited; stay safe */
      pid_t *one = malloc(sizeof *one);
      if (one != NULL) {
        *one = p->proc.pid;
        pl_reap_in_background(one, 1);
      }
    }
    pl_proc_destroy(&p->proc);
  }
  pthread_mutex_destroy(&p->mu);
  free(p);
}

static int is_started(pl_process *p) {
  pthread_mutex_lock(&p->mu);
  int s = p->state == P_STARTED;
  pthread_mutex_unlock(&p->mu);
  return s;
}

static void set_state(pl_process *p, int state) {
  pthread_mutex_lock(&p->mu);
  p->state = state;
  pthread_mutex_unlock(&p->mu);
}

static pl_process *check_process(lua_State *L) {
  return pl_box_check(L, 1, PROCESS_MT, "process");
}

/* ---- the child ------------------------------------------------------- */

typedef struct pctx {
  const unsigned char *msg;
  size_t len;
  int *fds;
  int nfds;
  const luaL_Reg *modules;
  pl_preload *preloads;
  double interval;
  char name[64];
  int ready;              /* write end of the start-up pipe */
} pctx;

static int c_child_call(lua_State *L) {
  pctx *x = lua_touserdata(L, 1);
  lua_settop(L, 0);
  pl_pmsg m;
  char err[256];
  int used = 0;
  if (pl_port_unpack(x->msg, x->len, x->fds, x->nfds, &used, &m, err, sizeof err) != 0)
    return pl_error_raise(L, PL_TRANSFER, "%s", err);
  int n = pl_pmsg_push(L, &m);
  if (n < 1) return luaL_error(L, "an empty process message");
  lua_call(L, n - 1, 0);
  return 0;
}

static int process_child(void *ud) {
  pctx *x = ud;
  pl_child_rt c;
  pl_child_rt_open(&c, x->modules, x->preloads, x->interval, NULL);
  char made = 1;  /* the state is made: the parent's start() may return */
  ssize_t n = write(x->ready, &made, 1);
  (void)n;
  (void)close(x->ready);
  lua_State *L = c.L;
  lua_pushcfunction(L, c_child_call);
  lua_pushlightuserdata(L, x);
  int status = 0;
  if (pl_pcall_traced(L, 1, 0) != LUA_OK) {  /* [error, traceback] */
    const char *tb = lua_tostring(L, -1);
    pl_stderr_claim();  /* not on a progress bar's line */
    fprintf(stderr, "Process %s:\n%s\n", x->name, tb != NULL ? tb : "?");
    fflush(stderr);
    lua_pop(L, 2);
    status = 1;
  }
  pl_child_rt_close(&c);
  pl_pchan_flush_all();
  return status;
}

/* ---- the parent ------------------------------------------------------ */

/* Wait until the child has made its state (or has ended: the pipe's end).
 * 0 when it has not within STARTUP_SECONDS: it is stuck on a lock another
 * thread held at the fork (fork.h: an allocator that is not fork-safe,
 * AddressSanitizer's).  A forced cancel stops the wait: the process is
 * there, started. */
static int await_made(int rfd, pl_tstate *ts) {
  pl_poller w;
  struct pollfd pf = {rfd, POLLIN, 0};
  pl_poller_begin(&w, ts, 0);
  int r = pl_poller_poll(&w, &pf, 1, pl_deadline_after(STARTUP_SECONDS));
  pl_poller_end(&w);
  return r != 0;
}

/* Fork the child of process_start, made again when it is stuck at its
 * start (STARTUP_TRIES times).  The pid, or -errno. */
static pid_t fork_child(pl_family *quiet, pctx *x, pl_tstate *ts, int *pidfd) {
  int keep[PL_WIRE_MAX_FDS + 1];
  memcpy(keep, x->fds, sizeof(int) * (size_t)x->nfds);
  for (int tries = 1;; tries++) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) return -errno;
    keep[x->nfds] = x->ready = ready[1];
    pid_t pid = pl_fork_detached(quiet, keep, x->nfds + 1, process_child, x, pidfd);
    (void)close(ready[1]);
    int made = pid < 0 || await_made(ready[0], ts);
    (void)close(ready[0]);
    if (made) return pid;
    (void)kill(pid, SIGKILL);  /* not reaped yet: the pid is still ours */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    if (*pidfd >= 0) (void)close(*pidfd);
    if (tries == STARTUP_TRIES) return -EAGAIN;
  }
}

/* Wait for the end until deadline, without the lock.  PL_OK, PL_ETIMEOUT or
 * PL_ECANCELLED. */
static int wait_end(lua_State *L, pl_process *p, int64_t deadline, int cancellable) {
  pl_poller w;
  pl_tstate *ts = L != NULL ? pl_unlock(L, PL_GIL_PROCESS) : NULL;
  pl_poller_begin(&w, cancellable ? ts : NULL, 0);
  int rc = pl_proc_wait(&p->proc, &w, deadline);
  pl_poller_end(&w);
  if (L != NULL) pl_lock(L, ts);
  return rc;
}

/* The runtime closes: wait for the process; terminate it first when it
 * is a daemon or the runtime was interrupted (or this wait is). */
static void process_close(void *ud, lua_State *L) {
  pl_process *p = ud;
  int hard = p->daemon || atomic_load(&p->rt->interrupted);
  if (!hard && wait_end(L, p, INT64_MAX, 1) == PL_OK) {
    process_unref(p);
    return;
  }
  (void)pl_proc_signal(&p->proc, SIGTERM);
  if (wait_end(L, p, pl_deadline_after(GRACE_SECONDS), 0) != PL_OK) {
    (void)pl_proc_signal(&p->proc, SIGKILL);
    wait_end(L, p, INT64_MAX, 0);
  }
  process_unref(p);
}

static void check_options(lua_State *L, int idx) {
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    if (strcmp(k, "target") && strcmp(k, "args") && strcmp(k, "name") && strcmp(k, "daemon")) {
      lua_pop(L, 1);
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL)));
    }
    lua_pop(L, 1);
  }
}

/* par.process(fn, ...) or par.process{target=fn, args={...}, name=, daemon=} */
static int process_new(lua_State *L) {
  const char *name = NULL;
  int daemon = 0;
  if (lua_type(L, 1) == LUA_TTABLE) {
    check_options(L, 1);
    if (lua_getfield(L, 1, "target") != LUA_TFUNCTION)
      luaL_argerror(L, 1, "field 'target' must be a function");
    int t = lua_getfield(L, 1, "args");
    luaL_argcheck(L, t == LUA_TNIL || t == LUA_TTABLE, 1, "field 'args' must be a table");
    if (lua_getfield(L, 1, "name") != LUA_TNIL) {
      luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 1, "field 'name' must be a string");
      name = lua_tostring(L, -1);
    }
    t = lua_getfield(L, 1, "daemon");
    luaL_argcheck(L, t == LUA_TNIL || t == LUA_TBOOLEAN, 1, "field 'daemon' must be a boolean");
    daemon = lua_toboolean(L, -1);
    lua_pop(L, 1);                                     /* [opts, target, args, name?] */
    lua_pushvalue(L, 2);                               /* target */
    size_t len = lua_istable(L, 3) ? lua_rawlen(L, 3) : 0;
    luaL_argcheck(L, len < 1000000, 1, "field 'args' is too long");
    lua_createtable(L, (int)len, 1);
    for (size_t i = 1; i <= len; i++) {
      lua_geti(L, 3, (lua_Integer)i);
      lua_rawseti(L, -2, (lua_Integer)i);
    }
    lua_pushinteger(L, (lua_Integer)len);
    lua_setfield(L, -2, "n");
  } else {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int n = lua_gettop(L) - 1;
    lua_pushvalue(L, 1);
    lua_createtable(L, n, 1);
    for (int i = 1; i <= n; i++) {
      lua_pushvalue(L, i + 1);
      lua_rawseti(L, -2, i);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
  }                                                    /* [..., target, args] */
  int args = lua_gettop(L), target = args - 1;
  lua_Integer id = 1;
  if (lua_getfield(L, LUA_REGISTRYINDEX, PROCESS_COUNTER) == LUA_TNUMBER) id = lua_tointeger(L, -1) + 1;
  lua_pop(L, 1);
  lua_pushinteger(L, id);
  lua_setfield(L, LUA_REGISTRYINDEX, PROCESS_COUNTER);
  void **box = lua_newuserdatauv(L, sizeof *box, 2);  /* closed until the object exists */
  *box = NULL;
  luaL_setmetatable(L, PROCESS_MT);
  pl_adopted_touch(L);
  pl_process *p = calloc(1, sizeof *p);
  if (p == NULL) return luaL_error(L, "not enough memory");
  atomic_init(&p->refs, 1);
  pthread_mutex_init(&p->mu, NULL);
  p->state = P_NEW;
  p->daemon = daemon;
  p->rt = pl_runtime_of(L);
  if (name != NULL) snprintf(p->name, sizeof p->name, "%s", name);
  else snprintf(p->name, sizeof p->name, "Process-%lld", (long long)id);
  *box = p;
  lua_pushvalue(L, target);
  lua_setiuservalue(L, -2, UV_TARGET);
  lua_pushvalue(L, args);
  lua_setiuservalue(L, -2, UV_ARGS);
  return 1;
}

typedef struct outmsg {
  pl_obuf b;
  pl_fdlist fds;
} outmsg;

/* [target, args] -> the portable message of target, args... */
static int c_encode_start(lua_State *L) {
  outmsg *o = lua_touserdata(L, 3);
  lua_Integer n = (lua_getfield(L, 2, "n"), lua_tointeger(L, -1));
  lua_pop(L, 1);
  lua_settop(L, 2);
  luaL_checkstack(L, (int)n + 4, "too many process arguments");
  for (lua_Integer i = 1; i <= n; i++) lua_rawgeti(L, 2, i);
  lua_remove(L, 2);
  pl_port_encode(L, 1, (int)n + 1, "function", "argument %d", &o->b, &o->fds);
  return 0;
}

static int process_start(lua_State *L) {
  pl_process *p = check_process(L);
  parlua *rt = p->rt;
  if (pl_runtime_is_closed(rt))
    return pl_error_raise(L, PL_SHUTDOWN, "cannot start a process: the runtime is closing");
  pthread_mutex_lock(&p->mu);
  int state = p->state;
  if (state == P_NEW) p->state = P_STARTING;
  pthread_mutex_unlock(&p->mu);
  if (state != P_NEW) return luaL_error(L, "a process can only be started once");
  outmsg o;
  memset(&o, 0, sizeof o);
  pl_fdlist_init(&o.fds);
  lua_settop(L, 1);
  lua_pushcfunction(L, c_encode_start);
  lua_getiuservalue(L, 1, UV_TARGET);
  lua_getiuservalue(L, 1, UV_ARGS);
  lua_pushlightuserdata(L, &o);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    pl_obuf_free(&o.b);
    pl_fdlist_free(&o.fds);
    set_state(p, P_NEW);
    return pl_error_throw(L);
  }
  pctx x;
  memset(&x, 0, sizeof x);
  x.msg = o.b.data;
  x.len = o.b.len;
  x.fds = o.fds.fd;
  x.nfds = o.fds.n;
  pthread_mutex_lock(&rt->mu);
  x.modules = rt->modules;
  x.preloads = rt->preloads;
  pthread_mutex_unlock(&rt->mu);
  x.interval = pl_gil_get_interval(&rt->main.gil);
  snprintf(x.name, sizeof x.name, "%s", p->name);
  atomic_fetch_add(&p->refs, 1);  /* the closer's */
  int rc = pl_runtime_add_closer(rt, &p->closer, PL_CLOSE_THREADS, process_close, p);
  if (rc != 0) {
    atomic_fetch_sub(&p->refs, 1);
    pl_obuf_free(&o.b);
    pl_fdlist_free(&o.fds);
    set_state(p, P_NEW);
    if (rc == PL_ECLOSING) return pl_error_raise(L, PL_SHUTDOWN, "cannot start a process: the runtime is closing");
    return luaL_error(L, "not enough memory");
  }
  int pidfd;
  pl_tstate *ts = pl_unlock(L, PL_GIL_PROCESS);
  pid_t pid = fork_child(pl_family_of(L), &x, ts, &pidfd);
  pl_lock(L, ts);
  pl_obuf_free(&o.b);
  pl_fdlist_free(&o.fds);  /* the child has its own */
  if (pid < 0) {
    if (pl_runtime_remove_closer(rt, &p->closer)) atomic_fetch_sub(&p->refs, 1);
    set_state(p, P_NEW);
    return pl_error_raise_os(L, (int)-pid, "cannot start a process");
  }
  pthread_mutex_lock(&p->mu);
  pl_proc_init(&p->proc, pid, pidfd);
  p->state = P_STARTED;
  pthread_mutex_unlock(&p->mu);
  lua_pushnil(L);  /* the function and arguments are the child's now */
  lua_setiuservalue(L, 1, UV_TARGET);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, UV_ARGS);
  lua_settop(L, 1);
  return 1;
}

static int process_join(lua_State *L) {
  pl_process *p = check_process(L);
  double timeout = pl_opt_timeout(L, 2);
  if (!is_started(p)) return luaL_error(L, "cannot join a process before it is started");
  int rc = wait_end(L, p, pl_deadline_after(timeout), 1);
  if (rc == PL_ECANCELLED) {
    pl_tstate *ts = pl_tstate_of(L);
    return pl_error_raise_cancelled(L, ts);
  }
  lua_pushboolean(L, rc == PL_OK);
  return 1;
}

static int process_is_alive(lua_State *L) {
  pl_process *p = check_process(L);
  lua_pushboolean(L, is_started(p) && !pl_proc_poll(&p->proc));
  return 1;
}

static int send_signal(lua_State *L, int sig) {
  pl_process *p = check_process(L);
  if (!is_started(p)) return luaL_error(L, "cannot signal a process before it is started");
  if (pl_proc_poll(&p->proc)) return 0;  /* ended: its pid may be another's soon */
  int err = pl_proc_signal(&p->proc, sig);
  if (err != 0) return pl_error_raise_os(L, err, "cannot send the signal");
  return 0;
}

static int process_terminate(lua_State *L) { return send_signal(L, SIGTERM); }
static int process_kill(lua_State *L) { return send_signal(L, SIGKILL); }

static int process_gc(lua_State *L) {
  void **box = pl_box_get(L, 1, PROCESS_MT);
  pl_process *p = *box;
  if (p == NULL) return 0;
  *box = NULL;
  process_unref(p);
  return 0;
}

static int process_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, PROCESS_MT);
  pl_process *p = *box;
  if (p == NULL) return lua_pushliteral(L, "Process (closed)"), 1;
  if (!is_started(p)) return lua_pushfstring(L, "Process(%s, initial)", p->name), 1;
  if (!pl_proc_poll(&p->proc))
    return lua_pushfstring(L, "Process(%s, started, pid=%d)", p->name, (int)p->proc.pid), 1;
  lua_pushfstring(L, "Process(%s, stopped, exitcode=%d)", p->name, pl_proc_returncode(&p->proc));
  return 1;
}

/* Methods first, then the fields pid, exitcode, name, daemon. */
static int process_index(lua_State *L) {
  pl_process *p = check_process(L);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  const char *k = lua_tostring(L, 2);
  if (k == NULL) return 0;
  int started = is_started(p);
  if (strcmp(k, "pid") == 0) {
    if (started) lua_pushinteger(L, p->proc.pid);
    else lua_pushnil(L);
  } else if (strcmp(k, "exitcode") == 0) {
    if (started && pl_proc_poll(&p->proc)) lua_pushinteger(L, pl_proc_returncode(&p->proc));
    else lua_pushnil(L);
  } else if (strcmp(k, "name") == 0) {
    lua_pushstring(L, p->name);
  } else if (strcmp(k, "daemon") == 0) {
    lua_pushboolean(L, p->daemon);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

void pl_open_process(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"start", process_start},         {"join", process_join}, {"is_alive", process_is_alive},
      {"terminate", process_terminate}, {"kill", process_kill}, {NULL, NULL}};
  pl_new_class(L, PROCESS_MT, methods, process_index, process_gc, NULL, process_tostring);
  lua_pushcfunction(L, process_new);
  lua_setfield(L, -2, "process");
}
