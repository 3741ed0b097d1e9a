/* The process channel of a queue (see pqueue.h for the design).
 *
 * Counting.  page->len counts items put and not yet taken, wherever they
 * are (in the socket, in a memfd, in some process's pending list), so
 * qsize() is exact up to the instant; it is raised before an item is
 * written and lowered after one is read.  page->unfinished and the `done`
 * eventfd change together under page->mu: put drains `done` when
 * unfinished leaves 0, task_done fills it when unfinished reaches 0, so
 * the eventfd is readable exactly while nothing is unfinished.
 *
 * Lock order: q->mu (queue.h), then c->mu, then page->mu; page->mu is
 * never held around anything that blocks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/debug.h"
#include "core/background.h"
#include "core/clock.h"
#include "proc/fork.h"
#include "proc/portable.h"
#include "proc/pqueue.h"
#include "proc/child.h"

#define PAGE_MAGIC 0x706c5131u    /* "plQ1" */
#define PAGE_SIZE 4096
#define INLINE_MAX 65536           /* bigger items go in a memfd */
#define SNDBUF (4 << 20)           /* asked for; the kernel caps it */
#define CLOSED_SLICE_NS (20 * 1000000LL)
#define PAGE_SEALS (F_SEAL_SHRINK | F_SEAL_GROW)

typedef struct pq_page {
  uint32_t magic;
  pthread_mutex_t mu;              /* robust, process-shared */
  long long len;                   /* guarded by mu */
  long long unfinished;            /* guarded by mu */
  atomic_int closed;               /* written under mu */
} pq_page;

typedef struct pend {
  struct pend *next;
  unsigned char *buf;              /* the datagram: header and payload */
  size_t len;
  pl_fdlist fds;
} pend;

enum { FD_W, FD_R, FD_PAGE, FD_DONE, FD_CLOSED, FD_SLOTS, NFD };

struct pl_pchan {
  uint64_t id;
  long long maxsize;
  int fd[NFD];                     /* FD_SLOTS is -1 when unbounded */
  pq_page *page;
  pl_queue *q;                     /* the queue this channel serves */
  pthread_mutex_t mu;
  pthread_cond_t cv;               /* ready, or the pending list drained */
  int ready;                       /* guarded by mu: the items are moved in */
  pthread_t converter;             /* guarded by mu: who moves them */
  pend *head, *tail;               /* guarded by mu: items held back */
  int feeding;                     /* guarded by mu: a feeder thread runs */
};

/* Looking up a received channel and registering it are one step (as for
 * pipes, conn.c): one queue per channel in a process. */
static pthread_mutex_t adopt_mu = PTHREAD_MUTEX_INITIALIZER;

/* Feeders of this process, for pl_pchan_flush_all. */
static pthread_mutex_t feed_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t feed_cv = PTHREAD_COND_INITIALIZER;
static int feeders;                /* guarded by feed_mu */

/* ---- the shared page ------------------------------------------------- */

static void page_lock(pq_page *p) {
  if (pthread_mutex_lock(&p->mu) == EOWNERDEAD) pthread_mutex_consistent(&p->mu);
}

static void page_unlock(pq_page *p) { pthread_mutex_unlock(&p->mu); }

static void efd_add(int fd, uint64_t v) {
  ssize_t n;
  do n = write(fd, &v, sizeof v);
  while (n < 0 && errno == EINTR);
}

static void efd_drain(int fd) {
  uint64_t v;
  ssize_t n;
  do n = read(fd, &v, sizeof v);
  while (n < 0 && errno == EINTR);
}

/* unfinished += d under page->mu, keeping `done` in step. */
static void add_unfinished_locked(pl_pchan *c, long long d) {
  PL_ASSERT_HELD(&c->page->mu);
  long long before = c->page->unfinished;
  c->page->unfinished += d;
  if (before == 0 && c->page->unfinished > 0) efd_drain(c->fd[FD_DONE]);
  else if (before > 0 && c->page->unfinished == 0) efd_add(c->fd[FD_DONE], 1);
}

/* ---- making a channel ------------------------------------------------ */

static void close_all(int *fd, int n) {
  for (int i = 0; i < n; i++)
    if (fd[i] >= 0) {
      (void)close(fd[i]);
      fd[i] = -1;
    }
}

