/* The value codec's decoder (see codec.h): bounds-checked, trusting
 * nothing in the bytes, loading only bytecode signed by this process.
 *
 * A decode pushes the values as it reads them; tables and functions get
 * ids in order of appearance, and those the message marks as named again
 * by a REF or JOIN (codec_wire.h) are kept: in stack slots when there are
 * few (the keys of records), else in a table.  Tables are made at their
 * final size (the message gives both counts).  Metatables are set once the
 * whole message has decoded, so a message that fails half way leaves no
 * table with a finalizer behind.  Functions whose upvalues are all
 * constants and that never assign an upvalue are kept per state (the
 * receiver's cache) and served again to later messages carrying the same
 * bytes.
 *
 * The collector is left alone.  Stopping it for a large decode and then
 * paying its due in one step was measured (a 10,000-node tree): faster in
 * some runs when the copy is about the whole heap, slower (12%) as soon as
 * the heap holds more, because LUA_GCRESTART forgets the credit the
 * collector had before its next cycle and Lua 5.4 cannot give it back --
 * one more cycle per decode. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "codec/bytecode.h"
#include "codec/codec.h"
#include "codec/codec_wire.h"
#include "core/errors.h"

static const char FCACHE_KEY = 0;  /* its address is the registry key */

#define FCACHE_MAX 256  /* functions a receiver keeps */
#define KEPT_ON_STACK 64  /* kept objects held in stack slots, when no more */

/* 64-bit FNV-1a, for cache keys (always checked byte for byte). */
static uint64_t fnv1a(const unsigned char *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}


typedef struct decoder {
  const unsigned char *p, *end, *start;
  const pl_msgobj *objs;
  int nobjs;
  int has_refs;        /* the message has REFs or JOINs: kept objects are kept */
  /* Kept objects go to stack slots from kslots on (their ids, increasing,
   * in kids) when the message has few, else to the table at refs. */
  int refs;
  int kslots;
  uint32_t nkept, nks;
  int mts;             /* stack index of {t1, mt1, t2, mt2, ...}, or 0 */
  int mts_slot;        /* where that table goes when first needed */
  lua_Integer nmts;
  uint32_t next_id;
  int depth;
  uint32_t kids[KEPT_ON_STACK];  /* last: not cleared, written before read */
} decoder;

static int bad(lua_State *L, decoder *d, const char *what) {
  return pl_error_raise(L, PL_TRANSFER, "malformed message: %s (at byte %d of %d)", what,
                        (int)(d->p - d->start), (int)(d->end - d->start));
}

static inline unsigned get1(lua_State *L, decoder *d) {
  if (d->p >= d->end) bad(L, d, "truncated");
  return *d->p++;
}

static uint64_t get_varint_slow(lua_State *L, decoder *d) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    unsigned c = get1(L, d);
    if (shift == 63 && c > 1) break;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
  }
  bad(L, d, "bad varint");
  return 0;
}

static inline uint64_t get_varint(lua_State *L, decoder *d) {
  if (d->p < d->end && *d->p < 0x80) return *d->p++;  /* one byte: most ids and lengths */
  return get_varint_slow(L, d);
}

/* A length that the rest of the message can hold, `each` bytes apiece. */
static size_t get_count(lua_State *L, decoder *d, size_t each) {
  uint64_t n = get_varint(L, d);
  if (n > (uint64_t)(d->end - d->p) / each) bad(L, d, "count larger than the message");
  return (size_t)n;
}

static uint32_t get_u32(lua_State *L, decoder *d) {
  if (d->end - d->p < 4) bad(L, d, "truncated");
  uint32_t v;
  memcpy(&v, d->p, 4);
  d->p += 4;
  return v;
}

/* A string value (T_STR or T_SSTR) for a name: its bytes. */
static const char *get_name(lua_State *L, decoder *d, size_t *len) {
  unsigned tag = get1(L, d);
  size_t n = 0;
  if (tag >= T_SSTR && tag < T_SSTR + 32) n = tag - T_SSTR;
  else if (tag == T_STR) n = get_count(L, d, 1);
  else bad(L, d, "expected a name");
  if ((size_t)(d->end - d->p) < n) bad(L, d, "truncated");
  const char *s = (const char *)d->p;
  d->p += n;
  *len = n;
  return s;
}

