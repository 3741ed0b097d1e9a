/* par.pool: Python's concurrent.futures executors over the pool core of
 * runtime/executor.c.  The kind of worker is chosen here and is the only
 * thing that differs between kinds.
 *
 * Where API.md is silent, Python decides, and these choices hold:
 *   - par.pool{workers=, kind=, init=, max_tasks_per_worker=}: `workers` a
 *     positive integer (default par.cpu_count()); workers start lazily, one
 *     per submit that finds none idle.  Unknown option names are errors.
 *     `max_tasks_per_worker` recycles a worker's state, which kind threads
 *     does not have: it is refused there rather than silently ignored.
 *   - submit(fn, ...) takes a function or a value with __call.  After
 *     shutdown it raises a Shutdown error ("cannot submit after shutdown");
 *     on a pool whose init failed, the BrokenPool error.
 *   - map/starmap return a table of the first value fn returned for each
 *     item, in input order (a nil result leaves a hole).  They submit every
 *     item at once, as Python's map does (an iterator is read to its end
 *     first); the first task error is raised when it is reached and every
 *     task not yet started is cancelled; `timeout` bounds the whole call
 *     (Timeout, the same cancelling).  `chunksize` items go to a worker as
 *     one task (fewer hand-offs).  `progress = true` draws a one-line bar
 *     (count, rate, ETA; core/progress.h) on stderr when stderr is a
 *     terminal; `progress = function(done, total)` is called instead
 *     whenever the count of finished items moves, and once at the end.
 *   - imap/imap_unordered(fn, items [, {buffersize=, chunksize=,
 *     timeout=}]) iterate `for i, result in ...` where i is the item's
 *     position; they read `items` only as tasks finish, keeping at most
 *     `buffersize` items in flight (default 4 per worker, times chunksize),
 *     so an endless iterator works in bounded memory.  They are
 *     to-be-closed values of the generic for: leaving the loop cancels
 *     what has not started.
 *   - `items`: a sequence (its length is taken at the call), or a function
 *     called with no arguments that returns the next item, nil at the end
 *     (io.lines(), string.gmatch(...), coroutine.wrap(...)).
 *   - shutdown([{wait=true, cancel_futures=false, interrupt=false}]),
 *     also shutdown(false) as Python's positional wait; idempotent.
 *     shutdown with wait from a task of the same pool would wait for
 *     itself: it raises instead.  `local pool <close>` shuts down with
 *     wait=true.
 *   - A pool that is collected without shutdown shuts down without waiting
 *     and without cancelling: its queued tasks still run, and the runtime
 *     waits for them when it closes, as Python does at exit.  Waiting in a
 *     finalizer would stall whatever code happened to trigger the
 *     collection -- possibly a task of this very pool, which would then
 *     wait for itself.
 *   - kind "mpi" loads Open MPI on demand (runtime/mpi/mpi.h); its
 *     options `hosts` and `hostfile` (strings, for MPI_Comm_spawn) and
 *     `spawn_timeout` are refused for the other kinds.  Under mpiexec `workers` defaults to the
 *     ranks that serve pools, and may not exceed them.
 *   - stats(): workers (the maximum), alive, idle, submitted, completed
 *     (returned normally), failed (raised), cancelled, queued (waiting,
 *     including futures cancelled but not yet dropped), running, kind.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/progress.h"
#include "mpi/kind_mpi.h"
#include "mpi/mpi.h"
#include "pool/executor.h"
#include "lfuture.h"

static const char POOL_MT[] = "parlua.Pool";
static const char MAPPER_MT[] = "parlua.PoolMap";
static const char POOL_COUNTER[] = "parlua.pool_counter";

static pl_executor *check_pool(lua_State *L) {
  return pl_box_check(L, 1, POOL_MT, "pool");
}

/* check_pool for a method whose upvalue 1 is the Pool metatable: no
 * registry lookup when the argument is one. */
static pl_executor *check_pool_fast(lua_State *L) {
  if (lua_type(L, 1) == LUA_TUSERDATA && lua_getmetatable(L, 1)) {
    int ours = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (ours) {
      pl_executor *e = *(pl_executor **)lua_touserdata(L, 1);
      if (e != NULL) return e;
    }
  }
  return check_pool(L);
}

static int is_callable(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TFUNCTION) return 1;
  int has = luaL_getmetafield(L, idx, "__call") != LUA_TNIL;
  if (has) lua_pop(L, 1);
  return has;
}

/* Raise the error an executor call reported. */
static int raise_exec(lua_State *L, pl_executor *e, int err) {
  switch (err) {
  case PL_ESHUTDOWN:
    return pl_error_raise(L, PL_SHUTDOWN, "cannot submit after shutdown");
  case PL_EBROKENPOOL: {
    char *msg = pl_executor_broken(e);
    lua_pushstring(L, msg != NULL ? msg : "the pool is broken");
    free(msg);
    return pl_error_raise(L, PL_BROKEN_POOL, "the pool is broken: %s", lua_tostring(L, -1));
  }
  case PL_ENOTHREAD:
    return pl_error_raise(L, PL_OS_ERROR, "cannot start a pool worker");
  case PL_ESELF:
    return luaL_error(L, "cannot wait for a pool to shut down from one of its own tasks "
                         "(use shutdown{wait = false})");
  default:
    return luaL_error(L, "not enough memory");
  }
}

