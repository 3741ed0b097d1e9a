/* File handles: making them, closing them, and the lock around their
 * stdio calls (stream.h). */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "core/blocking.h"
#include "blockio/filepeek.h"
#include "blockio/stream.h"

static int is_ours(luaL_Stream *p) {
  return p->closef == pl_stream_fclose || p->closef == pl_stream_pclose;
}

pl_stream *pl_stream_new(lua_State *L) {
  pl_stream *p = (pl_stream *)lua_newuserdatauv(L, sizeof(pl_stream), 0);
  p->s.f = NULL;
  p->s.closef = NULL;  /* closed until the FILE is there */
  p->users = 0;
  luaL_setmetatable(L, LUA_FILEHANDLE);
  return p;
}

luaL_Stream *pl_stream_check_open(lua_State *L) {
  luaL_Stream *p = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  if (p->closef == NULL) luaL_error(L, "attempt to use a closed file");
  return p;
}

void pl_stream_begin(lua_State *L, luaL_Stream *p, int may_block, pl_gil_reason why,
                     pl_stream_call *call) {
  call->ts = NULL;
  call->counted = NULL;
  if (!may_block) return;
  /* Counted while the lock is still held: `users` is guarded by it. */
  pl_stream *counted = is_ours(p) ? (pl_stream *)p : NULL;
  if (counted != NULL) counted->users++;
  call->ts = pl_blocking_begin(L, why);
  if (call->ts != NULL) call->counted = counted;
  else if (counted != NULL) counted->users--;  /* no lock given away: nobody can close it meanwhile */
}

void pl_stream_end(pl_stream_call *call) {
  if (call->ts == NULL) return;
  pl_blocking_end(call->ts);
  /* The userdata lives on (the caller's stack anchors it) even if another
   * thread closed the file meanwhile. */
  if (call->counted != NULL) call->counted->users--;
}

/* Another thread is reading or writing p's FILE without the lock: let it
 * finish before the FILE goes away.  Polled, as it only happens when a
 * script closes a file another thread is using. */
static void wait_unused(lua_State *L, pl_stream *p) {
  while (p->users > 0) {
    pl_tstate *ts = pl_blocking_begin(L, PL_GIL_IO);
    if (ts == NULL) return;  /* no lock to give: nobody else can be inside */
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
    pl_blocking_end(ts);
  }
}

int pl_stream_fclose(lua_State *L) {
  pl_stream *p = (pl_stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  wait_unused(L, p);
  pl_tstate *ts = pl_flush_may_block(p->s.f) ? pl_blocking_begin(L, PL_GIL_IO) : NULL;
  int res = fclose(p->s.f);
  pl_blocking_end(ts);
  return luaL_fileresult(L, res == 0, NULL);
}

int pl_stream_pclose(lua_State *L) {
  pl_stream *p = (pl_stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  wait_unused(L, p);
  pl_tstate *ts = pl_blocking_begin(L, PL_GIL_POPEN);  /* waits for the child */
  errno = 0;  /* luaL_execresult tells a failed wait by errno */
  int stat = pclose(p->s.f);
  pl_blocking_end(ts);
  return luaL_execresult(L, stat);
}