/* [-0, +1] a name as a Lua string (a NUL inside is refused: names are
 * used with the C API). */
static const char *push_name(lua_State *L, decoder *d) {
  size_t n;
  const char *s = get_name(L, d, &n);
  if (memchr(s, 0, n) != NULL) bad(L, d, "a name with a zero byte");
  return lua_pushlstring(L, s, n);
}

/* Keep the value at idx, object `id`, for the REFs that name it. */
static void keep_value(lua_State *L, decoder *d, uint32_t id, int idx) {
  if (d->kslots != 0) {
    if (d->nks == d->nkept) bad(L, d, "more objects marked as kept than the message says");
    d->kids[d->nks] = id;
    lua_copy(L, idx, d->kslots + (int)d->nks++);
  } else {
    lua_pushvalue(L, idx);
    lua_rawseti(L, d->refs, (lua_Integer)id + 1);
  }
}

/* The value at idx gets the next id; it is kept for later references if
 * its tag says so. */
static inline void assign_id(lua_State *L, decoder *d, int idx, int kept) {
  uint32_t id = d->next_id++;
  if (d->next_id == 0) bad(L, d, "too many objects");
  if (d->has_refs && kept) keep_value(L, d, id, idx);
}

static void push_ref(lua_State *L, decoder *d, uint64_t id) {
  if (!d->has_refs) bad(L, d, "a reference in a message without references");
  if (id >= d->next_id) bad(L, d, "a reference to an object not yet seen");
  if (d->kslots != 0) {  /* the ids are increasing: a binary search */
    uint32_t lo = 0, hi = d->nks;
    while (lo < hi) {
      uint32_t mid = (lo + hi) / 2;
      if (d->kids[mid] < id) lo = mid + 1;
      else hi = mid;
    }
    if (lo < d->nks && d->kids[lo] == id) {
      lua_pushvalue(L, d->kslots + (int)lo);
      return;
    }
  } else if (lua_rawgeti(L, d->refs, (lua_Integer)id + 1) != LUA_TNIL) {
    return;
  }
  bad(L, d, "a reference to an object not marked as kept, or unfinished");
}

static void dec_value(lua_State *L, decoder *d);

/* A level of nesting uses at most 8 stack slots (a description, which
 * uses more, makes room for itself): room for 4 levels is made every 4. */
static inline void dec_enter(lua_State *L, decoder *d) {
  if (++d->depth > PL_CODEC_MAX_DEPTH) bad(L, d, "nesting too deep");
  if (d->depth % 4 == 1 && !lua_checkstack(L, 4 * 8 + 8)) bad(L, d, "nesting too deep for the stack");
}

/* The common values of a table inline: a float, a small integer, a short
 * string (1); anything else is left to dec_value (0, nothing read). */
static inline int dec_plain(lua_State *L, decoder *d) {
  if (d->p >= d->end) return 0;
  unsigned tag = *d->p;
  if (tag == T_FLOAT && d->end - d->p > 8) {
    double x;
    memcpy(&x, d->p + 1, 8);
    d->p += 9;
    lua_pushnumber(L, (lua_Number)x);
    return 1;
  }
  if (tag >= T_SMALLINT && tag < T_SMALLINT + 64) {
    d->p++;
    lua_pushinteger(L, (lua_Integer)(tag - T_SMALLINT));
    return 1;
  }
  if (tag >= T_SSTR && tag < T_SSTR + 32 && (size_t)(d->end - d->p) > tag - T_SSTR) {
    lua_pushlstring(L, (const char *)d->p + 1, tag - T_SSTR);
    d->p += 1 + (tag - T_SSTR);
    return 1;
  }
  if (tag == T_INT) {
    d->p++;
    uint64_t z = get_varint(L, d);
    lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (uint64_t)-(int64_t)(z & 1)));
    return 1;
  }
  return 0;
}

/* A table's key inline when it is a short string or a REF (1). */
static inline int dec_key(lua_State *L, decoder *d) {
  if (d->p >= d->end) return 0;
  unsigned tag = *d->p;
  if (tag == T_REF) {
    d->p++;
    push_ref(L, d, get_varint(L, d));
    return 1;
  }
  if (tag >= T_SSTR && tag < T_SSTR + 32 && (size_t)(d->end - d->p) > tag - T_SSTR) {
    lua_pushlstring(L, (const char *)d->p + 1, tag - T_SSTR);
    d->p += 1 + (tag - T_SSTR);
    return 1;
  }
  return 0;
}

