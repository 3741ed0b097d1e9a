/* par.lock, par.rlock, par.event, par.condition, par.semaphore,
 * par.bounded_semaphore and par.barrier: Python's threading primitives
 * over the C objects of runtime/sync.c.
 *
 * Each method first tries the path that needs no waiting, holding the
 * global lock; only when it must wait does it give the global lock away,
 * wait (a forced cancel wakes it with a Cancelled error), and take the
 * global lock back.  Where API.md is silent, Python's threading decides:
 *   - acquire([blocking [, timeout]]) -> boolean, for locks, rlocks,
 *     conditions and semaphores; a timeout with blocking == false is an
 *     error, as in Python.
 *   - An rlock (and a condition's lock, for wait and notify) belongs to the
 *     OS thread that took it; coroutines of one thread share it.
 *   - event:wait([timeout]) -> boolean; condition:wait([timeout]) -> true
 *     when notified, false on timeout; condition:wait_for(pred [, timeout])
 *     -> pred's last result.
 *   - barrier:wait([timeout]) -> the arrival index, 0 .. parties-1 (as
 *     Python's, so `if b:wait() == 0` picks one thread).  A barrier that is
 *     broken (abort, reset while waiting, another party's timeout or
 *     cancel) raises an error object of kind "BrokenBarrier"; the waiter
 *     whose own timeout broke it gets a "Timeout" error instead.
 *     Fields: parties, n_waiting, broken.
 * Extensions: obj:with(fn, ...) for locks, rlocks, conditions and
 * semaphores acquires, calls fn(...), releases even when fn fails, then
 * returns fn's results or re-raises its error (the `with` statement).
 * The boxes have no __close: closing a lock would not mean releasing it.
 * Every one of them can be sent to another state (a `states` worker): the
 * codec carries the C object itself, and the receiver gets a new box for
 * it, so both sides use the same lock (see runtime/codec.h).
 */
#include <limits.h>
#include <string.h>

#include "bindings.h"
#include "core/clock.h"
#include "sync/held.h"
#include "sync/sync.h"

static const char LOCK_MT[] = "parlua.Lock";
static const char RLOCK_MT[] = "parlua.RLock";
static const char EVENT_MT[] = "parlua.Event";
static const char CONDITION_MT[] = "parlua.Condition";
static const char SEMAPHORE_MT[] = "parlua.Semaphore";
static const char BARRIER_MT[] = "parlua.Barrier";

static const char BROKEN_BARRIER[] = PL_BROKEN_BARRIER;

/* --- shared helpers --------------------------------------------------- */

static int sync_gc(lua_State *L) {
  void **box = luaL_checkudata(L, 1, lua_tostring(L, lua_upvalueindex(1)));
  pl_sync *s = *box;
  if (s != NULL) {
    *box = NULL;
    pl_sync_decref(s);
  }
  return 0;
}

/* A metatable with methods in __index (or `index`, a function that gets
 * the method table as its upvalue), __gc and __tostring. */