/* A worker process that began a message and then sent nothing for this
 * long is killed (kind processes): it wrote the whole message at once, so
 * only a stopped or hostile process pauses that long. */
#define DEFAULT_MESSAGE_TIMEOUT 10.0

/* Restart intensity (kind processes): more worker deaths than this within
 * the window break the pool, as an Erlang supervisor gives up. */
#define DEFAULT_MAX_RESTARTS 10
#define DEFAULT_RESTART_WINDOW 5.0

/* A new worker process makes its state and runs init within this, or it is
 * killed (kind processes): one stuck in init, or on a lock held at the
 * fork, must not hang the pool or its shutdown. */
#define DEFAULT_START_TIMEOUT 60.0

/* Raise an error about field `name` of the options table at idx. */
static int field_error(lua_State *L, int idx, const char *name, const char *what) {
  return luaL_argerror(L, idx, lua_pushfstring(L, "field '%s' %s", name, what));
}

/* Every key of the table at idx must be one of `names`. */
static void check_options(lua_State *L, int idx, const char *const names[]) {
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    int ok = 0;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (int i = 0; names[i] != NULL && !ok; i++) ok = strcmp(names[i], lua_tostring(L, -2)) == 0;
    if (!ok) {
      lua_pop(L, 1);
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL)));
    }
    lua_pop(L, 1);
  }
}

/* A positive integer field (default `dflt` when absent). */
static lua_Integer opt_count(lua_State *L, int idx, const char *name, lua_Integer dflt) {
  lua_Integer v = dflt;
  if (lua_getfield(L, idx, name) != LUA_TNIL) {
    int isint;
    v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < 1) field_error(L, idx, name, "must be a positive integer");
  }
  lua_pop(L, 1);
  return v;
}

