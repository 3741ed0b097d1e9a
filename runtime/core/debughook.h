/* Private to the parlua runtime: debug.sethook and debug.gethook that keep
 * the script's hooks exactly as it set them while the lock is handed over.
 *
 * Hooks are per coroutine and a coroutine has one hook slot, which the
 * runtime needs for a moment at each hand-off.  So the debug library's two
 * functions are replaced (as coroutine.resume is) by ones that behave as
 * Lua 5.4's ldblib.c and install pl_script_hook, which calls the script's
 * function for the script's events and serves the runtime's requests too.
 * The settings the script gave are kept beside ldblib's own table of hook
 * functions, so debug.gethook reports them whatever the slot holds.
 */
#ifndef PL_DEBUGHOOK_H
#define PL_DEBUGHOOK_H

#include "lua.h"

/* Largest count of a count hook that is left to serve requests itself. */
#define PL_SCRIPT_COUNT_SERVES 10000

void pl_script_hook(lua_State *L, lua_Debug *ar);

/* A script hook with these settings runs often enough to notice a request
 * by itself: a line hook, or a count hook of a small count.
 * Async-signal-safe. */
static inline int pl_script_hook_sees_all(int mask, int count) {
  return (mask & LUA_MASKLINE) ||
         ((mask & LUA_MASKCOUNT) && count <= PL_SCRIPT_COUNT_SERVES);
}

/* A coroutine co that lua_newthread made from L has L's hook: give it the
 * script's settings of L, without the runtime's count. */
void pl_debughook_inherit(lua_State *L, lua_State *co);

/* Replace debug.sethook and debug.gethook in L's loaded debug library (and
 * check the CallInfo layout, see callinfo.h). */
void pl_install_debughooks(lua_State *L);

#endif
