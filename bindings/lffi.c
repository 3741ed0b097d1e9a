/* parlua.ffi: C functions of shared libraries, called through libffi.
 *
 *   local ffi  = require "parlua.ffi"
 *   local libm = ffi.open("libm.so.6")            -- ffi.open() = the running program
 *   local cos  = libm:fn("double cos(double)")    -- parsed by runtime/cdecl.c
 *   local nap  = ffi.open():fn("int usleep(unsigned int)", {nogil = true})
 *
 * A function object is a userdata holding the parsed declaration, the
 * symbol and its ffi_cif, prepared once.  Calling it converts each Lua
 * argument strictly (an integer that does not fit the C type, or a float
 * with no integer value, is an error, never a wrap), calls, and converts
 * the result back.
 *
 * Variadic functions.  Called directly, `snprintf` takes its fixed
 * arguments only.  The types of the extra ones are bound explicitly, once:
 *     local fmt2 = snprintf:variadic("int", "double")   -- cached per type list
 *     fmt2(buf, #buf, "%d %.2f", 7, 0.5)
 * and each extra argument is checked against its type and then passed with
 * C's default promotions (char/short/bool -> int, float -> double).
 *
 * Values.  const char * takes a Lua string (alive on the caller's stack
 * for the whole call), a pointer, a buffer or nil (NULL), and returns a
 * Lua string or nil.  Any other T * (char * included, since C may write
 * through it) is a pointer userdata: comparable with ==, ffi.NULL, p + n.
 * A const T * also takes a Lua string, read-only.  ffi.buffer(n) is
 * zeroed, GC-owned memory (16-byte aligned) that passes as any pointer;
 * pointers made from it keep it alive.  buffer:get/set(type, offset, ...)
 * read and write typed values, bounds-checked (structs passed by pointer
 * are buffers); pointer:get/set do the same unchecked.  Unsigned 64-bit
 * results above math.maxinteger come back as floats (Lua has no unsigned
 * integers).  A library is dlclosed when it is collected, which its
 * functions prevent while they live.
 *
 * nogil.  The global lock is released around ffi_call only: every argument
 * is converted before and the result after, so nothing touches Lua while
 * the lock is away, and every string, buffer and function the call uses
 * is on this thread's stack, so no other thread's collector can free it.
 *
 * Every function of the module has the same upvalues (UV_*): the four
 * metatables and ffi.NULL, so type checks on the call path are pointer
 * comparisons rather than registry lookups.
 */
#include <dlfcn.h>
#include <ffi.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "bindings.h"
#include "ffi/cdecl.h"

#define MAX_ARGS (2 * PL_CDECL_MAX_PARAMS)  /* fixed plus bound variadic */

static const char FUNC_MT[] = "parlua.ffi.function";
static const char POINTER_MT[] = "parlua.ffi.pointer";
static const char BUFFER_MT[] = "parlua.ffi.buffer";
static const char LIBRARY_MT[] = "parlua.ffi.library";

enum { UV_FUNC = 1, UV_POINTER, UV_BUFFER, UV_LIBRARY, UV_NULL, NUPVALUES = UV_NULL };

/* One C value: an argument, a result, or what a buffer holds. */
typedef union cvalue {
  uint8_t u8;
  uint16_t u16;
  uint32_t u32;
  uint64_t u64;
  float f;
  double d;
  void *p;
  ffi_arg arg;  /* libffi widens small integer results to this */
} cvalue;

typedef struct clib {
  void *handle;  /* NULL once finalized */
} clib;          /* uservalue 1: the path, or nil for the running program */

/* Uservalues: 1 the library object (keeps the code mapped), 2 the
 * declaration string, 3 for a variadic function the cache of its bound
 * variants, for a bound variant the list of extra types ("int, double").
 *
 * Sending a function to another state or process: the codec (codec.c)
 * encodes it as (library path, declaration, nogil, extra types) --
 * uservalue 1's path, uservalues 2 and 3, and `nogil` -- and the receiving
 * side re-binds with ffi.open(path):fn(decl, {nogil = ...}) and, for a
 * bound variant, :variadic(types...).  A nil path is the running program
 * there too.  Libraries, pointers and buffers do not cross. */
/* How one value is converted, worked out once per argument. */
typedef struct carg {
  unsigned char pass;     /* the kind it is passed as (variadic promotion) */
  unsigned char size;     /* bytes of that kind */
  unsigned char dsize;    /* bytes of the declared kind */
  unsigned char sgn;      /* the declared kind is signed */
  unsigned char isint;    /* an integer kind other than bool: the fast path */
  int64_t lo;             /* the declared kind's range: [lo, hi] when signed, */
  uint64_t hi;            /* [0, hi] when not */
} carg;

typedef struct cfunc {
  struct cfunc *self;     /* its own address: the call path's type check */
  void (*sym)(void);
  ffi_cif cif;
  int nargs;              /* arguments a call takes */
  int nogil;
  int bound;              /* made by :variadic() */
  const char *src;        /* the declaration (uservalue 2), for type names */
  const char *vsrc;       /* the extra types (uservalue 3 of a bound variant) */
  pl_cdecl decl;
  pl_family *fam;         /* of the state it was made in, if known then */
  pl_ctype args[MAX_ARGS];          /* decl.params, then the extra types */
  carg info[MAX_ARGS];
  carg rinfo;                       /* of the result */
  ffi_type *types[MAX_ARGS];
} cfunc;

typedef struct cbuf {
  size_t size;
  unsigned char *data;    /* 16-byte aligned, inside this userdata */
} cbuf;

