/* par.popen, par.run, par.check_output: Python's subprocess for Lua.
 *
 * A Popen is a full userdata holding the child (a pl_proc) and the state
 * of communicate(); its pipe ends are userdata of their own, file-like,
 * kept in the Popen's user values so that p.stdout is always one object.
 * Everything that can block -- starting, reading, writing, waiting,
 * communicate -- runs without the global lock (pl_unlock/pl_lock) and
 * through a pl_poller (core/wait.c), so a forced cancel or an interrupt ends
 * it and other threads run meanwhile.
 *
 * The pipe ends themselves, and how one serves one operation at a time,
 * are in lpipeend.c.
 *
 * Children whose Popen is collected while they still run go to the
 * state's reaper: reaped without blocking at every later popen, and handed
 * to a background thread when the runtime closes (a closer at
 * PL_CLOSE_SUBPROCESSES) or the state does.  Only our own pids are ever
 * waited for.
 *
 * Where we differ from Python, on purpose:
 *   - messages show an argv table joined by spaces, "Command 'sh -c exit
 *     1' returned ...", where Python shows the list's repr; e.cmd and p.args
 *     are the value given;
 *   - p.returncode polls (nil while the child runs), as Lua has no
 *     properties that go stale quietly;
 *   - pipe ends follow Lua's file conventions: read formats, and write
 *     returning fail, message, errno (EPIPE) rather than raising;
 *   - communicate(input) without a stdin pipe is an error, not ignored.
 * The program is looked up in this process's PATH (posix_spawnp), also
 * when opts.env replaces the environment.
 *
 * Lock order: a pipe end's mu, then a pl_proc's mu; neither is held while
 * taking the global lock or running Lua code.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bindings.h"
#include "core/clock.h"
#include "lpipeend.h"
#include "proc/child.h"
#include "proc/reaper.h"

static const char POPEN_MT[] = "parlua.Popen";
static const char REAPER_MT[] = "parlua.Reaper";
static const char REAPER_KEY = 0;  /* registry slot, keyed by its address */

/* User values of a Popen. */
enum { UV_STDIN = 1, UV_STDOUT, UV_STDERR, UV_ARGS, UV_INPUT, UV_OUT, UV_ERR, UV_COUNT = UV_ERR };

/* ============================================================== reaper */

static int reaper_gc(lua_State *L) {
  void **box = pl_box_get(L, 1, REAPER_MT);
  pl_reaper *r = *box;
  if (r == NULL) return 0;
  *box = NULL;
  pl_reaper_finish(r);
  return 0;
}

/* The reaper of L's state, made on first use. */
static pl_reaper *get_reaper(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &REAPER_KEY) == LUA_TUSERDATA) {
    pl_reaper *r = *(pl_reaper **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (r != NULL) return r;
  } else {
    lua_pop(L, 1);
  }
  parlua *rt = pl_runtime_of(L);
  if (rt == NULL) luaL_error(L, "parlua is not loaded in this state");
  pl_check_not_closed(L, POPEN_MT);  /* a child nobody would reap */
  void **box = pl_box_new(L, REAPER_MT, NULL);  /* first: an error leaves nothing behind */
  pl_reaper *r = pl_reaper_new(rt);
  if (r == NULL) luaL_error(L, "not enough memory");
  *box = r;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &REAPER_KEY);
  return r;
}

/* =============================================================== Popen */

typedef struct popen_ud {
  int started;         /* proc is initialised */
  pl_proc proc;
  pl_reaper *reaper;
  pl_reaper_watch watch;  /* the reaper's link to the child while we live */
  /* Guarded by the global lock: */
  int comm_busy;       /* a communicate() is running (in some thread) */
  int comm_started;
  int comm_done;       /* outputs are in UV_OUT / UV_ERR */
  pl_comm comm;
} popen_ud;

static popen_ud *check_popen(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, POPEN_MT);
}

/* [-0, +1] the command as messages show it: a string as it is, an argv
 * table joined by spaces. */
static void push_cmd_text(lua_State *L, int p) {
  if (lua_getiuservalue(L, p, UV_ARGS) != LUA_TTABLE) {
    luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
    return;
  }
  luaL_Buffer b;
  int t = lua_gettop(L);
  lua_Integer n = luaL_len(L, t);
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, ' ');
    lua_geti(L, t, i);
    luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  lua_remove(L, t);
}

static void set_field_from(lua_State *L, int obj, const char *name, int value) {
  lua_pushvalue(L, value);
  lua_setfield(L, obj, name);
}

/* Raise TimeoutExpired for the Popen at p; output/errout are stack
 * indices (0: none). */