/* A timeout field: -1 when absent. */
static double opt_timeout_field(lua_State *L, int idx, const char *name) {
  double t = -1;
  if (lua_getfield(L, idx, name) != LUA_TNIL) {
    if (!lua_isnumber(L, -1) || !(lua_tonumber(L, -1) >= 0))
      field_error(L, idx, name, "must be a non-negative number");
    t = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return t;
}

/* Field `name` of the options at 1: seconds (positive) that only kind
 * processes takes, in nanoseconds; `dflt` seconds when absent. */
static int64_t opt_processes_seconds(lua_State *L, const pl_kind_ops *ops, const char *name,
                                     double dflt) {
  double s = opt_timeout_field(L, 1, name);
  if (s == 0) field_error(L, 1, name, "must be a positive number");
  if (s > 0 && ops != &pl_kind_processes) luaL_error(L, "%s applies to kind processes", name);
  if (s < 0) s = dflt;
  return s > 1e9 ? INT64_MAX / 2 : (int64_t)(s * 1e9);
}

static int opt_flag(lua_State *L, int idx, const char *name, int dflt) {
  int v = dflt;
  int t = lua_getfield(L, idx, name);
  if (t != LUA_TNIL) {
    if (t != LUA_TBOOLEAN) field_error(L, idx, name, "must be a boolean");
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* time_limit and soft_time_limit of the options at idx, over `dflt`
 * (fields absent keep its values). */
static pl_limits opt_limits(lua_State *L, int idx, const pl_limits *dflt) {
  static const char *const names[] = {"soft_time_limit", "time_limit"};
  pl_limits l = *dflt;
  for (int i = 0; i < 2; i++) {
    double v = opt_timeout_field(L, idx, names[i]);
    if (v == 0) field_error(L, idx, names[i], "must be a positive number");
    if (v > 0) *(i == 0 ? &l.soft : &l.hard) = v;
  }
  return l;
}

/* An option that only kind mpi takes: a string, or NULL. */
static const char *opt_string(lua_State *L, int idx, const char *name, const pl_kind_ops *ops) {
  int t = lua_getfield(L, idx, name);
  lua_pop(L, 1);  /* the string stays alive in the options table */
  if (t == LUA_TNIL) return NULL;
  if (ops != &pl_kind_mpi) luaL_error(L, "%s applies to kind mpi only", name);
  if (t != LUA_TSTRING) field_error(L, idx, name, "must be a string");
  lua_getfield(L, idx, name);
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1);
  return s;
}

/* ---- the pool object ------------------------------------------------- */

/* par.pool([opts]) */
static int pool_new(lua_State *L) {
  static const char *const names[] = {"workers", "kind", "init", "max_tasks_per_worker",
                                      "message_timeout", "start_timeout", "time_limit", "soft_time_limit",
                                      "max_restarts", "restart_window", "hosts", "hostfile",
                                      "spawn_timeout", NULL};
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  const char *kind = "threads";
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    check_options(L, 1, names);
  } else {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  lua_settop(L, 1);
  if (lua_getfield(L, 1, "kind") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING) field_error(L, 1, "kind", "must be a string");
    kind = lua_tostring(L, -1);
  }
  const pl_kind_ops *ops = &pl_kind_threads;
  lua_Integer default_workers = ncpu > 0 ? ncpu : 1;
  if (strcmp(kind, "states") == 0) {
    ops = &pl_kind_states;
  } else if (strcmp(kind, "processes") == 0) {
    ops = &pl_kind_processes;
  } else if (strcmp(kind, "mpi") == 0) {
    char err[PL_MPI_ERRLEN];
    if (pl_mpi_get(L, NULL, err) == NULL) return luaL_error(L, "%s", err);
    ops = &pl_kind_mpi;
    if (pl_mpi_world_servers() > 0) default_workers = pl_mpi_world_servers();
  } else if (strcmp(kind, "threads") != 0) {
    return luaL_error(L, "unknown kind '%s' (expected threads, states, processes or mpi)", kind);
  }
  const char *hosts = opt_string(L, 1, "hosts", ops);
  const char *hostfile = opt_string(L, 1, "hostfile", ops);
  lua_Integer workers = opt_count(L, 1, "workers", default_workers);
  luaL_argcheck(L, workers <= 100000, 1, "field 'workers' is too large");
  if (ops == &pl_kind_mpi && hosts == NULL && hostfile == NULL && pl_mpi_world_servers() > 0 &&
      workers > pl_mpi_world_servers())
    return luaL_error(L, "workers=%d, but mpiexec started %d ranks to serve pools (mpiexec -n %d)",
                      (int)workers, pl_mpi_world_servers(), (int)workers + 1);
  lua_Integer max_tasks = opt_count(L, 1, "max_tasks_per_worker", 0);
  luaL_argcheck(L, max_tasks <= INT_MAX, 1, "field 'max_tasks_per_worker' is too large");
  if (max_tasks > 0 && ops == &pl_kind_threads)
    return luaL_error(L, "max_tasks_per_worker applies to kinds states, processes and mpi");
  int64_t message_timeout = opt_processes_seconds(L, ops, "message_timeout", DEFAULT_MESSAGE_TIMEOUT);
  int64_t start_timeout = opt_processes_seconds(L, ops, "start_timeout", DEFAULT_START_TIMEOUT);
  lua_Integer max_restarts = DEFAULT_MAX_RESTARTS;
  if (lua_getfield(L, 1, "max_restarts") != LUA_TNIL) {
    int isint;
    max_restarts = lua_tointegerx(L, -1, &isint);
    if (!isint || max_restarts < 0 || max_restarts > 1000)
      field_error(L, 1, "max_restarts", "must be an integer from 0 to 1000");
    if (ops != &pl_kind_processes) return luaL_error(L, "max_restarts applies to kind processes");
  }
  lua_pop(L, 1);
  int64_t restart_window = opt_processes_seconds(L, ops, "restart_window", DEFAULT_RESTART_WINDOW);
  double spawn_timeout = opt_timeout_field(L, 1, "spawn_timeout");
  if (spawn_timeout == 0) field_error(L, 1, "spawn_timeout", "must be a positive number");
  if (spawn_timeout > 0 && ops != &pl_kind_mpi) return luaL_error(L, "spawn_timeout applies to kind mpi only");
  static const pl_limits none = {0, 0};
  pl_limits limits = opt_limits(L, 1, &none);
  int init = lua_getfield(L, 1, "init");        /* [3] */
  if (init != LUA_TNIL && !is_callable(L, 3)) field_error(L, 1, "init", "must be a function");

  lua_Integer id = 1;
  if (lua_getfield(L, LUA_REGISTRYINDEX, POOL_COUNTER) == LUA_TNUMBER) id = lua_tointeger(L, -1) + 1;
  lua_pop(L, 1);
  lua_pushinteger(L, id);
  lua_setfield(L, LUA_REGISTRYINDEX, POOL_COUNTER);
  char name[32];
  snprintf(name, sizeof name, "Pool-%lld", (long long)id);

  void **box = pl_box_new(L, POOL_MT, NULL);    /* [4] closed until made */
  pl_executor *e = pl_executor_new(ops, pl_family_of(L), (int)workers, name);
  if (e == NULL && pl_runtime_is_closed(pl_runtime_of(L)))
    return pl_error_raise(L, PL_SHUTDOWN, "cannot make a pool: the runtime is closing");
  if (e == NULL) return luaL_error(L, "not enough memory");
  e->max_tasks_per_worker = (int)max_tasks;
  e->limits = limits;
  e->max_restarts = (int)max_restarts;
  e->restart_window_ns = restart_window;
  e->message_timeout_ns = message_timeout;
  e->start_timeout_ns = start_timeout;
  *box = e;  /* the reference pl_executor_new gives the caller */
  if (ops == &pl_kind_mpi && pl_mpi_configure(e, hosts, hostfile, spawn_timeout) != 0) return luaL_error(L, "not enough memory");
  if (init != LUA_TNIL) {
    lua_pushvalue(L, 3);
    pl_executor_set_init(e, L);
  }
  return 1;
}

/* Upvalues: the Pool metatable, the Future metatable. */
static int pool_submit(lua_State *L) {
  pl_executor *e = check_pool_fast(L);
  if (!is_callable(L, 2)) return luaL_typeerror(L, 2, "function");
  int n = lua_gettop(L) - 2;
  pl_future *f;
  int err = pl_executor_submit(e, L, PL_TASK_CALL, n, NULL, &f);
  if (err != 0) return raise_exec(L, e, err);
  pl_future_box(L, f, e->fam, lua_upvalueindex(2));
  return 1;
}

/* submit_with(opts, fn, ...): submit with time limits of the task's own.
 * Upvalues as pool_submit's. */
static int pool_submit_with(lua_State *L) {
  static const char *const names[] = {"time_limit", "soft_time_limit", NULL};
  pl_executor *e = check_pool_fast(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  check_options(L, 2, names);
  pl_limits limits = opt_limits(L, 2, &e->limits);
  if (!is_callable(L, 3)) return luaL_typeerror(L, 3, "function");
  lua_remove(L, 2);
  int n = lua_gettop(L) - 2;
  pl_future *f;
  int err = pl_executor_submit(e, L, PL_TASK_CALL, n, &limits, &f);
  if (err != 0) return raise_exec(L, e, err);
  pl_future_box(L, f, e->fam, lua_upvalueindex(2));
  return 1;
}

/* terminate_workers() / kill_workers() (Python 3.14's): shut down now,
 * cancelling what is queued, and stop every worker process with SIGTERM
 * (SIGKILL after the grace period) or with SIGKILL at once. */
static int stop_workers(lua_State *L, int kill, const char *fname) {
  pl_executor *e = check_pool(L);
  if (e->kind != &pl_kind_processes) return luaL_error(L, "%s applies to kind processes", fname);
  if (kill) atomic_store(&e->kill_workers, 1);
  int rc = pl_executor_shutdown(e, L, 1, 1, 1);
  if (rc == PL_ESELF) return raise_exec(L, e, rc);
  if (rc == PL_ECANCELLED) {
    pl_tstate *ts = pl_tstate_of(L);
    return pl_error_raise_cancelled(L, ts);
  }
  return 0;
}

static int pool_terminate_workers(lua_State *L) { return stop_workers(L, 0, "terminate_workers"); }
static int pool_kill_workers(lua_State *L) { return stop_workers(L, 1, "kill_workers"); }

static int pool_shutdown(lua_State *L) {
  static const char *const names[] = {"wait", "cancel_futures", "interrupt", NULL};
  pl_executor *e = check_pool(L);
  int wait = 1, cancel = 0, interrupt = 0;
  if (lua_type(L, 2) == LUA_TBOOLEAN) {
    wait = lua_toboolean(L, 2);
  } else if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    check_options(L, 2, names);
    wait = opt_flag(L, 2, "wait", 1);
    cancel = opt_flag(L, 2, "cancel_futures", 0);
    interrupt = opt_flag(L, 2, "interrupt", 0);
  }
  int rc = pl_executor_shutdown(e, L, wait, cancel, interrupt);
  if (rc == PL_ESELF) return raise_exec(L, e, rc);
  if (rc == PL_ECANCELLED) {
    pl_tstate *ts = pl_tstate_of(L);
    return pl_error_raise_cancelled(L, ts);
  }
  return 0;
}

/* __close: shutdown{wait=true}; the box stays usable (stats). */
static int pool_close(lua_State *L) {
  void **box = pl_box_get(L, 1, POOL_MT);
  if (*box == NULL) return 0;
  lua_settop(L, 1);
  return pool_shutdown(L);
}

static int pool_gc(lua_State *L) {
  void **box = pl_box_get(L, 1, POOL_MT);
  pl_executor *e = *box;
  if (e == NULL) return 0;
  *box = NULL;
  pl_executor_abandon(e, L);
  pl_executor_decref(e);
  return 0;
}

static void set_int(lua_State *L, const char *k, long long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static int pool_stats(lua_State *L) {
  pl_executor *e = check_pool(L);
  pl_executor_stats st;
  pl_executor_stats_get(e, &st);
  lua_createtable(L, 0, 11);
  set_int(L, "workers", st.workers);
  set_int(L, "alive", st.alive);
  set_int(L, "idle", st.idle);
  set_int(L, "submitted", st.submitted);
  set_int(L, "completed", st.completed);
  set_int(L, "failed", st.failed);
  set_int(L, "cancelled", st.cancelled);
  set_int(L, "queued", st.queued);
  set_int(L, "running", st.running);
  lua_pushstring(L, e->kind->name);
  lua_setfield(L, -2, "kind");
  return 1;
}

static int pool_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, POOL_MT);
  pl_executor *e = *box;
  if (e == NULL) return lua_pushliteral(L, "Pool (closed)"), 1;
  pthread_mutex_lock(&e->mu);
  int down = e->shutdown;
  pthread_mutex_unlock(&e->mu);
  lua_pushfstring(L, "Pool(%s, kind=%s, workers=%d%s)", e->name, e->kind->name, e->max_workers,
                  down ? ", shut down" : "");
  return 1;
}

