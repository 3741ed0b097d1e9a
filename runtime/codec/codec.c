/* The value codec's encoder, messages and transfer types (see codec.h for
 * what crosses and the wire format; runtime/decode.c decodes).
 *
 * Encoding runs in the sending state under its lock.  Its working memory --
 * the byte buffer, the object table, the map from object address to id --
 * lives in an encoder userdata kept in the registry and reused, so a small
 * message costs one allocation (its own).  Addresses are stable for the
 * length of one encode: every object met is reachable from the values
 * being encoded, and Lua's collector never moves objects.  The map is
 * cleared in O(1) by bumping a generation number; the few string keys of
 * records are looked up in a small cache in front of it.  Each id's tag
 * offset is remembered, so that the first REF to an object can go back and
 * mark it kept (codec_wire.h).
 *
 * A nested encode (a finalizer that sends something, a queue converting
 * its items while it is being sent) finds the registry's encoder busy and
 * puts a new one, sharing the caches, in its place; so does the encode
 * after one that died of a memory error (which never gave its encoder
 * back).  Objects such an encode had taken stay referenced until its
 * encoder is collected.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"
#include "codec/siphash.h"
#include "codec/codec.h"
#include "codec/codec_wire.h"
#include "core/bigmem.h"
#include "core/errors.h"

/* Registry keys (their addresses). */
static const char ENCODER_KEY = 0;
static const char TYPES_KEY = 0;

#define BIG_MESSAGE (64 * 1024)  /* hand the buffer over instead of copying */
#define NAMES_MAX_FIELDS 4096    /* fields of one module put in the name map */
#define KEY_CACHE 64             /* string keys looked up before the map */

/* ---- the encoder ----------------------------------------------------- */

typedef struct pslot {  /* 16 bytes: a large map stays cache-friendly */
  const void *key;
  uint32_t val;          /* an id; for an upvalue: closure id << 8 | its index */
  uint32_t gen;
} pslot;

enum { SEG_ROOT, SEG_INDEX, SEG_FIELD, SEG_KEY, SEG_UPVALUE, SEG_METATABLE };

typedef struct seg {
  int kind;
  int keyidx;          /* SEG_FIELD: the key's stack index */
  lua_Integer index;   /* SEG_INDEX, SEG_ROOT */
  const char *name;    /* SEG_UPVALUE */
} seg;

typedef struct encoder {
  unsigned char *buf;
  size_t len, cap;
  pl_msgobj *objs;
  int nobjs, capobjs;
  pslot *map;
  size_t mapcap, mapused;
  uint32_t gen;        /* of this encode: slots of other encodes are free */
  pslot keys[KEY_CACHE];  /* string keys met lately, in front of the map */
  uint32_t next_id;
  size_t *at;          /* by id: the offset of the object's tag in buf */
  size_t capat;
  uint32_t nkept;      /* objects marked T_KEEP */
  int has_refs;
  int depth;
  /* Set when the message goes to another process: which shared types may. */
  int (*crosses)(const pl_transfer_type *t);
  const char *dest;    /* ... and how errors name where it goes */
  int busy;            /* an encode is using it */
  const void *globals; /* the address of the globals table (in S_GLOBALS) */
  int base;            /* stack index of this userdata during an encode */
  int names_open;      /* the name map is in S_NAMES for this encode */
  int names_checked;   /* ... and was checked against package.loaded */
  const struct nameset *nameset;  /* the map's keys (in UV_NAMESET), or NULL */
  unsigned char *dump; /* scratch for lua_dump */
  size_t dumplen, dumpcap;
  const char *head, *each;
  int nseg;
  seg path[PL_CODEC_MAX_DEPTH + 8];
} encoder;

static int fail(encoder *e, lua_State *L, const char *what);

/* Stack slots above e->base during an encode. */
enum { S_GLOBALS = 1, S_NAMES, S_SNAP, S_LOADED, S_DUMPS, S_TYPES, NSLOTS = S_TYPES };
/* User values of the encoder userdata: the caches. */
enum { UV_DUMPS = 1, UV_NAMES, UV_NAMESET, UV_LOADED, NUV = UV_LOADED };

/* The encoder's buffer, which a big message takes over: malloc's while
 * small, a big block (core/bigmem.h: no page-fault storm for a 64 MiB
 * string) from PL_BIGMEM_MIN bytes on.  NULL when out of memory (p kept). */
static void *buf_resize(void *p, size_t cap, size_t ncap, size_t len) {
  if (ncap < PL_BIGMEM_MIN) return realloc(p, ncap);
  if (cap >= PL_BIGMEM_MIN) return pl_bigmem_realloc(p, cap, ncap);
  void *np = pl_bigmem_alloc(ncap);
  if (np != NULL && len > 0) memcpy(np, p, len);
  if (np != NULL) free(p);
  return np;
}

static void buf_free(void *p, size_t cap) {
  if (cap >= PL_BIGMEM_MIN) pl_bigmem_free(p, cap);
  else free(p);
}

static void release_objs(encoder *e) {
  for (int i = 0; i < e->nobjs; i++) e->objs[i].type->release(e->objs[i].obj);
  e->nobjs = 0;
}

static int encoder_gc(lua_State *L) {
  encoder *e = lua_touserdata(L, 1);
  release_objs(e);
  buf_free(e->buf, e->cap);
  free(e->objs);
  free(e->map);
  free(e->dump);
  free(e->at);
  e->buf = NULL;
  e->objs = NULL;
  e->map = NULL;
  e->dump = NULL;
  e->at = NULL;
  e->cap = e->mapcap = e->dumpcap = e->capat = 0;
  e->capobjs = 0;
  return 0;
}

