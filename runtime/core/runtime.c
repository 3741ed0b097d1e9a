/* The runtime object: its main family, host preloads, the things to stop
 * before the main state closes, and interrupts. */
#include <stdlib.h>
#include <string.h>

#include "core/debug.h"
#include "lauxlib.h"
#include "core/enter.h"
#include "core/runtime.h"

void pl_config_init(parlua_config *cfg) {
  cfg->switch_interval = PL_GIL_DEFAULT_INTERVAL;
}

int pl_runtime_init(parlua *rt, const parlua_config *cfg) {
  parlua_config defaults;
  if (cfg == NULL) {
    pl_config_init(&defaults);
    cfg = &defaults;
  }
  memset(rt, 0, sizeof *rt);
  double interval = cfg->switch_interval > 0 ? cfg->switch_interval : PL_GIL_DEFAULT_INTERVAL;
  atomic_init(&rt->interrupted, 0);
  atomic_init(&rt->thread_counter, 0);
  /* Each step undoes the ones before it when it fails. */
  if (pthread_mutex_init(&rt->mu, NULL) != 0) return -1;
  if (pl_cond_init(&rt->threads_gone) != 0) goto no_cond;
  if (pl_family_init(&rt->main, rt, interval) != 0) goto no_family;
  return 0;
no_family:
  pthread_cond_destroy(&rt->threads_gone);
no_cond:
  pthread_mutex_destroy(&rt->mu);
  return -1;
}

void pl_runtime_free_lists(parlua *rt) {
  pl_gil_trace_leave(&rt->main.gil);
  pthread_mutex_lock(&rt->mu);
  pl_preload *p = rt->preloads;
  rt->preloads = NULL;
  free(rt->error);
  rt->error = NULL;
  pthread_mutex_unlock(&rt->mu);
  while (p != NULL) {
    pl_preload *next = p->next;
    free(p);
    p = next;
  }
}

void pl_runtime_destroy(parlua *rt) {
  pl_runtime_free_lists(rt);
  pl_family_destroy(&rt->main);
  pthread_cond_destroy(&rt->threads_gone);
  pthread_mutex_destroy(&rt->mu);
}

parlua *pl_runtime_of(lua_State *L) {
  pl_family *fam = pl_family_of(L);
  return fam != NULL ? fam->rt : NULL;
}

int pl_runtime_add_closer(parlua *rt, pl_closer **slot, int order,
                          void (*close)(void *, lua_State *), void *ud) {
  pl_closer *c = calloc(1, sizeof *c);
  if (c == NULL) return PL_ENOMEM;
  c->order = order;
  c->close = close;
  c->ud = ud;
  c->slot = slot;
  pthread_mutex_lock(&rt->mu);
  if (rt->closed) {
    pthread_mutex_unlock(&rt->mu);
    free(c);
    return PL_ECLOSING;
  }
  c->next = rt->closers;
  if (rt->closers != NULL) rt->closers->prev = c;
  rt->closers = c;
  *slot = c;
  pthread_mutex_unlock(&rt->mu);
  return 0;
}

static void unlink_locked(parlua *rt, pl_closer *c) {
  PL_ASSERT_HELD(&rt->mu);
  if (c->prev != NULL) c->prev->next = c->next;
  else rt->closers = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  *c->slot = NULL;
}

int pl_runtime_remove_closer(parlua *rt, pl_closer **slot) {
  pthread_mutex_lock(&rt->mu);
  pl_closer *c = *slot;
  if (c != NULL) unlink_locked(rt, c);
  pthread_mutex_unlock(&rt->mu);
  free(c);
  return c != NULL;
}

int pl_runtime_is_closed(parlua *rt) {
  pthread_mutex_lock(&rt->mu);
  int closed = rt->closed;
  pthread_mutex_unlock(&rt->mu);
  return closed;
}

void pl_runtime_thread_enter(parlua *rt) {
  pthread_mutex_lock(&rt->mu);
  rt->live_threads++;
  pthread_mutex_unlock(&rt->mu);
}

