/* Private to the parlua runtime: starting worker processes by fork.
 *
 * Why fork and not spawn-and-exec: a host's preloads (parlua_preload) are
 * C function pointers of the host program; only a fork keeps them, so
 * every worker process can `require` what the main state can.
 *
 * Why the child builds everything afresh: when the parent has other
 * threads (a threads pool, a host thread), only the forking thread
 * survives in the child, and any mutex, global lock or lua_State another
 * thread held at that instant stays held -- or half-changed -- forever.
 * So the child never touches the parent's runtime, states, locks or
 * registries: it makes a new runtime and lua_State with pl_state_new, and
 * the process-wide tables and locks of the runtime (portable.c, pqueue.c,
 * procpool_watch.c, the fork guard and the forker below) are started
 * over.  What it needs from the parent (the preload list, the
 * task socket) it is given through `ud`, read before the fork.
 *
 * Some locks the child cannot avoid: the allocator's and stdio's.  glibc's
 * malloc is fork-safe, but an allocator that is not (AddressSanitizer's,
 * in GCC's libasan) deadlocks the child at its first allocation of a size
 * another thread was allocating at the fork.  So a fork is made while
 * the threads of the runtime that allocate are quiet:
 *   - it holds the global lock of `quiet`, the family that asked for it,
 *     so no Lua code of that state runs (nor allocates) meanwhile;
 *   - it holds the fork guard exclusively; the worker threads of processes
 *     pools hold it shared whenever they are not blocked in a wait, so a
 *     fork waits until each of them is in poll;
 *   - it holds stdout's and stderr's locks (after flushing them), so the
 *     child finds them free and nothing written before the fork is
 *     written twice.
 * Lock order: the fork guard, then the global lock, then stdio.
 *
 * The child, before child_main runs:
 *   - resets every signal disposition to the default, except SIGINT,
 *     which it ignores (Ctrl-C is the parent's business: the parent stops
 *     its workers), and the runtime's poke signal, whose handler is ours;
 *     its signal mask is emptied;
 *   - asks for SIGKILL when its parent dies (PR_SET_PDEATHSIG) and checks
 *     getppid() right after, so a parent that died in between is noticed:
 *     workers never outlive the parent as orphans.  The signal follows the
 *     *thread* that forked, so fork from a thread that lives as long as
 *     the child should (pl_fork_detached uses one that never exits);
 *   - closes every descriptor except 0, 1, 2 and the ones in `keep`, so no
 *     pipe end, socket or file of the parent stays open in it (a pipe's
 *     reader would never see the end of its stream otherwise).
 * child_main's result is the exit status; the child leaves with _exit
 * after flushing stdout and stderr, never running the parent's atexit
 * handlers or flushing the parent's other streams.
 */
#ifndef PL_FORK_H
#define PL_FORK_H

#include <sys/types.h>

#include "lua.h"
#include "lauxlib.h"

struct parlua;
struct pl_family;
struct pl_preload;
struct pl_tstate;

/* The pid of the child (and *pidfd, -1 when the kernel has no
 * pidfd_open), or -errno.  The calling thread forks; it must hold neither
 * the fork guard nor the global lock of `quiet` (which may be NULL). */
pid_t pl_fork(struct pl_family *quiet, const int *keep, int nkeep, int (*child_main)(void *ud),
              void *ud, int *pidfd);
/* The same, forked by a process-wide thread that never exits (for
 * par.process, which any thread may start and outlive). */
pid_t pl_fork_detached(struct pl_family *quiet, const int *keep, int nkeep,
                       int (*child_main)(void *ud), void *ud, int *pidfd);

/* Held shared by a thread that allocates outside any global lock, except
 * while it blocks (see above). */
void pl_fork_guard_enter(void);
void pl_fork_guard_leave(void);

/* In a child: flush stdout and stderr and leave at once. */
void pl_child_exit(int status);

/* A pidfd for pid, or -1 (PARLUA_NO_PIDFD=1 forces -1). */
int pl_pidfd_open(pid_t pid);

/* The runtime of a worker process: a fresh `parlua` whose main state is
 * made by pl_state_new with the parent's preloads (the list, read by the
 * parent before the fork, is borrowed: it never changes below its head),
 * the calling thread holding its lock.  os.exit in it flushes stdout and
 * stderr and leaves with _exit (see above). */
typedef struct pl_child_rt {
  struct parlua *rt;
  lua_State *L;
  struct pl_tstate *ts;
} pl_child_rt;

void pl_child_rt_open(pl_child_rt *c, const luaL_Reg *modules, struct pl_preload *preloads, double interval,
                      const char *name);
/* As parlua_close: stop what the tasks started, close the state. */
void pl_child_rt_close(pl_child_rt *c);
/* Give the lock away while the worker waits for work, and take it back. */
void pl_child_rt_unlock(pl_child_rt *c);
void pl_child_rt_lock(pl_child_rt *c);

#endif