static int raise_timeout(lua_State *L, int p, int timeout_arg, int output, int errout) {
  push_cmd_text(L, p);
  const char *cmd = lua_tostring(L, -1);
  const char *seconds = luaL_tolstring(L, timeout_arg, NULL);
  pl_error_push(L, PL_TIMEOUT_EXPIRED, "Command '%s' timed out after %s seconds", cmd, seconds);
  int e = lua_gettop(L);
  lua_getiuservalue(L, p, UV_ARGS);
  lua_setfield(L, e, "cmd");
  lua_pushvalue(L, timeout_arg);
  lua_setfield(L, e, "timeout");
  if (output != 0) {
    set_field_from(L, e, "output", output);
    set_field_from(L, e, "stdout", output);
  }
  if (errout != 0) set_field_from(L, e, "stderr", errout);
  return pl_error_throw(L);
}

/* "<Signals.SIGKILL: 9>", as Python prints a signal. */
static void push_signal_repr(lua_State *L, int sig) {
  const char *abbrev = sigabbrev_np(sig);
  if (abbrev != NULL) lua_pushfstring(L, "<Signals.SIG%s: %d>", abbrev, sig);
  else lua_pushfstring(L, "unknown signal %d", sig);
}

static int raise_called_process_error(lua_State *L, int p, int rc, int output, int errout) {
  push_cmd_text(L, p);
  const char *cmd = lua_tostring(L, -1);
  if (rc < 0) {
    push_signal_repr(L, -rc);
    pl_error_push(L, PL_CALLED_PROCESS_ERROR, "Command '%s' died with %s.", cmd, lua_tostring(L, -1));
  } else {
    pl_error_push(L, PL_CALLED_PROCESS_ERROR, "Command '%s' returned non-zero exit status %d.", cmd, rc);
  }
  int e = lua_gettop(L);
  lua_pushinteger(L, rc);
  lua_setfield(L, e, "returncode");
  lua_getiuservalue(L, p, UV_ARGS);
  lua_setfield(L, e, "cmd");
  if (output != 0) {
    set_field_from(L, e, "output", output);
    set_field_from(L, e, "stdout", output);
  }
  if (errout != 0) set_field_from(L, e, "stderr", errout);
  return pl_error_throw(L);
}

/* ---- starting ---- */

enum { MODE_POPEN, MODE_RUN, MODE_CHECK_OUTPUT };

static const char *const popen_opts[] = {"stdin", "stdout", "stderr", "cwd", "env", "shell",
                                         "new_session", "process_group", NULL};
static const char *const run_opts[] = {"input", "capture", "check", "timeout", NULL};
static const char *const mode_names[] = {"popen", "run", "check_output"};

static int in_list(const char *const *list, const char *k) {
  for (; *list != NULL; list++)
    if (strcmp(*list, k) == 0) return 1;
  return 0;
}

static void check_option_names(lua_State *L, int opts, int mode) {
  lua_pushnil(L);
  while (lua_next(L, opts) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, opts, lua_pushfstring(L, "option names must be strings, got %s", luaL_typename(L, -1)));
    const char *k = lua_tostring(L, -1);
    int ok = in_list(popen_opts, k) || (mode != MODE_POPEN && in_list(run_opts, k));
    if (mode == MODE_CHECK_OUTPUT && (!strcmp(k, "stdout") || !strcmp(k, "capture") || !strcmp(k, "check")))
      luaL_argerror(L, opts, lua_pushfstring(L, "option '%s' is not allowed: check_output always captures stdout and checks the status", k));
    if (!ok) luaL_argerror(L, opts, lua_pushfstring(L, "unknown option '%s' for %s", k, mode_names[mode]));
  }
}

/* Every option is in argument 2 of popen, run and check_output. */
static int opt_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const char *msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return luaL_argerror(L, 2, msg);
}

/* [-1, +0] A string or number at the top into argv table `t` at i. */
static void add_arg(lua_State *L, int cmd, int t, lua_Integer i, const char *what) {
  size_t len;
  int type = lua_type(L, -1);
  if (type != LUA_TSTRING && type != LUA_TNUMBER)
    luaL_argerror(L, cmd, lua_pushfstring(L, "%s must be a string, got %s", what, luaL_typename(L, -1)));
  const char *s = lua_tolstring(L, -1, &len);
  if (strlen(s) != len) luaL_argerror(L, cmd, lua_pushfstring(L, "%s contains a zero byte", what));
  lua_rawseti(L, t, i);
}