/* [-0, +1] a new encoder userdata with its own (empty) caches. */
static encoder *encoder_new(lua_State *L) {
  encoder *e = lua_newuserdatauv(L, sizeof *e, NUV);
  memset(e, 0, sizeof *e);
  if (luaL_newmetatable(L, "parlua.codec.encoder")) {
    lua_pushcfunction(L, encoder_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_newtable(L);                        /* function -> hash .. bytecode */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setiuservalue(L, -2, UV_DUMPS);
  return e;
}

static void reset(encoder *e) {
  e->len = 0;
  release_objs(e);
  if (++e->gen == 0) {  /* wrapped: old stamps could match again */
    if (e->map != NULL) memset(e->map, 0, e->mapcap * sizeof *e->map);
    memset(e->keys, 0, sizeof e->keys);
    e->gen = 1;
  }
  e->mapused = 0;
  e->next_id = 0;
  e->nkept = 0;
  e->has_refs = 0;
  e->depth = 0;
  e->nseg = 0;
  e->names_open = 0;
  e->names_checked = 0;
}

/* [-0, +(1+NSLOTS)] take an encoder for one encode.  The registry's is
 * busy when this encode is nested in another (or when an encode died of a
 * memory error and never gave it back): then a new one, sharing the
 * caches, takes its place there; a running encode keeps its own on its
 * stack. */
static encoder *encoder_open(lua_State *L) {
  luaL_checkstack(L, NSLOTS + 8, "encoding a value");
  int base = lua_gettop(L) + 1;
  encoder *e = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &ENCODER_KEY) == LUA_TUSERDATA) {
    e = lua_touserdata(L, -1);
    if (e->busy) {
      encoder *old = e;
      e = encoder_new(L);
      for (int uv = 1; uv <= NUV; uv++) {
        lua_getiuservalue(L, -2, uv);
        lua_setiuservalue(L, -2, uv);
      }
      e->nameset = old->nameset;
      lua_remove(L, -2);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &ENCODER_KEY);
    }
  } else {
    lua_pop(L, 1);
    e = encoder_new(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ENCODER_KEY);
  }
  reset(e);
  e->busy = 1;
  e->base = base;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);  /* S_GLOBALS */
  e->globals = lua_topointer(L, -1);
  lua_pushnil(L);                                      /* S_NAMES, when needed */
  lua_pushnil(L);                                      /* S_SNAP, with S_NAMES */
  lua_pushnil(L);                                      /* S_LOADED, with S_NAMES */
  lua_pushnil(L);                                      /* S_DUMPS, when needed */
  lua_pushnil(L);                                      /* S_TYPES, when needed */
  return e;
}

static void encoder_close(encoder *e, lua_State *L) {
  e->busy = 0;
  lua_settop(L, e->base - 1);
}

/* ---- bytes out ------------------------------------------------------- */

static void grow(encoder *e, lua_State *L, size_t need) {
  size_t ncap = e->cap != 0 ? e->cap : 256;
  if (need > SIZE_MAX / 2 - e->len) luaL_error(L, "not enough memory");
  if (ncap - e->len < need) ncap *= 2;
  /* A big string alone gets what it needs, not twice that: the block is
   * then of the size the receiver's string takes, and reused for it. */
  if (ncap - e->len < need) ncap = e->len + need;
  unsigned char *nb = buf_resize(e->buf, e->cap, ncap, e->len);
  if (nb == NULL) luaL_error(L, "not enough memory");
  e->buf = nb;
  e->cap = ncap;
}

static inline void reserve(encoder *e, lua_State *L, size_t n) {
  if (e->cap - e->len < n) grow(e, L, n);
}

static inline void put1(encoder *e, lua_State *L, unsigned c) {
  reserve(e, L, 1);
  e->buf[e->len++] = (unsigned char)c;
}

