/* par.popen, par.run, par.check_output: Python's subprocess for Lua.
 *
 * A Popen is a full userdata holding the child (a pl_proc) and the state
 * of communicate(); its pipe ends are userdata of their own, file-like,
 * kept in the Popen's user values so that p.stdout is always one object.
 * Everything that can block -- starting, reading, writing, waiting,
 * communicate -- runs without the global lock (pl_unlock/pl_lock) and
 * through a pl_waiter (spawn.c), so a forced cancel or an interrupt ends
 * it and other threads run meanwhile.
 *
 * A pipe end serves one operation at a time: `busy`, under its mutex, is
 * taken without the global lock through an interruptible pl_wait, so a
 * reader blocked on an empty pipe never holds up a thread that wants the
 * lock, and close() of a busy end leaves the descriptor for the busy thread
 * to close (closing it under a blocked poll could hand its number to an
 * unrelated file).  The read buffer belongs to whoever holds `busy`.
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
#include "clock.h"
#include "spawn.h"

static const char POPEN_MT[] = "parlua.Popen";
static const char PIPE_MT[] = "parlua.PipeEnd";
static const char REAPER_MT[] = "parlua.Reaper";
static const char REAPER_KEY = 0;  /* registry slot, keyed by its address */

/* After pools (whose tasks may still be using children), before the state
 * goes. */
enum { PL_CLOSE_SUBPROCESSES = PL_CLOSE_POOLS + 1 };

/* User values of a Popen. */
enum { UV_STDIN = 1, UV_STDOUT, UV_STDERR, UV_ARGS, UV_INPUT, UV_OUT, UV_ERR, UV_COUNT = UV_ERR };

#define READ_CHUNK 65536
#define SMALL_RESULT 8192  /* results up to this size are copied on the C stack */
#define MAXNUMLEN 200      /* as liolib.c */

/* ============================================================ pipe ends */

typedef struct pipe_end {
  pthread_mutex_t mu;  /* guards fd, busy, closed */
  pthread_cond_t cv;   /* broadcast when busy ends */
  int fd;              /* -1 once closed */
  int writable;        /* the child's stdin (we write); else we read */
  int nonblock;        /* O_NONBLOCK is set (cleared once lent to a child) */
  int busy;            /* an operation owns fd and the buffer */
  int closed;          /* close() was called */
  /* Owned by the busy holder: */
  int eof;
  pl_bytes buf;        /* buffered input is buf.data[start, buf.len) */
  size_t start;
} pipe_end;

static pipe_end *new_pipe_end(lua_State *L, int writable) {
  pipe_end *pe = lua_newuserdatauv(L, sizeof *pe, 0);
  memset(pe, 0, sizeof *pe);
  pthread_mutex_init(&pe->mu, NULL);
  pl_cond_init(&pe->cv);
  pe->fd = -1;
  pe->closed = 1;      /* until a child gives it a descriptor */
  pe->writable = writable;
  luaL_setmetatable(L, PIPE_MT);
  pl_adopted_touch(L);
  return pe;
}

static pipe_end *check_pipe(lua_State *L, int idx) {
  pipe_end *pe = luaL_checkudata(L, idx, PIPE_MT);
  pthread_mutex_lock(&pe->mu);
  int closed = pe->closed;
  pthread_mutex_unlock(&pe->mu);
  if (closed) luaL_error(L, "attempt to use a closed file");
  return pe;
}

/* Take the end for one operation; without the global lock.  PL_WAIT_WOKEN
 * (taken), PL_WAIT_CANCELLED, or -1 when it was closed meanwhile. */
static int pipe_acquire(pipe_end *pe, pl_tstate *ts) {
  int rc = PL_WAIT_WOKEN;
  pl_wait_begin(ts, &pe->mu, &pe->cv);
  pthread_mutex_lock(&pe->mu);
  while (pe->busy && !pe->closed && rc != PL_WAIT_CANCELLED) rc = pl_wait(ts, &pe->mu, &pe->cv, INT64_MAX);
  if (rc != PL_WAIT_CANCELLED) {
    if (pe->closed) rc = -1;
    else {
      pe->busy = 1;
      rc = PL_WAIT_WOKEN;
    }
  }
  pthread_mutex_unlock(&pe->mu);
  pl_wait_end(ts);
  return rc;
}

/* `fd_gone`: the operation closed the descriptor itself. */
static void pipe_release(pipe_end *pe, int fd_gone) {
  pthread_mutex_lock(&pe->mu);
  pe->busy = 0;
  if (fd_gone) {
    pe->fd = -1;
    pe->closed = 1;
  } else if (pe->closed && pe->fd >= 0) {  /* close() came while we were busy */
    close(pe->fd);
    pe->fd = -1;
  }
  pthread_cond_broadcast(&pe->cv);
  pthread_mutex_unlock(&pe->mu);
}

/* Idempotent, never blocks. */
static void pipe_close(pipe_end *pe) {
  pthread_mutex_lock(&pe->mu);
  if (!pe->closed) {
    pe->closed = 1;
    if (!pe->busy && pe->fd >= 0) {
      close(pe->fd);
      pe->fd = -1;
    }
    pthread_cond_broadcast(&pe->cv);
  }
  pthread_mutex_unlock(&pe->mu);
}

