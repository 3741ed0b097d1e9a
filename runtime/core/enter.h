/* Private to the parlua runtime: the one way an OS thread enters a state
 * family and leaves it, and the one way a runtime with a fresh main state
 * is opened and closed.
 *
 * Entering is four steps, always in this order:
 *   1. a tstate for this thread (pl_tstate_new), running nothing yet;
 *   2. pushed on the thread's tstate stack (pl_tstate_current finds it);
 *   3. the family's lock taken (pl_gil_acquire);
 *   4. marked running the coroutine it will run (pl_tstate_set_running).
 * Step 4 comes after step 3 so that nobody pokes this thread about a
 * coroutine another thread is running meanwhile.  Leaving undoes them in
 * the reverse order.  pl_enter/pl_leave do all four; a thread that stays
 * in the family but runs no Lua for a while (an idle pool worker) lets go
 * with pl_drop_lock and comes back with pl_take_lock; one that publishes
 * its tstate before it waits for the lock (a par.thread) uses pl_attach,
 * then pl_take_lock.  Outside runtime/core nobody calls pl_gil_acquire.
 *
 * A thread that must not fail to enter -- a new OS thread, which has no
 * caller to report to, or a pool worker about to run done callbacks -- has
 * step 1 done for it ahead (pl_prepare, by the thread that starts it, where
 * running out of memory is an error to return) and does steps 2..4 with
 * pl_attach_prepared or pl_enter_prepared, which allocate nothing.  A
 * tstate it enters again and again is left with pl_leave_keep.
 *
 * Lock order: as gil.h (the lock is taken holding no other mutex).
 */
#ifndef PL_ENTER_H
#define PL_ENTER_H

#include "core/runtime.h"

/* Steps 1 and 2: a tstate named `name` (NULL: unnamed) on this thread's
 * stack, holding nothing.  NULL when out of memory. */
pl_tstate *pl_attach(pl_family *fam, const char *name);
/* The inverse of pl_attach: popped and freed (the lock not held). */
void pl_detach(pl_tstate *ts);

/* Step 1 for a thread that will attach later: a tstate of fam named `name`
 * (NULL: unnamed), owned by no thread yet.  NULL when out of memory; free
 * an unused one with pl_tstate_free. */
pl_tstate *pl_prepare(pl_family *fam, const char *name);
/* Step 2 of a prepared tstate by the thread that will use it (nothing is
 * allocated). */
void pl_attach_prepared(pl_tstate *ts);
/* The inverse of pl_attach_prepared: popped, the tstate kept for the next
 * pl_attach_prepared, as new (its cancel state and held locks forgotten). */
void pl_detach_keep(pl_tstate *ts);

/* Steps 3 and 4: take the lock (`urgent`: back from a blocking call, ahead
 * of regular waiters), then run L (NULL: run nothing). */
void pl_take_lock(pl_tstate *ts, lua_State *L, int urgent);
/* The inverse: run nothing (no poke is on its way when it returns), then
 * let go of the lock; `why` is the reason the lock timeline shows. */
void pl_drop_lock(pl_tstate *ts, pl_gil_reason why);

/* All four steps, urgently: this thread then holds fam's lock, running L.
 * NULL when out of memory (nothing was taken). */
pl_tstate *pl_enter(pl_family *fam, lua_State *L, const char *name);
/* The inverse of pl_enter; ts is freed ("left the state" in the lock
 * timeline: a thread that ends drops the lock for PL_GIL_THREAD_END and
 * detaches instead). */
void pl_leave(pl_tstate *ts);
/* pl_enter and pl_leave for a prepared tstate, kept when leaving. */
void pl_enter_prepared(pl_tstate *ts, lua_State *L);
void pl_leave_keep(pl_tstate *ts);

/* Around a blocking call: let go of the lock but stay marked running, so
 * that a forced cancel still pokes the thread out of its wait (pl_wait,
 * pl_poller_poll); pl_take_lock takes it back.  pl_unlock/pl_lock do the
 * same for the calling thread's tstate in L's family (ts may be NULL:
 * parlua was never loaded there).  `why` names the blocking call in the
 * lock timeline. */
void pl_give_lock(pl_tstate *ts, pl_gil_reason why);
pl_tstate *pl_unlock(lua_State *L, pl_gil_reason why);
void pl_lock(lua_State *L, pl_tstate *ts);

/* parlua_enter/parlua_leave: a host thread enters the main family (or, when
 * it is in already or holds the lock, counts one level deeper). */
void pl_host_enter(parlua *rt);
void pl_host_leave(parlua *rt);

/* A runtime with a fresh main state, that preloads `modules` (a static
 * list, {NULL, NULL} ends it) in every state it makes and borrows the list
 * of preloads `borrowed` (NULL: it has its own, empty).  0, or PL_ENOMEM
 * with nothing left to free. */
int pl_runtime_open(parlua *rt, const parlua_config *cfg, const luaL_Reg *modules,
                    pl_preload *borrowed);
/* Holding the main state's lock: stop what the runtime's code started and
 * close the main state (finalizers run and may still use the runtime). */
void pl_runtime_close_state(parlua *rt);
/* Once no thread is entered any more: free what pl_runtime_open made. */
void pl_runtime_close(parlua *rt);

#endif