static inline void put_varint_nocheck(encoder *e, uint64_t v) {
  while (v >= 0x80) {
    e->buf[e->len++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  e->buf[e->len++] = (unsigned char)v;
}

static inline void put_varint(encoder *e, lua_State *L, uint64_t v) {
  reserve(e, L, 10);
  put_varint_nocheck(e, v);
}

static inline void put_bytes(encoder *e, lua_State *L, const void *p, size_t n) {
  reserve(e, L, n);
  memcpy(e->buf + e->len, p, n);
  e->len += n;
}

static inline void put_u32_at(encoder *e, size_t at, uint32_t v) { memcpy(e->buf + at, &v, 4); }

static inline void put_string(encoder *e, lua_State *L, const char *s, size_t n) {
  reserve(e, L, n + 11);
  if (n < 32) {
    e->buf[e->len++] = (unsigned char)(T_SSTR + n);
  } else {
    e->buf[e->len++] = T_STR;
    put_varint_nocheck(e, n);
  }
  memcpy(e->buf + e->len, s, n);
  e->len += n;
}

static inline uint64_t zigzag(lua_Integer i) {
  uint64_t u = (uint64_t)i;
  return (u << 1) ^ (uint64_t)-(int64_t)(u >> 63);
}

static inline void put_integer(encoder *e, lua_State *L, lua_Integer i) {
  reserve(e, L, 11);
  if (i >= 0 && i < 64) {
    e->buf[e->len++] = (unsigned char)(T_SMALLINT + i);
  } else {
    e->buf[e->len++] = T_INT;
    put_varint_nocheck(e, zigzag(i));
  }
}

static inline void put_float(encoder *e, lua_State *L, lua_Number d) {
  double x = (double)d;
  reserve(e, L, 9);
  e->buf[e->len++] = T_FLOAT;
  memcpy(e->buf + e->len, &x, 8);
  e->len += 8;
}

/* ---- the address map ------------------------------------------------- */

static inline size_t slot_of(const void *key, size_t mask) {
  uint64_t h = (uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ull;
  return (size_t)(h >> 32) & mask;
}

/* The map's slot for an address.  Objects made one after the other (a
 * table, its contents, the next table) sit at nearby addresses and are
 * usually met in that order, so the addresses of one 4 KiB page go to
 * neighbouring slots -- a walk over a large structure reads each cache
 * line of the map a few times instead of missing the cache once per
 * object -- while pages are spread over the map by a multiplicative hash.
 * (Allocations are 16-byte aligned on the platforms parlua runs on; with
 * less, neighbours merely share a slot's probe sequence.) */
static inline size_t map_slot(const void *key, size_t mask) {
  uintptr_t a = (uintptr_t)key;
  uint64_t page = (uint64_t)(a >> 12) * 0x9E3779B97F4A7C15ull;
  return ((size_t)(page >> 32) + ((a >> 4) & 0xff)) & mask;
}

static void map_grow(encoder *e, lua_State *L) {
  size_t ncap = e->mapcap != 0 ? e->mapcap * 2 : 64;
  pslot *nm = calloc(ncap, sizeof *nm);
  if (nm == NULL) luaL_error(L, "not enough memory");
  for (size_t i = 0; i < e->mapcap; i++) {
    pslot *s = &e->map[i];
    if (s->gen != e->gen) continue;
    size_t j = map_slot(s->key, ncap - 1);
    while (nm[j].gen == e->gen) j = (j + 1) & (ncap - 1);
    nm[j] = *s;
  }
  free(e->map);
  e->map = nm;
  e->mapcap = ncap;
}

/* The slot of key: *found says whether it held key already; if not it is
 * now key's, with val to be filled in. */
static pslot *map_get(encoder *e, lua_State *L, const void *key, int *found) {
  if ((e->mapused + 1) * 2 > e->mapcap) map_grow(e, L);
  size_t mask = e->mapcap - 1, i = map_slot(key, mask);
  for (;;) {
    pslot *s = &e->map[i];
    if (s->gen != e->gen) {
      s->gen = e->gen;
      s->key = key;
      e->mapused++;
      *found = 0;
      return s;
    }
    if (s->key == key) {
      *found = 1;
      return s;
    }
    i = (i + 1) & mask;
  }
}

/* The next id, for an object whose tag is the next byte written. */
static uint32_t new_id(encoder *e, lua_State *L) {
  if (e->next_id == UINT32_MAX) fail(e, L, "too many objects in one message");
  if (e->next_id == e->capat) {
    size_t ncap = e->capat != 0 ? e->capat * 2 : 64;
    size_t *na = realloc(e->at, ncap * sizeof *na);
    if (na == NULL) luaL_error(L, "not enough memory");
    e->at = na;
    e->capat = ncap;
  }
  e->at[e->next_id] = e->len;
  return e->next_id++;
}

/* Object `id` is referred to again: mark its tag, so that the decoder
 * keeps it (and only such objects) where a REF can find it. */
static inline void keep(encoder *e, uint32_t id) {
  unsigned char *tag = &e->buf[e->at[id]];
  if (!(*tag & T_KEEP)) {
    *tag |= T_KEEP;
    e->nkept++;
  }
  e->has_refs = 1;
}

static void put_ref(encoder *e, lua_State *L, uint32_t id) {
  reserve(e, L, 11);
  e->buf[e->len++] = T_REF;
  put_varint_nocheck(e, id);
  keep(e, id);
}

/* A REF if the object at address p was met before (1); else it gets the
 * next id. */
static int seen_at(encoder *e, lua_State *L, const void *p) {
  int found;
  pslot *s = map_get(e, L, p, &found);
  if (found) {
    put_ref(e, L, s->val);
    return 1;
  }
  s->val = new_id(e, L);
  return 0;
}

static int seen(encoder *e, lua_State *L, int idx) { return seen_at(e, L, lua_topointer(L, idx)); }

/* ---- errors with a path ---------------------------------------------- */

static void push_seg(encoder *e, int kind, int keyidx, lua_Integer index, const char *name) {
  seg *s = &e->path[e->nseg++];
  s->kind = kind;
  s->keyidx = keyidx;
  s->index = index;
  s->name = name;
}

/* [-0, +1] one step of the path, as a user reads it. */
static void push_step(encoder *e, lua_State *L, const seg *s) {
  switch (s->kind) {
  case SEG_ROOT:
    if (s->index == 0) lua_pushstring(L, e->head);
    else lua_pushfstring(L, e->each, (int)s->index);
    return;
  case SEG_INDEX: lua_pushfstring(L, "[%I]", s->index); return;
  case SEG_KEY: lua_pushliteral(L, "key"); return;
  case SEG_UPVALUE: lua_pushfstring(L, "upvalue \"%s\" of function", s->name); return;
  case SEG_METATABLE: lua_pushliteral(L, "metatable"); return;
  default: break;
  }
  int k = s->keyidx;
  switch (lua_type(L, k)) {
  case LUA_TSTRING: {
    size_t n;
    const char *str = lua_tolstring(L, k, &n);
    if (n > 40) lua_pushfstring(L, "field \"%s...\"", lua_pushlstring(L, str, 37));
    else lua_pushfstring(L, "field \"%s\"", str);
    if (n > 40) lua_remove(L, -2);
    return;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, k)) lua_pushfstring(L, "[%I]", lua_tointeger(L, k));
    else lua_pushfstring(L, "[%f]", lua_tonumber(L, k));
    return;
  case LUA_TBOOLEAN: lua_pushstring(L, lua_toboolean(L, k) ? "[true]" : "[false]"); return;
  default: lua_pushfstring(L, "[%s key]", luaL_typename(L, k)); return;
  }
}

/* Raise the Transfer error "<path>: <what>", having let go of everything
 * the encode took. */
static int fail(encoder *e, lua_State *L, const char *what) {
  release_objs(e);
  e->len = 0;
  e->busy = 0;
  luaL_checkstack(L, e->nseg * 2 + 4, "encoding a value");
  int top = lua_gettop(L);
  for (int i = 0; i < e->nseg; i++) {
    push_step(e, L, &e->path[i]);
    lua_pushliteral(L, ": ");
  }
  lua_pushstring(L, what);
  lua_concat(L, lua_gettop(L) - top);
  pl_error_push(L, PL_TRANSFER, "%s", lua_tostring(L, -1));
  lua_replace(L, e->base);  /* e is not used again: it may go */
  lua_settop(L, e->base);
  return pl_error_throw(L);
}

/* ---- the name map ---------------------------------------------------- */

static long count_entries(lua_State *L, int t) {
  long n = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    n++;
  }
  return n;
}

/* Add a string value (as put_string writes it) to b. */
static void add_string_value(luaL_Buffer *b, const char *s, size_t n) {
  if (n < 32) {
    luaL_addchar(b, (char)(T_SSTR + n));
  } else {
    char tmp[11];
    size_t k = 0;
    uint64_t v = n;
    luaL_addchar(b, T_STR);
    while (v >= 0x80) {
      tmp[k++] = (char)(v | 0x80);
      v >>= 7;
    }
    tmp[k++] = (char)v;
    luaL_addlstring(b, tmp, k);
  }
  luaL_addlstring(b, s, n);
}

/* [-0, +1] the NAMED record for module `mod` (field `field` or NULL). */
static void push_named(lua_State *L, const char *mod, size_t modlen, const char *field,
                       size_t fieldlen, int kind) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, T_NAMED);
  add_string_value(&b, mod, modlen);
  luaL_addchar(&b, field != NULL);
  if (field != NULL) add_string_value(&b, field, fieldlen);
  luaL_addchar(&b, (char)kind);
  luaL_pushresult(&b);
}

/* A module field that goes by name: a C function, a light userdata (a
 * module's sentinel, such as cjson.null) or, outside _G, a table. */
static int field_kind(lua_State *L, int v, int is_g, int globals) {
  if (lua_iscfunction(L, v)) return NAMED_FUNCTION;
  if (lua_type(L, v) == LUA_TLIGHTUSERDATA) return NAMED_LIGHT;
  if (!is_g && lua_type(L, v) == LUA_TTABLE && !lua_rawequal(L, v, globals)) return NAMED_TABLE;
  return 0;
}

/* [-0, +1] the reverse map of package.loaded: module -> NAMED record, and
 * each field of a module that field_kind names -> its record.
 * Modules first, so `string` is "string" and not some module's field. */
