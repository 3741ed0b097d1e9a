/* Interruptible waits (see wait.h).
 *
 * A forced cancel (or an interrupt) pokes the cancelled thread with
 * PL_POKE_SIGNAL.  A poller blocks that signal, checks the cancel flag,
 * then sleeps in ppoll with a mask that lets it in: the poke cannot slip in
 * between the check and the sleep, and ppoll returns EINTR when it comes
 * (poll is never restarted after a handler).
 *
 * SIGPIPE.  Writing to a pipe whose reader has gone raises SIGPIPE in the
 * writing thread, and its default action kills the whole process; pipes
 * have no MSG_NOSIGNAL.  Ignoring it process-wide is not ours to decide
 * (the host's), so a waiter that writes blocks it in its own thread only,
 * notes whether one was already pending, and when a write failed with
 * EPIPE takes the signal that write generated with a zero-timeout
 * sigtimedwait before it restores the mask.  The signal is thread-directed,
 * so no other thread ever sees it; one that was pending before is left
 * alone (signals do not queue, ours merged into it).
 */
#include <errno.h>
#include <string.h>

#include "core/clock.h"
#include "core/sigint.h"
#include "core/wait.h"

/* A sliced wait notices a cancel at least this often when the poke signal
 * cannot reach it (the host keeps it blocked in this thread). */
#define SLICE_NS (50 * 1000000LL)

void pl_poller_begin(pl_poller *w, pl_tstate *ts, int block_pipe) {
  sigset_t add;
  memset(w, 0, sizeof *w);
  w->ts = ts;
  w->block_pipe = block_pipe;
  if (ts != NULL) pl_sigint_wait_begin(ts);
  if (ts == NULL && !block_pipe) return;
  sigemptyset(&add);
  if (ts != NULL) sigaddset(&add, PL_POKE_SIGNAL);
  if (block_pipe) sigaddset(&add, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &add, &w->old);
  w->during = w->old;
  if (block_pipe) sigaddset(&w->during, SIGPIPE);
  if (ts != NULL) {
    if (sigismember(&w->old, PL_POKE_SIGNAL)) w->sliced = 1;  /* the host's choice */
    else sigdelset(&w->during, PL_POKE_SIGNAL);
  }
  if (block_pipe) {
    sigset_t pending;
    sigpending(&pending);
    w->pipe_was_pending = sigismember(&pending, SIGPIPE);
  }
  w->armed = 1;
}

void pl_poller_note_epipe(pl_poller *w) { w->epipe = 1; }

void pl_poller_end(pl_poller *w) {
  if (w->ts != NULL) pl_sigint_wait_end(w->ts);
  if (!w->armed) return;
  if (w->epipe && !w->pipe_was_pending) {
    sigset_t pipe_only;
    struct timespec zero = {0, 0};
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    while (sigtimedwait(&pipe_only, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &w->old, NULL);
  w->armed = 0;
}

int pl_poller_poll(pl_poller *w, struct pollfd *fds, nfds_t n, int64_t deadline_ns) {
  for (;;) {
    if (w->ts != NULL && pl_tstate_cancel_level(w->ts) == PL_CANCEL_FORCED) return PL_ECANCELLED;
    int64_t until = deadline_ns;
    struct timespec tmo, *tp = NULL;
    if (w->sliced || until != INT64_MAX) {
      int64_t now = pl_now_ns();
      if (w->sliced && (until == INT64_MAX || until - now > SLICE_NS)) until = now + SLICE_NS;
      int64_t left = until > now ? until - now : 0;
      tmo = pl_timespec_of(left);
      tp = &tmo;
    }
    int r = ppoll(fds, n, tp, w->armed ? &w->during : NULL);
    if (r > 0) return r;
    if (r == 0) {
      if (until == deadline_ns) return 0;  /* the real deadline, not a slice */
      continue;
    }
    if (errno != EINTR) return -errno;
  }
}