/* Who is converting a value, for error messages. */
typedef struct where {
  const char *fn;         /* "cos", "buffer:set" */
  int arg;                /* 1-based argument number, or 0 */
  const char *src;        /* text the type was parsed from */
} where;

/* ---- small helpers ---- */

/* The userdata at idx if its metatable is upvalue `uv`, else NULL. */
static void *toobj(lua_State *L, int idx, int uv) {
  void *p = NULL;
  if (lua_getmetatable(L, idx)) {
    if (lua_rawequal(L, -1, lua_upvalueindex(uv))) p = lua_touserdata(L, idx);
    lua_pop(L, 1);
  }
  return p;
}

static void *checkobj(lua_State *L, int idx, int uv, const char *what) {
  void *p = toobj(L, idx, uv);
  if (p == NULL) luaL_typeerror(L, idx, what);
  return p;
}

/* What the value at idx is, for "got ..." (our userdata by class name). */
static const char *got(lua_State *L, int idx) {
  if (toobj(L, idx, UV_POINTER)) return "pointer";
  if (toobj(L, idx, UV_BUFFER)) return "buffer";
  if (toobj(L, idx, UV_FUNC)) return "ffi function";
  if (toobj(L, idx, UV_LIBRARY)) return "ffi library";
  return luaL_typename(L, idx);
}

static size_t ksize(int kind) {
  pl_ctype t;
  memset(&t, 0, sizeof t);
  t.kind = (unsigned char)kind;
  return pl_ctype_size(&t);
}

static const char *tname(const pl_ctype *t, const char *src, char *buf, size_t n) {
  pl_ctype_name(t, src, buf, n);
  return buf;
}

static int value_error(lua_State *L, const where *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const char *msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  if (w->arg > 0) return luaL_error(L, "%s: argument %d: %s", w->fn, w->arg, msg);
  return luaL_error(L, "%s: %s", w->fn, msg);
}

static ffi_type *ffi_type_of(int kind) {
  switch (kind) {
    case PL_C_VOID: return &ffi_type_void;
    case PL_C_FLOAT: return &ffi_type_float;
    case PL_C_DOUBLE: return &ffi_type_double;
    case PL_C_POINTER: return &ffi_type_pointer;
    default: break;
  }
  /* Integers by size and sign: the same ABI class as the named C types. */
  int sgn = pl_ckind_is_signed(kind);
  switch (ksize(kind)) {
    case 1: return sgn ? &ffi_type_sint8 : &ffi_type_uint8;
    case 2: return sgn ? &ffi_type_sint16 : &ffi_type_uint16;
    case 4: return sgn ? &ffi_type_sint32 : &ffi_type_uint32;
    default: return sgn ? &ffi_type_sint64 : &ffi_type_uint64;
  }
}

/* C's default argument promotions, for the extra arguments of a
 * variadic call (libffi refuses the unpromoted types there). */
static int promoted(int kind) {
  if (kind == PL_C_FLOAT) return PL_C_DOUBLE;
  if (pl_ckind_is_integer(kind) && ksize(kind) < sizeof(int)) return PL_C_INT;
  return kind;
}

/* [-0, +1] a pointer value; owner (an absolute index, or 0) is kept alive
 * by it.  NULL without an owner is ffi.NULL itself. */
static void push_pointer(lua_State *L, void *p, int owner) {
  if (p == NULL && owner == 0) {
    lua_pushvalue(L, lua_upvalueindex(UV_NULL));
    return;
  }
  void **ud = lua_newuserdatauv(L, sizeof(void *), 1);
  *ud = p;
  lua_pushvalue(L, lua_upvalueindex(UV_POINTER));
  lua_setmetatable(L, -2);
  if (owner != 0) {
    lua_pushvalue(L, owner);
    lua_setiuservalue(L, -2, 1);
  }
}

static carg make_carg(int kind, int pass) {
  carg a;
  memset(&a, 0, sizeof a);
  a.pass = (unsigned char)pass;
  a.size = (unsigned char)ksize(pass);
  a.dsize = (unsigned char)ksize(kind);
  a.sgn = (unsigned char)pl_ckind_is_signed(kind);
  a.isint = pl_ckind_is_integer(kind) && kind != PL_C_BOOL;
  if (a.isint) {
    unsigned bits = 8u * a.dsize;
    a.hi = a.sgn ? (bits >= 64 ? (uint64_t)INT64_MAX : ((uint64_t)1 << (bits - 1)) - 1)
                 : (bits >= 64 ? UINT64_MAX : ((uint64_t)1 << bits) - 1);
    a.lo = a.sgn ? -(int64_t)a.hi - 1 : 0;
  }
  return a;
}

/* ---- Lua -> C ---- */

static int fits(uint64_t bits, int sgn, size_t size) {
  if (size >= 8) return 1;
  if (sgn) {
    int64_t n = (int64_t)bits, lim = (int64_t)1 << (8 * size - 1);
    return n >= -lim && n < lim;
  }
  return bits < (uint64_t)1 << (8 * size);
}