static pl_pchan *chan_alloc(void) {
  pl_pchan *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  for (int i = 0; i < NFD; i++) c->fd[i] = -1;
  pthread_mutex_init(&c->mu, NULL);
  pl_cond_init(&c->cv);
  return c;
}

static void chan_destroy(pl_pchan *c) {
  close_all(c->fd, NFD);
  if (c->page != NULL) munmap(c->page, PAGE_SIZE);
  while (c->head != NULL) {
    pend *p = c->head;
    c->head = p->next;
    pl_fdlist_free(&p->fds);
    free(p->buf);
    free(p);
  }
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

/* New descriptors and page for a queue holding len items, unfinished
 * ones, closed or not.  0 or -errno. */
static int chan_create(pl_pchan *c, long long maxsize, long long len, long long unfinished, int closed) {
  int sv[2], err;
  if ((err = pl_socketpair(SOCK_SEQPACKET, sv)) != 0) return err;
  c->fd[FD_W] = sv[0];
  c->fd[FD_R] = sv[1];
  int big = SNDBUF;
  (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  /* Sealed at its size: a process that could shrink it would crash every
   * other one with SIGBUS at its next touch of the page. */
  c->fd[FD_PAGE] = memfd_create("parlua-queue", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (c->fd[FD_PAGE] < 0 || ftruncate(c->fd[FD_PAGE], PAGE_SIZE) != 0 ||
      fcntl(c->fd[FD_PAGE], F_ADD_SEALS, PAGE_SEALS | F_SEAL_SEAL) != 0)
    return -errno;
  c->page = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd[FD_PAGE], 0);
  if (c->page == MAP_FAILED) {
    c->page = NULL;
    return -errno;
  }
  c->fd[FD_DONE] = eventfd(unfinished == 0 ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK);
  c->fd[FD_CLOSED] = eventfd(closed ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (c->fd[FD_DONE] < 0 || c->fd[FD_CLOSED] < 0) return -errno;
  if (maxsize > 0) {
    long long free_slots = maxsize > len ? maxsize - len : 0;
    c->fd[FD_SLOTS] = eventfd((unsigned)free_slots, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
    if (c->fd[FD_SLOTS] < 0) return -errno;
  }
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&c->page->mu, &ma);
  pthread_mutexattr_destroy(&ma);
  c->page->len = len;
  c->page->unfinished = unfinished;
  atomic_store(&c->page->closed, closed);
  c->page->magic = PAGE_MAGIC;
  c->maxsize = maxsize;
  c->id = pl_port_new_id();
  return 0;
}

pl_pchan *pl_pchan_of(pl_queue *q) { return atomic_load(&q->pchan); }

static void wait_ready(pl_pchan *c) {
  pthread_mutex_lock(&c->mu);
  while (!c->ready && !pthread_equal(c->converter, pthread_self())) pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
}

/* ---- sending items --------------------------------------------------- */

/* A datagram too big to go inline: its payload moves into a memfd that
 * travels as the last descriptor.  0 or -errno. */
static int to_memfd(pl_obuf *item, pl_fdlist *fds) {
  if (fds->n >= PL_WIRE_MAX_FDS) return -E2BIG;
  int mfd = memfd_create("parlua-item", MFD_CLOEXEC);
  if (mfd < 0) return -errno;
  size_t off = PL_WIRE_HEADER;
  while (off < item->len) {
    ssize_t n = write(mfd, item->data + off, item->len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? -errno : -EIO;
      (void)close(mfd);
      return err;
    }
    off += (size_t)n;
  }
  fds->fd[fds->n++] = mfd;
  item->data[3] = (unsigned char)fds->n;
  uint32_t aux = 1;
  memcpy(item->data + 4, &aux, 4);
  item->len = PL_WIRE_HEADER;  /* the length field still says the payload's */
  return 0;
}

/* One datagram: 1 sent, 0 the socket is full, -errno. */
static int send_dgram(pl_pchan *c, const unsigned char *buf, size_t len, const pl_fdlist *fds) {
  size_t off = 0;
  int r = pl_wire_send(c->fd[FD_W], buf, len, &off, fds->fd, fds->n);
  if (r == 1 && off != len) return -EMSGSIZE;  /* cannot happen for a datagram */
  return r;
}

static void *feeder_main(void *arg);

static void start_feeder_locked(pl_pchan *c) {
  PL_ASSERT_HELD(&c->mu);
  if (c->feeding) return;
  pthread_mutex_lock(&feed_mu);
  feeders++;
  pthread_mutex_unlock(&feed_mu);
  c->feeding = 1;
  pl_sync_incref(&c->q->head);  /* the channel lives while it feeds */
  if (pl_background_thread(feeder_main, c, 64 * 1024) != 0) {  /* put then writes itself, blocking (see enqueue) */
    c->feeding = 0;
    pl_sync_decref(&c->q->head);
    pthread_mutex_lock(&feed_mu);
    feeders--;
    pthread_cond_broadcast(&feed_cv);
    pthread_mutex_unlock(&feed_mu);
  }
}

static void count_out(pl_pchan *c, long long items) {
  page_lock(c->page);
  c->page->len -= items;
  add_unfinished_locked(c, -items);
  page_unlock(c->page);
  if (c->fd[FD_SLOTS] >= 0) efd_add(c->fd[FD_SLOTS], (uint64_t)items);
}

/* Try to write the first item held back: 1 when there may be more to do
 * (it went, was lost, or the socket was full and we waited up to wait_ms
 * for room), 0 once nothing is held back -- then, for the feeder
 * (`feeder`), the channel is told no feeder runs any more. */
static int send_first_held(pl_pchan *c, int wait_ms, int feeder) {
  pthread_mutex_lock(&c->mu);
  pend *h = c->head;
  if (h == NULL) {
    if (feeder) {
      c->feeding = 0;
      pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
  }
  int r = send_dgram(c, h->buf, h->len, &h->fds);
  if (r != 0) {
    c->head = h->next;
    if (c->head == NULL) c->tail = NULL;
  }
  pthread_mutex_unlock(&c->mu);
  if (r == 0) {
    struct pollfd pf = {c->fd[FD_W], POLLOUT, 0};
    (void)poll(&pf, 1, wait_ms);
    return 1;
  }
  if (r < 0) count_out(c, 1);  /* lost (cannot happen while we hold the reader) */
  pl_fdlist_free(&h->fds);
  free(h->buf);
  free(h);
  return 1;
}

/* Send the datagram now, or hold it back behind the ones already held
 * back.  Takes the buffer and descriptors.  0 or -errno. */
static int enqueue(pl_pchan *c, unsigned char *buf, size_t len, pl_fdlist *fds) {
  pthread_mutex_lock(&c->mu);
  if (c->head == NULL) {
    int r = send_dgram(c, buf, len, fds);
    if (r != 0) {
      pthread_mutex_unlock(&c->mu);
      free(buf);
      pl_fdlist_free(fds);  /* the receiver has its own copies */
      return r < 0 ? r : 0;
    }
  }
  pend *p = malloc(sizeof *p);
  if (p == NULL) {
    pthread_mutex_unlock(&c->mu);
    free(buf);
    pl_fdlist_free(fds);
    return -ENOMEM;
  }
  p->next = NULL;
  p->buf = buf;
  p->len = len;
  p->fds = *fds;
  fds->n = 0;
  if (c->tail != NULL) c->tail->next = p;
  else c->head = p;
  c->tail = p;
  start_feeder_locked(c);
  int feeding = c->feeding;
  pthread_mutex_unlock(&c->mu);
  if (!feeding)  /* no thread could be started: write it ourselves */
    while (send_first_held(c, 100, 0)) continue;
  return 0;
}

static void *feeder_main(void *arg) {
  pl_pchan *c = arg;
  pl_queue *q = c->q;
  while (send_first_held(c, -1, 1)) continue;
  pl_sync_decref(&q->head);
  pthread_mutex_lock(&feed_mu);
  feeders--;
  pthread_cond_broadcast(&feed_cv);
  pthread_mutex_unlock(&feed_mu);
  return NULL;
}

void pl_pchan_flush_all(void) {
  pthread_mutex_lock(&feed_mu);
  while (feeders > 0) pthread_cond_wait(&feed_cv, &feed_mu);
  pthread_mutex_unlock(&feed_mu);
}

void pl_pchan_child_reset(void) {
  pthread_mutex_init(&adopt_mu, NULL);
  pthread_mutex_init(&feed_mu, NULL);
  pthread_cond_init(&feed_cv, NULL);
  feeders = 0;
}

/* ---- waiting --------------------------------------------------------- */

/* ppoll on fd (and the closed eventfd unless the queue is closed already,
 * then in slices).  1 ready, 0 deadline, PL_ECANCELLED, -errno. */
static int wait_fd(pl_pchan *c, pl_poller *w, int fd, int64_t deadline) {
  struct pollfd pf[2] = {{fd, POLLIN, 0}, {c->fd[FD_CLOSED], POLLIN, 0}};
  nfds_t n = 2;
  int64_t until = deadline;
  if (atomic_load(&c->page->closed)) {
    n = 1;
    int64_t slice = pl_now_ns() + CLOSED_SLICE_NS;
    if (slice < until) until = slice;
  }
  int r = pl_poller_poll(w, pf, n, until);
  if (r == 0 && until != deadline) return 1;  /* a slice: look again */
  return r;
}

/* One try of a wait: 1 done, 0 not yet, or an error code. */
typedef int (*attempt_fn)(pl_pchan *c, void *ud);

/* Try until done, waiting for fd (or the queue's closing) between tries,
 * the thread's poller armed only once a try failed.  Put and get share
 * it.  0, PL_ETIMEOUT, PL_ECANCELLED, or the try's error. */
static int wait_for(pl_pchan *c, pl_tstate *ts, int fd, int64_t deadline, attempt_fn attempt, void *ud) {
  pl_poller w;
  int armed = 0, rc;
  for (;;) {
    rc = attempt(c, ud);
    if (rc != 0) break;
    if (deadline != INT64_MAX && pl_now_ns() >= deadline) {
      rc = PL_ETIMEOUT;
      break;
    }
    if (!armed) {
      pl_poller_begin(&w, ts, 0);
      armed = 1;
    }
    int r = wait_fd(c, &w, fd, deadline);
    if (r < 0) {
      rc = r;
      break;
    }
    if (r == 0) deadline = 0;  /* one last try, then give up */
  }
  if (armed) pl_poller_end(&w);
  return rc == 1 ? 0 : rc;
}

/* ---- put ------------------------------------------------------------- */

/* A free place of a bounded queue (its slots eventfd), unless closed. */
static int take_slot(pl_pchan *c, void *ud) {
  (void)ud;
  uint64_t v;
  if (read(c->fd[FD_SLOTS], &v, sizeof v) == (ssize_t)sizeof v) return 1;
  if (errno != EAGAIN && errno != EINTR) return -errno;
  return atomic_load(&c->page->closed) ? PL_ECLOSED : 0;
}


int pl_pchan_put(pl_pchan *c, pl_tstate *ts, int64_t deadline, pl_obuf *item, pl_fdlist *fds) {
  unsigned char *buf = item->data;
  int rc = 0;
  item->data = NULL;
  wait_ready(c);
  {
    pl_obuf whole = {buf, item->len, item->len};
    pl_obuf_frame_end(&whole, 0);
    buf[3] = (unsigned char)fds->n;
  }
  if (item->len > PL_WIRE_HEADER + INLINE_MAX) {
    pl_obuf tmp = {buf, item->len, item->len};
    rc = to_memfd(&tmp, fds);
    item->len = tmp.len;
    if (rc != 0) goto fail;
  }
  if (atomic_load(&c->page->closed)) {
    rc = PL_ECLOSED;
    goto fail;
  }
  int slot = 0;
  if (c->fd[FD_SLOTS] >= 0) {
    rc = wait_for(c, ts, c->fd[FD_SLOTS], deadline, take_slot, NULL);
    if (rc != 0) goto fail;
    slot = 1;
  }
  page_lock(c->page);
  if (atomic_load(&c->page->closed)) {
    page_unlock(c->page);
    if (slot) efd_add(c->fd[FD_SLOTS], 1);
    rc = PL_ECLOSED;
    goto fail;
  }
  c->page->len++;
  add_unfinished_locked(c, 1);
  page_unlock(c->page);
  rc = enqueue(c, buf, item->len, fds);
  if (rc != 0) count_out(c, 1);
  item->len = 0;
  return rc == -ENOMEM ? PL_ENOMEM : rc;
fail:
  free(buf);
  item->len = 0;
  pl_fdlist_free(fds);
  return rc == -ENOMEM ? PL_ENOMEM : rc;
}

/* ---- get ------------------------------------------------------------- */

/* Read a memfd item's payload into f.  0 or -errno. */
static int read_memfd(int mfd, pl_frame *f) {
  struct stat st;
  if (fstat(mfd, &st) != 0) return -errno;
  if ((uint64_t)st.st_size != f->len) return -EPROTO;
  f->mem = malloc(f->len > 0 ? f->len : 1);
  if (f->mem == NULL) return -ENOMEM;
  f->data = f->mem;
  size_t off = 0;
  while (off < f->len) {
    ssize_t n = pread(mfd, f->data + off, f->len - off, (off_t)off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? -errno : -EPROTO;
    off += (size_t)n;
  }
  return 0;
}

/* One datagram: 1 (f filled), 0 none waiting, -EPROTO, -errno. */
static int recv_dgram(pl_pchan *c, pl_frame *f) {
  size_t cap = PL_WIRE_HEADER + INLINE_MAX + 1;
  unsigned char *buf = malloc(cap);
  if (buf == NULL) return -ENOMEM;
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(int) * PL_WIRE_MAX_FDS)];
  } ctl;
  struct iovec iov = {buf, cap};
  struct msghdr mh;
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = ctl.space;
  mh.msg_controllen = sizeof ctl.space;
  ssize_t n;
  do n = recvmsg(c->fd[FD_R], &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    free(buf);
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  }
  memset(f, 0, sizeof *f);
  for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h != NULL; h = CMSG_NXTHDR(&mh, h)) {
    if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(h) + sizeof(int) * (size_t)i, sizeof fd);
      if (f->nfds < PL_WIRE_MAX_FDS) f->fds[f->nfds++] = fd;
      else (void)close(fd);
    }
  }
  int rc = 1;
  uint64_t len;
  uint32_t aux;
  if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || n < PL_WIRE_HEADER || buf[0] != 'p' ||
      buf[1] != 'l' || buf[2] != PL_PCHAN_ITEM || buf[3] != f->nfds) {
    rc = -EPROTO;
  } else {
    memcpy(&aux, buf + 4, 4);
    memcpy(&len, buf + 8, 8);
    f->type = PL_PCHAN_ITEM;
    f->len = (size_t)len;
    if (aux == 0 && len == (uint64_t)n - PL_WIRE_HEADER) {
      memmove(buf, buf + PL_WIRE_HEADER, (size_t)len);
      f->mem = buf;
      f->data = buf;
      buf = NULL;
    } else if (aux == 1 && n == PL_WIRE_HEADER && f->nfds > 0 && len <= PL_WIRE_MAX_LEN) {
      int mfd = f->fds[--f->nfds];
      rc = read_memfd(mfd, f);
      (void)close(mfd);
      if (rc == 0) rc = 1;
    } else {
      rc = -EPROTO;
    }
  }
  free(buf);
  if (rc != 1) pl_frame_free(f);
  return rc;
}

