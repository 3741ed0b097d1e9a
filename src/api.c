/* The embedding API of include/parlua.h, every parlua_* function in one
 * place: each is a thin layer over the runtime (runtime/core), and the
 * only code besides the bindings that names the parlua module, whose
 * opening functions it hands to every runtime it makes. */
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "bindings.h"
#include "core/enter.h"
#include "core/errors.h"
#include "core/runtime.h"
#include "core/sigint.h"
#include "mpi/mpi.h"

PARLUA_API void parlua_config_init(parlua_config *cfg) { pl_config_init(cfg); }

PARLUA_API parlua *parlua_new(const parlua_config *cfg) {
  parlua *rt = malloc(sizeof *rt);
  if (rt == NULL) return NULL;
  if (pl_runtime_open(rt, cfg, pl_builtin_modules, NULL) != 0) {
    free(rt);
    return NULL;
  }
  return rt;
}

PARLUA_API int parlua_preload(parlua *rt, const char *name, lua_CFunction open) {
  return pl_runtime_add_preload(rt, name, open);
}

PARLUA_API lua_State *parlua_state(parlua *rt) { return rt->main.L; }

PARLUA_API int parlua_mpi_serve(void) { return pl_mpi_serve_if_worker(pl_builtin_modules); }

PARLUA_API void parlua_enter(parlua *rt) { pl_host_enter(rt); }

PARLUA_API void parlua_leave(parlua *rt) { pl_host_leave(rt); }

static void set_error(parlua *rt, const char *msg) {
  free(rt->error);
  rt->error = msg != NULL ? strdup(msg) : NULL;
}

/* The error message (with its traceback) is the interrupt this thread
 * raised last, not some later error of a script that caught it. */
static int is_interrupt(pl_tstate *ts, const char *msg) {
  size_t n = strlen(ts->interrupt_msg);
  return n > 0 && msg != NULL && strncmp(msg, ts->interrupt_msg, n) == 0 &&
         (msg[n] == '\0' || msg[n] == '\n');
}

/* Call the chunk on top of the stack with a traceback handler. */
static int run_chunk(parlua *rt, lua_State *L, int status) {
  pl_tstate *ts = pl_tstate_current(&rt->main);
  ts->interrupt_msg[0] = '\0';
  if (status == LUA_OK) {
    int base = lua_gettop(L);
    lua_pushcfunction(L, pl_msghandler);
    lua_insert(L, base);
    status = lua_pcall(L, 0, 0, base);
    lua_remove(L, base);
  }
  rt->last_interrupted = 0;
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    rt->last_interrupted = is_interrupt(ts, msg);
    set_error(rt, msg != NULL ? msg : "(error object is not a string)");
    lua_pop(L, 1);
  }
  return status;
}

PARLUA_API int parlua_dostring(parlua *rt, const char *code, const char *chunkname) {
  pl_host_enter(rt);
  lua_State *L = rt->main.L;
  int status = luaL_loadbuffer(L, code, strlen(code), chunkname != NULL ? chunkname : code);
  status = run_chunk(rt, L, status);
  pl_host_leave(rt);
  return status;
}

PARLUA_API int parlua_dofile(parlua *rt, const char *path) {
  pl_host_enter(rt);
  lua_State *L = rt->main.L;
  int status = run_chunk(rt, L, luaL_loadfile(L, path));
  pl_host_leave(rt);
  return status;
}

PARLUA_API const char *parlua_error(parlua *rt) { return rt->error != NULL ? rt->error : ""; }

PARLUA_API int parlua_interrupt(parlua *rt) { return pl_runtime_interrupt(rt); }

PARLUA_API int parlua_interrupted(parlua *rt) { return rt->last_interrupted; }

PARLUA_API int parlua_catch_sigint(parlua *rt) { return pl_sigint_catch(rt); }

PARLUA_API int parlua_release_sigint(parlua *rt) { return pl_sigint_release(rt); }

PARLUA_API void parlua_close(parlua *rt) {
  if (rt == NULL) return;
  pl_host_enter(rt);
  /* Finalizers run inside lua_close and may still use the runtime, so the
   * lock and this thread's tstate stay in place until it returns. */
  pl_runtime_close_state(rt);
  pl_leave(pl_tstate_current(&rt->main));
  pl_runtime_close(rt);
  free(rt);
}

PARLUA_API void parlua_unlock(lua_State *L) { (void)pl_unlock(L, PL_GIL_BLOCKING); }

PARLUA_API void parlua_lock(lua_State *L) { pl_lock(L, pl_tstate_of(L)); }