/* [-0, +1] the argv table to start, from argument `cmd`. */
static void build_argv(lua_State *L, int cmd, int shell) {
  int type = lua_type(L, cmd);
  if (type == LUA_TSTRING && !shell)
    luaL_argerror(L, cmd, "a command string needs opts.shell = true (or pass a table of arguments, which runs no shell)");
  if (type != LUA_TSTRING && type != LUA_TTABLE)
    luaL_typeerror(L, cmd, "table of arguments");
  lua_newtable(L);
  int t = lua_gettop(L);
  lua_Integer at = 0;
  if (shell) {
    lua_pushliteral(L, "/bin/sh");
    lua_rawseti(L, t, ++at);
    lua_pushliteral(L, "-c");
    lua_rawseti(L, t, ++at);
  }
  if (type == LUA_TSTRING) {
    lua_pushvalue(L, cmd);
    add_arg(L, cmd, t, ++at, "the command");
    return;
  }
  lua_Integer n = luaL_len(L, cmd);
  if (n < 1) luaL_argerror(L, cmd, "the argument table is empty");
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, cmd, i);
    char what[32];
    snprintf(what, sizeof what, "argv[%lld]", (long long)i);
    add_arg(L, cmd, t, ++at, what);
  }
}

/* [-0, +1] the environment as a table of "k=v" strings. */
static void build_env(lua_State *L, int env) {
  lua_newtable(L);
  int t = lua_gettop(L);
  lua_Integer at = 0;
  lua_pushnil(L);
  while (lua_next(L, env) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING)
      opt_error(L, "option 'env': names must be strings, got %s", luaL_typename(L, -2));
    size_t klen, vlen;
    const char *k = lua_tolstring(L, -2, &klen);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      opt_error(L, "option 'env': the value of '%s' must be a string, got %s", k, luaL_typename(L, -1));
    const char *v = lua_tolstring(L, -1, &vlen);  /* a copy on the stack: safe to convert */
    if (klen == 0 || strchr(k, '=') != NULL || strlen(k) != klen)
      opt_error(L, "option 'env': invalid variable name '%s'", k);
    if (strlen(v) != vlen) opt_error(L, "option 'env': the value of '%s' contains a zero byte", k);
    lua_pushfstring(L, "%s=%s", k, v);
    lua_rawseti(L, t, ++at);
    lua_pop(L, 1);
  }
}

/* [-0, +1] a NULL-terminated char* array over the strings of table t
 * (which must stay on the stack while it is used). */
static char **string_array(lua_State *L, int t) {
  lua_Integer n = luaL_len(L, t);
  char **v = lua_newuserdatauv(L, sizeof *v * (size_t)(n + 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, t, i);
    v[i - 1] = (char *)lua_tostring(L, -1);  /* anchored by t */
    lua_pop(L, 1);
  }
  v[n] = NULL;
  return v;
}

static const char *const stream_names[] = {"stdin", "stdout", "stderr"};

/* One of opts.stdin/stdout/stderr into io (and the pipe end it names). */
static void get_stream(lua_State *L, int opts, int i, int force_pipe, pl_io *io, pl_pipe_end **lent) {
  const char *name = stream_names[i];
  io->how = PL_IO_INHERIT;
  io->fd = -1;
  *lent = NULL;
  if (force_pipe) {
    io->how = PL_IO_PIPE;
    return;
  }
  if (opts == 0) return;
  int type = lua_getfield(L, opts, name);
  if (type == LUA_TNIL) {
    /* inherit */
  } else if (type == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    if (strcmp(s, "pipe") == 0) io->how = PL_IO_PIPE;
    else if (strcmp(s, "devnull") == 0) io->how = PL_IO_DEVNULL;
    else if (strcmp(s, "stdout") == 0 && i == 2) io->how = PL_IO_STDOUT;
    else if (strcmp(s, "stdout") == 0)
      opt_error(L, "option '%s': \"stdout\" is only for stderr", name);
    else
      opt_error(L, "option '%s': expected \"pipe\", \"devnull\"%s, a pipe end, a file or a file descriptor, got \"%s\"",
                 name, i == 2 ? ", \"stdout\"" : "", s);
  } else if (type == LUA_TNUMBER) {
    lua_Integer fd = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
    if (fd < 0 || fd > INT_MAX) opt_error(L, "option '%s': a file descriptor must be a non-negative integer", name);
    if (fcntl((int)fd, F_GETFD) < 0) opt_error(L, "option '%s': bad file descriptor %d", name, (int)fd);
    io->how = PL_IO_FD;
    io->fd = (int)fd;
  } else if (type == LUA_TUSERDATA && pl_pipe_end_test(L, -1) != NULL) {
    pl_pipe_end *pe = lua_touserdata(L, -1);
    if (i == 0 && pe->writable)
      opt_error(L, "option 'stdin': needs a pipe end to read from (such as another process's stdout), got a write end");
    if (i != 0 && !pe->writable)
      opt_error(L, "option '%s': needs a pipe end to write to (a process's stdin), got a read end", name);
    io->how = PL_IO_FD;
    *lent = pe;
  } else if (type == LUA_TUSERDATA && luaL_testudata(L, -1, LUA_FILEHANDLE) != NULL) {
    luaL_Stream *s = lua_touserdata(L, -1);
    if (s->closef == NULL) opt_error(L, "option '%s': attempt to use a closed file", name);
    fflush(s->f);  /* what Lua pl_pipe_end_buffered goes before what the child writes */
    io->how = PL_IO_FD;
    io->fd = fileno(s->f);
  } else {
    opt_error(L, "option '%s': expected \"pipe\", \"devnull\", a pipe end, a file or a file descriptor, got %s",
               name, luaL_typename(L, -1));
  }
  lua_pop(L, 1);
}