/* An item into the frame ud, unless the queue is closed and empty. */
static int take_item(pl_pchan *c, void *ud) {
  int r = recv_dgram(c, ud);
  if (r == 1) {
    page_lock(c->page);
    c->page->len--;
    page_unlock(c->page);
    if (c->fd[FD_SLOTS] >= 0) efd_add(c->fd[FD_SLOTS], 1);
    return 1;
  }
  if (r < 0) return r == -ENOMEM ? PL_ENOMEM : r;
  if (atomic_load(&c->page->closed)) {
    page_lock(c->page);
    long long left = c->page->len;
    page_unlock(c->page);
    if (left <= 0) return PL_ECLOSED;
  }
  return 0;
}

int pl_pchan_get(pl_pchan *c, pl_tstate *ts, int64_t deadline, pl_frame *f) {
  wait_ready(c);
  return wait_for(c, ts, c->fd[FD_R], deadline, take_item, f);
}

/* ---- the rest of the queue ------------------------------------------- */

long long pl_pchan_size(pl_pchan *c) {
  page_lock(c->page);
  long long n = c->page->len;
  page_unlock(c->page);
  return n > 0 ? n : 0;
}

long long pl_pchan_maxsize(pl_pchan *c) { return c->maxsize; }

int pl_pchan_task_done(pl_pchan *c) {
  int rc = 0;
  page_lock(c->page);
  if (c->page->unfinished <= 0) rc = PL_ETOOMANY;
  else add_unfinished_locked(c, -1);
  page_unlock(c->page);
  return rc;
}

