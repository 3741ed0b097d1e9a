/* Kind "states": how one task is carried out by a worker OS thread that
 * owns a lua_State of its own, with its own global lock -- so workers
 * never contend and CPU-bound tasks run truly in parallel (the
 * per-interpreter-GIL model).
 *
 * The worker's state.  Each worker is a small runtime of its own (a
 * `parlua` whose main family is the worker's state), made by the same
 * factory as the main state (pl_state_new: standard libraries, parlua
 * itself, the host's preloads).  So whatever a task starts inside the
 * worker -- a par.thread, a nested pool, a child process -- is registered
 * with the worker's runtime and stopped (pl_runtime_shutdown) before the
 * worker's state closes, exactly as parlua_close does for the main state.
 * A worker runs the pool's `init` first; after `max_tasks_per_worker`
 * tasks it closes its state and makes a fresh one (running `init` again),
 * right after the task that reached the count, unless the pool is shut
 * down and has nothing left to run.
 *
 * Payloads.  A task is a message (runtime/codec.h) encoded by the
 * submitter holding its own lock: the function, then its arguments (or the
 * items of a map chunk).  The codec caches what can be cached: the
 * submitter keeps each function's bytecode, the worker keeps functions
 * that have no upvalues but the globals, so a task that sends the same
 * function again costs neither lua_dump nor lua_load.  A Lua function
 * without upvalues, or whose one upvalue is the globals, encodes to the
 * same bytes whenever it is sent; so the submitting state keeps that
 * message (a weak table, function -> shared message) and a task carries
 * the shared function message and a message of its arguments: a trivial
 * task's encode is its arguments'.  A worker keeps the last function
 * without upvalues it decoded from such a message, so running the same
 * one again decodes only the arguments.  Anything else (a closure with
 * other upvalues, whose values are read at submit, a C function, a
 * callable table) travels in one message with its arguments.  The outcome comes
 * back as a message too: the future's value is the encoded results (or the
 * encoded error value), decoded by result() in the caller's state -- again
 * at every call, so each caller gets its own copy.
 *
 * Running a task.  The worker's stack keeps two slots for the state's
 * life: [1] a message handler that records the traceback and appends a
 * hint to "attempt to call/index a nil value (global 'x')" (globals are
 * not copied to workers), [2] the table it records into.  The task runs in
 * one protected call of a C function that decodes, calls and encodes the
 * results, so a result that cannot be sent fails the task with a Transfer
 * error ("result 1: ...").  An error value that cannot be sent is replaced
 * by a Transfer error carrying its text.
 *
 * The locks.  A worker takes its own lock when it starts and keeps it while
 * it waits for work -- nobody else can want it -- unless a par.thread (or a
 * nested pool's thread) of its state is alive, which then must be able to
 * run: the lock is given away whenever the worker goes idle.  Done
 * callbacks must run in the future's owning state, never concurrently with
 * its other Lua code: the worker takes the owner's lock (with a tstate of
 * the owner's family, pushed for the duration) and runs them on a
 * coroutine of the owner made when the worker was started.  Waiting for
 * the owner's lock while holding its own cannot deadlock: nothing ever
 * waits for a worker's lock while holding the owner's.
 *
 * init and errors are as kind threads: a failing init breaks the pool
 * (BrokenPool "pool init failed: ...", `cause` the init's error, copied),
 * interrupts are a forced cancel of the worker's tstate -- in the worker's
 * own family -- which the hook raises at the next instruction and any
 * blocking call (par.sleep) returns with.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "codec/codec.h"
#include "core/enter.h"
#include "core/errors.h"
#include "pool/executor.h"
#include "pool/seat.h"
#include "sync/held.h"

typedef struct sexec {
  pthread_mutex_t mu;
  atomic_int broken;     /* a worker's init failed */
  pl_msg *broken_msg;    /* guarded by mu: the BrokenPool error, encoded */
  char *broken_tb;       /* guarded by mu: the failed init's traceback */
} sexec;

/* The message of a function that encodes to the same bytes whenever it
 * is sent (see Payloads), shared by the tasks that carry it. */
typedef struct fnmsg {
  atomic_int refs;
  int nups;              /* 0: the decoded function can be kept as it is */
  pl_msg *m;
} fnmsg;

