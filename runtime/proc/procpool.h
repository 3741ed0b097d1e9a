/* Private to the parlua runtime: one worker process of a processes pool,
 * as the worker thread that owns it sees it.  kind_processes.c builds the
 * pool kind on it; procworker.c is the process's own side.
 *
 * The worker thread forks the process (fork.h), talks to it over an
 * AF_UNIX stream socket in frames (wire.h), and reaps exactly its pid
 * (waitpid on it, never -1) before it goes on, so no zombie is left by
 * anything it does.  While it waits it polls the socket, the process's
 * pidfd and an eventfd of its own, so it notices at once when the
 * process dies (end of stream, or the pidfd) or an interrupt comes.
 * While it sleeps in the executor between tasks, its process is listed
 * with the watcher of procpool_watch.h, which reaps it should it die
 * meanwhile (a SIGKILL from outside).
 *
 * Other threads only signal the process (pl_pproc_signal, under p->mu, so
 * that no signal ever goes to a pid once it is reaped: it may be another
 * process's soon) and interrupt it (pl_pproc_interrupt: SIGTERM now, and
 * the worker thread sends SIGKILL once the grace period is over).
 *
 * Every blocking call here leaves the fork guard (fork.h) while it blocks
 * and takes it back after: the worker thread holds it otherwise.
 *
 * Deadlocks.  The process reads one frame whole before it runs it, and
 * writes its reply whole before it reads again; the parent may have
 * several tasks in flight (kind_processes.c's pipeline).  So a send here
 * may find the socket full while the process is blocked writing a big
 * result: with `reading`, the send reads what the process writes
 * meanwhile into p->rb (where the next pl_pproc_recv finds it), so that
 * neither waits for the other forever, whatever the sizes.
 */
#ifndef PL_PROCPOOL_H
#define PL_PROCPOOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "proc/procpool_watch.h"
#include "pool/procworker.h"
#include "core/runtime.h"
#include "proc/wire.h"

#define PL_PPROC_GRACE_NS (1000 * 1000000LL)  /* SIGTERM, then SIGKILL after this */

typedef struct pl_pproc {
  pthread_mutex_t mu;      /* guards pid, alive */
  pid_t pid;
  int alive;               /* a process runs and is not reaped */
  int pidfd, sock;         /* worker thread only; -1 when there is no process */
  int wake;                /* eventfd: an interrupt came */
  atomic_int interrupted;
  atomic_llong term_at;    /* when SIGTERM was sent, 0 if not */
  pl_rbuf rb;              /* worker thread only: what the process sent */
  int64_t stall_ns;        /* a frame begun must go on within this (0: no bound) */
  pl_idlewatch watch;
} pl_pproc;

/* No process yet.  0, or -1 when out of descriptors or memory. */
int pl_pproc_init(pl_pproc *p);
/* Let go of what init made (the process, if any, finished first). */
void pl_pproc_free(pl_pproc *p);

/* Fork a process running pl_procworker_main(x) (x->sock is filled in
 * here) with the global lock of `quiet` held for the fork (fork.h).  0,
 * or -errno when none could be made.  The caller then waits for its
 * F_STARTED frame. */
int pl_pproc_fork(pl_pproc *p, pl_family *quiet, pl_procworker_ctx *x);

/* Send a whole frame: 0, or -1 when the process is gone (or spoke
 * nonsense while `reading`: the next recv says so). */
int pl_pproc_send(pl_pproc *p, const pl_obuf *b, const pl_fdlist *fds, int reading);
/* The next frame from the process: 1, 0 when it is gone (end of stream,
 * or it ended; pl_pproc_cut tells whether in the middle of a frame),
 * -EPROTO when what it sent is not frames, -ETIMEDOUT at the deadline,
 * PL_ESTALLED when it began a frame and then sent nothing for stall_ns
 * (whatever the deadline: a process that sends has nothing to wait for,
 * it wrote the whole frame at once), -errno. */
int pl_pproc_recv(pl_pproc *p, pl_frame *f, int64_t deadline);
/* Bytes of a frame not yet complete are buffered: the process stopped
 * (or died) in the middle of one. */
int pl_pproc_cut(const pl_pproc *p);

/* Any thread: send sig to the process while it is not reaped (with a
 * value: sigqueue). */
void pl_pproc_signal(pl_pproc *p, int sig);
void pl_pproc_sigqueue(pl_pproc *p, int sig, void *value);
/* Reap the process if it has ended: 1 (*status set by the call that
 * reaped it), 0 while it runs. */
int pl_pproc_try_reap(pl_pproc *p, int *status);
/* Make sure the process is gone and reaped, its descriptors closed: it
 * sees the end of its input (and SIGTERM first when term_first), and
 * SIGKILL when it is still there after wait_ns. */
void pl_pproc_finish(pl_pproc *p, int *status, int64_t wait_ns, int term_first);
/* Let the process go at the end of its input; it is terminated instead
 * when `hard`, or once harden(ud) says so (an interrupt came meanwhile). */
void pl_pproc_stop(pl_pproc *p, int hard, int (*harden)(void *ud), void *ud);
/* The process ended while its worker thread was idle (it held no task):
 * reap it and close its descriptors.  1 if so, 0 while it runs. */
int pl_pproc_ended_idle(pl_pproc *p);

/* Any thread: stop what the process does (SIGTERM now, SIGKILL after the
 * grace period, from the worker thread's waits). */
void pl_pproc_interrupt(pl_pproc *p);
/* Any thread: the same, with SIGKILL at once. */
void pl_pproc_kill(pl_pproc *p);
/* Worker thread: forget an interrupt. */
void pl_pproc_reset(pl_pproc *p);

/* The worker thread goes to sleep in the executor / comes back: the
 * process is watched meanwhile. */
void pl_pproc_idle(pl_pproc *p);
void pl_pproc_busy(pl_pproc *p);

/* How a process ended, for messages ("exited with code 3", "killed by
 * signal 9: SIGKILL"), and *code: the exit status, or minus the signal. */
void pl_pproc_describe(int status, char *buf, size_t n, int *code);

#endif
