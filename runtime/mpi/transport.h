/* Private to the parlua runtime: the MPI transport, the one part of kind
 * "mpi" that calls Open MPI.
 *
 * It is built alone into the optional module parlua_mpi.so (openmpi.c,
 * linked to libmpi), which the core loads on demand (mpi.c) and asks for
 * this table with the module's one exported function.  The core and the
 * parlua program therefore never link MPI, and the module needs no symbol
 * of the core: everything that knows pools, futures and Lua stays in the
 * core (kind_mpi.c, mpiworker.c), and only bytes cross this table.
 *
 * Communicators are named by small handles: PL_MPI_WORLD (COMM_WORLD),
 * PL_MPI_PARENT (the intercommunicator to the process that spawned this
 * one) and the handles spawn returns (an intercommunicator to the spawned
 * group).  Every call returns 0 or a negative number with a message in
 * err[PL_MPI_ERRLEN]; errors are returned (MPI_ERRORS_RETURN), never
 * fatal.  When the library offers less than MPI_THREAD_MULTIPLE, every
 * call is serialised behind one mutex of the module.
 */
#ifndef PL_MPI_TRANSPORT_H
#define PL_MPI_TRANSPORT_H

#include <stddef.h>

#define PL_MPI_ABI 1
#define PL_MPI_ERRLEN 256
#define PL_MPI_OPEN_SYMBOL "pl_mpi_transport_open"

enum { PL_MPI_WORLD = 0, PL_MPI_PARENT = 1 };

typedef struct pl_mpi_info {
  int rank, size;         /* in COMM_WORLD */
  int thread_level;       /* 0 single, 1 funneled, 2 serialized, 3 multiple */
  int has_parent;         /* spawned by a pool */
  char library[256];      /* MPI_Get_library_version, first line */
} pl_mpi_info;

typedef struct pl_mpi_transport {
  int abi;  /* PL_MPI_ABI */
  /* MPI_Init_thread asking for MPI_THREAD_MULTIPLE. */
  int (*init)(pl_mpi_info *out, char *err);
  /* Start n copies of argv[0] (argv NULL-terminated) with MPI_Comm_spawn,
   * `hosts` and `hostfile` (either may be NULL) as the info keys "host"
   * and "hostfile": the handle of the intercommunicator to them. */
  int (*spawn)(char **argv, int n, const char *hosts, const char *hostfile, char *err);
  /* Send len bytes (at most INT_MAX) and wait until the buffer is free
   * again.  A big message waits for its receiver, so while it waits the
   * send asks alive(ud) (when given) whether the receiver still lives: 1
   * when it was found dead (the send is abandoned), 0 when sent. */
  int (*send)(int comm, int rank, int tag, const void *buf, size_t len, int (*alive)(void *ud),
              void *ud, char *err);
  /* Without blocking: 1 when a message from rank with tag (-1: any) is
   * there, its tag and length in *tag and *len, and it is then received
   * into a buffer of *len bytes that *buf points to (malloc'd, the
   * caller's); 0 when none; negative on an error. */
  int (*poll)(int comm, int rank, int tag, int *out_tag, void **buf, size_t *len, char *err);
  /* Let go of a spawned group's intercommunicator: disconnect from it
   * when `disconnect` (every process of it is alive and leaving), else
   * just free our handle. */
  void (*release)(int comm, int disconnect);
  /* MPI_Finalize. */
  void (*finalize)(void);
} pl_mpi_transport;

typedef const pl_mpi_transport *(*pl_mpi_open_fn)(void);

#endif
