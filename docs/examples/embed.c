/* Embedding parlua in a host program: a runnable example that checks what
 * it shows.  Built by `make` as build/embed_example; tests/run-all.sh runs
 * it.  It prints one "ok"/"not ok" line per check and exits 0 only when
 * every check passed.
 *
 * It shows:
 *   - parlua_new with the defaults and with a config (switch interval);
 *   - a host C module, preloaded, whose blocking function gives the lock
 *     away (PARLUA_UNLOCK/PARLUA_LOCK) so that other threads run meanwhile;
 *     a `states` pool worker (a state of its own) can require it too;
 *   - parlua_dostring and parlua_dofile, and the error with its traceback;
 *   - a host thread using the main state directly (parlua_enter,
 *     parlua_state, parlua_leave) while a script runs;
 *   - parlua_interrupt from a host thread;
 *   - two runtimes side by side, each driven by its own host thread;
 *   - parlua_close.
 *
 * Only include/parlua.h and the plain Lua C API are used.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lua.h"
#include "lauxlib.h"
#include "parlua.h"

static int failures;

static void check(int ok, const char *what) {
  printf("%s - %s\n", ok ? "ok" : "not ok", what);
  fflush(stdout);
  if (!ok) failures++;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the host module ------------------------------------------------- */

/* hostmod.block(seconds): a blocking C call, as a host's I/O would be.  The
 * lock is given away around the blocking part only; no Lua API is used
 * while it is away. */
static int hostmod_block(lua_State *L) {
  double seconds = luaL_checknumber(L, 1);
  luaL_argcheck(L, seconds >= 0 && seconds < 60, 1, "seconds must be in [0, 60)");
  PARLUA_UNLOCK(L);
  usleep((useconds_t)(seconds * 1e6));
  PARLUA_LOCK(L);
  lua_pushnumber(L, seconds);
  return 1;
}

static int hostmod_name(lua_State *L) {
  lua_pushliteral(L, "hostmod");
  return 1;
}