/* The integer at idx checked against t, as 64 two's-complement bits. */
static uint64_t check_integer(lua_State *L, int idx, const pl_ctype *t, const carg *a, const where *w) {
  int sgn = a->sgn;
  size_t size = a->dsize;
  if (lua_isinteger(L, idx)) {
    lua_Integer n = lua_tointeger(L, idx);
    if ((sgn || n >= 0) && fits((uint64_t)n, sgn, size)) return (uint64_t)n;
  } else if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Number d = lua_tonumber(L, idx);
    char b[64];
    if (d != floor(d))
      value_error(L, w, "%s has no integer representation (%s)", luaL_tolstring(L, idx, NULL),
                  tname(t, w->src, b, sizeof b));
    /* Only floats reach past 2^63, up to 2^64 for the unsigned types. */
    if (sgn && d >= -0x1p63 && d < 0x1p63) {
      uint64_t bits = (uint64_t)(int64_t)d;
      if (fits(bits, 1, size)) return bits;
    } else if (!sgn && d >= 0 && d < 0x1p64) {
      uint64_t bits = (uint64_t)d;
      if (fits(bits, 0, size)) return bits;
    }
  } else {
    char b[64];
    value_error(L, w, "expected an integer for %s, got %s", tname(t, w->src, b, sizeof b), got(L, idx));
  }
  char b[64];
  return (uint64_t)value_error(L, w, "%s does not fit in %s", luaL_tolstring(L, idx, NULL),
                               tname(t, w->src, b, sizeof b));
}

static void store_bits(cvalue *v, uint64_t bits, size_t size) {
  switch (size) {
    case 1: v->u8 = (uint8_t)bits; break;
    case 2: v->u16 = (uint16_t)bits; break;
    case 4: v->u32 = (uint32_t)bits; break;
    default: v->u64 = bits; break;
  }
}

static void *check_pointer(lua_State *L, int idx, const pl_ctype *t, int strings, const where *w) {
  void **p;
  cbuf *b;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return NULL;
    case LUA_TSTRING:
      if (strings) return (void *)lua_tostring(L, idx);
      break;
    case LUA_TUSERDATA:
      if ((p = toobj(L, idx, UV_POINTER)) != NULL) return *p;
      if ((b = toobj(L, idx, UV_BUFFER)) != NULL) return b->data;
      break;
    default: break;
  }
  char nb[64];
  tname(t, w->src, nb, sizeof nb);
  if (lua_type(L, idx) == LUA_TSTRING)
    return (void *)(intptr_t)value_error(L, w,
        "expected a pointer, buffer or nil for %s, got string (a Lua string is read-only: "
        "declare the parameter const or copy the string into an ffi.buffer)", nb);
  return (void *)(intptr_t)value_error(L, w, "expected %s or nil for %s, got %s",
                                       strings ? "a string, pointer, buffer" : "a pointer, buffer",
                                       nb, got(L, idx));
}

/* Check the value at idx against t and store it as kind `pass` (t's own
 * kind, or its promotion in a variadic call).  Lua strings are accepted
 * for const pointers only when `strings` (not when stored in memory). */
static void to_c(lua_State *L, int idx, const pl_ctype *t, const carg *a, int strings, cvalue *v,
                 const where *w) {
  char b[64];
  int kind = t->kind;
  if (a->isint && lua_isinteger(L, idx)) {  /* the common case, inline */
    lua_Integer n = lua_tointeger(L, idx);
    if (a->sgn ? (n >= a->lo && (n < 0 || (uint64_t)n <= a->hi)) : (n >= 0 && (uint64_t)n <= a->hi)) {
      store_bits(v, (uint64_t)n, a->size);
      return;
    }
  }
  switch (kind) {
    case PL_C_BOOL:
      if (!lua_isboolean(L, idx))
        value_error(L, w, "expected a boolean for bool, got %s", got(L, idx));
      store_bits(v, (uint64_t)lua_toboolean(L, idx), a->size);
      return;
    case PL_C_FLOAT:
    case PL_C_DOUBLE: {
      if (lua_type(L, idx) != LUA_TNUMBER)
        value_error(L, w, "expected a number for %s, got %s", tname(t, w->src, b, sizeof b), got(L, idx));
      double d = (double)lua_tonumber(L, idx);
      if (kind == PL_C_FLOAT && isfinite(d) && fabs(d) > FLT_MAX)
        value_error(L, w, "%s does not fit in float", luaL_tolstring(L, idx, NULL));
      if (a->pass == PL_C_FLOAT) v->f = (float)d;
      else v->d = d;
      return;
    }
    case PL_C_POINTER:
      v->p = check_pointer(L, idx, t, strings && t->is_const && t->depth == 1, w);
      return;
    default:
      store_bits(v, check_integer(L, idx, t, a, w), a->size);
      return;
  }
}

/* ---- C -> Lua ---- */

/* [-0, +1] the integer of `kind` in v; `widened`: as libffi returns small
 * integer results (in a whole ffi_arg), else as stored in memory. */
static void push_integer(lua_State *L, int kind, const carg *a, const cvalue *v, int widened) {
  size_t size = a->dsize;
  uint64_t bits;
  if (widened && size < sizeof(ffi_arg)) bits = (uint64_t)v->arg;
  else if (size == 1) bits = v->u8;
  else if (size == 2) bits = v->u16;
  else if (size == 4) bits = v->u32;
  else bits = v->u64;
  if (kind == PL_C_BOOL) {
    lua_pushboolean(L, (bits & 0xff) != 0);
  } else if (a->sgn) {
    int64_t n = size == 1 ? (int8_t)bits : size == 2 ? (int16_t)bits : size == 4 ? (int32_t)bits : (int64_t)bits;
    lua_pushinteger(L, (lua_Integer)n);
  } else {
    if (size < 8) bits &= ((uint64_t)1 << (8 * size)) - 1;
    if (bits <= (uint64_t)LUA_MAXINTEGER) lua_pushinteger(L, (lua_Integer)bits);
    else lua_pushnumber(L, (lua_Number)bits);
  }
}

