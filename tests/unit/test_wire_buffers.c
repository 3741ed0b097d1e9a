/* The receive buffer of big frames (proc/wire.c): a frame of 40 MiB is
 * read into a big block (core/bigmem.h), and once it is freed the next
 * big frame is read into the same memory -- no page faults for its bytes
 * (malloc would map 40 MiB afresh: 10,240 faults). */
#include <errno.h>
#include <sys/socket.h>

#include "proc/wire.h"
#include "runner.h"

#define BIG ((size_t)40 << 20)

/* A child that sends two frames of BIG payload bytes (only their first
 * byte differs), then waits for the socket to close. */
static void send_two(int sock) {
  pl_obuf b = {NULL, 0, 0};
  CHECK(pl_obuf_frame_begin(&b, 7, 0, 0) == 0);
  CHECK(pl_obuf_reserve(&b, BIG) == 0);
  memset(b.data + b.len, 'x', BIG);
  b.len += BIG;
  pl_obuf_frame_end(&b, 0);
  for (int i = 0; i < 2; i++) {
    b.data[PL_WIRE_HEADER] = (unsigned char)('a' + i);
    size_t off = 0;
    int r;
    while ((r = pl_wire_send(sock, b.data, b.len, &off, NULL, 0)) == 0) {
    }
    CHECK(r == 1);
  }
  char c;
  (void)read(sock, &c, 1);
  _exit(0);
}

static void recv_one(pl_rbuf *rb, int sock, pl_frame *f) {
  int r;
  while ((r = pl_rbuf_next(rb, f)) == 0) CHECK(pl_rbuf_fill(rb, sock, 1) > 0);
  CHECK_EQ_INT(r, 1);
  CHECK_EQ_INT(f->len, BIG);
}

static void test_reused(void) {
  int sv[2];
  CHECK(pl_socketpair(SOCK_STREAM, sv) == 0);
  if (fork() == 0) {
    close(sv[1]);
    send_two(sv[0]);
  }
  close(sv[0]);
  pl_rbuf rb;
  pl_rbuf_init(&rb);
  pl_frame f;
  recv_one(&rb, sv[1], &f);
  CHECK(f.data[0] == 'a' && f.data[BIG - 1] == 'x');
  pl_frame_free(&f);
  long before = minor_faults();
  recv_one(&rb, sv[1], &f);
  long faults = minor_faults() - before;
  CHECK(f.data[0] == 'b' && f.data[BIG - 1] == 'x');
  pl_frame_free(&f);
  pl_rbuf_free(&rb);
  close(sv[1]);
  if (faults >= 1000) fprintf(stderr, "%ld minor faults for the second frame\n", faults);
  CHECK(faults < 1000);
}

int main(void) {
  static const test_case tests[] = {
      {"a big frame is read into the memory the last one gave back", test_reused},
      {NULL, NULL}};
  return run_tests(tests, 60);
}
