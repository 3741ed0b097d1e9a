/* par.queue([maxsize]): Python's queue.Queue over the C queue of
 * runtime/queue.c, plus close().
 *
 * A value put is anchored in the registry of the putting state and the
 * queue carries the reference, so values of one state pass by reference
 * (nil included).  A queue sent to another state (a `states` worker) is
 * shared from then on: values put are encoded by the codec and every get
 * decodes a copy, in whichever state it runs (see runtime/queue.h for how
 * the items already inside are converted).  A queue sent to another
 * process gets a process channel (runtime/pqueue.h), and from then on
 * every method hands over to bindings/lpqueue.c.  A value that cannot be
 * sent makes put fail with a Transfer error ("queue item: ...").  Where API.md
 * is silent, Python decides:
 *   - maxsize 0 (the default) is unbounded; a negative maxsize is an error.
 *   - put(v [, timeout]) and get([timeout]) also take Python's block flag
 *     first: put(v, false) and get(false) never wait, put(v, true, t) and
 *     get(true, t) wait up to t seconds.  put_nowait(v) and get_nowait()
 *     are the same as the false forms.
 *   - A get that finds the queue empty after its time (at once for the
 *     non-waiting forms) raises an error object of kind "Timeout" with the
 *     message "queue is empty"; a put on a full queue likewise raises
 *     "Timeout" with "queue is full" (Python's Empty and Full).
 *   - close() (Python 3.13's shutdown): put afterwards raises a "Shutdown"
 *     error "put on a closed queue"; get still returns what the queue
 *     holds, then raises "Shutdown" "get on a closed and empty queue";
 *     blocked getters and putters wake up with those errors.
 *   - task_done() more often than items were put raises "task_done()
 *     called too many times".  join([timeout]) returns true once every
 *     item is done, false when the timeout (an extension) ran out.
 *   - Fields: maxsize.  Extra method: is_closed().
 * The box has no __close: close() is the queue's own operation.
 */
#include <stdlib.h>
#include <string.h>

#include "bindings.h"
#include "core/clock.h"
#include "lprocess.h"
#include "proc/pqueue.h"
#include "sync/queue.h"

static const char QUEUE_MT[] = "parlua.Queue";

static pl_queue *check_queue(lua_State *L) {
  return pl_box_check(L, 1, QUEUE_MT, "queue");
}

/* [block,] [timeout] at idx: the seconds to wait, -1 forever, 0 not at all. */
static double opt_wait(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TBOOLEAN) {
    if (!lua_toboolean(L, idx)) {
      luaL_argcheck(L, lua_isnoneornil(L, idx + 1), idx + 1,
                    "can't specify a timeout for a non-blocking call");
      return 0;
    }
    return pl_opt_timeout(L, idx + 1);
  }
  return pl_opt_timeout(L, idx);
}

static int encode_item(lua_State *L) {
  pl_msg **out = lua_touserdata(L, 2);
  *out = pl_codec_encode(L, 1, 1, "queue item", NULL);
  return 0;
}

/* The item for the value at idx: a reference, or encoded when the queue
 * is shared (may raise a Transfer error, having stored nothing). */