static void build_names(lua_State *L, int globals, int loaded) {
  luaL_checkstack(L, 12, "encoding a value");
  lua_newtable(L);
  int map = lua_gettop(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, map);
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    int t = lua_type(L, -1);
    if (lua_type(L, -2) == LUA_TSTRING && !lua_rawequal(L, -1, globals) &&
        (t == LUA_TTABLE || lua_iscfunction(L, -1))) {
      size_t n;
      const char *name = lua_tolstring(L, -2, &n);
      lua_pushvalue(L, -1);
      push_named(L, name, n, NULL, 0, t == LUA_TTABLE ? NAMED_TABLE : NAMED_FUNCTION);
      lua_rawset(L, map);
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
      int mod = lua_gettop(L), is_g = lua_rawequal(L, mod, globals), fields = 0;
      size_t n;
      const char *name = lua_tolstring(L, -2, &n);
      lua_pushnil(L);
      while (lua_next(L, mod) && fields++ < NAMES_MAX_FIELDS) {
        int kind = field_kind(L, lua_gettop(L), is_g, globals);
        if (lua_type(L, -2) == LUA_TSTRING && kind != 0) {
          lua_pushvalue(L, -1);
          if (lua_rawget(L, map) == LUA_TNIL) {
            size_t fn;
            const char *field = lua_tolstring(L, -3, &fn);
            lua_pushvalue(L, -2);
            push_named(L, name, n, field, fn, kind);
            lua_rawset(L, map);
          }
          lua_pop(L, 1);
        }
        lua_pop(L, 1);
      }
      if (fields > NAMES_MAX_FIELDS) lua_pop(L, 2);  /* left the loop early */
    }
    lua_pop(L, 1);
  }
}

/* The addresses of the name map's keys, in an open-addressed set: most
 * values met are not named, and this answers "no" without touching the
 * map.  A "yes" is confirmed by the map (an address may have been reused
 * by a new object since the set was made). */
typedef struct nameset {
  size_t mask;
  size_t nkv;
  const void **kv;     /* package.loaded when the map was made: the address of
                        * each key and value, in the order lua_next gave them */
  const void *keys[];
} nameset;

static inline int nameset_has(const nameset *ns, const void *p) {
  for (size_t i = slot_of(p, ns->mask);; i = (i + 1) & ns->mask) {
    if (ns->keys[i] == p) return 1;
    if (ns->keys[i] == NULL) return 0;
  }
}

/* [-0, +0] make the set of the map at index map, and the addresses of
 * package.loaded's `nloaded` entries, as e's UV_NAMESET. */
static void build_nameset(encoder *e, lua_State *L, int map, int loaded, size_t nloaded) {
  size_t n = (size_t)count_entries(L, map), cap = 16;
  while (cap < 2 * n + 2) cap *= 2;
  nameset *ns = lua_newuserdatauv(L, sizeof *ns + (cap + 2 * nloaded) * sizeof(void *), 0);
  ns->mask = cap - 1;
  memset(ns->keys, 0, cap * sizeof(void *));
  ns->kv = ns->keys + cap;
  ns->nkv = 0;
  lua_pushnil(L);
  while (ns->nkv < nloaded && lua_next(L, loaded)) {
    ns->kv[2 * ns->nkv] = lua_topointer(L, -2);
    ns->kv[2 * ns->nkv + 1] = lua_topointer(L, -1);
    ns->nkv++;
    lua_pop(L, 1);
  }
  if (ns->nkv == nloaded) lua_pop(L, 1);  /* the loop stopped before lua_next said the end */
  lua_pushnil(L);
  while (lua_next(L, map)) {
    const void *p = lua_topointer(L, -2);
    size_t i = slot_of(p, ns->mask);
    while (ns->keys[i] != NULL && ns->keys[i] != p) i = (i + 1) & ns->mask;
    ns->keys[i] = p;
    lua_pop(L, 1);
  }
  lua_setiuservalue(L, e->base, UV_NAMESET);
  e->nameset = ns;
}

/* [-0, +1] a copy of package.loaded (at index loaded); *count: its
 * entries. */
static void snapshot_loaded(lua_State *L, int loaded, long *count) {
  long n = 0;
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
    n++;
  }
  *count = n;
}

/* Whether package.loaded holds what it held when the map was made: the
 * same keys and values, by address (the map's snapshot of package.loaded
 * holds them all, so none can have been collected and its address reused
 * since).  Counting the entries is not enough: a module replaced under its
 * name (package.loaded.m = nil, then require "m" again -- busted does it
 * between spec files) leaves the count as it was, and a map of the old
 * values would send the new module by value and the old one under a name
 * that now means the new one. */
static int loaded_unchanged(encoder *e, lua_State *L) {
  const nameset *ns = e->nameset;
  size_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, e->base + S_LOADED)) {
    if (i == ns->nkv || lua_topointer(L, -2) != ns->kv[2 * i] || lua_topointer(L, -1) != ns->kv[2 * i + 1]) {
      lua_pop(L, 2);
      return 0;
    }
    i++;
    lua_pop(L, 1);
  }
  return i == ns->nkv;
}

/* A new map of package.loaded and its snapshot, in S_NAMES and S_SNAP and
 * cached in the encoder's user values. */
static void make_names(encoder *e, lua_State *L) {
  long count;
  snapshot_loaded(L, e->base + S_LOADED, &count);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, e->base, UV_LOADED);
  lua_replace(L, e->base + S_SNAP);
  build_names(L, e->base + S_GLOBALS, e->base + S_LOADED);
  build_nameset(e, L, lua_gettop(L), e->base + S_LOADED, (size_t)count);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, e->base, UV_NAMES);
  lua_replace(L, e->base + S_NAMES);
  e->names_checked = 1;
}

/* The name map for this encode: the cached one (checked when needed), or
 * a new one. */
static void open_names(encoder *e, lua_State *L) {
  e->names_open = 1;
  luaL_checkstack(L, 8, "encoding a value");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_replace(L, e->base + S_LOADED);
  lua_getiuservalue(L, e->base, UV_NAMES);
  lua_getiuservalue(L, e->base, UV_LOADED);
  if (lua_istable(L, -2) && lua_istable(L, -1) && e->nameset != NULL) {
    lua_replace(L, e->base + S_SNAP);
    lua_replace(L, e->base + S_NAMES);
  } else {
    lua_pop(L, 2);
    make_names(e, L);
  }
}

/* Once per encode at most: a new map if package.loaded changed since the
 * cached one was made. */
static void check_names(encoder *e, lua_State *L) {
  e->names_checked = 1;
  luaL_checkstack(L, 8, "encoding a value");
  if (!loaded_unchanged(e, L)) make_names(e, L);
}

/* [-0, +(0|1)] the NAMED record of the value at idx (address p), if the
 * map has one (1).  Most values met have none: the set answers without
 * the map. */
static inline int lookup_name(encoder *e, lua_State *L, int idx, const void *p) {
  if (!nameset_has(e->nameset, p)) return 0;
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->base + S_NAMES) == LUA_TSTRING) return 1;
  lua_pop(L, 1);
  return 0;
}

/* Whether the record rec still means what it meant when the map was made:
 * its module is the one package.loaded had then. */
