/* communicate's output buffers (proc/child.c): a 40 MiB output through
 * `cat` is read into a big block (core/bigmem.h), and once it is freed the
 * next big output is read into the same memory -- no page faults for its
 * bytes (grown in malloc's memory it faulted in 10,000 pages or more each
 * time). */
#include <errno.h>
#include <stdint.h>

#include "proc/child.h"
#include "runner.h"

#define BIG ((size_t)40 << 20)

/* Send `input` through a new `cat` and return its stdout in c->out[1]. */
static void through_cat(pl_comm *c, const char *input, size_t len) {
  char *argv[] = {"cat", NULL};
  pl_spawn_req req = {argv, NULL, NULL, {{PL_IO_PIPE, -1}, {PL_IO_PIPE, -1}, {PL_IO_INHERIT, -1}},
                      PL_GROUP_INHERIT, 0};
  pl_spawn_res res;
  CHECK_EQ_INT(pl_spawn(&req, &res), 0);
  memset(c->fd, -1, sizeof c->fd);
  memset(c->grown, 0, sizeof c->grown);
  c->fd[0] = res.fds[0];
  c->fd[1] = res.fds[1];
  c->in_nonblock = 1;
  c->input = input;
  c->input_len = len;
  c->input_off = 0;
  pl_poller w;
  pl_poller_begin(&w, NULL, 1);
  CHECK_EQ_INT(pl_communicate(c, &w, INT64_MAX), 0);
  pl_proc proc;
  pl_proc_init(&proc, res.pid, res.pidfd);
  CHECK_EQ_INT(pl_proc_wait(&proc, &w, INT64_MAX), 0);
  pl_proc_destroy(&proc);
  pl_poller_end(&w);
}

static void test_reused(void) {
  char *input = malloc(BIG);
  CHECK(input != NULL);
  for (size_t i = 0; i < BIG; i++) input[i] = (char)(i * 7 + i / 4096);
  pl_comm c;
  memset(&c, 0, sizeof c);
  through_cat(&c, input, BIG);
  CHECK(c.out[1].len == BIG && memcmp(c.out[1].data, input, BIG) == 0);
  pl_comm_free_outputs(&c);
  long before = minor_faults();
  through_cat(&c, input, BIG);
  long faults = minor_faults() - before;
  CHECK(c.out[1].len == BIG && memcmp(c.out[1].data, input, BIG) == 0);
  pl_comm_free_outputs(&c);
  free(input);
  if (faults >= 1000) fprintf(stderr, "%ld minor faults for the second output\n", faults);
  CHECK(faults < 1000);
}

int main(void) {
  static const test_case tests[] = {
      {"a big output is read into the memory the last one gave back", test_reused},
      {NULL, NULL}};
  return run_tests(tests, 60);
}
