/* Private to the parlua runtime: lua_sethook at a cost independent of the
 * call depth.
 *
 * Lua 5.4's lua_sethook sets a trap flag in every CallInfo of the coroutine
 * (settraps in ldebug.c), so arming a hook 500,000 frames deep walks
 * 500,000 frames.  Only the frames that can run next need the flag (see
 * callinfo.c), so pl_sethook_shallow shortens the chain for the length of
 * the lua_sethook call.  That needs the CallInfo layout, which the public
 * headers do not give: pl_callinfo_check verifies it on a live stack once
 * per process, and without a match pl_sethook_shallow is plain lua_sethook.
 */
#ifndef PL_CALLINFO_H
#define PL_CALLINFO_H

#include "lua.h"

/* Verify the layout on L's stack (runs a few lines of Lua); idempotent. */
void pl_callinfo_check(lua_State *L);

/* 1 when the layout was verified (so arming is depth-independent). */
int pl_callinfo_verified(void);

/* lua_sethook(L, func, mask, count) that sets trap flags only in the frames
 * that may run before a Lua frame of L executes its next instruction.  For
 * hooks that stay installed briefly (the runtime's count hook) or for
 * putting back a mask whose frames were all trapped when it was first set.
 * Async-signal-safe, like lua_sethook, on the thread running L. */
void pl_sethook_shallow(lua_State *L, lua_Hook func, int mask, int count);

#endif
