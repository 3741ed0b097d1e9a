/* The small functions of the module: time, sleeping, identity, and the
 * global lock's controls. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "bindings.h"
#include "core/clock.h"

static int core_clock(lua_State *L) {
  lua_pushnumber(L, (lua_Number)pl_now_ns() / 1e9);
  return 1;
}

/* Sleep without the lock; a forced cancel wakes the sleeper early. */
static int core_sleep(lua_State *L) {
  double seconds = luaL_checknumber(L, 1);
  luaL_argcheck(L, seconds >= 0 && !isnan(seconds), 1, "sleep length must be a non-negative number");
  pl_tstate *ts = pl_tstate_of(L);
  pl_check_cancel(L, ts);
  if (seconds == 0) {  /* let a waiting thread run, as Python's sleep(0) does */
    if (ts != NULL) pl_gil_yield(&ts->fam->gil, ts, PL_GIL_SLEEP);
    return 0;
  }
  int64_t deadline = pl_deadline_after(seconds);
  int rc = PL_OK;
  pl_unlock(L, PL_GIL_SLEEP);
  if (ts != NULL) {
    pl_wait_begin(ts, &ts->sleep_mu, &ts->sleep_cv);
    pthread_mutex_lock(&ts->sleep_mu);
    while (rc == PL_OK) rc = pl_wait(ts, &ts->sleep_mu, &ts->sleep_cv, deadline);
    pthread_mutex_unlock(&ts->sleep_mu);
    pl_wait_end(ts);
  } else {
    struct timespec until = pl_timespec_of(deadline);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
    }
  }
  pl_lock(L, ts);
  if (rc == PL_ECANCELLED) pl_check_cancel(L, ts);
  return 0;
}

static int core_pid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

static int core_cpu_count(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

static int core_current_thread(lua_State *L) {
  pl_tstate *ts = pl_tstate_of(L);
  lua_pushstring(L, ts != NULL && ts->name[0] != '\0' ? ts->name : "MainThread");
  return 1;
}

static int core_cancelled(lua_State *L) {
  pl_tstate *ts = pl_tstate_of(L);
  lua_pushboolean(L, ts != NULL && pl_tstate_cancel_level(ts) != PL_CANCEL_NONE);
  return 1;
}

static pl_family *family_or_error(lua_State *L) {
  pl_family *fam = pl_family_of(L);
  if (fam == NULL) luaL_error(L, "parlua is not loaded in this state");
  return fam;
}

static int core_setswitchinterval(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s > 0 && s < 1e6, 1, "switch interval must be a positive number of seconds");
  pl_gil_set_interval(&family_or_error(L)->gil, s);
  return 0;
}

static int core_getswitchinterval(lua_State *L) {
  lua_pushnumber(L, pl_gil_get_interval(&family_or_error(L)->gil));
  return 1;
}

static int core_gil_stats(lua_State *L) {
  pl_gil_stats st;
  pl_gil_get_stats(&family_or_error(L)->gil, &st);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)st.switches);
  lua_setfield(L, -2, "switches");
  lua_pushinteger(L, (lua_Integer)st.acquisitions);
  lua_setfield(L, -2, "acquisitions");
  lua_pushinteger(L, (lua_Integer)st.drop_requests);
  lua_setfield(L, -2, "drop_requests");
  lua_pushnumber(L, st.wait_seconds);
  lua_setfield(L, -2, "wait_seconds");
  lua_pushnumber(L, st.hold_seconds);
  lua_setfield(L, -2, "hold_seconds");
  lua_pushnumber(L, pl_gil_get_interval(&family_or_error(L)->gil));
  lua_setfield(L, -2, "interval");
  return 1;
}

void pl_open_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"clock", core_clock},
      {"sleep", core_sleep},
      {"pid", core_pid},
      {"cpu_count", core_cpu_count},
      {"current_thread", core_current_thread},
      {"cancelled", core_cancelled},
      {"setswitchinterval", core_setswitchinterval},
      {"getswitchinterval", core_getswitchinterval},
      {"gil_stats", core_gil_stats},
      {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
