/* Kind "threads": how one task is carried out by a worker OS thread that
 * runs a coroutine of the one shared state under its global lock.
 *
 * Every worker owns a tstate in the main family (so the lock's hook, a
 * forced cancel and par.sleep work in tasks as in any par.thread) and a
 * coroutine made by the submitter that started it, anchored in the
 * registry.  The coroutine's stack keeps two slots for the worker's life:
 * [1] a message handler that records the traceback of an error in [2], a
 * table; a task's function and arguments go above them and are popped
 * after the call.  So running a task allocates nothing beyond what the
 * task itself does (pl_pcall_traced makes a closure and a table per call;
 * this is the same handler, made once).
 *
 * Payload.  A task is registry references in the shared state: the
 * function, and its arguments (none; the one value itself; or a table of
 * them).  Results come back the same way as the future's pl_value: no
 * reference for no result, the value itself for one, a table {v1..vn}
 * for several (multiple returns are kept).  Values cross by reference: a
 * table returned by a task, or raised as its error, is the very same
 * table for the caller.
 *
 * The lock.  A worker takes the lock after it has taken a task (not
 * urgently: a new task does not pre-empt Lua code that runs, as with
 * CPython's threads), marks the future RUNNING -- a future cancelled
 * meanwhile is skipped -- runs it, and stores the outcome.  If more tasks
 * are queued it keeps the lock and goes on with the next one (the hook
 * hands the lock over whenever another thread asks), so a burst of small
 * tasks costs no hand-over each; otherwise it lets the lock go *before*
 * it finishes the future, so that the waiter it wakes finds the lock free.
 * Done callbacks run in this worker, holding the lock, after the future is
 * finished (as in Python, waiters are told first).
 *
 * init runs once in every worker, holding the lock, before its first
 * task.  An init error breaks the pool, as Python's BrokenThreadPool: the
 * task at hand and every task still to run fail with a BrokenPool error
 * ("pool init failed: <message>", field `cause` = the init's own error
 * value, traceback = the init's), and submit refuses.  Failing only the
 * tasks of the worker whose init failed would make the outcome depend on
 * which worker happened to take which task; a broken pool is explicit.
 *
 * Interrupts (shutdown{interrupt=true}) are a forced cancel of the
 * worker's tstate: the hook raises Cancelled at the task's next
 * instruction, and par.sleep or any other blocking call returns with it.
 * The executor resets the cancel state between tasks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "core/enter.h"
#include "core/errors.h"
#include "pool/executor.h"
#include "pool/seat.h"
#include "sync/held.h"

typedef struct texec {
  int broken_ref;   /* guarded by the lock: the BrokenPool error, or LUA_NOREF */
  char *broken_tb;  /* the failed init's traceback */
} texec;

typedef struct tworker {
  pl_seat seat;     /* its tstate and coroutine in the shared state */
  int holds;        /* worker thread only: it holds the lock */
} tworker;

enum { SLOT_HANDLER = 1, SLOT_TRACEBACK = 2, SLOT_FN = 3 };

/* ---- values ---------------------------------------------------------- */

static int value_push(lua_State *L, const pl_value *v) {
  if (v->owner != pl_family_of(L)) return luaL_error(L, "cannot receive a value of another state");
  int n = (int)v->b;
  if (n == 0) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, (lua_Integer)v->a);
  if (n == 1) return 1;
  luaL_checkstack(L, n, "too many results");
  int t = lua_gettop(L);
  for (int i = 1; i <= n; i++) lua_rawgeti(L, t, i);
  lua_remove(L, t);
  return n;
}

/* Without a state (L NULL) the reference cannot be dropped; it is then
 * reclaimed when the state closes.  The rules of future.h make that
 * happen only for a value that never had a holder. */
static void value_free(lua_State *L, pl_value *v) {
  if (L != NULL && v->b > 0) luaL_unref(L, LUA_REGISTRYINDEX, (int)v->a);
  v->ops = NULL;
}

static const pl_value_ops value_ops = {value_push, value_free};

/* [-n, +0] the top n values of co become v. */
static void store_values(lua_State *co, pl_family *fam, int n, pl_value *v) {
  memset(v, 0, sizeof *v);
  v->ops = &value_ops;
  v->owner = fam;
  v->b = n;
  if (n == 0) {
    v->a = LUA_NOREF;
    return;
  }
  if (n > 1) {
    lua_createtable(co, n, 0);
    lua_insert(co, -(n + 1));
    int t = lua_gettop(co) - n;
    for (int i = n; i >= 1; i--) lua_rawseti(co, t, i);
  }
  v->a = luaL_ref(co, LUA_REGISTRYINDEX);
}

