/* Error objects: tables with a kind and a one-line message.
 *
 * Where they were raised.  luaL_error puts "file:line:" in front of a
 * message; an error object keeps it in the field `where`, and tostring(e)
 * puts it in front of e.message the same way.  lua.c prints a traceback for
 * a string error only: for an object with __tostring its message handler
 * prints what __tostring gives.  So __tostring adds the traceback itself
 * when it runs inside the message handler of the error's own raise -- the
 * call stack is then the raise's, two levels up (the handler, then the
 * raising function) -- and the error dies uncaught in a stock lua5.4
 * showing what a string error shows.  Each raise is noted (the raising
 * function, its thread and the depth of the stack) in a weak-keyed
 * registry table; a __tostring called any other time (a script's
 * tostring(e), after pcall) finds the stack different and gives the
 * message alone. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "core/errors.h"
#include "core/sigint.h"

static const char ERROR_MT[] = "parlua.Error";
static const char ORIGIN_KEY[] = "parlua.error_origin";
static const char RAISES_KEY = 0;  /* registry: error object -> {function, depth, thread} */

/* [-0, +1] "where: message" of the error object at idx. */
static const char *push_text(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 4, "error message");
  lua_getfield(L, idx, "message");
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_getfield(L, idx, "kind");
    lua_pushfstring(L, "%s error", lua_tostring(L, -1));
    lua_remove(L, -2);
  }
  if (lua_getfield(L, idx, "where") == LUA_TSTRING) {
    lua_pushliteral(L, ": ");
    lua_rotate(L, -3, -1);  /* [.., where, ": ", message] */
    lua_concat(L, 3);
  } else {
    lua_pop(L, 1);
  }
  return lua_tostring(L, -1);
}

/* The last level of L's call stack (0: only the running function). */
static int stack_depth(lua_State *L) {
  lua_Debug ar;
  int lo = 0, hi = 1;
  while (lua_getstack(L, hi, &ar)) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 1) {
    int mid = lo + (hi - lo) / 2;
    if (lua_getstack(L, mid, &ar)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/* [-0, +0] note that the error at err is being raised by the function
 * running now (level 0), at this depth. */
static void note_raise(lua_State *L, int err) {
  lua_Debug ar;
  err = lua_absindex(L, err);
  if (!lua_getstack(L, 0, &ar)) return;
  luaL_checkstack(L, 6, "error object");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RAISES_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &RAISES_KEY);
  }
  lua_pushvalue(L, err);
  lua_createtable(L, 3, 0);
  lua_getinfo(L, "f", &ar);
  lua_rawseti(L, -2, 1);
  lua_pushinteger(L, stack_depth(L));
  lua_rawseti(L, -2, 2);
  lua_pushthread(L);
  lua_rawseti(L, -2, 3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Whether the error object at 1 is being handled by the message handler of
 * its own raise, which called this __tostring: level 1 a C function (the
 * handler; not `tostring`, so that xpcall(f, tostring) gives the message
 * as for a string), level 2 the raising function, at the raise's depth + 2. */
static int in_own_handler(lua_State *L) {
  lua_Debug ar;
  int yes = 0, top = lua_gettop(L);
  luaL_checkstack(L, 6, "error message");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RAISES_KEY) != LUA_TTABLE) goto done;
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) != LUA_TTABLE) goto done;
  int raise = lua_gettop(L);
  lua_rawgeti(L, raise, 3);
  lua_rawgeti(L, raise, 2);
  if (lua_tothread(L, -2) != L || lua_tointeger(L, -1) + 2 != stack_depth(L)) goto done;
  if (!lua_getstack(L, 1, &ar) || !lua_getinfo(L, "Sf", &ar) || strcmp(ar.what, "C") != 0) goto done;
  lua_getglobal(L, "tostring");
  if (lua_rawequal(L, -1, -2)) goto done;
  if (!lua_getstack(L, 2, &ar) || !lua_getinfo(L, "f", &ar)) goto done;
  lua_rawgeti(L, raise, 1);
  yes = lua_rawequal(L, -1, -2);
done:
  lua_settop(L, top);
  return yes;
}

