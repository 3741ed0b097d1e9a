/* Kind "processes": how one task is carried out by a worker process that
 * owns a lua_State of its own -- separate memory, separate lock, so
 * CPU-bound tasks scale with the cores, and a task that crashes its
 * process takes only that process down.
 *
 * The workers.  Each worker thread of the executor (executor.h) owns one
 * worker process, forked by that thread (fork.h: the child builds a fresh
 * runtime and state with pl_state_new, host preloads included, and runs
 * the pool's `init` first; its loop is procworker.c), and talks to it over
 * an AF_UNIX stream socket in frames (wire.h, procworker.h).  How the
 * thread forks, watches, signals and reaps its process is procpool.h;
 * this file is the pool kind on top of it:
 *
 *   parent -> child   INIT [init function], TASK(mode) [fn, v1..vn]
 *   child -> parent   STARTED, READY, INIT_FAILED(tb, error),
 *                     RESULT(outcome, tb, values)
 *
 * Every message is in the portable form (portable.h): codec bytes plus the
 * pipes and queues it holds, whose descriptors ride along as SCM_RIGHTS.
 * A task is encoded once, by the submitter holding its own lock (so a lock
 * or a coroutine among the arguments is refused right there, with a
 * Transfer error naming where it was); the worker thread sends it, waits
 * for the result without holding any Lua lock, and stores the result's
 * bytes in the future, which decodes them in the caller's state at
 * result().  `chunksize` items of a map go as one TASK, and their results
 * come back as one RESULT.  After `max_tasks_per_worker` tasks the worker
 * thread lets its process go and forks a fresh one for the next task.
 *
 * A short pipeline (pool/pipeline.h, the rule kind mpi shares).  A round
 * trip per task costs two wake-ups (the process's and the worker
 * thread's), far more than a trivial task.  So while many tasks wait and
 * this worker's tasks are short (the last one took under
 * PL_PIPELINE_SHORT_NS, since the worker last found no work and in the
 * same batch of submits, and the oldest one in flight has not run
 * longer), the worker thread sends a task and goes back to the executor
 * for the next one at once, keeping up to PL_PIPELINE_DEPTH tasks in
 * flight in its process's socket, and collects results in order when the
 * pipeline is full or when no task is left to take (kind->idle).  The
 * process then never sleeps between tasks, and the thread reads several
 * results per wake-up (map with chunksize 1 runs about 1.5x faster).  Long
 * tasks are never queued behind each other this way, so they spread over
 * idle workers as before.  The executor sees such a worker as busy (for
 * interrupts) until its last task in flight is complete.
 *
 * A pipelined task may be big, and so may the result the process writes
 * meanwhile: sends read while they wait (procpool.h, "Deadlocks").
 *
 * Faults.  While it waits, the worker thread polls the socket, the
 * process's pidfd and an eventfd of its own (for interrupts).  The end of
 * the stream or the process's exit means the process died -- a segfault,
 * os.exit, a SIGKILL from outside: the thread reaps exactly that pid
 * (waitpid on it, never -1), fails the future it held with a BrokenPool
 * error saying how the process ended (fields `exitcode`, negative for a
 * signal, and `pid`), and forks a replacement for the next task.  A
 * process that dies while its worker is idle held no task: the watcher of
 * procpool_watch.h reaps it meanwhile, and the next task simply runs in a
 * fresh process.  So one
 * dead worker costs the futures it held (the task it ran and the few
 * pipelined behind it), and the pool keeps serving.  This differs from
 * Python on purpose: there a dead worker marks the whole
 * ProcessPoolExecutor broken and every pending future fails with
 * BrokenProcessPool, since its workers share one call queue and Python
 * cannot tell which task the dead one held; here each worker has its own
 * socket, so only its own tasks are lost.  A frame from a worker that is
 * not well formed (bad header, missing descriptors, a cut message) is
 * treated the same way: the worker is killed and its task fails with
 * BrokenPool -- never a crash of the parent, and the codec's decoder
 * checks every byte of what it is given in the end.
 *
 * Start-up and init.  A new process first reports that it has made its
 * state; one that does not within STARTUP_NS is stuck on a lock another
 * thread held at the fork (fork.h: an allocator that is not fork-safe) and
 * is killed and forked again, as is one that dies first (killed from
 * outside): it held no task yet.  After STARTUP_TRIES in a row the task
 * fails (OSError when stuck, else BrokenPool).  A failing init breaks the pool as with the
 * other kinds (BrokenPool "pool init failed: ...", `cause` the init's own
 * error, copied).  A process that dies during init is replaced up to three
 * times in a row; then the pool is broken ("a worker process died during
 * init").  The whole start-up, fork to READY, has a deadline of its own
 * (the pool's start_timeout): a process still starting then (an init that
 * never returns) is killed, which counts as a death during init.  So a
 * stuck start-up ends, and with it the task waiting for the worker and
 * the pool's shutdown.
 *
 * Interrupts.  shutdown{interrupt=true} -- and the runtime closing after
 * Ctrl-C -- sends SIGTERM to the processes of busy workers and, if one is
 * still there after a grace period (GRACE_NS), SIGKILL; its task fails
 * with Cancelled "interrupted".  Worker processes ignore SIGINT: a Ctrl-C
 * at the terminal reaches the whole process group, and it is the parent
 * that decides to stop them.  Idle workers are stopped by closing their
 * socket: the process sees the end of its input, closes its state and
 * exits; the worker thread reaps it.  No zombie is left: every process
 * is reaped by the thread that forked it before that thread goes on, or,
 * should it die while that thread sleeps, by the watcher.  A failed init
 * ends the same way: the process sees the end of its input and closes its
 * state (its finalizers run), rather than being killed.
 *
 * Done callbacks run in the owning state exactly as with kind states: the
 * worker thread takes the owner's lock with a tstate of the owner's family
 * and runs them on a coroutine of the owner made when the worker started.
 *
 * The worker thread holds the fork guard (fork.h) except while it blocks,
 * so that another worker's fork never happens while it allocates -- and
 * while it runs done callbacks, which may block themselves (start and
 * join a par.process, wait for another processes pool: forks that must
 * not wait for this thread) and allocate under the owner's lock only.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "core/clock.h"
#include "core/enter.h"
#include "core/errors.h"
#include "pool/executor.h"
#include "pool/pipeline.h"
#include "pool/seat.h"
#include "proc/fork.h"
#include "proc/portable.h"
#include "proc/pqueue.h"
#include "proc/procpool.h"
#include "pool/procworker.h"
#include "proc/wire.h"

#define GRACE_NS PL_PPROC_GRACE_NS       /* SIGTERM, then SIGKILL after this */
#define EXIT_WAIT_NS (1000 * 1000000LL)  /* end of stream, then SIGKILL after this */
#define INIT_RETRIES 3
#define STARTUP_NS (5000 * 1000000LL)    /* a new process makes its state within this */
#define STARTUP_TRIES 3

