/* The Lua-facing side of the codec (runtime/codec.c): how a shared box
 * arrives in a receiving state, and three internal hooks for tests,
 * benchmarks and the fuzzer's seed corpus:
 *   par._encode(...) -> string   the values' message (values holding
 *                                runtime objects cannot become bytes)
 *   par._decode(s) -> ...        the values of a message, or a Transfer
 *                                error ("malformed message: ...")
 *   par._roundtrip(...) -> ...   encode and decode again, in this state
 *   par._codec_test_key()        sign bytecode with a fixed public key from
 *                                now on (the fuzzer's seeds use it)
 * They are internal: their names start with an underscore and they may
 * change without notice.
 */
#include <string.h>

#include "bindings.h"
#include "codec/codec.h"

void pl_codec_push_box(lua_State *L, const pl_transfer_type *t, void *obj) {
  if (luaL_getmetatable(L, t->tname) != LUA_TTABLE) {
    /* A state that never loaded parlua: load it, it makes the classes. */
    lua_pop(L, 1);
    luaL_requiref(L, "parlua", luaopen_parlua, 0);
    lua_pop(L, 1);
    luaL_getmetatable(L, t->tname);
    if (!lua_istable(L, -1))
      pl_error_raise(L, PL_TRANSFER, "no class %s in the receiving state", t->tname);
  }
  lua_pop(L, 1);
  void **box = pl_box_new(L, t->tname, NULL);  /* closed until it holds its reference */
  t->retain(obj);
  *box = obj;
}

static int encode(lua_State *L) {
  pl_msg *m = pl_codec_encode(L, 1, lua_gettop(L), NULL, "argument %d");
  if (m->nobjs > 0) {
    pl_msg_free(m);
    return pl_error_raise(L, PL_TRANSFER,
                          "values holding runtime objects or unnamed C functions cannot become bytes");
  }
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, m->len);
  memcpy(p, m->data, m->len);
  size_t len = m->len;
  pl_msg_free(m);
  luaL_pushresultsize(&b, len);
  return 1;
}

static int decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_settop(L, 1);
  return pl_codec_decode_bytes(L, s, len);
}

static int decode_msg(lua_State *L) {
  const pl_msg *m = lua_touserdata(L, 1);
  lua_settop(L, 0);
  return pl_codec_decode(L, m);
}

static int roundtrip(lua_State *L) {
  int n = lua_gettop(L);
  pl_msg *m = pl_codec_encode(L, 1, n, NULL, "argument %d");
  lua_pushcfunction(L, decode_msg);
  lua_pushlightuserdata(L, m);
  int status = lua_pcall(L, 1, LUA_MULTRET, 0);
  pl_msg_free(m);
  if (status != LUA_OK) return pl_error_throw(L);
  return lua_gettop(L) - n;
}

static int test_key(lua_State *L) {
  (void)L;
  pl_codec_use_test_key();
  return 0;
}

void pl_open_codec(lua_State *L) {
  static const luaL_Reg funcs[] = {{"_encode", encode},       {"_decode", decode},
                                   {"_roundtrip", roundtrip}, {"_codec_test_key", test_key},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