static size_t buffered(const pipe_end *pe) { return pe->buf.len - pe->start; }
static const char *bufptr(const pipe_end *pe) { return pe->buf.data + pe->start; }

/* Read more into the buffer (offsets from `start` stay valid).  0 (data
 * or EOF came), PL_POLL_CANCELLED, or -errno. */
static int fill(pipe_end *pe, pl_waiter *w) {
  if (pe->eof) return 0;
  if (pe->start > 0 && pe->buf.cap - pe->buf.len < READ_CHUNK) {
    memmove(pe->buf.data, bufptr(pe), buffered(pe));
    pe->buf.len -= pe->start;
    pe->start = 0;
  }
  if (pl_bytes_reserve(&pe->buf, READ_CHUNK) != 0) return -ENOMEM;
  /* A blocking descriptor (lent to a child) is polled first, so the wait
   * stays interruptible. */
  int need_poll = !pe->nonblock;
  for (;;) {
    if (need_poll) {
      struct pollfd pf = {pe->fd, POLLIN, 0};
      int r = pl_waiter_poll(w, &pf, 1, INT64_MAX);
      if (r < 0) return r;
    }
    ssize_t n = read(pe->fd, pe->buf.data + pe->buf.len, pe->buf.cap - pe->buf.len);
    if (n > 0) {
      pe->buf.len += (size_t)n;
      return 0;
    }
    if (n == 0) {
      pe->eof = 1;
      return 0;
    }
    if (errno == EAGAIN) need_poll = 1;
    else if (errno != EINTR) return -errno;
  }
}

/* Write all of data.  0, PL_POLL_CANCELLED, or -errno (EPIPE included). */
static int write_all(pipe_end *pe, pl_waiter *w, const char *data, size_t len) {
  int need_poll = !pe->nonblock;
  while (len > 0) {
    if (need_poll) {
      struct pollfd pf = {pe->fd, POLLOUT, 0};
      int r = pl_waiter_poll(w, &pf, 1, INT64_MAX);
      if (r < 0) return r;
    }
    size_t chunk = pe->nonblock || len <= PIPE_BUF ? len : PIPE_BUF;
    ssize_t n = write(pe->fd, data, chunk);
    if (n >= 0) {
      data += n;
      len -= (size_t)n;
      need_poll = !pe->nonblock || (size_t)n < chunk;
    } else if (errno == EAGAIN) {
      need_poll = 1;
    } else if (errno == EPIPE) {
      pl_waiter_note_epipe(w);
      return -EPIPE;
    } else if (errno != EINTR) {
      return -errno;
    }
  }
  return 0;
}

/* ---- reading with Lua's formats ---- */

enum { F_COUNT, F_LINE, F_LINE_NL, F_ALL, F_NUMBER };

typedef struct readfmt {
  int kind;
  size_t count;            /* F_COUNT */
  size_t off, len;         /* the result, from the buffer's start */
  const char *at;          /* the result once copied out */
  char num[MAXNUMLEN + 1]; /* F_NUMBER: the numeral read */
} readfmt;

/* liolib.c's read_number, over the buffer: c is the look-ahead at pos. */
typedef struct rn {
  pipe_end *pe;
  pl_waiter *w;
  size_t pos;
  int c, n, err;
  char *buff;
} rn;

static int rn_peek(rn *r) {
  while (r->pos >= buffered(r->pe)) {
    if (r->pe->eof || r->err) return EOF;
    r->err = fill(r->pe, r->w);
  }
  return (unsigned char)bufptr(r->pe)[r->pos];
}

static int rn_next(rn *r) {
  if (r->n >= MAXNUMLEN) {  /* numeral too long */
    r->buff[0] = '\0';
    return 0;
  }
  r->buff[r->n++] = (char)r->c;
  r->pos++;
  r->c = rn_peek(r);
  return 1;
}

static int rn_test2(rn *r, const char *set) {
  return (r->c == set[0] || r->c == set[1]) && rn_next(r);
}

static int rn_digits(rn *r, int hex) {
  int count = 0;
  while ((hex ? isxdigit(r->c) : isdigit(r->c)) && rn_next(r)) count++;
  return count;
}

/* 1 when a valid numeral was read into buff; the look-ahead stays unread. */
static int read_number(rn *r) {
  int count = 0, hex = 0;
  r->n = 0;
  r->c = rn_peek(r);
  while (r->c != EOF && isspace(r->c)) {
    r->pos++;
    r->c = rn_peek(r);
  }
  rn_test2(r, "-+");
  if (rn_test2(r, "00")) {
    if (rn_test2(r, "xX")) hex = 1;
    else count = 1;
  }
  count += rn_digits(r, hex);
  if (rn_test2(r, ".."))
    count += rn_digits(r, hex);
  if (count > 0 && rn_test2(r, hex ? "pP" : "eE")) {
    rn_test2(r, "-+");
    rn_digits(r, 0);
  }
  r->buff[r->n] = '\0';
  if (r->buff[0] == '\0') return 0;
  char *end;
  (void)strtod(r->buff, &end);  /* the same syntax lua_stringtonumber accepts */
  return *end == '\0';
}

