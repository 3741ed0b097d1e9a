/* par.thread: an OS thread running a function of the shared state under
 * the global lock, like Python's threading.Thread.
 *
 * The C object (pl_thread) is shared by up to three owners, counted in
 * `refs`: the Lua box, the running OS thread, and the runtime's closer
 * (which joins the thread, or cancels a daemon, before the state closes).
 * The thread's Lua stack is its own lua_State (lua_newthread), anchored in
 * the registry while the box exists or the thread runs; after it returns,
 * that stack holds its results, or [error, traceback].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/progress.h"
#include "bindings.h"
#include "core/clock.h"
#include "sync/held.h"

static const char THREAD_MT[] = "parlua.Thread";

enum { T_NEW, T_RUNNING, T_DONE };

typedef struct pl_thread {
  atomic_int refs;
  pthread_mutex_t mu;
  pthread_cond_t cv;      /* broadcast on start and on finish */
  int state;              /* guarded by mu */
  int started;            /* guarded by mu: ident is known */
  pl_tstate *ts;          /* guarded by mu: set while running */
  long ident;             /* guarded by mu */
  int pending_cancel;     /* guarded by mu: cancel() before start */
  char name[64];
  int daemon;
  pl_family *fam;
  pl_closer *closer;      /* guarded by fam->rt->mu */
  /* Guarded by the family's global lock: */
  lua_State *co;
  int co_ref;
  int nargs;
  int ok;
  int collected;          /* result() saw the error, or it needs no report */
  int has_box;
} pl_thread;

static void thread_unref(pl_thread *t) {
  if (atomic_fetch_sub(&t->refs, 1) != 1) return;
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

static int thread_state(pl_thread *t) {
  pthread_mutex_lock(&t->mu);
  int s = t->state;
  pthread_mutex_unlock(&t->mu);
  return s;
}

/* An error nobody will collect goes to stderr, as Python's threading does.
 * Called holding the lock, once the thread is done. */
static void report_uncollected(pl_thread *t) {
  if (t->ok || t->collected) return;
  t->collected = 1;
  const char *tb = lua_tostring(t->co, 2);
  pl_stderr_claim();  /* not on a progress bar's line */
  fprintf(stderr, "Exception in thread %s:\n%s\n", t->name, tb != NULL ? tb : "?");
  fflush(stderr);
}

/* Drop the anchor of the thread's stack; holding the lock. */
static void release_stack(pl_thread *t, lua_State *L) {
  if (t->co_ref == LUA_NOREF) return;
  luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
  t->co_ref = LUA_NOREF;
  t->co = NULL;
}

static void *thread_main(void *arg) {
  pl_thread *t = arg;
  pl_family *fam = t->fam;
  parlua *rt = fam->rt;
  pl_tstate *ts = pl_attach(fam, t->name);
  if (ts == NULL) abort();
  ts->thread = t;

  pthread_mutex_lock(&t->mu);
  t->ts = ts;
  t->ident = (long)syscall(SYS_gettid);
  t->started = 1;
  if (t->pending_cancel) pl_tstate_cancel(ts, t->pending_cancel, 0);
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);

  pl_take_lock(ts, t->co, 1);
  t->ok = pl_pcall_traced(t->co, t->nargs, LUA_MULTRET) == LUA_OK;
  pl_held_end(ts);  /* the rule of forced cancellation */
  /* Ended by the cancel it was asked for (t:cancel, an interrupt, the
   * runtime stopping a daemon): whoever asked knows, nothing to report. */
  if (!t->ok && pl_tstate_cancel_level(ts) != 0 && pl_error_is(t->co, 1, PL_CANCELLED)) t->collected = 1;
  if (!t->has_box) {
    report_uncollected(t);
    release_stack(t, fam->L);
  }
  pl_tstate_set_running(ts, NULL);  /* before anyone can see it done */

  pthread_mutex_lock(&t->mu);
  t->state = T_DONE;
  t->ts = NULL;
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);

  pl_drop_lock(ts, PL_GIL_THREAD_END);
  pl_detach(ts);
  if (pl_runtime_remove_closer(rt, &t->closer)) thread_unref(t);
  thread_unref(t);
  pl_runtime_thread_exit(rt);
  return NULL;
}