/* [-0, +(0|1)] a result or a value read from memory; the number pushed. */
static int push_value(lua_State *L, const pl_ctype *t, const carg *a, const cvalue *v, int widened) {
  switch (t->kind) {
    case PL_C_VOID: return 0;
    case PL_C_FLOAT: lua_pushnumber(L, (lua_Number)v->f); return 1;
    case PL_C_DOUBLE: lua_pushnumber(L, (lua_Number)v->d); return 1;
    case PL_C_POINTER:
      if (!pl_ctype_is_string(t)) push_pointer(L, v->p, 0);
      else if (v->p == NULL) lua_pushnil(L);
      else lua_pushstring(L, (const char *)v->p);
      return 1;
    default: push_integer(L, t->kind, a, v, widened); return 1;
  }
}

/* ---- ffi.open and libraries ---- */

static int ffi_open(lua_State *L) {
  const char *path = luaL_optstring(L, 1, NULL);
  clib *lib = lua_newuserdatauv(L, sizeof *lib, 1);
  lib->handle = NULL;  /* closed until dlopen succeeds */
  lua_pushvalue(L, lua_upvalueindex(UV_LIBRARY));
  lua_setmetatable(L, -2);
  pl_adopted_touch(L);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lib->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib->handle == NULL) {
    const char *e = dlerror();
    return luaL_error(L, "ffi.open: cannot open '%s': %s", path, e != NULL ? e : "unknown error");
  }
  return 1;
}

static int lib_gc(lua_State *L) {
  clib *lib = checkobj(L, 1, UV_LIBRARY, "ffi library");
  if (lib->handle != NULL) dlclose(lib->handle);
  lib->handle = NULL;
  return 0;
}

/* [-0, +1] how to name the library of the object at idx in messages. */
static const char *push_libname(lua_State *L, int lib_idx) {
  if (lua_getiuservalue(L, lib_idx, 1) == LUA_TSTRING) return lua_tostring(L, -1);
  lua_pop(L, 1);
  lua_pushliteral(L, "the running program");
  return lua_tostring(L, -1);
}

static int lib_tostring(lua_State *L) {
  checkobj(L, 1, UV_LIBRARY, "ffi library");
  lua_pushfstring(L, "ffi library: %s", push_libname(L, 1));
  return 1;
}

/* opts: nil, or a table whose only key is nogil (a boolean). */
static int opt_nogil(lua_State *L, int idx) {
  int nogil = 0;
  if (lua_isnoneornil(L, idx)) return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "nogil") == 0) {
      luaL_argexpected(L, lua_isboolean(L, -1), idx, "nogil = true or false");
      nogil = lua_toboolean(L, -1);
    } else {
      lua_pushvalue(L, -2);
      return luaL_error(L, "lib:fn: unknown option '%s' (the only option is nogil)", luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
  }
  return nogil;
}

static void prepare(lua_State *L, cfunc *f) {
  int nfixed = f->decl.nparams;
  ffi_type *rtype = ffi_type_of(f->decl.ret.kind);
  ffi_status st = f->decl.variadic
      ? ffi_prep_cif_var(&f->cif, FFI_DEFAULT_ABI, (unsigned)nfixed, (unsigned)f->nargs, rtype, f->types)
      : ffi_prep_cif(&f->cif, FFI_DEFAULT_ABI, (unsigned)nfixed, rtype, f->types);
  if (st != FFI_OK) luaL_error(L, "%s: libffi cannot prepare the call (status %d)", f->decl.name, (int)st);
}

/* lib:fn(declaration [, {nogil = true}]) */
static int lib_fn(lua_State *L) {
  clib *lib = checkobj(L, 1, UV_LIBRARY, "ffi library");
  size_t len;
  const char *decl = luaL_checklstring(L, 2, &len);
  int nogil = opt_nogil(L, 3);
  if (lib->handle == NULL) return luaL_error(L, "attempt to use a closed ffi library");
  cfunc *f = lua_newuserdatauv(L, sizeof *f, 3);
  memset(f, 0, sizeof *f);
  f->self = f;
  char err[256];
  if (pl_cdecl_parse(decl, len, &f->decl, err, sizeof err) != 0)
    return luaL_error(L, "bad C declaration \"%s\": %s", decl, err);
  dlerror();
  void *sym = dlsym(lib->handle, f->decl.name);
  if (sym == NULL) {
    const char *e = dlerror();
    const char *libname = push_libname(L, 1);
    return luaL_error(L, "unknown symbol '%s' in %s%s%s%s", f->decl.name, libname,
                      e != NULL ? " (" : "", e != NULL ? e : "", e != NULL ? ")" : "");
  }
  /* POSIX guarantees a data pointer from dlsym converts to a function. */
  memcpy(&f->sym, &sym, sizeof sym);
  f->nogil = nogil;
  f->nargs = f->decl.nparams;
  f->src = decl;  /* the string is uservalue 2 below, so it stays */
  f->fam = pl_family_of(L);
  for (int i = 0; i < f->nargs; i++) {
    f->args[i] = f->decl.params[i];
    f->info[i] = make_carg(f->args[i].kind, f->args[i].kind);
    f->types[i] = ffi_type_of(f->args[i].kind);
  }
  f->rinfo = make_carg(f->decl.ret.kind, f->decl.ret.kind);
  prepare(L, f);
  lua_pushvalue(L, lua_upvalueindex(UV_FUNC));
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 2);
  if (f->decl.variadic) {
    lua_newtable(L);
    lua_setiuservalue(L, -2, 3);
  }
  return 1;
}

/* ---- function objects ---- */

