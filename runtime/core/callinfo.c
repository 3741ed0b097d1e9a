/* lua_sethook without the walk over every frame.  See callinfo.h.
 *
 * Which frames need the trap flag.  Once a hook is armed, the next Lua
 * instruction of the coroutine runs in one of these frames:
 *   - the topmost Lua frame (under the C frames, if any, on top of it): it
 *     reloads its flag after each call and each backward jump (lvm.c,
 *     updatetrap);
 *   - a frame it calls: a new frame starts with trap = L->hookmask;
 *   - a Lua caller it returns to in the same luaV_execute: the returning
 *     frame hands its own flag on;
 *   - when the topmost Lua frame was called from C (CIST_FRESH) and is just
 *     returning, the Lua frame under the C frames it returns through, which
 *     reloads its flag when they return -- and so on for each fresh frame.
 * So the flags go on the frames from the top down to the first Lua frame
 * that is not fresh (or the bottom), at most one Lua frame per C-call level.
 * An error thrown before any of them runs lands in a deeper frame without
 * the flag; that frame sees the hook at its next call or return, and a
 * waiter asks again after a switch interval anyway (gil.c).
 *
 * The layout.  The fields below are Lua 5.4's CallInfo (lstate.h, the same
 * in 5.4.0 to 5.4.7).  lua_getstack hands out the CallInfo of a level in
 * lua_Debug.i_ci, so the probe reads three frames it knows -- a C function
 * called by a Lua function called by a Lua chunk called from C -- and checks
 * their links and kinds.  A build of Lua with another layout fails the probe
 * and keeps Lua's own walk.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "lauxlib.h"
#include "core/callinfo.h"

typedef struct pl_callinfo {  /* Lua 5.4's struct CallInfo */
  void *func, *top;
  struct pl_callinfo *previous, *next;
  union {
    struct {
      const void *savedpc;
      volatile sig_atomic_t trap;
      int nextraargs;
    } l;
    struct {
      void *k;
      ptrdiff_t old_errfunc;
      intptr_t ctx;
    } c;
  } u;
  int u2;
  short nresults;
  unsigned short callstatus;
} pl_callinfo;

#define CIST_C (1 << 1)      /* running a C function */
#define CIST_FRESH (1 << 2)  /* called from C: returns out of luaV_execute */

/* 0 not checked yet, 1 verified, -1 another layout. */
static atomic_int layout = 0;

static int is_c(const pl_callinfo *ci) { return (ci->callstatus & CIST_C) != 0; }
static int is_fresh(const pl_callinfo *ci) { return (ci->callstatus & CIST_FRESH) != 0; }

static int probe(lua_State *L) {
  lua_Debug a0, a1, a2;
  int ok = lua_getstack(L, 0, &a0) && lua_getstack(L, 1, &a1) && lua_getstack(L, 2, &a2);
  if (ok) {
    pl_callinfo *c0 = (pl_callinfo *)a0.i_ci;  /* probe: C */
    pl_callinfo *c1 = (pl_callinfo *)a1.i_ci;  /* inner: Lua, called from Lua */
    pl_callinfo *c2 = (pl_callinfo *)a2.i_ci;  /* the chunk: Lua, called from C */
    ok = c0->previous == c1 && c1->previous == c2 && c2->next == c1 && c1->next == c0 &&
         is_c(c0) && !is_c(c1) && !is_fresh(c1) && !is_c(c2) && is_fresh(c2);
  }
  lua_pushboolean(L, ok);
  return 1;
}

static const char PROBE_CHUNK[] =
    "local probe = ...\n"
    "local function inner() local ok = probe(); return ok end\n"
    "local ok = inner(); return ok\n";

void pl_callinfo_check(lua_State *L) {
  if (atomic_load(&layout) != 0) return;
  int ok = 0;
  if (luaL_loadbufferx(L, PROBE_CHUNK, sizeof PROBE_CHUNK - 1, "=(parlua probe)", "t") == LUA_OK) {
    lua_pushcfunction(L, probe);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) ok = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);  /* the result or the error */
  int expected = 0;
  atomic_compare_exchange_strong(&layout, &expected, ok ? 1 : -1);
}

int pl_callinfo_verified(void) { return atomic_load(&layout) == 1; }

/* The deepest frame that needs the trap flag (see the top of this file). */
static pl_callinfo *deepest_needed(pl_callinfo *ci) {
  for (;;) {
    while (is_c(ci) && ci->previous != NULL) ci = ci->previous;
    if (is_c(ci) || !is_fresh(ci) || ci->previous == NULL) return ci;
    ci = ci->previous;
  }
}

void pl_sethook_shallow(lua_State *L, lua_Hook func, int mask, int count) {
  lua_Debug ar;
  if (mask == 0 || func == NULL || atomic_load_explicit(&layout, memory_order_relaxed) != 1 ||
      !lua_getstack(L, 0, &ar)) {
    lua_sethook(L, func, mask, count);
    return;
  }
  /* lua_sethook walks from L->ci through `previous` until NULL: end the
   * chain below the last frame that needs the flag, for the call only.
   * On the thread running L nothing else follows these links meanwhile. */
  pl_callinfo *cut = deepest_needed((pl_callinfo *)ar.i_ci);
  pl_callinfo *below = cut->previous;
  cut->previous = NULL;
  lua_sethook(L, func, mask, count);
  cut->previous = below;
}
