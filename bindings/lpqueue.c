/* The methods of a par.queue once it has a process channel (see
 * runtime/pqueue.h): lqueue.c hands over to these as soon as the queue
 * has one.  They raise exactly what the in-process methods raise (Timeout
 * "queue is empty"/"queue is full", Shutdown "put on a closed queue" and
 * "get on a closed and empty queue", "task_done() called too many
 * times"), and block without the global lock, interruptibly.  Values are
 * encoded in the portable form: a value the channel cannot carry (a lock)
 * makes put fail with a Transfer error ("queue item: cannot send a lock
 * to another process").
 */
#include <errno.h>
#include <string.h>

#include "core/clock.h"
#include "lprocess.h"
#include "proc/portable.h"
#include "proc/pqueue.h"

static int raise_waited(lua_State *L, const char *what, double timeout) {
  if (timeout <= 0) return pl_error_raise(L, PL_TIMEOUT, "queue is %s", what);
  return pl_error_raise(L, PL_TIMEOUT, "queue is %s (waited %f seconds)", what, (lua_Number)timeout);
}

int pl_pqueue_put(lua_State *L, pl_queue *q, int idx, double timeout) {
  pl_pchan *c = pl_pchan_of(q);
  pl_obuf b;
  pl_fdlist fds;
  memset(&b, 0, sizeof b);
  pl_fdlist_init(&fds);
  if (pl_obuf_frame_begin(&b, PL_PCHAN_ITEM, 0, 0) != 0) return luaL_error(L, "not enough memory");
  pl_port_encode_or_free(L, idx, "queue item", &b, &fds);
  pl_sync_incref(&q->head);  /* the queue outlives its box while we wait */
  pl_tstate *ts = pl_unlock(L, PL_GIL_QUEUE);
  int rc = pl_pchan_put(c, ts, pl_deadline_after(timeout), &b, &fds);
  pl_lock(L, ts);
  pl_sync_decref(&q->head);
  switch (rc) {
  case 0: return 0;
  case PL_ETIMEOUT: return raise_waited(L, "full", timeout);
  case PL_ECLOSED: return pl_error_raise(L, PL_SHUTDOWN, "put on a closed queue");
  case PL_ECANCELLED: return pl_error_raise_cancelled(L, ts);
  case PL_ENOMEM: return luaL_error(L, "not enough memory");
  default: return pl_error_raise_os(L, -rc, "queue put");
  }
}

int pl_pqueue_get(lua_State *L, pl_queue *q, double timeout) {
  pl_pchan *c = pl_pchan_of(q);
  pl_frame f;
  pl_sync_incref(&q->head);
  pl_tstate *ts = pl_unlock(L, PL_GIL_QUEUE);
  int rc = pl_pchan_get(c, ts, pl_deadline_after(timeout), &f);
  pl_lock(L, ts);
  pl_sync_decref(&q->head);
  switch (rc) {
  case 0: break;
  case PL_ETIMEOUT: return raise_waited(L, "empty", timeout);
  case PL_ECLOSED: return pl_error_raise(L, PL_SHUTDOWN, "get on a closed and empty queue");
  case PL_ECANCELLED: return pl_error_raise_cancelled(L, ts);
  case PL_ENOMEM: return luaL_error(L, "not enough memory");
  case -EPROTO: return pl_error_raise(L, PL_TRANSFER, "malformed message: a queue item that is not one");
  default: return pl_error_raise_os(L, -rc, "queue get");
  }
  pl_pmsg m;
  char err[256];
  if (pl_port_unpack_frame(&f, 0, &m, err, sizeof err) != 0) return pl_error_raise(L, PL_TRANSFER, "%s", err);
  int top = lua_gettop(L);
  int n = pl_pmsg_push(L, &m);
  if (n != 1) {
    lua_settop(L, top);
    return pl_error_raise(L, PL_TRANSFER, "malformed message: %d values in one queue item", n);
  }
  return 1;
}

int pl_pqueue_qsize(lua_State *L, pl_queue *q) {
  lua_pushinteger(L, (lua_Integer)pl_pchan_size(pl_pchan_of(q)));
  return 1;
}

int pl_pqueue_full(lua_State *L, pl_queue *q) {
  pl_pchan *c = pl_pchan_of(q);
  long long max = pl_pchan_maxsize(c);
  lua_pushboolean(L, max > 0 && pl_pchan_size(c) >= max);
  return 1;
}

int pl_pqueue_task_done(lua_State *L, pl_queue *q) {
  if (pl_pchan_task_done(pl_pchan_of(q)) != 0) return luaL_error(L, "task_done() called too many times");
  return 0;
}

int pl_pqueue_join(lua_State *L, pl_queue *q, double timeout) {
  pl_pchan *c = pl_pchan_of(q);
  int done = pl_pchan_unfinished(c) == 0;
  if (!done && timeout != 0) {
    pl_sync_incref(&q->head);
    pl_tstate *ts = pl_unlock(L, PL_GIL_QUEUE);
    int rc = pl_pchan_join(c, ts, pl_deadline_after(timeout));
    pl_lock(L, ts);
    pl_sync_decref(&q->head);
    if (rc == PL_ECANCELLED) pl_error_raise_cancelled(L, ts);
    done = rc == PL_OK;
  }
  lua_pushboolean(L, done);
  return 1;
}

int pl_pqueue_close(lua_State *L, pl_queue *q) {
  (void)L;
  pl_pchan_close(pl_pchan_of(q));
  return 0;
}

int pl_pqueue_is_closed(lua_State *L, pl_queue *q) {
  lua_pushboolean(L, pl_pchan_closed(pl_pchan_of(q)));
  return 1;
}