static int count_error(lua_State *L, const cfunc *f, int n) {
  const char *s = f->nargs == 1 ? "" : "s";
  if (f->decl.variadic && !f->bound && n > f->nargs)
    return luaL_error(L, "%s: expected %d argument%s, got %d (give the types of the extra "
                      "arguments of a variadic function: f:variadic(\"int\", ...))",
                      f->decl.name, f->nargs, s, n);
  return luaL_error(L, "%s: expected %d argument%s, got %d", f->decl.name, f->nargs, s, n);
}

/* The hot path.  __call is only reachable through the metatable, which
 * getmetatable cannot return (__metatable), so the full type check of
 * checkobj would only guard against debug.getmetatable(f).__call(x); a
 * userdata of exactly our size that starts with its own address does the
 * same for a third of the cost. */
static int func_call(lua_State *L) {
  cfunc *f = lua_touserdata(L, 1);
  if (f == NULL || lua_rawlen(L, 1) != sizeof *f || f->self != f) checkobj(L, 1, UV_FUNC, "ffi function");
  int n = lua_gettop(L) - 1;
  if (n != f->nargs) return count_error(L, f, n);
  cvalue args[MAX_ARGS], rv;
  void *avalue[MAX_ARGS];
  for (int i = 0; i < n; i++) {
    const carg *a = &f->info[i];
    avalue[i] = &args[i];
    if (a->isint && lua_isinteger(L, i + 2)) {  /* the common case, inline */
      lua_Integer v = lua_tointeger(L, i + 2);
      if (a->sgn ? (v >= a->lo && (v < 0 || (uint64_t)v <= a->hi)) : (v >= 0 && (uint64_t)v <= a->hi)) {
        store_bits(&args[i], (uint64_t)v, a->size);
        continue;
      }
    }
    where w = {f->decl.name, i + 1, i < f->decl.nparams ? f->src : f->vsrc};
    to_c(L, i + 2, &f->args[i], a, 1, &args[i], &w);
  }
  rv.u64 = 0;
  /* While C code runs, this thread is marked as running no coroutine:
   * the runtime's pokes (signals that arm the hook when another thread
   * wants the lock or cancels this one) must not reach into C code, where
   * they would only cut sleeping system calls short with EINTR.  A request
   * made meanwhile arms the hook when the coroutine is marked again, which
   * pl_lock does after a nogil call. */
  pl_family *fam = f->fam != NULL ? f->fam : pl_family_of(L);
  pl_tstate *ts = fam != NULL ? pl_tstate_current(fam) : NULL;
  if (ts == NULL) {  /* a state without parlua: there is no lock */
    ffi_call(&f->cif, f->sym, &rv, avalue);
  } else if (f->nogil) {
    pl_check_cancel(L, ts);
    pl_unlock(L, PL_GIL_FFI);
    pl_tstate_set_running(ts, NULL);
    ffi_call(&f->cif, f->sym, &rv, avalue);
    pl_lock(L, ts);
  } else {
    pl_tstate_set_running(ts, NULL);
    ffi_call(&f->cif, f->sym, &rv, avalue);
    pl_tstate_set_running(ts, L);
  }
  return push_value(L, &f->decl.ret, &f->rinfo, &rv, 1);
}

/* f:variadic(type, ...): f with the types of its extra arguments bound. */
static int func_variadic(lua_State *L) {
  cfunc *f = checkobj(L, 1, UV_FUNC, "ffi function");
  int n = lua_gettop(L) - 1;
  if (!f->decl.variadic)
    return luaL_error(L, "%s: not a variadic function (its declaration has no '...')", f->decl.name);
  if (f->bound)
    return luaL_error(L, "%s: the extra argument types are already bound; call variadic on the "
                      "original function", f->decl.name);
  if (n > PL_CDECL_MAX_PARAMS)
    return luaL_error(L, "%s:variadic: too many types (at most %d)", f->decl.name, PL_CDECL_MAX_PARAMS);
  luaL_Buffer key;
  luaL_buffinit(L, &key);
  for (int i = 0; i < n; i++) {
    if (i > 0) luaL_addstring(&key, ", ");
    lua_pushvalue(L, i + 2);
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "%s:variadic: argument %d: expected a type name, got %s", f->decl.name,
                        i + 1, got(L, i + 2));
    luaL_addvalue(&key);
  }
  luaL_pushresult(&key);
  int keyidx = lua_gettop(L);
  lua_getiuservalue(L, 1, 3);  /* the cache */
  lua_pushvalue(L, keyidx);
  if (lua_rawget(L, -2) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  cfunc *g = lua_newuserdatauv(L, sizeof *g, 3);
  *g = *f;  /* its cif points into f: prepared again below */
  g->self = g;
  const char *vsrc = lua_tostring(L, keyidx);
  size_t at = 0;
  char err[256];
  for (int i = 0; i < n; i++) {
    size_t len;
    const char *s = lua_tolstring(L, i + 2, &len);
    if (at + len > 60000) return luaL_error(L, "%s:variadic: the type list is too long", f->decl.name);
    pl_ctype *t = &g->args[f->nargs + i];
    if (pl_ctype_parse(s, len, t, err, sizeof err) != 0)
      return luaL_error(L, "%s:variadic: argument %d: bad type \"%s\": %s", f->decl.name, i + 1, s, err);
    if (t->kind == PL_C_VOID)
      return luaL_error(L, "%s:variadic: argument %d: void is not a type of value", f->decl.name, i + 1);
    t->tag = (unsigned short)(t->tag + at);  /* now an offset into the joined list */
    at += len + 2;
    g->info[f->nargs + i] = make_carg(t->kind, promoted(t->kind));
    g->types[f->nargs + i] = ffi_type_of(promoted(t->kind));
  }
  g->nargs = f->nargs + n;
  g->bound = 1;
  g->vsrc = vsrc;
  prepare(L, g);
  lua_pushvalue(L, lua_upvalueindex(UV_FUNC));
  lua_setmetatable(L, -2);
  lua_getiuservalue(L, 1, 1);
  lua_setiuservalue(L, -2, 1);
  lua_getiuservalue(L, 1, 2);
  lua_setiuservalue(L, -2, 2);
  lua_pushvalue(L, keyidx);
  lua_setiuservalue(L, -2, 3);
  lua_pushvalue(L, keyidx);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);  /* cache[key] = g */
  return 1;
}