/* opts.new_session and opts.process_group into req->group (and pgid). */
static void get_group(lua_State *L, int opts, pl_spawn_req *req) {
  req->group = PL_GROUP_INHERIT;
  if (opts == 0) return;
  int t = lua_getfield(L, opts, "new_session");
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    opt_error(L, "option 'new_session' must be a boolean, got %s", luaL_typename(L, -1));
  int session = lua_toboolean(L, -1);
  t = lua_getfield(L, opts, "process_group");
  if (t != LUA_TNIL) {
    lua_Integer g = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
    if (g < 0 || g > INT_MAX)
      opt_error(L, "option 'process_group' must be a non-negative integer (0: a new group led by the child), got %s",
                lua_type(L, -1) == LUA_TNUMBER ? luaL_tolstring(L, -1, NULL) : luaL_typename(L, -1));
    if (session)
      opt_error(L, "options 'new_session' and 'process_group' cannot both be used (a new session is a new process group)");
    req->group = g == 0 ? PL_GROUP_NEW : PL_GROUP_JOIN;
    req->pgid = (pid_t)g;
  } else if (session) {
    req->group = PL_GROUP_SESSION;
  }
  lua_pop(L, 2);
}

static int push_spawn_error(lua_State *L, int err, const char *program, const pl_spawn_req *req) {
  const char *cwd = req->cwd;
  int cwd_err = cwd != NULL ? pl_spawn_check_cwd(cwd) : 0;
  const char *file = program;
  if (cwd_err != 0) {
    err = cwd_err;
    file = cwd;
    pl_error_push(L, PL_OS_ERROR, "cannot change directory to '%s': %s", cwd, strerror(err));
  } else if (req->group == PL_GROUP_JOIN && err == EPERM) {
    /* setpgid's answer for a group that is not in our session (or none) */
    pl_error_push(L, PL_OS_ERROR, "cannot run '%s' in process group %d: %s (no such group in this session)",
                  program, (int)req->pgid, strerror(err));
  } else {
    pl_error_push(L, PL_OS_ERROR, "cannot run '%s': %s", program, strerror(err));
  }
  lua_pushinteger(L, err);
  lua_setfield(L, -2, "errno");
  lua_pushstring(L, file);
  lua_setfield(L, -2, "filename");
  return pl_error_throw(L);
}

/* [-0, +1] Start the child of argument `cmd` with options at `opts` (0:
 * none); `pipes` forces streams to "pipe" (bit i for stream i). */