typedef struct sworker {
  parlua rt;             /* the worker's runtime: rt.main is its family */
  fnmsg *fm;             /* the function message last decoded (a reference) */
  int fn_ref;            /* its function, in the worker's registry */
  lua_State *L;          /* rt.main.L, or NULL when closed */
  pl_tstate *ts;         /* this thread's tstate in rt.main, made once (pl_prepare) */
  int holds;             /* worker thread only: it holds its own lock */
  int ntasks;            /* tasks run by the current state */
  atomic_int interrupted;/* an interrupt reached it: nested pools stop hard */
  pl_seat seat;          /* in the owning state, for callbacks */
} sworker;

enum { SLOT_HANDLER = 1, SLOT_TRACEBACK = 2 };

/* ---- values: encoded messages ---------------------------------------- */

static int msg_push(lua_State *L, const pl_value *v) { return pl_codec_decode(L, v->data); }

static void msg_free(lua_State *L, pl_value *v) {
  (void)L;
  pl_msg_free(v->data);
  v->data = NULL;
  v->ops = NULL;
}

static const pl_value_ops msg_ops = {msg_push, msg_free};

/* m NULL: there was no memory for the message. */
static void set_value(pl_value *v, pl_msg *m) {
  if (m == NULL) {
    pl_value_no_memory(v);
    return;
  }
  memset(v, 0, sizeof *v);
  v->ops = &msg_ops;
  v->data = m;
}

/* ---- payloads -------------------------------------------------------- */

static const char FNCACHE_KEY = 0;  /* registry: function -> fnmsg box (weak keys) */
static const char FNBOX_MT[] = "parlua.states.fnmsg";

static void fnmsg_decref(fnmsg *fm) {
  if (fm == NULL || atomic_fetch_sub(&fm->refs, 1) != 1) return;
  pl_msg_free(fm->m);
  free(fm);
}

static int fnbox_gc(lua_State *L) {
  fnmsg **box = lua_touserdata(L, 1);
  fnmsg_decref(*box);
  *box = NULL;
  return 0;
}

/* The function at fi encodes to the same bytes whenever it is sent: a Lua
 * function without upvalues, or whose one upvalue is the globals table
 * (sent as "the receiver's globals").  *nups: its upvalue count. */
static int same_every_time(lua_State *L, int fi, int *nups) {
  if (lua_type(L, fi) != LUA_TFUNCTION || lua_iscfunction(L, fi)) return 0;
  if (lua_getupvalue(L, fi, 1) == NULL) {
    *nups = 0;
    return 1;
  }
  int same = 0;
  if (lua_getupvalue(L, fi, 2) == NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  *nups = 1;
  return same;
}

/* The shared message of the function at fi (absolute), made and cached on
 * first use, or NULL when it must travel with its arguments.  No reference
 * is taken: the function is on the stack, so its cache entry, which holds
 * one, stays while the caller encodes the arguments. */
static fnmsg *function_message(lua_State *L, int fi) {
  int nups;
  if (!same_every_time(L, fi, &nups)) return NULL;
  luaL_checkstack(L, 6, "encoding a task");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &FNCACHE_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &FNCACHE_KEY);
  }
  int cache = lua_gettop(L);
  fnmsg *fm = NULL;
  lua_pushvalue(L, fi);
  if (lua_rawget(L, cache) == LUA_TUSERDATA) fm = *(fnmsg **)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (fm == NULL) {
    /* The box first: if encoding raises, its finalizer frees fm. */
    fnmsg **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    if (luaL_newmetatable(L, FNBOX_MT)) {
      lua_pushcfunction(L, fnbox_gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    fm = calloc(1, sizeof *fm);
    if (fm == NULL) luaL_error(L, "not enough memory");
    atomic_init(&fm->refs, 1);  /* the box's */
    fm->nups = nups;
    *box = fm;
    fm->m = pl_codec_encode(L, fi, 1, "function", NULL);
    lua_pushvalue(L, fi);
    lua_pushvalue(L, -2);
    lua_rawset(L, cache);
  }
  lua_settop(L, cache - 1);
  return fm;
}

/* Submitter, its lock held: [fn, v1..vn] -> the shared function message
 * (t->b) and a message of the values, or one message of them all. */
static void states_pack(pl_executor *e, lua_State *L, pl_task *t) {
  (void)e;
  /* Items of a map are counted within their chunk: this does not know
   * where the chunk starts. */
  const char *head = t->mode == PL_TASK_INIT ? "init function" : "function";
  const char *each = t->mode == PL_TASK_CALL ? "argument %d" : t->n == 1 ? "item" : "item %d of a chunk";
  int fi = lua_absindex(L, -(t->n + 1));
  fnmsg *fm = t->mode == PL_TASK_INIT ? NULL : function_message(L, fi);
  if (fm != NULL) {
    /* Named as in one message: the values are "argument 1", ... */
    t->data = pl_codec_encode(L, fi + 1, t->n, NULL, each);
    atomic_fetch_add(&fm->refs, 1);
  } else {
    t->data = pl_codec_encode(L, fi, t->n + 1, head, each);
  }
  t->b = (intptr_t)fm;
  lua_pop(L, t->n + 1);
}

static void states_drop(pl_executor *e, lua_State *L, pl_task *t) {
  (void)e;
  (void)L;
  pl_msg_free(t->data);
  t->data = NULL;
  fnmsg_decref((fnmsg *)t->b);
  t->b = 0;
}

/* ---- the worker's own lock ------------------------------------------- */

static void take_lock(sworker *sw) {
  pl_take_lock(sw->ts, sw->L, 1);
  sw->holds = 1;
}

static void drop_lock(sworker *sw, pl_gil_reason why) {
  pl_drop_lock(sw->ts, why);
  sw->holds = 0;
}

/* ---- errors ---------------------------------------------------------- */

/* The message handler: hint, then record the traceback, keep the value. */
static int task_handler(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) pl_error_add_global_hint(L, 1, "states");
  return pl_traceback_recorder(L);
}