static void new_class(lua_State *L, const char *tname, const luaL_Reg *methods,
                      lua_CFunction index, lua_CFunction tostring) {
  luaL_newmetatable(L, tname);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  if (index != NULL) lua_pushcclosure(L, index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushstring(L, tname);
  lua_pushcclosure(L, sync_gc, 1);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}

/* A new closed box; the caller fills it once the object exists, so a
 * failure in between leaves nothing half-made. */
static void **new_box(lua_State *L, const char *tname) {
  return pl_box_new(L, tname, NULL);
}

static void *fill_box(lua_State *L, void **box, void *obj) {
  if (obj == NULL) luaL_error(L, "not enough memory");
  *box = obj;
  return obj;
}

/* acquire([blocking [, timeout]]): the seconds to wait, -1 forever, 0 not
 * at all. */
static double opt_acquire_args(lua_State *L, int idx) {
  int blocking = 1;
  if (!lua_isnoneornil(L, idx)) {
    luaL_checktype(L, idx, LUA_TBOOLEAN);
    blocking = lua_toboolean(L, idx);
  }
  double timeout = pl_opt_timeout(L, idx + 1);
  if (!blocking) {
    luaL_argcheck(L, timeout < 0, idx + 1, "can't specify a timeout for a non-blocking call");
    return 0;
  }
  return timeout;
}

/* --- lock and rlock --------------------------------------------------- */

static void **test_lock_box(lua_State *L, int idx) {
  void **box = luaL_testudata(L, idx, LOCK_MT);
  return box != NULL ? box : luaL_testudata(L, idx, RLOCK_MT);
}

static pl_synclock *check_lock(lua_State *L, int idx) {
  void **box = test_lock_box(L, idx);
  if (box == NULL) luaL_typeerror(L, idx, "lock");
  if (*box == NULL) luaL_error(L, "attempt to use a closed lock");
  return *box;
}

/* 1 when acquired within `timeout` (-1: forever, 0: no wait).  The
 * holding is noted, for the rule of forced cancellation (sync/held.h). */
static int lock_acquire_for(lua_State *L, pl_synclock *lk, double timeout) {
  if (pl_synclock_try(lk)) {
    pl_held_note(pl_tstate_of(L), lk);
    return 1;
  }
  if (timeout == 0) return 0;
  int64_t deadline = pl_deadline_after(timeout);
  pl_tstate *ts = pl_block_begin(L, &lk->head);
  int rc = pl_synclock_acquire(lk, ts, deadline);
  pl_block_end(L, ts, &lk->head);
  if (rc == PL_ECANCELLED) pl_error_raise_cancelled(L, ts);
  if (rc == PL_OK) pl_held_note(ts, lk);
  return rc == PL_OK;
}

/* NULL, or the error message of a failed release. */
static const char *lock_release_noted(lua_State *L, pl_synclock *lk) {
  if (pl_synclock_release(lk) != 0) return lk->reentrant ? "cannot release un-acquired lock" : "release unlocked lock";
  pl_held_prune(pl_tstate_of(L));
  return NULL;
}

static int new_lock(lua_State *L, const char *tname, int reentrant) {
  void **box = new_box(L, tname);
  fill_box(L, box, pl_synclock_new(reentrant));
  return 1;
}

static int sync_lock(lua_State *L) {
  return new_lock(L, LOCK_MT, 0);
}

static int sync_rlock(lua_State *L) {
  return new_lock(L, RLOCK_MT, 1);
}

static int lock_acquire(lua_State *L) {
  pl_synclock *lk = check_lock(L, 1);
  lua_pushboolean(L, lock_acquire_for(L, lk, opt_acquire_args(L, 2)));
  return 1;
}

static int lock_release(lua_State *L) {
  const char *err = lock_release_noted(L, check_lock(L, 1));
  if (err != NULL) return luaL_error(L, "%s", err);
  return 0;
}

static int lock_locked(lua_State *L) {
  lua_pushboolean(L, pl_synclock_locked(check_lock(L, 1)));
  return 1;
}

static int lock_tostring(lua_State *L) {
  void **box = test_lock_box(L, 1);
  pl_synclock *lk = box != NULL ? *box : NULL;
  if (lk == NULL) return lua_pushliteral(L, "Lock (closed)"), 1;
  long count = pl_synclock_count(lk);
  if (!lk->reentrant)
    lua_pushstring(L, count > 0 ? "Lock(locked)" : "Lock(unlocked)");
  else if (count > 0)
    lua_pushfstring(L, "RLock(locked, count=%I)", (lua_Integer)count);
  else
    lua_pushliteral(L, "RLock(unlocked)");
  return 1;
}

/* --- event ------------------------------------------------------------ */

static pl_event *check_event(lua_State *L) {
  return pl_box_check(L, 1, EVENT_MT, "event");
}

static int sync_event(lua_State *L) {
  void **box = new_box(L, EVENT_MT);
  fill_box(L, box, pl_event_new());
  return 1;
}

static int event_set(lua_State *L) {
  pl_event_set(check_event(L));
  return 0;
}

static int event_clear(lua_State *L) {
  pl_event_clear(check_event(L));
  return 0;
}

static int event_is_set(lua_State *L) {
  lua_pushboolean(L, pl_event_is_set(check_event(L)));
  return 1;
}

static int event_wait(lua_State *L) {
  pl_event *ev = check_event(L);
  double timeout = pl_opt_timeout(L, 2);
  int set = pl_event_is_set(ev);
  if (!set && timeout != 0) {
    int64_t deadline = pl_deadline_after(timeout);
    pl_tstate *ts = pl_block_begin(L, &ev->head);
    int rc = pl_event_wait(ev, ts, deadline);
    pl_block_end(L, ts, &ev->head);
    if (rc == PL_ECANCELLED) pl_error_raise_cancelled(L, ts);
    set = rc == PL_OK;
  }
  lua_pushboolean(L, set);
  return 1;
}

static int event_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, EVENT_MT);
  if (*box == NULL) return lua_pushliteral(L, "Event (closed)"), 1;
  lua_pushstring(L, pl_event_is_set(*box) ? "Event(set)" : "Event(unset)");
  return 1;
}