long long pl_pchan_unfinished(pl_pchan *c) {
  page_lock(c->page);
  long long n = c->page->unfinished;
  page_unlock(c->page);
  return n;
}

int pl_pchan_join(pl_pchan *c, pl_tstate *ts, int64_t deadline) {
  pl_poller w;
  int rc = PL_OK;
  pl_poller_begin(&w, ts, 0);
  while (pl_pchan_unfinished(c) > 0) {
    struct pollfd pf = {c->fd[FD_DONE], POLLIN, 0};
    int r = pl_poller_poll(&w, &pf, 1, deadline);
    if (r == PL_ECANCELLED) {
      rc = PL_ECANCELLED;
      break;
    }
    if (r == 0 && pl_pchan_unfinished(c) > 0) {
      rc = PL_ETIMEOUT;
      break;
    }
  }
  pl_poller_end(&w);
  return rc;
}

void pl_pchan_close(pl_pchan *c) {
  page_lock(c->page);
  int was = atomic_exchange(&c->page->closed, 1);
  page_unlock(c->page);
  if (!was) efd_add(c->fd[FD_CLOSED], 1);
}

int pl_pchan_closed(pl_pchan *c) { return atomic_load(&c->page->closed); }

/* ---- converting a queue ---------------------------------------------- */

/* Move one in-process item into the channel (counted already).  0 or -1. */
static int move_item(pl_pchan *c, pl_qitem *it, char *err, size_t errlen) {
  pl_obuf b = {NULL, 0, 0};
  pl_fdlist fds;
  pl_fdlist_init(&fds);
  int rc = -1;
  if (pl_obuf_frame_begin(&b, PL_PCHAN_ITEM, 0, 0) == 0 &&
      pl_port_pack(it->msg, &b, &fds, err, errlen) == 0) {
    pl_obuf_frame_end(&b, 0);
    b.data[3] = (unsigned char)fds.n;
    rc = b.len > PL_WIRE_HEADER + INLINE_MAX ? to_memfd(&b, &fds) : 0;
    if (rc == 0) {
      rc = enqueue(c, b.data, b.len, &fds);  /* takes both */
      b.data = NULL;
    }
  }
  pl_msg_free(it->msg);
  it->msg = NULL;
  free(b.data);
  pl_fdlist_free(&fds);
  return rc == 0 ? 0 : -1;
}

