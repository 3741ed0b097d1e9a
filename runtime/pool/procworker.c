/* The worker process of kind "processes" (see kind_processes.c for the
 * whole design): its loop, running in the child that fork.c made.
 *
 * It builds its own runtime and state (pl_child_rt_open), says so
 * (STARTED), then serves the frames of its socket one at a time until the
 * parent closes it: INIT
 * runs the pool's init (READY, or INIT_FAILED with the BrokenPool error
 * made here, as kind states does), TASK runs a call or a map chunk
 * (RESULT: the results, or the error value with its traceback).  Values
 * are decoded from and encoded to the portable form, so a result that
 * cannot reach the parent (a coroutine, a lock) fails the task with a
 * Transfer error saying which result it was.  An error value that cannot
 * be sent back is replaced by a Transfer error carrying its text.
 *
 * While it waits for the next frame it gives its state's lock away (a
 * par.thread a task started runs meanwhile), flushes stdout after each
 * task (so what a task prints appears in order with the parent's output),
 * and collects its garbage after a task that held pipes or queues, so that
 * its copies of their descriptors close and their other ends see it.  At
 * the end it closes its state as parlua_close would -- waiting for the
 * threads its tasks started -- and waits until the items it put on queues
 * have been written out.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lauxlib.h"
#include "core/errors.h"
#include "pool/executor.h"
#include "proc/fork.h"
#include "proc/portable.h"
#include "proc/pqueue.h"
#include "pool/procworker.h"

enum { SLOT_HANDLER = 1, SLOT_TRACEBACK = 2 };

static int task_handler(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) pl_error_add_global_hint(L, 1, "processes");
  return pl_traceback_recorder(L);
}

typedef struct ccall {
  int mode;
  int init;
  pl_pmsg *in;
  pl_obuf *out;
  pl_fdlist *fds;
} ccall;

/* Protected: decode, call, encode the results (appended to c->out). */
static int c_run(lua_State *L) {
  ccall *c = lua_touserdata(L, 1);
  lua_settop(L, 0);
  int n = pl_pmsg_decode(L, c->in);
  if (n < 1) return luaL_error(L, "an empty task");
  if (c->init || c->mode == PL_TASK_CALL) {
    lua_call(L, n - 1, LUA_MULTRET);
    if (!c->init) pl_port_encode(L, 1, lua_gettop(L), NULL, "result %d", c->out, c->fds);
    return 0;
  }
  pl_task_map_items(L, 1, c->mode);
  pl_port_encode(L, 2, n - 1, NULL, n == 2 ? "result" : "result %d of a chunk", c->out, c->fds);
  return 0;
}

static int c_encode_error(lua_State *L) {
  ccall *c = lua_touserdata(L, 2);
  pl_port_encode(L, 1, 1, "error value", NULL, c->out, c->fds);
  return 0;
}

static int send_all_blocking(int sock, const pl_obuf *b, const pl_fdlist *fds) {
  size_t off = 0;
  for (;;) {
    int r = pl_wire_send(sock, b->data, b->len, &off, fds->fd, fds->n);
    if (r != 0) return r < 0 ? r : 0;
    struct pollfd pf = {sock, POLLOUT, 0};
    (void)poll(&pf, 1, -1);
  }
}

/* Read more of the parent's frames, waiting for them in poll.  A reader
 * blocked in recvmsg on a unix stream socket is woken again each time the
 * parent reads what it wrote (the room to write came back, and that
 * wake-up does not say for whom), so it slept and woke twice per task;
 * poll wakes only for what it asked.  Like pl_rbuf_fill. */
static int fill_when_ready(pl_rbuf *rb, int sock) {
  for (;;) {
    struct pollfd pf = {sock, POLLIN, 0};
    if (poll(&pf, 1, -1) < 0 && errno != EINTR) return -errno;
    int r = pl_rbuf_fill(rb, sock, 0);
    if (r != -EAGAIN) return r;
  }
}

/* Run one INIT or TASK frame and build the reply in out/fds. */
static void child_serve(lua_State *L, pl_frame *f, pl_obuf *out, pl_fdlist *fds) {
  int init = f->type == F_INIT;
  out->len = 0;
  pl_fdlist_free(fds);
  pl_pmsg in;
  char err[256];
  int ok = 0;
  uint64_t tblen = 0;
  size_t prefix;
  ccall c = {(int)f->aux, init, &in, out, fds};
  int unpacked = pl_port_unpack_frame(f, 0, &in, err, sizeof err) == 0;
  if (pl_obuf_frame_begin(out, init ? F_READY : F_RESULT, 0, 0) != 0) _exit(71);
  prefix = out->len;
  if (pl_obuf_put(out, &tblen, sizeof tblen) != 0) _exit(71);
  if (!unpacked) {
    lua_pushfstring(L, "cannot receive the task: %s", err);
    pl_error_push(L, PL_TRANSFER, "%s", lua_tostring(L, -1));
    lua_remove(L, -2);
  } else {
    lua_pushcfunction(L, c_run);
    lua_pushlightuserdata(L, &c);
    ok = lua_pcall(L, 1, 0, SLOT_HANDLER) == LUA_OK;
    pl_pmsg_free(&in);
  }
  if (!ok) {  /* [error value]: prefix, traceback, error */
    char *tb = unpacked ? pl_take_traceback(L, SLOT_TRACEBACK) : NULL;
    out->len = prefix;
    pl_fdlist_free(fds);
    out->data[2] = init ? F_INIT_FAILED : F_RESULT;
    uint32_t failed = 1;
    memcpy(out->data + 4, &failed, 4);
    if (init) pl_task_init_error(L, tb);  /* the error becomes the pool's BrokenPool error */
    tblen = tb != NULL ? strlen(tb) : 0;
    if (pl_obuf_put(out, &tblen, sizeof tblen) != 0 || pl_obuf_put(out, tb, (size_t)tblen) != 0) _exit(71);
    free(tb);
    pl_task_encode_error(L, c_encode_error, &c);
  }
  pl_obuf_frame_end(out, 0);
  out->data[3] = (unsigned char)fds->n;
  lua_settop(L, SLOT_TRACEBACK);
}