/* --- condition -------------------------------------------------------- */

static pl_condition *check_condition(lua_State *L) {
  return pl_box_check(L, 1, CONDITION_MT, "condition");
}

/* par.condition([lock]): over the given lock or rlock, or a new rlock. */
static int sync_condition(lua_State *L) {
  pl_synclock *lk = NULL;
  if (!lua_isnoneornil(L, 1)) {
    void **lbox = test_lock_box(L, 1);
    if (lbox == NULL) return luaL_typeerror(L, 1, "lock or rlock");
    if (*lbox == NULL) return luaL_error(L, "attempt to use a closed lock");
    lk = *lbox;
  }
  void **box = new_box(L, CONDITION_MT);
  fill_box(L, box, pl_condition_new(lk));
  return 1;
}

static int condition_acquire(lua_State *L) {
  pl_condition *c = check_condition(L);
  lua_pushboolean(L, lock_acquire_for(L, c->lock, opt_acquire_args(L, 2)));
  return 1;
}

static int condition_release(lua_State *L) {
  const char *err = lock_release_noted(L, check_condition(L)->lock);
  if (err != NULL) return luaL_error(L, "%s", err);
  return 0;
}

/* 1 when notified, 0 on timeout; the lock is held again either way (after
 * a forced cancel, only if it was free: see pl_condition_wait). */
static int condition_wait_for_notify(lua_State *L, pl_condition *c, double timeout) {
  if (!pl_synclock_owned(c->lock)) luaL_error(L, "cannot wait on un-acquired lock");
  int64_t deadline = pl_deadline_after(timeout);
  pl_tstate *ts = pl_block_begin(L, &c->head);
  int rc = pl_condition_wait(c, ts, deadline);
  pl_block_end(L, ts, &c->head);
  pl_held_prune(ts);            /* the holding before the wait ended ... */
  pl_held_note(ts, c->lock);    /* ... and the one taken back is new */
  if (rc == PL_ENOTHELD) luaL_error(L, "cannot wait on un-acquired lock");
  if (rc == PL_ENOMEM) luaL_error(L, "not enough memory");
  if (rc == PL_ECANCELLED) pl_error_raise_cancelled(L, ts);
  return rc == PL_OK;
}

static int condition_wait(lua_State *L) {
  pl_condition *c = check_condition(L);
  double timeout = pl_opt_timeout(L, 2);
  lua_pushboolean(L, condition_wait_for_notify(L, c, timeout));
  return 1;
}