/* A FLOATS or INTS run (codec_wire.h) at array index i of table t, which
 * has narr array values: its k >= 2 values set; the next index returned. */
static uint32_t dec_run(lua_State *L, decoder *d, int t, uint32_t i, uint32_t narr) {
  unsigned tag = *d->p++;
  uint32_t k = get_u32(L, d);
  size_t left = (size_t)(d->end - d->p);
  if (k < 2) bad(L, d, "a run of fewer than two values");
  if (k > narr - i + 1) bad(L, d, "a run longer than the table's array part");
  if (k > (tag == T_FLOATS ? left / 8 : left)) bad(L, d, "count larger than the message");
  uint32_t last = i + (k - 1);
  if (tag == T_FLOATS) {
    for (; i <= last; i++, d->p += 8) {
      double x;
      memcpy(&x, d->p, 8);
      lua_pushnumber(L, (lua_Number)x);
      lua_rawseti(L, t, (lua_Integer)i);
    }
  } else {
    for (; i <= last; i++) {
      uint64_t z = get_varint(L, d);
      lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (uint64_t)-(int64_t)(z & 1)));
      lua_rawseti(L, t, (lua_Integer)i);
    }
  }
  return i;
}

static void dec_table(lua_State *L, decoder *d, int has_mt, int kept) {
  dec_enter(L, d);
  uint32_t narr = get_u32(L, d), nhash = get_u32(L, d);
  size_t left = (size_t)(d->end - d->p);
  if (narr > left || nhash > left / 2) bad(L, d, "table larger than the message");
  lua_createtable(L, (int)narr, (int)nhash);
  int t = lua_gettop(L);
  assign_id(L, d, t, kept);
  for (uint32_t i = 1; i <= narr;) {
    if (d->p < d->end && (*d->p == T_FLOATS || *d->p == T_INTS)) {
      i = dec_run(L, d, t, i, narr);
      continue;
    }
    if (!dec_plain(L, d)) dec_value(L, d);
    lua_rawseti(L, t, (lua_Integer)i++);
  }
  for (uint32_t i = 0; i < nhash; i++) {
    if (!dec_key(L, d)) dec_value(L, d);
    if (lua_type(L, -1) == LUA_TSTRING) {  /* the common key */
      if (!dec_plain(L, d)) dec_value(L, d);
      lua_rawset(L, t);
      continue;
    }
    if (lua_isnil(L, -1)) bad(L, d, "a nil table key");
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) && isnan(lua_tonumber(L, -1)))
      bad(L, d, "a NaN table key");
    dec_value(L, d);
    lua_rawset(L, t);
  }
  if (has_mt) {
    /* Set once the whole message is decoded: a message that fails half
     * way leaves no table with a finalizer behind. */
    dec_value(L, d);
    if (!lua_istable(L, -1)) bad(L, d, "a metatable that is not a table");
    if (d->mts == 0) {
      lua_newtable(L);
      lua_replace(L, d->mts_slot);
      d->mts = d->mts_slot;
    }
    lua_pushvalue(L, t);
    lua_rawseti(L, d->mts, ++d->nmts);
    lua_rawseti(L, d->mts, ++d->nmts);
  }
  d->depth--;
}

typedef struct reader {
  const char *p;
  size_t n;
} reader;

static const char *read_once(lua_State *L, void *ud, size_t *size) {
  reader *r = ud;
  (void)L;
  *size = r->n;
  r->n = 0;
  return *size > 0 ? r->p : NULL;
}

/* [-0, +1] the receiver's cache of upvalue-free functions. */
static int push_fcache(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &FCACHE_KEY) == LUA_TTABLE) return lua_gettop(L);
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &FCACHE_KEY);
  return lua_gettop(L);
}

/* [-0, +(0|1)] the cached function for key whose bytecode and upvalue
 * records are (a, an) and (b, bn): 1 and the function pushed, or 0. */
