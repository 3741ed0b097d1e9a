/* One worker process of a processes pool, from its worker thread (see
 * procpool.h). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "proc/fork.h"
#include "proc/procpool.h"

#define STOP_SLICE_NS (100 * 1000000LL)  /* how often a stop looks for interrupts */

static void efd_add(int fd) {
  uint64_t one = 1;
  ssize_t n = write(fd, &one, sizeof one);
  (void)n;
}

static void efd_drain(int fd) {
  uint64_t v;
  ssize_t n = read(fd, &v, sizeof v);
  (void)n;
}

/* The watcher of idle workers: reap a process that ended while its
 * worker thread slept. */
static void check_idle(pl_idlewatch *w) {
  pl_pproc *p = (pl_pproc *)((char *)w - offsetof(pl_pproc, watch));
  int status;
  (void)pl_pproc_try_reap(p, &status);
}

int pl_pproc_init(pl_pproc *p) {
  memset(p, 0, sizeof *p);
  p->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p->wake < 0) return -1;
  pthread_mutex_init(&p->mu, NULL);
  p->sock = p->pidfd = -1;
  atomic_init(&p->interrupted, 0);
  atomic_init(&p->term_at, 0);
  pl_rbuf_init(&p->rb);
  p->watch.check = check_idle;
  return 0;
}

void pl_pproc_free(pl_pproc *p) {
  pl_idlewatch_remove(&p->watch);
  pl_rbuf_free(&p->rb);
  (void)close(p->wake);
  pthread_mutex_destroy(&p->mu);
}

/* ---- signals and reaping --------------------------------------------- */

void pl_pproc_signal(pl_pproc *p, int sig) {
  pthread_mutex_lock(&p->mu);
  if (p->alive) (void)kill(p->pid, sig);
  pthread_mutex_unlock(&p->mu);
}

void pl_pproc_sigqueue(pl_pproc *p, int sig, void *value) {
  pthread_mutex_lock(&p->mu);
  if (p->alive) (void)sigqueue(p->pid, sig, (union sigval){.sival_ptr = value});
  pthread_mutex_unlock(&p->mu);
}

/* Under p->mu, so that no signal goes to a pid once it is reaped. */
int pl_pproc_try_reap(pl_pproc *p, int *status) {
  pthread_mutex_lock(&p->mu);
  int done = !p->alive;
  if (!done) {
    pid_t r;
    do r = waitpid(p->pid, status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r < 0) *status = 0;  /* reaped by someone else (a host ignoring SIGCHLD) */
    done = r != 0;
    if (done) p->alive = 0;
  }
  pthread_mutex_unlock(&p->mu);
  return done;
}

/* Wait for the process to end until deadline: 1 reaped, 0 still there. */
static int reap_until(pl_pproc *p, int64_t deadline, int *status) {
  int64_t delay = 500000;
  for (;;) {
    if (pl_pproc_try_reap(p, status)) return 1;
    int64_t now = pl_now_ns();
    if (now >= deadline) return 0;
    int64_t left = deadline - now;
    pl_fork_guard_leave();
    if (p->pidfd >= 0) {
      struct pollfd pf = {p->pidfd, POLLIN, 0};
      int ms = left / 1000000 > 100 ? 100 : (int)(left / 1000000) + 1;
      (void)poll(&pf, 1, ms);
    } else {
      struct timespec ts = pl_timespec_of(delay < left ? delay : left);
      nanosleep(&ts, NULL);
      if (delay < 50000000) delay *= 2;
    }
    pl_fork_guard_enter();
  }
}

void pl_pproc_finish(pl_pproc *p, int *status, int64_t wait_ns, int term_first) {
  /* The end of its input first: a process that is well (after a failed
   * init, say) closes its state and leaves by itself. */
  if (p->sock >= 0) (void)shutdown(p->sock, SHUT_WR);
  if (term_first) {
    pl_pproc_signal(p, SIGTERM);
    if (atomic_load(&p->term_at) == 0) atomic_store(&p->term_at, pl_now_ns());
  }
  if (!reap_until(p, pl_now_ns() + wait_ns, status)) {
    pl_pproc_signal(p, SIGKILL);
    while (!reap_until(p, INT64_MAX, status)) {
    }
  }
  if (p->sock >= 0) (void)close(p->sock);
  if (p->pidfd >= 0) (void)close(p->pidfd);
  p->sock = p->pidfd = -1;
  pl_rbuf_free(&p->rb);
  pl_rbuf_init(&p->rb);
}