static popen_ud *spawn_popen(lua_State *L, int cmd, int opts, int mode, int pipes) {
  int base = lua_gettop(L);
  luaL_checkstack(L, 30, "popen");
  int shell = 0;
  const char *cwd = NULL;
  if (opts != 0) {
    check_option_names(L, opts, mode);
    int t = lua_getfield(L, opts, "shell");
    if (t != LUA_TNIL && t != LUA_TBOOLEAN) opt_error(L, "option 'shell' must be a boolean");
    shell = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  pl_reaper *r = get_reaper(L);
  pl_reaper_sweep(r);

  build_argv(L, cmd, shell);
  int argv_t = lua_gettop(L);
  char **argv = string_array(L, argv_t);
  char **envp = NULL;
  pl_spawn_req req;
  memset(&req, 0, sizeof req);
  pl_pipe_end *lent[3];
  if (opts != 0) {
    int t = lua_getfield(L, opts, "cwd");
    if (t != LUA_TNIL && t != LUA_TSTRING) opt_error(L, "option 'cwd' must be a string, got %s", luaL_typename(L, -1));
    cwd = lua_tostring(L, -1);  /* anchored: stays on the stack */
    if (lua_getfield(L, opts, "env") != LUA_TNIL) {
      if (!lua_istable(L, -1)) opt_error(L, "option 'env' must be a table, got %s", luaL_typename(L, -1));
      build_env(L, lua_gettop(L));
      envp = string_array(L, lua_gettop(L));
    }
  }
  get_group(L, opts, &req);
  for (int i = 0; i < 3; i++) get_stream(L, opts, i, (pipes >> i) & 1, &req.io[i], &lent[i]);

  /* Everything that can fail with a Lua error is made before the child
   * exists, so nothing can leak after it. */
  popen_ud *p = lua_newuserdatauv(L, sizeof *p, UV_COUNT);
  memset(p, 0, sizeof *p);
  for (int i = 0; i < 3; i++) p->comm.fd[i] = -1;
  luaL_setmetatable(L, POPEN_MT);
  pl_adopted_touch(L);
  int pidx = lua_gettop(L);
  pl_pipe_end *mine[3] = {NULL, NULL, NULL};
  for (int i = 0; i < 3; i++) {
    if (req.io[i].how != PL_IO_PIPE) continue;
    mine[i] = pl_pipe_end_new(L, i == 0);
    lua_setiuservalue(L, pidx, UV_STDIN + i);
  }
  lua_pushvalue(L, cmd);
  lua_setiuservalue(L, pidx, UV_ARGS);

  /* Pipe ends given as streams are held (busy) while the child starts, so
   * no other thread closes them under us; one end may serve two streams. */
  pl_pipe_end *held[3] = {NULL, NULL, NULL};
  for (int i = 0; i < 3; i++) {
    if (lent[i] == NULL) continue;
    int again = 0;
    for (int j = 0; j < i; j++) again |= lent[j] == lent[i];
    if (!again) {
      int why = pl_pipe_end_lend(lent[i]);
      if (why != 0) {
        for (int j = 0; j < i; j++)
          if (held[j] != NULL) pl_pipe_end_release(held[j], 0);
        opt_error(L, "option '%s': %s", stream_names[i],
                   why == 1 ? "attempt to use a closed file" : "the pipe end is in use by another thread");
      }
      held[i] = lent[i];
    }
    req.io[i].fd = lent[i]->fd;
  }
  req.argv = argv;
  req.envp = envp;
  req.cwd = cwd;
  /* A file or descriptor number is duplicated while we hold the lock: once
   * we let it go, another thread may close the Lua file it came from. */
  int own[3] = {-1, -1, -1};
  int err = 0;
  for (int i = 0; i < 3 && err == 0; i++) {
    if (req.io[i].how != PL_IO_FD || lent[i] != NULL) continue;
    own[i] = fcntl(req.io[i].fd, F_DUPFD_CLOEXEC, 3);
    if (own[i] < 0) err = errno;
    req.io[i].fd = own[i];
  }
  pl_spawn_res res;
  pl_tstate *ts = pl_unlock(L, PL_GIL_POPEN);
  if (err == 0) err = pl_spawn(&req, &res);
  pl_lock(L, ts);
  for (int i = 0; i < 3; i++) {
    if (held[i] != NULL) pl_pipe_end_release(held[i], 0);
    if (own[i] >= 0) close(own[i]);
  }
  if (err != 0) push_spawn_error(L, err, argv[0], &req);
  pl_proc_init(&p->proc, res.pid, res.pidfd);
  p->proc.leads_group = req.group == PL_GROUP_SESSION || req.group == PL_GROUP_NEW;
  p->started = 1;
  p->reaper = r;
  pl_reaper_incref(r);
  pl_reaper_watch_add(r, &p->watch, &p->proc);
  for (int i = 0; i < 3; i++) {
    if (mine[i] == NULL) continue;
    mine[i]->fd = res.fds[i];
    mine[i]->nonblock = 1;
    mine[i]->closed = 0;
  }
  lua_copy(L, pidx, base + 1);
  lua_settop(L, base + 1);
  return p;
}

/* ---- methods ---- */

static popen_ud *check_live(lua_State *L) {
  popen_ud *p = check_popen(L, 1);
  if (!p->started) luaL_error(L, "attempt to use a collected process");
  return p;
}

static int push_returncode(lua_State *L, popen_ud *p) {
  if (pl_proc_poll(&p->proc)) lua_pushinteger(L, pl_proc_returncode(&p->proc));
  else lua_pushnil(L);
  return 1;
}

/* Wait for the child without the lock: PL_OK or PL_ETIMEOUT;
 * raises Cancelled.  Not `cancellable`: reaping a child just killed. */
static int wait_child(lua_State *L, popen_ud *p, int64_t deadline, int cancellable) {
  if (pl_proc_poll(&p->proc)) return PL_OK;
  pl_tstate *ts = pl_unlock(L, PL_GIL_POPEN);
  pl_poller w;
  pl_poller_begin(&w, cancellable ? ts : NULL, 0);
  int rc = pl_proc_wait(&p->proc, &w, deadline);
  pl_poller_end(&w);
  pl_lock(L, ts);
  if (rc == PL_ECANCELLED) {
    pl_check_cancel(L, ts);
    return luaL_error(L, "wait cancelled");
  }
  return rc;
}

static int popen_poll(lua_State *L) {
  return push_returncode(L, check_live(L));
}

static int popen_wait(lua_State *L) {
  popen_ud *p = check_live(L);
  double timeout = pl_opt_timeout(L, 2);
  if (wait_child(L, p, pl_deadline_after(timeout), 1) == PL_ETIMEOUT)
    return raise_timeout(L, 1, 2, 0, 0);
  lua_pushinteger(L, pl_proc_returncode(&p->proc));
  return 1;
}

/* A signal number, or a name with or without "SIG". */
static int check_signal(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *name = lua_tostring(L, idx);
    const char *bare = strncmp(name, "SIG", 3) == 0 ? name + 3 : name;
    for (int sig = 1; sig < NSIG; sig++) {
      const char *abbrev = sigabbrev_np(sig);
      if (abbrev != NULL && strcmp(abbrev, bare) == 0) return sig;
    }
    return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", name));
  }
  lua_Integer sig = luaL_checkinteger(L, idx);
  luaL_argcheck(L, sig >= 0 && sig < NSIG, idx, "not a signal number");
  return (int)sig;
}