static int fcache_get(lua_State *L, lua_Integer key, const unsigned char *a, size_t an,
                      const unsigned char *b, size_t bn) {
  int c = push_fcache(L);
  if (lua_rawgeti(L, c, key) == LUA_TFUNCTION) {
    lua_pushvalue(L, -1);
    lua_rawget(L, c);  /* its bytes */
    size_t cn;
    const char *cb = lua_tolstring(L, -1, &cn);
    if (cb != NULL && cn == an + bn && memcmp(cb, a, an) == 0 && memcmp(cb + an, b, bn) == 0) {
      lua_pop(L, 1);
      lua_remove(L, c);
      return 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  return 0;
}

static void fcache_put(lua_State *L, lua_Integer key, int f, const unsigned char *a, size_t an,
                       const unsigned char *b, size_t bn) {
  int c = push_fcache(L);
  lua_pushliteral(L, "n");
  lua_Integer count = lua_rawget(L, c) == LUA_TNUMBER ? lua_tointeger(L, -1) : 0;
  lua_pop(L, 1);
  if (count >= FCACHE_MAX) {  /* start afresh rather than track use */
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &FCACHE_KEY);
    c = push_fcache(L);
    count = 0;
  }
  lua_pushvalue(L, f);
  lua_rawseti(L, c, key);
  luaL_Buffer buf;
  lua_pushvalue(L, f);
  luaL_buffinit(L, &buf);
  luaL_addlstring(&buf, (const char *)a, an);
  luaL_addlstring(&buf, (const char *)b, bn);
  luaL_pushresult(&buf);
  lua_rawset(L, c);
  lua_pushliteral(L, "n");
  lua_pushinteger(L, count + 1);
  lua_rawset(L, c);
  lua_pop(L, 1);
}

/* Scanning without decoding: the end of a record, or NULL when it is not
 * one of the kinds scanned (or does not fit in the message). */
static const unsigned char *scan_varint(const unsigned char *p, const unsigned char *end, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64 && p < end; shift += 7) {
    unsigned c = *p++;
    x |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *v = x;
      return p;
    }
  }
  return NULL;
}

static const unsigned char *scan_string(const unsigned char *p, const unsigned char *end) {
  if (p == NULL || p >= end) return NULL;
  unsigned tag = *p++;
  uint64_t n;
  if (tag >= T_SSTR && tag < T_SSTR + 32) n = tag - T_SSTR;
  else if (tag != T_STR || (p = scan_varint(p, end, &n)) == NULL) return NULL;
  return n <= (uint64_t)(end - p) ? p + n : NULL;
}

/* A constant: nil, a boolean, a number, a string, the globals, a name. */
static const unsigned char *scan_constant(const unsigned char *p, const unsigned char *end) {
  if (p >= end) return NULL;
  unsigned tag = *p;
  uint64_t v;
  if (tag >= T_SMALLINT && tag < T_SMALLINT + 64) return p + 1;
  if ((tag >= T_SSTR && tag < T_SSTR + 32) || tag == T_STR) return scan_string(p, end);
  switch (tag) {
  case T_NIL: case T_FALSE: case T_TRUE: case T_GLOBALS: return p + 1;
  case T_INT: return scan_varint(p + 1, end, &v);
  case T_FLOAT: return end - p > 8 ? p + 9 : NULL;
  case T_NAMED:
    p = scan_string(p + 1, end);
    if (p == NULL || p >= end || *p > 1) return NULL;
    if (*p++ == 1 && (p = scan_string(p, end)) == NULL) return NULL;
    return p < end ? p + 1 : NULL;
  default: return NULL;
  }
}

/* The end of n upvalue records that are all constants, or NULL. */
static const unsigned char *scan_constants(const unsigned char *p, const unsigned char *end, unsigned n) {
  for (unsigned i = 0; i < n && p != NULL; i++) p = scan_constant(p, end);
  return p;
}

/* A function.  One whose upvalues are all constants (nil, booleans,
 * numbers, strings, the globals, names) and that never assigns an upvalue
 * is the same for every message that carries the same bytes: it is loaded
 * once and then served from the receiver's cache, keyed by its MAC and
 * its upvalue records and checked byte for byte. */
