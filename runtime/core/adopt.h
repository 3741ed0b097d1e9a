/* Private to the parlua runtime: parlua inside a stock lua5.4.
 *
 * In a state made by parlua_new the runtime already exists.  In a stock
 * `lua5.4` that does `require "parlua"`, the module adopts the state: it
 * makes a runtime stored in a userdata (freed by lua_close after every
 * finalizer ran), and the main thread takes the lock and keeps it except
 * while blocked, exactly like a host thread between parlua_enter and
 * parlua_leave.  At lua_close a sentinel finalizer joins threads and shuts
 * pools down before anything they use is finalized.
 */
#ifndef PL_ADOPT_H
#define PL_ADOPT_H

#include "lua.h"
#include "lauxlib.h"

/* Make L's main state the main state of a new runtime whose states
 * preload `modules` (static, {NULL, NULL} ends it).  Raises on failure. */
void pl_runtime_adopt(lua_State *L, const luaL_Reg *modules);

/* In a stock lua state, keep the shutdown sentinel the newest finalizable
 * object so it runs before any object a still-running thread may use. */
void pl_adopted_touch(lua_State *L);

#endif
