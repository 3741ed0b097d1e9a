/* A state family: one lua_State, its coroutines, and the lock guarding them.
 * Also the count hook through which a holder hands the lock over and a
 * forced cancel arrives. */
#include <string.h>

#include "lauxlib.h"
#include "core/enter.h"
#include "core/clock.h"
#include "core/errors.h"
#include "core/runtime.h"

static const char FAMILY_KEY[] = "parlua.family";  /* its address is the key */

void pl_family_serve(lua_State *L, pl_tstate *ts) {
  pl_family *fam = ts->fam;
  if (pl_gil_drop_requested(&fam->gil)) pl_gil_yield(&fam->gil, ts, PL_GIL_SWITCH);
  /* A forced cancel is raised once here; blocking calls keep refusing, but
   * code that cleans up without blocking is allowed to finish. */
  if (pl_tstate_cancel_level(ts) == PL_CANCEL_FORCED &&
      !atomic_exchange(&ts->cancel_delivered, 1)) {
    ts->hard_raised_at = pl_now_ns();
    pl_error_raise_cancelled(L, ts);
  }
  /* ... except a hard time limit, raised again while the task goes on. */
  if (atomic_load(&ts->hard_limit_hit) && pl_now_ns() - ts->hard_raised_at >= PL_HARD_LIMIT_REPEAT_NS) {
    ts->hard_raised_at = pl_now_ns();
    pl_error_raise_cancelled(L, ts);
  }
  if (atomic_load(&ts->soft_limit_pending)) pl_error_raise_cancelled(L, ts);  /* SoftTimeLimit */
}

static void family_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  pl_family *fam = pl_family_of(L);
  pl_tstate *ts = fam != NULL ? pl_tstate_current(fam) : NULL;
  if (ts == NULL) {  /* not ours to run: nothing to hand over */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  pl_tstate_unpoke(ts, L);
  pl_family_serve(L, ts);
}

int pl_family_init(pl_family *fam, parlua *rt, double interval) {
  memset(fam, 0, sizeof *fam);
  fam->rt = rt;
  fam->hook = family_hook;
  if (pthread_mutex_init(&fam->mu, NULL) != 0) return -1;
  if (pl_gil_init(&fam->gil, interval) != 0) {
    pthread_mutex_destroy(&fam->mu);
    return -1;
  }
  return 0;
}

void pl_family_destroy(pl_family *fam) {
  pl_gil_destroy(&fam->gil);
  pthread_mutex_destroy(&fam->mu);
}

/* The family is found through the registry, not lua_getextraspace: a
 * stock lua5.4 leaves the extra space of its main thread uninitialised. */
void pl_family_attach(pl_family *fam, lua_State *L) {
  lua_pushlightuserdata(L, fam);
  lua_rawsetp(L, LUA_REGISTRYINDEX, FAMILY_KEY);
}

pl_family *pl_family_of(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, FAMILY_KEY);
  pl_family *fam = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return fam;
}

void pl_family_add_tstate(pl_family *fam, pl_tstate *ts) {
  pthread_mutex_lock(&fam->mu);
  ts->next = fam->tstates;
  ts->prevp = NULL;
  if (fam->tstates != NULL) fam->tstates->prevp = ts;
  fam->tstates = ts;
  pthread_mutex_unlock(&fam->mu);
}

void pl_family_remove_tstate(pl_family *fam, pl_tstate *ts) {
  pthread_mutex_lock(&fam->mu);
  if (ts->prevp != NULL) ts->prevp->next = ts->next;
  else fam->tstates = ts->next;
  if (ts->next != NULL) ts->next->prevp = ts->prevp;
  pthread_mutex_unlock(&fam->mu);
}

pl_tstate *pl_tstate_of(lua_State *L) {
  pl_family *fam = pl_family_of(L);
  return fam != NULL ? pl_tstate_current(fam) : NULL;
}
