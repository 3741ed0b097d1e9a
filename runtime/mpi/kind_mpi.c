/* Kind "mpi": how one task is carried out by an MPI rank that owns a
 * lua_State of its own -- on this machine or another.  Much like kind
 * processes, with MPI messages (transport.h, mpiwire.h) instead of
 * sockets, and ranks that Open MPI starts instead of forks.
 *
 * The ranks.  Each worker thread of the executor (executor.h) owns one
 * server rank (mpiworker.c) while it lives:
 *   - static mode (`mpiexec -n N parlua script.lua`): rank 0 runs the
 *     script and ranks 1..N-1 wait; a worker claims a free one
 *     (pl_mpi_claim_rank) and gives it back when it stops, so pools made
 *     one after another reuse the ranks;
 *   - dynamic mode (a process not started by mpiexec, or a pool given
 *     `hosts` or `hostfile`): a worker takes a free spawned rank of the
 *     same placement, and when there is none spawns as many copies of the
 *     parlua program as the pool still lacks, at once (MPI_Comm_spawn, the
 *     pool's `hosts` and `hostfile` as info keys).  Spawned ranks stay for
 *     the pools that come after and leave at exit (mpi.h).
 * A worker opens a fresh state on its rank (OPEN: with the master's codec
 * key, so that functions cross both ways), runs the pool's init there,
 * then its tasks; after `max_tasks_per_worker` tasks it closes that state
 * and opens another on the same rank; when it stops it closes the state
 * (CLOSE).
 *
 *   submitter (its lock held)          worker thread            server rank
 *   kind->pack: encode [fn, args]      TASK(seq) -------------> decode, run
 *     (pl_codec_encode_remote)         wait (pl_mpi_backoff)    <- ALIVE each s
 *                                      RESULT <---------------- encode
 *   f:result() decodes the bytes  <--  store the bytes in the future
 *
 * What crosses: the codec's values, closures with their upvalues among
 * them; no shared object (locks, events, queues, pipes): a rank may be on
 * another machine, and they are refused with a Transfer error when the
 * task is submitted ("argument 1: cannot send a queue to an mpi worker (no
 * shared object crosses machines)").  The same holds for results.
 *
 * A short pipeline, by the rule kind processes shares (pool/pipeline.h):
 * while many tasks wait, no other worker is free to take them and this
 * rank's tasks of the same batch are short (under PL_PIPELINE_SHORT_NS),
 * the worker thread sends a task and goes back for the next at once,
 * keeping up to PL_PIPELINE_DEPTH in flight on its rank
 * (MPI keeps the messages of one sender in order), and collects the
 * results in order when the pipeline is full or no task is left
 * (kind->idle).  The rank then never waits between tasks.  A task with
 * time limits runs alone; an interrupt goes to each task in flight in
 * turn, as its result is awaited.
 *
 * Waiting.  A worker thread waits for its rank's reply by polling
 * (MPI_Improbe) -- pausing, then yielding, then napping (backoff.h) -- so
 * an idle pool costs no core, which Open MPI's own blocking receive would
 * (it spins).
 *
 * Faults.  Open MPI 4.1 cannot survive a lost rank: there is no way to
 * replace it, and MPI_Finalize or MPI_Comm_disconnect would wait for it
 * forever.  So a rank that dies (SIGKILL, a crash, os.exit in a task)
 * ends the task it held with BrokenPool naming the rank, breaks the pool
 * -- every task still to run fails with the same error, submits are
 * refused -- and this process skips MPI's finalisation at exit
 * (pl_mpi_mark_lost).  The death is seen at once for a rank on this
 * machine (a pidfd on the pid the rank reported, which also ends a nap)
 * and, for a rank on another machine, when no ALIVE came for LOST_NS.
 * Under mpiexec, note that mpiexec itself kills the whole job when a rank
 * dies, unless told otherwise (--mca orte_abort_on_non_zero_status 0):
 * docs/mpi.md.
 *
 * Interrupts.  shutdown{interrupt=true} (and the runtime closing after
 * Ctrl-C) sends INTERRUPT for the task that runs; the rank's watcher
 * cancels it as kind states cancels a task (Cancelled at its next
 * instruction or blocking call).  Time limits (limits.h) go the same way:
 * the rank raises SoftTimeLimit, or Timeout, in the task as kind states
 * does, so the rank and its state are kept.  A rank is never killed for it: that
 * would take the job down.
 *
 * Done callbacks run in the owning state on the worker's seat there
 * (seat.h: a tstate and a coroutine made when the worker started), as
 * with kind processes.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lauxlib.h"
#include "codec/codec.h"
#include "core/clock.h"
#include "core/errors.h"
#include "core/gil.h"
#include "mpi/backoff.h"
#include "mpi/kind_mpi.h"
#include "mpi/mpi.h"
#include "mpi/mpiwire.h"
#include "pool/executor.h"
#include "pool/pipeline.h"
#include "pool/seat.h"
#include "proc/fork.h"

#define LOST_NS (10 * 1000 * 1000000LL)  /* no word from a busy rank this long: lost */