/* Work out every format's result, filling the buffer as needed; nothing is
 * consumed yet.  *nok: formats that succeeded (the next one, if any,
 * failed); *used: bytes they took.  0, PL_POLL_CANCELLED or -errno. */
static int read_formats(pipe_end *pe, pl_waiter *w, readfmt *f, int nf, int *nok, size_t *used) {
  size_t pos = 0;
  int e = 0, i;
  for (i = 0; i < nf; i++) {
    int ok = 0;
    f[i].off = pos;
    f[i].len = 0;
    switch (f[i].kind) {
      case F_COUNT: {
        size_t want = f[i].count > 0 ? f[i].count : 1;
        while (buffered(pe) - pos < want && !pe->eof)
          if ((e = fill(pe, w)) != 0) goto out;
        size_t have = buffered(pe) - pos;
        if (f[i].count == 0) {
          ok = have > 0;  /* read(0): "" unless at end of file */
        } else {
          f[i].len = have < f[i].count ? have : f[i].count;
          pos += f[i].len;
          ok = f[i].len > 0;
        }
        break;
      }
      case F_LINE:
      case F_LINE_NL: {
        size_t scan = pos;
        const char *nl = NULL;
        for (;;) {
          if (buffered(pe) > scan) nl = memchr(bufptr(pe) + scan, '\n', buffered(pe) - scan);
          if (nl != NULL || pe->eof) break;
          scan = buffered(pe);
          if ((e = fill(pe, w)) != 0) goto out;
        }
        if (nl != NULL) {
          size_t j = (size_t)(nl - bufptr(pe));
          f[i].len = j - pos + (f[i].kind == F_LINE_NL);
          pos = j + 1;
          ok = 1;
        } else {
          f[i].len = buffered(pe) - pos;
          pos = buffered(pe);
          ok = f[i].len > 0;
        }
        break;
      }
      case F_ALL:
        while (!pe->eof)
          if ((e = fill(pe, w)) != 0) goto out;
        f[i].len = buffered(pe) - pos;
        pos = buffered(pe);
        ok = 1;
        break;
      default: {  /* F_NUMBER */
        rn r = {pe, w, pos, 0, 0, 0, f[i].num};
        ok = read_number(&r);
        if ((e = r.err) != 0) goto out;
        pos = r.pos;
        break;
      }
    }
    if (!ok) break;
  }
out:
  *nok = i;
  *used = pos;
  return e;
}

static void parse_formats(lua_State *L, int first, int nf, readfmt *f) {
  for (int i = 0; i < nf; i++) {
    int arg = first + i;
    memset(&f[i], 0, sizeof f[i]);
    if (lua_type(L, arg) == LUA_TNUMBER) {
      lua_Integer n = luaL_checkinteger(L, arg);
      luaL_argcheck(L, n >= 0, arg, "count must be non-negative");
      f[i].kind = F_COUNT;
      f[i].count = (size_t)n;
      continue;
    }
    const char *p = luaL_checkstring(L, arg);
    if (*p == '*') p++;  /* the optional '*' of Lua 5.1-5.2 */
    switch (*p) {
      case 'n': f[i].kind = F_NUMBER; break;
      case 'l': f[i].kind = F_LINE; break;
      case 'L': f[i].kind = F_LINE_NL; break;
      case 'a': f[i].kind = F_ALL; break;
      default: luaL_argerror(L, arg, "invalid format");
    }
  }
}

typedef struct results {
  readfmt *f;
  int n;        /* values to push */
  int failed;   /* the last of them is a fail */
} results;

/* [-0, +n] */
static int push_values(lua_State *L, const results *res) {
  luaL_checkstack(L, res->n, "too many results");
  for (int i = 0; i < res->n; i++) {
    readfmt *f = &res->f[i];
    if (res->failed && i == res->n - 1) luaL_pushfail(L);
    else if (f->kind == F_NUMBER) {
      if (lua_stringtonumber(L, f->num) == 0) lua_pushnil(L);
    } else if (f->kind == F_COUNT && f->count == 0) lua_pushliteral(L, "");
    else lua_pushlstring(L, f->at, f->len);
  }
  return res->n;
}

static int push_results(lua_State *L) {
  return push_values(L, lua_touserdata(L, 1));
}

static int fileresult_errno(lua_State *L, int err) {
  luaL_pushfail(L);
  lua_pushstring(L, strerror(err));
  lua_pushinteger(L, err);
  return 3;
}

/* Copy the results out of the buffer (which others may use once we let
 * it go) and consume what they took: into `small` when they fit, else a
 * malloc'd *block, or the buffer itself when all of it goes out. */
