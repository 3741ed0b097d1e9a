/* Private: the pipe ends of a Popen (bindings/lpipeend.c), shared with
 * bindings/lsubprocess.c, which creates them, lends them to children and
 * drains them in communicate().
 * Lock order: an end's mu before a pl_proc's mu; neither is held while
 * taking the global lock or running Lua code. */
#ifndef PL_LPIPEEND_H
#define PL_LPIPEEND_H

#include <pthread.h>

#include "bindings.h"
#include "proc/child.h"

typedef struct pl_pipe_end {
  pthread_mutex_t mu;  /* guards fd, busy, closed */
  pthread_cond_t cv;   /* broadcast when busy ends */
  int fd;              /* -1 once closed */
  int writable;        /* the child's stdin (we write); else we read */
  int nonblock;        /* O_NONBLOCK is set (cleared once lent to a child) */
  int busy;            /* an operation owns fd and the buffer */
  int closed;          /* close() was called */
  /* Owned by the busy holder: */
  int eof;
  pl_bytes buf;        /* pl_pipe_end_buffered input is buf.data[start, buf.len) */
  size_t start;
} pl_pipe_end;

/* A new end, closed until a child gives it a descriptor (set fd, nonblock
 * and closed = 0).  [-0, +1] */
pl_pipe_end *pl_pipe_end_new(lua_State *L, int writable);
/* The end at idx, or NULL when it is something else. */
pl_pipe_end *pl_pipe_end_test(lua_State *L, int idx);
/* Take the end for one operation, without the global lock: PL_OK
 * (taken), PL_ECANCELLED, or PL_ECLOSED when it was closed meanwhile. */
int pl_pipe_end_acquire(pl_pipe_end *pe, pl_tstate *ts);
/* End an operation; `fd_gone`: the operation closed the descriptor. */
void pl_pipe_end_release(pl_pipe_end *pe, int fd_gone);
/* Idempotent, never blocks. */
void pl_pipe_end_close(pl_pipe_end *pe);
/* Hold the end for a child being started: 0, or 1 (closed) or 2 (busy). */
int pl_pipe_end_lend(pl_pipe_end *pe);
void pl_open_pipe_end(lua_State *L);

/* What a reader left buffered (the busy holder's). */
static inline size_t pl_pipe_end_buffered(const pl_pipe_end *pe) { return pe->buf.len - pe->start; }
static inline const char *pl_pipe_end_bufptr(const pl_pipe_end *pe) { return pe->buf.data + pe->start; }

#endif
