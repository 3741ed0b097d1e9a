/* par.pipe connections (see conn.h).
 *
 * Turns.  A thread sends or receives only in its turn (c->sending,
 * c->receiving), waited for through pl_wait so that a forced cancel or a
 * timeout ends the wait; while it has the turn it uses the descriptor
 * without c->mu (counted in c->users, so close() leaves the descriptor
 * open until it is done) and blocks in ppoll through a child.h waiter,
 * watching the socket and the wake eventfd.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "proc/conn.h"
#include "proc/portable.h"
#include "proc/child.h"

static pl_conn *conn_new(uint64_t id, int fd, int flags) {
  pl_conn *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (c->wake < 0) {
    free(c);
    return NULL;
  }
  atomic_init(&c->refs, 1);
  c->id = id;
  c->fd = fd;
  c->flags = flags;
  pthread_mutex_init(&c->mu, NULL);
  pl_cond_init(&c->cv);
  pl_rbuf_init(&c->rb);
  pl_port_register(id, PL_PORT_CONN, c, &c->refs);
  return c;
}

int pl_conn_pair(int duplex, pl_conn **a, pl_conn **b) {
  int sv[2];
  int err = pl_socketpair(SOCK_STREAM, sv);
  if (err != 0) return err;
  if (!duplex) {  /* a receives, b sends: the other directions are shut */
    (void)shutdown(sv[0], SHUT_WR);
    (void)shutdown(sv[1], SHUT_RD);
  }
  *a = conn_new(pl_port_new_id(), sv[0], duplex ? PL_CONN_READ | PL_CONN_WRITE : PL_CONN_READ);
  *b = *a != NULL ? conn_new(pl_port_new_id(), sv[1], duplex ? PL_CONN_READ | PL_CONN_WRITE : PL_CONN_WRITE) : NULL;
  if (*b == NULL) {
    if (*a != NULL) pl_conn_decref(*a);
    else (void)close(sv[0]);
    (void)close(sv[1]);
    return -ENOMEM;
  }
  return 0;
}

/* Looking up and registering are one step: two threads receiving the
 * same end at once (in two states) must not make two connections of it,
 * whose turns would not exclude each other. */
static pthread_mutex_t adopt_mu = PTHREAD_MUTEX_INITIALIZER;

pl_conn *pl_conn_adopt(uint64_t id, int fd, int flags) {
  pthread_mutex_lock(&adopt_mu);
  pl_conn *c = pl_port_lookup(id, PL_PORT_CONN);
  if (c != NULL) {
    pthread_mutex_unlock(&adopt_mu);
    (void)close(fd);
    return c;
  }
  c = conn_new(id, fd, flags & (PL_CONN_READ | PL_CONN_WRITE));
  pthread_mutex_unlock(&adopt_mu);
  if (c == NULL) (void)close(fd);
  return c;
}

void pl_conn_child_reset(void) { pthread_mutex_init(&adopt_mu, NULL); }

void pl_conn_incref(pl_conn *c) { atomic_fetch_add(&c->refs, 1); }

