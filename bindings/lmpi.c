/* par.mpi_info(): what this process's MPI is -- loading and initialising
 * it if need be (runtime/mpi/mpi.h).  Raises the install hint when Open
 * MPI or parlua_mpi.so is missing. */
#include "bindings.h"
#include "mpi/mpi.h"

static const char *const LEVELS[] = {"single", "funneled", "serialized", "multiple"};

static int mpi_info(lua_State *L) {
  pl_mpi_info in;
  char err[PL_MPI_ERRLEN];
  if (pl_mpi_get(L, &in, err) == NULL) return luaL_error(L, "%s", err);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, in.rank);
  lua_setfield(L, -2, "rank");
  lua_pushinteger(L, in.size);
  lua_setfield(L, -2, "size");
  lua_pushstring(L, LEVELS[in.thread_level & 3]);
  lua_setfield(L, -2, "thread_level");
  /* Below "multiple", every MPI call of this process waits for one mutex. */
  lua_pushboolean(L, in.thread_level < 3);
  lua_setfield(L, -2, "serialised");
  lua_pushstring(L, in.library);
  lua_setfield(L, -2, "library");
  lua_pushinteger(L, pl_mpi_world_servers());
  lua_setfield(L, -2, "servers");
  return 1;
}

void pl_open_mpi(lua_State *L) {
  lua_pushcfunction(L, mpi_info);
  lua_setfield(L, -2, "mpi_info");
}