/* ---- map, starmap, imap, imap_unordered ------------------------------ */

/* A chunk of consecutive items sent as one task. */
typedef struct chunk {
  pl_future *f;          /* NULL: the slot is free */
  lua_Integer first;     /* position of its first item */
  int count;
  pl_waitlink link;      /* fixed in memory while armed */
} chunk;

/* UV_POOL keeps the pool's box alive while the mapper runs, or collecting
 * it would shut the pool down under the loop. */
enum { UV_FN = 1, UV_ITEMS, UV_BUFFER, UV_POOL, NUV = UV_POOL };

typedef struct mapper {
  pl_executor *e;        /* referenced; NULL once closed */
  int mode;              /* PL_TASK_MAP or PL_TASK_STARMAP */
  int ordered;
  lua_Integer chunksize;
  lua_Integer buffersize;
  lua_Integer length;    /* items in the sequence, or -1 for an iterator */
  lua_Integer next_pos;  /* position of the next item to read */
  lua_Integer in_flight; /* items submitted and not yet delivered */
  int exhausted;
  const char *fname;     /* for messages */
  int64_t deadline;
  double timeout;
  pl_limits limits;      /* of every task */
  pl_waiter *w;          /* imap_unordered, progress */
  int bar;               /* map draws a progress bar: an early end clears its line */
  size_t cap;            /* slots */
  size_t *order;         /* ordered: ring of slot ids, in submission order */
  size_t head, len;      /* of order (also the count of busy slots) */
  size_t *free_ids;
  size_t nfree;
  /* The chunk being delivered (values in the UV_BUFFER table). */
  lua_Integer out_first;
  int out_count, out_next;
  chunk slots[];
} mapper;