void pl_conn_decref(pl_conn *c) {
  if (atomic_fetch_sub(&c->refs, 1) != 1) return;
  pl_port_unregister(c->id, c);
  if (c->fd >= 0) (void)close(c->fd);
  (void)close(c->wake);
  pl_rbuf_free(&c->rb);
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

/* ---- turns ----------------------------------------------------------- */

/* Wait for the turn *flag; 0 (taken, the descriptor in use), or a code. */
static int take_turn(pl_conn *c, int *flag, pl_tstate *ts, int64_t deadline) {
  int rc = PL_OK;
  pthread_mutex_lock(&c->mu);
  if (*flag && !c->closed) {
    pthread_mutex_unlock(&c->mu);
    pl_wait_begin(ts, &c->mu, &c->cv);
    pthread_mutex_lock(&c->mu);
    while (*flag && !c->closed && rc == PL_OK) rc = pl_wait(ts, &c->mu, &c->cv, deadline);
    pthread_mutex_unlock(&c->mu);
    pl_wait_end(ts);
    pthread_mutex_lock(&c->mu);
  }
  if (c->closed) rc = PL_ECLOSED;
  else if (*flag) rc = rc == PL_OK ? PL_ETIMEOUT : rc;
  else rc = 0;
  if (rc == 0) {
    *flag = 1;
    c->users++;
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

static void give_turn(pl_conn *c, int *flag) {
  pthread_mutex_lock(&c->mu);
  *flag = 0;
  if (--c->users == 0 && c->closed && c->fd >= 0) {
    (void)close(c->fd);
    c->fd = -1;
  }
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static int is_closed(pl_conn *c) {
  pthread_mutex_lock(&c->mu);
  int closed = c->closed;
  pthread_mutex_unlock(&c->mu);
  return closed;
}

/* Poll the socket for `events` and the wake eventfd.  1 ready, 0 at the
 * deadline, PL_ECANCELLED, PL_ECLOSED, or -errno. */
static int wait_io(pl_conn *c, pl_poller *w, short events, int64_t deadline) {
  struct pollfd pf[2] = {{c->fd, events, 0}, {c->wake, POLLIN, 0}};
  int r = pl_poller_poll(w, pf, 2, deadline);
  if (r < 0) return r;
  if (r == 0) return 0;
  if (pf[1].revents != 0 && is_closed(c)) return PL_ECLOSED;
  return 1;
}

/* ---- sending --------------------------------------------------------- */

int pl_conn_send(pl_conn *c, pl_tstate *ts, const unsigned char *buf, size_t len,
                 const int *fds, int nfds) {
  if (!(c->flags & PL_CONN_WRITE)) return PL_ENOTWRITE;
  int rc = take_turn(c, &c->sending, ts, INT64_MAX);
  if (rc != 0) return rc;
  pl_poller w;
  size_t off = 0;
  for (;;) {
    int r = pl_wire_send(c->fd, buf, len, &off, fds, nfds);
    if (r == 1) {
      rc = 0;
      break;
    }
    if (r < 0) {
      rc = r;
      break;
    }
    pl_poller_begin(&w, ts, 0);
    r = wait_io(c, &w, POLLOUT, INT64_MAX);
    pl_poller_end(&w);
    if (r != 1) {  /* cancelled, closed, or an error */
      rc = r;
      break;
    }
  }
  give_turn(c, &c->sending);
  /* Cancelled with part of the frame out (a receiver that stopped reading
   * must not make a sender uncancellable): no frame can follow half of
   * one, so this process's end is closed, and the receiver hears of a
   * message cut short. */
  if (rc == PL_ECANCELLED && off > 0) pl_conn_close(c);
  return rc;
}

/* ---- receiving ------------------------------------------------------- */

/* With the receive turn: buffer until a frame (or the end) is there.
 * 1 ready, 0 at the deadline, PL_ECANCELLED, or a negative code. */
static int fill_until_frame(pl_conn *c, pl_tstate *ts, int64_t deadline) {
  pl_poller w;
  int armed = 0, rc;
  for (;;) {
    if (c->eof || pl_rbuf_has_frame(&c->rb)) {
      rc = 1;
      break;
    }
    if (c->rb.broken) {
      rc = PL_EMALFORMED;
      break;
    }
    int r = pl_rbuf_fill(&c->rb, c->fd, 0);
    if (r == 0) {
      c->eof = 1;
      continue;
    }
    if (r > 0) {
      /* A header that can never be right: say so now, not at the end. */
      int k = pl_rbuf_check(&c->rb);
      if (k < 0) {
        rc = k == -EPROTO ? PL_EMALFORMED : k;
        break;
      }
      continue;
    }
    if (r == -ECONNRESET) {
      c->eof = 1;
      continue;
    }
    if (r != -EAGAIN) {
      rc = r;
      break;
    }
    if (!armed) {
      pl_poller_begin(&w, ts, 0);
      armed = 1;
    }
    r = wait_io(c, &w, POLLIN, deadline);
    if (r != 1) {
      rc = r;
      break;
    }
  }
  if (armed) pl_poller_end(&w);
  return rc;
}

int pl_conn_recv(pl_conn *c, pl_tstate *ts, int64_t deadline, pl_frame *f) {
  if (!(c->flags & PL_CONN_READ)) return PL_ENOTREAD;
  int rc = take_turn(c, &c->receiving, ts, deadline);
  if (rc != 0) return rc;
  rc = fill_until_frame(c, ts, deadline);
  if (rc == 1) {
    int n = pl_rbuf_next(&c->rb, f);
    if (n == 1) rc = 0;
    else if (n == 0) rc = c->rb.end > c->rb.start ? PL_ESTALLED : PL_EEOF;  /* a cut frame, or none */
    else rc = n == -EPROTO ? PL_EMALFORMED : n;
  } else if (rc == 0) {
    rc = PL_ETIMEOUT;
  }
  give_turn(c, &c->receiving);
  return rc;
}

int pl_conn_poll(pl_conn *c, pl_tstate *ts, int64_t deadline) {
  if (!(c->flags & PL_CONN_READ)) return PL_ENOTREAD;
  int rc = take_turn(c, &c->receiving, ts, deadline);
  if (rc == PL_ETIMEOUT) return 0;
  if (rc != 0) return rc;
  rc = fill_until_frame(c, ts, deadline);
  give_turn(c, &c->receiving);
  return rc;
}

/* ---- closing --------------------------------------------------------- */

void pl_conn_close(pl_conn *c) {
  pthread_mutex_lock(&c->mu);
  if (!c->closed) {
    c->closed = 1;
    uint64_t one = 1;
    ssize_t n = write(c->wake, &one, sizeof one);  /* wakes every poller */
    (void)n;
    if (c->users == 0 && c->fd >= 0) {
      (void)close(c->fd);
      c->fd = -1;
    }
    pthread_cond_broadcast(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);
}

int pl_conn_is_closed(pl_conn *c) { return is_closed(c); }

int pl_conn_fileno(pl_conn *c) {
  pthread_mutex_lock(&c->mu);
  int fd = c->closed ? -1 : c->fd;
  pthread_mutex_unlock(&c->mu);
  return fd;
}

int pl_conn_export(pl_conn *c, pl_fdlist *l) {
  pthread_mutex_lock(&c->mu);
  int rc = c->closed ? PL_ECLOSED : pl_fdlist_dup(l, c->fd);
  pthread_mutex_unlock(&c->mu);
  return rc;
}