/* wait_for(pred [, timeout]): Python's loop, with one deadline overall. */
static int condition_wait_for(lua_State *L) {
  pl_condition *c = check_condition(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  double timeout = pl_opt_timeout(L, 3);
  int64_t deadline = pl_deadline_after(timeout);
  for (;;) {
    lua_settop(L, 3);
    lua_pushvalue(L, 2);
    lua_call(L, 0, 1);
    if (lua_toboolean(L, -1)) return 1;
    double left = -1;
    if (deadline != INT64_MAX) {
      int64_t now = pl_now_ns();
      if (now >= deadline) return 1;  /* the predicate's last (false) result */
      left = (double)(deadline - now) / 1e9;
    }
    condition_wait_for_notify(L, c, left);
  }
}

static int condition_notify(lua_State *L) {
  pl_condition *c = check_condition(L);
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 0, 2, "number of threads to notify must be non-negative");
  if (pl_condition_notify(c, n > LONG_MAX ? LONG_MAX : (long)n) != 0)
    return luaL_error(L, "cannot notify on un-acquired lock");
  return 0;
}

static int condition_notify_all(lua_State *L) {
  pl_condition *c = check_condition(L);
  if (pl_condition_notify(c, LONG_MAX) != 0) return luaL_error(L, "cannot notify on un-acquired lock");
  return 0;
}

static int condition_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, CONDITION_MT);
  pl_condition *c = *box;
  if (c == NULL) return lua_pushliteral(L, "Condition (closed)"), 1;
  long count = pl_synclock_count(c->lock);
  const char *lk = c->lock->reentrant ? (count > 0 ? "RLock(locked)" : "RLock(unlocked)")
                                      : (count > 0 ? "Lock(locked)" : "Lock(unlocked)");
  lua_pushfstring(L, "Condition(%s, waiters=%d)", lk, pl_condition_waiters(c));
  return 1;
}

/* --- semaphore -------------------------------------------------------- */

static pl_semaphore *check_semaphore(lua_State *L) {
  return pl_box_check(L, 1, SEMAPHORE_MT, "semaphore");
}

static int new_semaphore(lua_State *L, int bounded) {
  lua_Integer value = luaL_optinteger(L, 1, 1);
  luaL_argcheck(L, value >= 0, 1, "semaphore initial value must be >= 0");
  void **box = new_box(L, SEMAPHORE_MT);
  fill_box(L, box, pl_semaphore_new((long long)value, bounded));
  return 1;
}

static int sync_semaphore(lua_State *L) {
  return new_semaphore(L, 0);
}

static int sync_bounded_semaphore(lua_State *L) {
  return new_semaphore(L, 1);
}

static int semaphore_acquire_for(lua_State *L, pl_semaphore *s, double timeout) {
  if (pl_semaphore_try(s)) return 1;
  if (timeout == 0) return 0;
  int64_t deadline = pl_deadline_after(timeout);
  pl_tstate *ts = pl_block_begin(L, &s->head);
  int rc = pl_semaphore_acquire(s, ts, deadline);
  pl_block_end(L, ts, &s->head);
  if (rc == PL_ECANCELLED) pl_error_raise_cancelled(L, ts);
  return rc == PL_OK;
}

static int semaphore_acquire(lua_State *L) {
  pl_semaphore *s = check_semaphore(L);
  lua_pushboolean(L, semaphore_acquire_for(L, s, opt_acquire_args(L, 2)));
  return 1;
}

static int semaphore_release(lua_State *L) {
  pl_semaphore *s = check_semaphore(L);
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 1, 2, "n must be one or more");
  if (pl_semaphore_release(s, (long long)n) != 0)
    return luaL_error(L, "semaphore released too many times");
  return 0;
}

static int semaphore_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, SEMAPHORE_MT);
  pl_semaphore *s = *box;
  if (s == NULL) return lua_pushliteral(L, "Semaphore (closed)"), 1;
  lua_Integer value = (lua_Integer)pl_semaphore_value(s);
  if (s->bound >= 0)
    lua_pushfstring(L, "BoundedSemaphore(value=%I, bound=%I)", value, (lua_Integer)s->bound);
  else
    lua_pushfstring(L, "Semaphore(value=%I)", value);
  return 1;
}

/* --- with: acquire, call, release ------------------------------------- */

static pl_sync *check_withable(lua_State *L, int idx) {
  static const char *const tnames[] = {LOCK_MT, RLOCK_MT, CONDITION_MT, SEMAPHORE_MT, NULL};
  for (int i = 0; tnames[i] != NULL; i++) {
    void **box = luaL_testudata(L, idx, tnames[i]);
    if (box == NULL) continue;
    if (*box == NULL) luaL_error(L, "attempt to use a closed %s", tnames[i] + strlen("parlua."));
    return *box;
  }
  luaL_typeerror(L, idx, "lock, rlock, condition or semaphore");
  return NULL;
}