/* [-0, +1] msg (at top, replaced) with a traceback of L from `level`, and
 * the worker's traceback when the error at err came from a worker. */
static void add_traceback(lua_State *L, int err, int level) {
  err = lua_absindex(L, err);
  luaL_traceback(L, L, lua_tostring(L, -1), level);
  lua_remove(L, -2);
  if (lua_getfield(L, LUA_REGISTRYINDEX, ORIGIN_KEY) == LUA_TTABLE) {
    lua_rawgeti(L, -1, 1);
    int same = lua_rawequal(L, -1, err);
    lua_pop(L, 1);
    if (same) {
      lua_rawgeti(L, -1, 2);          /* [.., tb, origin, worker_tb] */
      lua_remove(L, -2);
      lua_pushliteral(L, "\n[worker] ");
      lua_insert(L, -2);
      lua_concat(L, 3);
      return;
    }
  }
  lua_pop(L, 1);
}

static int error_tostring(lua_State *L) {
  push_text(L, 1);
  if (in_own_handler(L)) add_traceback(L, 1, 2);  /* from the raising function */
  return 1;
}

void pl_error_metatable(lua_State *L) {
  if (luaL_newmetatable(L, ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
}

static void push_errorv(lua_State *L, const char *kind, const char *fmt, va_list ap) {
  luaL_checkstack(L, 4, "error object");
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  pl_error_metatable(L);
  lua_setmetatable(L, -2);
}

void pl_error_push(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
}

int pl_error_throw(lua_State *L) {
  if (pl_error_is(L, -1, NULL)) {
    lua_Debug ar;
    if (lua_getfield(L, -1, "where") == LUA_TNIL && lua_getstack(L, 1, &ar) &&
        lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {  /* as luaL_where(L, 1) */
      lua_pushfstring(L, "%s:%d", ar.short_src, ar.currentline);
      lua_setfield(L, -3, "where");
    }
    lua_pop(L, 1);
    note_raise(L, -1);
  }
  return lua_error(L);
}

int pl_error_rethrow(lua_State *L) {
  if (pl_error_is(L, -1, NULL)) note_raise(L, -1);
  return lua_error(L);
}

int pl_error_raise(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
  return pl_error_throw(L);
}

int pl_error_raise_os(lua_State *L, int err, const char *what) {
  pl_error_push(L, PL_OS_ERROR, "%s: %s", what, strerror(err));
  lua_pushinteger(L, err);
  lua_setfield(L, -2, "errno");
  return pl_error_throw(L);
}

/* A host thread gets what lua.c's hook raises, luaL_error(L,
 * "interrupted!"): a string with the position.  The interrupt is then
 * spent, as in lua.c: a script that catches it goes on, and its next
 * blocking call blocks. */
static int raise_host_interrupt(lua_State *L, pl_tstate *ts) {
  pl_tstate_reset_cancel(ts);
  pl_sigint_delivered();
  luaL_where(L, 1);
  lua_pushliteral(L, "interrupted!");
  lua_concat(L, 2);
  size_t len;
  const char *msg = lua_tolstring(L, -1, &len);
  if (len >= sizeof ts->interrupt_msg) len = sizeof ts->interrupt_msg - 1;
  memcpy(ts->interrupt_msg, msg, len);
  ts->interrupt_msg[len] = '\0';
  return lua_error(L);
}

int pl_error_raise_cancelled(lua_State *L, pl_tstate *ts) {
  char secs[32];  /* "%g", as the processes kind words it: "2", not "2.0" */
  /* Raised here, it is delivered: the hook does not raise it again. */
  if (ts != NULL && pl_tstate_cancel_level(ts) == PL_CANCEL_FORCED) atomic_store(&ts->cancel_delivered, 1);
  if (ts != NULL && atomic_load(&ts->hard_limit_hit)) {
    snprintf(secs, sizeof secs, "%g", ts->hard_limit_s);
    return pl_error_raise(L, PL_TIMEOUT, "the task exceeded its time limit of %s s", secs);
  }
  if (ts != NULL && atomic_exchange(&ts->soft_limit_pending, 0)) {
    snprintf(secs, sizeof secs, "%g", ts->soft_limit_s);
    return pl_error_raise(L, PL_SOFT_TIME_LIMIT, "the task exceeded its soft time limit of %s s", secs);
  }
  if (ts != NULL && ts->host && atomic_load(&ts->interrupted)) return raise_host_interrupt(L, ts);
  if (ts != NULL && atomic_load(&ts->interrupted))
    return pl_error_raise(L, PL_CANCELLED, "interrupted");
  return pl_error_raise(L, PL_CANCELLED, "cancelled");
}

int pl_error_is(lua_State *L, int idx, const char *kind) {
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, ERROR_MT);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (!same) return 0;
  if (kind == NULL) return 1;
  lua_getfield(L, idx, "kind");
  const char *k = lua_tostring(L, -1);
  int match = k != NULL && strcmp(k, kind) == 0;
  lua_pop(L, 1);
  return match;
}

int pl_msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg != NULL) {
    lua_pushvalue(L, 1);
  } else if (pl_error_is(L, 1, NULL)) {
    push_text(L, 1);  /* not __tostring: that would add a traceback of its own */
  } else if (!luaL_callmeta(L, 1, "__tostring") || lua_type(L, -1) != LUA_TSTRING) {
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  add_traceback(L, 1, 1);
  return 1;
}

void pl_error_note_origin(lua_State *L, int err, int traceback) {
  err = lua_absindex(L, err);
  traceback = lua_absindex(L, traceback);
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, err);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, traceback);
  lua_rawseti(L, -2, 2);
  lua_setfield(L, LUA_REGISTRYINDEX, ORIGIN_KEY);
}