static void mapper_release(mapper *m, lua_State *L) {
  if (m->e == NULL) return;
  for (size_t i = 0; i < m->cap; i++) {
    chunk *c = &m->slots[i];
    if (c->f == NULL) continue;
    int cancelled;
    pl_future_cancel(c->f, &cancelled);  /* futures of a mapper have no callbacks */
    if (m->w != NULL) pl_waiter_unwatch(m->w, c->f, &c->link);
    pl_future_orphan(c->f, L);
    pl_future_decref(c->f);
    c->f = NULL;
  }
  pl_waiter_free(m->w);
  m->w = NULL;
  if (m->bar) pl_progress_abandon();
  free(m->order);
  free(m->free_ids);
  m->order = m->free_ids = NULL;
  pl_executor_decref(m->e);
  m->e = NULL;
}

static int mapper_gc(lua_State *L) {
  mapper_release(luaL_checkudata(L, 1, MAPPER_MT), L);
  return 0;
}

/* [-0, +1] a mapper with room for `slots` chunks; the pool at 1, fn at 2,
 * items at 3. */
static mapper *mapper_new(lua_State *L, pl_executor *e, int mode, int ordered, size_t slots,
                          const char *fname) {
  if (slots == 0) slots = 1;
  mapper *m = lua_newuserdatauv(L, sizeof *m + slots * sizeof(chunk), NUV);
  memset(m, 0, sizeof *m + slots * sizeof(chunk));
  luaL_setmetatable(L, MAPPER_MT);
  m->mode = mode;
  m->ordered = ordered;
  m->fname = fname;
  m->cap = slots;
  m->next_pos = 1;
  m->timeout = -1;
  m->deadline = INT64_MAX;
  m->order = malloc(slots * sizeof *m->order);
  m->free_ids = malloc(slots * sizeof *m->free_ids);
  if (m->order == NULL || m->free_ids == NULL) {
    free(m->order);
    free(m->free_ids);
    m->order = m->free_ids = NULL;
    luaL_error(L, "not enough memory");
  }
  for (size_t i = 0; i < slots; i++) m->free_ids[i] = slots - 1 - i;
  m->nfree = slots;
  pl_executor_incref(e);
  m->e = e;
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, UV_FN);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, UV_ITEMS);
  lua_newtable(L);
  lua_setiuservalue(L, -2, UV_BUFFER);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, UV_POOL);
  return m;
}

/* [-0, +(0|1)] the next item: 1 and the item pushed, or 0 at the end. */
static int read_item(lua_State *L, mapper *m, int uv) {
  if (m->exhausted) return 0;
  if (m->length >= 0) {
    if (m->next_pos > m->length) {
      m->exhausted = 1;
      return 0;
    }
    lua_geti(L, uv, m->next_pos);
  } else {
    lua_pushvalue(L, uv);
    lua_call(L, 0, 1);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      m->exhausted = 1;
      return 0;
    }
  }
  if (m->mode == PL_TASK_STARMAP && lua_type(L, -1) != LUA_TTABLE)
    luaL_error(L, "bad argument #2 to '%s' (item %I is not a table of arguments)", m->fname,
               m->next_pos);
  m->next_pos++;
  return 1;
}

/* Read up to chunksize items and submit them as one task; 0 when there
 * was nothing left to read. */
