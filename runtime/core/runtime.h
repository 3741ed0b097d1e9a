/* Private to the parlua runtime: the runtime object and its state families.
 *
 * A family is one lua_State with all of its coroutines and the global lock
 * that guards them.  A runtime has one main family; `states` workers (and
 * the state a worker process builds) are families of their own, made by the
 * same factory (state.c) so host preloads reach them all.
 *
 * Lock order: rt->mu before fam->mu; neither is held while waiting for a
 * global lock.
 */
#ifndef PL_RUNTIME_H
#define PL_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>

#include "lua.h"
#include "lauxlib.h"
#include "parlua.h"
#include "core/gil.h"
#include "core/tstate.h"

struct pl_family {
  pl_gil gil;
  lua_State *L;
  struct parlua *rt;
  lua_Hook hook;            /* the count hook that hands the lock over */
  pthread_mutex_t mu;       /* guards tstates */
  pl_tstate *tstates;
};

typedef struct pl_preload {
  struct pl_preload *next;
  lua_CFunction open;
  char name[];
} pl_preload;

/* Something to stop before the main state closes: a thread to join, a pool
 * to shut down.  Lower `order` runs first. */
typedef struct pl_closer {
  struct pl_closer *next, *prev;
  struct pl_closer **slot;  /* the owner's pointer to it; guarded by rt->mu */
  int order;
  void (*close)(void *ud, lua_State *L);
  void *ud;
} pl_closer;

enum { PL_CLOSE_THREADS = 10, PL_CLOSE_DAEMONS = 20, PL_CLOSE_POOLS = 30 };

struct parlua {
  pl_family main;
  pthread_mutex_t mu;       /* guards preloads, closers, error */
  const luaL_Reg *modules;  /* preloaded in every state made (state.c), {NULL, NULL} ends */
  pl_preload *preloads;
  int borrows_preloads;     /* preloads belong to another runtime (enter.c) */
  pl_closer *closers;
  int adopted;              /* main.L belongs to someone else (stock lua) */
  atomic_int interrupted;   /* parlua_interrupt was called */
  int last_interrupted;     /* the last dostring ended by an interrupt */
  atomic_int thread_counter;/* names Thread-1, Thread-2, ... */
  char *error;
  int closing;
  int closed;               /* guarded by mu: shutdown has run, no new closers */
  int live_threads;         /* guarded by mu: OS threads not yet exited */
  pthread_cond_t threads_gone;
};

/* The family of L's state, or NULL where parlua was never loaded. */
pl_family *pl_family_of(lua_State *L);
int pl_family_init(pl_family *fam, parlua *rt, double interval);
void pl_family_destroy(pl_family *fam);
void pl_family_add_tstate(pl_family *fam, pl_tstate *ts);
void pl_family_remove_tstate(pl_family *fam, pl_tstate *ts);
void pl_family_attach(pl_family *fam, lua_State *L);

/* The calling thread's tstate in L's family, or NULL. */
pl_tstate *pl_tstate_of(lua_State *L);
/* What the runtime's hooks do for it at an instruction of L: hand the lock
 * over when asked, raise a forced cancel once. */
void pl_family_serve(lua_State *L, pl_tstate *ts);

int pl_runtime_init(parlua *rt, const parlua_config *cfg);
void pl_runtime_shutdown(parlua *rt, lua_State *L);
void pl_runtime_destroy(parlua *rt);
/* Free what the runtime allocated, keeping it usable (and closed). */
void pl_runtime_free_lists(parlua *rt);
parlua *pl_runtime_of(lua_State *L);

/* Register a closer; *slot points at it until it is removed or taken by
 * shutdown (which sets *slot to NULL under rt->mu before calling it).
 * 0, PL_ENOMEM, or PL_ECLOSING once shutdown has finished (a finalizer run
 * by lua_close must not start a thread that would outlive the state). */
int pl_runtime_add_closer(parlua *rt, pl_closer **slot, int order,
                          void (*close)(void *, lua_State *), void *ud);
/* 1 once shutdown has finished: nothing new may start. */
int pl_runtime_is_closed(parlua *rt);
/* 1 when the closer was still registered and is now gone; 0 when shutdown
 * has taken it (and will call it). */
int pl_runtime_remove_closer(parlua *rt, pl_closer **slot);

/* OS threads the runtime started count themselves in and out, so that the
 * runtime outlives the last of them. */
void pl_runtime_thread_enter(parlua *rt);
void pl_runtime_thread_exit(parlua *rt);

/* A caught SIGINT, from the watcher thread (sigint.c): interrupt every
 * thread of the runtime but the host's, whose flags the handler raised
 * already; wake the host's from its wait. */
void pl_runtime_interrupt_others(parlua *rt);

/* The defaults of parlua_config_init. */
void pl_config_init(parlua_config *cfg);
/* parlua_preload: into the list, and into the main state if it exists. */
int pl_runtime_add_preload(parlua *rt, const char *name, lua_CFunction open);
/* parlua_interrupt: cancel every thread of the main family. */
int pl_runtime_interrupt(parlua *rt);

/* Put rt's modules and then every preload of rt into L's package.preload. */
void pl_runtime_apply_preloads(parlua *rt, lua_State *L);

/* state.c: a new lua_State for `fam`, standard libraries and preloads in. */
lua_State *pl_state_new(parlua *rt, pl_family *fam);

/* coroutine.c: lock-aware coroutine.resume and coroutine.wrap. */
void pl_install_coroutines(lua_State *L);

#endif
