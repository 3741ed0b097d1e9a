/* The factory for every lua_State the runtime makes: the main state of
 * parlua_new, each `states` worker and process worker.  All get the
 * standard libraries, the lock-aware coroutine functions, the runtime's
 * modules (parlua itself, given by whoever built the runtime) and the
 * host's preloads, and the allocator of core/bigmem.h. */
#include "lauxlib.h"
#include "lualib.h"
#include "core/bigmem.h"
#include "core/debughook.h"
#include "blockio/blockio.h"
#include "core/runtime.h"

lua_State *pl_state_new(parlua *rt, pl_family *fam) {
  lua_State *L = luaL_newstate();
  if (L == NULL) return NULL;
  /* Big strings and tables in big blocks (core/bigmem.h); the small
   * blocks made so far are malloc's, as the new allocator's small ones. */
  lua_setallocf(L, pl_bigmem_lua_alloc, NULL);
  pl_family_attach(fam, L);
  luaL_openlibs(L);
  pl_install_coroutines(L);
  pl_install_debughooks(L);
  pl_blockio_install(L);
  pl_runtime_apply_preloads(rt, L);
  return L;
}