static int take_results(pipe_end *pe, readfmt *f, int nok, size_t used, char *small, char **block) {
  size_t total = 0;
  for (int i = 0; i < nok; i++)
    if (f[i].kind != F_NUMBER) total += f[i].len;
  const char *base = bufptr(pe);
  int copy = 1;
  if (total <= SMALL_RESULT) {
    *block = small;
  } else if (used == buffered(pe)) {
    *block = pe->buf.data;  /* hand the whole buffer over: no copy */
    memset(&pe->buf, 0, sizeof pe->buf);
    pe->start = 0;
    copy = 0;
  } else if ((*block = malloc(total)) == NULL) {
    return -ENOMEM;
  }
  size_t at = 0;
  for (int i = 0; i < nok; i++) {
    if (f[i].kind == F_NUMBER) continue;
    if (copy) {
      if (f[i].len > 0) memcpy(*block + at, base + f[i].off, f[i].len);
      f[i].at = *block + at;
      at += f[i].len;
    } else {
      f[i].at = base + f[i].off;
    }
  }
  if (copy) {
    pe->start += used;
    if (pe->start >= pe->buf.len) pe->start = pe->buf.len = 0;
  }
  return 0;
}

/* Read formats from the stack (first.. top) off pe; liolib's g_read. */
static int read_values(lua_State *L, pipe_end *pe, int first) {
  int nf = lua_gettop(L) - first + 1;
  readfmt one, *f = &one;
  if (nf <= 0) {  /* no format: a line */
    memset(&one, 0, sizeof one);
    one.kind = F_LINE;
    nf = 1;
  } else {
    if (nf > 1) f = lua_newuserdatauv(L, sizeof *f * (size_t)nf, 0);  /* freed by the GC */
    parse_formats(L, first, nf, f);
  }
  pl_tstate *ts = pl_unlock(L);
  int rc = pipe_acquire(pe, ts);
  int e = 0, nok = 0;
  size_t used = 0;
  char small[SMALL_RESULT];
  char *block = NULL;
  if (rc == PL_WAIT_WOKEN) {
    pl_waiter w;
    pl_waiter_begin(&w, ts, 0);
    e = read_formats(pe, &w, f, nf, &nok, &used);
    pl_waiter_end(&w);
    if (e == 0) e = take_results(pe, f, nok, used, small, &block);
    pipe_release(pe, 0);
  }
  pl_lock(L, ts);
  if (rc == PL_WAIT_CANCELLED || e == PL_POLL_CANCELLED) {
    pl_check_cancel(L, ts);
    return luaL_error(L, "read cancelled");
  }
  if (rc != PL_WAIT_WOKEN) return luaL_error(L, "attempt to use a closed file");
  if (e != 0) return fileresult_errno(L, -e);
  results res = {f, nok < nf ? nok + 1 : nok, nok < nf};
  if (block == small) return push_values(L, &res);
  /* The block is ours to free: push under protection, so that a memory
   * error while pushing cannot leak it. */
  int base = lua_gettop(L);
  lua_pushcfunction(L, push_results);
  lua_pushlightuserdata(L, &res);
  int status = lua_pcall(L, 1, LUA_MULTRET, 0);
  free(block);
  if (status != LUA_OK) return lua_error(L);
  return lua_gettop(L) - base;
}

static pipe_end *check_reader(lua_State *L) {
  pipe_end *pe = check_pipe(L, 1);
  if (pe->writable) luaL_error(L, "this pipe end is for writing (it is the process's stdin)");
  return pe;
}

static pipe_end *check_writer(lua_State *L) {
  pipe_end *pe = check_pipe(L, 1);
  if (!pe->writable) luaL_error(L, "this pipe end is for reading (it is the process's stdout or stderr)");
  return pe;
}

static int pipe_read(lua_State *L) {
  return read_values(L, check_reader(L), 2);
}

/* The iterator of lines(): upvalues are the pipe end, n, and n formats. */
static int pipe_readline(lua_State *L) {
  pipe_end *pe = lua_touserdata(L, lua_upvalueindex(1));
  int n = (int)lua_tointeger(L, lua_upvalueindex(2));
  pthread_mutex_lock(&pe->mu);
  int closed = pe->closed;
  pthread_mutex_unlock(&pe->mu);
  if (closed) return luaL_error(L, "file is already closed");
  lua_settop(L, 0);
  luaL_checkstack(L, n, "too many arguments");
  for (int i = 1; i <= n; i++) lua_pushvalue(L, lua_upvalueindex(2 + i));
  n = read_values(L, pe, 1);
  if (lua_toboolean(L, -n)) return n;
  if (n > 1) return luaL_error(L, "%s", lua_tostring(L, -n + 1));
  return 0;
}

static int pipe_lines(lua_State *L) {
  check_reader(L);
  int n = lua_gettop(L) - 1;
  luaL_argcheck(L, n <= 250, 252, "too many arguments");
  lua_pushvalue(L, 1);
  lua_pushinteger(L, n);
  lua_rotate(L, 2, 2);  /* [pipe, pipe, n, formats...] */
  lua_pushcclosure(L, pipe_readline, 2 + n);
  return 1;
}

/* Like file:write: strings and numbers; returns the end, or fail, message,
 * errno (EPIPE when the process stopped reading). */