static void dec_function(lua_State *L, decoder *d, int kept) {
  dec_enter(L, d);
  if (d->end - d->p < 8) bad(L, d, "truncated");
  uint64_t mac;
  memcpy(&mac, d->p, 8);
  d->p += 8;
  size_t n = get_count(L, d, 1);
  const unsigned char *code = d->p;
  d->p += n;
  unsigned nups = get1(L, d);
  const unsigned char *ups = d->p, *upend = scan_constants(ups, d->end, nups);
  lua_Integer key = 0;
  if (upend != NULL) {
    key = (lua_Integer)(mac ^ (fnv1a(ups, (size_t)(upend - ups)) * 0x9E3779B97F4A7C15ull));
    if (fcache_get(L, key, code, n, ups, (size_t)(upend - ups))) {
      d->p = upend;
      assign_id(L, d, lua_gettop(L), kept);  /* constants take no ids: nothing else to count */
      d->depth--;
      return;
    }
  }
  /* Not `!=`: compared that way, a fuzzer learns the expected value. */
  if ((pl_codec_mac(code, n) ^ mac) != 0) bad(L, d, "bytecode not signed by this process");
  reader r = {(const char *)code, n};
  if (n == 0 || lua_load(L, read_once, &r, "=(message)", "b") != LUA_OK) {
    const char *why = n == 0 ? "empty" : lua_tostring(L, -1);
    bad(L, d, lua_pushfstring(L, "bad bytecode (%s)", why != NULL ? why : "?"));
  }
  if (!pl_bytecode_upvalues_match(code, n, nups)) bad(L, d, "upvalue count does not match the bytecode");
  int f = lua_gettop(L);
  assign_id(L, d, f, kept);
  for (unsigned i = 1; i <= nups; i++) {
    if (d->p < d->end && *d->p == T_JOIN) {
      d->p++;
      uint64_t id = get_varint(L, d);
      unsigned k = get1(L, d);
      push_ref(L, d, id);
      if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1))
        bad(L, d, "a shared upvalue of something that is not a Lua function");
      if (lua_getupvalue(L, -1, (int)k) == NULL) bad(L, d, "a shared upvalue that does not exist");
      lua_pop(L, 1);
      lua_upvaluejoin(L, f, (int)i, -1, (int)k);
      lua_pop(L, 1);
    } else {
      dec_value(L, d);
      lua_setupvalue(L, f, (int)i);
    }
  }
  if (upend != NULL && (nups == 0 || pl_bytecode_keeps_upvalues(code, n)))
    fcache_put(L, key, f, code, n, ups, (size_t)(upend - ups));
  d->depth--;
}

/* [-0, +1] package.loaded[name], required if absent. */
static void push_module(lua_State *L, decoder *d, int name) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, name);
  if (lua_rawget(L, -2) != LUA_TNIL) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 2);
  if (lua_getglobal(L, "require") != LUA_TFUNCTION)
    bad(L, d, lua_pushfstring(L, "module '%s' is not loaded in the receiving state (and there is no require)",
                              lua_tostring(L, name)));
  lua_pushvalue(L, name);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    const char *why = lua_tostring(L, -1);
    pl_error_raise(L, PL_TRANSFER, "cannot load module '%s' in the receiving state: %s",
                   lua_tostring(L, name), why != NULL ? why : "(error object is not a string)");
  }
}

static void dec_named(lua_State *L, decoder *d) {
  int top = lua_gettop(L);
  push_name(L, d);
  int has_field = (int)get1(L, d);
  if (has_field > 1) bad(L, d, "bad name record");
  if (has_field) push_name(L, d);
  unsigned kind = get1(L, d);
  if (kind != NAMED_TABLE && kind != NAMED_FUNCTION && kind != NAMED_LIGHT) bad(L, d, "bad name record");
  push_module(L, d, top + 1);
  if (has_field) {
    if (!lua_istable(L, -1)) bad(L, d, lua_pushfstring(L, "module '%s' is not a table in the receiving state",
                                                        lua_tostring(L, top + 1)));
    lua_pushvalue(L, top + 2);
    lua_rawget(L, -2);
  }
  static const int want[] = {[NAMED_TABLE] = LUA_TTABLE, [NAMED_FUNCTION] = LUA_TFUNCTION,
                             [NAMED_LIGHT] = LUA_TLIGHTUSERDATA};
  static const char *const what[] = {[NAMED_TABLE] = "table", [NAMED_FUNCTION] = "function",
                                     [NAMED_LIGHT] = "light userdata"};
  if (lua_type(L, -1) != want[kind])
    pl_error_raise(L, PL_TRANSFER, "'%s%s%s' is not a %s in the receiving state", lua_tostring(L, top + 1),
                   has_field ? "." : "", has_field ? lua_tostring(L, top + 2) : "", what[kind]);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
}

