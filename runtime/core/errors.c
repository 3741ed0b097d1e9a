/* Error objects: tables with a kind and a one-line message. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "core/errors.h"

static const char ERROR_MT[] = "parlua.Error";
static const char ORIGIN_KEY[] = "parlua.error_origin";

static int error_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) {
    lua_getfield(L, 1, "kind");
    lua_pushfstring(L, "%s error", lua_tostring(L, -1));
  }
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

int pl_error_raise(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

int pl_error_raise_os(lua_State *L, int err, const char *what) {
  pl_error_push(L, PL_OS_ERROR, "%s: %s", what, strerror(err));
  lua_pushinteger(L, err);
  lua_setfield(L, -2, "errno");
  return lua_error(L);
}

int pl_error_raise_cancelled(lua_State *L, pl_tstate *ts) {
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
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  /* An error that came from a worker: add the worker's own traceback. */
  if (lua_getfield(L, LUA_REGISTRYINDEX, ORIGIN_KEY) == LUA_TTABLE) {
    lua_rawgeti(L, -1, 1);
    int same = lua_rawequal(L, -1, 1);
    lua_pop(L, 1);
    if (same) {
      lua_rawgeti(L, -1, 2);          /* [.., tb, origin, worker_tb] */
      lua_remove(L, -2);
      lua_pushliteral(L, "\n[worker] ");
      lua_insert(L, -2);
      lua_concat(L, 3);
      return 1;
    }
  }
  lua_pop(L, 1);
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