static int encode_top(lua_State *L) {
  pl_msg **out = lua_touserdata(L, 2);
  const char *head = lua_tostring(L, 3);
  *out = pl_codec_encode(L, 1, 1, head, NULL);
  return 0;
}

/* [-0, +0] encode the value at idx as one message, protected; NULL when
 * it cannot be sent (its Transfer error is then left on top: [-0, +1]). */
static pl_msg *encode_one(lua_State *L, int idx, const char *head) {
  pl_msg *m = NULL;
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, encode_top);
  lua_pushvalue(L, idx);
  lua_pushlightuserdata(L, &m);
  lua_pushstring(L, head);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) return NULL;
  return m;
}

/* The error value on top of L (popped) as a message: itself when it can be
 * sent, else a Transfer error with its text; NULL only without memory. */
static pl_msg *encode_error(lua_State *L) {
  int err = lua_gettop(L);
  pl_msg *m = encode_one(L, err, "error value");
  if (m == NULL) {                          /* [err, why] */
    lua_pushcfunction(L, pl_task_unsendable_error);
    lua_insert(L, err);
    if (lua_pcall(L, 2, 1, 0) == LUA_OK) m = encode_one(L, -1, "error value");
  }
  lua_settop(L, err - 1);
  return m;
}

/* ---- running tasks --------------------------------------------------- */

typedef struct call {
  sworker *sw;
  const pl_task *t;
  const fnmsg *fm;       /* the function, when apart from the values */
  const pl_msg *in;
  pl_msg *out;
} call;

/* [-0, +1] the function of c's shared function message: the worker's kept
 * one when it is the same message, else decoded (and kept when it has no
 * upvalues: nothing in it can differ from one task to the next). */
static void push_function(lua_State *L, call *c) {
  sworker *sw = c->sw;
  if (c->fm == sw->fm) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, sw->fn_ref);
    return;
  }
  if (pl_codec_decode(L, c->fm->m) != 1 || lua_type(L, -1) != LUA_TFUNCTION)
    luaL_error(L, "a malformed task");
  if (c->fm->nups == 0) {
    lua_pushvalue(L, -1);
    lua_rawseti(L, LUA_REGISTRYINDEX, sw->fn_ref);
    fnmsg *fm = (fnmsg *)c->fm;
    atomic_fetch_add(&fm->refs, 1);
    fnmsg_decref(sw->fm);
    sw->fm = fm;
  }
}

