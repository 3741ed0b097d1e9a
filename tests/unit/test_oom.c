/* Out of memory on a task's whole path, for each kind of pool: creating the
 * pool, submit, starting the worker (its tstate, its state or process, the
 * pool's init), running the task, its result, a done callback, a map on
 * two workers (the processes kind pipelines it), shutdown;
 * and a par.thread from start to result.  The sweep fails the Nth C
 * allocation of the runtime's own code -- malloc, calloc, realloc, strdup,
 * wrapped at link time (-Wl,--wrap, see the Makefile), so Lua's own
 * allocator is not counted -- for N = 1, 2, ... until a run makes fewer
 * than N, each run in a fresh runtime.  Every run must end (no abort, no
 * hang: the runner's timeout) with the task's result or a "not enough
 * memory" error, and the runtime must close. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "lauxlib.h"
#include "parlua.h"
#include "runner.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static atomic_long countdown;  /* armed: allocations left before the failing one */
static atomic_int failed_one;  /* the failing allocation happened */

static int fail_now(void) {
  if (atomic_load_explicit(&countdown, memory_order_relaxed) <= 0) return 0;
  if (atomic_fetch_sub(&countdown, 1) != 1) return 0;
  atomic_store(&failed_one, 1);
  return 1;
}

void *__wrap_malloc(size_t n) { return fail_now() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t k, size_t n) { return fail_now() ? NULL : __real_calloc(k, n); }
void *__wrap_realloc(void *p, size_t n) { return fail_now() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return fail_now() ? NULL : __real_strdup(s); }

/* A worker process is not the process under test: it allocates freely. */
static void child_disarms(void) { atomic_store(&countdown, 0); }

static long armed_with;  /* N of the run in progress, for the abort report */
static const char *sweeping;

static void report_abort(int sig) {
  char msg[128];
  int len = snprintf(msg, sizeof msg, "aborted: kind %s, allocation %ld failed\n", sweeping, armed_with);
  if (write(2, msg, (size_t)len) < 0) _exit(2);
  signal(sig, SIG_DFL);
  raise(sig);
}

static int arm(lua_State *L) {
  (void)L;
  atomic_store(&failed_one, 0);
  atomic_store(&countdown, armed_with);
  return 0;
}

static int disarm(lua_State *L) {
  atomic_store(&countdown, 0);
  lua_pushboolean(L, atomic_load(&failed_one));
  return 1;
}

static const char SCRIPT[] =
    "local par = require 'parlua'\n"
    "arm()\n"
    "local ok, err = pcall(function()\n"
    "  if KIND == 'par.thread' then\n"
    "    local t = par.thread(function(x) return x + 1 end, 41)\n"
    "    t:start()\n"
    "    local r = t:result()\n"
    "    if r ~= 42 then error('a wrong result: ' .. tostring(r), 0) end\n"
    "    return\n"
    "  end\n"
    "  local p = par.pool{kind = KIND, workers = 2, init = function() end}\n"
    "  local called = false\n"
    "  local done, r = pcall(function()\n"
    "    local f = p:submit(function(x) return x + 1 end, 41)\n"
    "    f:add_done_callback(function() called = true end)\n"
    "    local r = f:result()\n"
    "    local m = p:map(function(x) return x * 2 end, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {chunksize = 1})\n"
    "    if #m ~= 12 or m[1] ~= 2 or m[12] ~= 24 then error('a wrong map', 0) end\n"
    "    return r\n"
    "  end)\n"
    "  p:shutdown()\n"
    "  if not done then error(r, 0) end\n"
    "  if not called then error('the done callback did not run', 0) end\n"
    "  if r ~= 42 then error('a wrong result: ' .. tostring(r), 0) end\n"
    "end)\n"
    "HIT = disarm()\n"
    "OUTCOME = ok and 'ok' or tostring(err)\n";

/* One run failing allocation n: 1 when that allocation happened. */
static int run_once(const char *kind, long n) {
  armed_with = n;
  parlua *rt = parlua_new(NULL);
  CHECK(rt != NULL);
  parlua_enter(rt);
  lua_State *L = parlua_state(rt);
  lua_register(L, "arm", arm);
  lua_register(L, "disarm", disarm);
  lua_pushstring(L, kind);
  lua_setglobal(L, "KIND");
  parlua_leave(rt);
  int rc = parlua_dostring(rt, SCRIPT, "=sweep");
  if (rc != LUA_OK) fprintf(stderr, "kind %s, allocation %ld: %s\n", kind, n, parlua_error(rt));
  CHECK_EQ_INT(rc, LUA_OK);
  parlua_enter(rt);
  lua_getglobal(L, "HIT");
  int hit = lua_toboolean(L, -1);
  lua_getglobal(L, "OUTCOME");
  const char *outcome = lua_tostring(L, -1);
  if (strcmp(outcome, "ok") != 0 && strstr(outcome, "not enough memory") == NULL)
    fprintf(stderr, "kind %s, allocation %ld failed: %s\n", kind, n, outcome);
  CHECK(strcmp(outcome, "ok") == 0 || strstr(outcome, "not enough memory") != NULL);
  CHECK(hit || strcmp(outcome, "ok") == 0);  /* nothing failed, so nothing may */
  lua_pop(L, 2);
  parlua_leave(rt);
  parlua_close(rt);
  return hit;
}

static void sweep(const char *kind) {
  sweeping = kind;
  signal(SIGABRT, report_abort);
  pthread_atfork(NULL, NULL, child_disarms);
  long n = 1;
  while (run_once(kind, n)) n++;
  printf("     %s: %ld allocations swept\n", kind, n - 1);
  CHECK(n > 2);  /* the path allocates: the sweep did fail some */
}

static void test_threads(void) { sweep("threads"); }
static void test_states(void) { sweep("states"); }
static void test_processes(void) { sweep("processes"); }
static void test_thread(void) { sweep("par.thread"); }

int main(void) {
  static const test_case tests[] = {
      {"out of memory at each allocation of a threads task", test_threads},
      {"out of memory at each allocation of a states task", test_states},
      {"out of memory at each allocation of a processes task", test_processes},
      {"out of memory at each allocation of a par.thread", test_thread},
      {NULL, NULL},
  };
  return run_tests(tests, 60);
}