static int record_current(encoder *e, lua_State *L, const char *rec, size_t n) {
  size_t len = 0, at = 2;
  unsigned tag = n > 1 ? (unsigned char)rec[1] : 0;
  if (tag >= T_SSTR && tag < T_SSTR + 32) {
    len = tag - T_SSTR;
  } else {  /* T_STR: a varint length */
    for (int shift = 0; at < n && shift < 64; shift += 7) {
      unsigned c = (unsigned char)rec[at++];
      len |= (size_t)(c & 0x7f) << shift;
      if (!(c & 0x80)) break;
    }
  }
  if (at > n || len > n - at) return 0;
  luaL_checkstack(L, 4, "encoding a value");
  lua_pushlstring(L, rec + at, len);
  lua_pushvalue(L, -1);
  lua_rawget(L, e->base + S_LOADED);
  lua_insert(L, -2);
  lua_rawget(L, e->base + S_SNAP);
  int same = !lua_isnil(L, -1) && lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

/* Write the NAMED record of the value at idx (address p) if it has a
 * name (1).  The cached map is checked against package.loaded once per
 * encode, when it is first needed: for a value it does not name (a module
 * may have been required since), or before it names one for the first
 * time in this encode -- unless that name's module is still the same. */
static inline int named_at(encoder *e, lua_State *L, int idx, const void *p) {
  if (!e->names_open) open_names(e, L);
  if (!lookup_name(e, L, idx, p)) {
    if (e->names_checked) return 0;
    check_names(e, L);
    if (!lookup_name(e, L, idx, p)) return 0;
  } else if (!e->names_checked) {
    size_t n;
    const char *rec = lua_tolstring(L, -1, &n);
    if (!record_current(e, L, rec, n)) {
      lua_pop(L, 1);
      check_names(e, L);
      if (!lookup_name(e, L, idx, p)) return 0;
    }
  }
  size_t n;
  const char *rec = lua_tolstring(L, -1, &n);
  put_bytes(e, L, rec, n);
  lua_pop(L, 1);
  return 1;
}

static int named(encoder *e, lua_State *L, int idx) { return named_at(e, L, idx, lua_topointer(L, idx)); }

/* ---- values ---------------------------------------------------------- */

static void enc_value(encoder *e, lua_State *L, int idx);

static void enter(encoder *e, lua_State *L) {
  if (++e->depth > PL_CODEC_MAX_DEPTH) {
    e->nseg = 1;  /* the root only: the whole path would be 200 steps long */
    fail(e, L, "nesting too deep (more than 200 levels)");
  }
  if (e->depth % 8 == 1) luaL_checkstack(L, 8 * 8, "encoding a value");  /* a level uses at most 8 */
}

/* A metatable made by luaL_newmetatable (its __name names it in the
 * registry): sent by that name (1). */
static int regmt(encoder *e, lua_State *L, int idx) {
  lua_pushliteral(L, "__name");
  if (lua_rawget(L, idx) != LUA_TSTRING) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushvalue(L, -1);
  lua_rawget(L, LUA_REGISTRYINDEX);
  int same = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  if (same) {
    size_t n;
    const char *name = lua_tolstring(L, -1, &n);
    put1(e, L, T_REGMT);
    put_string(e, L, name, n);
  }
  lua_pop(L, 1);
  return same;
}

/* A string key is written once per message and then referred to by its
 * address (tables of one shape repeat their keys; a short string is
 * interned, so equal keys share one address). */
static void put_key(encoder *e, lua_State *L, int idx) {
  const void *p = lua_topointer(L, idx);
  pslot *c = &e->keys[((uintptr_t)p >> 4) % KEY_CACHE];  /* the few keys of records, first */
  if (c->key == p && c->gen == e->gen) {
    put_ref(e, L, c->val);
    return;
  }
  int found;
  pslot *s = map_get(e, L, p, &found);
  if (!found) s->val = new_id(e, L);
  c->key = p;
  c->val = s->val;
  c->gen = e->gen;
  if (found) {
    put_ref(e, L, s->val);
    return;
  }
  size_t n;
  const char *str = lua_tolstring(L, idx, &n);
  reserve(e, L, n + 11);
  e->buf[e->len++] = T_MSTR;
  put_varint_nocheck(e, n);
  memcpy(e->buf + e->len, str, n);
  e->len += n;
}

static inline void put_number(encoder *e, lua_State *L, int idx) {
  if (lua_isinteger(L, idx)) put_integer(e, L, lua_tointeger(L, idx));
  else put_float(e, L, lua_tonumber(L, idx));
}

/* Write the value at idx, of type t, if it is a number, a string, a
 * boolean or nil (1): the common case of a table's keys and values,
 * without the calls of enc_value. */
static inline int plain_value(encoder *e, lua_State *L, int idx, int t) {
  switch (t) {
  case LUA_TNUMBER: put_number(e, L, idx); return 1;
  case LUA_TSTRING: {
    size_t n;
    const char *str = lua_tolstring(L, idx, &n);
    put_string(e, L, str, n);
    return 1;
  }
  case LUA_TBOOLEAN: put1(e, L, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); return 1;
  case LUA_TNIL: put1(e, L, T_NIL); return 1;
  default: return 0;
  }
}

/* Runs.  Consecutive floats of a table's array part go as one FLOATS
 * record (a tag, a count, 8 bytes each), consecutive integers as one INTS
 * record (zigzag varints; not the integers 0..63, whose SMALLINT tag
 * holds the value): a tag and a bounds check less per value on both
 * sides.  A value is first written plain; the next one of its kind
 * rewrites it as a run of two (so a lone number costs what it did).  The
 * count is written when the run ends (run_end). */
typedef struct run {
  int tag;             /* T_FLOATS or T_INTS: the kind of the last value, */
  size_t at;           /* ... written plain or as a run from here */
  uint32_t n;          /* values in the run; 1: the plain value */
  uint64_t first;      /* the plain value's bits (zigzag for an integer) */
} run;

static inline void run_end(encoder *e, run *r) {
  if (r->n >= 2) put_u32_at(e, r->at + 1, r->n);
  r->tag = 0;
  r->n = 0;
}

/* 1 when the value (bits, of kind tag) joins the run r, with room made
 * for it; 0 when it starts a new one, to be written plain. */
static inline int run_joins(encoder *e, lua_State *L, run *r, int tag, uint64_t bits) {
  if (r->tag == tag && r->n < UINT32_MAX) {
    reserve(e, L, 5 + 2 * 10);
    if (r->n == 1) {  /* the plain value becomes the run's first */
      e->len = r->at;
      e->buf[e->len++] = (unsigned char)tag;
      e->len += 4;
      if (tag == T_INTS) {
        put_varint_nocheck(e, r->first);
      } else {
        memcpy(e->buf + e->len, &r->first, 8);
        e->len += 8;
      }
    }
    r->n++;
    return 1;
  }
  run_end(e, r);
  r->tag = tag;
  r->at = e->len;
  r->n = 1;
  r->first = bits;
  return 0;
}

static inline void run_float(encoder *e, lua_State *L, run *r, lua_Number d) {
  double x = (double)d;
  uint64_t bits;
  memcpy(&bits, &x, 8);
  if (!run_joins(e, L, r, T_FLOATS, bits)) {
    put_float(e, L, d);
    return;
  }
  memcpy(e->buf + e->len, &bits, 8);
  e->len += 8;
}

static inline void run_integer(encoder *e, lua_State *L, run *r, lua_Integer i) {
  if (i >= 0 && i < 64) {  /* a SMALLINT is one byte already: a run would only add its header */
    run_end(e, r);
    put_integer(e, L, i);
    return;
  }
  uint64_t z = zigzag(i);
  if (!run_joins(e, L, r, T_INTS, z)) {
    put_integer(e, L, i);
    return;
  }
  put_varint_nocheck(e, z);
}

static void enc_table(encoder *e, lua_State *L, int idx, int is_mt) {
  const void *p = lua_topointer(L, idx);
  if (p == e->globals) {
    put1(e, L, T_GLOBALS);
    return;
  }
  if (is_mt && regmt(e, L, idx)) return;
  if (named_at(e, L, idx, p)) return;
  if (seen_at(e, L, p)) return;
  enter(e, L);
  int has_mt = lua_getmetatable(L, idx);
  put1(e, L, has_mt ? T_TABLE_MT : T_TABLE);
  size_t at = e->len;
  reserve(e, L, 8);
  e->len += 8;
  uint64_t narr = 0, nhash = 0;
  int k = lua_gettop(L) + 1, v = k + 1;  /* where lua_next puts the key and the value */
  int more;
  run r = {0, 0, 0, 0};
  lua_pushnil(L);
  while ((more = lua_next(L, idx)) != 0) {  /* the array part: keys 1, 2, 3... in order */
    if (!lua_isinteger(L, k) || (uint64_t)lua_tointeger(L, k) != narr + 1) break;
    narr++;
    int vt = lua_type(L, v);
    if (vt == LUA_TNUMBER) {
      if (lua_isinteger(L, v)) run_integer(e, L, &r, lua_tointeger(L, v));
      else run_float(e, L, &r, lua_tonumber(L, v));
    } else {
      run_end(e, &r);
      if (!plain_value(e, L, v, vt)) {
        push_seg(e, SEG_INDEX, 0, (lua_Integer)narr, NULL);
        enc_value(e, L, v);
        e->nseg--;
      }
    }
    lua_settop(L, k);
  }
  run_end(e, &r);
  for (; more; more = lua_next(L, idx)) {  /* the rest, from the pair that ended the run */
    int kt = lua_type(L, k), vt = lua_type(L, v);
    nhash++;
    if (kt == LUA_TSTRING) {
      put_key(e, L, k);
    } else if (!plain_value(e, L, k, kt)) {
      push_seg(e, SEG_KEY, 0, 0, NULL);
      enc_value(e, L, k);
      e->nseg--;
    }
    if (!plain_value(e, L, v, vt)) {
      push_seg(e, SEG_FIELD, k, 0, NULL);
      enc_value(e, L, v);
      e->nseg--;
    }
    lua_settop(L, k);
  }
  if (narr > UINT32_MAX || nhash > UINT32_MAX) fail(e, L, "table too large");
  put_u32_at(e, at, (uint32_t)narr);
  put_u32_at(e, at + 4, (uint32_t)nhash);
  if (has_mt) {
    push_seg(e, SEG_METATABLE, 0, 0, NULL);
    enc_table(e, L, lua_gettop(L), 1);
    e->nseg--;
    lua_pop(L, 1);
  }
  e->depth--;
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  encoder *e = ud;
  (void)L;
  if (e->dumpcap - e->dumplen < n) {
    size_t ncap = e->dumpcap != 0 ? e->dumpcap : 1024;
    while (ncap - e->dumplen < n) ncap *= 2;
    unsigned char *nd = realloc(e->dump, ncap);
    if (nd == NULL) return 1;
    e->dump = nd;
    e->dumpcap = ncap;
  }
  memcpy(e->dump + e->dumplen, p, n);
  e->dumplen += n;
  return 0;
}

/* ---- signing bytecode ------------------------------------------------- */

/* Lua's loader trusts binary chunks: crafted bytecode can crash it (the
 * fuzzer finds such inputs within seconds).  So every function's bytecode
 * carries a MAC made with a key that only this process (and children that
 * inherit its memory) knows -- SipHash-2-4 -- and the decoder loads only
 * bytecode whose MAC checks.  The same 8 bytes are the receiver's cache
 * key.  The key is made once per process from the system's randomness. */
static uint64_t sip_key[2];
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void make_key(void) {
  unsigned char k[16];
  size_t got = 0;
  while (got < sizeof k) {
    ssize_t n = getrandom(k + got, sizeof k - got, 0);
    if (n <= 0) break;
    got += (size_t)n;
  }
  if (got < sizeof k) {  /* no randomness: still unguessable enough for data */
    uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&got;
    memcpy(k, &t, 8);
    t *= 0x9E3779B97F4A7C15ull;
    memcpy(k + 8, &t, 8);
  }
  memcpy(sip_key, k, sizeof k);
}

void pl_codec_get_key(uint64_t key[2]) {
  pthread_once(&key_once, make_key);
  key[0] = sip_key[0];
  key[1] = sip_key[1];
}

void pl_codec_set_key(const uint64_t key[2]) {
  pthread_once(&key_once, make_key);
  sip_key[0] = key[0];
  sip_key[1] = key[1];
}

void pl_codec_use_test_key(void) {
  pthread_once(&key_once, make_key);
  sip_key[0] = sip_key[1] = 0;
}

uint64_t pl_codec_mac(const unsigned char *p, size_t n) {
  pthread_once(&key_once, make_key);
  return pl_siphash24(sip_key, p, n);
}

/* [-0, +1] MAC .. bytecode of the Lua function at idx, from the cache. */
static void push_dump(encoder *e, lua_State *L, int idx) {
  int dumps = e->base + S_DUMPS;
  if (lua_isnil(L, dumps)) {
    lua_getiuservalue(L, e->base, UV_DUMPS);
    lua_replace(L, dumps);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, dumps) == LUA_TSTRING) return;
  lua_pop(L, 1);
  e->dumplen = 0;
  unsigned char room[8] = {0};
  if (dump_writer(L, room, 8, e) != 0) luaL_error(L, "not enough memory");  /* the hash goes here */
  lua_pushvalue(L, idx);
  int rc = lua_dump(L, dump_writer, e, 0);
  lua_pop(L, 1);
  if (rc != 0 || e->dumplen < 8) luaL_error(L, "not enough memory");
  uint64_t h = pl_codec_mac(e->dump + 8, e->dumplen - 8);
  memcpy(e->dump, &h, 8);
  lua_pushlstring(L, (const char *)e->dump, e->dumplen);
  lua_pushvalue(L, idx);
  lua_pushvalue(L, -2);
  lua_rawset(L, dumps);
}