/* The registry metatable `name`, made by luaL_newmetatable (1), or 0. */
static int push_regmt(lua_State *L, int name) {
  lua_pushvalue(L, name);
  if (lua_rawget(L, LUA_REGISTRYINDEX) == LUA_TTABLE) {
    lua_pushliteral(L, "__name");
    lua_rawget(L, -2);
    int ok = lua_rawequal(L, -1, name);
    lua_pop(L, 1);
    if (ok) return 1;
  }
  lua_pop(L, 1);
  return 0;
}

static void dec_regmt(lua_State *L, decoder *d) {
  int name = lua_gettop(L) + 1;
  push_name(L, d);
  if (!push_regmt(L, name)) {
    pl_error_metatable(L);  /* the runtime's own are made on first use */
    lua_pop(L, 1);
    if (!push_regmt(L, name))
      pl_error_raise(L, PL_TRANSFER, "metatable '%s' is not known in the receiving state",
                     lua_tostring(L, name));
  }
  lua_remove(L, name);
}

static void dec_desc(lua_State *L, decoder *d, int kept) {
  if (!lua_checkstack(L, PL_WIRE_MAX_DESC + 8)) bad(L, d, "nesting too deep for the stack");
  int top = lua_gettop(L);
  lua_pushnil(L);  /* the box's slot in the id order: made after its description */
  uint32_t id = d->next_id++;
  push_name(L, d);  /* top + 2: tname */
  push_name(L, d);  /* top + 3: module */
  unsigned n = get1(L, d);
  if (n > PL_WIRE_MAX_DESC) bad(L, d, "a description with too many values");
  for (unsigned i = 0; i < n; i++) {
    unsigned tag = d->p < d->end ? *d->p : 0;
    if (!(tag <= T_STR || (tag >= T_SSTR && tag < T_SMALLINT + 64))) bad(L, d, "a description that is not plain data");
    dec_value(L, d);
  }
  const pl_transfer_type *t = pl_codec_find_type(L, lua_tostring(L, top + 2));
  if (t == NULL) {
    push_module(L, d, top + 3);
    lua_pop(L, 1);
    t = pl_codec_find_type(L, lua_tostring(L, top + 2));
  }
  if (t == NULL || t->rebuild == NULL)
    pl_error_raise(L, PL_TRANSFER, "type '%s' is not known in the receiving state", lua_tostring(L, top + 2));
  t->rebuild(L, (int)n);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  if (d->has_refs && kept) keep_value(L, d, id, top + 1);
}

