/* The lock timeline, Lua side: par.gil_trace([opts]), par.gil_trace_stop()
 * and the trace it returns (runtime/core/gil_trace.h records the events).
 *
 *   trace:events()            iterator of {time, thread, ident, state, lane,
 *                             event, reason | urgent | at_start}, oldest
 *                             first
 *   trace:info()              capacity, dropped, nevents, duration, lanes
 *   trace:summary()           per thread: held, waited, free, handoffs, ...
 *   trace:svg(path [, opts])  the picture (opts: width, title, and from/to:
 *                             the window shown, seconds since the start)
 *   trace:json(path)          Chrome's trace-event format
 *
 * summary, svg and json are written in Lua (bindings/gil_render.lua, built
 * into the library as pl_gil_render_lua) and loaded on first use; this file
 * writes the files, without the lock.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bindings.h"
#include "core/gil_trace.h"

extern const char pl_gil_render_lua[];
extern const size_t pl_gil_render_lua_len;

static const char TRACE_MT[] = "parlua.GilTrace";
static const char RENDER_KEY = 0;  /* registry slot of the loaded renderer */

#define DEFAULT_EVENTS 100000
#define MAX_EVENTS 10000000

static pl_family *family_or_error(lua_State *L) {
  pl_family *fam = pl_family_of(L);
  if (fam == NULL) luaL_error(L, "parlua is not loaded in this state");
  return fam;
}

/* Options tables refuse keys they do not know, naming them. */
static void check_keys(lua_State *L, int idx, const char *const *known) {
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; known[i] != NULL && !ok; i++) ok = strcmp(lua_tostring(L, -1), known[i]) == 0;
    if (!ok)
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL)));
  }
}

static lua_Integer opt_int_field(lua_State *L, int idx, const char *key, lua_Integer dflt,
                                 lua_Integer lo, lua_Integer hi) {
  lua_Integer v = dflt;
  int t = lua_getfield(L, idx, key);
  if (t != LUA_TNIL) {
    int isint = 0;
    v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < lo || v > hi)
      luaL_argerror(L, idx, lua_pushfstring(L, "'%s' must be an integer from %I to %I", key,
                                            lo, hi));
  }
  lua_pop(L, 1);
  return v;
}

/* A time since the trace began, in seconds: a non-negative number. */
static double opt_seconds_field(lua_State *L, int idx, const char *key, double dflt) {
  double v = dflt;
  if (lua_getfield(L, idx, key) != LUA_TNIL) {
    int isnum = 0;
    v = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(v >= 0) || v == HUGE_VAL)
      luaL_argerror(L, idx, lua_pushfstring(L, "'%s' must be a non-negative number of seconds", key));
  }
  lua_pop(L, 1);
  return v;
}

/* par.gil_trace([{events = n}]) */
static int trace_start(lua_State *L) {
  pl_family *fam = family_or_error(L);
  lua_Integer events = DEFAULT_EVENTS;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const known[] = {"events", NULL};
    check_keys(L, 1, known);
    events = opt_int_field(L, 1, "events", DEFAULT_EVENTS, 1, MAX_EVENTS);
  }
  int rc = pl_gil_trace_start(&fam->gil, (size_t)events);
  if (rc == -2) return luaL_error(L, "a lock trace is already recording (par.gil_trace_stop ends it)");
  if (rc != 0) return luaL_error(L, "not enough memory for a lock trace of %I events", events);
  return 0;
}

/* par.gil_trace_stop() -> trace */
static int trace_stop(lua_State *L) {
  pl_family *fam = family_or_error(L);
  pl_gil_trace_log *log = lua_newuserdatauv(L, sizeof *log, 0);
  memset(log, 0, sizeof *log);
  int rc = pl_gil_trace_stop(&fam->gil, log);
  if (rc == -2) return luaL_error(L, "no lock trace is recording (par.gil_trace starts one)");
  if (rc != 0) return luaL_error(L, "not enough memory to stop the lock trace");
  luaL_setmetatable(L, TRACE_MT);
  return 1;
}

static pl_gil_trace_log *check_trace(lua_State *L) {
  return luaL_checkudata(L, 1, TRACE_MT);
}

static double seconds_since_start(const pl_gil_trace_log *log, int64_t t_ns) {
  return t_ns > log->start_ns ? (double)(t_ns - log->start_ns) / 1e9 : 0.0;
}

static const char *const EVENT_NAMES[] = {"request", "acquired", "released"};

static int events_next(lua_State *L) {
  pl_gil_trace_log *log = luaL_checkudata(L, lua_upvalueindex(1), TRACE_MT);
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(2));
  if ((size_t)i >= log->nevents) return 0;
  lua_pushinteger(L, i + 1);
  lua_replace(L, lua_upvalueindex(2));
  const pl_gil_event *ev = &log->events[i];
  const pl_gil_lane *lane = &log->lanes[ev->lane];
  lua_createtable(L, 0, 7);
  lua_pushnumber(L, seconds_since_start(log, ev->t_ns));
  lua_setfield(L, -2, "time");
  lua_pushstring(L, lane->name);
  lua_setfield(L, -2, "thread");
  lua_pushinteger(L, lane->ident);
  lua_setfield(L, -2, "ident");
  lua_pushinteger(L, lane->state);
  lua_setfield(L, -2, "state");
  lua_pushinteger(L, (lua_Integer)ev->lane + 1);
  lua_setfield(L, -2, "lane");
  lua_pushstring(L, EVENT_NAMES[ev->kind]);
  lua_setfield(L, -2, "event");
  if (ev->kind == PL_GIL_EV_RELEASED) {
    lua_pushstring(L, pl_gil_reason_name((pl_gil_reason)ev->detail));
    lua_setfield(L, -2, "reason");
  } else if (ev->kind == PL_GIL_EV_REQUEST) {
    lua_pushboolean(L, ev->detail);
    lua_setfield(L, -2, "urgent");
  } else if (ev->detail) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "at_start");
  }
  return 1;
}