/* As Python: a child that has already ended (and is reaped now) is left
 * alone, since its pid may belong to another process soon. */
static int send_signal(lua_State *L, popen_ud *p, int sig) {
  if (pl_proc_poll(&p->proc)) return 0;
  int err = pl_proc_signal(&p->proc, sig);
  if (err != 0) return pl_error_raise_os(L, err, "cannot send the signal");
  return 0;
}

/* p:send_signal(sig [, {group = true}]): the group form is os.killpg's,
 * for a child that leads its group; it reaches the group also after the
 * child has ended (see child.c). */
static int popen_send_signal(lua_State *L) {
  popen_ud *p = check_live(L);
  int sig = check_signal(L, 2);
  if (lua_isnoneornil(L, 3)) return send_signal(L, p, sig);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 3) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "group") != 0)
      return luaL_argerror(L, 3, lua_pushfstring(L, "unknown option '%s' for send_signal", luaL_tolstring(L, -1, NULL)));
  }
  int t = lua_getfield(L, 3, "group");
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    return luaL_argerror(L, 3, lua_pushfstring(L, "option 'group' must be a boolean, got %s", luaL_typename(L, -1)));
  if (!lua_toboolean(L, -1)) return send_signal(L, p, sig);
  if (!p->proc.leads_group)
    return luaL_argerror(L, 3, "the process does not lead its own process group (start it with new_session = true or process_group = 0)");
  int err = pl_proc_signal_group(&p->proc, sig);
  if (err != 0) return pl_error_raise_os(L, err, "cannot send the signal");
  return 0;
}

static int popen_terminate(lua_State *L) {
  return send_signal(L, check_live(L), SIGTERM);
}

static int popen_kill(lua_State *L) {
  return send_signal(L, check_live(L), SIGKILL);
}

/* p:communicate([input] [, timeout]) -> stdout, stderr.  Resumable after
 * TimeoutExpired: what was read so far is kept (and put in the error). */
