/* A rank that serves a pool of kind mpi (see kind_mpi.c for the whole
 * design; the messages are mpiwire.h).
 *
 * The loop waits for the master's next message (backoff.h: a pause, a
 * yield, then naps) and serves it: OPEN makes a fresh runtime and state
 * (pl_child_rt, as a worker process of kind processes has), with the
 * master's codec key so that functions cross both ways; TASK runs a call
 * or a map chunk and sends RESULT -- the results, or the error value with
 * its traceback, an error that cannot be sent being replaced by a
 * Transfer error with its text; CLOSE closes the state as parlua_close
 * would; STOP ends the loop.  One rank serves one pool worker at a time
 * and, in turn, any number of pools (static mode: the ranks of
 * COMM_WORLD).
 *
 * While a task runs, a watcher thread polls for INTERRUPT (a forced
 * cancel of the task's tstate: the task fails with Cancelled at its next
 * instruction or blocking call, as with kind states; or its time limit,
 * raised as kind states raises it: SoftTimeLimit, then Timeout) and sends ALIVE every
 * PL_MPI_ALIVE_NS, by which a master on another machine knows that this
 * rank still lives.  The watcher needs a library that allows calls from
 * two threads (MPI_THREAD_SERIALIZED or more); below that it does not run,
 * and interrupts wait for the task's end.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lauxlib.h"
#include "codec/codec.h"
#include "core/clock.h"
#include "core/errors.h"
#include "mpi/backoff.h"
#include "mpi/mpiwire.h"
#include "mpi/transport.h"
#include "pool/executor.h"
#include "proc/fork.h"
#include "sync/held.h"

enum { SLOT_HANDLER = 1, SLOT_TRACEBACK = 2 };

typedef struct server {
  const pl_mpi_transport *t;
  int comm, master;
  const luaL_Reg *modules;  /* preloaded in every state it opens */
  pl_child_rt c;
  int open;
  pthread_mutex_t mu;     /* guards c.ts for the watcher */
  pthread_cond_t cv;
  atomic_ullong running;  /* seq of the task that runs, 0 none */
  int quit;               /* guarded by mu */
} server;

/* ---- replies ---------------------------------------------------------- */

static void send_or_die(server *s, int tag, const void *buf, size_t len) {
  char err[PL_MPI_ERRLEN];
  if (s->t->send(s->comm, s->master, tag, buf, len, NULL, NULL, err) != 0) {
    fprintf(stderr, "parlua: mpi worker: %s\n", err);
    _exit(1);  /* the master is gone: nobody to serve */
  }
}

/* RESULT: header, traceback, the message (NULL: no values). */
static void send_result(server *s, uint64_t seq, int failed, const char *tb, const pl_msg *m) {
  mpi_result h = {(uint32_t)failed, 0, seq, tb != NULL ? strlen(tb) : 0};
  size_t len = sizeof h + (size_t)h.tblen + (m != NULL ? m->len : 0);
  unsigned char *buf = malloc(len);
  if (buf == NULL) _exit(71);
  memcpy(buf, &h, sizeof h);
  if (h.tblen > 0) memcpy(buf + sizeof h, tb, (size_t)h.tblen);
  if (m != NULL) memcpy(buf + sizeof h + h.tblen, m->data, m->len);
  send_or_die(s, PL_MPI_TAG_RESULT, buf, len);
  free(buf);
}

/* ---- running a task --------------------------------------------------- */

static int task_handler(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) pl_error_add_global_hint(L, 1, "mpi");
  return pl_traceback_recorder(L);
}

typedef struct ccall {
  int mode;
  const unsigned char *in;
  size_t inlen;
  pl_msg *out;
} ccall;

