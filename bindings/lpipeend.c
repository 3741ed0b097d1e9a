/* The pipe ends of a Popen (p.stdin, p.stdout, p.stderr): file-like
 * userdata following Lua's file conventions -- read formats ("l", "L",
 * "n", "a", counts), lines, write returning fail/message/errno -- over a
 * descriptor of our own.
 *
 * An end serves one operation at a time: `busy`, under its mutex, is taken
 * without the global lock through an interruptible pl_wait, so a reader
 * blocked on an empty pipe never holds up a thread that wants the lock,
 * and close() of a busy end leaves the descriptor for the busy thread to
 * close (closing it under a blocked poll could hand its number to an
 * unrelated file).  The read buffer belongs to whoever holds `busy`.
 * Reading and writing block through a pl_poller (core/wait.c), so a forced
 * cancel or an interrupt ends them.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bindings.h"
#include "lpipeend.h"

static const char PIPE_MT[] = "parlua.PipeEnd";

#define READ_CHUNK 65536
#define SMALL_RESULT 8192  /* results up to this size are copied on the C stack */
#define MAXNUMLEN 200      /* as liolib.c */


pl_pipe_end *pl_pipe_end_new(lua_State *L, int writable) {
  pl_pipe_end *pe = lua_newuserdatauv(L, sizeof *pe, 0);
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

static pl_pipe_end *check_pipe(lua_State *L, int idx) {
  pl_pipe_end *pe = luaL_checkudata(L, idx, PIPE_MT);
  pthread_mutex_lock(&pe->mu);
  int closed = pe->closed;
  pthread_mutex_unlock(&pe->mu);
  if (closed) luaL_error(L, "attempt to use a closed file");
  return pe;
}

int pl_pipe_end_acquire(pl_pipe_end *pe, pl_tstate *ts) {
  int rc = PL_OK;
  pl_wait_begin(ts, &pe->mu, &pe->cv);
  pthread_mutex_lock(&pe->mu);
  while (pe->busy && !pe->closed && rc != PL_ECANCELLED) rc = pl_wait(ts, &pe->mu, &pe->cv, INT64_MAX);
  if (rc != PL_ECANCELLED) {
    if (pe->closed) rc = PL_ECLOSED;
    else {
      pe->busy = 1;
      rc = PL_OK;
    }
  }
  pthread_mutex_unlock(&pe->mu);
  pl_wait_end(ts);
  return rc;
}

void pl_pipe_end_release(pl_pipe_end *pe, int fd_gone) {
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

void pl_pipe_end_close(pl_pipe_end *pe) {
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


/* Read more into the buffer (offsets from `start` stay valid).  0 (data
 * or EOF came), PL_ECANCELLED, or -errno. */
static int fill(pl_pipe_end *pe, pl_poller *w) {
  if (pe->eof) return 0;
  if (pe->start > 0 && pe->buf.cap - pe->buf.len < READ_CHUNK) {
    memmove(pe->buf.data, pl_pipe_end_bufptr(pe), pl_pipe_end_buffered(pe));
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
      int r = pl_poller_poll(w, &pf, 1, INT64_MAX);
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

/* Write all of data.  0, PL_ECANCELLED, or -errno (EPIPE included). */
static int write_all(pl_pipe_end *pe, pl_poller *w, const char *data, size_t len) {
  int need_poll = !pe->nonblock;
  while (len > 0) {
    if (need_poll) {
      struct pollfd pf = {pe->fd, POLLOUT, 0};
      int r = pl_poller_poll(w, &pf, 1, INT64_MAX);
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
      pl_poller_note_epipe(w);
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
  pl_pipe_end *pe;
  pl_poller *w;
  size_t pos;
  int c, n, err;
  char *buff;
} rn;

static int rn_peek(rn *r) {
  while (r->pos >= pl_pipe_end_buffered(r->pe)) {
    if (r->pe->eof || r->err) return EOF;
    r->err = fill(r->pe, r->w);
  }
  return (unsigned char)pl_pipe_end_bufptr(r->pe)[r->pos];
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
 * failed); *used: bytes they took.  0, PL_ECANCELLED or -errno. */
static int read_formats(pl_pipe_end *pe, pl_poller *w, readfmt *f, int nf, int *nok, size_t *used) {
  size_t pos = 0;
  int e = 0, i;
  for (i = 0; i < nf; i++) {
    int ok = 0;
    f[i].off = pos;
    f[i].len = 0;
    switch (f[i].kind) {
      case F_COUNT: {
        size_t want = f[i].count > 0 ? f[i].count : 1;
        while (pl_pipe_end_buffered(pe) - pos < want && !pe->eof)
          if ((e = fill(pe, w)) != 0) goto out;
        size_t have = pl_pipe_end_buffered(pe) - pos;
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
          if (pl_pipe_end_buffered(pe) > scan) nl = memchr(pl_pipe_end_bufptr(pe) + scan, '\n', pl_pipe_end_buffered(pe) - scan);
          if (nl != NULL || pe->eof) break;
          scan = pl_pipe_end_buffered(pe);
          if ((e = fill(pe, w)) != 0) goto out;
        }
        if (nl != NULL) {
          size_t j = (size_t)(nl - pl_pipe_end_bufptr(pe));
          f[i].len = j - pos + (f[i].kind == F_LINE_NL);
          pos = j + 1;
          ok = 1;
        } else {
          f[i].len = pl_pipe_end_buffered(pe) - pos;
          pos = pl_pipe_end_buffered(pe);
          ok = f[i].len > 0;
        }
        break;
      }
      case F_ALL:
        while (!pe->eof)
          if ((e = fill(pe, w)) != 0) goto out;
        f[i].len = pl_pipe_end_buffered(pe) - pos;
        pos = pl_pipe_end_buffered(pe);
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
static int take_results(pl_pipe_end *pe, readfmt *f, int nok, size_t used, char *small, char **block) {
  size_t total = 0;
  for (int i = 0; i < nok; i++)
    if (f[i].kind != F_NUMBER) total += f[i].len;
  const char *base = pl_pipe_end_bufptr(pe);
  int copy = 1;
  if (total <= SMALL_RESULT) {
    *block = small;
  } else if (used == pl_pipe_end_buffered(pe)) {
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
static int read_values(lua_State *L, pl_pipe_end *pe, int first) {
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
  pl_tstate *ts = pl_unlock(L, PL_GIL_POPEN);
  int rc = pl_pipe_end_acquire(pe, ts);
  int e = 0, nok = 0;
  size_t used = 0;
  char small[SMALL_RESULT];
  char *block = NULL;
  if (rc == PL_OK) {
    pl_poller w;
    pl_poller_begin(&w, ts, 0);
    e = read_formats(pe, &w, f, nf, &nok, &used);
    pl_poller_end(&w);
    if (e == 0) e = take_results(pe, f, nok, used, small, &block);
    pl_pipe_end_release(pe, 0);
  }
  pl_lock(L, ts);
  if (rc == PL_ECANCELLED || e == PL_ECANCELLED) {
    pl_check_cancel(L, ts);
    return luaL_error(L, "read cancelled");
  }
  if (rc != PL_OK) return luaL_error(L, "attempt to use a closed file");
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
  if (status != LUA_OK) return pl_error_throw(L);
  return lua_gettop(L) - base;
}

static pl_pipe_end *check_reader(lua_State *L) {
  pl_pipe_end *pe = check_pipe(L, 1);
  if (pe->writable) luaL_error(L, "this pipe end is for writing (it is the process's stdin)");
  return pe;
}

static pl_pipe_end *check_writer(lua_State *L) {
  pl_pipe_end *pe = check_pipe(L, 1);
  if (!pe->writable) luaL_error(L, "this pipe end is for reading (it is the process's stdout or stderr)");
  return pe;
}

static int pipe_read(lua_State *L) {
  return read_values(L, check_reader(L), 2);
}

/* The iterator of lines(): upvalues are the pipe end, n, and n formats. */
static int pipe_readline(lua_State *L) {
  pl_pipe_end *pe = lua_touserdata(L, lua_upvalueindex(1));
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
  pl_pipe_end *pe = check_writer(L);
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
  pl_tstate *ts = pl_unlock(L, PL_GIL_POPEN);
  int rc = pl_pipe_end_acquire(pe, ts);
  int e = 0;
  if (rc == PL_OK) {
    pl_poller w;
    pl_poller_begin(&w, ts, 1);
    for (int arg = 2; arg <= top && e == 0; arg++) {
      size_t len;
      const char *s = lua_tolstring(L, arg, &len);  /* anchored on our stack */
      e = write_all(pe, &w, s, len);
    }
    pl_poller_end(&w);
    pl_pipe_end_release(pe, 0);
  }
  pl_lock(L, ts);
  if (rc == PL_ECANCELLED || e == PL_ECANCELLED) {
    pl_check_cancel(L, ts);
    return luaL_error(L, "write cancelled");
  }
  if (rc != PL_OK) return luaL_error(L, "attempt to use a closed file");
  if (e != 0) return fileresult_errno(L, -e);
  lua_settop(L, 1);
  return 1;
}

static int pipe_close_m(lua_State *L) {
  pl_pipe_end_close(luaL_checkudata(L, 1, PIPE_MT));
  lua_pushboolean(L, 1);
  return 1;
}

/* Writes are not pl_pipe_end_buffered: nothing to flush.  Kept for file-likeness. */
static int pipe_flush(lua_State *L) {
  check_pipe(L, 1);
  lua_settop(L, 1);
  return 1;
}

static int pipe_gc(lua_State *L) {
  pl_pipe_end *pe = luaL_checkudata(L, 1, PIPE_MT);
  if (pe->fd >= 0) close(pe->fd);  /* unreachable: nobody is busy with it */
  pe->fd = -1;
  pe->closed = 1;
  pl_bytes_free(&pe->buf);
  return 0;
}

static int pipe_tostring(lua_State *L) {
  pl_pipe_end *pe = luaL_checkudata(L, 1, PIPE_MT);
  pthread_mutex_lock(&pe->mu);
  int closed = pe->closed;
  pthread_mutex_unlock(&pe->mu);
  if (closed) lua_pushliteral(L, "pipe (closed)");
  else lua_pushfstring(L, "pipe (%s end, %p)", pe->writable ? "write" : "read", (void *)pe);
  return 1;
}

pl_pipe_end *pl_pipe_end_test(lua_State *L, int idx) {
  return luaL_testudata(L, idx, PIPE_MT);
}

int pl_pipe_end_lend(pl_pipe_end *pe) {
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

void pl_open_pipe_end(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"read", pipe_read},   {"lines", pipe_lines}, {"write", pipe_write},
      {"close", pipe_close_m}, {"flush", pipe_flush}, {NULL, NULL}};
  pl_new_class(L, PIPE_MT, methods, NULL, pipe_gc, pipe_close_m, pipe_tostring);
}