static int func_tostring(lua_State *L) {
  cfunc *f = checkobj(L, 1, UV_FUNC, "ffi function");
  lua_getiuservalue(L, 1, 1);
  const char *libname = push_libname(L, lua_gettop(L));
  if (f->bound)
    lua_pushfstring(L, "ffi function: %s (extra arguments: %s) from %s", f->src, f->vsrc, libname);
  else
    lua_pushfstring(L, "ffi function: %s from %s", f->src, libname);
  return 1;
}

/* ---- pointers ---- */

static int ptr_eq(lua_State *L) {
  void **a = toobj(L, 1, UV_POINTER), **b = toobj(L, 2, UV_POINTER);
  lua_pushboolean(L, a != NULL && b != NULL && *a == *b);
  return 1;
}

static int ptr_tostring(lua_State *L) {
  void **p = checkobj(L, 1, UV_POINTER, "pointer");
  if (*p == NULL) lua_pushliteral(L, "pointer: NULL");
  else lua_pushfstring(L, "pointer: %p", *p);
  return 1;
}

/* p + n, n + p: n bytes further, with the same owner. */
static int ptr_add(lua_State *L) {
  int pi = toobj(L, 1, UV_POINTER) != NULL ? 1 : 2;
  void **p = checkobj(L, pi, UV_POINTER, "pointer");
  lua_Integer n = luaL_checkinteger(L, 3 - pi);
  lua_getiuservalue(L, pi, 1);
  int owner = lua_isnil(L, -1) ? 0 : lua_gettop(L);
  push_pointer(L, (char *)*p + n, owner);
  return 1;
}

/* ---- memory access: buffers (checked) and pointers (not) ---- */

static void parse_type_arg(lua_State *L, int idx, const char *fn, pl_ctype *t) {
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  char err[256];
  if (pl_ctype_parse(s, len, t, err, sizeof err) != 0) luaL_error(L, "%s: bad type \"%s\": %s", fn, s, err);
  if (t->kind == PL_C_VOID) luaL_error(L, "%s: void is not a type of value", fn);
}

static int mem_get(lua_State *L, const unsigned char *addr, const pl_ctype *t) {
  cvalue v;
  v.u64 = 0;
  memcpy(&v, addr, pl_ctype_size(t));
  carg a = make_carg(t->kind, t->kind);
  return push_value(L, t, &a, &v, 0);
}

static int mem_set(lua_State *L, unsigned char *addr, const pl_ctype *t, int vidx, const char *fn) {
  cvalue v;
  where w = {fn, 0, lua_tostring(L, 2)};
  if (pl_ctype_is_string(t) && lua_type(L, vidx) == LUA_TSTRING)
    return luaL_error(L, "%s: cannot store a Lua string's address (it may be collected); copy the "
                      "string into an ffi.buffer and store its pointer", fn);
  carg a = make_carg(t->kind, t->kind);
  to_c(L, vidx, t, &a, 0, &v, &w);
  memcpy(addr, &v, pl_ctype_size(t));
  return 0;
}

static cbuf *check_buffer(lua_State *L, int idx) {
  return checkobj(L, idx, UV_BUFFER, "buffer");
}

/* An offset in [0, size - len] of b, or an error naming both. */
static size_t check_range(lua_State *L, const cbuf *b, int idx, lua_Integer off, size_t len, const char *fn) {
  if (off < 0 || (uint64_t)off > b->size || len > b->size - (size_t)off)
    luaL_error(L, "%s: offset %I with %I bytes is outside the %I-byte buffer", fn, off,
               (lua_Integer)len, (lua_Integer)b->size);
  (void)idx;
  return (size_t)off;
}

static int ffi_buffer(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && (uint64_t)n <= (uint64_t)1 << 40, 1, "buffer size must be between 0 and 2^40 bytes");
  cbuf *b = lua_newuserdatauv(L, sizeof *b + (size_t)n + 15, 0);
  b->size = (size_t)n;
  b->data = (unsigned char *)(((uintptr_t)(b + 1) + 15) & ~(uintptr_t)15);
  memset(b->data, 0, (size_t)n);
  lua_pushvalue(L, lua_upvalueindex(UV_BUFFER));
  lua_setmetatable(L, -2);
  return 1;
}

static int buf_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_buffer(L, 1)->size);
  return 1;
}

static int buf_tostring(lua_State *L) {
  cbuf *b = check_buffer(L, 1);
  lua_pushfstring(L, "buffer (%I bytes): %p", (lua_Integer)b->size, (void *)b->data);
  return 1;
}

/* buffer:ptr([offset]): a pointer into the buffer that keeps it alive. */
static int buf_ptr(lua_State *L) {
  cbuf *b = check_buffer(L, 1);
  size_t off = check_range(L, b, 2, luaL_optinteger(L, 2, 0), 0, "buffer:ptr");
  push_pointer(L, b->data + off, 1);
  return 1;
}

