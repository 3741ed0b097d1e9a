/* Lua's io library, with the global lock let go around the stdio calls
 * that may wait.
 *
 * The functions replace those of liolib.c that read, write, flush, open or
 * start a program; everything else (seek, setvbuf, io.type, __gc, close)
 * stays Lua's own and works on these handles, which are Lua's luaL_Stream.
 * Behaviour, messages and results are those of Lua 5.4's liolib.c: each
 * read format is checked and its result pushed under the lock, while the
 * FILE is read into C memory (ioread.c) without it, and only when the read
 * may wait (filepeek.c) -- line after line of a disk file never lets go.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
#include "core/blocking.h"
#include "blockio/blockio.h"
#include "blockio/filepeek.h"
#include "blockio/ioread.h"
#include "blockio/stream.h"

#define IO_INPUT "_IO_input"   /* liolib's registry keys of the default files */
#define IO_OUTPUT "_IO_output"
#define MAXARGLINE 250         /* liolib's limit of formats for lines() */

/* ------------------------------------------------------------ opening */

/* liolib's l_checkmode: "[rwa]%+?b*". */
static int check_mode(const char *mode) {
  return (*mode != '\0' && strchr("rwa", *(mode++)) != NULL &&
          (*mode != '+' || ((void)(++mode), 1)) &&
          (strspn(mode, "b") == strlen(mode)));
}

/* fopen, letting the lock go for what may wait in open(2): a FIFO waits
 * for its other end, a device may too.  A file that does not exist yet is
 * created at once. */
