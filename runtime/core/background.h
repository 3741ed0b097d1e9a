/* Private to the parlua runtime: threads of our own that work in the
 * background -- the forker (fork.c), the reaper of collected children
 * (child.c), the feeders of process queues (pqueue.c), the watcher of idle
 * worker processes (procpool_watch.c).
 *
 * Each is detached and made with every signal blocked: it must never take a
 * signal meant for the host's threads (SIGINT, SIGCHLD, the SIGURG pokes of
 * tstate.c).  And each keeps this library mapped for good: a stock lua5.4
 * dlcloses the module at lua_close, which would unmap the code such a
 * thread is running.
 */
#ifndef PL_BACKGROUND_H
#define PL_BACKGROUND_H

#include <stddef.h>

/* Keep this library mapped for the life of the process (idempotent). */
void pl_pin_library(void);

/* Start fn(arg) on a background thread: 0 or an errno.  `stack` in bytes,
 * or 0 for the default size (a thread that forks a child running Lua on
 * its stack needs it; one that only waits does with 64 KiB). */
int pl_background_thread(void *(*fn)(void *), void *arg, size_t stack);

#endif
