/* Private to the parlua runtime: the parlua locks a thread holds, so that a
 * thread or task ended by a forced cancel (t:cancel{force=true}, an
 * interrupt, a hard time limit) gives them back as it unwinds.
 *
 * The rule of forced cancellation: code that a Cancelled error cut short
 * cannot be trusted to reach its release(), so whatever parlua lock, rlock
 * or condition lock the thread still holds when its thread body or its
 * task ends under a forced cancel is released then, every level at once,
 * and the threads waiting for it go on.  A thread that ends normally (or
 * of any other error) keeps Python's rule: its locks stay held.
 *
 * A holding is recorded by its take number (see pl_synclock_owned_take),
 * so a lock that was released meanwhile -- by its holder or, for a plain
 * lock, by another thread -- and taken again by somebody else is never
 * released by mistake.  Each record keeps a reference on the lock.  The
 * list belongs to the tstate and only its owner thread touches it.
 */
#ifndef PL_HELD_H
#define PL_HELD_H

#include "core/tstate.h"
#include "sync/sync.h"

/* The calling thread took lk (or took it back after a condition wait):
 * remember the holding if it is one, once.  Out of memory, it is simply
 * not remembered. */
void pl_held_note(pl_tstate *ts, pl_synclock *lk);
/* Forget the holdings that ended (after a release). */
void pl_held_prune(pl_tstate *ts);
/* The thread or task of ts ends: under a forced cancel, release what it
 * still holds; forget everything either way. */
void pl_held_end(pl_tstate *ts);

#endif