void pl_pproc_stop(pl_pproc *p, int hard, int (*harden)(void *ud), void *ud) {
  if (p->sock < 0) return;
  int status = 0;
  hard = hard || atomic_load(&p->interrupted);
  (void)shutdown(p->sock, SHUT_WR);
  while (!hard && !reap_until(p, pl_now_ns() + STOP_SLICE_NS, &status))
    hard = atomic_load(&p->interrupted) || harden(ud);
  pl_pproc_finish(p, &status, PL_PPROC_GRACE_NS, hard);
}

int pl_pproc_ended_idle(pl_pproc *p) {
  int status;
  if (p->sock < 0 || !pl_pproc_try_reap(p, &status)) return 0;
  pl_pproc_finish(p, &status, 0, 0);
  return 1;
}

void pl_pproc_describe(int status, char *buf, size_t n, int *code) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char *name = sigabbrev_np(sig);
    snprintf(buf, n, "killed by signal %d%s%s", sig, name != NULL ? ": SIG" : "", name != NULL ? name : "");
    *code = -sig;
  } else {
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    snprintf(buf, n, "exited with code %d", *code);
  }
}

/* ---- interrupts and idleness ----------------------------------------- */

void pl_pproc_interrupt(pl_pproc *p) {
  atomic_store(&p->interrupted, 1);
  long long zero = 0;
  atomic_compare_exchange_strong(&p->term_at, &zero, pl_now_ns());
  pl_pproc_signal(p, SIGTERM);
  efd_add(p->wake);
}

void pl_pproc_kill(pl_pproc *p) {
  atomic_store(&p->interrupted, 1);
  atomic_store(&p->term_at, pl_now_ns() - PL_PPROC_GRACE_NS);  /* no grace: the waits send SIGKILL */
  pl_pproc_signal(p, SIGKILL);
  efd_add(p->wake);
}

void pl_pproc_reset(pl_pproc *p) {
  atomic_store(&p->interrupted, 0);
  atomic_store(&p->term_at, 0);
}

void pl_pproc_idle(pl_pproc *p) {
  if (p->sock >= 0) pl_idlewatch_add(&p->watch);
}

void pl_pproc_busy(pl_pproc *p) { pl_idlewatch_remove(&p->watch); }

/* ---- forking --------------------------------------------------------- */

int pl_pproc_fork(pl_pproc *p, pl_family *quiet, pl_procworker_ctx *x) {
  int sv[2];
  int err = pl_socketpair(SOCK_STREAM, sv);
  if (err != 0) return err;
  x->sock = sv[1];
  int pidfd;
  pl_fork_guard_leave();
  pid_t pid = pl_fork(quiet, &sv[1], 1, pl_procworker_main, x, &pidfd);
  pl_fork_guard_enter();
  (void)close(sv[1]);
  if (pid < 0) {
    (void)close(sv[0]);
    return (int)pid;
  }
  pthread_mutex_lock(&p->mu);
  p->pid = pid;
  p->alive = 1;
  pthread_mutex_unlock(&p->mu);
  p->pidfd = pidfd;
  p->sock = sv[0];
  if (atomic_load(&p->interrupted)) pl_pproc_signal(p, SIGTERM);  /* it came meanwhile */
  return 0;
}

/* ---- frames ---------------------------------------------------------- */

/* Wait until the socket is ready for `events`, the process ends, or an
 * interrupt comes (then enforce the grace period).  1 ready, 0 the
 * process ended (pidfd readable), -ETIMEDOUT, -EIO. */
