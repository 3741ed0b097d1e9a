/* debug.sethook and debug.gethook, as Lua 5.4's ldblib.c, with the hook
 * the runtime can share (see debughook.h).
 *
 * The script's settings.  ldblib keeps each coroutine's hook function in
 * registry._HOOKKEY[co]; it is kept there (same table, same meaning), and the
 * mask and count beside it in a table of ours, so they survive the count the
 * runtime adds for a moment.  A coroutine with no entry (made with
 * lua_newthread in C, which copies its creator's hook) has the settings its
 * slot shows, as in Lua.
 *
 * Whose event.  The runtime only ever adds a count: every other event is
 * the script's, and a count event is the script's only if its own mask has
 * a count and the slot still has the script's count (when ours is added, it
 * is 1, and a script count of 1 is never added to: it serves by itself).
 */
#include <string.h>

#include "lauxlib.h"
#include "lualib.h"
#include "core/callinfo.h"
#include "core/debughook.h"
#include "core/runtime.h"

static const char HOOKKEY[] = "_HOOKKEY";  /* ldblib's table of functions */
static const char SETTINGS_KEY[] = "parlua.hook settings";  /* its address is the key */

/* Push registry[SETTINGS_KEY], made (weak keys) when absent. */
static void push_settings_table(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, SETTINGS_KEY) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, SETTINGS_KEY);
}

/* The settings the script gave co, pushing nothing (the stack of L is
 * used).  Masks fit in 4 bits: the count is kept above them. */