/* An error made by the parent itself (a dead worker, an interrupt).  NULL
 * stands for one there was no memory for: the task then fails with "not
 * enough memory" (set_serr), which needs none. */
typedef struct serr {
  const char *kind;
  int has_exitcode;
  int exitcode;
  int pid;
  char message[];
} serr;

/* Restart intensity, as Erlang's supervisors have it: more than
 * max_restarts deaths of worker processes within restart_window and the
 * pool stops replacing them (it breaks, saying why), instead of forking
 * a crashing worker in a loop.  Interrupts and hard time limits are not
 * deaths: the pool killed those itself. */
#define MAX_RESTARTS_CAP 1000

typedef struct pexec {
  pthread_mutex_t mu;
  int64_t deaths[MAX_RESTARTS_CAP + 1];  /* guarded by mu: a ring of the last deaths' times */
  int ndeaths, dhead;                    /* guarded by mu */
  atomic_int broken;
  pl_pmsg *bmsg;         /* guarded by mu: the BrokenPool error, or NULL */
  serr *berr;            /* guarded by mu: ... or this one */
  char *btb;             /* guarded by mu: the failed init's traceback */
  atomic_uint batch;     /* bumped by a submit to a pool with nothing queued or running */
} pexec;

typedef struct ptask {
  pl_obuf frame;         /* INIT or TASK: header and payload */
  pl_fdlist fds;
  unsigned batch;        /* pexec.batch when it was submitted */
} ptask;

typedef struct pworker {
  pl_executor *e;
  pl_pproc proc;         /* the process (procpool.h) */
  int limited;           /* the task in flight has time limits: nothing more is sent */
  atomic_uint limited_task;   /* its number in this process (procworker.h) */
  atomic_int hard_limit_hit;  /* its hard limit killed the process */
  double hard_limit_s;   /* written before hard_limit_hit */
  int ntasks;            /* tasks run by the current process */
  pl_pipeline pipe;          /* worker thread only: the tasks in flight */
  char name[64];
  pl_seat seat;          /* in the owning state, for callbacks */
} pworker;

/* ---- values ---------------------------------------------------------- */

static int pmsg_push(lua_State *L, const pl_value *v) { return pl_pmsg_decode(L, v->data); }

static void pmsg_free(lua_State *L, pl_value *v) {
  (void)L;
  if (v->data != NULL) pl_pmsg_free(v->data);
  free(v->data);
  v->data = NULL;
  v->ops = NULL;
}

static const pl_value_ops pmsg_ops = {pmsg_push, pmsg_free};

static int serr_push(lua_State *L, const pl_value *v) {
  const serr *s = v->data;
  pl_error_push(L, s->kind, "%s", s->message);
  if (s->has_exitcode) {
    lua_pushinteger(L, s->exitcode);
    lua_setfield(L, -2, "exitcode");
  }
  if (s->pid > 0) {
    lua_pushinteger(L, s->pid);
    lua_setfield(L, -2, "pid");
  }
  return 1;
}

static void serr_free(lua_State *L, pl_value *v) {
  (void)L;
  free(v->data);
  v->data = NULL;
  v->ops = NULL;
}

