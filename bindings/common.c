/* Helpers every binding shares: boxes, classes, timeouts, and giving the
 * lock away around a wait on a sync object. */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "bindings.h"
#include "sync/sync.h"

void pl_new_class(lua_State *L, const char *tname, const luaL_Reg *methods, lua_CFunction index,
                  lua_CFunction gc, lua_CFunction close, lua_CFunction tostring) {
  luaL_newmetatable(L, tname);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  if (index != NULL) lua_pushcclosure(L, index, 1);  /* the method table as its upvalue */
  lua_setfield(L, -2, "__index");
  const struct { const char *name; lua_CFunction f; } metamethods[] = {
      {"__gc", gc}, {"__close", close}, {"__tostring", tostring}};
  for (size_t i = 0; i < sizeof metamethods / sizeof metamethods[0]; i++) {
    if (metamethods[i].f == NULL) continue;
    lua_pushcfunction(L, metamethods[i].f);
    lua_setfield(L, -2, metamethods[i].name);
  }
  lua_pop(L, 1);
}

void pl_check_not_closed(lua_State *L, const char *tname) {
  parlua *rt = pl_runtime_of(L);
  if (rt == NULL || !pl_runtime_is_closed(rt)) return;
  char what[64];  /* "parlua.RLock" -> "rlock" */
  const char *name = strncmp(tname, "parlua.", 7) == 0 ? tname + 7 : tname;
  size_t i = 0;
  for (; name[i] != '\0' && i < sizeof what - 1; i++) what[i] = (char)tolower((unsigned char)name[i]);
  what[i] = '\0';
  pl_error_raise(L, PL_SHUTDOWN, "cannot make a %s: the runtime is closing", what);
}

void **pl_box_new(lua_State *L, const char *tname, void *ptr) {
  if (ptr == NULL) pl_check_not_closed(L, tname);  /* else the caller checked */
  void **box = lua_newuserdatauv(L, sizeof *box, 1);
  *box = ptr;
  luaL_setmetatable(L, tname);
  pl_adopted_touch(L);
  return box;
}

void **pl_box_get(lua_State *L, int idx, const char *tname) {
  return luaL_checkudata(L, idx, tname);
}

void *pl_box_check(lua_State *L, int idx, const char *tname, const char *what) {
  void **box = luaL_checkudata(L, idx, tname);
  if (*box == NULL) luaL_error(L, "attempt to use a closed %s", what);
  return *box;
}

double pl_opt_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return -1;
  double t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t >= 0 && !isnan(t), idx, "timeout must be a non-negative number");
  return t;
}

pl_tstate *pl_block_begin(lua_State *L, pl_sync *obj) {
  pl_sync_incref(obj);
  return pl_unlock(L, obj->kind == PL_SYNC_QUEUE ? PL_GIL_QUEUE : PL_GIL_SYNC);
}

void pl_block_end(lua_State *L, pl_tstate *ts, pl_sync *obj) {
  pl_lock(L, ts);
  pl_sync_decref(obj);
}

