/* Frames on AF_UNIX sockets (see wire.h).
 *
 * Reading.  pl_rbuf keeps what recvmsg gave: bytes in a buffer that grows
 * to hold the whole frame at its head (so a 50 MB result is read in place,
 * into memory the frame then owns, with no second copy; from 32 MiB on a
 * big block, core/bigmem.h, which the next big frame reuses once this one
 * is freed, instead of faulting in fresh pages), and descriptors
 * in arrival order.  A frame takes the first `nfds` pending descriptors
 * once its header is complete: they came with its first byte.  So
 * descriptors still pending once the last buffered frame has taken its
 * own came with bytes already taken: the stream is malformed (else they
 * would go to the next frame that carries any).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/bigmem.h"
#include "proc/wire.h"

#define MAGIC0 'p'
#define MAGIC1 'l'
#define READ_CHUNK 65536
#define STEAL_AT 262144  /* frames at least this big take the buffer itself */
#define AHEAD (64u << 20)  /* room made for a frame's rest at most beyond what came */

static void close_fds(int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) (void)close(fds[i]);
}

void pl_frame_mem_free(void *mem, size_t cap) {
  if (cap >= PL_BIGMEM_MIN) pl_bigmem_free(mem, cap);
  else free(mem);
}

void pl_frame_free(pl_frame *f) {
  close_fds(f->fds, f->nfds);
  f->nfds = 0;
  pl_frame_mem_free(f->mem, f->memcap);
  f->mem = NULL;
  f->memcap = 0;
  f->data = NULL;
  f->len = 0;
}

/* ---- building -------------------------------------------------------- */

int pl_obuf_reserve(pl_obuf *b, size_t extra) {
  if (b->cap - b->len >= extra) return 0;
  size_t cap = b->cap > 0 ? b->cap : 256;
  while (cap - b->len < extra) {
    if (cap > SIZE_MAX / 2) return -1;
    cap *= 2;
  }
  unsigned char *d = realloc(b->data, cap);
  if (d == NULL) return -1;
  b->data = d;
  b->cap = cap;
  return 0;
}

int pl_obuf_put(pl_obuf *b, const void *p, size_t n) {
  if (pl_obuf_reserve(b, n) != 0) return -1;
  if (n > 0) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void pl_obuf_free(pl_obuf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

int pl_obuf_frame_begin(pl_obuf *b, int type, uint32_t aux, int nfds) {
  unsigned char h[PL_WIRE_HEADER];
  memset(h, 0, sizeof h);
  h[0] = MAGIC0;
  h[1] = MAGIC1;
  h[2] = (unsigned char)type;
  h[3] = (unsigned char)nfds;
  memcpy(h + 4, &aux, 4);
  return pl_obuf_put(b, h, sizeof h);
}

void pl_obuf_frame_end(pl_obuf *b, size_t at) {
  uint64_t len = b->len - at - PL_WIRE_HEADER;
  memcpy(b->data + at + 8, &len, 8);
}

void pl_fdlist_init(pl_fdlist *l) { l->n = 0; }

int pl_fdlist_dup(pl_fdlist *l, int fd) {
  if (l->n >= PL_WIRE_MAX_FDS) return -E2BIG;
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (d < 0) return -errno;
  l->fd[l->n++] = d;
  return 0;
}

void pl_fdlist_free(pl_fdlist *l) {
  close_fds(l->fd, l->n);
  l->n = 0;
}

/* ---- sending --------------------------------------------------------- */

int pl_wire_send(int sock, const unsigned char *buf, size_t len, size_t *off,
                 const int *fds, int nfds) {
  while (*off < len) {
    struct iovec iov = {(void *)(buf + *off), len - *off};
    struct msghdr mh;
    union {
      struct cmsghdr align;
      char space[CMSG_SPACE(sizeof(int) * PL_WIRE_MAX_FDS)];
    } ctl;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (*off == 0 && nfds > 0) {
      memset(&ctl, 0, sizeof ctl);
      mh.msg_control = ctl.space;
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n = sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -errno;
    }
    *off += (size_t)n;
  }
  return 1;
}

/* ---- receiving ------------------------------------------------------- */

void pl_rbuf_init(pl_rbuf *b) { memset(b, 0, sizeof *b); }

void pl_rbuf_free(pl_rbuf *b) {
  close_fds(b->fds, b->nfds);
  b->nfds = 0;
  pl_frame_mem_free(b->buf, b->cap);
  b->buf = NULL;
  b->cap = b->start = b->end = 0;
}

/* The buffer from cap to ncap bytes, its first len kept: malloc's while
 * small, a big block (core/bigmem.h) from PL_BIGMEM_MIN on, so that the
 * next big frame reuses the last one's memory instead of faulting in
 * fresh pages.  NULL (p kept) when out of memory. */
static unsigned char *resize(unsigned char *p, size_t cap, size_t ncap, size_t len) {
  if (ncap < PL_BIGMEM_MIN) return realloc(p, ncap);
  if (cap >= PL_BIGMEM_MIN) return pl_bigmem_realloc(p, cap, ncap);
  unsigned char *np = pl_bigmem_alloc(ncap);
  if (np != NULL && len > 0) memcpy(np, p, len);
  if (np != NULL) free(p);
  return np;
}

/* Room for `need` bytes from start, moving what is buffered to the front. */
static int make_room(pl_rbuf *b, size_t need) {
  if (b->start > 0 && (b->cap - b->start < need || b->end == b->start)) {
    memmove(b->buf, b->buf + b->start, b->end - b->start);
    b->end -= b->start;
    b->start = 0;
  }
  if (b->cap - b->start >= need) return 0;
  size_t cap = b->cap > 0 ? b->cap : READ_CHUNK;
  while (cap - b->start < need) {
    if (cap > SIZE_MAX / 2) return -ENOMEM;
    cap *= 2;
  }
  unsigned char *nb = resize(b->buf, b->cap, cap, b->end);
  if (nb == NULL) return -ENOMEM;
  b->buf = nb;
  b->cap = cap;
  return 0;
}

int pl_rbuf_fill(pl_rbuf *b, int sock, int block) {
  size_t have = b->end - b->start;
  int err = make_room(b, have + READ_CHUNK);
  if (err != 0) return err;
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(int) * PL_WIRE_MAX_FDS)];
  } ctl;
  struct iovec iov = {b->buf + b->end, b->cap - b->end};
  struct msghdr mh;
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = ctl.space;
  mh.msg_controllen = sizeof ctl.space;
  ssize_t n;
  do n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | (block ? 0 : MSG_DONTWAIT));
  while (n < 0 && errno == EINTR);
  if (n < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    int got[PL_WIRE_MAX_FDS];
    if (k > PL_WIRE_MAX_FDS) k = PL_WIRE_MAX_FDS;
    memcpy(got, CMSG_DATA(c), sizeof(int) * (size_t)k);
    for (int i = 0; i < k; i++) {
      if (b->nfds < (int)(sizeof b->fds / sizeof b->fds[0])) b->fds[b->nfds++] = got[i];
      else {
        (void)close(got[i]);
        b->broken = 1;
      }
    }
  }
  if (mh.msg_flags & MSG_CTRUNC) b->broken = 1;
  b->end += (size_t)n;
  return (int)(n > INT32_MAX ? INT32_MAX : n);
}