/* Protected: decode, call, encode the results. */
static int c_run(lua_State *L) {
  ccall *c = lua_touserdata(L, 1);
  lua_settop(L, 0);
  int n = pl_codec_decode_bytes(L, c->in, c->inlen);
  if (n < 1) return luaL_error(L, "an empty task");
  if (c->mode == PL_TASK_INIT || c->mode == PL_TASK_CALL) {
    lua_call(L, n - 1, LUA_MULTRET);
    if (c->mode == PL_TASK_CALL) c->out = pl_codec_encode_remote(L, 1, lua_gettop(L), NULL, "result %d");
    return 0;
  }
  pl_task_map_items(L, 1, c->mode);
  c->out = pl_codec_encode_remote(L, 2, n - 1, NULL, n == 2 ? "result" : "result %d of a chunk");
  return 0;
}

static int c_encode_error(lua_State *L) {
  pl_msg **out = lua_touserdata(L, 2);
  *out = pl_codec_encode_remote(L, 1, 1, "error value", NULL);
  return 0;
}

static void run_task(server *s, const unsigned char *buf, size_t len) {
  lua_State *L = s->c.L;
  mpi_task h;
  if (len < sizeof h) return;  /* not from our master: ignored */
  memcpy(&h, buf, sizeof h);
  ccall c = {(int)h.mode, buf + sizeof h, len - sizeof h, NULL};
  pthread_mutex_lock(&s->mu);
  atomic_store(&s->running, h.seq);
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  lua_pushcfunction(L, c_run);
  lua_pushlightuserdata(L, &c);
  int ok = lua_pcall(L, 1, 0, SLOT_HANDLER) == LUA_OK;
  pthread_mutex_lock(&s->mu);
  atomic_store(&s->running, 0);
  pl_held_end(s->c.ts);             /* the rule of forced cancellation (held.h) */
  pl_tstate_reset_cancel(s->c.ts);  /* an interrupt that came late is for nobody */
  pthread_mutex_unlock(&s->mu);
  if (ok) {
    send_result(s, h.seq, 0, NULL, c.out);
  } else {  /* [error value] */
    if (c.out != NULL) pl_msg_free(c.out);
    char *tb = pl_take_traceback(L, SLOT_TRACEBACK);
    if (h.mode == PL_TASK_INIT) pl_task_init_error(L, tb);  /* the error becomes the pool's BrokenPool error */
    pl_msg *m = NULL;
    pl_task_encode_error(L, c_encode_error, &m);
    send_result(s, h.seq, 1, tb, m);
    if (m != NULL) pl_msg_free(m);
    free(tb);
  }
  if (c.out != NULL && ok) pl_msg_free(c.out);
  fflush(stdout);
  lua_settop(L, SLOT_TRACEBACK);
}

/* ---- the state -------------------------------------------------------- */

static void close_state(server *s) {
  if (!s->open) return;
  pthread_mutex_lock(&s->mu);
  s->open = 0;
  pthread_mutex_unlock(&s->mu);
  pl_child_rt_close(&s->c);
}

static void open_state(server *s, const unsigned char *buf, size_t len) {
  mpi_open h;
  if (len < sizeof h) return;
  memcpy(&h, buf, sizeof h);
  h.name[sizeof h.name - 1] = '\0';
  close_state(s);
  pl_codec_set_key(h.key);
  pl_child_rt_open(&s->c, s->modules, NULL, h.interval, h.name);
  lua_State *L = s->c.L;
  lua_settop(L, 0);
  lua_newtable(L);                         /* [2] the traceback slot */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, task_handler, 1);
  lua_insert(L, SLOT_HANDLER);             /* [1] the handler */
  pthread_mutex_lock(&s->mu);
  s->open = 1;
  pthread_mutex_unlock(&s->mu);
  mpi_opened o;
  memset(&o, 0, sizeof o);
  o.pid = (int32_t)getpid();
  gethostname(o.host, sizeof o.host - 1);
  send_or_die(s, PL_MPI_TAG_OPENED, &o, sizeof o);
}

/* ---- the watcher ------------------------------------------------------ */

