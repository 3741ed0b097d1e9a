/* The floor for scripts/bench/subprocess.lua's communicate: the same bytes
 * through the same `cat` and back, as fast as C gets -- 1 MiB pipes, a poll
 * loop writing the input and reading straight into an output buffer whose
 * pages were faulted in before the clock starts, and no copy after.
 *   comm_baseline MIB  ->  prints the seconds of one round trip */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double round_trip(const char *in, char *out, size_t n) {
  double t0 = now();
  int to[2], from[2];
  if (pipe2(to, O_CLOEXEC) != 0 || pipe2(from, O_CLOEXEC) != 0) return perror("pipe2"), -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, to[0], 0);
  posix_spawn_file_actions_adddup2(&fa, from[1], 1);
  char *argv[] = {"cat", NULL};
  pid_t pid;
  if (posix_spawnp(&pid, "cat", &fa, NULL, argv, environ) != 0) return perror("posix_spawnp"), -1;
  posix_spawn_file_actions_destroy(&fa);
  close(to[0]);
  close(from[1]);
  (void)fcntl(to[1], F_SETPIPE_SZ, 1 << 20);
  (void)fcntl(from[0], F_SETPIPE_SZ, 1 << 20);
  (void)fcntl(to[1], F_SETFL, O_NONBLOCK);
  size_t sent = 0, got = 0;
  int wfd = to[1], rfd = from[0];
  while (rfd >= 0) {
    struct pollfd pf[2] = {{rfd, POLLIN, 0}, {wfd, POLLOUT, 0}};
    if (poll(pf, wfd >= 0 ? 2 : 1, -1) < 0) return perror("poll"), -1;
    if (wfd >= 0 && pf[1].revents) {
      ssize_t w = write(wfd, in + sent, n - sent);
      if (w > 0) sent += (size_t)w;
      if (sent == n) {
        close(wfd);
        wfd = -1;
      }
    }
    if (pf[0].revents) {
      ssize_t r = read(rfd, out + got, n + 1 - got);
      if (r > 0) got += (size_t)r;
      if (r == 0) {
        close(rfd);
        rfd = -1;
      }
    }
  }
  int st;
  waitpid(pid, &st, 0);
  double dt = now() - t0;
  if (got != n || memcmp(in, out, n) != 0) return fprintf(stderr, "cat lost data\n"), -1;
  return dt;
}

int main(int argc, char **argv) {
  size_t n = (size_t)(argc > 1 ? atoi(argv[1]) : 64) << 20;
  char *in = malloc(n), *out = malloc(n + 1);
  if (in == NULL || out == NULL) return perror("malloc"), 1;
  for (size_t i = 0; i < n; i++) in[i] = "0123456789abcdef"[i % 16];
  memset(out, 0, n + 1);  /* faulted in: the best case */
  double dt = round_trip(in, out, n);
  if (dt < 0) return 1;
  printf("%.6f\n", dt);
  return 0;
}