/* Wait until t is done or the deadline passes, without the lock.
 * Returns 1 when done; raises Cancelled when this thread was cancelled. */
static int wait_done(lua_State *L, pl_thread *t, int64_t deadline) {
  int rc = PL_OK, done;
  pl_tstate *ts = pl_unlock(L, PL_GIL_JOIN);
  pl_wait_begin(ts, &t->mu, &t->cv);
  pthread_mutex_lock(&t->mu);
  while (t->state != T_DONE && rc == PL_OK) rc = pl_wait(ts, &t->mu, &t->cv, deadline);
  done = t->state == T_DONE;
  pthread_mutex_unlock(&t->mu);
  pl_wait_end(ts);
  pl_lock(L, ts);
  if (!done && rc == PL_ECANCELLED) pl_check_cancel(L, ts);
  return done;
}

/* The runtime's closer: wait for the thread (cancel it first if a daemon). */
static void thread_close(void *ud, lua_State *L) {
  pl_thread *t = ud;
  if (t->daemon) {
    pthread_mutex_lock(&t->mu);
    if (t->ts != NULL) pl_tstate_cancel(t->ts, PL_CANCEL_FORCED, 0);
    pthread_mutex_unlock(&t->mu);
  }
  while (!wait_done(L, t, INT64_MAX)) {
  }
  thread_unref(t);
}

static pl_thread *check_thread(lua_State *L) {
  return pl_box_check(L, 1, THREAD_MT, "thread");
}

static void check_options(lua_State *L, int idx) {
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    if (strcmp(k, "target") && strcmp(k, "args") && strcmp(k, "name") && strcmp(k, "daemon")) {
      lua_pop(L, 1);
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'",
                                            luaL_tolstring(L, -1, NULL)));
    }
    lua_pop(L, 1);
  }
}

/* par.thread(fn, ...) or par.thread{target=fn, args={...}, name=, daemon=} */
static int thread_new(lua_State *L) {
  int nargs;
  const char *name = NULL;
  int daemon = 0;
  lua_State *co;
  parlua *rt = pl_runtime_of(L);
  if (lua_type(L, 1) == LUA_TTABLE) {
    check_options(L, 1);
    if (lua_getfield(L, 1, "target") != LUA_TFUNCTION)
      luaL_argerror(L, 1, "field 'target' must be a function");
    int t_args = lua_getfield(L, 1, "args");
    luaL_argcheck(L, t_args == LUA_TNIL || t_args == LUA_TTABLE, 1, "field 'args' must be a table");
    if (lua_getfield(L, 1, "name") != LUA_TNIL) {
      luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 1, "field 'name' must be a string");
      name = lua_tostring(L, -1);
    }
    daemon = lua_getfield(L, 1, "daemon") != LUA_TNIL && lua_toboolean(L, -1);
    size_t len = t_args == LUA_TTABLE ? lua_rawlen(L, 3) : 0;
    luaL_argcheck(L, len < 1000000, 1, "field 'args' is too long");
    nargs = (int)len;
    luaL_checkstack(L, nargs + 4, "too many thread arguments");
    lua_pushvalue(L, 2);
    for (int i = 1; i <= nargs; i++) lua_geti(L, 3, i);
  } else {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    nargs = lua_gettop(L) - 1;
  }
  pl_check_not_closed(L, THREAD_MT);
  pl_thread *t = calloc(1, sizeof *t);
  if (t == NULL) return luaL_error(L, "not enough memory");
  atomic_init(&t->refs, 1);
  pthread_mutex_init(&t->mu, NULL);
  pl_cond_init(&t->cv);
  t->state = T_NEW;
  t->co_ref = LUA_NOREF;
  t->fam = pl_family_of(L);
  t->daemon = daemon;
  t->has_box = 1;
  if (name != NULL)
    snprintf(t->name, sizeof t->name, "%s", name);
  else
    snprintf(t->name, sizeof t->name, "Thread-%d", atomic_fetch_add(&rt->thread_counter, 1) + 1);
  /* The box first, so that an error below leaves nothing half-made. */
  pl_box_new(L, THREAD_MT, t);
  lua_insert(L, -(nargs + 2));           /* [box, fn, args...] */
  co = lua_newthread(L);
  /* room for fn, args and what pl_pcall_traced adds */
  if (!lua_checkstack(co, nargs + 4)) return luaL_error(L, "too many thread arguments");
  lua_insert(L, -(nargs + 2));           /* [box, co, fn, args...] */
  lua_xmove(L, co, nargs + 1);
  t->co = co;
  t->nargs = nargs;
  t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