static int pipe_write(lua_State *L) {
  pipe_end *pe = check_writer(L);
  int top = lua_gettop(L);
  for (int arg = 2; arg <= top; arg++) {
    if (lua_type(L, arg) == LUA_TNUMBER) {  /* as liolib: %.14g, not tostring */
      char num[64];
      int len = lua_isinteger(L, arg)
                    ? snprintf(num, sizeof num, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, arg))
                    : snprintf(num, sizeof num, LUA_NUMBER_FMT, (LUAI_UACNUMBER)lua_tonumber(L, arg));
      lua_pushlstring(L, num, (size_t)len);
      lua_replace(L, arg);
    } else {
      luaL_checktype(L, arg, LUA_TSTRING);
    }
  }
  pl_tstate *ts = pl_unlock(L);
  int rc = pipe_acquire(pe, ts);
  int e = 0;
  if (rc == PL_WAIT_WOKEN) {
    pl_waiter w;
    pl_waiter_begin(&w, ts, 1);
    for (int arg = 2; arg <= top && e == 0; arg++) {
      size_t len;
      const char *s = lua_tolstring(L, arg, &len);  /* anchored on our stack */
      e = write_all(pe, &w, s, len);
    }
    pl_waiter_end(&w);
    pipe_release(pe, 0);
  }
  pl_lock(L, ts);
  if (rc == PL_WAIT_CANCELLED || e == PL_POLL_CANCELLED) {
    pl_check_cancel(L, ts);
    return luaL_error(L, "write cancelled");
  }
  if (rc != PL_WAIT_WOKEN) return luaL_error(L, "attempt to use a closed file");
  if (e != 0) return fileresult_errno(L, -e);
  lua_settop(L, 1);
  return 1;
}

static int pipe_close_m(lua_State *L) {
  pipe_close(luaL_checkudata(L, 1, PIPE_MT));
  lua_pushboolean(L, 1);
  return 1;
}

/* Writes are not buffered: nothing to flush.  Kept for file-likeness. */
static int pipe_flush(lua_State *L) {
  check_pipe(L, 1);
  lua_settop(L, 1);
  return 1;
}

static int pipe_gc(lua_State *L) {
  pipe_end *pe = luaL_checkudata(L, 1, PIPE_MT);
  if (pe->fd >= 0) close(pe->fd);  /* unreachable: nobody is busy with it */
  pe->fd = -1;
  pe->closed = 1;
  pl_bytes_free(&pe->buf);
  return 0;
}

static int pipe_tostring(lua_State *L) {
  pipe_end *pe = luaL_checkudata(L, 1, PIPE_MT);
  pthread_mutex_lock(&pe->mu);
  int closed = pe->closed;
  pthread_mutex_unlock(&pe->mu);
  if (closed) lua_pushliteral(L, "pipe (closed)");
  else lua_pushfstring(L, "pipe (%s end, %p)", pe->writable ? "write" : "read", (void *)pe);
  return 1;
}

/* Hold the end for a child being started: 0, or 1 (closed) or 2 (busy). */
static int pipe_lend(pipe_end *pe) {
  pthread_mutex_lock(&pe->mu);
  int why = pe->closed ? 1 : pe->busy ? 2 : 0;
  if (why == 0) {
    pe->busy = 1;
    if (pe->nonblock) {  /* the child shares the file description */
      int fl = fcntl(pe->fd, F_GETFL);
      if (fl >= 0) fcntl(pe->fd, F_SETFL, fl & ~O_NONBLOCK);
      pe->nonblock = 0;
    }
  }
  pthread_mutex_unlock(&pe->mu);
  return why;
}

static void open_pipe_class(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"read", pipe_read},   {"lines", pipe_lines}, {"write", pipe_write},
      {"close", pipe_close_m}, {"flush", pipe_flush}, {NULL, NULL}};
  luaL_newmetatable(L, PIPE_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, pipe_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, pipe_close_m);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, pipe_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}

/* ============================================================== reaper */

typedef struct reaper {
  atomic_int refs;     /* the state's box, the closer, each Popen */
  pthread_mutex_t mu;  /* guards pids, n, cap, finished */
  pid_t *pids;
  size_t n, cap;
  int finished;        /* the state is gone: orphans are handed over at once */
  pl_closer *closer;   /* guarded by the runtime's mu */
  parlua *rt;
} reaper;