/* 1 and the header's fields when a header is buffered. */
static int header(const pl_rbuf *b, int *type, int *nfds, uint32_t *aux, uint64_t *len) {
  if (b->end - b->start < PL_WIRE_HEADER) return 0;
  const unsigned char *h = b->buf + b->start;
  *type = h[2];
  *nfds = h[3];
  memcpy(aux, h + 4, 4);
  memcpy(len, h + 8, 8);
  return 1 + (h[0] != MAGIC0 || h[1] != MAGIC1 || *nfds > PL_WIRE_MAX_FDS || *len > PL_WIRE_MAX_LEN);
}

int pl_rbuf_has_frame(const pl_rbuf *b) {
  int type, nfds;
  uint32_t aux;
  uint64_t len;
  return header(b, &type, &nfds, &aux, &len) == 1 && b->end - b->start - PL_WIRE_HEADER >= len;
}

int pl_rbuf_check(pl_rbuf *b) {
  int type, nfds;
  uint32_t aux;
  uint64_t len;
  if (b->broken) return -EPROTO;
  int h = header(b, &type, &nfds, &aux, &len);
  if (h == 0) return 0;
  if (h == 2) return -EPROTO;
  size_t total = PL_WIRE_HEADER + (size_t)len;
  if (nfds > b->nfds) return -EPROTO;  /* they come with the header */
  if (b->end - b->start >= total) {
    /* Descriptors beyond the frame's, with no byte of a next frame to
     * have brought them: the sender attached more than it said. */
    if (b->end - b->start == total && b->nfds > nfds) {
      b->broken = 1;
      return -EPROTO;
    }
    return 1;
  }
  /* The rest is read in place; room for it is made as it comes, never
   * far beyond what came (the header's word is not proof). */
  size_t have = b->end - b->start;
  return make_room(b, total - have > AHEAD + (size_t)have ? 2 * have + AHEAD : total);
}

void pl_rbuf_progress(const pl_rbuf *b, size_t *have, uint64_t *total) {
  int type, nfds;
  uint32_t aux;
  uint64_t len;
  *have = b->end - b->start;
  *total = header(b, &type, &nfds, &aux, &len) == 1 ? PL_WIRE_HEADER + len : 0;
}

int pl_rbuf_next(pl_rbuf *b, pl_frame *f) {
  int type = 0, nfds = 0;
  uint32_t aux = 0;
  uint64_t len = 0;
  int rc = pl_rbuf_check(b);
  if (rc <= 0) return rc;
  header(b, &type, &nfds, &aux, &len);
  size_t total = PL_WIRE_HEADER + (size_t)len;
  memset(f, 0, sizeof *f);
  f->type = type;
  f->aux = aux;
  f->len = (size_t)len;
  f->nfds = nfds;
  memcpy(f->fds, b->fds, sizeof(int) * (size_t)nfds);
  b->nfds -= nfds;
  memmove(b->fds, b->fds + nfds, sizeof(int) * (size_t)b->nfds);
  if (len >= STEAL_AT && b->start == 0 && b->end == total) {
    f->mem = b->buf;               /* the frame takes the buffer */
    f->memcap = b->cap;
    f->data = b->buf + PL_WIRE_HEADER;
    b->buf = NULL;
    b->cap = b->start = b->end = 0;
    return 1;
  }
  f->mem = malloc(len > 0 ? (size_t)len : 1);
  if (f->mem == NULL) {
    close_fds(f->fds, f->nfds);
    f->nfds = 0;
    return -ENOMEM;
  }
  f->data = f->mem;
  memcpy(f->data, b->buf + b->start + PL_WIRE_HEADER, (size_t)len);
  b->start += total;
  if (b->start == b->end) b->start = b->end = 0;
  return 1;
}

int pl_socketpair(int type, int sv[2]) {
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) return -errno;
  return 0;
}