/* Protected: decode the task, call it, encode what it returned. */
static int run_task(lua_State *L) {
  call *c = lua_touserdata(L, 1);
  lua_settop(L, 0);
  int n = 0;
  if (c->fm != NULL) {
    push_function(L, c);
    n = 1;
  }
  n += pl_codec_decode(L, c->in);
  if (n < 1) return luaL_error(L, "an empty task");
  if (c->t == NULL || c->t->mode == PL_TASK_CALL) {
    lua_call(L, n - 1, LUA_MULTRET);
    if (c->t != NULL) c->out = pl_codec_encode(L, 1, lua_gettop(L), NULL, "result %d");
    return 0;
  }
  pl_task_map_items(L, 1, c->t->mode);
  c->out = pl_codec_encode(L, 2, n - 1, NULL, n == 2 ? "result" : "result %d of a chunk");
  return 0;
}

/* Run the message `in` (a task, or init when t is NULL) on the worker's
 * stack: LUA_OK with c->out, or an error with the error value on top. */
static int protected_run(sworker *sw, const pl_task *t, const pl_msg *in, call *c) {
  c->sw = sw;
  c->t = t;
  c->fm = t != NULL ? (const fnmsg *)t->b : NULL;
  c->in = in;
  c->out = NULL;
  lua_pushcfunction(sw->L, run_task);
  lua_pushlightuserdata(sw->L, c);
  return lua_pcall(sw->L, 1, 0, SLOT_HANDLER);
}

static int call_task(sworker *sw, pl_task *t, pl_value *v, char **tb) {
  lua_State *L = sw->L;
  call c;
  int status = protected_run(sw, t, t->data, &c);
  if (status == LUA_OK) {
    set_value(v, c.out);
    return PL_TASK_OK;
  }
  *tb = pl_take_traceback(L, SLOT_TRACEBACK);
  set_value(v, encode_error(L));
  lua_settop(L, SLOT_TRACEBACK);
  return PL_TASK_FAILED;
}

/* Run init; when it fails, break the pool (the first failure is kept). */
static void run_init(sworker *sw, pl_executor *e) {
  lua_State *L = sw->L;
  sexec *se = e->kind_data;
  call c;
  if (protected_run(sw, NULL, e->init.data, &c) == LUA_OK) return;
  char *tb = pl_take_traceback(L, SLOT_TRACEBACK);
  int err = lua_gettop(L);
  lua_pushcfunction(L, pl_task_broken_init);
  lua_pushvalue(L, err);
  lua_pushstring(L, tb != NULL ? tb : "(no message)");
  pl_msg *m = NULL;
  char *msg = NULL;
  if (lua_pcall(L, 2, 1, 0) == LUA_OK) {
    lua_getfield(L, -1, "message");
    msg = strdup(lua_tostring(L, -1) != NULL ? lua_tostring(L, -1) : "pool init failed");
    lua_pop(L, 1);
    m = encode_one(L, -1, "error value");
    if (m == NULL) {  /* the cause cannot be sent: the error without it */
      lua_pop(L, 1);
      lua_pushnil(L);
      lua_setfield(L, -2, "cause");
      m = encode_one(L, -1, "error value");
    }
  }
  lua_settop(L, SLOT_TRACEBACK);
  pthread_mutex_lock(&se->mu);
  int first = se->broken_msg == NULL && m != NULL;
  if (first) {
    se->broken_msg = m;
    se->broken_tb = tb;
    m = NULL;
    tb = NULL;
    atomic_store(&se->broken, 1);
  }
  pthread_mutex_unlock(&se->mu);
  if (first) pl_executor_break(e, msg != NULL ? msg : "pool init failed");
  pl_msg_free(m);
  free(tb);
  free(msg);
}

/* The BrokenPool error every task of a broken pool fails with. */
static void fail_broken(sexec *se, pl_value *v, char **tb) {
  pthread_mutex_lock(&se->mu);
  set_value(v, pl_msg_copy(se->broken_msg));
  *tb = se->broken_tb != NULL ? strdup(se->broken_tb) : NULL;
  pthread_mutex_unlock(&se->mu);
}

