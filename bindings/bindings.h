/* Private to the parlua bindings: what every Lua-facing module file shares.
 *
 * Each bindings/l*.c file adds its functions to the module table on top of
 * the stack through one pl_open_<part>(L) function, listed in lparlua.c.
 *
 * Runtime objects are "boxes": a userdata holding one pointer to a C object
 * the runtime refcounts, so several states can hold the same object.  A box
 * whose pointer is NULL is closed.
 */
#ifndef PL_BINDINGS_H
#define PL_BINDINGS_H

#include "lua.h"
#include "lauxlib.h"
#include "core/adopt.h"
#include "core/enter.h"
#include "core/errors.h"
#include "core/runtime.h"
#include "codec/codec.h"

/* lparlua.c: parlua and parlua.ffi, preloaded in every state of a runtime
 * made by parlua_new or by adopting a stock state. */
extern const luaL_Reg pl_builtin_modules[];

void pl_open_core(lua_State *L);
void pl_open_thread(lua_State *L);
void pl_open_sync(lua_State *L);
void pl_open_queue(lua_State *L);
void pl_open_subprocess(lua_State *L);
void pl_open_future(lua_State *L);
void pl_open_pool(lua_State *L);
void pl_open_mpi(lua_State *L);
void pl_open_codec(lua_State *L);
void pl_open_gil_trace(lua_State *L);

/* lcodec.c: the `push` of a shared transfer type whose box is one of ours
 * (pl_box_new): a new box holding a new reference to obj. */
void pl_codec_push_box(lua_State *L, const pl_transfer_type *t, void *obj);

/* [-0, +0] Register the metatable `tname`: `methods` in __index (or, with
 * `index`, a function that gets the method table as its upvalue), and
 * __gc, __close and __tostring where given (NULL: none). */
void pl_new_class(lua_State *L, const char *tname, const luaL_Reg *methods, lua_CFunction index,
                  lua_CFunction gc, lua_CFunction close, lua_CFunction tostring);
/* Raises Shutdown once the runtime has closed.  Lua gives no finalizer to
 * userdata made while lua_close runs the last finalizers, so an object made
 * then would leak: constructors refuse before they allocate anything. */
void pl_check_not_closed(lua_State *L, const char *tname);
/* [-0, +1] a new box of metatable `tname` holding `ptr`.  A box made closed
 * (ptr NULL, filled in later) is checked with pl_check_not_closed; a caller
 * passing an object checks before allocating it. */
void **pl_box_new(lua_State *L, const char *tname, void *ptr);
/* The pointer in the box at idx; raises "attempt to use a closed <what>". */
void *pl_box_check(lua_State *L, int idx, const char *tname, const char *what);
/* The box itself, for __gc/__close (which tolerate closed boxes). */
void **pl_box_get(lua_State *L, int idx, const char *tname);

/* A timeout argument: nil/none is "forever" (-1); a negative number is an
 * argument error. */
double pl_opt_timeout(lua_State *L, int idx);


/* Give the global lock away around a wait on obj, and take it back.  The
 * extra reference keeps obj alive even if its box is finalized meanwhile. */
typedef struct pl_sync pl_sync;
pl_tstate *pl_block_begin(lua_State *L, pl_sync *obj);
void pl_block_end(lua_State *L, pl_tstate *ts, pl_sync *obj);


#endif
