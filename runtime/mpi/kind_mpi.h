/* Private to the parlua runtime: kind "mpi" (kind_mpi.c), for the pool
 * binding. */
#ifndef PL_KIND_MPI_H
#define PL_KIND_MPI_H

#include "pool/executor.h"

extern const pl_kind_ops pl_kind_mpi;

/* Before any submit: the pool's `hosts` and `hostfile` (either NULL),
 * passed to MPI_Comm_spawn -- a pool given them spawns its ranks even
 * under mpiexec -- and its spawn_timeout in seconds (<= 0: the default).
 * 0, or -1 when out of memory. */
int pl_mpi_configure(pl_executor *e, const char *hosts, const char *hostfile, double spawn_timeout);

#endif
