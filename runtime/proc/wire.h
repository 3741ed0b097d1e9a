/* Private to the parlua runtime: frames on AF_UNIX sockets, the one way
 * bytes and descriptors travel between processes (pool workers, par.pipe
 * connections, the process channels of queues).
 *
 * A frame is a 16-byte header and a payload:
 *   'p' 'l' type:u8 nfds:u8 aux:u32 len:u64      (native byte order: both
 *                                                  ends are this machine)
 * followed by `len` bytes.  Its `nfds` descriptors ride along as one
 * SCM_RIGHTS message attached to the first byte of the header, so they
 * arrive with the header -- Linux never hands the descriptors of two
 * sendmsg calls to one recvmsg, and never gives bytes without the
 * descriptors attached to them.
 *
 * The reader trusts nothing: a bad magic, more descriptors than a frame
 * may carry, descriptors missing or truncated (MSG_CTRUNC), or a length
 * beyond PL_WIRE_MAX_LEN make the stream malformed (-EPROTO), and the
 * caller treats the other side as broken.  Memory follows the bytes that
 * really came, not what a header claims: a header promising gigabytes
 * and then silence costs a few megabytes (its reader bounds the silence).  Nothing here blocks: sends and
 * receives use MSG_DONTWAIT (never O_NONBLOCK, which would change the
 * descriptor for every process sharing it) and MSG_NOSIGNAL, so the caller
 * waits with poll in its own way (cancellable, or watching a pidfd).
 */
#ifndef PL_WIRE_H
#define PL_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define PL_WIRE_HEADER 16
#define PL_WIRE_MAX_FDS 64
#define PL_WIRE_MAX_LEN ((uint64_t)1 << 34)   /* 16 GB: a sanity bound */

/* A received frame.  `mem` is what to free (data points into it), with
 * pl_frame_mem_free(mem, memcap): a big frame's is a big block. */
typedef struct pl_frame {
  int type;
  uint32_t aux;
  void *mem;
  size_t memcap;
  unsigned char *data;
  size_t len;
  int nfds;
  int fds[PL_WIRE_MAX_FDS];
} pl_frame;

/* Close the frame's descriptors (those still >= 0) and free its bytes. */
void pl_frame_free(pl_frame *f);
/* Free a frame's memory, cap bytes (what pl_frame.mem and memcap say). */
void pl_frame_mem_free(void *mem, size_t cap);

/* A growable byte buffer; frames to send are built in one, header first. */
typedef struct pl_obuf {
  unsigned char *data;
  size_t len, cap;
} pl_obuf;

/* 0, or -1 when out of memory. */
int pl_obuf_reserve(pl_obuf *b, size_t extra);
int pl_obuf_put(pl_obuf *b, const void *p, size_t n);
void pl_obuf_free(pl_obuf *b);
/* Start a frame: the header with room for the length, filled by _end. */
int pl_obuf_frame_begin(pl_obuf *b, int type, uint32_t aux, int nfds);
void pl_obuf_frame_end(pl_obuf *b, size_t at);

/* Descriptors a frame will carry (owned: closed by pl_fdlist_free). */
typedef struct pl_fdlist {
  int n;
  int fd[PL_WIRE_MAX_FDS];
} pl_fdlist;

void pl_fdlist_init(pl_fdlist *l);
/* Add a duplicate of fd (close-on-exec).  0, or -errno (EMFILE...), or
 * -E2BIG when the frame cannot carry more. */
int pl_fdlist_dup(pl_fdlist *l, int fd);
void pl_fdlist_free(pl_fdlist *l);

/* Send bytes [*off, len) of a frame on a socket, attaching fds to the
 * first byte.  1 when all is sent, 0 when the socket is full (poll for
 * POLLOUT and call again), -errno (-EPIPE: the reader is gone). */
int pl_wire_send(int sock, const unsigned char *buf, size_t len, size_t *off,
                 const int *fds, int nfds);

/* Bytes and descriptors received from one stream socket. */
typedef struct pl_rbuf {
  unsigned char *buf;
  size_t cap, start, end;
  int nfds;                       /* received, not yet handed to a frame */
  int fds[2 * PL_WIRE_MAX_FDS];
  int broken;                     /* descriptors were lost: malformed */
} pl_rbuf;

void pl_rbuf_init(pl_rbuf *b);
/* Close what is pending and free the buffer. */
void pl_rbuf_free(pl_rbuf *b);
/* One recvmsg (MSG_DONTWAIT unless `block`).  >0 bytes read, 0 end of
 * stream, -EAGAIN, -errno. */
int pl_rbuf_fill(pl_rbuf *b, int sock, int block);
/* Take the next complete frame: 1 (f filled, its bytes malloc'd and its
 * descriptors owned by f), 0 when more bytes are needed, -EPROTO when the
 * stream is malformed, -ENOMEM. */
int pl_rbuf_next(pl_rbuf *b, pl_frame *f);
/* Look at the buffered header without taking anything: 1 a whole frame
 * is there, 0 more is needed (room for the whole frame is made), -EPROTO,
 * -ENOMEM. */
int pl_rbuf_check(pl_rbuf *b);
/* 1 when a whole frame is buffered (nothing taken). */
int pl_rbuf_has_frame(const pl_rbuf *b);
/* The bytes buffered (*have) and, once a header is there, the size of the
 * frame they begin (*total, header included; 0 before). */
void pl_rbuf_progress(const pl_rbuf *b, size_t *have, uint64_t *total);

/* Close-on-exec socketpair; 0 or -errno. */
int pl_socketpair(int type, int sv[2]);

#endif