static FILE *open_file(lua_State *L, const char *name, const char *mode) {
  struct stat st;
  int may_block = stat(name, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
  pl_tstate *ts = may_block ? pl_blocking_begin(L, PL_GIL_IO) : NULL;
  FILE *f = fopen(name, mode);
  pl_blocking_end(ts);
  return f;
}

static int io_open(lua_State *L) {
  const char *filename = luaL_checkstring(L, 1);
  const char *mode = luaL_optstring(L, 2, "r");
  pl_stream *p = pl_stream_new(L);
  luaL_argcheck(L, check_mode(mode), 2, "invalid mode");
  p->s.f = open_file(L, filename, mode);
  if (p->s.f == NULL) return luaL_fileresult(L, 0, filename);
  p->s.closef = pl_stream_fclose;
  return 1;
}

/* liolib's opencheckfile: raise when the file cannot be opened. */
static void open_or_raise(lua_State *L, const char *fname, const char *mode) {
  pl_stream *p = pl_stream_new(L);
  p->s.f = open_file(L, fname, mode);
  if (p->s.f == NULL)
    luaL_error(L, "cannot open file '%s' (%s)", fname, strerror(errno));
  p->s.closef = pl_stream_fclose;
}

static int io_popen(lua_State *L) {
  const char *prog = luaL_checkstring(L, 1);
  const char *mode = luaL_optstring(L, 2, "r");
  pl_stream *p = pl_stream_new(L);
  luaL_argcheck(L, (mode[0] == 'r' || mode[0] == 'w') && mode[1] == '\0', 2, "invalid mode");
  pl_tstate *ts = pl_blocking_begin(L, PL_GIL_POPEN);  /* flushing may wait too */
  fflush(NULL);
  FILE *f = popen(prog, mode);
  pl_blocking_end(ts);
  if (f == NULL) return luaL_fileresult(L, 0, prog);
  p->s.f = f;
  p->s.closef = pl_stream_pclose;
  return 1;
}

static int io_tmpfile(lua_State *L) {
  pl_stream *p = pl_stream_new(L);
  p->s.f = tmpfile();
  if (p->s.f == NULL) return luaL_fileresult(L, 0, NULL);
  p->s.closef = pl_stream_fclose;
  return 1;
}

/* liolib's getiofile: the default input or output, pushed. */
static luaL_Stream *get_iofile(lua_State *L, const char *key) {
  lua_getfield(L, LUA_REGISTRYINDEX, key);
  luaL_Stream *p = (luaL_Stream *)lua_touserdata(L, -1);
  if (p->closef == NULL)
    luaL_error(L, "standard %s file is closed", key + 4);  /* past "_IO_" */
  return p;
}

static int g_iofile(lua_State *L, const char *key, const char *mode) {
  if (!lua_isnoneornil(L, 1)) {
    const char *filename = lua_tostring(L, 1);
    if (filename) {
      open_or_raise(L, filename, mode);
    } else {
      pl_stream_check_open(L);
      lua_pushvalue(L, 1);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, key);
  }
  lua_getfield(L, LUA_REGISTRYINDEX, key);
  return 1;
}

static int io_input(lua_State *L) { return g_iofile(L, IO_INPUT, "r"); }
static int io_output(lua_State *L) { return g_iofile(L, IO_OUTPUT, "w"); }

/* ------------------------------------------------------------ reading */

/* Push one format's result; 0 when it failed (liolib's `success`). */
static int push_result(lua_State *L, pl_readout *out, int number) {
  int ok = out->ok;
  if (out->nomem) {
    free(out->data);
    luaL_error(L, "not enough memory");
  }
  if (number) {
    ok = lua_stringtonumber(L, out->num) != 0;
    if (!ok) lua_pushnil(L);  /* the "result" to be removed */
  } else {
    lua_pushlstring(L, out->data != NULL ? out->data : "", out->len);
  }
  free(out->data);
  return ok;
}

enum { FMT_LINE, FMT_LINE_NL, FMT_ALL, FMT_NUMBER, FMT_COUNT };

/* One format on p's FILE, the lock let go when it may wait. */
static int read_one(lua_State *L, luaL_Stream *p, int fmt, size_t count) {
  if (p->closef == NULL)  /* closed by another thread between two formats */
    luaL_error(L, "attempt to use a closed file");
  FILE *f = p->f;
  int may_block;
  switch (fmt) {
    case FMT_LINE: case FMT_LINE_NL: case FMT_NUMBER:
      may_block = pl_read_may_block(f, PL_NEED_LINE, 0); break;
    case FMT_ALL: may_block = pl_read_may_block(f, PL_NEED_ALL, 0); break;
    default: may_block = pl_read_may_block(f, PL_NEED_ANY, count); break;
  }
  pl_readout out;
  out.data = NULL;
  out.len = 0;
  out.ok = 0;
  out.nomem = 0;
  pl_stream_call call;
  pl_stream_begin(L, p, may_block, PL_GIL_IO, &call);
  switch (fmt) {
    case FMT_LINE: pl_read_line(f, 1, &out); break;
    case FMT_LINE_NL: pl_read_line(f, 0, &out); break;
    case FMT_ALL: pl_read_all(f, &out); break;
    case FMT_NUMBER: pl_read_number(f, &out); break;
    default:
      if (count == 0) pl_read_eof(f, &out);
      else pl_read_chars(f, count, &out);
      break;
  }
  pl_stream_end(&call);
  return push_result(L, &out, fmt == FMT_NUMBER);
}

/* liolib's g_read: the formats from index `first` on. */
static int g_read(lua_State *L, luaL_Stream *p, int first) {
  int nargs = lua_gettop(L) - 1;
  int n, success;
  clearerr(p->f);
  if (nargs == 0) {
    success = read_one(L, p, FMT_LINE, 0);
    n = first + 1;
  } else {
    /* room for all results and for the auxiliary library's buffers */
    luaL_checkstack(L, nargs + LUA_MINSTACK, "too many arguments");
    success = 1;
    for (n = first; nargs-- && success; n++) {
      if (lua_type(L, n) == LUA_TNUMBER) {
        size_t l = (size_t)luaL_checkinteger(L, n);
        success = read_one(L, p, FMT_COUNT, l);
      } else {
        const char *fmt = luaL_checkstring(L, n);
        if (*fmt == '*') fmt++;  /* the optional '*' of Lua 5.1-5.2 */
        switch (*fmt) {
          case 'n': success = read_one(L, p, FMT_NUMBER, 0); break;
          case 'l': success = read_one(L, p, FMT_LINE, 0); break;
          case 'L': success = read_one(L, p, FMT_LINE_NL, 0); break;
          case 'a': read_one(L, p, FMT_ALL, 0); success = 1; break;
          default: return luaL_argerror(L, n, "invalid format");
        }
      }
    }
  }
  /* A thread that closed the file meanwhile waited for this read, whose
   * results stand; the FILE is gone. */
  if (p->closef != NULL && ferror(p->f)) return luaL_fileresult(L, 0, NULL);
  if (!success) {
    lua_pop(L, 1);
    luaL_pushfail(L);
  }
  return n - first;
}

static int io_read(lua_State *L) { return g_read(L, get_iofile(L, IO_INPUT), 1); }

static int f_read(lua_State *L) { return g_read(L, pl_stream_check_open(L), 2); }

/* liolib's aux_close: clear closef first, so the handle is closed even if
 * closing fails. */
static int aux_close(lua_State *L) {
  luaL_Stream *p = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  lua_CFunction cf = p->closef;
  p->closef = NULL;
  return cf(L);
}

static int io_readline(lua_State *L) {
  luaL_Stream *p = (luaL_Stream *)lua_touserdata(L, lua_upvalueindex(1));
  int n = (int)lua_tointeger(L, lua_upvalueindex(2));
  if (p->closef == NULL) return luaL_error(L, "file is already closed");
  lua_settop(L, 1);
  luaL_checkstack(L, n, "too many arguments");
  for (int i = 1; i <= n; i++) lua_pushvalue(L, lua_upvalueindex(3 + i));
  n = g_read(L, p, 2);
  if (lua_toboolean(L, -n)) return n;  /* read at least one value */
  if (n > 1)  /* an error: its message is the 2nd result */
    return luaL_error(L, "%s", lua_tostring(L, -n + 1));
  if (lua_toboolean(L, lua_upvalueindex(3))) {  /* we opened it: close it */
    lua_settop(L, 0);
    lua_pushvalue(L, lua_upvalueindex(1));
    aux_close(L);
  }
  return 0;
}

/* liolib's aux_lines: the iterator over the file at index 1. */
static void aux_lines(lua_State *L, int toclose) {
  int n = lua_gettop(L) - 1;
  luaL_argcheck(L, n <= MAXARGLINE, MAXARGLINE + 2, "too many arguments");
  lua_pushvalue(L, 1);
  lua_pushinteger(L, n);
  lua_pushboolean(L, toclose);
  lua_rotate(L, 2, 3);
  lua_pushcclosure(L, io_readline, 3 + n);
}

static int f_lines(lua_State *L) {
  pl_stream_check_open(L);
  aux_lines(L, 0);
  return 1;
}

static int io_lines(lua_State *L) {
  int toclose;
  if (lua_isnone(L, 1)) lua_pushnil(L);
  if (lua_isnil(L, 1)) {  /* the default input, left open */
    lua_getfield(L, LUA_REGISTRYINDEX, IO_INPUT);
    lua_replace(L, 1);
    pl_stream_check_open(L);
    toclose = 0;
  } else {
    const char *filename = luaL_checkstring(L, 1);
    open_or_raise(L, filename, "r");
    lua_replace(L, 1);
    toclose = 1;
  }
  aux_lines(L, toclose);
  if (toclose) {
    lua_pushnil(L);       /* state */
    lua_pushnil(L);       /* control */
    lua_pushvalue(L, 1);  /* the file, the to-be-closed variable */
    return 4;
  }
  return 1;
}

/* ------------------------------------------------------------ writing */

#define BATCH 16      /* values written per letting-go of the lock */
#define NUMLEN 64     /* room for LUA_NUMBER_FMT / LUA_INTEGER_FMT */

typedef struct piece {
  const char *s;  /* into a Lua string anchored on the stack, or num */
  size_t len;
  char num[NUMLEN];
} piece;

/* Write n pieces (the lock let go if that may wait); liolib's `status`
 * stops at the first failure, and so does this. */
static int write_pieces(lua_State *L, luaL_Stream *p, piece *pc, int n, int status, int *err) {
  size_t total = 0;
  for (int i = 0; i < n; i++) total += pc[i].len;
  pl_stream_call call;
  pl_stream_begin(L, p, pl_write_may_block(p->f, total), PL_GIL_IO, &call);
  for (int i = 0; i < n && status; i++) {
    status = fwrite(pc[i].s, 1, pc[i].len, p->f) == pc[i].len;
    if (!status) *err = errno;
  }
  pl_stream_end(&call);
  return status;
}

/* liolib's g_write: the values from `arg` on, the file on the stack top. */
static int g_write(lua_State *L, luaL_Stream *p, int arg) {
  int nargs = lua_gettop(L) - arg;
  int status = 1, err = 0, n = 0;
  piece pc[BATCH];
  for (; nargs--; arg++) {
    if (lua_type(L, arg) == LUA_TNUMBER) {
      int len = lua_isinteger(L, arg)
                    ? snprintf(pc[n].num, NUMLEN, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, arg))
                    : snprintf(pc[n].num, NUMLEN, LUA_NUMBER_FMT, (LUAI_UACNUMBER)lua_tonumber(L, arg));
      pc[n].s = pc[n].num;
      pc[n].len = (size_t)len;
    } else if (lua_type(L, arg) == LUA_TSTRING) {
      pc[n].s = lua_tolstring(L, arg, &pc[n].len);
    } else {  /* what came before is written, then the error (as liolib) */
      status = write_pieces(L, p, pc, n, status, &err);
      n = 0;
      luaL_checklstring(L, arg, NULL);
    }
    if (++n == BATCH) {
      status = write_pieces(L, p, pc, n, status, &err);
      n = 0;
    }
    if (p->closef == NULL) luaL_error(L, "attempt to use a closed file");
  }
  if (n > 0) status = write_pieces(L, p, pc, n, status, &err);
  if (status) return 1;  /* the file is on the stack top */
  errno = err;
  return luaL_fileresult(L, status, NULL);
}

