/* Private to the parlua runtime: interruptible waits on descriptors.
 *
 * A pl_poller is poll that a forced cancel or an interrupt of the waiting
 * thread ends at once; every wait of the runtime on a pipe, a socket, an
 * eventfd or a child's pidfd goes through one (child processes, pipe
 * connections, process queues, pipe ends).  None of these functions may be
 * called holding the global lock.
 */
#ifndef PL_WAIT_H
#define PL_WAIT_H

#include <poll.h>
#include <signal.h>
#include <stdint.h>

#include "core/tstate.h"

typedef struct pl_poller {
  pl_tstate *ts;         /* NULL: a thread the runtime does not know */
  int block_pipe;        /* SIGPIPE is held back for the waiter's life */
  int pipe_was_pending;  /* a SIGPIPE was pending before we blocked it */
  int epipe;             /* a write of ours failed with EPIPE */
  int armed;             /* the mask was changed and must be restored */
  int sliced;            /* the poke cannot reach us: wake up now and then */
  sigset_t old;          /* the thread's mask before begin */
  sigset_t during;       /* the mask while blocked in ppoll */
} pl_poller;

/* `block_pipe`: writes to pipes will be made (see wait.c on SIGPIPE). */
void pl_poller_begin(pl_poller *w, pl_tstate *ts, int block_pipe);
void pl_poller_end(pl_poller *w);
/* Wait for events on fds (n may be 0: a plain sleep) until deadline_ns
 * (INT64_MAX: forever).  Returns the number of ready fds, 0 on timeout,
 * PL_ECANCELLED, or -errno. */
int pl_poller_poll(pl_poller *w, struct pollfd *fds, nfds_t n, int64_t deadline_ns);
/* Record an EPIPE from a write made under the waiter. */
void pl_poller_note_epipe(pl_poller *w);

#endif