static void add_obj(encoder *e, lua_State *L, const pl_transfer_type *t, void *obj) {
  if (e->nobjs == e->capobjs) {
    int ncap = e->capobjs != 0 ? e->capobjs * 2 : 4;
    pl_msgobj *no = realloc(e->objs, (size_t)ncap * sizeof *no);
    if (no == NULL) luaL_error(L, "not enough memory");
    e->objs = no;
    e->capobjs = ncap;
  }
  t->retain(obj);
  e->objs[e->nobjs].type = t;
  e->objs[e->nobjs].obj = obj;
  put1(e, L, T_OBJ);
  put_varint(e, L, (uint64_t)e->nobjs++);
}

static void cfunc_noref(void *obj) { (void)obj; }

static void cfunc_push(lua_State *L, const pl_transfer_type *t, void *obj) {
  (void)t;
  lua_CFunction f;
  memcpy(&f, &obj, sizeof f);
  lua_pushcfunction(L, f);
}

/* A C function without upvalues and without a name: itself (in-process). */
static const pl_transfer_type cfunction_type = {
    "C function", "C function", NULL, cfunc_noref, cfunc_noref, NULL, cfunc_push, NULL, NULL, 0};

static void enc_function(encoder *e, lua_State *L, int idx) {
  if (lua_iscfunction(L, idx)) {
    if (named(e, L, idx)) return;
    if (lua_getupvalue(L, idx, 1) != NULL) {
      lua_pop(L, 1);
      fail(e, L, "cannot send a C function with upvalues (only those reachable by name "
                 "from package.loaded can be sent)");
    }
    if (e->crosses != NULL)
      fail(e, L, lua_pushfstring(L, "cannot send a C function without a name to %s", e->dest));
    if (seen(e, L, idx)) return;
    lua_CFunction f = lua_tocfunction(L, idx);
    void *obj;
    memcpy(&obj, &f, sizeof obj);
    add_obj(e, L, &cfunction_type, obj);
    return;
  }
  if (seen(e, L, idx)) return;
  uint32_t id = e->next_id - 1;
  enter(e, L);
  push_dump(e, L, idx);
  size_t n;
  const char *d = lua_tolstring(L, -1, &n);
  reserve(e, L, n + 12);
  e->buf[e->len++] = T_FUNC;
  memcpy(e->buf + e->len, d, 8);
  e->len += 8;
  put_varint_nocheck(e, n - 8);
  memcpy(e->buf + e->len, d + 8, n - 8);
  e->len += n - 8;
  lua_pop(L, 1);
  size_t at = e->len;
  put1(e, L, 0);
  int i;
  const char *name;
  for (i = 1; (name = lua_getupvalue(L, idx, i)) != NULL; i++) {
    int found;
    const void *uv = lua_upvalueid(L, idx, i);
    pslot *s = map_get(e, L, (const char *)uv + 1, &found);  /* +1: apart from objects */
    if (found) {
      put1(e, L, T_JOIN);
      put_varint(e, L, s->val >> 8);
      put1(e, L, (unsigned)(s->val & 0xff));
      keep(e, s->val >> 8);
    } else {
      if (id >= (1u << 24)) fail(e, L, "too many functions in one message");
      s->val = (id << 8) | (uint32_t)i;
      push_seg(e, SEG_UPVALUE, 0, 0, name);
      enc_value(e, L, lua_gettop(L));
      e->nseg--;
    }
    lua_pop(L, 1);
  }
  e->buf[at] = (unsigned char)(i - 1);  /* a Lua function has at most 255 */
  e->depth--;
}