/* The error message of a failed release, or NULL. */
static const char *release_any(lua_State *L, pl_sync *s) {
  switch (s->kind) {
  case PL_SYNC_SEMAPHORE:
    return pl_semaphore_release((pl_semaphore *)s, 1) != 0 ? "semaphore released too many times" : NULL;
  case PL_SYNC_CONDITION:
    return lock_release_noted(L, ((pl_condition *)s)->lock);
  default:
    return lock_release_noted(L, (pl_synclock *)s);
  }
}

static int finish_with(lua_State *L, int status, lua_KContext ctx) {
  const char *err = release_any(L, check_withable(L, 1));
  if (status != LUA_OK && status != LUA_YIELD) return pl_error_rethrow(L);  /* fn's error, unchanged */
  if (err != NULL) return luaL_error(L, "%s", err);
  return lua_gettop(L) - (int)ctx;
}

static int sync_with(lua_State *L) {
  pl_sync *s = check_withable(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (s->kind == PL_SYNC_SEMAPHORE)
    semaphore_acquire_for(L, (pl_semaphore *)s, -1);
  else if (s->kind == PL_SYNC_CONDITION)
    lock_acquire_for(L, ((pl_condition *)s)->lock, -1);
  else
    lock_acquire_for(L, (pl_synclock *)s, -1);
  /* [self, fn, args...]: with a continuation, so fn may yield. */
  int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 1, finish_with);
  return finish_with(L, status, 1);
}

/* --- barrier ---------------------------------------------------------- */

static pl_barrier *check_barrier(lua_State *L) {
  return pl_box_check(L, 1, BARRIER_MT, "barrier");
}

/* par.barrier(parties [, timeout]): timeout is the default for wait. */
static int sync_barrier(lua_State *L) {
  lua_Integer parties = luaL_checkinteger(L, 1);
  luaL_argcheck(L, parties >= 1, 1, "number of parties must be at least 1");
  luaL_argcheck(L, parties <= INT_MAX, 1, "too many parties");
  double timeout = pl_opt_timeout(L, 2);
  void **box = new_box(L, BARRIER_MT);
  pl_barrier *b = fill_box(L, box, pl_barrier_new((int)parties));
  b->timeout = timeout;
  return 1;
}

static int barrier_wait(lua_State *L) {
  pl_barrier *b = check_barrier(L);
  double timeout = lua_isnoneornil(L, 2) ? b->timeout : pl_opt_timeout(L, 2);
  int index = -1;
  pl_tstate *ts = NULL;
  int rc = pl_barrier_wait(b, NULL, 0, &index, 1);
  if (rc == PL_EWOULDWAIT) {
    int64_t deadline = pl_deadline_after(timeout);
    ts = pl_block_begin(L, &b->head);
    rc = pl_barrier_wait(b, ts, deadline, &index, 0);
    pl_block_end(L, ts, &b->head);
  }
  switch (rc) {
  case PL_OK:
    lua_pushinteger(L, index);
    return 1;
  case PL_ETIMEOUT:
    return pl_error_raise(L, PL_TIMEOUT, "barrier wait timed out after %f seconds; the barrier is now broken",
                          (lua_Number)timeout);
  case PL_ECANCELLED:
    return pl_error_raise_cancelled(L, ts);
  default:
    return pl_error_raise(L, BROKEN_BARRIER, "barrier is broken");
  }
}

static int barrier_abort(lua_State *L) {
  pl_barrier_abort(check_barrier(L));
  return 0;
}

static int barrier_reset(lua_State *L) {
  pl_barrier_reset(check_barrier(L));
  return 0;
}