static void reaper_unref(reaper *r) {
  if (atomic_fetch_sub(&r->refs, 1) != 1) return;
  free(r->pids);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

static void reaper_sweep(reaper *r) {
  pthread_mutex_lock(&r->mu);
  size_t live = 0;
  for (size_t i = 0; i < r->n; i++)
    if (!pl_reap_nohang(r->pids[i])) r->pids[live++] = r->pids[i];
  r->n = live;
  pthread_mutex_unlock(&r->mu);
}

/* Give every orphan still running to a background thread. */
static void reaper_hand_over(reaper *r, int finished) {
  pthread_mutex_lock(&r->mu);
  pid_t *pids = r->pids;
  size_t n = r->n;
  r->pids = NULL;
  r->n = r->cap = 0;
  if (finished) r->finished = 1;
  pthread_mutex_unlock(&r->mu);
  if (n > 0) pl_reap_in_background(pids, n);
  else free(pids);
}

static void reaper_add(reaper *r, pid_t pid) {
  if (pl_reap_nohang(pid)) return;
  pthread_mutex_lock(&r->mu);
  int direct = r->finished;
  if (!direct && r->n == r->cap) {
    size_t cap = r->cap > 0 ? r->cap * 2 : 16;
    pid_t *pids = realloc(r->pids, cap * sizeof *pids);
    if (pids != NULL) {
      r->pids = pids;
      r->cap = cap;
    } else {
      direct = 1;
    }
  }
  if (!direct) r->pids[r->n++] = pid;
  pthread_mutex_unlock(&r->mu);
  if (direct) {
    pid_t *one = malloc(sizeof *one);
    if (one != NULL) {
      *one = pid;
      pl_reap_in_background(one, 1);
    }
  }
}

static void reaper_close(void *ud, lua_State *L) {
  (void)L;
  reaper *r = ud;
  reaper_hand_over(r, 0);
  reaper_unref(r);
}

static int reaper_gc(lua_State *L) {
  void **box = pl_box_get(L, 1, REAPER_MT);
  reaper *r = *box;
  if (r == NULL) return 0;
  *box = NULL;
  if (pl_runtime_remove_closer(r->rt, &r->closer)) reaper_unref(r);
  reaper_hand_over(r, 1);
  reaper_unref(r);
  return 0;
}

/* The reaper of L's state, made on first use. */
static reaper *get_reaper(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &REAPER_KEY) == LUA_TUSERDATA) {
    reaper *r = *(reaper **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (r != NULL) return r;
  } else {
    lua_pop(L, 1);
  }
  parlua *rt = pl_runtime_of(L);
  if (rt == NULL) luaL_error(L, "parlua is not loaded in this state");
  reaper *r = calloc(1, sizeof *r);
  if (r == NULL) luaL_error(L, "not enough memory");
  atomic_init(&r->refs, 1);
  pthread_mutex_init(&r->mu, NULL);
  r->rt = rt;
  pl_box_new(L, REAPER_MT, r);
  if (pl_runtime_add_closer(rt, &r->closer, PL_CLOSE_SUBPROCESSES, reaper_close, r) == 0)
    atomic_fetch_add(&r->refs, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &REAPER_KEY);
  return r;
}

/* =============================================================== Popen */

typedef struct popen_t {
  int started;         /* proc is initialised */
  pl_proc proc;
  reaper *reaper;
  /* Guarded by the global lock: */
  int comm_busy;       /* a communicate() is running (in some thread) */
  int comm_started;
  int comm_done;       /* outputs are in UV_OUT / UV_ERR */
  pl_comm comm;
} popen_t;

static popen_t *check_popen(lua_State *L, int idx) {
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
  return lua_error(L);
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
  return lua_error(L);
}

/* ---- starting ---- */

enum { MODE_POPEN, MODE_RUN, MODE_CHECK_OUTPUT };

static const char *const popen_opts[] = {"stdin", "stdout", "stderr", "cwd", "env", "shell", NULL};
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
static void get_stream(lua_State *L, int opts, int i, int force_pipe, pl_io *io, pipe_end **lent) {
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
  } else if (type == LUA_TUSERDATA && luaL_testudata(L, -1, PIPE_MT) != NULL) {
    pipe_end *pe = lua_touserdata(L, -1);
    if (i == 0 && pe->writable)
      opt_error(L, "option 'stdin': needs a pipe end to read from (such as another process's stdout), got a write end");
    if (i != 0 && !pe->writable)
      opt_error(L, "option '%s': needs a pipe end to write to (a process's stdin), got a read end", name);
    io->how = PL_IO_FD;
    *lent = pe;
  } else if (type == LUA_TUSERDATA && luaL_testudata(L, -1, LUA_FILEHANDLE) != NULL) {
    luaL_Stream *s = lua_touserdata(L, -1);
    if (s->closef == NULL) opt_error(L, "option '%s': attempt to use a closed file", name);
    fflush(s->f);  /* what Lua buffered goes before what the child writes */
    io->how = PL_IO_FD;
    io->fd = fileno(s->f);
  } else {
    opt_error(L, "option '%s': expected \"pipe\", \"devnull\", a pipe end, a file or a file descriptor, got %s",
               name, luaL_typename(L, -1));
  }
  lua_pop(L, 1);
}

static int push_spawn_error(lua_State *L, int err, const char *program, const char *cwd) {
  int cwd_err = cwd != NULL ? pl_spawn_check_cwd(cwd) : 0;
  const char *file = program;
  if (cwd_err != 0) {
    err = cwd_err;
    file = cwd;
    pl_error_push(L, PL_OS_ERROR, "cannot change directory to '%s': %s", cwd, strerror(err));
  } else {
    pl_error_push(L, PL_OS_ERROR, "cannot run '%s': %s", program, strerror(err));
  }
  lua_pushinteger(L, err);
  lua_setfield(L, -2, "errno");
  lua_pushstring(L, file);
  lua_setfield(L, -2, "filename");
  return lua_error(L);
}

/* [-0, +1] Start the child of argument `cmd` with options at `opts` (0:
 * none); `pipes` forces streams to "pipe" (bit i for stream i). */
