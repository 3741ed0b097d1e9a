/* libFuzzer target for the value codec's decoder (runtime/decode.c).
 *
 * Build and run: `make fuzz` builds it (with the whole runtime: the error
 * objects need it) and runs it FUZZ_SECONDS after the other targets, as
 *   build-fuzz/fuzz_codec -max_total_time=600 build-fuzz/codec_corpus tests/fuzz/codec_corpus
 * The seeds are real encodings made by tests/fuzz/gen_codec_corpus.lua.
 *
 * Each input is decoded in a lua_State that is reused for a while (so the
 * decoder's function cache and the collector see many inputs) and then
 * replaced.  A decode either succeeds or fails with a Transfer error; a
 * crash, a sanitizer report or an error of any other kind is a finding.
 * After a success the values are encoded again and that message must
 * decode -- unless encoding refuses them for a reason it reports.
 *
 * Bytecode is signed with the fixed test key here (pl_codec_use_test_key),
 * as in the seeds: seed bytecode loads, mutated bytecode is refused by
 * its MAC before Lua's loader -- which trusts binary chunks -- sees it.
 * Decoding loads Lua bytecode but never runs it; the harness makes sure
 * nothing else runs it either: __gc fields are removed from the metatables
 * of what was decoded before any of it can be collected (the decoder sets
 * metatables only once a whole message has decoded, so a failed decode
 * leaves no finalizer behind).  The state's allocator refuses more than
 * 64 MiB in all, so a length in a forged dump fails as a memory error
 * instead of exhausting the machine.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
#include "codec/codec.h"
#include "core/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MEMORY_LIMIT (64u << 20)
#define RUNS_PER_STATE 2000

static size_t in_use;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (ptr == NULL) osize = 0;
  if (nsize == 0) {
    free(ptr);
    in_use -= osize;
    return NULL;
  }
  if (nsize > osize && nsize - osize > MEMORY_LIMIT - in_use) return NULL;
  void *p = realloc(ptr, nsize);
  if (p != NULL) in_use = in_use - osize + nsize;
  return p;
}

static lua_State *new_state(void) {
  lua_State *L = lua_newstate(limited_alloc, NULL);
  assert(L != NULL);
  /* A few libraries, so that names (string.format, _G.print) resolve;
   * no package library: a name of an absent module fails cleanly. */
  luaL_requiref(L, "_G", luaopen_base, 1);
  luaL_requiref(L, "string", luaopen_string, 1);
  luaL_requiref(L, "table", luaopen_table, 1);
  luaL_requiref(L, "math", luaopen_math, 1);
  lua_settop(L, 0);
  lua_pushnil(L);
  lua_setglobal(L, "require");
  return L;
}

typedef struct input {
  const uint8_t *data;
  size_t size;
} input;

static int decode(lua_State *L) {
  const input *in = lua_touserdata(L, 1);
  lua_settop(L, 0);
  return pl_codec_decode_bytes(L, in->data, in->size);
}

/* Remove __gc from every metatable reachable from the value at idx. */
static void defuse(lua_State *L, int idx, int seen, int depth) {
  int t = lua_type(L, idx);
  if ((t != LUA_TTABLE && t != LUA_TFUNCTION) || depth > 1000 || !lua_checkstack(L, 6)) return;
  lua_pushvalue(L, idx);
  if (lua_rawget(L, seen) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, seen);
  if (t == LUA_TFUNCTION) {
    if (lua_iscfunction(L, idx)) return;
    for (int i = 1; lua_getupvalue(L, idx, i) != NULL; i++) {
      defuse(L, lua_gettop(L), seen, depth + 1);
      lua_pop(L, 1);
    }
    return;
  }
  if (lua_getmetatable(L, idx)) {
    lua_pushliteral(L, "__gc");
    lua_pushnil(L);
    lua_rawset(L, -3);
    defuse(L, lua_gettop(L), seen, depth + 1);
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    defuse(L, lua_gettop(L) - 1, seen, depth + 1);
    defuse(L, lua_gettop(L), seen, depth + 1);
    lua_pop(L, 1);
  }
}

static int encode(lua_State *L) {
  pl_msg **out = lua_touserdata(L, lua_upvalueindex(1));
  *out = pl_codec_encode(L, 1, lua_gettop(L), NULL, "value");
  return 0;
}

static int decode_msg(lua_State *L) {
  const pl_msg *m = lua_touserdata(L, 1);
  lua_settop(L, 0);
  return pl_codec_decode(L, m);
}

/* A failure must be a Transfer error, or a memory error. */
static void check_failure(lua_State *L, int status) {
  if (status == LUA_ERRMEM) return;
  assert(status == LUA_ERRRUN);
  if (lua_type(L, -1) == LUA_TSTRING) {  /* what luaL_error raises: only "not enough memory" */
    assert(strstr(lua_tostring(L, -1), "not enough memory") != NULL);
    return;
  }
  assert(pl_error_is(L, -1, PL_TRANSFER));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  static unsigned runs;
  if (L == NULL || ++runs % RUNS_PER_STATE == 0) {
    if (L == NULL) pl_codec_use_test_key();
    if (L != NULL) lua_close(L);
    L = new_state();
  }
  input in = {data, size};
  lua_pushcfunction(L, decode);
  lua_pushlightuserdata(L, &in);
  int status = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (status != LUA_OK) {
    check_failure(L, status);
    lua_settop(L, 0);
    return 0;
  }
  int n = lua_gettop(L);
  lua_newtable(L);
  for (int i = 1; i <= n; i++) defuse(L, i, n + 1, 0);
  lua_pop(L, 1);

  /* Encode the values again; what the encoder makes must decode. */
  pl_msg *m = NULL;
  lua_pushlightuserdata(L, &m);
  lua_pushcclosure(L, encode, 1);
  lua_insert(L, 1);
  status = lua_pcall(L, n, 0, 0);
  if (status != LUA_OK) {
    check_failure(L, status);
  } else {
    lua_pushcfunction(L, decode_msg);
    lua_pushlightuserdata(L, m);
    status = lua_pcall(L, 1, LUA_MULTRET, 0);
    assert(status == LUA_OK || status == LUA_ERRMEM);
    pl_msg_free(m);
  }
  lua_settop(L, 0);
  return 0;
}
