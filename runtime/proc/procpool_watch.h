/* Private to the parlua runtime: reaping the worker processes of idle
 * processes-pool workers.
 *
 * A worker thread of a processes pool reaps its process whenever it talks
 * to it.  But an idle worker thread sleeps in the executor, where nothing
 * watches its process: one killed meanwhile (kill -9 from outside, the
 * OOM killer) would stay a zombie until the pool's next task, or its
 * shutdown.  So an idle worker lists itself here; one process-wide thread
 * calls each listed entry's `check` now and then (every 0.1 s at first,
 * backing off to 1.6 s while nothing changes), which reaps a process that
 * has ended (waitpid WNOHANG on its own pid).  The worker thread takes its
 * entry off the list before it uses its process again; the next task then
 * finds the process gone and starts a fresh one -- the task never ran
 * there, so it does not fail.
 *
 * Listing and unlisting cost a mutex and, at most once per period, a
 * condition signal: a busy pool going idle and back many times a second
 * does not wake the watcher each time.  The watcher thread starts with
 * the first entry and stays (the library is pinned for it, as for the
 * forker of fork.c).  If it cannot be started, nothing is watched: the
 * zombie then lasts until the next task, as it would without this.
 */
#ifndef PL_PROCPOOL_WATCH_H
#define PL_PROCPOOL_WATCH_H

typedef struct pl_idlewatch {
  struct pl_idlewatch *next, *prev;   /* guarded by the watcher's mutex */
  int listed;                         /* guarded by the watcher's mutex */
  /* Called by the watcher thread with its mutex held: look (without
   * blocking) whether the process ended, and reap it. */
  void (*check)(struct pl_idlewatch *w);
} pl_idlewatch;

/* List w (idempotent). */
void pl_idlewatch_add(pl_idlewatch *w);
/* Unlist w (idempotent); once this returns, w->check is not running and
 * will not run again until w is listed again. */
void pl_idlewatch_remove(pl_idlewatch *w);
/* In a forked child: forget the parent's list and thread. */
void pl_idlewatch_child_reset(void);

#endif
