/* par.pipe([duplex]): Python's multiprocessing.Pipe over the connections of
 * runtime/conn.c.
 *
 *   local a, b = par.pipe()          -- duplex: both ends send and receive
 *   local r, w = par.pipe(false)     -- r only receives, w only sends
 *   w:send(v)                        -- any value the codec can send to
 *                                    -- another process (pipes and queues
 *                                    -- included); blocks while the pipe is full
 *   r:recv([timeout]) -> v           -- Timeout error when nothing came in time
 *   r:poll([timeout]) -> boolean     -- whether recv would not block; no timeout
 *                                    -- (nil) answers at once, math.huge waits
 *   c:close(), c:fileno(), c.closed, c.readable, c.writable
 *
 * Ends are usable between threads (each blocks without the global lock and
 * a forced cancel ends the wait), between states (the same C object
 * arrives: a shared transfer type), and with processes -- started before
 * or after the pipe was made -- to which an end is sent as an argument, a
 * queue item or a message on another pipe: its descriptor travels with the
 * message.  Values always travel by copy, in the portable form, whoever
 * receives them; so a lock is refused even between threads ("pipe
 * message: cannot send a lock to another process"), as with Python's
 * pickling Connection.  Where API.md is silent, Python decides:
 *   - duplex=false is two one-way ends: a socketpair with the unused
 *     direction shut, rather than os.pipe(), so that its ends can carry
 *     pipes and queues too (descriptors pass only over sockets).
 *   - recv on an end whose other end is closed in every process, with
 *     nothing left to read, raises a "Shutdown" error "recv on a pipe
 *     whose other end is closed" (Python's EOFError); send then raises an
 *     OSError (EPIPE: Python's BrokenPipeError).
 *   - A connection closed in this process raises "attempt to use a closed
 *     pipe connection"; its copies in other processes stay open.
 *   - `local a <close>, b <close> = par.pipe()` closes the ends.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "proc/conn.h"
#include "lprocess.h"
#include "proc/portable.h"

static const char CONN_MT[] = "parlua.Connection";
#define FRAME_MSG 0x4d

static pl_conn *check_conn(lua_State *L) {
  pl_conn *c = pl_box_check(L, 1, CONN_MT, "pipe connection");
  if (pl_conn_is_closed(c)) luaL_error(L, "attempt to use a closed pipe connection");
  return c;
}

/* ---- messages -------------------------------------------------------- */

static int c_decode(lua_State *L) {
  pl_pmsg *m = lua_touserdata(L, 1);
  lua_settop(L, 0);
  return pl_pmsg_decode(L, m);
}

int pl_pmsg_push(lua_State *L, pl_pmsg *m) {
  int top = lua_gettop(L);
  lua_pushcfunction(L, c_decode);
  lua_pushlightuserdata(L, m);
  int status = lua_pcall(L, 1, LUA_MULTRET, 0);
  pl_pmsg_free(m);
  if (status != LUA_OK) return pl_error_throw(L);
  return lua_gettop(L) - top;
}

/* ---- the methods ----------------------------------------------------- */

static int conn_send(lua_State *L) {
  pl_conn *c = check_conn(L);
  luaL_checkany(L, 2);
  if (!(c->flags & PL_CONN_WRITE)) return luaL_error(L, "this end of the pipe only receives");
  lua_settop(L, 2);
  pl_obuf b;
  pl_fdlist fds;
  memset(&b, 0, sizeof b);
  pl_fdlist_init(&fds);
  if (pl_obuf_frame_begin(&b, FRAME_MSG, 0, 0) != 0) return luaL_error(L, "not enough memory");
  pl_port_encode_or_free(L, 2, "pipe message", &b, &fds);
  pl_obuf_frame_end(&b, 0);
  b.data[3] = (unsigned char)fds.n;
  pl_tstate *ts = pl_unlock(L, PL_GIL_PIPE);
  int rc = pl_conn_send(c, ts, b.data, b.len, fds.fd, fds.n);
  pl_lock(L, ts);
  pl_obuf_free(&b);
  pl_fdlist_free(&fds);  /* the receiver has its own copies */
  switch (rc) {
  case 0: return 0;
  case PL_ECANCELLED: return pl_error_raise_cancelled(L, ts);
  case PL_ECLOSED: return luaL_error(L, "attempt to use a closed pipe connection");
  case -EPIPE:
  case -ECONNRESET:
    return pl_error_raise_os(L, -rc, "send on a pipe whose other end is closed");
  default: return pl_error_raise_os(L, -rc, "send");
  }
}

static int recv_error(lua_State *L, int rc, pl_tstate *ts, double timeout) {
  switch (rc) {
  case PL_ETIMEOUT:
    return pl_error_raise(L, PL_TIMEOUT, "nothing to receive within %f seconds", (lua_Number)timeout);
  case PL_ECANCELLED: return pl_error_raise_cancelled(L, ts);
  case PL_ECLOSED: return luaL_error(L, "attempt to use a closed pipe connection");
  case PL_EEOF: return pl_error_raise(L, PL_SHUTDOWN, "recv on a pipe whose other end is closed");
  case PL_ESTALLED:
    return pl_error_raise(L, PL_SHUTDOWN, "recv on a pipe whose other end closed in the middle of a message "
                                          "(its sender died or was cancelled while sending)");
  case PL_EMALFORMED: return pl_error_raise(L, PL_TRANSFER, "malformed message: the pipe does not carry parlua messages");
  case PL_ENOTREAD: return luaL_error(L, "this end of the pipe only sends");
  default: return pl_error_raise_os(L, -rc, "recv");
  }
}