static const pl_value_ops serr_ops = {serr_push, serr_free};

static serr *serr_new(const char *kind, int pid, int has_exitcode, int exitcode, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static serr *serr_new(const char *kind, int pid, int has_exitcode, int exitcode, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  serr *s = malloc(sizeof *s + strlen(msg) + 1);
  if (s == NULL) return NULL;
  s->kind = kind;
  s->pid = pid;
  s->has_exitcode = has_exitcode;
  s->exitcode = exitcode;
  strcpy(s->message, msg);
  return s;
}

static serr *serr_copy(const serr *s) {
  if (s == NULL) return NULL;
  size_t n = sizeof *s + strlen(s->message) + 1;
  serr *c = malloc(n);
  if (c != NULL) memcpy(c, s, n);
  return c;
}

static void set_serr(pl_value *v, serr *s) {
  if (s == NULL) {
    pl_value_no_memory(v);
    return;
  }
  memset(v, 0, sizeof *v);
  v->ops = &serr_ops;
  v->data = s;
}

static void set_pmsg(pl_value *v, pl_pmsg *m) {
  memset(v, 0, sizeof *v);
  v->ops = &pmsg_ops;
  v->data = m;
}

/* ---- talking to the process ----------------------------------------- */

static int send_frame(pworker *pw, const pl_obuf *b, const pl_fdlist *fds) {
  return pl_pproc_send(&pw->proc, b, fds, pw->pipe.len > 0);
}

static int await_frame(pworker *pw, pl_frame *f) { return pl_pproc_recv(&pw->proc, f, INT64_MAX); }

#define HOW_LEN 96

/* How a process was lost, from what the last pl_pproc_recv returned:
 * it is gone (0), stopped in the middle of a frame, there was no memory
 * for a frame (its stream cannot be followed any more), too late with its
 * start-up (a deadline), or anything else (a wrong frame, nonsense): it
 * is killed. */
enum { LOST_GONE, LOST_STALLED, LOST_NO_MEMORY, LOST_LATE, LOST_KILLED };

static int lost_how(int r) {
  if (r == 0) return LOST_GONE;
  if (r == -ENOMEM) return LOST_NO_MEMORY;
  if (r == -ETIMEDOUT) return LOST_LATE;
  return r == PL_ESTALLED ? LOST_STALLED : LOST_KILLED;
}

/* The process is lost (it died, or spoke nonsense, or stalled, or an
 * interrupt stopped it): reap it and describe what happened as the task's
 * error -- `doing` says when ("while running the task") -- and, in
 * how[HOW_LEN] if given, how it ended.  One that died in the middle of a
 * message (killed while it sent a big result) is reported as a death. */
static void break_pool(pl_executor *e, pl_pmsg *m, serr *s, char *tb);

/* A worker process died: 1 when that makes too many within the window. */
static int too_many_deaths(pl_executor *e) {
  pexec *pe = e->kind_data;
  int keep = e->max_restarts + 1;
  int64_t now = pl_now_ns();
  pthread_mutex_lock(&pe->mu);
  pe->deaths[pe->dhead] = now;
  pe->dhead = (pe->dhead + 1) % keep;
  if (pe->ndeaths < keep) pe->ndeaths++;
  int64_t oldest = pe->deaths[pe->ndeaths < keep ? 0 : pe->dhead];
  int over = pe->ndeaths == keep && now - oldest <= e->restart_window_ns;
  pthread_mutex_unlock(&pe->mu);
  return over;
}

static serr *lose_child(pworker *pw, int lost, const char *doing, char *how_out) {
  int status = 0, code;
  char how[HOW_LEN];
  pid_t pid = pw->proc.pid;
  int interrupted = atomic_load(&pw->proc.interrupted);
  size_t have = 0;
  uint64_t total = 0;
  pl_rbuf_progress(&pw->proc.rb, &have, &total);
  if (lost == LOST_GONE && have > 0) doing = "while sending a message";
  if (lost != LOST_GONE) pl_pproc_signal(&pw->proc, SIGKILL);
  pl_pproc_finish(&pw->proc, &status, EXIT_WAIT_NS, 0);
  pw->ntasks = 0;
  pl_pproc_describe(status, how, sizeof how, &code);
  if (how_out != NULL) memcpy(how_out, how, sizeof how);
  if (atomic_exchange(&pw->hard_limit_hit, 0))
    return serr_new(PL_TIMEOUT, pid, 1, code, "the task exceeded its time limit of %g s (worker process %d killed)",
                    pw->hard_limit_s, (int)pid);
  if (interrupted)
    return serr_new(PL_CANCELLED, pid, 1, code, "interrupted (worker process %d stopped)", (int)pid);
  if (lost == LOST_NO_MEMORY) return NULL;  /* "not enough memory"; killed by us, not a death */
  if (too_many_deaths(pw->e))
    break_pool(pw->e, NULL,
               serr_new(PL_BROKEN_POOL, pid, 1, code,
                        "worker processes died %d times within %g s (max_restarts = %d, restart_window = %g): "
                        "the pool stopped replacing them; the last one (pid %d) died %s (%s)",
                        pw->e->max_restarts + 1, (double)pw->e->restart_window_ns / 1e9, pw->e->max_restarts,
                        (double)pw->e->restart_window_ns / 1e9, (int)pid, doing, how),
               NULL);
  if (lost == LOST_STALLED)
    return serr_new(PL_BROKEN_POOL, pid, 1, code,
                    "worker process %d stopped in the middle of a message (%zu of %llu bytes came, "
                    "then nothing for %g s: message_timeout) and was killed",
                    (int)pid, have, (unsigned long long)total, (double)pw->proc.stall_ns / 1e9);
  if (lost == LOST_LATE)
    return serr_new(PL_BROKEN_POOL, pid, 1, code,
                    "worker process %d did not finish starting within %g s (start_timeout) and was killed",
                    (int)pid, (double)pw->e->start_timeout_ns / 1e9);
  if (lost == LOST_KILLED)
    return serr_new(PL_BROKEN_POOL, pid, 1, code,
                    "worker process %d sent a malformed message and was killed", (int)pid);
  return serr_new(PL_BROKEN_POOL, pid, 1, code, "a worker process (pid %d) died %s (%s)", (int)pid,
                  doing, how);
}

/* A RESULT or INIT_FAILED frame (used up): the traceback and the
 * message.  0; -EBADMSG when the objects of the message could not be made
 * (*tb kept, err says why); -EPROTO or -ENOMEM (nothing kept). */
static int take_reply(pl_frame *f, pl_pmsg **m, char **tb, char *err, size_t errlen) {
  uint64_t tblen;
  int rc = -EPROTO;
  *m = NULL;
  *tb = NULL;
  if (f->len < sizeof tblen) goto fail;
  memcpy(&tblen, f->data, sizeof tblen);
  if (tblen > f->len - sizeof tblen) goto fail;
  rc = -ENOMEM;
  if (tblen > 0) {
    if ((*tb = malloc((size_t)tblen + 1)) == NULL) goto fail;
    memcpy(*tb, f->data + sizeof tblen, (size_t)tblen);
    (*tb)[tblen] = '\0';
  }
  if ((*m = malloc(sizeof **m)) == NULL) goto fail;
  if (pl_port_unpack_frame(f, sizeof tblen + (size_t)tblen, *m, err, errlen) != 0) {
    free(*m);
    *m = NULL;
    return -EBADMSG;
  }
  return 0;
fail:
  pl_frame_free(f);
  free(*tb);
  *tb = NULL;
  return rc;
}

/* ---- breaking the pool ----------------------------------------------- */

/* The pool breaks with the init's error m, or the parent's s; neither:
 * there was no memory for s. */
static void break_pool(pl_executor *e, pl_pmsg *m, serr *s, char *tb) {
  pexec *pe = e->kind_data;
  char msg[512];
  if (s != NULL) snprintf(msg, sizeof msg, "%s", s->message);
  else if (m != NULL) snprintf(msg, sizeof msg, "pool init failed: %.*s", (int)(tb != NULL ? strcspn(tb, "\n") : 0),
                               tb != NULL ? tb : "");
  else snprintf(msg, sizeof msg, "not enough memory");
  pthread_mutex_lock(&pe->mu);
  int first = !atomic_load(&pe->broken);
  if (first) {
    pe->bmsg = m;
    pe->berr = s;
    pe->btb = tb;
    m = NULL;
    s = NULL;
    tb = NULL;
    atomic_store(&pe->broken, 1);
  }
  pthread_mutex_unlock(&pe->mu);
  if (first) pl_executor_break(e, msg);
  if (m != NULL) {
    pl_pmsg_free(m);
    free(m);
  }
  free(s);
  free(tb);
}

static void fail_broken(pexec *pe, pl_value *v, char **tb) {
  pthread_mutex_lock(&pe->mu);
  pl_pmsg *m = pe->bmsg != NULL ? malloc(sizeof *m) : NULL;
  if (m != NULL && pl_pmsg_copy(pe->bmsg, m) != 0) {
    free(m);
    m = NULL;
  }
  if (m != NULL) set_pmsg(v, m);
  else set_serr(v, serr_copy(pe->berr));  /* NULL (no memory): "not enough memory" */
  *tb = pe->btb != NULL ? strdup(pe->btb) : NULL;
  pthread_mutex_unlock(&pe->mu);
}

/* ---- starting and stopping the process ------------------------------- */

/* Fork a process (and run init in it).  0 when it is ready; -1 when it
 * could not be made (*why set) or the pool is now broken. */
static int start_child(pl_worker *w, serr **why) {
  pworker *pw = w->kind;
  pl_executor *e = w->e;
  parlua *rt = e->fam->rt;
  *why = NULL;
  int start_tries = 0;
  for (int attempt = 1;; attempt++) {
    pl_procworker_ctx x;
    memset(&x, 0, sizeof x);
    pthread_mutex_lock(&rt->mu);
    x.modules = rt->modules;
    x.preloads = rt->preloads;
    pthread_mutex_unlock(&rt->mu);
    x.interval = pl_gil_get_interval(&e->fam->gil);
    snprintf(x.name, sizeof x.name, "%s", pw->name);
    int err = pl_pproc_fork(&pw->proc, e->fam, &x);
    if (err != 0) {
      *why = serr_new(PL_OS_ERROR, 0, 0, 0, "cannot start a worker process: %s", strerror(-err));
      return -1;
    }
    pw->ntasks = 0;
    pl_pipeline_forget(&pw->pipe);
    int64_t now = pl_now_ns(), ready_by = now + e->start_timeout_ns;

    /* The process says it has made its state.  One that does not within
     * STARTUP_NS is stuck on a lock another thread of ours held at the
     * fork (see fork.h); one that dies first was killed from outside, or
     * cannot make a state.  It held no task yet: it is made again, up to
     * STARTUP_TRIES times in a row. */
    pl_frame f;
    int r = pl_pproc_recv(&pw->proc, &f, now + STARTUP_NS < ready_by ? now + STARTUP_NS : ready_by);
    if (r == 1 && f.type == F_STARTED) {
      pl_frame_free(&f);
    } else {
      if (r == 1) pl_frame_free(&f);
      int stuck = r == -ETIMEDOUT;
      serr *lost = lose_child(pw, lost_how(r == 1 ? -EPROTO : r), "while starting", NULL);
      if (lost == NULL) return -1;
      if (strcmp(lost->kind, PL_CANCELLED) == 0) {
        *why = lost;
        return -1;
      }
      if (++start_tries < STARTUP_TRIES) {
        free(lost);
        attempt--;
        continue;
      }
      if (stuck) {
        *why = serr_new(PL_OS_ERROR, lost->pid, lost->has_exitcode, lost->exitcode,
                        "a worker process did not start (stuck while making its state)");
        free(lost);
      } else {
        *why = lost;  /* BrokenPool: it died, or spoke nonsense */
      }
      return -1;
    }
    if (e->init.n < 0) return 0;

    ptask *init = e->init.data;
    r = send_frame(pw, &init->frame, &init->fds) == 0 ? pl_pproc_recv(&pw->proc, &f, ready_by) : 0;
    if (r == 1 && f.type == F_READY) {
      pl_frame_free(&f);
      return 0;
    }
    if (r == 1 && f.type == F_INIT_FAILED) {
      pl_pmsg *m;
      char *tb;
      char ebuf[256];
      int k = take_reply(&f, &m, &tb, ebuf, sizeof ebuf);
      int status;
      pl_pproc_finish(&pw->proc, &status, EXIT_WAIT_NS, 0);  /* its input ends: it leaves */
      if (k == 0) break_pool(e, m, NULL, tb);
      else break_pool(e, NULL, serr_new(PL_BROKEN_POOL, 0, 0, 0, "pool init failed (%s)", ebuf), tb);
      return -1;
    }
    if (r == 1) pl_frame_free(&f);
    char how[HOW_LEN];
    serr *lost = lose_child(pw, lost_how(r == 1 ? -EPROTO : r), "during init", how);
    if (lost == NULL) return -1;
    if (strcmp(lost->kind, PL_CANCELLED) == 0) {  /* an interrupt, not a fault */
      *why = lost;
      return -1;
    }
    if (attempt >= INIT_RETRIES) {
      serr *s = r == -ETIMEDOUT
                    ? serr_new(PL_BROKEN_POOL, lost->pid, lost->has_exitcode, lost->exitcode,
                               "a worker process did not finish init within %g s (start_timeout) "
                               "%d times in a row (the last one, pid %d, was killed)",
                               (double)e->start_timeout_ns / 1e9, attempt, lost->pid)
                    : serr_new(PL_BROKEN_POOL, lost->pid, lost->has_exitcode, lost->exitcode,
                               "a worker process died during init %d times in a row (the last one %s)",
                               attempt, how);
      free(lost);
      break_pool(e, NULL, s, NULL);
      return -1;
    }
    free(lost);
  }
}

typedef struct stopping {
  pl_executor *e;
  unsigned seen;         /* e->interrupts when the stop began */
} stopping;

static int interrupted_since(void *ud) {
  stopping *st = ud;
  return atomic_load(&st->e->fam->rt->interrupted) || atomic_load(&st->e->interrupts) != st->seen;
}

/* Let the process go: it sees the end of its input and exits.  When
 * `hard`, or once the pool or the runtime is interrupted meanwhile, it is
 * terminated (SIGTERM, then SIGKILL after the grace period). */
static void stop_child(pl_worker *w, int hard) {
  pworker *pw = w->kind;
  stopping st = {w->e, atomic_load(&w->e->interrupts)};
  pl_pproc_stop(&pw->proc, hard, interrupted_since, &st);
  pw->ntasks = 0;
}

/* ---- the kind -------------------------------------------------------- */

static int c_pack(lua_State *L) {
  pl_task *t = lua_touserdata(L, lua_upvalueindex(1));
  ptask *pt = lua_touserdata(L, lua_upvalueindex(2));
  const char *head = t->mode == PL_TASK_INIT ? "init function" : "function";
  const char *each = t->mode == PL_TASK_CALL ? "argument %d" : t->n == 1 ? "item" : "item %d of a chunk";
  pl_port_encode(L, 1, t->n + 1, head, each, &pt->frame, &pt->fds);
  return 0;
}

/* Submitter, lock held: [fn, v1..vn] -> one INIT or TASK frame. */
static void processes_pack(pl_executor *e, lua_State *L, pl_task *t) {
  ptask *pt = calloc(1, sizeof *pt);
  if (pt == NULL) luaL_error(L, "not enough memory");
  pl_fdlist_init(&pt->fds);
  if (pl_obuf_frame_begin(&pt->frame, t->mode == PL_TASK_INIT ? F_INIT : F_TASK, (uint32_t)t->mode, 0) != 0) {
    free(pt);
    luaL_error(L, "not enough memory");
  }
  lua_pushlightuserdata(L, t);
  lua_pushlightuserdata(L, pt);
  lua_pushcclosure(L, c_pack, 2);
  lua_insert(L, -(t->n + 2));
  if (lua_pcall(L, t->n + 1, 0, 0) != LUA_OK) {
    pl_obuf_free(&pt->frame);
    pl_fdlist_free(&pt->fds);
    free(pt);
    pl_error_throw(L);
  }
  pl_obuf_frame_end(&pt->frame, 0);
  pt->frame.data[3] = (unsigned char)pt->fds.n;
  pt->batch = pl_pipeline_batch_of_submit(e, &((pexec *)e->kind_data)->batch);
  t->data = pt;
}

static void processes_drop(pl_executor *e, lua_State *L, pl_task *t) {
  (void)e;
  (void)L;
  ptask *pt = t->data;
  if (pt == NULL) return;
  pl_obuf_free(&pt->frame);
  pl_fdlist_free(&pt->fds);
  free(pt);
  t->data = NULL;
}

/* ---- running tasks: a short pipeline per worker --------------------- */

/* Complete future f: store the outcome, count it, finish it, run its
 * callbacks.  `last`: nothing else is in flight on this worker, so it goes
 * back to looking for work (see executor.h on `looking`). */
static void complete(pl_worker *w, pl_future *f, int outcome, pl_value *v, char *tb, int last) {
  pworker *pw = w->kind;
  pl_executor *e = w->e;
  if (!pl_future_store(f, outcome == PL_TASK_OK ? PL_OUTCOME_OK : PL_OUTCOME_ERROR, v, tb)) {
    v->ops->free(NULL, v);  /* nobody holds the future any more */
    free(tb);
  }
  int has_callbacks = pl_future_has_callbacks(f);
  unsigned seen = atomic_load(&e->interrupts);
  pl_executor_task_done(w, outcome, last && !has_callbacks);
  if (!last) {
    /* The executor thinks this worker is idle now; it is not: an
     * interrupt must still reach the tasks in flight. */
    pthread_mutex_lock(&w->cancel_mu);
    w->busy = 1;
    if (atomic_load(&e->interrupts) != seen) e->kind->interrupt(w);
    pthread_mutex_unlock(&w->cancel_mu);
  }
  pl_future_cb *cbs = pl_future_finish(f);
  if (cbs != NULL) {
    /* Not under the fork guard: a callback may block (join a
     * par.process, wait for another processes pool), and a fork -- its
     * own among them -- must not wait for it.  Its allocations are
     * quiet anyway: it runs under the owner's global lock, which a fork
     * for that state takes. */
    pl_fork_guard_leave();
    pl_seat_run_callbacks(&pw->seat, w, f, cbs, NULL);
    pl_fork_guard_enter();
  }
  if (last && has_callbacks) pl_executor_looking(w);
  pl_future_decref(f);
}

/* The process is lost: every task in flight fails with err (taken). */
static void fail_flight(pl_worker *w, serr *err, int looking_after) {
  pworker *pw = w->kind;
  while (pw->pipe.len > 0) {
    pl_future *f = pl_pipeline_pop(&pw->pipe);
    pl_value v;
    set_serr(&v, pw->pipe.len > 0 ? serr_copy(err) : err);
    complete(w, f, PL_TASK_FAILED, &v, NULL, pw->pipe.len == 0 && looking_after);
  }
}

/* Wait for the result of the oldest task in flight and complete it. */
static void collect_one(pl_worker *w, int looking_after) {
  pworker *pw = w->kind;
  pl_frame f;
  pl_value v;
  char *tb = NULL;
  int r = await_frame(pw, &f);
  if (r == 1 && f.type == F_RESULT) {
    pl_pmsg *m;
    char err[256];
    int failed = f.aux != 0;
    r = take_reply(&f, &m, &tb, err, sizeof err);
    if (r == 0 || r == -EBADMSG) {
      int outcome = failed ? PL_TASK_FAILED : PL_TASK_OK;
      if (r == 0) {
        set_pmsg(&v, m);
      } else {  /* the bytes were fine, the objects could not be made */
        set_serr(&v, serr_new(PL_TRANSFER, 0, 0, 0, "cannot receive the %s: %s",
                              failed ? "error" : "result", err));
        outcome = PL_TASK_FAILED;
      }
      pl_future *fut = pl_pipeline_pop(&pw->pipe);
      complete(w, fut, outcome, &v, tb, pw->pipe.len == 0 && looking_after);
      return;
    }
    if (r == -ENOMEM) {  /* the frame was read whole: the process goes on */
      pl_value_no_memory(&v);
      pl_future *fut = pl_pipeline_pop(&pw->pipe);
      complete(w, fut, PL_TASK_FAILED, &v, NULL, pw->pipe.len == 0 && looking_after);
      return;
    }
    r = -EPROTO;
  } else if (r == 1) {
    pl_frame_free(&f);
    r = -EPROTO;
  }
  fail_flight(w, lose_child(pw, lost_how(r), "while running the task", NULL), looking_after);
}

/* Complete everything in flight (the worker is about to wait for work,
 * or to stop). */
static void drain(pl_worker *w, int looking_after) {
  pworker *pw = w->kind;
  while (pw->pipe.len > 0) collect_one(w, looking_after);
}

/* Whether to leave the task just sent in flight and take another one at
 * once: as pipeline.h says, while this worker's process is there and no
 * interrupt or time limit is at hand. */
static int keep_going(pl_worker *w, unsigned batch) {
  pworker *pw = w->kind;
  return pw->proc.sock >= 0 && !atomic_load(&pw->proc.interrupted) && !pw->limited &&
         pl_pipeline_keep_going(&pw->pipe, w, batch, pw->ntasks);
}

static void run_task(pl_worker *w, pl_task *t) {
  pworker *pw = w->kind;
  pl_executor *e = w->e;
  pexec *pe = e->kind_data;
  pl_future *f = t->f;
  if (!pl_future_set_running_or_notify_cancel(f)) {
    processes_drop(e, NULL, t);
    pl_executor_task_done(w, PL_TASK_CANCELLED, pw->pipe.len == 0);
    if (pw->pipe.len > 0) pl_executor_looking(w);
    return;
  }
  pl_future_incref(f);  /* the flight's, or complete's */
  serr *why = NULL;
  int failed = 0;        /* with why, or NULL when there was no memory for it */
  if (atomic_load(&pw->proc.interrupted)) {  /* stopped before it began */
    drain(w, 0);
    failed = 1;
    why = serr_new(PL_CANCELLED, 0, 0, 0, "interrupted");
    if (pw->proc.sock >= 0) {
      int status;
      pl_pproc_finish(&pw->proc, &status, GRACE_NS, 1);
    }
  } else if (!atomic_load(&pe->broken)) {
    /* A process that ended while idle (killed from outside) held no
     * task: this one does not fail, a fresh process runs it. */
    if (pw->pipe.len == 0) (void)pl_pproc_ended_idle(&pw->proc);
    if (pw->proc.sock < 0) failed = start_child(w, &why) != 0;
  }
  if (failed || atomic_load(&pe->broken)) {
    drain(w, 0);
    pl_value v;
    char *tb = NULL;
    if (why != NULL || !atomic_load(&pe->broken)) set_serr(&v, why);
    else fail_broken(pe, &v, &tb);
    processes_drop(e, NULL, t);
    complete(w, f, PL_TASK_FAILED, &v, tb, 1);
    return;
  }
  /* A task with time limits runs alone: its clock starts when it is sent,
   * and its hard limit kills the process, which must hold nothing else. */
  int limited = pl_limits_any(&t->limits);
  if (limited && pw->pipe.len > 0) drain(w, 0);  /* (its completions reset pw->limited) */
  pw->limited = limited;
  ptask *pt = t->data;
  unsigned batch = pt->batch;
  int sent = send_frame(pw, &pt->frame, &pt->fds) == 0;
  (void)pl_pipeline_push(&pw->pipe, f, batch);
  pw->ntasks++;
  if (sent && limited) {
    atomic_store(&pw->limited_task, (unsigned)pw->ntasks);  /* read by the watcher */
    pl_executor_arm_limits(w, t);
  }
  processes_drop(e, NULL, t);
  if (!sent) {  /* it is gone: collect what it sent, then the loss */
    drain(w, 1);
    return;
  }
  if (keep_going(w, batch)) {
    /* Back for the next task while this one runs: the oldest one is
     * collected when the pipeline is full (or by idle, when no task
     * comes). */
    if (pw->pipe.len == PL_PIPELINE_DEPTH) collect_one(w, 0);
    pl_executor_looking(w);
    return;
  }
  drain(w, 1);
  if (pw->proc.sock >= 0 && e->max_tasks_per_worker > 0 && pw->ntasks >= e->max_tasks_per_worker) {
    stop_child(w, 0);  /* a fresh process comes with the next task */
  }
  if (atomic_load(&pw->proc.interrupted) && pw->proc.sock >= 0) {  /* SIGTERM is on its way to it */
    int status;
    pl_pproc_finish(&pw->proc, &status, GRACE_NS, 1);
  }
}

static int processes_worker_new(pl_worker *w, lua_State *L) {
  pworker *pw = calloc(1, sizeof *pw);
  if (pw == NULL) return -1;
  pw->e = w->e;
  if (pl_pproc_init(&pw->proc) != 0) {
    free(pw);
    return -1;
  }
  pw->proc.stall_ns = w->e->message_timeout_ns;
  snprintf(pw->name, sizeof pw->name, "%s-Worker-%d", w->e->name, w->index);
  if (pl_seat_init(&pw->seat, w->e->fam, L, pw->name) != 0) {
    pl_pproc_free(&pw->proc);
    free(pw);
    return -1;
  }
  w->kind = pw;
  return 0;
}

static void free_worker(pworker *pw) {
  pl_pproc_free(&pw->proc);
  free(pw);
}

static void processes_worker_abandon(pl_worker *w, lua_State *L) {
  pworker *pw = w->kind;
  pl_seat_abandon(&pw->seat, L);
  free_worker(pw);
  w->kind = NULL;
}

/* The worker thread holds the fork guard except while it blocks (see
 * fork.h): these are the kind's entry points on that thread. */
static void processes_run(pl_worker *w, pl_task *t) {
  pl_pproc_busy(&((pworker *)w->kind)->proc);
  pl_fork_guard_enter();
  run_task(w, t);
  pl_fork_guard_leave();
}

static void processes_worker_start(pl_worker *w) {
  serr *why = NULL;
  pl_fork_guard_enter();
  if (!atomic_load(&((pexec *)w->e->kind_data)->broken)) start_child(w, &why);
  pl_fork_guard_leave();
  free(why);  /* the next task tries again, and reports it */
}

/* No task is waiting: complete what is in flight before sleeping.  The
 * tasks that come next are measured anew: short ones before a pause say
 * nothing of the next batch (4 long tasks after a warm-up of trivial ones
 * went 3+1 on 2 workers while they were trusted to be short). */
static void processes_idle(pl_worker *w) {
  pworker *pw = w->kind;
  pl_fork_guard_enter();
  drain(w, 0);
  pl_fork_guard_leave();
  pl_pipeline_forget(&pw->pipe);
  pl_pproc_idle(&pw->proc);
}

static void processes_interrupt(pl_worker *w) {
  pworker *pw = w->kind;
  if (atomic_load(&w->e->kill_workers)) pl_pproc_kill(&pw->proc);
  else pl_pproc_interrupt(&pw->proc);
}

static void processes_time_limit(pl_worker *w, int hard, double seconds) {
  pworker *pw = w->kind;
  if (!hard) {
    pl_pproc_sigqueue(&pw->proc, PL_SOFT_LIMIT_SIGNAL, pl_soft_limit_value(atomic_load(&pw->limited_task), seconds));
    return;
  }
  pw->hard_limit_s = seconds;
  atomic_store(&pw->hard_limit_hit, 1);
  pl_pproc_signal(&pw->proc, SIGKILL);  /* the worker thread sees it die, and replaces it */
}

/* An interrupt stays meant for the tasks still in flight. */
static void processes_reset(pl_worker *w) {
  pworker *pw = w->kind;
  if (pw->pipe.len > 0) return;
  pl_pproc_reset(&pw->proc);
  pw->limited = 0;
  atomic_store(&pw->hard_limit_hit, 0);
}

static void processes_worker_stop(pl_worker *w, int release) {
  pworker *pw = w->kind;
  pl_executor *e = w->e;
  pl_pproc_busy(&pw->proc);
  pl_fork_guard_enter();
  drain(w, 0);
  stop_child(w, atomic_load(&e->fam->rt->interrupted));
  pl_fork_guard_leave();
  pl_seat_free(&pw->seat);
  if (release) pl_executor_release(e, NULL);
  free_worker(pw);
  w->kind = NULL;
}

/* ---- the executor's own data ----------------------------------------- */

static int processes_setup(pl_executor *e) {
  pexec *pe = calloc(1, sizeof *pe);
  if (pe == NULL) return -1;
  pthread_mutex_init(&pe->mu, NULL);
  atomic_init(&pe->broken, 0);
  atomic_init(&pe->batch, 0);
  e->kind_data = pe;
  return 0;
}

static void processes_release(pl_executor *e, lua_State *L) {
  (void)e;
  (void)L;
}

static void processes_destroy(pl_executor *e) {
  pexec *pe = e->kind_data;
  if (pe == NULL) return;
  if (pe->bmsg != NULL) {
    pl_pmsg_free(pe->bmsg);
    free(pe->bmsg);
  }
  free(pe->berr);
  free(pe->btb);
  pthread_mutex_destroy(&pe->mu);
  free(pe);
  e->kind_data = NULL;
}

const pl_kind_ops pl_kind_processes = {
    "processes",           processes_setup,          processes_pack,         processes_drop,
    processes_worker_new,  processes_worker_abandon, processes_worker_start, processes_idle,
    processes_run,         processes_interrupt,      processes_time_limit,   processes_reset,
    processes_worker_stop, processes_release,        processes_destroy,
};
