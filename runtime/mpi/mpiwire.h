/* Private to the parlua runtime: what the master of a pool of kind mpi and
 * the ranks that serve it say to each other (kind_mpi.c, mpiworker.c).
 *
 * One MPI message per frame; its tag says what it is.  Headers are plain
 * structs in native byte order: the ranks of one job share an architecture
 * (Lua bytecode, which tasks carry, requires it anyway).  Values are codec
 * messages (codec.h) with an empty object table, made by
 * pl_codec_encode_remote, so their bytes are the whole message.
 *
 *   master -> server  OPEN      mpi_open: a fresh state (the codec key, the
 *                               switch interval, the worker's name)
 *                     TASK      mpi_task + [fn, v1..vn]     (mode: PL_TASK_*;
 *                               PL_TASK_INIT: the pool's init)
 *                     INTERRUPT mpi_interrupt: stop task `seq` if it runs
 *                               (or: its soft or hard time limit ran out)
 *                     CLOSE     close the state (its finalizers run)
 *                     STOP      leave: the master is done
 *   server -> master  OPENED    mpi_opened: its pid and host
 *                     RESULT    mpi_result + traceback + [values]
 *                               (init: no values when it ran, else failed
 *                               and [its BrokenPool error])
 *                     ALIVE     every ALIVE_NS while a task runs
 */
#ifndef PL_MPIWIRE_H
#define PL_MPIWIRE_H

#include <stdint.h>

#include "mpi/transport.h"

enum {
  PL_MPI_TAG_OPEN = 101,
  PL_MPI_TAG_TASK,
  PL_MPI_TAG_INTERRUPT,
  PL_MPI_TAG_CLOSE,
  PL_MPI_TAG_STOP,
  PL_MPI_TAG_OPENED,
  PL_MPI_TAG_RESULT,
  PL_MPI_TAG_ALIVE
};

#define PL_MPI_ALIVE_NS (1000 * 1000000LL)

typedef struct mpi_open {
  uint64_t key[2];
  double interval;
  char name[64];
} mpi_open;

typedef struct mpi_opened {
  int32_t pid;
  char host[64];
} mpi_opened;

typedef struct mpi_task {
  uint32_t mode;
  uint32_t reserved;
  uint64_t seq;
} mpi_task;

enum { PL_MPI_STOP_TASK, PL_MPI_SOFT_LIMIT, PL_MPI_HARD_LIMIT };

typedef struct mpi_interrupt {
  uint64_t seq;
  uint32_t what;    /* PL_MPI_STOP_TASK, _SOFT_LIMIT, _HARD_LIMIT */
  uint32_t reserved;
  double seconds;   /* the limit, for the error's message */
} mpi_interrupt;

typedef struct mpi_result {
  uint32_t failed;
  uint32_t reserved;
  uint64_t seq;
  uint64_t tblen;
} mpi_result;

/* A server rank's loop: serve the master (rank `master` of communicator
 * `comm`) until STOP; the exit status. */
int pl_mpi_serve(const pl_mpi_transport *t, int comm, int master, int thread_level,
                 const struct luaL_Reg *modules);

#endif