static int io_write(lua_State *L) { return g_write(L, get_iofile(L, IO_OUTPUT), 1); }

static int f_write(lua_State *L) {
  luaL_Stream *p = pl_stream_check_open(L);
  lua_pushvalue(L, 1);  /* the file, to be returned */
  return g_write(L, p, 2);
}

static int flush_file(lua_State *L, luaL_Stream *p) {
  pl_stream_call call;
  pl_stream_begin(L, p, pl_flush_may_block(p->f), PL_GIL_IO, &call);
  int ok = fflush(p->f) == 0;
  pl_stream_end(&call);
  return luaL_fileresult(L, ok, NULL);
}

static int io_flush(lua_State *L) { return flush_file(L, get_iofile(L, IO_OUTPUT)); }
static int f_flush(lua_State *L) { return flush_file(L, pl_stream_check_open(L)); }

/* ------------------------------------------------------------ installing */

static const luaL_Reg io_functions[] = {
    {"flush", io_flush}, {"input", io_input}, {"lines", io_lines},
    {"open", io_open},   {"output", io_output}, {"popen", io_popen},
    {"read", io_read},   {"tmpfile", io_tmpfile}, {"write", io_write},
    {NULL, NULL}};

static const luaL_Reg file_methods[] = {
    {"flush", f_flush}, {"lines", f_lines}, {"read", f_read}, {"write", f_write},
    {NULL, NULL}};

void pl_iolib_install(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_IOLIBNAME) == LUA_TTABLE) {
    luaL_setfuncs(L, io_functions, 0);
    if (luaL_getmetatable(L, LUA_FILEHANDLE) == LUA_TTABLE &&
        lua_getfield(L, -1, "__index") == LUA_TTABLE)
      luaL_setfuncs(L, file_methods, 0);
    lua_pop(L, 2);
  }
  lua_pop(L, 2);
}