static int thread_start(lua_State *L) {
  pl_thread *t = check_thread(L);
  parlua *rt = t->fam->rt;
  pthread_mutex_lock(&t->mu);
  if (t->state != T_NEW) {
    pthread_mutex_unlock(&t->mu);
    return luaL_error(L, "threads can only be started once");
  }
  t->state = T_RUNNING;
  pthread_mutex_unlock(&t->mu);
  atomic_fetch_add(&t->refs, 2);  /* the OS thread's and the closer's */
  int rc = pl_runtime_add_closer(rt, &t->closer, t->daemon ? PL_CLOSE_DAEMONS : PL_CLOSE_THREADS,
                                 thread_close, t);
  if (rc != 0) {
    atomic_fetch_sub(&t->refs, 2);
    pthread_mutex_lock(&t->mu);
    t->state = T_NEW;
    pthread_mutex_unlock(&t->mu);
    if (rc == PL_ECLOSING)
      return pl_error_raise(L, PL_SHUTDOWN, "cannot start a thread: the runtime is closing");
    return luaL_error(L, "not enough memory");
  }
  pl_runtime_thread_enter(rt);
  pthread_attr_t attr;
  pthread_t tid;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int err = pthread_create(&tid, &attr, thread_main, t);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    pl_runtime_thread_exit(rt);
    if (pl_runtime_remove_closer(rt, &t->closer)) atomic_fetch_sub(&t->refs, 1);
    atomic_fetch_sub(&t->refs, 1);
    pthread_mutex_lock(&t->mu);
    t->state = T_NEW;
    pthread_mutex_unlock(&t->mu);
    return pl_error_raise_os(L, err, "cannot start thread");
  }
  /* Like Python, return once the thread exists (so t.ident is known). */
  pl_tstate *ts = pl_unlock(L, PL_GIL_JOIN);
  pthread_mutex_lock(&t->mu);
  while (!t->started) pthread_cond_wait(&t->cv, &t->mu);
  pthread_mutex_unlock(&t->mu);
  pl_lock(L, ts);
  lua_settop(L, 1);
  return 1;
}

static int thread_join(lua_State *L) {
  pl_thread *t = check_thread(L);
  double timeout = pl_opt_timeout(L, 2);
  pl_tstate *me = pl_tstate_of(L);
  pthread_mutex_lock(&t->mu);
  int state = t->state;
  int is_self = t->ts != NULL && t->ts == me;
  pthread_mutex_unlock(&t->mu);
  if (state == T_NEW) return luaL_error(L, "cannot join thread before it is started");
  if (is_self) return luaL_error(L, "cannot join current thread");
  lua_pushboolean(L, wait_done(L, t, pl_deadline_after(timeout)));
  return 1;
}

static int thread_is_alive(lua_State *L) {
  lua_pushboolean(L, thread_state(check_thread(L)) == T_RUNNING);
  return 1;
}