/* ---- soft time limits (see procworker.h) ------------------------------ */

/* Written by the main thread and read by the handler, which interrupts
 * that same thread (the runtime's helper threads block every signal, and a
 * thread the task started passes it on):
 * each side writes first and then looks at the other's, so that one of
 * them always sees both. */
static pl_tstate *soft_ts;
static atomic_uint soft_task;    /* the number of the task running, 0 between tasks */
static atomic_uint soft_early;   /* a limit for a task not yet begun ... */
static _Atomic double soft_early_s;

static void soft_limit_handler(int sig, siginfo_t *info, void *uctx) {
  (void)sig;
  (void)uctx;
  if (info->si_code != SI_QUEUE || soft_ts == NULL) return;
  if (!pthread_equal(pthread_self(), soft_ts->owner)) {  /* a par.thread of the task's: pass it on */
    (void)pthread_sigqueue(soft_ts->owner, PL_SOFT_LIMIT_SIGNAL, info->si_value);
    return;
  }
  uint64_t v = (uint64_t)(uintptr_t)info->si_value.sival_ptr;
  unsigned task = (unsigned)(v >> 32);
  double s = (double)(v & UINT32_MAX) / 1000;
  atomic_store(&soft_early_s, s);
  atomic_store(&soft_early, task);
  if (task != 0 && task == atomic_load(&soft_task)) pl_tstate_soft_limit_from_handler(soft_ts, s);
}

static void soft_limits_start(pl_tstate *ts) {
  soft_ts = ts;
  ts->wait_slice_ns = PL_CHILD_WAIT_SLICE_NS;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = soft_limit_handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(PL_SOFT_LIMIT_SIGNAL, &sa, NULL);
}

/* Task number `task` begins (0: it ended). */
static void soft_limits_task(unsigned task) {
  atomic_store(&soft_task, task);
  if (task == 0) atomic_store(&soft_ts->soft_limit_pending, 0);  /* one that came as the task ended */
  else if (atomic_load(&soft_early) == task) pl_tstate_soft_limit_from_handler(soft_ts, atomic_load(&soft_early_s));
}

int pl_procworker_main(void *ud) {
  pl_procworker_ctx *x = ud;
  pl_child_rt c;
  pl_child_rt_open(&c, x->modules, x->preloads, x->interval, x->name);
  unsigned ntasks = 0;
  soft_limits_start(c.ts);
  lua_State *L = c.L;
  lua_settop(L, 0);
  lua_newtable(L);                         /* [2] the traceback slot */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, task_handler, 1);
  lua_insert(L, SLOT_HANDLER);             /* [1] the handler */
  pl_rbuf rb;
  pl_rbuf_init(&rb);
  pl_obuf out = {NULL, 0, 0};
  pl_fdlist fds;
  pl_fdlist_init(&fds);
  if (pl_obuf_frame_begin(&out, F_STARTED, 0, 0) != 0) _exit(71);
  pl_obuf_frame_end(&out, 0);
  if (send_all_blocking(x->sock, &out, &fds) != 0) _exit(0);
  for (;;) {
    pl_frame f;
    int r = pl_rbuf_next(&rb, &f);
    if (r < 0) break;
    if (r == 0) {
      pl_child_rt_unlock(&c);
      r = fill_when_ready(&rb, x->sock);
      pl_child_rt_lock(&c);
      if (r <= 0) break;  /* the parent closed the socket: time to go */
      continue;
    }
    if (f.type != F_INIT && f.type != F_TASK) {
      pl_frame_free(&f);
      break;
    }
    int had_objects = f.nfds > 0;
    if (f.type == F_TASK) soft_limits_task(++ntasks);
    child_serve(L, &f, &out, &fds);
    soft_limits_task(0);
    had_objects = had_objects || fds.n > 0;
    fflush(stdout);
    pl_child_rt_unlock(&c);
    r = send_all_blocking(x->sock, &out, &fds);
    pl_child_rt_lock(&c);
    pl_fdlist_free(&fds);
    if (r != 0) break;
    /* Let go of this process's copies of the pipes and queues the task
     * held now, so that their other ends see them closed. */
    if (had_objects) lua_gc(L, LUA_GCCOLLECT);
  }
  pl_rbuf_free(&rb);
  pl_obuf_free(&out);
  pl_child_rt_close(&c);
  pl_pchan_flush_all();
  return 0;
}

