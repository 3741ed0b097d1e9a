/* Private to the parlua runtime: the connections of par.pipe -- one end of
 * an AF_UNIX stream socket carrying frames (wire.h) whose payload is a
 * message in the portable form (portable.h).
 *
 * A connection is a refcounted C object that belongs to no lua_State: the
 * boxes of several states (threads, `states` workers) hold the same one.
 * Sent to another process, it travels as its id and a duplicate of its
 * descriptor (SCM_RIGHTS); the receiving process makes a connection of its
 * own around that descriptor, registered under the same id, so the same
 * end sent twice arrives as the same object.
 *
 * Within one process, one thread at a time sends and one receives (others
 * wait their turn, interruptibly); across processes nothing orders two
 * writers of the same end, so, as with Python's multiprocessing, two
 * processes must not send on (or receive from) the same end at once.
 *
 * close() marks the connection closed for every holder in this process and
 * wakes threads blocked on it (through an eventfd they also poll); the
 * descriptor is closed when the last of them has let go of it.  Copies
 * held by other processes stay open: each process closes its own.
 *
 * Lock order: c->mu, then nothing (waits go through pl_wait / ppoll with
 * no mutex held).
 */
#ifndef PL_CONN_H
#define PL_CONN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/tstate.h"
#include "proc/wire.h"

enum { PL_CONN_READ = 1, PL_CONN_WRITE = 2 };

typedef struct pl_conn {
  atomic_int refs;
  uint64_t id;
  int flags;                /* PL_CONN_READ | PL_CONN_WRITE, fixed */
  int wake;                 /* eventfd, readable once closed */
  pthread_mutex_t mu;
  pthread_cond_t cv;        /* a turn ended, or the connection closed */
  int fd;                   /* guarded by mu; -1 once really closed */
  int closed;               /* guarded by mu */
  int users;                /* guarded by mu: threads using fd unlocked */
  int sending, receiving;   /* guarded by mu: whose turn it is */
  int eof;                  /* receiver only: the stream ended */
  pl_rbuf rb;               /* receiver only (the thread whose turn it is) */
} pl_conn;

/* Two connected ends: duplex, or *a receive-only and *b send-only.
 * 0, or -errno. */
int pl_conn_pair(int duplex, pl_conn **a, pl_conn **b);
/* A connection around a received descriptor (taken over), registered as
 * `id`; or the one this process already has under that id (then fd is
 * closed).  NULL when out of memory (fd closed). */
pl_conn *pl_conn_adopt(uint64_t id, int fd, int flags);

void pl_conn_incref(pl_conn *c);
void pl_conn_decref(pl_conn *c);

/* Send one frame (buf holds header and payload) carrying fds.  Blocks
 * until it is all written.  A forced cancel stops it at any point; once
 * part of the frame is out, that also closes this process's end, as no
 * frame can follow half of one.  0, PL_ECANCELLED, PL_ECLOSED,
 * PL_ENOTWRITE, or -errno (-EPIPE: nobody can read). */
int pl_conn_send(pl_conn *c, pl_tstate *ts, const unsigned char *buf, size_t len,
                 const int *fds, int nfds);
/* Receive one frame until the deadline.  0 (f filled), PL_ETIMEOUT,
 * PL_ECANCELLED, PL_ECLOSED, PL_EEOF, PL_ESTALLED (the stream ended in
 * the middle of a frame), PL_EMALFORMED, PL_ENOTREAD, or -errno. */
int pl_conn_recv(pl_conn *c, pl_tstate *ts, int64_t deadline, pl_frame *f);
/* 1 when recv would not block (a frame is there, or the end of the
 * stream), 0 at the deadline, or an error code as for recv. */
int pl_conn_poll(pl_conn *c, pl_tstate *ts, int64_t deadline);
/* Close this process's end (idempotent). */
void pl_conn_close(pl_conn *c);
int pl_conn_is_closed(pl_conn *c);
/* The descriptor, or -1 when closed. */
int pl_conn_fileno(pl_conn *c);
/* Add a duplicate of the descriptor to l (for a frame): 0, PL_ECLOSED,
 * or -errno. */
int pl_conn_export(pl_conn *c, pl_fdlist *l);
/* A forked child: start the process-wide lock of adopt afresh. */
void pl_conn_child_reset(void);

#endif