void pl_runtime_thread_exit(parlua *rt) {
  pthread_mutex_lock(&rt->mu);
  if (--rt->live_threads == 0) pthread_cond_broadcast(&rt->threads_gone);
  pthread_mutex_unlock(&rt->mu);
}

/* Run the closers, lowest order first, until none is left: a thread joined
 * here may have started others.  The caller holds the main lock; closers
 * give it away while they wait. */
void pl_runtime_shutdown(parlua *rt, lua_State *L) {
  rt->closing = 1;
  for (;;) {
    pthread_mutex_lock(&rt->mu);
    pl_closer *first = rt->closers;
    for (pl_closer *c = rt->closers; c != NULL; c = c->next)
      if (c->order < first->order) first = c;
    if (first != NULL) unlink_locked(rt, first);
    pthread_mutex_unlock(&rt->mu);
    if (first == NULL) break;
    first->close(first->ud, L);
    free(first);
  }
  /* Every thread has finished its Lua code; wait until each has also let
   * go of the runtime (they no longer need the lock for that). */
  pthread_mutex_lock(&rt->mu);
  while (rt->live_threads > 0) pthread_cond_wait(&rt->threads_gone, &rt->mu);
  rt->closed = 1;
  pthread_mutex_unlock(&rt->mu);
}

int pl_runtime_add_preload(parlua *rt, const char *name, lua_CFunction open) {
  size_t n = strlen(name) + 1;
  pl_preload *p = malloc(sizeof *p + n);
  if (p == NULL) return -1;
  memcpy(p->name, name, n);
  p->open = open;
  pthread_mutex_lock(&rt->mu);
  p->next = rt->preloads;
  rt->preloads = p;
  pthread_mutex_unlock(&rt->mu);
  /* The main state already exists: it learns of the module at once. */
  if (rt->main.L != NULL) {
    pl_host_enter(rt);
    luaL_getsubtable(rt->main.L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(rt->main.L, open);
    lua_setfield(rt->main.L, -2, p->name);
    lua_pop(rt->main.L, 1);
    pl_host_leave(rt);
  }
  return 0;
}

void pl_runtime_apply_preloads(parlua *rt, lua_State *L) {
  /* The runtime's own modules first: a host preload of the same name
   * replaces one. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *m = rt->modules; m != NULL && m->name != NULL; m++) {
    lua_pushcfunction(L, m->func);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
  /* Preloads are only ever added at the head and never removed before the
   * runtime dies, so the list can be walked without rt->mu, which must not
   * be held while Lua runs (a finalizer may need it). */
  pthread_mutex_lock(&rt->mu);
  pl_preload *head = rt->preloads;
  pthread_mutex_unlock(&rt->mu);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (pl_preload *p = head; p != NULL; p = p->next) {
    lua_pushcfunction(L, p->open);
    lua_setfield(L, -2, p->name);
  }
  lua_pop(L, 1);
}

int pl_runtime_interrupt(parlua *rt) {
  int running = 0;
  atomic_store(&rt->interrupted, 1);
  pthread_mutex_lock(&rt->main.mu);
  for (pl_tstate *ts = rt->main.tstates; ts != NULL; ts = ts->next) {
    pl_tstate_cancel(ts, PL_CANCEL_FORCED, 1);
    running = 1;
  }
  pthread_mutex_unlock(&rt->main.mu);
  return running;
}

void pl_runtime_interrupt_others(parlua *rt) {
  atomic_store(&rt->interrupted, 1);
  pthread_mutex_lock(&rt->main.mu);
  for (pl_tstate *ts = rt->main.tstates; ts != NULL; ts = ts->next) {
    if (ts->host) pl_tstate_wake(ts);  /* its handler raised the flags already */
    else pl_tstate_cancel(ts, PL_CANCEL_FORCED, 1);
  }
  pthread_mutex_unlock(&rt->main.mu);
}