static popen_t *spawn_popen(lua_State *L, int cmd, int opts, int mode, int pipes) {
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
  reaper *r = get_reaper(L);
  reaper_sweep(r);

  build_argv(L, cmd, shell);
  int argv_t = lua_gettop(L);
  char **argv = string_array(L, argv_t);
  char **envp = NULL;
  pl_spawn_req req;
  memset(&req, 0, sizeof req);
  pipe_end *lent[3];
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
  for (int i = 0; i < 3; i++) get_stream(L, opts, i, (pipes >> i) & 1, &req.io[i], &lent[i]);

  /* Everything that can fail with a Lua error is made before the child
   * exists, so nothing can leak after it. */
  popen_t *p = lua_newuserdatauv(L, sizeof *p, UV_COUNT);
  memset(p, 0, sizeof *p);
  for (int i = 0; i < 3; i++) p->comm.fd[i] = -1;
  luaL_setmetatable(L, POPEN_MT);
  pl_adopted_touch(L);
  int pidx = lua_gettop(L);
  pipe_end *mine[3] = {NULL, NULL, NULL};
  for (int i = 0; i < 3; i++) {
    if (req.io[i].how != PL_IO_PIPE) continue;
    mine[i] = new_pipe_end(L, i == 0);
    lua_setiuservalue(L, pidx, UV_STDIN + i);
  }
  lua_pushvalue(L, cmd);
  lua_setiuservalue(L, pidx, UV_ARGS);

  /* Pipe ends given as streams are held (busy) while the child starts, so
   * no other thread closes them under us; one end may serve two streams. */
  pipe_end *held[3] = {NULL, NULL, NULL};
  for (int i = 0; i < 3; i++) {
    if (lent[i] == NULL) continue;
    int again = 0;
    for (int j = 0; j < i; j++) again |= lent[j] == lent[i];
    if (!again) {
      int why = pipe_lend(lent[i]);
      if (why != 0) {
        for (int j = 0; j < i; j++)
          if (held[j] != NULL) pipe_release(held[j], 0);
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
  pl_tstate *ts = pl_unlock(L);
  if (err == 0) err = pl_spawn(&req, &res);
  pl_lock(L, ts);
  for (int i = 0; i < 3; i++) {
    if (held[i] != NULL) pipe_release(held[i], 0);
    if (own[i] >= 0) close(own[i]);
  }
  if (err != 0) push_spawn_error(L, err, argv[0], cwd);
  pl_proc_init(&p->proc, res.pid, res.pidfd);
  p->started = 1;
  p->reaper = r;
  atomic_fetch_add(&r->refs, 1);
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

static popen_t *check_live(lua_State *L) {
  popen_t *p = check_popen(L, 1);
  if (!p->started) luaL_error(L, "attempt to use a collected process");
  return p;
}

static int push_returncode(lua_State *L, popen_t *p) {
  if (pl_proc_poll(&p->proc)) lua_pushinteger(L, pl_proc_returncode(&p->proc));
  else lua_pushnil(L);
  return 1;
}

/* Wait for the child without the lock: PL_WAIT_WOKEN or PL_WAIT_TIMEOUT;
 * raises Cancelled.  Not `cancellable`: reaping a child just killed. */
static int wait_child(lua_State *L, popen_t *p, int64_t deadline, int cancellable) {
  if (pl_proc_poll(&p->proc)) return PL_WAIT_WOKEN;
  pl_tstate *ts = pl_unlock(L);
  pl_waiter w;
  pl_waiter_begin(&w, cancellable ? ts : NULL, 0);
  int rc = pl_proc_wait(&p->proc, &w, deadline);
  pl_waiter_end(&w);
  pl_lock(L, ts);
  if (rc == PL_WAIT_CANCELLED) {
    pl_check_cancel(L, ts);
    return luaL_error(L, "wait cancelled");
  }
  return rc;
}

static int popen_poll(lua_State *L) {
  return push_returncode(L, check_live(L));
}

static int popen_wait(lua_State *L) {
  popen_t *p = check_live(L);
  double timeout = pl_opt_timeout(L, 2);
  if (wait_child(L, p, pl_deadline_after(timeout), 1) == PL_WAIT_TIMEOUT)
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
static int send_signal(lua_State *L, popen_t *p, int sig) {
  if (pl_proc_poll(&p->proc)) return 0;
  int err = pl_proc_signal(&p->proc, sig);
  if (err != 0) return pl_error_raise_os(L, err, "cannot send the signal");
  return 0;
}

static int popen_send_signal(lua_State *L) {
  popen_t *p = check_live(L);
  return send_signal(L, p, check_signal(L, 2));
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
  popen_t *p = check_live(L);
  size_t in_len = 0;
  const char *in = lua_isnoneornil(L, 2) ? NULL : luaL_checklstring(L, 2, &in_len);
  double timeout = pl_opt_timeout(L, 3);
  lua_settop(L, 3);
  pipe_end *pe[3];
  for (int i = 0; i < 3; i++) {
    lua_getiuservalue(L, 1, UV_STDIN + i);  /* 4, 5, 6: anchored while we work */
    pe[i] = luaL_testudata(L, -1, PIPE_MT);
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

  pl_tstate *ts = pl_unlock(L);
  int rc = PL_WAIT_WOKEN;
  int taken[3] = {0, 0, 0};
  for (int i = 0; i < 3 && rc == PL_WAIT_WOKEN; i++) {
    if (pe[i] == NULL) continue;
    int a = pipe_acquire(pe[i], ts);
    if (a == PL_WAIT_CANCELLED) rc = a;
    else taken[i] = a == PL_WAIT_WOKEN;  /* a closed end is simply done */
  }
  if (rc == PL_WAIT_WOKEN) {
    for (int i = 0; i < 3; i++) p->comm.fd[i] = taken[i] ? pe[i]->fd : -1;
    p->comm.in_nonblock = taken[0] && pe[0]->nonblock;
    /* What a reader left buffered comes first. */
    for (int i = 1; i < 3 && rc == PL_WAIT_WOKEN; i++) {
      if (!taken[i] || buffered(pe[i]) == 0) continue;
      if (pl_bytes_reserve(&p->comm.out[i], buffered(pe[i])) != 0) {
        rc = -ENOMEM;
        break;
      }
      memcpy(p->comm.out[i].data + p->comm.out[i].len, bufptr(pe[i]), buffered(pe[i]));
      p->comm.out[i].len += buffered(pe[i]);
      pe[i]->start = pe[i]->buf.len = 0;
    }
  }
  if (rc == PL_WAIT_WOKEN) {
    pl_waiter w;
    pl_waiter_begin(&w, ts, p->comm.fd[0] >= 0);
    rc = pl_communicate(&p->comm, &w, deadline);
    if (rc == 0) rc = pl_proc_wait(&p->proc, &w, deadline);
    pl_waiter_end(&w);
  }
  for (int i = 0; i < 3; i++) {
    if (taken[i]) pipe_release(pe[i], p->comm.fd[i] < 0);
    p->comm.fd[i] = -1;
  }
  pl_lock(L, ts);
  p->comm_busy = 0;

  if (rc == PL_WAIT_CANCELLED) {
    pl_check_cancel(L, ts);
    return luaL_error(L, "communicate cancelled");
  }
  if (rc < 0) return pl_error_raise_os(L, -rc, "communicate");
  for (int i = 1; i < 3; i++) {  /* 7, 8 */
    if (pe[i] != NULL) lua_pushlstring(L, p->comm.out[i].data != NULL ? p->comm.out[i].data : "", p->comm.out[i].len);
    else lua_pushnil(L);
  }
  if (rc == PL_WAIT_TIMEOUT) return raise_timeout(L, 1, 3, pe[1] ? 7 : 0, pe[2] ? 8 : 0);
  lua_pushvalue(L, 7);
  lua_setiuservalue(L, 1, UV_OUT);
  lua_pushvalue(L, 8);
  lua_setiuservalue(L, 1, UV_ERR);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, UV_INPUT);
  p->comm.input = NULL;
  pl_bytes_free(&p->comm.out[1]);
  pl_bytes_free(&p->comm.out[2]);
  p->comm_done = 1;
  return 2;
}

static void close_pipes(lua_State *L, int pidx) {
  for (int i = 0; i < 3; i++) {
    lua_getiuservalue(L, pidx, UV_STDIN + i);
    pipe_end *pe = luaL_testudata(L, -1, PIPE_MT);
    if (pe != NULL) pipe_close(pe);
    lua_pop(L, 1);
  }
}

/* Fields first (pid, returncode, stdin, stdout, stderr, args), then methods. */
static int popen_index(lua_State *L) {
  popen_t *p = check_popen(L, 1);
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
  popen_t *p = check_popen(L, 1);
  if (!p->started) return 0;
  close_pipes(L, 1);
  wait_child(L, p, INT64_MAX, 1);
  return 0;
}

/* Never blocks: a child still running goes to the reaper. */
static int popen_gc(lua_State *L) {
  popen_t *p = check_popen(L, 1);
  if (!p->started) return 0;
  p->started = 0;
  if (!pl_proc_poll(&p->proc)) reaper_add(p->reaper, p->proc.pid);
  pl_proc_destroy(&p->proc);
  for (int i = 0; i < 3; i++) pl_bytes_free(&p->comm.out[i]);
  reaper_unref(p->reaper);
  p->reaper = NULL;
  return 0;
}

static int popen_tostring(lua_State *L) {
  popen_t *p = check_popen(L, 1);
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
 * when communicate fails (timeout, cancel), as Python's run does. */
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
  popen_t *p = spawn_popen(L, 1, opts, mode, pipes);
  int pidx = lua_gettop(L);
  lua_pushcfunction(L, popen_communicate);
  lua_pushvalue(L, pidx);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 6);
  if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
    send_signal(L, p, SIGKILL);
    wait_child(L, p, INT64_MAX, 0);
    close_pipes(L, pidx);
    return lua_error(L);
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
  open_pipe_class(L);
  luaL_newmetatable(L, POPEN_MT);
  luaL_newlib(L, popen_methods);
  lua_pushcclosure(L, popen_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, popen_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, popen_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, popen_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newmetatable(L, REAPER_MT);
  lua_pushcfunction(L, reaper_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