/* Methods first, then the fields parties, n_waiting and broken. */
static int barrier_index(lua_State *L) {
  pl_barrier *b = check_barrier(L);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  if (strcmp(k, "parties") == 0) lua_pushinteger(L, b->parties);
  else if (strcmp(k, "n_waiting") == 0) lua_pushinteger(L, pl_barrier_n_waiting(b));
  else if (strcmp(k, "broken") == 0) lua_pushboolean(L, pl_barrier_broken(b));
  else lua_pushnil(L);
  return 1;
}

static int barrier_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, BARRIER_MT);
  pl_barrier *b = *box;
  if (b == NULL) return lua_pushliteral(L, "Barrier (closed)"), 1;
  if (pl_barrier_broken(b)) lua_pushfstring(L, "Barrier(parties=%d, broken)", b->parties);
  else lua_pushfstring(L, "Barrier(parties=%d, waiting=%d)", b->parties, pl_barrier_n_waiting(b));
  return 1;
}

/* --- crossing states -------------------------------------------------- */

static void sync_retain(void *obj) { pl_sync_incref(obj); }
static void sync_release(void *obj) { pl_sync_decref(obj); }

static const pl_transfer_type sync_types[] = {
    {LOCK_MT, "lock", "parlua", sync_retain, sync_release, NULL, pl_codec_push_box, NULL, NULL, 0},
    {RLOCK_MT, "rlock", "parlua", sync_retain, sync_release, NULL, pl_codec_push_box, NULL, NULL, 0},
    {EVENT_MT, "event", "parlua", sync_retain, sync_release, NULL, pl_codec_push_box, NULL, NULL, 0},
    {CONDITION_MT, "condition", "parlua", sync_retain, sync_release, NULL, pl_codec_push_box, NULL, NULL, 0},
    {SEMAPHORE_MT, "semaphore", "parlua", sync_retain, sync_release, NULL, pl_codec_push_box, NULL, NULL, 0},
    {BARRIER_MT, "barrier", "parlua", sync_retain, sync_release, NULL, pl_codec_push_box, NULL, NULL, 0},
};

void pl_open_sync(lua_State *L) {
  static const luaL_Reg lock_methods[] = {
      {"acquire", lock_acquire}, {"release", lock_release}, {"locked", lock_locked},
      {"with", sync_with},       {NULL, NULL}};
  static const luaL_Reg event_methods[] = {
      {"set", event_set}, {"clear", event_clear}, {"is_set", event_is_set},
      {"wait", event_wait}, {NULL, NULL}};
  static const luaL_Reg condition_methods[] = {
      {"acquire", condition_acquire}, {"release", condition_release},
      {"wait", condition_wait},       {"wait_for", condition_wait_for},
      {"notify", condition_notify},   {"notify_all", condition_notify_all},
      {"with", sync_with},            {NULL, NULL}};
  static const luaL_Reg semaphore_methods[] = {
      {"acquire", semaphore_acquire}, {"release", semaphore_release},
      {"with", sync_with},            {NULL, NULL}};
  static const luaL_Reg barrier_methods[] = {
      {"wait", barrier_wait}, {"abort", barrier_abort}, {"reset", barrier_reset}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"lock", sync_lock},
      {"rlock", sync_rlock},
      {"event", sync_event},
      {"condition", sync_condition},
      {"semaphore", sync_semaphore},
      {"bounded_semaphore", sync_bounded_semaphore},
      {"barrier", sync_barrier},
      {NULL, NULL}};
  new_class(L, LOCK_MT, lock_methods, NULL, lock_tostring);
  new_class(L, RLOCK_MT, lock_methods, NULL, lock_tostring);
  new_class(L, EVENT_MT, event_methods, NULL, event_tostring);
  new_class(L, CONDITION_MT, condition_methods, NULL, condition_tostring);
  new_class(L, SEMAPHORE_MT, semaphore_methods, NULL, semaphore_tostring);
  new_class(L, BARRIER_MT, barrier_methods, barrier_index, barrier_tostring);
  for (size_t i = 0; i < sizeof sync_types / sizeof sync_types[0]; i++)
    pl_codec_register_type(L, &sync_types[i]);
  luaL_setfuncs(L, funcs, 0);
}