static int luaopen_hostmod(lua_State *L) {
  static const luaL_Reg funcs[] = {{"block", hostmod_block}, {"name", hostmod_name}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}

/* ---- reading the main state directly --------------------------------- */

/* Copy global `name` of rt's main state as a string ("" when not one). */
static void read_global(parlua *rt, const char *name, char *buf, size_t size) {
  parlua_enter(rt);
  lua_State *L = parlua_state(rt);
  lua_getglobal(L, name);
  const char *s = lua_tostring(L, -1);
  snprintf(buf, size, "%s", s != NULL ? s : "");
  lua_pop(L, 1);
  parlua_leave(rt);
}

static lua_Number global_number(parlua *rt, const char *name) {
  parlua_enter(rt);
  lua_State *L = parlua_state(rt);
  lua_getglobal(L, name);
  lua_Number n = lua_tonumber(L, -1);
  lua_pop(L, 1);
  parlua_leave(rt);
  return n;
}

/* ---- checks ---------------------------------------------------------- */

static void check_defaults(void) {
  parlua *rt = parlua_new(NULL);
  check(rt != NULL, "parlua_new(NULL) makes a runtime");
  if (rt == NULL) return;
  int rc = parlua_dostring(rt,
                           "local par = require 'parlua'\n"
                           "interval = par.getswitchinterval()\n"
                           "cores = par.cpu_count()\n"
                           "greeting = string.format('%d + %d = %d', 2, 3, 2 + 3)",
                           "=defaults");
  check(rc == LUA_OK, "parlua_dostring runs a chunk (LUA_OK)");
  char buf[64];
  read_global(rt, "greeting", buf, sizeof buf);
  check(strcmp(buf, "2 + 3 = 5") == 0, "a global set by the chunk is read back through parlua_state");
  check(global_number(rt, "interval") == 0.005, "the default switch interval is 0.005 s");
  check(global_number(rt, "cores") >= 1, "par.cpu_count() works in the embedded state");

  rc = parlua_dostring(rt, "local function inner() error('boom from the host test') end\ninner()", "=failing");
  const char *err = parlua_error(rt);
  check(rc == LUA_ERRRUN, "a runtime error returns LUA_ERRRUN");
  check(strstr(err, "failing:1: boom from the host test") != NULL, "parlua_error has the message with its position");
  check(strstr(err, "stack traceback") != NULL && strstr(err, "inner") != NULL,
        "parlua_error has the traceback");
  rc = parlua_dostring(rt, "x = = 1", "=syntax");
  check(rc == LUA_ERRSYNTAX && strstr(parlua_error(rt), "syntax:1:") != NULL,
        "a syntax error returns LUA_ERRSYNTAX with its message");
  check(parlua_dostring(rt, "return true", NULL) == LUA_OK, "the runtime is usable after errors");

  char path[] = "/tmp/parlua_embed_XXXXXX";
  int fd = mkstemp(path);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (f != NULL) {
    fputs("#!/usr/bin/env parlua\nfrom_file = select('#', ...) .. ' args, ' .. #arg_check\n", f);
    fclose(f);
  }
  parlua_dostring(rt, "arg_check = 'four'", "=setup");
  rc = parlua_dofile(rt, path);
  read_global(rt, "from_file", buf, sizeof buf);
  check(f != NULL && rc == LUA_OK && strcmp(buf, "0 args, 4") == 0,
        "parlua_dofile runs a file (first line '#' skipped)");
  unlink(path);
  rc = parlua_dofile(rt, path);
  check(rc != LUA_OK && strstr(parlua_error(rt), "cannot open") != NULL,
        "parlua_dofile of a missing file fails with 'cannot open'");
  parlua_close(rt);
  check(1, "parlua_close");
}

/* A host thread that keeps reading `phase` through the main state while the
 * main thread runs a script; it notes whether it got in during the part
 * where the script's threads were blocked in hostmod.block. */
typedef struct Watcher {
  parlua *rt;
  int saw_blocking;
  int reads;
} Watcher;

static void *watcher_main(void *ud) {
  Watcher *w = ud;
  double deadline = now() + 10;
  char phase[32];
  do {
    read_global(w->rt, "phase", phase, sizeof phase);
    w->reads++;
    if (strcmp(phase, "blocking") == 0) w->saw_blocking = 1;
    usleep(1000);
  } while (strcmp(phase, "done") != 0 && now() < deadline);
  return NULL;
}

static void check_host_module_and_threads(void) {
  parlua_config cfg;
  parlua_config_init(&cfg);
  check(cfg.switch_interval == 0.005, "parlua_config_init fills the default switch interval");
  cfg.switch_interval = 0.002;
  parlua *rt = parlua_new(&cfg);
  check(rt != NULL, "parlua_new(&cfg) makes a runtime");
  if (rt == NULL) return;
  check(parlua_preload(rt, "hostmod", luaopen_hostmod) == 0, "parlua_preload registers hostmod");
  int rc = parlua_dostring(rt,
                           "interval = require('parlua').getswitchinterval()\n"
                           "hm = require('hostmod').name()",
                           "=config");
  char buf[64];
  read_global(rt, "hm", buf, sizeof buf);
  check(rc == LUA_OK && strcmp(buf, "hostmod") == 0, "a script requires the preloaded host module");
  rc = parlua_dostring(rt,
                       "local pool <close> = require('parlua').pool{kind = 'states', workers = 1}\n"
                       "in_worker = pool:submit(function() return require('hostmod').name() end):result()",
                       "=states");
  if (rc != LUA_OK) printf("# %s\n", parlua_error(rt));
  read_global(rt, "in_worker", buf, sizeof buf);
  check(rc == LUA_OK && strcmp(buf, "hostmod") == 0, "a 'states' worker requires the preloaded host module too");
  check(global_number(rt, "interval") == 0.002, "the configured switch interval (0.002 s) is in effect");

  Watcher w = {rt, 0, 0};
  pthread_t th;
  parlua_dostring(rt, "phase = 'starting'", "=phase");
  int started = pthread_create(&th, NULL, watcher_main, &w) == 0;
  rc = parlua_dostring(rt,
                       "local par = require 'parlua'\n"
                       "local hostmod = require 'hostmod'\n"
                       "phase = 'blocking'\n"
                       "local t0 = par.clock()\n"
                       "local a = par.thread(hostmod.block, 0.2)\n"
                       "local b = par.thread(hostmod.block, 0.2)\n"
                       "a:start(); b:start()\n"
                       "assert(a:join(10) and b:join(10), 'threads did not finish')\n"
                       "elapsed = par.clock() - t0\n"
                       "slept = a:result() + b:result()\n"
                       "phase = 'done'",
                       "=overlap");
  if (rc != LUA_OK) printf("# %s\n", parlua_error(rt));
  if (started) pthread_join(th, NULL);
  double elapsed = global_number(rt, "elapsed");
  printf("# two 0.2 s blocks in two threads took %.3f s; the host thread read %d times\n", elapsed, w.reads);
  check(rc == LUA_OK && global_number(rt, "slept") == 0.4, "hostmod.block runs in two par.thread threads");
  check(elapsed >= 0.19 && elapsed < 0.35, "the two blocking calls overlapped (lock released while blocked)");
  check(started && w.saw_blocking, "a host thread used the main state while the script was running");

  /* parlua_interrupt from another host thread stops a busy loop. */
  check(parlua_interrupt(rt) == 0, "parlua_interrupt on an idle runtime returns 0");
  check(parlua_dostring(rt, "idle_ok = true", "=after") == LUA_OK, "an idle interrupt does not poison later runs");
  parlua_close(rt);
}

typedef struct Interrupter {
  parlua *rt;
  int result;
} Interrupter;

static void *interrupter_main(void *ud) {
  Interrupter *in = ud;
  char phase[16] = "";
  double deadline = now() + 10;
  while (strcmp(phase, "spinning") != 0 && now() < deadline) {
    usleep(2000);
    read_global(in->rt, "phase", phase, sizeof phase);
  }
  in->result = parlua_interrupt(in->rt);
  return NULL;
}

static void check_interrupt(void) {
  parlua *rt = parlua_new(NULL);
  if (rt == NULL) {
    check(0, "parlua_new for the interrupt check");
    return;
  }
  Interrupter in = {rt, -1};
  pthread_t th;
  int started = pthread_create(&th, NULL, interrupter_main, &in) == 0;
  double t0 = now();
  /* The loop allocates so that a ThreadSanitizer build, which delivers
   * signals (the runtime's pokes) only inside intercepted calls such as
   * malloc, can interrupt it too; `parlua` is tested on a bare loop. */
  int rc = parlua_dostring(rt, "phase = 'spinning'\nwhile true do local garbage = {} end", "=spin");
  double took = now() - t0;
  if (started) pthread_join(th, NULL);
  check(started && in.result == 1, "parlua_interrupt while a script runs returns 1");
  check(rc != LUA_OK && parlua_interrupted(rt) == 1 && took < 10, "the interrupted script fails and parlua_interrupted is 1");
  check(strstr(parlua_error(rt), "interrupted") != NULL, "its error says 'interrupted'");
  rc = parlua_dostring(rt, "after = 1", "=after");
  check(rc == LUA_OK && parlua_interrupted(rt) == 0, "the next run works and is not marked interrupted");
  parlua_close(rt);
}

/* Two runtimes in one process, each driven by its own host thread at the
 * same time: separate globals, separate locks, separate preloads. */
typedef struct Side {
  parlua *rt;
  const char *name;
  pthread_barrier_t *start;
  int rc;
  char error[512];
} Side;

static void *side_main(void *ud) {
  Side *s = ud;
  char code[1024];
  snprintf(code, sizeof code,
           "local par = require 'parlua'\n"
           "who = '%s'\n"
           "t_start = par.clock()\n"
           "local n = 0\n"
           "for i = 1, 20 do\n"
           "  for j = 1, 20000 do n = n + j %% 7 end\n"
           "  par.sleep(0.005)\n"
           "  assert(who == '%s', 'the other runtime changed my global')\n"
           "end\n"
           "t_end = par.clock()\n"
           "has_hostmod = pcall(require, 'hostmod')",
           s->name, s->name);
  pthread_barrier_wait(s->start);
  s->rc = parlua_dostring(s->rt, code, s->name);
  snprintf(s->error, sizeof s->error, "%s", parlua_error(s->rt));
  return NULL;
}

static void check_two_runtimes(void) {
  parlua *a = parlua_new(NULL), *b = parlua_new(NULL);
  check(a != NULL && b != NULL && a != b, "two runtimes exist side by side");
  if (a == NULL || b == NULL) {
    parlua_close(a);
    parlua_close(b);
    return;
  }
  parlua_preload(a, "hostmod", luaopen_hostmod);
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, 2);
  Side sa = {a, "A", &start, -1, ""}, sb = {b, "B", &start, -1, ""};
  pthread_t ta, tb;
  pthread_create(&ta, NULL, side_main, &sa);
  pthread_create(&tb, NULL, side_main, &sb);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  pthread_barrier_destroy(&start);
  if (sa.rc != LUA_OK) printf("# A: %s\n", sa.error);
  if (sb.rc != LUA_OK) printf("# B: %s\n", sb.error);
  check(sa.rc == LUA_OK && sb.rc == LUA_OK, "both runtimes ran their scripts from two host threads");
  char wa[8], wb[8];
  read_global(a, "who", wa, sizeof wa);
  read_global(b, "who", wb, sizeof wb);
  check(strcmp(wa, "A") == 0 && strcmp(wb, "B") == 0, "each runtime kept its own globals");
  double sa0 = global_number(a, "t_start"), sa1 = global_number(a, "t_end");
  double sb0 = global_number(b, "t_start"), sb1 = global_number(b, "t_end");
  printf("# A ran for %.3f s, B for %.3f s, B started %+.3f s after A\n", sa1 - sa0, sb1 - sb0, sb0 - sa0);
  check(sa0 < sb1 && sb0 < sa1, "the two scripts ran at the same time");
  parlua_enter(a);
  lua_getglobal(parlua_state(a), "has_hostmod");
  int a_has = lua_toboolean(parlua_state(a), -1);
  lua_pop(parlua_state(a), 1);
  parlua_leave(a);
  parlua_enter(b);
  lua_getglobal(parlua_state(b), "has_hostmod");
  int b_has = lua_toboolean(parlua_state(b), -1);
  lua_pop(parlua_state(b), 1);
  parlua_leave(b);
  check(a_has && !b_has, "a preload belongs to its runtime only");
  parlua_close(a);
  parlua_close(b);
  check(1, "both runtimes closed");
}

int main(void) {
  check_defaults();
  check_host_module_and_threads();
  check_interrupt();
  check_two_runtimes();
  printf("%s\n", failures == 0 ? "all checks passed" : "SOME CHECKS FAILED");
  return failures == 0 ? 0 : 1;
}