static void *watch(void *ud) {
  server *s = ud;
  char err[PL_MPI_ERRLEN];
  pthread_mutex_lock(&s->mu);
  while (!s->quit) {
    uint64_t seq = atomic_load(&s->running);
    if (seq == 0) {
      pthread_cond_wait(&s->cv, &s->mu);
      continue;
    }
    pthread_mutex_unlock(&s->mu);
    int64_t alive_at = pl_now_ns() + PL_MPI_ALIVE_NS;
    while (atomic_load(&s->running) == seq) {
      void *buf = NULL;
      size_t len = 0;
      int tag;
      if (s->t->poll(s->comm, s->master, PL_MPI_TAG_INTERRUPT, &tag, &buf, &len, err) == 1) {
        mpi_interrupt h = {0};
        if (len >= sizeof h) memcpy(&h, buf, sizeof h);
        free(buf);
        pthread_mutex_lock(&s->mu);
        if (h.seq == seq && atomic_load(&s->running) == seq && s->open) {
          if (h.what == PL_MPI_SOFT_LIMIT) pl_tstate_soft_limit(s->c.ts, h.seconds);
          else if (h.what == PL_MPI_HARD_LIMIT) pl_tstate_hard_limit(s->c.ts, h.seconds);
          else pl_tstate_cancel(s->c.ts, PL_CANCEL_FORCED, 0);
        }
        pthread_mutex_unlock(&s->mu);
      }
      if (pl_now_ns() >= alive_at) {
        (void)s->t->send(s->comm, s->master, PL_MPI_TAG_ALIVE, "", 0, NULL, NULL, err);
        alive_at = pl_now_ns() + PL_MPI_ALIVE_NS;
      }
      struct timespec nap = {0, 2 * 1000 * 1000};
      nanosleep(&nap, NULL);
    }
    pthread_mutex_lock(&s->mu);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* ---- the loop --------------------------------------------------------- */

int pl_mpi_serve(const pl_mpi_transport *t, int comm, int master, int thread_level,
                 const luaL_Reg *modules) {
  server s;
  memset(&s, 0, sizeof s);
  s.t = t;
  s.comm = comm;
  s.master = master;
  s.modules = modules;
  pthread_mutex_init(&s.mu, NULL);
  pthread_cond_init(&s.cv, NULL);
  atomic_init(&s.running, 0);
  pthread_t watcher;
  int watching = thread_level >= 2 && pthread_create(&watcher, NULL, watch, &s) == 0;
  char err[PL_MPI_ERRLEN];
  int status = 0;
  for (int stop = 0; !stop;) {
    void *buf = NULL;
    size_t len = 0;
    int tag = 0, r;
    pl_mpi_backoff b;
    pl_mpi_backoff_start(&b);
    if (s.open) pl_child_rt_unlock(&s.c);  /* a par.thread of a task runs meanwhile */
    while ((r = t->poll(comm, master, -1, &tag, &buf, &len, err)) == 0) pl_mpi_backoff_wait(&b, -1);
    if (s.open) pl_child_rt_lock(&s.c);
    if (r < 0) {
      fprintf(stderr, "parlua: mpi worker: %s\n", err);
      status = 1;
      break;
    }
    switch (tag) {
    case PL_MPI_TAG_OPEN: open_state(&s, buf, len); break;
    case PL_MPI_TAG_TASK: if (s.open) run_task(&s, buf, len); break;
    case PL_MPI_TAG_CLOSE: close_state(&s); break;
    case PL_MPI_TAG_STOP: stop = 1; break;
    default: break;  /* a late INTERRUPT: its task is over */
    }
    free(buf);
  }
  close_state(&s);
  pthread_mutex_lock(&s.mu);
  s.quit = 1;
  pthread_cond_signal(&s.cv);
  pthread_mutex_unlock(&s.mu);
  if (watching) pthread_join(watcher, NULL);
  pthread_cond_destroy(&s.cv);
  pthread_mutex_destroy(&s.mu);
  return status;
}