static void settings_of(lua_State *L, lua_State *co, int *mask, int *count) {
  *mask = lua_gethookmask(co);
  *count = lua_gethookcount(co);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, SETTINGS_KEY) == LUA_TTABLE) {
    lua_pushthread(co);
    if (co != L) lua_xmove(co, L, 1);
    if (lua_rawget(L, -2) == LUA_TNUMBER) {
      lua_Integer v = lua_tointeger(L, -1);
      *mask = (int)(v & 15);
      *count = (int)(v >> 4);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Record co's settings; the settings table is at the top of L. */
static void record_settings(lua_State *L, lua_State *co, int mask, int count) {
  lua_pushthread(co);
  if (co != L) lua_xmove(co, L, 1);
  lua_pushinteger(L, ((lua_Integer)count << 4) | mask);
  lua_rawset(L, -3);
}

static int is_script_event(lua_State *L, int event, int mask, int count) {
  if (event != LUA_HOOKCOUNT) return 1;
  return (mask & LUA_MASKCOUNT) && lua_gethookcount(L) == count;
}

/* Call the script's function for an event, as ldblib's hookf does. */
static void call_script(lua_State *L, lua_Debug *ar) {
  static const char *const names[] = {"call", "return", "line", "count", "tail call"};
  int top = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, HOOKKEY);
  lua_pushthread(L);
  if (lua_rawget(L, -2) == LUA_TFUNCTION) {
    lua_pushstring(L, names[ar->event]);
    if (ar->currentline >= 0) lua_pushinteger(L, ar->currentline);
    else lua_pushnil(L);
    lua_call(L, 2, 0);
  }
  lua_settop(L, top);
}

void pl_script_hook(lua_State *L, lua_Debug *ar) {
  int mask, count;
  settings_of(L, L, &mask, &count);
  if (is_script_event(L, ar->event, mask, count)) call_script(L, ar);
  pl_tstate *ts = pl_tstate_of(L);
  /* The script's function may have set another hook; else take our count
   * out again, if it was added. */
  if (lua_gethook(L) == pl_script_hook) {
    settings_of(L, L, &mask, &count);
    if (lua_gethookmask(L) != mask || lua_gethookcount(L) != count)
      pl_tstate_put_hook(ts, L, pl_script_hook, mask, count);
  }
  if (ts != NULL) pl_family_serve(L, ts);
}

static lua_State *thread_arg(lua_State *L, int *arg) {
  if (lua_isthread(L, 1)) {
    *arg = 1;
    return lua_tothread(L, 1);
  }
  *arg = 0;
  return L;
}

static int mask_of(const char *smask, int count) {
  int mask = 0;
  if (strchr(smask, 'c')) mask |= LUA_MASKCALL;
  if (strchr(smask, 'r')) mask |= LUA_MASKRET;
  if (strchr(smask, 'l')) mask |= LUA_MASKLINE;
  if (count > 0) mask |= LUA_MASKCOUNT;
  return mask;
}

static void check_room(lua_State *L, lua_State *co) {
  if (L != co && !lua_checkstack(co, 1)) luaL_error(L, "stack overflow");
}

/* debug.sethook([thread,] hook, mask [, count]) */
static int db_sethook(lua_State *L) {
  int arg, mask, count;
  lua_Hook func;
  lua_State *co = thread_arg(L, &arg);
  if (lua_isnoneornil(L, arg + 1)) {
    lua_settop(L, arg + 1);
    func = NULL;
    mask = 0;
    count = 0;
  } else {
    const char *smask = luaL_checkstring(L, arg + 2);
    luaL_checktype(L, arg + 1, LUA_TFUNCTION);
    count = (int)luaL_optinteger(L, arg + 3, 0);
    func = pl_script_hook;
    mask = mask_of(smask, count);
  }
  if (func == NULL || mask == 0) {  /* what lua_sethook makes of it */
    func = NULL;
    mask = 0;
  }
  if (!luaL_getsubtable(L, LUA_REGISTRYINDEX, HOOKKEY)) {  /* ldblib's, as it makes it */
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_pushvalue(L, -1);
    lua_setmetatable(L, -2);
  }
  check_room(L, co);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_pushvalue(L, arg + 1);
  lua_rawset(L, -3);
  push_settings_table(L);
  record_settings(L, co, mask, count);
  pl_tstate_set_hook(pl_tstate_of(L), co, func, mask, count);
  return 0;
}

static char *mask_string(int mask, char *smask) {
  int i = 0;
  if (mask & LUA_MASKCALL) smask[i++] = 'c';
  if (mask & LUA_MASKRET) smask[i++] = 'r';
  if (mask & LUA_MASKLINE) smask[i++] = 'l';
  smask[i] = '\0';
  return smask;
}

/* debug.gethook([thread]): the script's settings, never the runtime's. */
static int db_gethook(lua_State *L) {
  int arg;
  lua_State *co = thread_arg(L, &arg);
  char buff[5];
  lua_Hook hook = lua_gethook(co);
  int mask = lua_gethookmask(co), count = lua_gethookcount(co);
  pl_family *fam = pl_family_of(L);
  if (fam != NULL && hook == fam->hook) {  /* ours, over nothing or a displaced one */
    pl_tstate *ts = pl_tstate_current(fam);
    if (ts == NULL || ts->displaced_L != co) {
      luaL_pushfail(L);
      return 1;
    }
    hook = ts->displaced_hook;
    mask = ts->displaced_mask;
    count = ts->displaced_count;
  }
  if (hook == NULL) {
    luaL_pushfail(L);
    return 1;
  }
  if (hook != pl_script_hook) {
    lua_pushliteral(L, "external hook");
  } else {
    check_room(L, co);
    settings_of(L, co, &mask, &count);
    lua_getfield(L, LUA_REGISTRYINDEX, HOOKKEY);
    check_room(L, co);
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    lua_rawget(L, -2);
    lua_remove(L, -2);
  }
  lua_pushstring(L, mask_string(mask, buff));
  lua_pushinteger(L, count);
  return 3;
}

void pl_debughook_inherit(lua_State *L, lua_State *co) {
  lua_Hook hook = lua_gethook(co);
  if (hook == pl_script_hook) {  /* copy the creator's settings, not our count */
    int mask, count;
    settings_of(L, L, &mask, &count);
    push_settings_table(L);
    record_settings(L, co, mask, count);
    lua_pop(L, 1);
    lua_sethook(co, pl_script_hook, mask, count);
    return;
  }
  pl_family *fam = pl_family_of(L);
  if (fam == NULL || hook != fam->hook) return;
  pl_tstate *ts = pl_tstate_current(fam);
  if (ts != NULL && ts->displaced_L == L)  /* the creator's real hook */
    lua_sethook(co, ts->displaced_hook, ts->displaced_mask, ts->displaced_count);
  else
    lua_sethook(co, NULL, 0, 0);
}

void pl_install_debughooks(lua_State *L) {
  pl_callinfo_check(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_DBLIBNAME) == LUA_TTABLE) {
    lua_pushcfunction(L, db_sethook);
    lua_setfield(L, -2, "sethook");
    lua_pushcfunction(L, db_gethook);
    lua_setfield(L, -2, "gethook");
  }
  lua_pop(L, 2);
}