static int value_ok_for_desc(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  return t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TSTRING;
}

/* What to do with a value of a C library that cannot cross (an lpeg
 * pattern, a file): the receiver has the library, so make it there. */
#define BUILD_IT_THERE "build it inside the task or in the pool's init function"

static void enc_userdata(encoder *e, lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) fail(e, L, "cannot send a userdata");
  int types = e->base + S_TYPES;
  if (lua_isnil(L, types)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &TYPES_KEY);
    lua_replace(L, types);
  }
  const pl_transfer_type *t = NULL;
  if (lua_istable(L, types)) {
    lua_pushvalue(L, -1);
    lua_rawget(L, types);
    t = lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  if (t == NULL) {
    lua_pushliteral(L, "__name");
    if (lua_rawget(L, -2) == LUA_TSTRING) {
      const char *tname = lua_tostring(L, -1);
      if (strncmp(tname, "parlua.", 7) == 0)  /* a pool, a thread, a future: not made twice */
        fail(e, L, lua_pushfstring(L, "cannot send a userdata of type %s", tname));
      fail(e, L, lua_pushfstring(L, "cannot send a userdata of type %s (%s)", tname, BUILD_IT_THERE));
    }
    fail(e, L, "cannot send a userdata (" BUILD_IT_THERE ")");
  }
  lua_pop(L, 1);
  if (seen(e, L, idx)) return;
  if (t->describe != NULL) {
    int top = lua_gettop(L);
    int n = t->describe(L, idx);
    if (n < 0 || n > PL_WIRE_MAX_DESC) fail(e, L, lua_pushfstring(L, "cannot send this %s", t->what));
    put1(e, L, T_DESC);
    put_string(e, L, t->tname, strlen(t->tname));
    put_string(e, L, t->module, strlen(t->module));
    put1(e, L, (unsigned)n);
    for (int i = top + 1; i <= top + n; i++) {
      if (!value_ok_for_desc(L, i)) fail(e, L, lua_pushfstring(L, "cannot send this %s", t->what));
      enc_value(e, L, i);
    }
    lua_settop(L, top);
    return;
  }
  if (e->crosses != NULL && !e->crosses(t))
    fail(e, L, lua_pushfstring(L, "cannot send %s %s to %s", pl_article(t->what), t->what, e->dest));
  void *obj = *(void **)lua_touserdata(L, idx);
  if (obj == NULL) fail(e, L, lua_pushfstring(L, "cannot send a closed %s", t->what));
  if (t->share != NULL && t->share(L, obj) != 0) {
    const char *why = lua_tostring(L, -1);
    fail(e, L, why != NULL ? why : lua_pushfstring(L, "cannot share this %s", t->what));
  }
  add_obj(e, L, t, obj);
}

static void enc_value(encoder *e, lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL: put1(e, L, T_NIL); return;
  case LUA_TBOOLEAN: put1(e, L, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); return;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) put_integer(e, L, lua_tointeger(L, idx));
    else put_float(e, L, lua_tonumber(L, idx));
    return;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    put_string(e, L, s, n);
    return;
  }
  case LUA_TTABLE: enc_table(e, L, idx, 0); return;
  case LUA_TFUNCTION: enc_function(e, L, idx); return;
  case LUA_TUSERDATA: enc_userdata(e, L, idx); return;
  case LUA_TLIGHTUSERDATA:
    if (named_at(e, L, idx, lua_touserdata(L, idx))) return;
    fail(e, L, "cannot send a light userdata (only those reachable by name from package.loaded, "
               "such as cjson.null, can be sent: make this one inside the task or in the pool's init)");
    return;
  case LUA_TTHREAD: fail(e, L, "cannot send a coroutine"); return;
  default: fail(e, L, "cannot send this value"); return;
  }
}

