/* Private to the parlua runtime: Lua's io and os libraries, print, and
 * the C library calls of third-party modules, letting the global lock go
 * while they wait.  docs/global-lock.md says what releases the lock and why that
 * is safe. */
#ifndef PL_BLOCKIO_H
#define PL_BLOCKIO_H

#include "lua.h"

/* Replace, in L's io and os libraries (where loaded) and print, every
 * function that may wait; and hand the libc interposers (interpose.h)
 * their way to the lock, once per process. */
void pl_blockio_install(lua_State *L);

void pl_iolib_install(lua_State *L);
void pl_oslib_install(lua_State *L);
void pl_print_install(lua_State *L);

#endif
