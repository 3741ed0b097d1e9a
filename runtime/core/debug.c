/* The checks of debug builds (see debug.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/debug.h"

void pl_assert_failed(const char *what, const char *file, int line) {
  fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, what);
  fflush(stderr);
  abort();
}

int pl_mutex_held(pthread_mutex_t *mu) {
#ifdef __GLIBC__
  return mu->__data.__owner == gettid();
#else
  if (pthread_mutex_trylock(mu) == EBUSY) return 1;
  pthread_mutex_unlock(mu);
  return 0;
#endif
}