/* ---- the worker's state ---------------------------------------------- */

/* 0, or -1 when there was no memory for it (the next task tries again). */
static int open_state(sworker *sw, pl_worker *w) {
  pl_executor *e = w->e;
  parlua *owner = e->fam->rt;
  parlua_config cfg;
  pl_config_init(&cfg);
  cfg.switch_interval = pl_gil_get_interval(&e->fam->gil);
  /* The host's preloads: the list only ever grows at its head and lives
   * as long as the owner, so the worker borrows it as it is now. */
  pthread_mutex_lock(&owner->mu);
  pl_preload *preloads = owner->preloads;
  pthread_mutex_unlock(&owner->mu);
  if (pl_runtime_open(&sw->rt, &cfg, owner->modules, preloads) != 0) return -1;
  /* Traced with the owner (par.gil_trace shows every worker's own lock);
   * without memory for that it is simply never traced. */
  (void)pl_gil_trace_join(&sw->rt.main.gil, &e->fam->gil);
  sw->L = sw->rt.main.L;
  pl_attach_prepared(sw->ts);
  pl_executor_set_tstate(w, sw->ts);
  take_lock(sw);
  lua_State *L = sw->L;
  lua_newtable(L);                         /* [2] the traceback slot */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, task_handler, 1);
  lua_insert(L, SLOT_HANDLER);             /* [1] the handler */
  lua_pushboolean(L, 0);
  sw->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  sw->fm = NULL;
  sw->ntasks = 0;
  if (e->init.n >= 0) run_init(sw, e);
  return 0;
}

/* As parlua_close for the worker's runtime: stop what the tasks started,
 * close the state, let go of the lock. */
static void close_state(sworker *sw, pl_worker *w) {
  if (sw->L == NULL) return;  /* it could not be opened */
  if (!sw->holds) take_lock(sw);
  if (atomic_load(&sw->interrupted)) atomic_store(&sw->rt.interrupted, 1);
  pl_runtime_close_state(&sw->rt);
  sw->L = NULL;
  fnmsg_decref(sw->fm);  /* its function is gone with the state */
  sw->fm = NULL;
  drop_lock(sw, PL_GIL_THREAD_END);
  pl_executor_set_tstate(w, NULL);
  pl_detach_keep(sw->ts);
  pl_runtime_close(&sw->rt);
}

/* ---- done callbacks in the owning state ------------------------------ */

/* ---- the kind -------------------------------------------------------- */

static void states_run(pl_worker *w, pl_task *t) {
  sworker *sw = w->kind;
  pl_executor *e = w->e;
  sexec *se = e->kind_data;
  pl_future *f = t->f;
  if (sw->L == NULL) (void)open_state(sw, w);  /* the last try ran out of memory */
  else if (!sw->holds) take_lock(sw);
  if (!pl_future_set_running_or_notify_cancel(f)) {
    states_drop(e, NULL, t);
    pl_executor_task_done(w, PL_TASK_CANCELLED, 1);
    return;
  }
  pl_executor_arm_limits(w, t);
  pl_value v;
  char *tb = NULL;
  int outcome;
  if (sw->L == NULL) {
    pl_value_no_memory(&v);
    outcome = PL_TASK_FAILED;
  } else if (atomic_load(&se->broken)) {
    fail_broken(se, &v, &tb);
    outcome = PL_TASK_FAILED;
  } else {
    outcome = call_task(sw, t, &v, &tb);
  }
  states_drop(e, NULL, t);
  /* Counted before the future is finished (whoever waits for it sees the
   * statistics up to date), stored and finished under one lock. */
  int recycle = e->max_tasks_per_worker > 0 && ++sw->ntasks >= e->max_tasks_per_worker;
  int looking = !pl_future_has_callbacks(f) && !recycle;
  pl_executor_task_done(w, outcome, looking);
  int taken;
  int stored = outcome == PL_TASK_OK ? PL_OUTCOME_OK : PL_OUTCOME_ERROR;
  pl_future_cb *cbs = pl_future_complete(f, stored, &v, tb, &taken);
  if (!taken) {
    msg_free(NULL, &v);  /* nobody holds the future any more */
    free(tb);
  }
  if (cbs != NULL) pl_seat_run_callbacks(&sw->seat, w, f, cbs, sw->ts);
  /* A fresh state for the next task -- unless there will be none. */
  if (recycle && !(atomic_load(&e->closed) && !pl_executor_has_work(e))) {
    close_state(sw, w);
    (void)open_state(sw, w);
  }
  if (!looking) pl_executor_looking(w);
}