static int submit_chunk(lua_State *L, mapper *m, int idx) {
  int top = lua_gettop(L);
  lua_getiuservalue(L, idx, UV_ITEMS);
  int uv = lua_gettop(L);
  lua_getiuservalue(L, idx, UV_FN);
  lua_Integer first = m->next_pos;
  int count = 0;
  luaL_checkstack(L, (int)m->chunksize + 4, "chunksize too large");
  while (count < m->chunksize && read_item(L, m, uv)) count++;
  if (count == 0) {
    lua_settop(L, top);
    return 0;
  }
  size_t id = m->free_ids[--m->nfree];
  pl_future *f;
  int err = pl_executor_submit(m->e, L, m->mode, count, &m->limits, &f);
  if (err != 0) {
    m->nfree++;
    lua_settop(L, top);
    return raise_exec(L, m->e, err);
  }
  chunk *c = &m->slots[id];
  c->f = f;
  c->first = first;
  c->count = count;
  m->in_flight += count;
  if (m->ordered) m->order[(m->head + m->len) % m->cap] = id;
  m->len++;
  if (m->w != NULL && pl_waiter_watch(m->w, f, &c->link, id) != 0) {
    lua_settop(L, top);
    return luaL_error(L, "not enough memory");
  }
  lua_settop(L, top);
  return 1;
}

/* Keep at most buffersize items (and cap chunks) in flight. */
static void refill(lua_State *L, mapper *m, int idx) {
  while (!m->exhausted && m->nfree > 0 &&
         (m->len == 0 || m->in_flight + m->chunksize <= m->buffersize))
    if (!submit_chunk(L, m, idx)) break;
}

static void free_slot(lua_State *L, mapper *m, size_t id) {
  chunk *c = &m->slots[id];
  pl_future_orphan(c->f, L);
  pl_future_decref(c->f);
  c->f = NULL;
  m->in_flight -= c->count;
  m->free_ids[m->nfree++] = id;
  m->len--;
}

static int raise_timeout(lua_State *L, mapper *m) {
  mapper_release(m, L);
  return pl_error_raise(L, PL_TIMEOUT, "%s did not finish within %f seconds", m->fname,
                        (lua_Number)m->timeout);
}

/* The next ready chunk id of an unordered mapper (waiting for one). */
static size_t next_unordered(lua_State *L, mapper *m) {
  size_t id, finished;
  for (;;) {
    /* The count first, then the pop: a chunk that finishes in between is
     * popped, not waited for (counted after a failed pop, it would be
     * neither, and the last ones would be waited for forever). */
    pl_waiter_counts(m->w, &finished, NULL);
    if (pl_waiter_pop(m->w, &id)) return id;
    pl_tstate *ts = pl_tstate_of(L);
    pl_check_cancel(L, ts);
    pl_unlock(L, PL_GIL_POOL);
    int rc = pl_waiter_wait(m->w, ts, m->deadline, finished + 1, 0);
    pl_lock(L, ts);
    if (rc == PL_ECANCELLED || pl_cancel_forced(ts)) {
      mapper_release(m, L);
      pl_error_raise_cancelled(L, ts);
    }
    if (rc == PL_ETIMEOUT && !pl_waiter_pop(m->w, &id)) raise_timeout(L, m);
    if (rc == PL_ETIMEOUT) return id;
  }
}

/* [-0, +count] the values of the finished chunk id, or raise its error
 * (releasing the mapper first: every task not started is cancelled). */
static int push_chunk(lua_State *L, mapper *m, size_t id) {
  chunk *c = &m->slots[id];
  pl_future *f = c->f;
  if (pl_future_state(f) == PL_FUTURE_FINISHED && pl_future_outcome(f) == PL_OUTCOME_OK) {
    luaL_checkstack(L, c->count + 2, "chunksize too large");
    return pl_future_push(L, f);
  }
  pl_future_incref(f);
  int cancelled = pl_future_state(f) == PL_FUTURE_CANCELLED;
  if (!cancelled) {
    pl_future_push(L, f);  /* the error value, before release lets go of it */
    const char *tb = pl_future_traceback(f);
    if (tb != NULL) lua_pushstring(L, tb);
    else lua_pushnil(L);
  }
  mapper_release(m, L);
  if (cancelled) {
    pl_future_decref(f);
    return pl_error_raise(L, PL_CANCELLED, "a task of %s was cancelled", m->fname);
  }
  if (!lua_isnil(L, -1)) pl_error_note_origin(L, -2, -1);
  lua_pop(L, 1);
  pl_future_decref(f);
  return pl_error_rethrow(L);
}

/* ---- progress: the bar (core/progress.h) or the caller's function ---- */

enum { PROGRESS_OFF, PROGRESS_BAR, PROGRESS_CALL };

typedef struct progress {
  int mode;
  pl_progress bar;
  lua_Integer done, told;  /* items finished; the count the function last got (-1: none) */
} progress;

/* Count the items of chunks finished so far (the waiter's ready ids), and
 * show them: a frame of the bar, or fn(done, total) at index fn when the
 * count moved (so (total, total) once, last; (0, 0) for no items). */
static void progress_update(lua_State *L, progress *p, mapper *m, int fn, int final) {
  size_t id;
  if (p->mode == PROGRESS_OFF) return;
  while (pl_waiter_pop(m->w, &id)) p->done += m->slots[id].count;
  if (final) p->done = m->length;
  if (p->mode == PROGRESS_BAR) {
    if (final) pl_progress_finish(&p->bar);
    else pl_progress_set(&p->bar, p->done);
  } else if (p->done != p->told) {
    p->told = p->done;
    lua_pushvalue(L, fn);
    lua_pushinteger(L, p->done);
    lua_pushinteger(L, m->length);
    lua_call(L, 2, 0);
  }
}

