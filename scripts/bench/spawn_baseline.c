/* The floor for scripts/bench/subprocess.lua: N spawns of a program with
 * plain posix_spawn + waitpid and nothing else, as fast as C gets.
 *   spawn_baseline N [program]  ->  prints milliseconds per spawn */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 500;
  char *prog = argc > 2 ? argv[2] : "/bin/true";
  char *child_argv[] = {prog, NULL};
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; i++) {
    pid_t pid;
    int st;
    if (posix_spawn(&pid, prog, NULL, NULL, child_argv, environ) != 0) return perror("posix_spawn"), 1;
    if (waitpid(pid, &st, 0) != pid) return perror("waitpid"), 1;
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  double ms = ((double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6) / n;
  printf("%.4f\n", ms);
  return 0;
}