static void dec_value(lua_State *L, decoder *d) {
  unsigned tag = get1(L, d);
  int kept = 0;
  if (tag & T_KEEP) {  /* only on the tag of an object that gets an id */
    tag &= ~(unsigned)T_KEEP;
    if (tag != T_TABLE && tag != T_TABLE_MT && tag != T_FUNC && tag != T_MSTR && tag != T_OBJ && tag != T_DESC)
      bad(L, d, "unknown tag");
    kept = 1;
  }
  if (tag >= T_SMALLINT && tag < T_SMALLINT + 64) {
    lua_pushinteger(L, (lua_Integer)(tag - T_SMALLINT));
    return;
  }
  if (tag >= T_SSTR && tag < T_SSTR + 32) {
    size_t n = tag - T_SSTR;
    if ((size_t)(d->end - d->p) < n) bad(L, d, "truncated");
    lua_pushlstring(L, (const char *)d->p, n);
    d->p += n;
    return;
  }
  switch (tag) {
  case T_NIL: lua_pushnil(L); return;
  case T_FALSE: lua_pushboolean(L, 0); return;
  case T_TRUE: lua_pushboolean(L, 1); return;
  case T_INT: {
    uint64_t z = get_varint(L, d);
    lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (uint64_t)-(int64_t)(z & 1)));
    return;
  }
  case T_FLOAT: {
    if (d->end - d->p < 8) bad(L, d, "truncated");
    double x;
    memcpy(&x, d->p, 8);
    d->p += 8;
    lua_pushnumber(L, (lua_Number)x);
    return;
  }
  case T_STR: {
    size_t n = get_count(L, d, 1);
    lua_pushlstring(L, (const char *)d->p, n);
    d->p += n;
    return;
  }
  case T_MSTR: {  /* a string that later records refer to */
    size_t n = get_count(L, d, 1);
    lua_pushlstring(L, (const char *)d->p, n);
    d->p += n;
    assign_id(L, d, lua_gettop(L), kept);
    return;
  }
  case T_TABLE: dec_table(L, d, 0, kept); return;
  case T_TABLE_MT: dec_table(L, d, 1, kept); return;
  case T_REF: push_ref(L, d, get_varint(L, d)); return;
  case T_FUNC: dec_function(L, d, kept); return;
  case T_GLOBALS: lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); return;
  case T_NAMED: dec_named(L, d); return;
  case T_REGMT: dec_regmt(L, d); return;
  case T_OBJ: {
    uint64_t i = get_varint(L, d);
    if (i >= (uint64_t)d->nobjs) bad(L, d, "an object that the message does not hold");
    const pl_msgobj *o = &d->objs[i];
    o->type->push(L, o->type, o->obj);
    assign_id(L, d, lua_gettop(L), kept);
    return;
  }
  case T_DESC: dec_desc(L, d, kept); return;
  default: bad(L, d, "unknown tag"); return;
  }
}

static int decode(lua_State *L, const unsigned char *p, size_t len, const pl_msgobj *objs, int nobjs) {
  decoder d;
  memset(&d, 0, offsetof(decoder, kids));
  d.start = d.p = p;
  d.end = p + len;
  d.objs = objs;
  d.nobjs = nobjs;
  if (len < 3 || p[0] != PL_WIRE_MAGIC) bad(L, &d, "not a parlua message");
  if (p[1] != PL_WIRE_VERSION) bad(L, &d, "unknown version");
  unsigned flags = p[2];
  if (flags & ~(unsigned)PL_WIRE_F_REFS) bad(L, &d, "unknown flags");
  d.p += 3;
  uint32_t nkept = get_u32(L, &d);
  if (nkept > (size_t)(d.end - d.p) / 2) bad(L, &d, "count larger than the message");  /* 2 bytes at least each */
  size_t n = get_count(L, &d, 1);
  if (n > 1000000 || !lua_checkstack(L, (int)n + 10)) bad(L, &d, "too many values");
  int base = lua_gettop(L);
  lua_pushnil(L);  /* base + 1: pending metatables, when any */
  d.mts_slot = base + 1;
  if (flags & PL_WIRE_F_REFS) {
    d.has_refs = 1;
    d.nkept = nkept;
    if (nkept <= KEPT_ON_STACK) {
      if (!lua_checkstack(L, (int)(nkept + n) + 10)) bad(L, &d, "too many values");
      d.kslots = lua_gettop(L) + 1;
      lua_settop(L, lua_gettop(L) + (int)nkept);
    } else {
      lua_createtable(L, 0, (int)(nkept < INT32_MAX ? nkept : INT32_MAX));
      d.refs = lua_gettop(L);
    }
  }
  int first = lua_gettop(L) + 1;
  for (size_t i = 0; i < n; i++) dec_value(L, &d);
  if (d.p != d.end) bad(L, &d, "trailing bytes");
  for (lua_Integer i = 1; i < d.nmts; i += 2) {
    lua_rawgeti(L, d.mts, i);
    lua_rawgeti(L, d.mts, i + 1);
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
  }
  lua_rotate(L, base + 1, -(first - base - 1));  /* the helpers above the values */
  lua_pop(L, first - base - 1);
  return (int)n;
}

int pl_codec_decode(lua_State *L, const pl_msg *m) {
  return decode(L, m->data, m->len, m->objs, m->nobjs);
}

int pl_codec_decode_bytes(lua_State *L, const void *data, size_t len) {
  return decode(L, data, len, NULL, 0);
}