static void make_item(lua_State *L, pl_queue *q, int idx, pl_qitem *it) {
  it->owner = NULL;
  it->ref = LUA_NOREF;
  it->msg = NULL;
  if (pl_queue_is_shared(q)) {
    it->kind = PL_QITEM_MSG;
    it->msg = pl_codec_encode(L, idx, 1, "queue item", NULL);
  } else {
    it->kind = PL_QITEM_REF;
    it->owner = pl_family_of(L);
    lua_pushvalue(L, idx);
    it->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

/* Let go of an item that was not stored. */
static void drop_item(lua_State *L, pl_qitem *it) {
  if (it->kind == PL_QITEM_MSG) pl_msg_free(it->msg);
  else luaL_unref(L, LUA_REGISTRYINDEX, it->ref);
  it->msg = NULL;
  it->ref = LUA_NOREF;
}

static int decode_item(lua_State *L) {
  const pl_msg *m = lua_touserdata(L, 1);
  lua_settop(L, 0);
  return pl_codec_decode(L, m);
}

/* [-0, +1] the value an item stands for; the item is used up. */
static int push_item(lua_State *L, const pl_qitem *it) {
  if (it->kind == PL_QITEM_MSG) {
    lua_pushcfunction(L, decode_item);
    lua_pushlightuserdata(L, it->msg);
    int status = lua_pcall(L, 1, 1, 0);
    pl_msg_free(it->msg);
    if (status != LUA_OK) return pl_error_throw(L);
    return 1;
  }
  if (it->owner != pl_family_of(L))
    return luaL_error(L, "cannot receive a value put by another state");
  if (it->ref == LUA_REFNIL) {
    lua_pushnil(L);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, it->ref);
    luaL_unref(L, LUA_REGISTRYINDEX, it->ref);
  }
  return 1;
}

static int raise_waited(lua_State *L, const char *what, double timeout) {
  if (timeout <= 0) return pl_error_raise(L, PL_TIMEOUT, "queue is %s", what);
  return pl_error_raise(L, PL_TIMEOUT, "queue is %s (waited %f seconds)", what, (lua_Number)timeout);
}

/* par.queue([maxsize]) */
static int queue_new(lua_State *L) {
  lua_Integer maxsize = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, maxsize >= 0, 1, "maxsize must be a non-negative integer");
  void **box = pl_box_new(L, QUEUE_MT, NULL);  /* closed until the queue exists */
  pl_queue *q = pl_queue_new((long long)maxsize);
  if (q == NULL) return luaL_error(L, "not enough memory");
  *box = q;
  return 1;
}

static int put_for(lua_State *L, pl_queue *q, double timeout) {
  luaL_checkany(L, 2);
  int64_t deadline = pl_deadline_after(timeout);
  pl_tstate *ts = NULL;
  pl_qitem it;
  int rc;
  do {  /* again when the queue was shared while a reference item waited */
    if (pl_pchan_of(q) != NULL) return pl_pqueue_put(L, q, 2, timeout);
    make_item(L, q, 2, &it);
    rc = pl_queue_try_put(q, &it);
    if (rc == PL_EWOULDWAIT && timeout != 0) {
      ts = pl_block_begin(L, &q->head);
      rc = pl_queue_put(q, ts, deadline, &it);
      pl_block_end(L, ts, &q->head);
    }
    if (rc == PL_ESHARED || rc == PL_EMOVED) drop_item(L, &it);
  } while (rc == PL_ESHARED || rc == PL_EMOVED);
  if (rc == 0) return 0;
  drop_item(L, &it);  /* not stored: let go of the value */
  switch (rc) {
  case PL_EWOULDWAIT:
  case PL_ETIMEOUT:
    return raise_waited(L, "full", timeout);
  case PL_ECLOSED:
    return pl_error_raise(L, PL_SHUTDOWN, "put on a closed queue");
  case PL_ECANCELLED:
    return pl_error_raise_cancelled(L, ts);
  default:
    return luaL_error(L, "not enough memory");
  }
}

static int get_for(lua_State *L, pl_queue *q, double timeout) {
  pl_qitem it;
  pl_tstate *ts = NULL;
  if (pl_pchan_of(q) != NULL) return pl_pqueue_get(L, q, timeout);
  int rc = pl_queue_try_get(q, &it);
  if (rc == PL_EWOULDWAIT && timeout != 0) {
    int64_t deadline = pl_deadline_after(timeout);
    ts = pl_block_begin(L, &q->head);
    rc = pl_queue_get(q, ts, deadline, &it);
    pl_block_end(L, ts, &q->head);
  }
  switch (rc) {
  case 0:
    return push_item(L, &it);
  case PL_EMOVED:  /* sent to another process meanwhile */
    return pl_pqueue_get(L, q, timeout);
  case PL_EWOULDWAIT:
  case PL_ETIMEOUT:
    return raise_waited(L, "empty", timeout);
  case PL_ECLOSED:
    return pl_error_raise(L, PL_SHUTDOWN, "get on a closed and empty queue");
  default:
    return pl_error_raise_cancelled(L, ts);
  }
}