static int popen_communicate(lua_State *L) {
  popen_ud *p = check_live(L);
  size_t in_len = 0;
  const char *in = lua_isnoneornil(L, 2) ? NULL : luaL_checklstring(L, 2, &in_len);
  double timeout = pl_opt_timeout(L, 3);
  lua_settop(L, 3);
  pl_pipe_end *pe[3];
  for (int i = 0; i < 3; i++) {
    lua_getiuservalue(L, 1, UV_STDIN + i);  /* 4, 5, 6: anchored while we work */
    pe[i] = pl_pipe_end_test(L, -1);
  }
  if (in_len > 0 && pe[0] == NULL)
    return luaL_error(L, "cannot send input: stdin is not a pipe (start the process with stdin = \"pipe\")");
  if (in_len > 0 && p->comm_started) return luaL_error(L, "cannot send input after starting communication");
  if (in_len > 0) {
    pthread_mutex_lock(&pe[0]->mu);
    int closed = pe[0]->closed;
    pthread_mutex_unlock(&pe[0]->mu);
    if (closed) return luaL_error(L, "cannot send input: stdin was closed");
  }
  if (p->comm_done) {
    lua_getiuservalue(L, 1, UV_OUT);
    lua_getiuservalue(L, 1, UV_ERR);
    return 2;
  }
  if (p->comm_busy) return luaL_error(L, "communicate is already running in another thread");
  if (!p->comm_started) {
    p->comm_started = 1;
    p->comm.input = in;
    p->comm.input_len = in_len;
    p->comm.input_off = 0;
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, 1, UV_INPUT);  /* keeps `in` alive across calls */
  }
  int64_t deadline = pl_deadline_after(timeout);
  p->comm_busy = 1;

  pl_tstate *ts = pl_unlock(L, PL_GIL_POPEN);
  int rc = PL_OK;
  int taken[3] = {0, 0, 0};
  for (int i = 0; i < 3 && rc == PL_OK; i++) {
    if (pe[i] == NULL) continue;
    int a = pl_pipe_end_acquire(pe[i], ts);
    if (a == PL_ECANCELLED) rc = a;
    else taken[i] = a == PL_OK;  /* a closed end is simply done */
  }
  if (rc == PL_OK) {
    for (int i = 0; i < 3; i++) p->comm.fd[i] = taken[i] ? pe[i]->fd : -1;
    p->comm.in_nonblock = taken[0] && pe[0]->nonblock;
    /* What a reader left pl_pipe_end_buffered comes first. */
    for (int i = 1; i < 3 && rc == PL_OK; i++) {
      if (!taken[i] || pl_pipe_end_buffered(pe[i]) == 0) continue;
      if (pl_comm_reserve(&p->comm, i, pl_pipe_end_buffered(pe[i])) != 0) {
        rc = -ENOMEM;
        break;
      }
      memcpy(p->comm.out[i].data + p->comm.out[i].len, pl_pipe_end_bufptr(pe[i]), pl_pipe_end_buffered(pe[i]));
      p->comm.out[i].len += pl_pipe_end_buffered(pe[i]);
      pe[i]->start = pe[i]->buf.len = 0;
    }
  }
  if (rc == PL_OK) {
    pl_poller w;
    pl_poller_begin(&w, ts, p->comm.fd[0] >= 0);
    rc = pl_communicate(&p->comm, &w, deadline);
    if (rc == 0) rc = pl_proc_wait(&p->proc, &w, deadline);
    pl_poller_end(&w);
  }
  for (int i = 0; i < 3; i++) {
    if (taken[i]) pl_pipe_end_release(pe[i], p->comm.fd[i] < 0);
    p->comm.fd[i] = -1;
  }
  pl_lock(L, ts);
  p->comm_busy = 0;

  if (rc == PL_ECANCELLED) {
    pl_check_cancel(L, ts);
    return luaL_error(L, "communicate cancelled");
  }
  if (rc != 0 && rc != PL_ETIMEOUT) return pl_error_raise_os(L, -rc, "communicate");
  for (int i = 1; i < 3; i++) {  /* 7, 8 */
    if (pe[i] != NULL) lua_pushlstring(L, p->comm.out[i].data != NULL ? p->comm.out[i].data : "", p->comm.out[i].len);
    else lua_pushnil(L);
  }
  if (rc == PL_ETIMEOUT) return raise_timeout(L, 1, 3, pe[1] ? 7 : 0, pe[2] ? 8 : 0);
  lua_pushvalue(L, 7);
  lua_setiuservalue(L, 1, UV_OUT);
  lua_pushvalue(L, 8);
  lua_setiuservalue(L, 1, UV_ERR);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, UV_INPUT);
  p->comm.input = NULL;
  pl_comm_free_outputs(&p->comm);
  p->comm_done = 1;
  return 2;
}

static void close_pipes(lua_State *L, int pidx) {
  for (int i = 0; i < 3; i++) {
    lua_getiuservalue(L, pidx, UV_STDIN + i);
    pl_pipe_end *pe = pl_pipe_end_test(L, -1);
    if (pe != NULL) pl_pipe_end_close(pe);
    lua_pop(L, 1);
  }
}

/* Fields first (pid, returncode, stdin, stdout, stderr, args), then methods. */
static int popen_index(lua_State *L) {
  popen_ud *p = check_popen(L, 1);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  if (strcmp(k, "pid") == 0) {
    lua_pushinteger(L, p->proc.pid);
  } else if (strcmp(k, "returncode") == 0) {
    if (!p->started) lua_pushnil(L);
    else push_returncode(L, p);
  } else if (strcmp(k, "stdin") == 0 || strcmp(k, "stdout") == 0 || strcmp(k, "stderr") == 0) {
    lua_getiuservalue(L, 1, UV_STDIN + (k[3] == 'i' ? 0 : k[3] == 'o' ? 1 : 2));
  } else if (strcmp(k, "args") == 0) {
    lua_getiuservalue(L, 1, UV_ARGS);
  } else {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
  }
  return 1;
}

/* `local p <close> = par.popen(...)`: close the pipes, wait for the end
 * (as Python's `with Popen(...)`). */
static int popen_close(lua_State *L) {
  popen_ud *p = check_popen(L, 1);
  if (!p->started) return 0;
  close_pipes(L, 1);
  wait_child(L, p, INT64_MAX, 1);
  return 0;
}

/* Never blocks: a child still running goes to the reaper. */
static int popen_gc(lua_State *L) {
  popen_ud *p = check_popen(L, 1);
  if (!p->started) return 0;
  p->started = 0;
  pl_reaper_watch_remove(p->reaper, &p->watch);
  if (!pl_proc_poll(&p->proc)) pl_reaper_add(p->reaper, (pl_orphan){p->proc.pid, p->proc.leads_group});
  pl_proc_destroy(&p->proc);
  pl_comm_free_outputs(&p->comm);
  pl_reaper_unref(p->reaper);
  p->reaper = NULL;
  return 0;
}

