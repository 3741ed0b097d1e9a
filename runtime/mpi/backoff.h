/* Private to the parlua runtime: how kind mpi waits for a message without
 * a blocking receive (backoff.c).
 *
 * Open MPI's blocking receive spins on a core for as long as it waits, so
 * both sides of a pool -- a master's worker thread waiting for its rank's
 * reply, a rank waiting for its next task -- poll instead (MPI_Improbe)
 * and, between polls, wait in three phases by how long they have waited:
 *
 *   up to PL_MPI_SPIN_NS    the CPU's pause: a reply within a few µs is
 *                           seen at once;
 *   up to PL_MPI_YIELD_NS   sched_yield: the peer we wait for runs first
 *                           when it shares our CPU (2 cores, 3 ranks), and
 *                           a reply that took a scheduler round is still
 *                           seen within a microsecond;
 *   after that              naps from PL_MPI_FIRST_NAP_NS doubling up to
 *                           PL_MPI_MAX_NAP_NS, cut short by a descriptor
 *                           (a rank's pidfd): an idle pool costs no core.
 *
 * The yield phase is what makes a trivial round trip cheap: with naps
 * right after a 50 µs spin (the first version), every reply that took a
 * little longer -- a wake-up of the submitter on a busy machine -- cost a
 * nap, and a nanosleep lasts at least the timer slack (50 µs) and then a
 * scheduler round: about 350 µs a round trip on a quiet machine, against
 * 15-35 µs now.
 */
#ifndef PL_MPI_BACKOFF_H
#define PL_MPI_BACKOFF_H

#include <stdint.h>

#define PL_MPI_SPIN_NS (50 * 1000LL)
#define PL_MPI_YIELD_NS (1000 * 1000LL)
#define PL_MPI_FIRST_NAP_NS (50 * 1000LL)
#define PL_MPI_MAX_NAP_NS (1000 * 1000LL)

typedef struct pl_mpi_backoff {
  int64_t since;  /* when the wait began */
  int64_t nap;    /* the next nap, ns */
} pl_mpi_backoff;

enum { PL_MPI_PAUSE, PL_MPI_YIELD, PL_MPI_NAP };

void pl_mpi_backoff_start(pl_mpi_backoff *b);
/* What the wait does next at time `now`: PAUSE, YIELD, or NAP for *nap_ns
 * (each NAP makes the next one longer). */
int pl_mpi_backoff_step(pl_mpi_backoff *b, int64_t now, int64_t *nap_ns);
/* Wait a little, as pl_mpi_backoff_step says; `fd` (>= 0) ends a nap when
 * it becomes readable.  1 when it napped (a good time for slower checks). */
int pl_mpi_backoff_wait(pl_mpi_backoff *b, int fd);

#endif