static int queue_put(lua_State *L) {
  pl_queue *q = check_queue(L);
  return put_for(L, q, opt_wait(L, 3));
}

static int queue_put_nowait(lua_State *L) {
  return put_for(L, check_queue(L), 0);
}

static int queue_get(lua_State *L) {
  pl_queue *q = check_queue(L);
  return get_for(L, q, opt_wait(L, 2));
}

static int queue_get_nowait(lua_State *L) {
  return get_for(L, check_queue(L), 0);
}

static int queue_qsize(lua_State *L) {
  if (pl_pchan_of(check_queue(L)) != NULL) return pl_pqueue_qsize(L, check_queue(L));
  lua_pushinteger(L, (lua_Integer)pl_queue_size(check_queue(L)));
  return 1;
}

static int queue_empty(lua_State *L) {
  if (pl_pchan_of(check_queue(L)) != NULL) {
    lua_pushboolean(L, pl_pchan_size(pl_pchan_of(check_queue(L))) == 0);
    return 1;
  }
  lua_pushboolean(L, pl_queue_size(check_queue(L)) == 0);
  return 1;
}

static int queue_full(lua_State *L) {
  pl_queue *q = check_queue(L);
  if (pl_pchan_of(q) != NULL) return pl_pqueue_full(L, q);
  lua_pushboolean(L, q->maxsize > 0 && pl_queue_size(q) >= (size_t)q->maxsize);
  return 1;
}

static int queue_task_done(lua_State *L) {
  pl_queue *q = check_queue(L);
  int rc = pl_pchan_of(q) != NULL ? PL_EMOVED : pl_queue_task_done(q);
  if (rc == PL_EMOVED) return pl_pqueue_task_done(L, q);
  if (rc != 0) return luaL_error(L, "task_done() called too many times");
  return 0;
}

static int queue_join(lua_State *L) {
  pl_queue *q = check_queue(L);
  double timeout = pl_opt_timeout(L, 2);
  if (pl_pchan_of(q) != NULL) return pl_pqueue_join(L, q, timeout);
  int done = pl_queue_unfinished(q) == 0;
  if (!done && timeout != 0) {
    int64_t deadline = pl_deadline_after(timeout);
    pl_tstate *ts = pl_block_begin(L, &q->head);
    int rc = pl_queue_join(q, ts, deadline);
    pl_block_end(L, ts, &q->head);
    if (rc == PL_ECANCELLED) pl_error_raise_cancelled(L, ts);
    if (rc == PL_EMOVED) return pl_pqueue_join(L, q, timeout);
    done = rc == PL_OK;
  }
  lua_pushboolean(L, done);
  return 1;
}

static int queue_close(lua_State *L) {
  if (pl_pchan_of(check_queue(L)) != NULL) return pl_pqueue_close(L, check_queue(L));
  pl_queue_close(check_queue(L));
  return 0;
}

static int queue_is_closed(lua_State *L) {
  if (pl_pchan_of(check_queue(L)) != NULL) return pl_pqueue_is_closed(L, check_queue(L));
  lua_pushboolean(L, pl_queue_closed(check_queue(L)));
  return 1;
}

/* Methods first, then the field maxsize. */
static int queue_index(lua_State *L) {
  pl_queue *q = check_queue(L);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "maxsize") == 0)
    lua_pushinteger(L, (lua_Integer)q->maxsize);
  else
    lua_pushnil(L);
  return 1;
}

/* The last reference drops what the queue still holds from this state;
 * with one reference left nobody else can reach the queue, so this
 * cannot race with a put. */