static int popen_tostring(lua_State *L) {
  popen_ud *p = check_popen(L, 1);
  if (!p->started) return lua_pushliteral(L, "Popen (collected)"), 1;
  if (pl_proc_poll(&p->proc))
    lua_pushfstring(L, "Popen(pid %d, returncode %d)", (int)p->proc.pid, pl_proc_returncode(&p->proc));
  else
    lua_pushfstring(L, "Popen(pid %d, running)", (int)p->proc.pid);
  return 1;
}

/* ---- the module functions ---- */

static int sp_popen(lua_State *L) {
  lua_settop(L, 2);
  int opts = 0;
  if (!lua_isnil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    opts = 2;
  }
  spawn_popen(L, 1, opts, MODE_POPEN, 0);
  return 1;
}

/* par.run and par.check_output: Popen + communicate, killing the child
 * when communicate fails (timeout, cancel), as Python's run does -- with
 * its whole group when it leads one. */
static int run_impl(lua_State *L, int mode) {
  lua_settop(L, 2);
  int opts = 0;
  if (!lua_isnil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    opts = 2;
    check_option_names(L, opts, mode);
    lua_getfield(L, opts, "input");    /* 3 */
    lua_getfield(L, opts, "capture");  /* 4 */
    lua_getfield(L, opts, "check");    /* 5 */
    lua_getfield(L, opts, "timeout");  /* 6 */
  } else {
    lua_settop(L, 6);
  }
  if (!lua_isnil(L, 3) && lua_type(L, 3) != LUA_TSTRING)
    luaL_argerror(L, 2, lua_pushfstring(L, "option 'input' must be a string, got %s", luaL_typename(L, 3)));
  for (int i = 4; i <= 5; i++)
    if (!lua_isnil(L, i) && !lua_isboolean(L, i))
      luaL_argerror(L, 2, lua_pushfstring(L, "option '%s' must be a boolean", i == 4 ? "capture" : "check"));
  if (!lua_isnil(L, 6)) {
    int isnum;
    double t = lua_tonumberx(L, 6, &isnum);
    if (!isnum || !(t >= 0)) luaL_argerror(L, 2, "option 'timeout' must be a non-negative number");
  }
  int capture = lua_toboolean(L, 4);
  int check = lua_toboolean(L, 5) || mode == MODE_CHECK_OUTPUT;
  int pipes = 0;
  if (!lua_isnil(L, 3)) {
    if (lua_getfield(L, opts, "stdin") != LUA_TNIL)
      luaL_argerror(L, 2, "options 'input' and 'stdin' cannot both be used");
    lua_pop(L, 1);
    pipes |= 1;
  }
  if (capture) {
    int given = lua_getfield(L, opts, "stdout") != LUA_TNIL;
    given |= lua_getfield(L, opts, "stderr") != LUA_TNIL;
    lua_pop(L, 2);
    if (given) luaL_argerror(L, 2, "option 'capture' cannot be used with 'stdout' or 'stderr'");
    pipes |= 6;
  }
  if (mode == MODE_CHECK_OUTPUT) pipes |= 2;
  popen_ud *p = spawn_popen(L, 1, opts, mode, pipes);
  int pidx = lua_gettop(L);
  lua_pushcfunction(L, popen_communicate);
  lua_pushvalue(L, pidx);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 6);
  if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
    (void)pl_proc_stop(&p->proc, SIGKILL);  /* a failure to signal must not hide the error */
    wait_child(L, p, INT64_MAX, 0);
    close_pipes(L, pidx);
    return pl_error_throw(L);
  }
  int out = pidx + 1, err = pidx + 2;
  int rc = pl_proc_returncode(&p->proc);
  if (check && rc != 0) return raise_called_process_error(L, pidx, rc, out, err);
  if (mode == MODE_CHECK_OUTPUT) {
    lua_pushvalue(L, out);
    return 1;
  }
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "args");
  lua_pushinteger(L, rc);
  lua_setfield(L, -2, "returncode");
  lua_pushvalue(L, out);
  lua_setfield(L, -2, "stdout");
  lua_pushvalue(L, err);
  lua_setfield(L, -2, "stderr");
  return 1;
}

static int sp_run(lua_State *L) { return run_impl(L, MODE_RUN); }
static int sp_check_output(lua_State *L) { return run_impl(L, MODE_CHECK_OUTPUT); }

void pl_open_subprocess(lua_State *L) {
  static const luaL_Reg popen_methods[] = {
      {"poll", popen_poll},         {"wait", popen_wait},
      {"communicate", popen_communicate},
      {"send_signal", popen_send_signal},
      {"terminate", popen_terminate}, {"kill", popen_kill},
      {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"popen", sp_popen}, {"run", sp_run}, {"check_output", sp_check_output}, {NULL, NULL}};
  pl_open_pipe_end(L);
  pl_new_class(L, POPEN_MT, popen_methods, popen_index, popen_gc, popen_close, popen_tostring);
  luaL_newmetatable(L, REAPER_MT);
  lua_pushcfunction(L, reaper_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
