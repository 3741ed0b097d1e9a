/* Private to the parlua runtime: Ctrl-C, the way lua.c takes it.
 *
 * lua.c installs a SIGINT handler only while it runs a chunk (docall).
 * The first SIGINT puts the default disposition back -- so a second one
 * ends the process whatever it is doing, a long C call or a read included
 * -- and arms a hook that raises "interrupted!" at the next instruction.
 *
 * parlua does the same, and more: between pl_sigint_catch(rt) and
 * pl_sigint_release(rt) (parlua_catch_sigint/release_sigint) the first SIGINT
 *   - marks the host's thread (the one that caught it) interrupted and arms
 *     the hook on what it runs, from the handler itself, as lua.c does: a
 *     script ending right after a foreign call that the signal cut short
 *     still ends as interrupted (the flag is set before the call returns);
 *   - wakes the watcher, a helper thread that interrupts every other thread
 *     of the runtime and wakes waits the handler cannot (condition
 *     variables are not async-signal-safe).
 * The watcher is started lazily: when a thread, pool or child of the
 * runtime exists, or the host thread starts a blocking wait -- never for a
 * script that only runs Lua code, so glibc's malloc keeps its single-thread
 * fast path there (it is lost for good once a second thread exists).
 *
 * In a stock lua5.4 (`require "parlua"`), lua.c's own handler is left alone
 * except while the host thread is in a parlua wait: then ours takes SIGINT
 * over for the length of the wait, runs lua.c's handler too (which puts
 * the default back, as always), and delivers lua.c's "interrupted!" from
 * the wait at once instead of from lua.c's hook.
 */
#ifndef PL_SIGINT_H
#define PL_SIGINT_H

#include "core/runtime.h"
#include "core/tstate.h"

/* At the start of a thread the runtime made (par.thread, a pool worker):
 * in a stock lua5.4, SIGINT is blocked there, so that it always reaches
 * lua.c's thread -- lua.c's handler sets a hook on the main state, which
 * is safe only from the thread that runs it.  (In the parlua program every
 * thread takes it; the handler passes it on.) */
void pl_sigint_thread_runs(parlua *rt);

/* parlua_catch_sigint and parlua_release_sigint (see parlua.h). */
int pl_sigint_catch(parlua *rt);
int pl_sigint_release(parlua *rt);

/* A thread, a pool worker or a background thread is about to start: from
 * now on a caught SIGINT needs the watcher. */
void pl_sigint_thread_starting(void);

/* Around a blocking wait of ts (pl_wait_begin/end, pl_waiter_begin/end):
 * start the watcher if SIGINT is caught (only it can wake a condition
 * variable); in a stock lua5.4, take SIGINT over from lua.c's handler
 * meanwhile. */
void pl_sigint_wait_begin(pl_tstate *ts);
void pl_sigint_wait_end(pl_tstate *ts);

/* The host thread raised the interrupt: it is no longer pending. */
void pl_sigint_delivered(void);

#endif