static int conn_recv(lua_State *L) {
  pl_conn *c = check_conn(L);
  double timeout = pl_opt_timeout(L, 2);
  if (!(c->flags & PL_CONN_READ)) return luaL_error(L, "this end of the pipe only sends");
  pl_frame f;
  pl_tstate *ts = pl_unlock(L, PL_GIL_PIPE);
  int rc = pl_conn_recv(c, ts, pl_deadline_after(timeout), &f);
  pl_lock(L, ts);
  if (rc != 0) return recv_error(L, rc, ts, timeout);
  if (f.type != FRAME_MSG) {
    pl_frame_free(&f);
    return recv_error(L, PL_EMALFORMED, ts, timeout);
  }
  pl_pmsg m;
  char err[256];
  if (pl_port_unpack_frame(&f, 0, &m, err, sizeof err) != 0)
    return pl_error_raise(L, PL_TRANSFER, "%s", err);
  lua_settop(L, 1);
  int n = pl_pmsg_push(L, &m);
  if (n != 1) return pl_error_raise(L, PL_TRANSFER, "malformed message: %d values in one pipe message", n);
  return 1;
}

static int conn_poll(lua_State *L) {
  pl_conn *c = check_conn(L);
  double timeout = lua_isnoneornil(L, 2) ? 0 : pl_opt_timeout(L, 2);
  if (!(c->flags & PL_CONN_READ)) return luaL_error(L, "this end of the pipe only sends");
  int64_t deadline = isinf(timeout) ? INT64_MAX : pl_deadline_after(timeout);
  pl_tstate *ts = pl_unlock(L, PL_GIL_PIPE);
  int rc = pl_conn_poll(c, ts, deadline);
  pl_lock(L, ts);
  if (rc < 0 || rc == PL_ECANCELLED) {
    if (rc == PL_EEOF) rc = 1;
    else return recv_error(L, rc, ts, timeout);
  }
  lua_pushboolean(L, rc == 1);
  return 1;
}

static int conn_close(lua_State *L) {
  void **box = pl_box_get(L, 1, CONN_MT);
  if (*box != NULL) pl_conn_close(*box);
  return 0;
}

static int conn_fileno(lua_State *L) {
  pl_conn *c = check_conn(L);
  lua_pushinteger(L, pl_conn_fileno(c));
  return 1;
}

static int conn_gc(lua_State *L) {
  void **box = pl_box_get(L, 1, CONN_MT);
  pl_conn *c = *box;
  if (c == NULL) return 0;
  *box = NULL;
  pl_conn_decref(c);
  return 0;
}

static int conn_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, CONN_MT);
  pl_conn *c = *box;
  if (c == NULL || pl_conn_is_closed(c)) return lua_pushliteral(L, "Connection (closed)"), 1;
  const char *how = c->flags == (PL_CONN_READ | PL_CONN_WRITE) ? "duplex"
                    : c->flags == PL_CONN_READ                 ? "receive"
                                                               : "send";
  lua_pushfstring(L, "Connection(fd=%d, %s)", pl_conn_fileno(c), how);
  return 1;
}

/* Methods first, then the fields closed, readable, writable. */
static int conn_index(lua_State *L) {
  pl_conn *c = pl_box_check(L, 1, CONN_MT, "pipe connection");
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  const char *k = lua_tostring(L, 2);
  if (k == NULL) return 0;
  if (strcmp(k, "closed") == 0) lua_pushboolean(L, pl_conn_is_closed(c));
  else if (strcmp(k, "readable") == 0) lua_pushboolean(L, c->flags & PL_CONN_READ);
  else if (strcmp(k, "writable") == 0) lua_pushboolean(L, c->flags & PL_CONN_WRITE);
  else lua_pushnil(L);
  return 1;
}

/* par.pipe([duplex]) -> a, b */
static int pipe_new(lua_State *L) {
  int duplex = 1;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    duplex = lua_toboolean(L, 1);
  }
  void **ba = pl_box_new(L, CONN_MT, NULL);  /* closed until made */
  void **bb = pl_box_new(L, CONN_MT, NULL);
  pl_conn *a, *b;
  int rc = pl_conn_pair(duplex, &a, &b);
  if (rc == -ENOMEM) return luaL_error(L, "not enough memory");
  if (rc != 0) return pl_error_raise_os(L, -rc, "cannot make a pipe");
  *ba = a;
  *bb = b;
  return 2;
}

static void conn_retain(void *obj) { pl_conn_incref(obj); }
static void conn_release(void *obj) { pl_conn_decref(obj); }

static const pl_transfer_type conn_type = {
    CONN_MT, "pipe connection", "parlua", conn_retain, conn_release, NULL, pl_codec_push_box,
    NULL, NULL, PL_PORT_CONN};

void pl_open_pipe(lua_State *L) {
  static const luaL_Reg methods[] = {{"send", conn_send},   {"recv", conn_recv},
                                     {"poll", conn_poll},   {"close", conn_close},
                                     {"fileno", conn_fileno}, {NULL, NULL}};
  pl_new_class(L, CONN_MT, methods, conn_index, conn_gc, conn_close, conn_tostring);
  pl_port_register_type(L, &conn_type);
  lua_pushcfunction(L, pipe_new);
  lua_setfield(L, -2, "pipe");
}
