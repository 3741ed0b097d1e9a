/* Background threads (see background.h). */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>

#include "core/background.h"
#include "core/thread.h"

static void pin_once(void) {
  Dl_info info;
  if (dladdr((void *)&pin_once, &info) != 0 && info.dli_fname != NULL)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

void pl_pin_library(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, pin_once);
}

int pl_background_thread(void *(*fn)(void *), void *arg, size_t stack) {
  pl_pin_library();
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);  /* the new thread inherits the mask */
  int err = pl_os_thread_start(fn, arg, stack);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return err;
}
