/* parlua: an embeddable Lua 5.4 runtime with real parallel primitives.
 *
 * The one public header.  A runtime owns a main lua_State guarded by one
 * global lock, plus every thread, pool and child process made from it.
 *
 *   parlua *rt = parlua_new(NULL);
 *   parlua_preload(rt, "hostmod", luaopen_hostmod);
 *   if (parlua_dostring(rt, "print(require'parlua'.cpu_count())", "=host") != LUA_OK)
 *     fprintf(stderr, "%s\n", parlua_error(rt));
 *   parlua_close(rt);
 *
 * Locking: the main state's lock is held only inside parlua_dostring and
 * parlua_dofile and between parlua_enter and parlua_leave.  Any host thread
 * may call parlua_enter; nobody holds the lock between calls.  A host C
 * function that blocks wraps the blocking part in PARLUA_UNLOCK(L) and
 * PARLUA_LOCK(L) so that other threads run Lua meanwhile.  See
 * docs/embedding.md.
 */
#ifndef PARLUA_H
#define PARLUA_H

#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the functions of the API: the libraries export these and hide
 * everything else (they are built with -fvisibility=hidden), as Lua's
 * LUA_API and libuv's UV_EXTERN do. */
#if defined(__GNUC__)
#define PARLUA_API __attribute__((visibility("default")))
#else
#define PARLUA_API
#endif

/* The one place the version is written: the Makefile reads it for the
 * shared library's name and parlua.pc, a spec checks the rockspec's. */
#define PARLUA_VERSION_NUMBER "0.1.0"
#define PARLUA_VERSION "parlua " PARLUA_VERSION_NUMBER

typedef struct parlua parlua;

typedef struct parlua_config {
  double switch_interval;  /* seconds a waiter lets the holder run; default 0.005 */
} parlua_config;

/* Fill `cfg` with the defaults. */
PARLUA_API void parlua_config_init(parlua_config *cfg);

/* A new runtime with a fresh main state (standard libraries open, `parlua`
 * and `parlua.ffi` requirable); NULL when out of memory.  `cfg` may be NULL. */
PARLUA_API parlua *parlua_new(const parlua_config *cfg);

/* Make `name` requirable in every state this runtime has or will make (the
 * main state, `states` workers, `processes` workers).  0, or -1 when out
 * of memory. */
PARLUA_API int parlua_preload(parlua *rt, const char *name, lua_CFunction open);

/* Run a chunk in the main state, taking and giving back the lock.  Returns
 * LUA_OK or a Lua error code; then parlua_error() is the message with a
 * traceback (valid until the next call that runs code). */
PARLUA_API int parlua_dostring(parlua *rt, const char *code, const char *chunkname);
/* As parlua_dostring for a file; NULL reads standard input. */
PARLUA_API int parlua_dofile(parlua *rt, const char *path);
PARLUA_API const char *parlua_error(parlua *rt);

/* Take the main state's lock for direct use of parlua_state(); nestable
 * on one thread.  parlua_leave gives it back. */
PARLUA_API void parlua_enter(parlua *rt);
PARLUA_API void parlua_leave(parlua *rt);
PARLUA_API lua_State *parlua_state(parlua *rt);

/* Interrupt everything running in the runtime: running Lua code of every
 * thread gets an error at its next instruction or blocking call.  Callable
 * from any thread (not from a signal handler: see parlua_catch_sigint).
 * Returns 1 when some Lua code was running, 0 when the runtime was idle. */
PARLUA_API int parlua_interrupt(parlua *rt);
/* 1 when the last parlua_dostring/dofile failed because of an interrupt. */
PARLUA_API int parlua_interrupted(parlua *rt);

/* Ctrl-C as lua.c takes it, around a run (as lua.c's docall does):
 * between the two calls, made on the host thread that runs the code, the
 * first SIGINT interrupts the runtime -- the host thread gets the error
 * string "interrupted!" (position first, as luaL_error gives it), every
 * other thread and task Cancelled -- and sets SIGINT to its default
 * disposition, so a second one ends the process.  One runtime at a time:
 * parlua_catch_sigint returns 0, or -1 when another has it (or sigaction
 * failed).  parlua_release_sigint leaves SIGINT at its default, as lua.c
 * does after a chunk, and returns 1 when a SIGINT came meanwhile that no
 * code raised (it came too late to stop the run, which is then still to
 * be treated as interrupted), else 0. */
PARLUA_API int parlua_catch_sigint(parlua *rt);
PARLUA_API int parlua_release_sigint(parlua *rt);

/* Join threads, shut pools down, reap children, close the state, free. */
PARLUA_API void parlua_close(parlua *rt);

/* Kind mpi (docs/mpi.md): call first thing in main().  When this process
 * is an MPI rank that serves pools -- rank 1..N-1 under `mpiexec -n N`, or
 * a worker a pool spawned -- it serves until its master is done and
 * returns the exit status to leave with; otherwise it returns -1 at once
 * (rank 0 then runs the program as usual).  Needs parlua_mpi.so only when
 * started by mpiexec. */
PARLUA_API int parlua_mpi_serve(void);

/* For a host C function that blocks: give the calling state's lock away
 * and take it back.  No-ops in a state without parlua. */
PARLUA_API void parlua_unlock(lua_State *L);
PARLUA_API void parlua_lock(lua_State *L);
#define PARLUA_UNLOCK(L) parlua_unlock(L)
#define PARLUA_LOCK(L) parlua_lock(L)

/* The Lua modules, for hosts that build their own states. */
PARLUA_API int luaopen_parlua(lua_State *L);
PARLUA_API int luaopen_parlua_ffi(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