/* buffer:read([offset [, len]]): bytes as a string; to the end by default. */
static int buf_read(lua_State *L) {
  cbuf *b = check_buffer(L, 1);
  lua_Integer off = luaL_optinteger(L, 2, 0);
  lua_Integer len = luaL_optinteger(L, 3, off >= 0 && (uint64_t)off <= b->size ? (lua_Integer)(b->size - (size_t)off) : 0);
  luaL_argcheck(L, len >= 0, 3, "length must not be negative");
  size_t o = check_range(L, b, 2, off, (size_t)len, "buffer:read");
  lua_pushlstring(L, (const char *)b->data + o, (size_t)len);
  return 1;
}

/* buffer:write(offset, string) */
static int buf_write(lua_State *L) {
  cbuf *b = check_buffer(L, 1);
  lua_Integer off = luaL_checkinteger(L, 2);
  size_t len;
  const char *s = luaL_checklstring(L, 3, &len);
  size_t o = check_range(L, b, 2, off, len, "buffer:write");
  memcpy(b->data + o, s, len);
  return 0;
}

/* buffer:get(type [, offset]) */
static int buf_get(lua_State *L) {
  cbuf *b = check_buffer(L, 1);
  pl_ctype t;
  parse_type_arg(L, 2, "buffer:get", &t);
  size_t o = check_range(L, b, 3, luaL_optinteger(L, 3, 0), pl_ctype_size(&t), "buffer:get");
  return mem_get(L, b->data + o, &t);
}

/* buffer:set(type, offset, value) */
static int buf_set(lua_State *L) {
  cbuf *b = check_buffer(L, 1);
  pl_ctype t;
  parse_type_arg(L, 2, "buffer:set", &t);
  size_t o = check_range(L, b, 3, luaL_checkinteger(L, 3), pl_ctype_size(&t), "buffer:set");
  luaL_checkany(L, 4);
  return mem_set(L, b->data + o, &t, 4, "buffer:set");
}

static unsigned char *check_nonnull(lua_State *L, int idx, const char *fn) {
  void **p = checkobj(L, idx, UV_POINTER, "pointer");
  if (*p == NULL) luaL_error(L, "%s: NULL pointer", fn);
  return *p;
}

/* pointer:get(type [, offset]) and pointer:set(type, offset, value): as a
 * buffer's, but unchecked -- the memory is wherever the pointer says. */
static int ptr_get(lua_State *L) {
  unsigned char *p = check_nonnull(L, 1, "pointer:get");
  pl_ctype t;
  parse_type_arg(L, 2, "pointer:get", &t);
  return mem_get(L, p + luaL_optinteger(L, 3, 0), &t);
}

static int ptr_set(lua_State *L) {
  unsigned char *p = check_nonnull(L, 1, "pointer:set");
  pl_ctype t;
  parse_type_arg(L, 2, "pointer:set", &t);
  lua_Integer off = luaL_checkinteger(L, 3);
  luaL_checkany(L, 4);
  return mem_set(L, p + off, &t, 4, "pointer:set");
}

/* ffi.string(ptr [, len]): bytes at a pointer or buffer; without len up to
 * the first NUL (within the buffer for a buffer). */
static int ffi_string(lua_State *L) {
  cbuf *b = toobj(L, 1, UV_BUFFER);
  int has_len = !lua_isnoneornil(L, 2);
  lua_Integer len = has_len ? luaL_checkinteger(L, 2) : 0;
  luaL_argcheck(L, len >= 0, 2, "length must not be negative");
  if (b != NULL) {
    size_t n = b->size;
    if (has_len) n = (size_t)check_range(L, b, 2, 0, (size_t)len, "ffi.string") + (size_t)len;
    else {
      const unsigned char *z = memchr(b->data, 0, b->size);
      if (z != NULL) n = (size_t)(z - b->data);
    }
    lua_pushlstring(L, (const char *)b->data, n);
    return 1;
  }
  void **p = toobj(L, 1, UV_POINTER);
  if (p == NULL) return luaL_error(L, "ffi.string: argument 1: expected a pointer or buffer, got %s", got(L, 1));
  if (*p == NULL) return luaL_error(L, "ffi.string: argument 1 is a NULL pointer");
  if (has_len) lua_pushlstring(L, (const char *)*p, (size_t)len);
  else lua_pushstring(L, (const char *)*p);
  return 1;
}

static int ffi_sizeof(lua_State *L) {
  pl_ctype t;
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char err[256];
  if (pl_ctype_parse(s, len, &t, err, sizeof err) != 0) return luaL_error(L, "ffi.sizeof: bad type \"%s\": %s", s, err);
  if (t.kind == PL_C_VOID || pl_ctype_size(&t) == 0)
    return luaL_error(L, "ffi.sizeof: %s has no size", s);
  lua_pushinteger(L, (lua_Integer)pl_ctype_size(&t));
  return 1;
}

/* ---- crossing states ---- */