/* An error made here, not by a rank (a lost rank, a spawn that failed). */
typedef struct merr {
  const char *kind;
  int rank, pid;
  char message[400];
} merr;

/* Out of memory, a task still fails with an error: this one, never freed. */
static merr no_memory = {PL_OS_ERROR, 0, 0, "not enough memory"};

static void merr_free(merr *m) {
  if (m != &no_memory) free(m);
}

/* Bytes a rank sent: one codec message. */
typedef struct mbytes {
  size_t len;
  unsigned char data[];
} mbytes;

typedef struct mexec {
  const pl_mpi_transport *t;
  int spawn;             /* dynamic mode */
  char *hosts, *hostfile;
  int64_t spawn_timeout_ns;
  pthread_mutex_t mu;
  int attached;          /* guarded by mu: workers that hold a rank */
  atomic_int broken;
  mbytes *bbytes;        /* guarded by mu: the BrokenPool error a rank made, */
  merr *berr;            /*   or this one */
  char *btb;             /* guarded by mu: the failed init's traceback */
  int64_t seq;           /* guarded by mu */
  atomic_uint batch;     /* of the last submit (pool/pipeline.h) */
} mexec;

typedef struct mworker {
  int comm, rank;        /* the rank served by this worker, rank -1: none */
  int open;              /* a state is open on it */
  int pid, pidfd;        /* as the rank said; pidfd -1 on another machine */
  char host[64];
  int ntasks;            /* tasks sent to the open state */
  uint64_t seq;          /* of the task whose reply is awaited */
  atomic_int interrupt;  /* an interrupt came for it */
  int interrupt_sent;
  atomic_int limit;      /* a time limit ran out: PL_MPI_SOFT_LIMIT or _HARD_LIMIT, or 0 */
  _Atomic double limit_seconds;
  int dead;              /* the rank died */
  int limited;           /* the task in flight has time limits: nothing more is sent */
  pl_pipeline pipe;      /* worker thread only: the tasks in flight */
  uint64_t fseq[PL_PIPELINE_DEPTH];  /* ... their numbers, by slot */
  char name[64];
  pl_seat seat;          /* in the owning state, for callbacks */
} mworker;

/* ---- values ---------------------------------------------------------- */

static int bytes_push(lua_State *L, const pl_value *v) {
  const mbytes *b = v->data;
  return pl_codec_decode_bytes(L, b->data, b->len);
}

static int merr_push(lua_State *L, const pl_value *v) {
  const merr *m = v->data;
  pl_error_push(L, m->kind, "%s", m->message);
  if (m->rank > 0) {
    lua_pushinteger(L, m->rank);
    lua_setfield(L, -2, "rank");
  }
  if (m->pid > 0) {
    lua_pushinteger(L, m->pid);
    lua_setfield(L, -2, "pid");
  }
  return 1;
}

static void bytes_free(lua_State *L, pl_value *v) {
  (void)L;
  free(v->data);
  v->data = NULL;
  v->ops = NULL;
}

static void merr_value_free(lua_State *L, pl_value *v) {
  (void)L;
  merr_free(v->data);
  v->data = NULL;
  v->ops = NULL;
}

static const pl_value_ops bytes_ops = {bytes_push, bytes_free};
static const pl_value_ops merr_ops = {merr_push, merr_value_free};