int pl_traceback_recorder(lua_State *L) {
  pl_msghandler(L);
  lua_setfield(L, lua_upvalueindex(1), "traceback");
  lua_settop(L, 1);
  return 1;
}

char *pl_take_traceback(lua_State *L, int slot) {
  char *tb = NULL;
  if (lua_getfield(L, slot, "traceback") == LUA_TSTRING) tb = strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_setfield(L, slot, "traceback");
  return tb;
}

static const char *const NIL_GLOBAL[] = {"attempt to call a nil value (global '",
                                         "attempt to index a nil value (global '", NULL};

void pl_error_add_global_hint(lua_State *L, int idx, const char *kind) {
  idx = lua_absindex(L, idx);
  const char *msg = lua_tostring(L, idx);
  for (int i = 0; NIL_GLOBAL[i] != NULL; i++) {
    const char *at = strstr(msg, NIL_GLOBAL[i]);
    if (at == NULL) continue;
    const char *name = at + strlen(NIL_GLOBAL[i]);
    const char *end = strchr(name, '\'');
    if (end == NULL) return;
    lua_pushlstring(L, name, (size_t)(end - name));
    lua_pushfstring(L, "%s (globals are not copied to '%s' workers: make '%s' a local upvalue "
                       "of the task, or define it in the pool's init function)",
                    msg, kind, lua_tostring(L, -1));
    lua_replace(L, idx);
    lua_pop(L, 1);
    return;
  }
}

void pl_check_cancel(lua_State *L, pl_tstate *ts) {
  if (ts != NULL && (pl_tstate_cancel_level(ts) == PL_CANCEL_FORCED || atomic_load(&ts->soft_limit_pending)))
    pl_error_raise_cancelled(L, ts);
}

int pl_pcall_traced(lua_State *L, int nargs, int nresults) {
  int fn = lua_gettop(L) - nargs;
  lua_createtable(L, 0, 1);           /* the recorder's slot */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, pl_traceback_recorder, 1);
  lua_insert(L, fn);                  /* [recorder, fn, args..., slot] */
  lua_insert(L, fn);                  /* [slot, recorder, fn, args...] */
  int status = lua_pcall(L, nargs, nresults, fn + 1);
  if (status != LUA_OK) {
    lua_getfield(L, fn, "traceback");  /* [slot, recorder, err, tb] */
  }
  lua_remove(L, fn);
  lua_remove(L, fn);
  return status;
}