static int states_worker_new(pl_worker *w, lua_State *L) {
  sworker *sw = calloc(1, sizeof *sw);
  if (sw == NULL) return -1;
  atomic_init(&sw->interrupted, 0);
  char name[sizeof sw->ts->name];
  snprintf(name, sizeof name, "%s-Worker-%d", w->e->name, w->index);
  /* Its own state's family is where it will be (made at each open). */
  sw->ts = pl_prepare(&sw->rt.main, name);
  if (sw->ts == NULL) {
    free(sw);
    return -1;
  }
  if (pl_seat_init(&sw->seat, w->e->fam, L, name) != 0) {
    pl_tstate_free(sw->ts);
    free(sw);
    return -1;
  }
  w->kind = sw;
  return 0;
}

static void states_worker_abandon(pl_worker *w, lua_State *L) {
  sworker *sw = w->kind;
  pl_seat_abandon(&sw->seat, L);
  pl_tstate_free(sw->ts);
  free(sw);
  w->kind = NULL;
}

/* Without memory for its state, its first task tries again. */
static void states_worker_start(pl_worker *w) { (void)open_state(w->kind, w); }

/* Keep the lock while idle unless a thread of the worker's state needs it
 * (a par.thread a task started, a nested pool's worker). */
static void states_idle(pl_worker *w) {
  sworker *sw = w->kind;
  if (sw->holds) {
    pthread_mutex_lock(&sw->rt.mu);
    int others = sw->rt.live_threads > 0;
    pthread_mutex_unlock(&sw->rt.mu);
    if (others) drop_lock(sw, PL_GIL_IDLE);
  }
}

static void states_interrupt(pl_worker *w) {
  sworker *sw = w->kind;
  atomic_store(&sw->interrupted, 1);
  pl_tstate_cancel(sw->ts, PL_CANCEL_FORCED, 0);
}

static void states_time_limit(pl_worker *w, int hard, double seconds) {
  sworker *sw = w->kind;
  if (hard) pl_tstate_hard_limit(sw->ts, seconds);
  else pl_tstate_soft_limit(sw->ts, seconds);
}

static void states_reset(pl_worker *w) {
  sworker *sw = w->kind;
  pl_held_end(sw->ts);  /* the rule of forced cancellation */
  pl_tstate_reset_cancel(sw->ts);
}

static void states_worker_stop(pl_worker *w, int release) {
  sworker *sw = w->kind;
  pl_executor *e = w->e;
  close_state(sw, w);
  pl_tstate_free(sw->ts);
  pl_seat_free(&sw->seat);
  /* The kind's release and drop need no Lua: no state is passed. */
  if (release) pl_executor_release(e, NULL);
  free(sw);
  w->kind = NULL;
}

/* ---- the executor's own data ----------------------------------------- */

static int states_setup(pl_executor *e) {
  sexec *se = calloc(1, sizeof *se);
  if (se == NULL) return -1;
  if (pthread_mutex_init(&se->mu, NULL) != 0) {
    free(se);
    return -1;
  }
  atomic_init(&se->broken, 0);
  e->kind_data = se;
  return 0;
}

static void states_release(pl_executor *e, lua_State *L) {
  (void)e;
  (void)L;
}

static void states_destroy(pl_executor *e) {
  sexec *se = e->kind_data;
  if (se == NULL) return;
  pl_msg_free(se->broken_msg);
  free(se->broken_tb);
  pthread_mutex_destroy(&se->mu);
  free(se);
  e->kind_data = NULL;
}

const pl_kind_ops pl_kind_states = {
    "states",           states_setup,          states_pack,          states_drop,
    states_worker_new,  states_worker_abandon, states_worker_start,  states_idle,
    states_run,         states_interrupt,      states_time_limit,    states_reset,
    states_worker_stop, states_release,        states_destroy,
};