static int trace_events(lua_State *L) {
  check_trace(L);
  lua_settop(L, 1);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, events_next, 2);
  return 1;
}

static int trace_info(lua_State *L) {
  pl_gil_trace_log *log = check_trace(L);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, (lua_Integer)log->capacity);
  lua_setfield(L, -2, "capacity");
  lua_pushinteger(L, (lua_Integer)log->dropped);
  lua_setfield(L, -2, "dropped");
  lua_pushinteger(L, (lua_Integer)log->nevents);
  lua_setfield(L, -2, "nevents");
  lua_pushnumber(L, seconds_since_start(log, log->stop_ns));
  lua_setfield(L, -2, "duration");
  lua_createtable(L, (int)log->nlanes, 0);
  for (size_t i = 0; i < log->nlanes; i++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, log->lanes[i].name);
    lua_setfield(L, -2, "thread");
    lua_pushinteger(L, log->lanes[i].ident);
    lua_setfield(L, -2, "ident");
    lua_pushinteger(L, log->lanes[i].state);
    lua_setfield(L, -2, "state");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "lanes");
  return 1;
}

/* [-0, +1] the renderer's function `name`, the module loaded once per state. */
static void push_renderer(lua_State *L, const char *name) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RENDER_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    if (luaL_loadbufferx(L, pl_gil_render_lua, pl_gil_render_lua_len, "=[parlua gil_render]", "t") !=
        LUA_OK)
      lua_error(L);
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &RENDER_KEY);
  }
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

static int trace_summary(lua_State *L) {
  check_trace(L);
  push_renderer(L, "summary");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

/* Write the string on top of the stack to path, without the lock. */
static int write_file(lua_State *L, const char *path) {
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);  /* anchored on the stack */
  pl_tstate *ts = pl_unlock(L, PL_GIL_IO);
  FILE *f = fopen(path, "w");
  int err = 0;
  if (f == NULL) err = errno;
  else {
    if (fwrite(text, 1, len, f) != len) err = errno ? errno : EIO;
    if (fclose(f) != 0 && err == 0) err = errno;
  }
  pl_lock(L, ts);
  if (err != 0) return luaL_error(L, "cannot write '%s': %s", path, strerror(err));
  return 0;
}

static int trace_svg(lua_State *L) {
  check_trace(L);
  const char *path = luaL_checkstring(L, 2);
  lua_settop(L, 3);
  lua_newtable(L);  /* [4] the renderer's options, checked here */
  if (!lua_isnil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    static const char *const known[] = {"width", "title", "from", "to", NULL};
    check_keys(L, 3, known);
    lua_pushinteger(L, opt_int_field(L, 3, "width", 1000, 400, 20000));
    lua_setfield(L, 4, "width");
    double from = opt_seconds_field(L, 3, "from", 0);
    double to = opt_seconds_field(L, 3, "to", HUGE_VAL);
    luaL_argcheck(L, from < to, 3, "'from' must come before 'to'");
    lua_pushnumber(L, from);
    lua_setfield(L, 4, "from");
    if (to != HUGE_VAL) {
      lua_pushnumber(L, to);
      lua_setfield(L, 4, "to");
    }
    if (lua_getfield(L, 3, "title") != LUA_TNIL) {
      luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 3, "'title' must be a string");
      lua_setfield(L, 4, "title");
    } else {
      lua_pop(L, 1);
    }
  }
  push_renderer(L, "svg");
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 4);
  lua_call(L, 2, 1);
  return write_file(L, path);
}

static int trace_json(lua_State *L) {
  check_trace(L);
  const char *path = luaL_checkstring(L, 2);
  push_renderer(L, "json");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return write_file(L, path);
}

static int trace_gc(lua_State *L) {
  pl_gil_trace_log_free(check_trace(L));
  return 0;
}

static int trace_tostring(lua_State *L) {
  pl_gil_trace_log *log = check_trace(L);
  lua_pushfstring(L, "GilTrace(%I events, %I threads, %I dropped)", (lua_Integer)log->nevents,
                  (lua_Integer)log->nlanes, (lua_Integer)log->dropped);
  return 1;
}

void pl_open_gil_trace(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"events", trace_events}, {"info", trace_info}, {"summary", trace_summary},
      {"svg", trace_svg},       {"json", trace_json}, {NULL, NULL}};
  pl_new_class(L, TRACE_MT, methods, NULL, trace_gc, NULL, trace_tostring);
  static const luaL_Reg funcs[] = {
      {"gil_trace", trace_start}, {"gil_trace_stop", trace_stop}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