int pl_pchan_attach(pl_queue *q, pl_pchan **out, char *err, size_t errlen) {
  pl_pchan *c = atomic_load(&q->pchan);
  if (c != NULL) {
    wait_ready(c);
    *out = c;
    return 0;
  }
  c = chan_alloc();
  if (c == NULL) {
    snprintf(err, errlen, "not enough memory");
    return -1;
  }
  pthread_mutex_lock(&q->mu);
  pl_pchan *other = atomic_load(&q->pchan);
  if (other != NULL) {  /* another thread was quicker */
    pthread_mutex_unlock(&q->mu);
    chan_destroy(c);
    wait_ready(other);
    *out = other;
    return 0;
  }
  for (size_t i = 0; i < q->len; i++) {
    const pl_qitem *it = &q->items[(q->first + i) % q->cap];
    const pl_msg *m = it->msg;
    if (it->kind != PL_QITEM_MSG) {
      pthread_mutex_unlock(&q->mu);
      chan_destroy(c);
      snprintf(err, errlen, "queue item %zu: cannot send a value of another state", i + 1);
      return -1;
    }
    for (int k = 0; k < m->nobjs; k++) {
      if (m->objs[k].type->port_kind == 0) {
        pthread_mutex_unlock(&q->mu);
        chan_destroy(c);
        snprintf(err, errlen, "queue item %zu: cannot send %s %s to another process", i + 1,
                 pl_article(m->objs[k].type->what), m->objs[k].type->what);
        return -1;
      }
    }
  }
  size_t n = q->len;
  pl_qitem *moved = n > 0 ? malloc(n * sizeof *moved) : NULL;
  int e = n > 0 && moved == NULL ? -ENOMEM : chan_create(c, q->maxsize, (long long)n, q->unfinished, q->closed);
  if (e != 0) {
    pthread_mutex_unlock(&q->mu);
    free(moved);
    chan_destroy(c);
    snprintf(err, errlen, "cannot send a queue: %s", strerror(-e));
    return -1;
  }
  for (size_t i = 0; i < n; i++) moved[i] = q->items[(q->first + i) % q->cap];
  q->first = 0;
  q->len = 0;
  c->q = q;
  c->converter = pthread_self();
  atomic_store(&q->pchan, c);
  /* In-process waiters wake up and go to the channel. */
  pthread_cond_broadcast(&q->not_empty);
  pthread_cond_broadcast(&q->not_full);
  pthread_cond_broadcast(&q->all_done);
  pthread_mutex_unlock(&q->mu);
  pl_port_register(c->id, PL_PORT_QUEUE, q, &q->head.refs);

  long long lost = 0;
  char why[200];
  for (size_t i = 0; i < n; i++)
    if (move_item(c, &moved[i], why, sizeof why) != 0) lost++;
  free(moved);
  if (lost > 0) count_out(c, lost);  /* cannot happen unless out of descriptors */
  pthread_mutex_lock(&c->mu);
  c->ready = 1;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  *out = c;
  return 0;
}