/* ---- map and starmap ------------------------------------------------- */

static void parse_map_options(lua_State *L, int idx, int lazy, lua_Integer *chunksize,
                              lua_Integer *buffersize, double *timeout, int *progress_mode,
                              pl_limits *limits) {
  static const char *const eager[] = {"timeout", "chunksize", "progress", "time_limit",
                                      "soft_time_limit", NULL};
  static const char *const lazy_names[] = {"timeout", "chunksize", "buffersize", "time_limit",
                                           "soft_time_limit", NULL};
  *chunksize = 1;
  *timeout = -1;
  *progress_mode = PROGRESS_OFF;
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  check_options(L, idx, lazy ? lazy_names : eager);
  *chunksize = opt_count(L, idx, "chunksize", 1);
  luaL_argcheck(L, *chunksize <= 100000, idx, "field 'chunksize' is too large");
  *timeout = opt_timeout_field(L, idx, "timeout");
  *limits = opt_limits(L, idx, limits);
  if (lazy) *buffersize = opt_count(L, idx, "buffersize", *buffersize);
  else if (lua_getfield(L, idx, "progress") == LUA_TFUNCTION) *progress_mode = PROGRESS_CALL;
  else if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) field_error(L, idx, "progress", "must be a boolean or a function");
  else *progress_mode = lua_toboolean(L, -1) && isatty(STDERR_FILENO) ? PROGRESS_BAR : PROGRESS_OFF;
  if (!lazy) lua_pop(L, 1);
}

static void check_items(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t != LUA_TTABLE && t != LUA_TFUNCTION)
    luaL_typeerror(L, idx, "table or function");
}

/* map and starmap: [pool, fn, items, opts] -> results table. */
static int map_all(lua_State *L, int mode, const char *fname) {
  enum { ITEMS = 3, PROGRESS_FN = 4, MAPPER = 5, RESULTS = 6 };
  pl_executor *e = check_pool(L);
  if (!is_callable(L, 2)) return luaL_typeerror(L, 2, "function");
  check_items(L, ITEMS);
  lua_Integer chunksize, buffersize = 0;
  double timeout;
  progress p;
  memset(&p, 0, sizeof p);
  p.told = -1;
  pl_limits limits = e->limits;
  parse_map_options(L, 4, 0, &chunksize, &buffersize, &timeout, &p.mode, &limits);
  int64_t deadline = pl_deadline_after(timeout);
  if (p.mode == PROGRESS_CALL) lua_getfield(L, 4, "progress");
  else lua_pushnil(L);
  lua_replace(L, PROGRESS_FN);
  lua_settop(L, PROGRESS_FN);
  if (lua_type(L, ITEMS) == LUA_TFUNCTION) {  /* read the iterator to its end first */
    lua_newtable(L);
    for (lua_Integer i = 1;; i++) {
      lua_pushvalue(L, ITEMS);
      lua_call(L, 0, 1);
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        break;
      }
      lua_rawseti(L, -2, i);
    }
    lua_replace(L, ITEMS);
  }
  lua_Integer n = luaL_len(L, ITEMS);
  lua_Integer nchunks = (n + chunksize - 1) / chunksize;
  if ((uint64_t)nchunks > SIZE_MAX / sizeof(chunk) / 2) return luaL_error(L, "too many items");
  mapper *m = mapper_new(L, e, mode, 1, (size_t)nchunks, fname);  /* [MAPPER] */
  lua_toclose(L, MAPPER);  /* an error anywhere below cancels what is in flight */
  m->chunksize = chunksize;
  m->buffersize = n > 0 ? n : 1;
  m->length = n;
  m->deadline = deadline;
  m->timeout = timeout;
  m->limits = limits;
  if (p.mode != PROGRESS_OFF && (m->w = pl_waiter_new()) == NULL) return luaL_error(L, "not enough memory");
  if (p.mode == PROGRESS_BAR) pl_progress_start(&p.bar, n);
  m->bar = p.mode == PROGRESS_BAR;
  while (submit_chunk(L, m, MAPPER)) {
  }
  lua_createtable(L, (int)(n < 1000000 ? n : 1000000), 0);  /* [RESULTS] */
  while (m->len > 0) {
    size_t id = m->order[m->head];
    chunk *c = &m->slots[id];
    if (p.mode != PROGRESS_OFF) {  /* wait in slices, to keep the count moving */
      int64_t until = m->deadline;
      while (!pl_future_done(c->f)) {
        int64_t slice = pl_now_ns() + 100000000;
        m->deadline = slice < until ? slice : until;
        int done = pl_future_block(L, c->f, m->deadline, 0);
        m->deadline = until;
        if (!done && pl_now_ns() >= until) raise_timeout(L, m);
        progress_update(L, &p, m, PROGRESS_FN, 0);
      }
    } else if (!pl_future_block(L, c->f, m->deadline, 0)) {
      raise_timeout(L, m);
    }
    int k = push_chunk(L, m, id);
    for (int j = k; j >= 1; j--) lua_rawseti(L, RESULTS, c->first + j - 1);
    m->head = (m->head + 1) % m->cap;
    free_slot(L, m, id);
    progress_update(L, &p, m, PROGRESS_FN, 0);
  }
  progress_update(L, &p, m, PROGRESS_FN, 1);
  lua_closeslot(L, MAPPER);
  return 1;
}