/* The values the function returned; raises its error (unchanged). */
static int thread_result(lua_State *L) {
  pl_thread *t = check_thread(L);
  if (thread_state(t) == T_NEW) return luaL_error(L, "cannot get the result of a thread before it is started");
  pl_tstate *me = pl_tstate_of(L);
  pthread_mutex_lock(&t->mu);
  int is_self = t->ts != NULL && t->ts == me;
  pthread_mutex_unlock(&t->mu);
  if (is_self) return luaL_error(L, "cannot get the result of the current thread");
  wait_done(L, t, INT64_MAX);
  lua_State *co = t->co;
  int n = lua_gettop(co);
  if (!t->ok) {
    t->collected = 1;
    if (!lua_checkstack(co, 2)) return luaL_error(L, "not enough memory");
    lua_pushvalue(co, 1);
    lua_pushvalue(co, 2);
    lua_xmove(co, L, 2);
    pl_error_note_origin(L, -2, -1);
    lua_pop(L, 1);
    return pl_error_rethrow(L);
  }
  luaL_checkstack(L, n, "too many results");
  /* co may have no free slot after a multiple return: copy one at a time */
  if (!lua_checkstack(co, 1)) return luaL_error(L, "not enough memory");
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(co, i);
    lua_xmove(co, L, 1);
  }
  return n;
}

/* t:cancel([{force = true}]) -> true when the thread had not finished. */
static int thread_cancel(lua_State *L) {
  pl_thread *t = check_thread(L);
  int level = PL_CANCEL_SOFT;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "force") != LUA_TNIL && lua_toboolean(L, -1)) level = PL_CANCEL_FORCED;
  }
  pthread_mutex_lock(&t->mu);
  int live = t->state != T_DONE;
  if (t->state == T_NEW && level > t->pending_cancel) t->pending_cancel = level;
  if (t->ts != NULL) pl_tstate_cancel(t->ts, level, 0);
  pthread_mutex_unlock(&t->mu);
  lua_pushboolean(L, live);
  return 1;
}

static int thread_gc(lua_State *L) {
  void **box = pl_box_get(L, 1, THREAD_MT);
  pl_thread *t = *box;
  if (t == NULL) return 0;
  *box = NULL;
  t->has_box = 0;
  if (thread_state(t) != T_RUNNING) {  /* a running thread cleans up itself */
    if (t->co != NULL && thread_state(t) == T_DONE) report_uncollected(t);
    release_stack(t, L);
  }
  thread_unref(t);
  return 0;
}

static int thread_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, THREAD_MT);
  pl_thread *t = *box;
  if (t == NULL) return lua_pushliteral(L, "Thread (closed)"), 1;
  pthread_mutex_lock(&t->mu);
  int state = t->state;
  long ident = t->ident;
  pthread_mutex_unlock(&t->mu);
  if (state == T_NEW) lua_pushfstring(L, "Thread(%s, initial)", t->name);
  else if (state == T_RUNNING) lua_pushfstring(L, "Thread(%s, started %I)", t->name, (lua_Integer)ident);
  else lua_pushfstring(L, "Thread(%s, stopped %I)", t->name, (lua_Integer)ident);
  return 1;
}

/* Methods first, then the fields name, ident and daemon. */
static int thread_index(lua_State *L) {
  pl_thread *t = check_thread(L);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  const char *k = lua_tostring(L, 2);
  if (k == NULL) return 0;
  if (strcmp(k, "name") == 0) {
    lua_pushstring(L, t->name);
  } else if (strcmp(k, "ident") == 0) {
    pthread_mutex_lock(&t->mu);
    long ident = t->started ? t->ident : 0;
    pthread_mutex_unlock(&t->mu);
    if (ident != 0) lua_pushinteger(L, ident);
    else lua_pushnil(L);
  } else if (strcmp(k, "daemon") == 0) {
    lua_pushboolean(L, t->daemon);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

void pl_open_thread(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"start", thread_start},     {"join", thread_join},     {"is_alive", thread_is_alive},
      {"result", thread_result},   {"cancel", thread_cancel}, {NULL, NULL}};
  pl_new_class(L, THREAD_MT, methods, thread_index, thread_gc, NULL, thread_tostring);
  lua_pushcfunction(L, thread_new);
  lua_setfield(L, -2, "thread");
}
