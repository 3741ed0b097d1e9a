/* Waiting for an MPI message in three phases (see backoff.h). */
#include <poll.h>
#include <time.h>

#include "core/clock.h"
#include "core/spin.h"
#include "mpi/backoff.h"

void pl_mpi_backoff_start(pl_mpi_backoff *b) {
  b->since = pl_now_ns();
  b->nap = PL_MPI_FIRST_NAP_NS;
}

int pl_mpi_backoff_step(pl_mpi_backoff *b, int64_t now, int64_t *nap_ns) {
  int64_t waited = now - b->since;
  if (waited < PL_MPI_SPIN_NS) return PL_MPI_PAUSE;
  if (waited < PL_MPI_YIELD_NS) return PL_MPI_YIELD;
  *nap_ns = b->nap;
  b->nap = b->nap * 2 < PL_MPI_MAX_NAP_NS ? b->nap * 2 : PL_MPI_MAX_NAP_NS;
  return PL_MPI_NAP;
}

int pl_mpi_backoff_wait(pl_mpi_backoff *b, int fd) {
  int64_t nap = 0;
  switch (pl_mpi_backoff_step(b, pl_now_ns(), &nap)) {
  case PL_MPI_PAUSE: pl_cpu_relax(); return 0;
  case PL_MPI_YIELD: pl_spin_pause(); return 0;
  default: break;
  }
  struct timespec ts = pl_timespec_of(nap);
  if (fd >= 0) {
    struct pollfd p = {fd, POLLIN, 0};
    (void)ppoll(&p, 1, &ts, NULL);
  } else {
    nanosleep(&ts, NULL);
  }
  return 1;
}
