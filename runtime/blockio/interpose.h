/* Private to parlua: the contract between the runtime and the libc
 * interposers (src/interpose.c), which live outside the runtime's
 * libraries -- in the `parlua` program, and in libparlua_preload.so for a
 * stock lua5.4 (LD_PRELOAD).
 *
 * The interposers know nothing of Lua: they find `parlua_interpose_attach`
 * exported, the runtime calls it once with these functions, and from then
 * on a call that would block asks `holds` whether the calling thread holds
 * a global lock and runs Lua code, and if so gives it away with `begin`
 * and takes it back with `end` (core/blocking.h).
 */
#ifndef PL_INTERPOSE_H
#define PL_INTERPOSE_H

/* What an interposed call waits for, for the lock timeline. */
enum { PL_LIBC_IO, PL_LIBC_SLEEP, PL_LIBC_CHILD };

typedef struct parlua_interpose_ops {
  int (*holds)(void);
  void *(*begin)(int what);  /* PL_LIBC_*; NULL: nothing was let go */
  void (*end)(void *token);
} parlua_interpose_ops;

#define PL_INTERPOSE_ATTACH "parlua_interpose_attach"
typedef void (*parlua_interpose_attach_fn)(const parlua_interpose_ops *ops);
void parlua_interpose_attach(const parlua_interpose_ops *ops);

#endif
