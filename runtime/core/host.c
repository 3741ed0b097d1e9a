/* The embedding API of include/parlua.h: make a runtime, run code in its
 * main state under the lock, close it. */
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "core/enter.h"
#include "core/errors.h"
#include "core/runtime.h"

parlua *parlua_new(const parlua_config *cfg) {
  parlua *rt = malloc(sizeof *rt);
  if (rt == NULL) return NULL;
  if (pl_runtime_open(rt, cfg, NULL) != 0) {
    free(rt);
    return NULL;
  }
  return rt;
}

lua_State *parlua_state(parlua *rt) { return rt->main.L; }

void parlua_enter(parlua *rt) {
  pl_tstate *ts = pl_tstate_current(&rt->main);
  /* Nested, or a thread of this runtime that holds the lock already (a C
   * function called from a par.thread or a pool worker): just count. */
  if (ts != NULL && (ts->depth > 0 || pl_gil_held_by(&rt->main.gil, ts))) {
    ts->depth++;
    return;
  }
  ts = pl_attach(&rt->main, NULL);
  if (ts == NULL) abort();  /* nothing sensible to do without memory */
  ts->made_by_enter = 1;
  ts->depth = 1;
  pl_take_lock(ts, rt->main.L, 1);
}

void parlua_leave(parlua *rt) {
  pl_tstate *ts = pl_tstate_current(&rt->main);
  if (ts == NULL || --ts->depth > 0 || !ts->made_by_enter) return;
  pl_leave(ts);
}

static void set_error(parlua *rt, const char *msg) {
  free(rt->error);
  rt->error = msg != NULL ? strdup(msg) : NULL;
}

/* Call the chunk on top of the stack with a traceback handler. */
static int run_chunk(parlua *rt, lua_State *L, int status) {
  if (status == LUA_OK) {
    int base = lua_gettop(L);
    lua_pushcfunction(L, pl_msghandler);
    lua_insert(L, base);
    status = lua_pcall(L, 0, 0, base);
    lua_remove(L, base);
  }
  pl_tstate *ts = pl_tstate_current(&rt->main);
  rt->last_interrupted = status != LUA_OK && atomic_load(&ts->interrupted);
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    set_error(rt, msg != NULL ? msg : "(error object is not a string)");
    lua_pop(L, 1);
  }
  return status;
}

int parlua_dostring(parlua *rt, const char *code, const char *chunkname) {
  parlua_enter(rt);
  lua_State *L = rt->main.L;
  int status = luaL_loadbuffer(L, code, strlen(code), chunkname != NULL ? chunkname : code);
  status = run_chunk(rt, L, status);
  parlua_leave(rt);
  return status;
}

int parlua_dofile(parlua *rt, const char *path) {
  parlua_enter(rt);
  lua_State *L = rt->main.L;
  int status = run_chunk(rt, L, luaL_loadfile(L, path));
  parlua_leave(rt);
  return status;
}

const char *parlua_error(parlua *rt) { return rt->error != NULL ? rt->error : ""; }

void parlua_close(parlua *rt) {
  if (rt == NULL) return;
  parlua_enter(rt);
  /* Finalizers run inside lua_close and may still use the runtime, so the
   * lock and this thread's tstate stay in place until it returns. */
  pl_runtime_close_state(rt);
  pl_leave(pl_tstate_current(&rt->main));
  pl_runtime_close(rt);
  free(rt);
}