static int queue_gc(lua_State *L) {
  void **box = pl_box_get(L, 1, QUEUE_MT);
  pl_queue *q = *box;
  if (q == NULL) return 0;
  *box = NULL;
  if (pl_sync_refs(&q->head) == 1) {
    pl_family *fam = pl_family_of(L);
    pl_qitem it;
    while (pl_queue_try_get(q, &it) == 0) {
      if (it.kind == PL_QITEM_MSG) pl_msg_free(it.msg);
      else if (it.owner == fam) luaL_unref(L, LUA_REGISTRYINDEX, it.ref);
    }
  }
  pl_sync_decref(&q->head);
  return 0;
}

static int queue_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, QUEUE_MT);
  pl_queue *q = *box;
  if (q == NULL) return lua_pushliteral(L, "Queue (closed box)"), 1;
  pl_pchan *c = pl_pchan_of(q);
  lua_pushfstring(L, "Queue(size=%I, maxsize=%I%s)",
                  (lua_Integer)(c != NULL ? (size_t)pl_pchan_size(c) : pl_queue_size(q)),
                  (lua_Integer)q->maxsize,
                  (c != NULL ? pl_pchan_closed(c) : pl_queue_closed(q)) ? ", closed" : "");
  return 1;
}

/* ---- crossing states ------------------------------------------------- */

/* The queue is being sent to another state: convert the reference items
 * (all of this state: nobody else could reach the queue) into encoded
 * ones.  0, or -1 with the error message pushed. */
static int queue_share(lua_State *L, void *obj) {
  pl_queue *q = obj;
  for (;;) {
    pl_qitem *refs;
    size_t n;
    uint64_t epoch;
    int rc = pl_queue_share_begin(q, &refs, &n, &epoch);
    if (rc == 1) return 0;
    if (rc < 0) return lua_pushliteral(L, "not enough memory"), -1;
    pl_qitem *enc = calloc(n, sizeof *enc);
    size_t done = 0;
    const char *err = enc == NULL ? "not enough memory" : NULL;
    for (; err == NULL && done < n; done++) {
      lua_pushcfunction(L, encode_item);
      if (refs[done].ref == LUA_REFNIL) lua_pushnil(L);
      else lua_rawgeti(L, LUA_REGISTRYINDEX, refs[done].ref);
      lua_pushlightuserdata(L, &enc[done].msg);
      if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        if (lua_istable(L, -1)) lua_getfield(L, -1, "message");  /* a Transfer error */
        err = lua_tostring(L, -1);
        if (err == NULL) err = "queue item: cannot be sent";
        break;
      }
      enc[done].kind = PL_QITEM_MSG;
    }
    int ok = err == NULL && pl_queue_share_commit(q, epoch, enc, n);
    if (err != NULL) pl_queue_share_abort(q);
    if (ok) {
      for (size_t i = 0; i < n; i++)
        if (refs[i].ref != LUA_REFNIL) luaL_unref(L, LUA_REGISTRYINDEX, refs[i].ref);
    } else {
      for (size_t i = 0; i < done; i++) pl_msg_free(enc[i].msg);
    }
    free(enc);
    free(refs);
    if (err != NULL) return -1;  /* the message is on top */
    if (ok) return 0;
  }
}

static void queue_retain(void *obj) { pl_sync_incref(obj); }
static void queue_release(void *obj) { pl_sync_decref(obj); }

static const pl_transfer_type queue_type = {
    QUEUE_MT, "queue", "parlua", queue_retain, queue_release, queue_share, pl_codec_push_box, NULL, NULL,
    PL_PORT_QUEUE};

void pl_open_queue(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"put", queue_put},           {"put_nowait", queue_put_nowait},
      {"get", queue_get},           {"get_nowait", queue_get_nowait},
      {"qsize", queue_qsize},       {"empty", queue_empty},
      {"full", queue_full},         {"task_done", queue_task_done},
      {"join", queue_join},         {"close", queue_close},
      {"is_closed", queue_is_closed}, {NULL, NULL}};
  pl_new_class(L, QUEUE_MT, methods, queue_index, queue_gc, NULL, queue_tostring);
  pl_port_register_type(L, &queue_type);
  lua_pushcfunction(L, queue_new);
  lua_setfield(L, -2, "queue");
}