/* ---- payloads -------------------------------------------------------- */

static void threads_pack(pl_executor *e, lua_State *L, pl_task *t) {
  (void)e;
  int n = t->n;
  if (n == 0) {
    t->b = LUA_NOREF;
  } else {
    if (n > 1) {
      lua_createtable(L, n, 0);
      lua_insert(L, -(n + 1));
      int tbl = lua_gettop(L) - n;
      for (int i = n; i >= 1; i--) lua_rawseti(L, tbl, i);
    }
    t->b = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  t->a = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void threads_drop(pl_executor *e, lua_State *L, pl_task *t) {
  (void)e;
  luaL_unref(L, LUA_REGISTRYINDEX, (int)t->a);
  if (t->n > 0) luaL_unref(L, LUA_REGISTRYINDEX, (int)t->b);
  t->a = t->b = LUA_NOREF;
}

/* ---- the lock -------------------------------------------------------- */

static void take_lock(tworker *tw) {
  pl_take_lock(tw->seat.ts, tw->seat.co, 0);
  tw->holds = 1;
}

static void drop_lock(tworker *tw, pl_gil_reason why) {
  pl_drop_lock(tw->seat.ts, why);
  tw->holds = 0;
}

/* ---- running --------------------------------------------------------- */

/* [-0, +n] the n values a payload reference stands for: 1, or 0 with
 * nothing pushed when the stack cannot grow for them.  The submitter held
 * them on its own stack, so only a failing allocation refuses the room;
 * there is no caller to raise into, so the task fails instead. */
static int push_payload(lua_State *co, int n, int ref) {
  if (n == 0) return 1;
  if (!lua_checkstack(co, n + 4)) return 0;
  lua_rawgeti(co, LUA_REGISTRYINDEX, ref);
  if (n == 1) return 1;
  int t = lua_gettop(co);
  for (int i = 1; i <= n; i++) lua_rawgeti(co, t, i);
  lua_remove(co, t);
  return 1;
}

/* Call a task on co; its payload is used up.  Leaves co at [handler,
 * slot] and returns PL_TASK_OK or PL_TASK_FAILED with *v (and *tb). */
static int call_task(tworker *tw, pl_family *fam, pl_task *t, pl_value *v, char **tb) {
  lua_State *co = tw->seat.co;
  int n = t->n, status;
  lua_rawgeti(co, LUA_REGISTRYINDEX, (lua_Integer)t->a);  /* [3] fn */
  if (t->mode == PL_TASK_CALL) {
    if (!push_payload(co, n, (int)t->b)) {
      threads_drop(NULL, co, t);
      lua_settop(co, SLOT_TRACEBACK);
      pl_value_no_memory(v);
      return PL_TASK_FAILED;
    }
    threads_drop(NULL, co, t);
    status = lua_pcall(co, n, LUA_MULTRET, SLOT_HANDLER);
    if (status == LUA_OK) store_values(co, fam, lua_gettop(co) - SLOT_TRACEBACK, v);
  } else {
    if (n > 0) lua_rawgeti(co, LUA_REGISTRYINDEX, (lua_Integer)t->b);  /* [4] item(s) */
    else lua_pushnil(co);
    threads_drop(NULL, co, t);
    if (n > 1) lua_createtable(co, n, 0);                       /* [5] results */
    status = LUA_OK;
    for (int j = 1; j <= n && status == LUA_OK; j++) {
      lua_pushvalue(co, SLOT_FN);
      if (n == 1) lua_pushvalue(co, 4);
      else lua_rawgeti(co, 4, j);
      int nargs = t->mode == PL_TASK_STARMAP ? pl_task_unpack_args(co, 0) : 1;  /* outside a pcall */
      status = lua_pcall(co, nargs, 1, SLOT_HANDLER);
      if (status == LUA_OK && n > 1) lua_rawseti(co, 5, j);
    }
    if (status == LUA_OK) {
      lua_replace(co, SLOT_FN);  /* the one result, or the results table */
      lua_settop(co, SLOT_FN);
      memset(v, 0, sizeof *v);
      v->ops = &value_ops;
      v->owner = fam;
      v->b = n;
      v->a = n > 0 ? luaL_ref(co, LUA_REGISTRYINDEX) : LUA_NOREF;
      if (n == 0) lua_pop(co, 1);
    }
  }
  if (status != LUA_OK) {
    *tb = pl_take_traceback(co, SLOT_TRACEBACK);
    store_values(co, fam, 1, v);
  }
  lua_settop(co, SLOT_TRACEBACK);
  return status == LUA_OK ? PL_TASK_OK : PL_TASK_FAILED;
}

/* The BrokenPool error every task of a broken pool fails with. */
static void fail_broken(tworker *tw, pl_family *fam, texec *te, pl_task *t, pl_value *v, char **tb) {
  threads_drop(NULL, tw->seat.co, t);
  lua_rawgeti(tw->seat.co, LUA_REGISTRYINDEX, te->broken_ref);
  store_values(tw->seat.co, fam, 1, v);
  *tb = te->broken_tb != NULL ? strdup(te->broken_tb) : NULL;
}

static void threads_run(pl_worker *w, pl_task *t) {
  tworker *tw = w->kind;
  pl_executor *e = w->e;
  pl_family *fam = e->fam;
  texec *te = e->kind_data;
  pl_future *f = t->f;
  if (!tw->holds) take_lock(tw);
  else if (pl_gil_drop_requested(&fam->gil)) pl_gil_yield(&fam->gil, tw->seat.ts, PL_GIL_SWITCH);
  if (!pl_future_set_running_or_notify_cancel(f)) {
    threads_drop(e, tw->seat.co, t);
    pl_executor_task_done(w, PL_TASK_CANCELLED, 1);
    return;
  }
  pl_executor_arm_limits(w, t);
  pl_value v;
  char *tb = NULL;
  int outcome;
  if (te->broken_ref != LUA_NOREF) {
    fail_broken(tw, fam, te, t, &v, &tb);
    outcome = PL_TASK_FAILED;
  } else {
    outcome = call_task(tw, fam, t, &v, &tb);
  }
  /* Stored while the lock is held (an orphan's value is freed here), the
   * lock let go before the future is finished: whoever waits for it takes
   * the lock back at once. */
  if (!pl_future_store(f, outcome == PL_TASK_OK ? PL_OUTCOME_OK : PL_OUTCOME_ERROR, &v, tb)) {
    value_free(tw->seat.co, &v);  /* nobody holds the future any more */
    free(tb);
  }
  int looking = !pl_future_has_callbacks(f);
  pl_executor_task_done(w, outcome, looking);
  if (!pl_executor_has_work(e)) drop_lock(tw, PL_GIL_IDLE);
  pl_future_cb *cbs = pl_future_finish(f);
  if (cbs != NULL) {
    if (!tw->holds) take_lock(tw);
    pl_future_run_callbacks(tw->seat.co, f, cbs);
    lua_settop(tw->seat.co, SLOT_TRACEBACK);
  }
  if (!looking) pl_executor_looking(w);
}

/* ---- workers --------------------------------------------------------- */

/* Run init; on error break the pool (see the top of the file).  Nothing
 * here may raise outside a protected call: a worker has no handler of its
 * own, and Lua would rethrow into the main thread's. */
static void run_init(tworker *tw, pl_executor *e) {
  lua_State *co = tw->seat.co;
  texec *te = e->kind_data;
  lua_rawgeti(co, LUA_REGISTRYINDEX, (lua_Integer)e->init.a);
  if (!push_payload(co, e->init.n, (int)e->init.b)) {
    lua_settop(co, SLOT_TRACEBACK);
    lua_pushliteral(co, "not enough memory");  /* init fails as with a memory error */
  } else if (lua_pcall(co, e->init.n, 0, SLOT_HANDLER) == LUA_OK) {
    return;
  }
  char *tb = pl_take_traceback(co, SLOT_TRACEBACK);
  if (te->broken_ref == LUA_NOREF) {       /* the first init error breaks the pool */
    lua_pushcfunction(co, pl_task_broken_init);
    lua_insert(co, -2);                    /* [pl_task_broken_init, cause] */
    lua_pushstring(co, tb != NULL ? tb : "(no message)");
    if (lua_pcall(co, 2, 1, 0) == LUA_OK) {
      lua_getfield(co, -1, "message");
      pl_executor_break(e, lua_tostring(co, -1));
      lua_pop(co, 1);
    } else {
      pl_executor_break(e, "pool init failed");
    }
    te->broken_ref = luaL_ref(co, LUA_REGISTRYINDEX);
    te->broken_tb = tb;
    tb = NULL;
  }
  free(tb);
  lua_settop(co, SLOT_TRACEBACK);
}

static int threads_worker_new(pl_worker *w, lua_State *L) {
  tworker *tw = calloc(1, sizeof *tw);
  if (tw == NULL) return -1;
  char name[sizeof tw->seat.ts->name];
  snprintf(name, sizeof name, "%s-Worker-%d", w->e->name, w->index);
  if (pl_seat_init(&tw->seat, w->e->fam, L, name) != 0) {
    free(tw);
    return -1;
  }
  lua_State *co = tw->seat.co;
  lua_newtable(co);                        /* [2] the traceback slot */
  lua_pushvalue(co, -1);
  lua_pushcclosure(co, pl_traceback_recorder, 1);
  lua_insert(co, SLOT_HANDLER);            /* [1] the handler */
  w->kind = tw;
  return 0;
}

static void threads_worker_abandon(pl_worker *w, lua_State *L) {
  tworker *tw = w->kind;
  pl_seat_abandon(&tw->seat, L);
  free(tw);
  w->kind = NULL;
}

static void threads_worker_start(pl_worker *w) {
  tworker *tw = w->kind;
  pl_executor *e = w->e;
  pl_attach_prepared(tw->seat.ts);
  pl_executor_set_tstate(w, tw->seat.ts);
  take_lock(tw);
  if (e->init.n >= 0) run_init(tw, e);
}

static void threads_idle(pl_worker *w) {
  tworker *tw = w->kind;
  if (tw->holds) drop_lock(tw, PL_GIL_IDLE);
}

static void threads_interrupt(pl_worker *w) {
  tworker *tw = w->kind;
  pl_tstate_cancel(tw->seat.ts, PL_CANCEL_FORCED, 0);
}

static void threads_time_limit(pl_worker *w, int hard, double seconds) {
  tworker *tw = w->kind;
  if (hard) pl_tstate_hard_limit(tw->seat.ts, seconds);
  else pl_tstate_soft_limit(tw->seat.ts, seconds);
}

static void threads_reset(pl_worker *w) {
  tworker *tw = w->kind;
  pl_held_end(tw->seat.ts);  /* the rule of forced cancellation */
  pl_tstate_reset_cancel(tw->seat.ts);
}

static void threads_worker_stop(pl_worker *w, int release) {
  tworker *tw = w->kind;
  pl_executor *e = w->e;
  if (!tw->holds) take_lock(tw);
  if (release) pl_executor_release(e, tw->seat.co);
  /* Dropping the anchor allocates nothing, so co cannot be collected
   * while this call still uses its stack; it is not touched afterwards. */
  luaL_unref(tw->seat.co, LUA_REGISTRYINDEX, tw->seat.co_ref);
  drop_lock(tw, PL_GIL_THREAD_END);
  pl_executor_set_tstate(w, NULL);
  pl_detach(tw->seat.ts);
  free(tw);
  w->kind = NULL;
}

/* ---- the executor's own data ----------------------------------------- */

static int threads_setup(pl_executor *e) {
  texec *te = calloc(1, sizeof *te);
  if (te == NULL) return -1;
  te->broken_ref = LUA_NOREF;
  e->kind_data = te;
  return 0;
}

static void threads_release(pl_executor *e, lua_State *L) {
  texec *te = e->kind_data;
  luaL_unref(L, LUA_REGISTRYINDEX, te->broken_ref);
  te->broken_ref = LUA_NOREF;
}

static void threads_destroy(pl_executor *e) {
  texec *te = e->kind_data;
  if (te == NULL) return;
  free(te->broken_tb);
  free(te);
  e->kind_data = NULL;
}

const pl_kind_ops pl_kind_threads = {
    "threads",           threads_setup,       threads_pack,        threads_drop,
    threads_worker_new,  threads_worker_abandon, threads_worker_start, threads_idle,
    threads_run,         threads_interrupt,   threads_time_limit,  threads_reset,
    threads_worker_stop, threads_release,     threads_destroy,
};