static int wait_io(pl_pproc *p, short events, int64_t deadline) {
  for (;;) {
    struct pollfd pf[3] = {{p->sock, events, 0}, {p->wake, POLLIN, 0}, {p->pidfd, POLLIN, 0}};
    nfds_t n = p->pidfd >= 0 ? 3 : 2;
    int ms = -1;
    long long term_at = atomic_load(&p->term_at);
    if (term_at != 0) {
      int64_t left = term_at + PL_PPROC_GRACE_NS - pl_now_ns();
      if (left <= 0) {
        pl_pproc_signal(p, SIGKILL);
        ms = 100;
      } else {
        ms = (int)(left / 1000000) + 1;
      }
    }
    if (deadline != INT64_MAX) {
      int64_t left = deadline - pl_now_ns();
      if (left <= 0) return -ETIMEDOUT;
      int dms = (int)(left / 1000000) + 1;
      if (ms < 0 || dms < ms) ms = dms;
    }
    pl_fork_guard_leave();  /* quiet while blocked: a fork may go on */
    int r = poll(pf, n, ms);
    pl_fork_guard_enter();
    if (r < 0 && errno != EINTR) return -EIO;
    if (r > 0 && pf[1].revents) efd_drain(p->wake);
    if (r > 0 && pf[0].revents) return 1;
    if (r > 0 && n == 3 && pf[2].revents) return 0;
    /* Without a pidfd the end of the stream tells (the process holds the
     * only other copy of the socket). */
  }
}

int pl_pproc_cut(const pl_pproc *p) { return p->rb.end > p->rb.start; }

/* The deadline of a wait for more bytes: a frame begun (bytes of it
 * buffered) must go on within stall_ns of the last progress. */
static int64_t stall_at(const pl_pproc *p, int64_t progress) {
  if (p->stall_ns <= 0 || !pl_pproc_cut(p)) return INT64_MAX;
  return progress + p->stall_ns;
}

int pl_pproc_send(pl_pproc *p, const pl_obuf *b, const pl_fdlist *fds, int reading) {
  size_t off = 0;
  int64_t progress = pl_now_ns();
  for (;;) {
    int r = pl_wire_send(p->sock, b->data, b->len, &off, fds->fd, fds->n);
    if (r == 1) return 0;
    if (r < 0) return -1;
    /* A process stopped in the middle of its reply reads nothing either:
     * give up on it (the next recv says why). */
    if (wait_io(p, POLLOUT | (reading ? POLLIN : 0), reading ? stall_at(p, progress) : INT64_MAX) != 1)
      return -1;
    if (reading) {  /* see "Deadlocks" in procpool.h */
      r = pl_rbuf_fill(&p->rb, p->sock, 0);
      if (r == 0 || (r < 0 && r != -EAGAIN)) return -1;   /* gone */
      if (r > 0 && pl_rbuf_check(&p->rb) < 0) return -1;  /* nonsense */
      if (r > 0) progress = pl_now_ns();
    }
  }
}

int pl_pproc_recv(pl_pproc *p, pl_frame *f, int64_t deadline) {
  int64_t progress = pl_now_ns();
  for (;;) {
    int r = pl_rbuf_next(&p->rb, f);
    if (r != 0) return r;
    r = pl_rbuf_fill(&p->rb, p->sock, 0);
    if (r > 0) {
      progress = pl_now_ns();
      int k = pl_rbuf_check(&p->rb);
      if (k < 0) return k;
      continue;
    }
    if (r == 0 || r == -ECONNRESET) return 0;  /* gone, maybe in the middle of a frame */
    if (r != -EAGAIN) return r;
    int64_t stall = stall_at(p, progress);
    r = wait_io(p, POLLIN, stall < deadline ? stall : deadline);
    if (r == -ETIMEDOUT && stall < deadline) return PL_ESTALLED;
    if (r < 0) return r;
    if (r == 0) {  /* it ended: take what it wrote before */
      while ((r = pl_rbuf_fill(&p->rb, p->sock, 0)) > 0) {
      }
      return pl_rbuf_next(&p->rb, f);  /* a whole frame, or 0: gone */
    }
  }
}