static merr *merr_new(const char *kind, int rank, int pid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static merr *merr_new(const char *kind, int rank, int pid, const char *fmt, ...) {
  merr *m = malloc(sizeof *m);
  if (m == NULL) return &no_memory;
  m->kind = kind;
  m->rank = rank;
  m->pid = pid;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m->message, sizeof m->message, fmt, ap);
  va_end(ap);
  return m;
}

static merr *merr_copy(const merr *m) {
  merr *c = malloc(sizeof *c);
  if (c == NULL) return &no_memory;
  *c = *m;
  return c;
}

/* NULL when out of memory. */
static mbytes *bytes_new(const unsigned char *p, size_t n) {
  mbytes *b = malloc(sizeof *b + n);
  if (b == NULL) return NULL;
  b->len = n;
  memcpy(b->data, p, n);
  return b;
}

/* A string of n bytes; NULL when out of memory (a traceback is then left
 * out, the outcome still stored). */
static char *text_new(const void *p, size_t n) {
  char *s = malloc(n + 1);
  if (s == NULL) return NULL;
  memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

static void set_value(pl_value *v, const pl_value_ops *ops, void *data) {
  memset(v, 0, sizeof *v);
  v->ops = ops;
  v->data = data;
}

/* The bytes a rank sent as the value, or the error of no memory. */
static int set_bytes(pl_value *v, const unsigned char *p, size_t n) {
  mbytes *b = bytes_new(p, n);
  if (b != NULL) set_value(v, &bytes_ops, b);
  else set_value(v, &merr_ops, &no_memory);
  return b != NULL;
}

/* ---- the pool broken ------------------------------------------------- */

/* Break the pool with the error a rank made (b) or this one (m); both taken.
 * Neither (b could not be copied): the error of no memory. */
static void break_pool(pl_executor *e, mbytes *b, merr *m, char *tb) {
  mexec *me = e->kind_data;
  char msg[512];
  if (b == NULL && m == NULL) m = &no_memory;
  if (m != NULL) snprintf(msg, sizeof msg, "%s", m->message);
  else snprintf(msg, sizeof msg, "pool init failed: %.*s", (int)(tb != NULL ? strcspn(tb, "\n") : 0),
                tb != NULL ? tb : "");
  pthread_mutex_lock(&me->mu);
  int first = me->bbytes == NULL && me->berr == NULL;
  if (first) {
    me->bbytes = b;
    me->berr = m;
    me->btb = tb;
    b = NULL;
    m = NULL;
    tb = NULL;
    atomic_store(&me->broken, 1);
  }
  pthread_mutex_unlock(&me->mu);
  if (first) pl_executor_break(e, msg);
  free(b);
  merr_free(m);
  free(tb);
}

static void broken_value(mexec *me, pl_value *v, char **tb) {
  pthread_mutex_lock(&me->mu);
  if (me->berr != NULL) set_value(v, &merr_ops, merr_copy(me->berr));
  else (void)set_bytes(v, me->bbytes->data, me->bbytes->len);
  *tb = me->btb != NULL ? strdup(me->btb) : NULL;
  pthread_mutex_unlock(&me->mu);
}

/* ---- talking to the rank --------------------------------------------- */

/* The rank is lost: say so for the task (returned) and for the pool. */
static merr *lose_rank(pl_worker *w, const char *doing) {
  mworker *mw = w->kind;
  pl_mpi_mark_lost();
  merr *m = merr_new(PL_BROKEN_POOL, mw->rank, mw->pid,
                     "mpi worker rank %d (pid %d on %s) died %s; Open MPI cannot go on without "
                     "a rank, so the pool is broken",
                     mw->rank, mw->pid, mw->host[0] != '\0' ? mw->host : "?", doing);
  break_pool(w->e, NULL, merr_copy(m), NULL);
  if (mw->pidfd >= 0) close(mw->pidfd);
  mw->pidfd = -1;
  mw->open = 0;
  mw->dead = 1;
  return m;
}

static int rank_gone(mworker *mw) {
  if (mw->pidfd < 0) return 0;
  struct pollfd p = {mw->pidfd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

/* Wait for the rank's next reply with tag `want` (ALIVE noted on the
 * way).  1 with *buf (malloc'd) and *len; 0 when the rank is lost (its
 * pid ended, or, on another machine, LOST_NS passed without a word: a
 * task and init send ALIVE, and OPENED comes at once); -1 on a transport
 * error (err).  While a task runs (`task`), interrupts and time limits
 * are passed on. */
static int await_reply(pl_worker *w, int want, void **buf, size_t *len, int task, char *err) {
  mworker *mw = w->kind;
  mexec *me = w->e->kind_data;
  pl_mpi_backoff b;
  pl_mpi_backoff_start(&b);
  int64_t heard = pl_now_ns();
  for (int napped = 0;; napped = pl_mpi_backoff_wait(&b, mw->pidfd)) {
    int tag = 0;
    int r = me->t->poll(mw->comm, mw->rank, -1, &tag, buf, len, err);
    if (r < 0) return -1;
    if (r == 1) {
      heard = pl_now_ns();
      if (tag == want) return 1;
      free(*buf);  /* ALIVE, or a late reply nobody waits for */
      pl_mpi_backoff_start(&b);
      continue;
    }
    int what = -1;
    if (task && atomic_load(&mw->interrupt) && !mw->interrupt_sent) {
      mw->interrupt_sent = 1;
      what = PL_MPI_STOP_TASK;
    } else if (task && atomic_load(&mw->limit) != 0) {
      what = atomic_exchange(&mw->limit, 0);
    }
    if (what >= 0) {
      mpi_interrupt h = {mw->seq, (uint32_t)what, 0, atomic_load(&mw->limit_seconds)};
      int r2 = me->t->send(mw->comm, mw->rank, PL_MPI_TAG_INTERRUPT, &h, sizeof h, NULL, NULL, err);
      if (r2 != 0) return r2 < 0 ? -1 : 0;
    }
    /* Only after a nap (a syscall a round would slow the spin; a death
     * also ends the nap, which polls the pidfd). */
    if (napped && rank_gone(mw)) return 0;
    if (mw->pidfd < 0 && pl_now_ns() - heard > LOST_NS) return 0;  /* on another machine */
  }
}

static int rank_alive(void *ud) { return !rank_gone(ud); }

/* 0 sent, 1 the rank died meanwhile, -1 a transport error (err). */
static int send_to(pl_worker *w, int tag, const void *p, size_t n, char *err) {
  mworker *mw = w->kind;
  return ((mexec *)w->e->kind_data)->t->send(mw->comm, mw->rank, tag, p, n, rank_alive, mw, err);
}

/* ---- getting a rank and a state on it -------------------------------- */

/* A rank for this worker: in dynamic mode, spawning as many as the pool
 * still lacks when none is free. */
static merr *attach(pl_worker *w) {
  mworker *mw = w->kind;
  mexec *me = w->e->kind_data;
  char err[PL_MPI_ERRLEN];
  pthread_mutex_lock(&me->mu);
  int want = w->e->max_workers - me->attached;
  pthread_mutex_unlock(&me->mu);
  if (pl_mpi_claim(me->spawn, me->hosts, me->hostfile, want, me->spawn_timeout_ns, &mw->comm, &mw->rank, err) != 0) {
    mw->rank = -1;
    return merr_new(PL_OS_ERROR, 0, 0, "cannot start an mpi worker: %s", err);
  }
  pthread_mutex_lock(&me->mu);
  me->attached++;
  pthread_mutex_unlock(&me->mu);
  return NULL;
}

static void detach(pl_worker *w, int dead) {
  mworker *mw = w->kind;
  mexec *me = w->e->kind_data;
  if (mw->rank < 0) return;
  pl_mpi_release(mw->comm, mw->rank, dead);
  pthread_mutex_lock(&me->mu);
  me->attached--;
  pthread_mutex_unlock(&me->mu);
  mw->rank = -1;
}

/* A fresh state on the worker's rank, init run in it.  NULL, or the error
 * for the task at hand (the pool may be broken by then). */
static merr *open_state(pl_worker *w) {
  mworker *mw = w->kind;
  pl_executor *e = w->e;
  char err[PL_MPI_ERRLEN];
  void *buf = NULL;
  size_t len = 0;
  if (mw->rank < 0) {
    merr *m = attach(w);
    if (m != NULL) return m;
  }
  mpi_open o;
  memset(&o, 0, sizeof o);
  pl_codec_get_key(o.key);
  o.interval = pl_gil_get_interval(&e->fam->gil);
  snprintf(o.name, sizeof o.name, "%s", mw->name);
  int r = send_to(w, PL_MPI_TAG_OPEN, &o, sizeof o, err);
  if (r < 0) goto transport;
  r = r == 0 ? await_reply(w, PL_MPI_TAG_OPENED, &buf, &len, 0, err) : 0;
  if (r < 0) goto transport;
  if (r == 0) return lose_rank(w, "while starting");
  mpi_opened od;
  memset(&od, 0, sizeof od);
  memcpy(&od, buf, len < sizeof od ? len : sizeof od);
  free(buf);
  od.host[sizeof od.host - 1] = '\0';
  char here[64] = "";
  gethostname(here, sizeof here - 1);
  mw->pid = od.pid;
  snprintf(mw->host, sizeof mw->host, "%s", od.host);
  if (mw->pidfd < 0 && strcmp(here, od.host) == 0) mw->pidfd = pl_pidfd_open(od.pid);
  mw->open = 1;
  mw->ntasks = 0;
  if (e->init.n < 0) return NULL;

  mbytes *init = e->init.data;
  r = send_to(w, PL_MPI_TAG_TASK, init->data, init->len, err);
  if (r < 0) goto transport;
  r = r == 0 ? await_reply(w, PL_MPI_TAG_RESULT, &buf, &len, 0, err) : 0;
  if (r < 0) goto transport;
  if (r == 0) return lose_rank(w, "during init");
  mpi_result h;
  if (len < sizeof h) {
    free(buf);
    return lose_rank(w, "during init (a malformed reply)");
  }
  memcpy(&h, buf, sizeof h);
  if (!h.failed) {
    free(buf);
    return NULL;
  }
  size_t tbl = h.tblen <= len - sizeof h ? (size_t)h.tblen : len - sizeof h;
  char *tb = text_new((unsigned char *)buf + sizeof h, tbl);
  break_pool(e, bytes_new((unsigned char *)buf + sizeof h + tbl, len - sizeof h - tbl), NULL, tb);
  free(buf);
  return NULL;  /* the task fails with the pool's error */
transport:
  return merr_new(PL_OS_ERROR, mw->rank, mw->pid, "mpi: %s", err);
}

static void close_state(pl_worker *w) {
  mworker *mw = w->kind;
  char err[PL_MPI_ERRLEN];
  if (!mw->open) return;
  mw->open = 0;
  (void)send_to(w, PL_MPI_TAG_CLOSE, "", 0, err);
}

/* ---- the kind -------------------------------------------------------- */

/* Submitter, lock held: [fn, v1..vn] -> TASK header and codec bytes
 * (t->data), and the task's batch (t->a, pool/pipeline.h). */
static void mpi_pack(pl_executor *e, lua_State *L, pl_task *t) {
  const char *head = t->mode == PL_TASK_INIT ? "init function" : "function";
  const char *each = t->mode == PL_TASK_CALL ? "argument %d" : t->n == 1 ? "item" : "item %d of a chunk";
  pl_msg *m = pl_codec_encode_remote(L, -(t->n + 1), t->n + 1, head, each);
  mpi_task h = {(uint32_t)t->mode, 0, 0};
  mbytes *b = malloc(sizeof *b + sizeof h + m->len);
  if (b == NULL) {
    pl_msg_free(m);
    luaL_error(L, "not enough memory");
  }
  b->len = sizeof h + m->len;
  memcpy(b->data, &h, sizeof h);
  memcpy(b->data + sizeof h, m->data, m->len);
  pl_msg_free(m);
  lua_pop(L, t->n + 1);
  t->data = b;
  t->a = pl_pipeline_batch_of_submit(e, &((mexec *)e->kind_data)->batch);
}

static void mpi_drop(pl_executor *e, lua_State *L, pl_task *t) {
  (void)e;
  (void)L;
  free(t->data);
  t->data = NULL;
}

/* ---- running tasks: a short pipeline per rank ----------------------- */

/* Complete future f (the flight's reference, dropped here): store the
 * outcome, count it, finish it, run its callbacks.  `last`: the worker
 * goes back to looking for work now (executor.h on `looking`).  While
 * tasks are still in flight it stays busy, so that an interrupt reaches
 * them. */
static void complete(pl_worker *w, pl_future *f, int outcome, pl_value *v, char *tb, int last) {
  mworker *mw = w->kind;
  pl_executor *e = w->e;
  if (!pl_future_store(f, outcome == PL_TASK_OK ? PL_OUTCOME_OK : PL_OUTCOME_ERROR, v, tb)) {
    v->ops->free(NULL, v);  /* nobody holds the future any more */
    free(tb);
  }
  int has_callbacks = pl_future_has_callbacks(f);
  unsigned seen = atomic_load(&e->interrupts);
  pl_executor_task_done(w, outcome, last && !has_callbacks);
  if (mw->pipe.len > 0) {
    pthread_mutex_lock(&w->cancel_mu);
    atomic_store(&w->busy, 1);
    if (atomic_load(&e->interrupts) != seen) e->kind->interrupt(w);
    pthread_mutex_unlock(&w->cancel_mu);
  }
  pl_future_cb *cbs = pl_future_finish(f);
  if (cbs != NULL) pl_seat_run_callbacks(&mw->seat, w, f, cbs, NULL);
  if (last && has_callbacks) pl_executor_looking(w);
  pl_future_decref(f);
}

static void fail_task(pl_worker *w, pl_future *f, merr *m, int last) {
  pl_value v;
  set_value(&v, &merr_ops, m);
  complete(w, f, PL_TASK_FAILED, &v, NULL, last);
}

/* The rank is lost: every task in flight fails with m (taken). */
static void fail_flight(pl_worker *w, merr *m, int looking_after) {
  mworker *mw = w->kind;
  while (mw->pipe.len > 0) {
    pl_future *f = pl_pipeline_pop(&mw->pipe);
    fail_task(w, f, mw->pipe.len > 0 ? merr_copy(m) : m, mw->pipe.len == 0 && looking_after);
  }
}

/* Wait for the result of the oldest task in flight and complete it. */
static void collect_one(pl_worker *w, int looking_after) {
  mworker *mw = w->kind;
  pl_executor *e = w->e;
  char err[PL_MPI_ERRLEN];
  void *buf = NULL;
  size_t len = 0;
  mw->seq = mw->fseq[mw->pipe.head];  /* what an interrupt is for now */
  mw->interrupt_sent = 0;
  int r = await_reply(w, PL_MPI_TAG_RESULT, &buf, &len, 1, err);
  mpi_result rh;
  if (r == 1 && len < sizeof rh) {
    free(buf);
    fail_flight(w, lose_rank(w, "while running the task (a malformed reply)"), looking_after);
    return;
  }
  if (r == 0) {
    fail_flight(w, lose_rank(w, "while running the task"), looking_after);
    return;
  }
  pl_future *f = pl_pipeline_pop(&mw->pipe);
  int last = mw->pipe.len == 0 && looking_after;
  if (r < 0) {
    fail_task(w, f, merr_new(PL_OS_ERROR, mw->rank, mw->pid, "mpi: %s", err), last);
    return;
  }
  memcpy(&rh, buf, sizeof rh);
  size_t tbl = rh.tblen <= len - sizeof rh ? (size_t)rh.tblen : len - sizeof rh;
  char *tb = tbl > 0 ? text_new((unsigned char *)buf + sizeof rh, tbl) : NULL;
  pl_value v;
  int failed = !set_bytes(&v, (unsigned char *)buf + sizeof rh + tbl, len - sizeof rh - tbl) || rh.failed;
  free(buf);
  if (mw->pipe.len == 0 && e->max_tasks_per_worker > 0 && mw->ntasks >= e->max_tasks_per_worker) close_state(w);
  complete(w, f, failed ? PL_TASK_FAILED : PL_TASK_OK, &v, tb, last);
}

/* Complete everything in flight (before waiting for work, or stopping). */
static void drain(pl_worker *w, int looking_after) {
  while (((mworker *)w->kind)->pipe.len > 0) collect_one(w, looking_after);
}

/* Whether to leave the task just sent in flight and take another one at
 * once: as pipeline.h says, while a state is open on the rank and no
 * interrupt or time limit is at hand. */
static int keep_going(pl_worker *w, unsigned batch) {
  mworker *mw = w->kind;
  return mw->open && !atomic_load(&mw->interrupt) && !mw->limited &&
         pl_pipeline_keep_going(&mw->pipe, w, batch, mw->ntasks);
}

static void mpi_run(pl_worker *w, pl_task *t) {
  mworker *mw = w->kind;
  pl_executor *e = w->e;
  mexec *me = e->kind_data;
  pl_future *f = t->f;
  char err[PL_MPI_ERRLEN];
  if (!pl_future_set_running_or_notify_cancel(f)) {
    mpi_drop(e, NULL, t);
    unsigned seen = atomic_load(&e->interrupts);
    pl_executor_task_done(w, PL_TASK_CANCELLED, 1);
    if (mw->pipe.len > 0) {  /* still busy with those */
      pthread_mutex_lock(&w->cancel_mu);
      atomic_store(&w->busy, 1);
      if (atomic_load(&e->interrupts) != seen) e->kind->interrupt(w);
      pthread_mutex_unlock(&w->cancel_mu);
    }
    return;
  }
  pl_future_incref(f);  /* the flight's, or complete's */
  /* A task with time limits runs alone: its clock starts as it is sent. */
  int limited = pl_limits_any(&t->limits);
  merr *why = NULL;
  if (limited || atomic_load(&me->broken) || !mw->open) drain(w, 0);
  if (!atomic_load(&me->broken) && !mw->open) why = open_state(w);
  if (why == NULL && atomic_load(&me->broken)) {
    pl_value v;
    char *tb;
    broken_value(me, &v, &tb);
    mpi_drop(e, NULL, t);
    complete(w, f, PL_TASK_FAILED, &v, tb, 1);
    return;
  }
  if (why != NULL) {
    mpi_drop(e, NULL, t);
    fail_task(w, f, why, 1);
    return;
  }
  mw->limited = limited;
  mbytes *b = t->data;
  mpi_task h;
  memcpy(&h, b->data, sizeof h);
  pthread_mutex_lock(&me->mu);
  h.seq = (uint64_t)++me->seq;
  pthread_mutex_unlock(&me->mu);
  memcpy(b->data, &h, sizeof h);
  int r = send_to(w, PL_MPI_TAG_TASK, b->data, b->len, err);
  if (r < 0) {
    mpi_drop(e, NULL, t);
    fail_task(w, f, merr_new(PL_OS_ERROR, mw->rank, mw->pid, "mpi: %s", err), mw->pipe.len == 0);
    drain(w, 1);
    return;
  }
  unsigned batch = (unsigned)t->a;
  mw->fseq[pl_pipeline_push(&mw->pipe, f, batch)] = h.seq;
  mw->ntasks++;
  if (r == 0 && limited) pl_executor_arm_limits(w, t);
  mpi_drop(e, NULL, t);
  if (r == 0 && keep_going(w, batch)) {
    /* Back for the next task while this one runs: the oldest is collected
     * when the pipeline is full, or by idle when no task comes. */
    if (mw->pipe.len == PL_PIPELINE_DEPTH) collect_one(w, 0);
    pl_executor_looking(w);
    return;
  }
  drain(w, 1);  /* (a rank that died during the send is found lost here) */
}

static int mpi_worker_new(pl_worker *w, lua_State *L) {
  mworker *mw = calloc(1, sizeof *mw);
  if (mw == NULL) return -1;
  mw->rank = -1;
  mw->pidfd = -1;
  atomic_init(&mw->interrupt, 0);
  snprintf(mw->name, sizeof mw->name, "%s-Worker-%d", w->e->name, w->index);
  if (pl_seat_init(&mw->seat, w->e->fam, L, mw->name) != 0) {
    free(mw);
    return -1;
  }
  w->kind = mw;
  return 0;
}

static void mpi_worker_abandon(pl_worker *w, lua_State *L) {
  mworker *mw = w->kind;
  pl_seat_abandon(&mw->seat, L);
  free(mw);
  w->kind = NULL;
}

/* The state is opened by the first task (so its error reaches a future). */
static void mpi_worker_start(pl_worker *w) { (void)w; }

/* No task is waiting: complete what is in flight before sleeping; the
 * tasks that come next are measured anew (as kind processes does). */
static void mpi_idle(pl_worker *w) {
  drain(w, 0);
  pl_pipeline_forget(&((mworker *)w->kind)->pipe);
}

static void mpi_interrupt_task(pl_worker *w) { atomic_store(&((mworker *)w->kind)->interrupt, 1); }

/* Passed on to the rank by the worker thread's wait (await_reply). */
static void mpi_time_limit(pl_worker *w, int hard, double seconds) {
  mworker *mw = w->kind;
  atomic_store(&mw->limit_seconds, seconds);
  atomic_store(&mw->limit, hard ? PL_MPI_HARD_LIMIT : PL_MPI_SOFT_LIMIT);
}

/* An interrupt stays meant for the tasks still in flight. */
static void mpi_reset(pl_worker *w) {
  mworker *mw = w->kind;
  if (mw->pipe.len > 0) return;
  mw->limited = 0;
  atomic_store(&mw->interrupt, 0);
  atomic_store(&mw->limit, 0);
}

static void mpi_worker_stop(pl_worker *w, int release) {
  mworker *mw = w->kind;
  pl_executor *e = w->e;
  drain(w, 0);
  if (!mw->dead) close_state(w);
  detach(w, mw->dead);
  if (mw->pidfd >= 0) close(mw->pidfd);
  pl_seat_free(&mw->seat);
  if (release) pl_executor_release(e, NULL);
  free(mw);
  w->kind = NULL;
}

/* ---- the executor's own data ----------------------------------------- */

static int mpi_setup(pl_executor *e) {
  mexec *me = calloc(1, sizeof *me);
  if (me == NULL) return -1;
  pthread_mutex_init(&me->mu, NULL);
  atomic_init(&me->broken, 0);
  atomic_init(&me->batch, 0);
  me->t = pl_mpi_loaded();
  me->spawn = pl_mpi_world_servers() == 0;
  me->spawn_timeout_ns = PL_MPI_SPAWN_TIMEOUT_NS;
  e->kind_data = me;
  return 0;
}

/* Nothing to let go of: the ranks went back with their workers. */
static void mpi_release(pl_executor *e, lua_State *L) {
  (void)e;
  (void)L;
}

static void mpi_destroy(pl_executor *e) {
  mexec *me = e->kind_data;
  if (me == NULL) return;
  free(me->hosts);
  free(me->hostfile);
  free(me->bbytes);
  merr_free(me->berr);
  free(me->btb);
  pthread_mutex_destroy(&me->mu);
  free(me);
  e->kind_data = NULL;
}

const pl_kind_ops pl_kind_mpi = {
    "mpi",           mpi_setup,          mpi_pack,         mpi_drop,
    mpi_worker_new,  mpi_worker_abandon, mpi_worker_start, mpi_idle,
    mpi_run,         mpi_interrupt_task, mpi_time_limit,   mpi_reset,
    mpi_worker_stop, mpi_release,        mpi_destroy,
};

int pl_mpi_configure(pl_executor *e, const char *hosts, const char *hostfile, double spawn_timeout) {
  mexec *me = e->kind_data;
  if (spawn_timeout > 0) me->spawn_timeout_ns = spawn_timeout > 1e9 ? INT64_MAX / 2 : (int64_t)(spawn_timeout * 1e9);
  if (hosts != NULL && (me->hosts = strdup(hosts)) == NULL) return -1;
  if (hostfile != NULL && (me->hostfile = strdup(hostfile)) == NULL) return -1;
  if (hosts != NULL || hostfile != NULL) me->spawn = 1;  /* ranks on those hosts, not the job's */
  return 0;
}
