/* Private to the parlua runtime: the file handles of parlua's io library.
 *
 * A handle is Lua's own (a luaL_Stream userdata with metatable "FILE*"), so
 * stock functions such as file:seek, io.type and __gc work on it unchanged.
 * The handles parlua opens carry one more field: how many threads are
 * inside a read or write of it with the global lock let go.  A thread that
 * closes such a handle waits until that count is 0 before fclose frees the
 * FILE, as CPython's close waits for its buffer lock.
 */
#ifndef PL_STREAM_H
#define PL_STREAM_H

#include "lua.h"
#include "lauxlib.h"
#include "core/gil_trace.h"
#include "core/tstate.h"

typedef struct pl_stream {
  luaL_Stream s;  /* first: this is what liolib sees */
  int users;      /* guarded by the global lock */
} pl_stream;

/* A new handle, closed until p->s.closef is set (liolib's newprefile). */
pl_stream *pl_stream_new(lua_State *L);                /* [-0, +1] */
/* The closing functions of the handles parlua opens (luaL_Stream.closef). */
int pl_stream_fclose(lua_State *L);
int pl_stream_pclose(lua_State *L);

/* The handle at index 1, open ("attempt to use a closed file" otherwise). */
luaL_Stream *pl_stream_check_open(lua_State *L);

/* Around one stdio call on p: let the lock go when `may_block` (p may be a
 * stock liolib handle: then nothing is counted). */
typedef struct pl_stream_call {
  pl_tstate *ts;       /* the lock was let go */
  pl_stream *counted;  /* whose `users` was raised */
} pl_stream_call;
void pl_stream_begin(lua_State *L, luaL_Stream *p, int may_block, pl_gil_reason why,
                     pl_stream_call *call);
void pl_stream_end(pl_stream_call *call);

#endif
