/* Private to the parlua runtime: this process's side of MPI -- loading
 * the transport module, initialising MPI once, and which ranks serve
 * pools.
 *
 * Loading.  The transport (transport.h) lives in parlua_mpi.so, found as
 * $PARLUA_MPI_MODULE when set, else beside the library or program that
 * holds this code (build/parlua_mpi.so beside build/parlua and
 * build/parlua.so; the install puts it beside parlua.so), else on
 * package.cpath as "parlua_mpi".  It is opened RTLD_GLOBAL, as mpi4py does,
 * because Open MPI's own plugins look for libmpi's symbols globally.  A
 * process that cannot load it gets the one error of kind mpi's absence:
 * "kind mpi needs Open MPI: apt-get install libopenmpi-dev openmpi-bin".
 *
 * Initialising.  MPI is initialised at most once per process, asking for
 * MPI_THREAD_MULTIPLE, and finalised at exit (atexit, the library pinned).
 * After a rank was lost the finalisation is skipped: MPI_Finalize (and
 * MPI_Comm_disconnect) would wait for the dead rank forever.
 *
 * Ranks.  Started by mpiexec with more than one rank, the parlua program
 * keeps rank 0 for the script and makes every other rank a server
 * (parlua_mpi_serve); the servers of COMM_WORLD are handed to pools of
 * kind mpi one per worker (pl_mpi_claim), and given back when the worker
 * stops.  Without mpiexec (a singleton), pools spawn servers
 * (MPI_Comm_spawn) and keep them for the pools that come after: a spawn
 * costs a few tenths of a second, and Open MPI's spawns are serialised
 * here (concurrent collectives on MPI_COMM_SELF are erroneous).
 */
#ifndef PL_MPI_H
#define PL_MPI_H

#include <stdint.h>

#include "lua.h"
#include "lauxlib.h"
#include "mpi/transport.h"

/* The transport, MPI initialised; NULL with a message in err (the
 * install hint when the module is missing). */
const pl_mpi_transport *pl_mpi_get(lua_State *L, pl_mpi_info *info, char *err);
/* The transport when MPI is already initialised, else NULL. */
const pl_mpi_transport *pl_mpi_loaded(void);

/* A spawn that has not returned after this long is given up (the pool's
 * spawn_timeout changes it). */
#define PL_MPI_SPAWN_TIMEOUT_NS (60 * 1000 * 1000000LL)

/* A server rank for one pool worker.  With `spawn` 0, a free rank of
 * COMM_WORLD (static mode); else a free spawned rank placed by `hosts` and
 * `hostfile` (either NULL), spawning `want` more first when none is free,
 * waiting at most timeout_ns for the spawn.  Spawned ranks outlive their
 * pool: later pools reuse them, and they leave at exit.  0 with *comm and
 * *rank set, or -1 with err. */
int pl_mpi_claim(int spawn, const char *hosts, const char *hostfile, int want, int64_t timeout_ns,
                 int *comm, int *rank, char *err);
/* Give the rank back; `dead`: it died, and is never handed out again. */
void pl_mpi_release(int comm, int rank, int dead);
/* Server ranks COMM_WORLD has: size - 1 when the parlua program started
 * under mpiexec (parlua_mpi_serve made the other ranks servers), else 0. */
int pl_mpi_world_servers(void);

/* A rank was lost: MPI must not be finalised (see above). */
void pl_mpi_mark_lost(void);

/* The program to spawn as servers: this program, or the parlua program
 * beside the library.  0, or -1 with err. */
int pl_mpi_server_program(char *path, size_t n, char *err);

/* For parlua_mpi_serve (parlua.h): when this process is a server rank,
 * serve -- every state it opens preloading `modules` -- until told to stop,
 * and return its exit status; else -1. */
int pl_mpi_serve_if_worker(const luaL_Reg *modules);

#endif