/* [-0, +4] path (or nil), declaration, nogil, extra types (or nil). */
static int func_describe(lua_State *L, int idx) {
  cfunc *f = lua_touserdata(L, idx);  /* the codec found it by its metatable */
  lua_getiuservalue(L, idx, 1);
  if (lua_getiuservalue(L, -1, 1) != LUA_TSTRING) {  /* ffi.open(): the running program */
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  lua_remove(L, -2);
  lua_getiuservalue(L, idx, 2);
  lua_pushboolean(L, f->nogil);
  if (f->bound) lua_getiuservalue(L, idx, 3);
  else lua_pushnil(L);
  return 4;
}

/* [-4, +1] the receiver's own function for a description. */
static void func_rebuild(lua_State *L, int n) {
  int b = lua_gettop(L) - n + 1;
  if (n != 4 || !(lua_isnil(L, b) || lua_type(L, b) == LUA_TSTRING) || lua_type(L, b + 1) != LUA_TSTRING ||
      !lua_isboolean(L, b + 2) || !(lua_isnil(L, b + 3) || lua_type(L, b + 3) == LUA_TSTRING))
    luaL_error(L, "malformed ffi function description");
  luaL_requiref(L, "parlua.ffi", luaopen_parlua_ffi, 0);
  lua_getfield(L, -1, "open");
  lua_pushvalue(L, b);
  lua_call(L, 1, 1);                      /* the library */
  lua_getfield(L, -1, "fn");
  lua_insert(L, -2);
  lua_pushvalue(L, b + 1);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, b + 2);
  lua_setfield(L, -2, "nogil");
  lua_call(L, 3, 1);                      /* the function */
  if (lua_type(L, b + 3) == LUA_TSTRING) {  /* a bound variant: "int, double" */
    lua_getfield(L, -1, "variadic");
    lua_insert(L, -2);
    const char *s = lua_tostring(L, b + 3);
    int k = 0;
    while (*s != '\0') {
      const char *comma = strstr(s, ", ");
      size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);
      luaL_checkstack(L, 2, "too many extra types");
      lua_pushlstring(L, s, len);
      k++;
      s += len;
      if (comma != NULL) s += 2;
    }
    lua_call(L, k + 1, 1);
  }
  lua_replace(L, b);
  lua_settop(L, b);
}

static const pl_transfer_type func_type = {
    FUNC_MT, "ffi function", "parlua.ffi", NULL, NULL, NULL, NULL, func_describe, func_rebuild, 0};

/* ---- the module ---- */

/* [-0, +0] set `funcs` into the table on top, with the shared upvalues
 * found at absolute index `first` onwards. */
static void setfuncs(lua_State *L, const luaL_Reg *funcs, int first) {
  for (int i = 0; i < NUPVALUES; i++) lua_pushvalue(L, first + i);
  luaL_setfuncs(L, funcs, NUPVALUES);
}

/* [-0, +0] fill the metatable at `mt`: metamethods, and methods as __index. */
static void fill_class(lua_State *L, int mt, const luaL_Reg *meta, const luaL_Reg *methods, int first) {
  lua_pushvalue(L, mt);
  setfuncs(L, meta, first);
  if (methods != NULL) {
    lua_newtable(L);
    setfuncs(L, methods, first);
    lua_setfield(L, -2, "__index");
  }
  lua_pushliteral(L, "parlua.ffi");
  lua_setfield(L, -2, "__metatable");  /* getmetatable cannot reach __call */
  lua_pop(L, 1);
}

PARLUA_API int luaopen_parlua_ffi(lua_State *L) {
  static const luaL_Reg func_meta[] = {{"__call", func_call}, {"__tostring", func_tostring}, {NULL, NULL}};
  static const luaL_Reg func_methods[] = {{"variadic", func_variadic}, {NULL, NULL}};
  static const luaL_Reg ptr_meta[] = {{"__eq", ptr_eq}, {"__tostring", ptr_tostring}, {"__add", ptr_add}, {NULL, NULL}};
  static const luaL_Reg ptr_methods[] = {{"get", ptr_get}, {"set", ptr_set}, {NULL, NULL}};
  static const luaL_Reg buf_meta[] = {{"__len", buf_len}, {"__tostring", buf_tostring}, {NULL, NULL}};
  static const luaL_Reg buf_methods[] = {{"ptr", buf_ptr}, {"read", buf_read}, {"write", buf_write},
                                         {"get", buf_get}, {"set", buf_set}, {NULL, NULL}};
  static const luaL_Reg lib_meta[] = {{"__gc", lib_gc}, {"__tostring", lib_tostring}, {NULL, NULL}};
  static const luaL_Reg lib_methods[] = {{"fn", lib_fn}, {NULL, NULL}};
  static const luaL_Reg module[] = {{"open", ffi_open}, {"buffer", ffi_buffer}, {"string", ffi_string},
                                    {"sizeof", ffi_sizeof}, {NULL, NULL}};
  int first = lua_gettop(L) + 1;  /* the upvalues, in UV_* order */
  luaL_newmetatable(L, FUNC_MT);
  luaL_newmetatable(L, POINTER_MT);
  luaL_newmetatable(L, BUFFER_MT);
  luaL_newmetatable(L, LIBRARY_MT);
  void **null = lua_newuserdatauv(L, sizeof(void *), 1);
  *null = NULL;
  lua_pushvalue(L, first + UV_POINTER - 1);
  lua_setmetatable(L, -2);
  fill_class(L, first + UV_FUNC - 1, func_meta, func_methods, first);
  fill_class(L, first + UV_POINTER - 1, ptr_meta, ptr_methods, first);
  fill_class(L, first + UV_BUFFER - 1, buf_meta, buf_methods, first);
  fill_class(L, first + UV_LIBRARY - 1, lib_meta, lib_methods, first);
  pl_codec_register_type(L, &func_type);
  lua_newtable(L);
  setfuncs(L, module, first);
  lua_pushvalue(L, first + UV_NULL - 1);
  lua_setfield(L, -2, "NULL");
  return 1;
}