int pl_pchan_export(pl_pchan *c, pl_fdlist *l, uint64_t *id, long long *maxsize) {
  int n0 = l->n;
  for (int i = 0; i < NFD; i++) {
    if (c->fd[i] < 0) continue;
    int rc = pl_fdlist_dup(l, c->fd[i]);
    if (rc != 0) {
      while (l->n > n0) (void)close(l->fd[--l->n]);
      return rc;
    }
  }
  *id = c->id;
  *maxsize = c->maxsize;
  return 0;
}

static pl_queue *adopt_locked(uint64_t id, long long maxsize, int *fds, int nfds, char *err,
                              size_t errlen);

pl_queue *pl_pchan_adopt(uint64_t id, long long maxsize, int *fds, int nfds, char *err, size_t errlen) {
  pthread_mutex_lock(&adopt_mu);
  pl_queue *q = adopt_locked(id, maxsize, fds, nfds, err, errlen);
  pthread_mutex_unlock(&adopt_mu);
  return q;
}

static pl_queue *adopt_locked(uint64_t id, long long maxsize, int *fds, int nfds, char *err,
                              size_t errlen) {
  PL_ASSERT_HELD(&adopt_mu);
  int want = maxsize > 0 ? NFD : NFD - 1;
  pl_queue *q = pl_port_lookup(id, PL_PORT_QUEUE);
  if (q != NULL || nfds != want || maxsize < 0) {
    for (int i = 0; i < nfds; i++) {
      if (fds[i] >= 0) (void)close(fds[i]);
      fds[i] = -1;
    }
    if (q == NULL) snprintf(err, errlen, "malformed message: bad queue channel");
    return q;
  }
  pl_pchan *c = chan_alloc();
  if (c == NULL) goto nomem;
  for (int i = 0; i < nfds; i++) {
    c->fd[i] = fds[i];
    fds[i] = -1;
  }
  struct stat st;
  int seals = fcntl(c->fd[FD_PAGE], F_GET_SEALS);
  if (fstat(c->fd[FD_PAGE], &st) != 0 || st.st_size < PAGE_SIZE || seals < 0 ||
      (seals & PAGE_SEALS) != PAGE_SEALS)
    goto bad;
  c->page = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd[FD_PAGE], 0);
  if (c->page == MAP_FAILED) {
    c->page = NULL;
    goto bad;
  }
  if (c->page->magic != PAGE_MAGIC) goto bad;
  c->id = id;
  c->maxsize = maxsize;
  c->ready = 1;
  q = pl_queue_new(maxsize);
  if (q == NULL) {
    chan_destroy(c);
    goto nomem;
  }
  c->q = q;
  atomic_store(&q->pchan, c);
  pl_port_register(id, PL_PORT_QUEUE, q, &q->head.refs);
  return q;
bad:
  chan_destroy(c);
  snprintf(err, errlen, "malformed message: bad queue channel");
  return NULL;
nomem:
  for (int i = 0; i < nfds; i++)
    if (fds[i] >= 0) {
      (void)close(fds[i]);
      fds[i] = -1;
    }
  snprintf(err, errlen, "not enough memory");
  return NULL;
}

void pl_pchan_free(pl_pchan *c) {
  if (c == NULL) return;
  pl_port_unregister(c->id, c->q);
  chan_destroy(c);
}
