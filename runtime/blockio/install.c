/* Installing the lock-releasing io/os functions in a state, and handing
 * the libc interposers their way to the lock (blockio.h, interpose.h). */
#include <dlfcn.h>
#include <pthread.h>

#include "core/blocking.h"
#include "core/tstate.h"
#include "blockio/blockio.h"
#include "blockio/interpose.h"

static int holds(void) { return pl_blocking_would_release(); }
static void *begin(int what) {
  pl_gil_reason why = what == PL_LIBC_SLEEP ? PL_GIL_SLEEP : what == PL_LIBC_CHILD ? PL_GIL_POPEN : PL_GIL_IO;
  return pl_blocking_begin(NULL, why);
}
static void end(void *token) { pl_blocking_end(token); }

static const parlua_interpose_ops ops = {holds, begin, end};

/* The interposers are there when the program (or a preloaded library)
 * exports their attach function; otherwise the libc calls stay libc's. */
static void attach_interposers(void) {
  void *sym = dlsym(RTLD_DEFAULT, PL_INTERPOSE_ATTACH);
  if (sym != NULL) {
    parlua_interpose_attach_fn attach;
    *(void **)&attach = sym;  /* POSIX: a dlsym'd pointer converts to a function */
    attach(&ops);
  }
}

void pl_blockio_install(lua_State *L) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, attach_interposers);
  pl_iolib_install(L);
  pl_oslib_install(L);
  pl_print_install(L);
}