/* The finished message: one block, or (big) the buffer itself. */
static pl_msg *finish(encoder *e, lua_State *L) {
  size_t head = sizeof(pl_msg) + (size_t)e->nobjs * sizeof(pl_msgobj);
  int big = e->len >= BIG_MESSAGE;
  pl_msg *m = malloc(head + (big ? 0 : e->len));
  if (m == NULL) luaL_error(L, "not enough memory");
  m->len = e->len;
  m->nobjs = e->nobjs;
  m->big = big;
  m->objs = (pl_msgobj *)(m + 1);
  if (e->nobjs > 0) memcpy(m->objs, e->objs, (size_t)e->nobjs * sizeof(pl_msgobj));
  e->nobjs = 0;  /* the message owns those references now */
  if (big) {
    m->data = e->buf;
    m->cap = e->cap;
    e->buf = NULL;
    e->cap = 0;
  } else {
    unsigned char *d = (unsigned char *)m + head;
    memcpy(d, e->buf, e->len);
    m->data = d;
  }
  e->len = 0;
  return m;
}

/* Values that are all nil, booleans, numbers or strings (a task's usual
 * results): written straight into the message, no encoder needed.  NULL
 * when some value is not plain. */
static pl_msg *encode_plain(lua_State *L, int first, int n) {
  size_t size = 3 + 4 + 10;  /* header, nkept, count */
  for (int i = first; i < first + n; i++) {
    switch (lua_type(L, i)) {
    case LUA_TNIL: case LUA_TBOOLEAN: size += 1; break;
    case LUA_TNUMBER: size += 11; break;
    case LUA_TSTRING: size += lua_rawlen(L, i) + 11; break;
    default: return NULL;
    }
  }
  if (size >= BIG_MESSAGE) return NULL;
  pl_msg *m = malloc(sizeof *m + size);
  if (m == NULL) luaL_error(L, "not enough memory");
  encoder e;  /* only its buffer is used: put_* never grow it past size */
  e.buf = (unsigned char *)(m + 1);
  e.cap = size;
  e.len = 0;
  e.buf[e.len++] = PL_WIRE_MAGIC;
  e.buf[e.len++] = PL_WIRE_VERSION;
  e.buf[e.len++] = 0;  /* flags: no references */
  put_u32_at(&e, e.len, 0);  /* nothing kept */
  e.len += 4;
  put_varint_nocheck(&e, (uint64_t)n);
  for (int i = first; i < first + n; i++) plain_value(&e, L, i, lua_type(L, i));
  m->len = e.len;
  m->nobjs = 0;
  m->big = 0;
  m->cap = 0;
  m->objs = NULL;
  m->data = e.buf;
  return m;
}

static pl_msg *encode_with(lua_State *L, int first, int n, const char *head, const char *each,
                           int (*crosses)(const pl_transfer_type *), const char *dest) {
  first = lua_absindex(L, first);
  if (n <= 8) {
    pl_msg *m = encode_plain(L, first, n);
    if (m != NULL) return m;
  }
  encoder *e = encoder_open(L);
  e->crosses = crosses;
  e->dest = dest;
  e->head = head;
  e->each = each;
  reserve(e, L, 24);
  e->buf[e->len++] = PL_WIRE_MAGIC;
  e->buf[e->len++] = PL_WIRE_VERSION;
  e->buf[e->len++] = 0;  /* flags: F_REFS, set at the end */
  e->len += 4;           /* nkept, set at the end */
  put_varint_nocheck(e, (uint64_t)n);
  for (int i = 0; i < n; i++) {
    e->nseg = 0;
    push_seg(e, SEG_ROOT, 0, head != NULL ? i : i + 1, NULL);
    enc_value(e, L, first + i);
  }
  e->nseg = 0;
  if (e->has_refs) e->buf[2] |= PL_WIRE_F_REFS;
  put_u32_at(e, 3, e->nkept);
  pl_msg *m = finish(e, L);
  encoder_close(e, L);
  return m;
}

pl_msg *pl_codec_encode(lua_State *L, int first, int n, const char *head, const char *each) {
  return encode_with(L, first, n, head, each, NULL, NULL);
}

pl_msg *pl_codec_encode_portable(lua_State *L, int first, int n, const char *head, const char *each,
                                 int (*crosses)(const pl_transfer_type *t)) {
  return encode_with(L, first, n, head, each, crosses, "another process");
}

static int crosses_nothing(const pl_transfer_type *t) {
  (void)t;
  return 0;
}

pl_msg *pl_codec_encode_remote(lua_State *L, int first, int n, const char *head, const char *each) {
  return encode_with(L, first, n, head, each, crosses_nothing,
                     "an mpi worker (no shared object crosses machines)");
}

/* ---- messages -------------------------------------------------------- */

pl_msg *pl_msg_copy(const pl_msg *m) {
  size_t head = sizeof(pl_msg) + (size_t)m->nobjs * sizeof(pl_msgobj);
  pl_msg *c = malloc(head + (m->big ? 0 : m->len));
  if (c == NULL) return NULL;
  *c = *m;
  c->objs = (pl_msgobj *)(c + 1);
  if (m->big) {
    c->cap = m->len > 0 ? m->len : 1;
    unsigned char *d = buf_resize(NULL, 0, c->cap, 0);
    if (d == NULL) {
      free(c);
      return NULL;
    }
    memcpy(d, m->data, m->len);
    c->data = d;
  } else {
    unsigned char *d = (unsigned char *)c + head;
    memcpy(d, m->data, m->len);
    c->data = d;
  }
  for (int i = 0; i < m->nobjs; i++) {
    c->objs[i] = m->objs[i];
    c->objs[i].type->retain(c->objs[i].obj);
  }
  return c;
}

void pl_msg_free(pl_msg *m) {
  if (m == NULL) return;
  for (int i = 0; i < m->nobjs; i++) m->objs[i].type->release(m->objs[i].obj);
  if (m->big) buf_free((void *)m->data, m->cap);
  free(m);
}

/* ---- types ----------------------------------------------------------- */

void pl_codec_register_type(lua_State *L, const pl_transfer_type *t) {
  luaL_checkstack(L, 4, NULL);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &TYPES_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &TYPES_KEY);
  }
  luaL_getmetatable(L, t->tname);
  lua_pushlightuserdata(L, (void *)t);
  lua_rawset(L, -3);
  lua_pushstring(L, t->tname);
  lua_pushlightuserdata(L, (void *)t);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

const pl_transfer_type *pl_codec_find_type(lua_State *L, const char *tname) {
  const pl_transfer_type *t = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &TYPES_KEY) == LUA_TTABLE) {
    lua_getfield(L, -1, tname);
    t = lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return t;
}

