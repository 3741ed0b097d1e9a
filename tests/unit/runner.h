/* A tiny test runner: each test runs in a child process with a timeout, so
 * a crash or a hang fails that test only.  A failed check prints the file,
 * the line and both values.  The last line is "N passed, N failed". */
#ifndef PL_TEST_RUNNER_H
#define PL_TEST_RUNNER_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*test_fn)(void);
typedef struct { const char *name; test_fn fn; } test_case;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                 \
  do {                                                                     \
    long long a_ = (long long)(a), b_ = (long long)(b);                    \
    if (a_ != b_) {                                                        \
      fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,  \
              __LINE__, #a, #b, a_, b_);                                   \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                    \
  do {                                                                     \
    const char *h_ = (hay), *n_ = (needle);                                \
    if (h_ == NULL || strstr(h_, n_) == NULL) {                            \
      fprintf(stderr, "%s:%d: expected \"%s\" in \"%s\"\n", __FILE__,      \
              __LINE__, n_, h_ ? h_ : "(null)");                           \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

/* Minor page faults of this process so far: what memory reuse saves. */
static inline long minor_faults(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

static inline int run_tests(const test_case *tests, int timeout_seconds) {
  int passed = 0, failed = 0;
  for (const test_case *t = tests; t->name != NULL; t++) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      alarm((unsigned)timeout_seconds);
      t->fn();
      fflush(stdout);
      _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      passed++;
      printf("ok   %s\n", t->name);
    } else {
      failed++;
      if (WIFSIGNALED(status))
        printf("FAIL %s (signal %d%s)\n", t->name, WTERMSIG(status),
               WTERMSIG(status) == SIGALRM ? ": timed out" : "");
      else
        printf("FAIL %s\n", t->name);
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

#endif