static int pool_map(lua_State *L) { return map_all(L, PL_TASK_MAP, "map"); }
static int pool_starmap(lua_State *L) { return map_all(L, PL_TASK_STARMAP, "starmap"); }

/* ---- imap and imap_unordered ----------------------------------------- */

static int imap_step(lua_State *L) {
  int idx = lua_upvalueindex(1);
  mapper *m = luaL_checkudata(L, idx, MAPPER_MT);
  lua_settop(L, 0);
  if (m->out_next < m->out_count) {  /* the rest of a chunk */
    lua_getiuservalue(L, idx, UV_BUFFER);
    int j = ++m->out_next;
    lua_pushinteger(L, m->out_first + j - 1);
    lua_rawgeti(L, 1, j);
    lua_pushnil(L);
    lua_rawseti(L, 1, j);
    return 2;
  }
  if (m->e == NULL) return 0;
  refill(L, m, idx);
  if (m->len == 0) {
    mapper_release(m, L);
    return 0;
  }
  size_t id;
  if (m->ordered) {
    id = m->order[m->head];
    if (!pl_future_block(L, m->slots[id].f, m->deadline, 1)) raise_timeout(L, m);
  } else {
    id = next_unordered(L, m);
  }
  chunk *c = &m->slots[id];
  lua_Integer first = c->first;
  int k = push_chunk(L, m, id);
  if (m->ordered) m->head = (m->head + 1) % m->cap;
  free_slot(L, m, id);
  refill(L, m, idx);  /* workers go on while the loop body runs */
  if (k > 1) {  /* keep the rest for the next steps */
    lua_getiuservalue(L, idx, UV_BUFFER);
    lua_insert(L, 1);
    for (int j = k; j >= 2; j--) lua_rawseti(L, 1, j);
    lua_settop(L, 2);
    m->out_first = first;
    m->out_count = k;
    m->out_next = 1;
  } else {
    m->out_count = m->out_next = 0;
  }
  if (k == 0) lua_pushnil(L);
  lua_pushinteger(L, first);
  lua_insert(L, -2);
  return 2;
}

static int imap_new(lua_State *L, int ordered, const char *fname) {
  pl_executor *e = check_pool(L);
  if (!is_callable(L, 2)) return luaL_typeerror(L, 2, "function");
  check_items(L, 3);
  lua_Integer chunksize, buffersize = -1;
  double timeout;
  int progress_mode;  /* progress is not an option of imap: the parser refuses it */
  lua_Integer requested = -1;
  pl_limits limits = e->limits;
  parse_map_options(L, 4, 1, &chunksize, &requested, &timeout, &progress_mode, &limits);
  buffersize = requested > 0 ? requested : 4 * (lua_Integer)e->max_workers * chunksize;
  lua_settop(L, 3);
  lua_Integer slots = buffersize / chunksize + 1;
  if (slots > 1000000) slots = 1000000;
  mapper *m = mapper_new(L, e, PL_TASK_MAP, ordered, (size_t)slots, fname);  /* [4] */
  m->chunksize = chunksize;
  m->buffersize = buffersize;
  m->length = lua_type(L, 3) == LUA_TTABLE ? luaL_len(L, 3) : -1;
  m->timeout = timeout;
  m->limits = limits;
  m->deadline = pl_deadline_after(timeout);
  if (!ordered && (m->w = pl_waiter_new()) == NULL) return luaL_error(L, "not enough memory");
  lua_pushvalue(L, 4);
  lua_pushcclosure(L, imap_step, 1);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushvalue(L, 4);
  return 4;
}

static int pool_imap(lua_State *L) { return imap_new(L, 1, "imap"); }
static int pool_imap_unordered(lua_State *L) { return imap_new(L, 0, "imap_unordered"); }

void pl_open_pool(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"submit", pool_submit},   {"submit_with", pool_submit_with}, {"map", pool_map},
      {"starmap", pool_starmap}, {"imap", pool_imap},
      {"imap_unordered", pool_imap_unordered},
      {"shutdown", pool_shutdown}, {"stats", pool_stats},
      {"terminate_workers", pool_terminate_workers}, {"kill_workers", pool_kill_workers},
      {NULL, NULL}};
  luaL_newmetatable(L, POOL_MT);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_getmetatable(L, "parlua.Future");  /* made by pl_open_future */
  luaL_setfuncs(L, methods, 2);           /* upvalues for pool_submit */
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, pool_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, pool_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, pool_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newmetatable(L, MAPPER_MT);
  lua_pushcfunction(L, mapper_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, mapper_gc);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  lua_pushcfunction(L, pool_new);
  lua_setfield(L, -2, "pool");
}
