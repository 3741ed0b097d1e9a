/* Private to the parlua runtime: the one list of status codes.
 *
 * A C function of the runtime returns 0 (PL_OK), one of the codes below,
 * or -errno for an operating-system failure, as libuv's functions do.  The
 * codes start at -1000, far below every -errno (1..133 on Linux), so a
 * caller can always tell "the queue is closed" from a real EIO and report
 * the latter as an OS error.  The names start with PL_E so that they never
 * meet the error-object kinds of errors.h (PL_TIMEOUT is "Timeout").
 *
 * The list is an X-macro so that the values and their messages are written
 * once; add a code at the end, with the next value.
 */
#ifndef PL_STATUS_H
#define PL_STATUS_H

#define PL_STATUS_LIST(X)                                                          \
  X(PL_ETIMEOUT,    -1000, "timed out")                                             \
  X(PL_ECANCELLED,  -1001, "cancelled")                                             \
  X(PL_EWOULDWAIT,  -1002, "would have to wait")                                    \
  X(PL_ENOMEM,      -1003, "not enough memory")                                     \
  X(PL_ECLOSED,     -1004, "closed")                                                \
  X(PL_ECLOSING,    -1005, "the runtime is closing")                                \
  X(PL_ENOTHELD,    -1006, "the lock is not held by this thread")                   \
  X(PL_ETOOMANY,    -1007, "released too many times")                               \
  X(PL_EBROKEN,     -1008, "the barrier is broken")                                 \
  X(PL_ESHUTDOWN,   -1009, "the pool is shut down")                                 \
  X(PL_EBROKENPOOL, -1010, "the pool is broken")                                    \
  X(PL_ENOTHREAD,   -1011, "no worker thread could be started")                     \
  X(PL_ESELF,       -1012, "a pool's own task cannot wait for the pool's shutdown") \
  X(PL_ESHARED,     -1013, "a reference item cannot go into a shared queue")        \
  X(PL_EMOVED,      -1014, "the queue has moved to a process channel")              \
  X(PL_EEOF,        -1015, "the other end is closed")                               \
  X(PL_EMALFORMED,  -1016, "the stream does not carry parlua frames")               \
  X(PL_ENOTREAD,    -1017, "this end only sends")                                   \
  X(PL_ENOTWRITE,   -1018, "this end only receives")                                \
  X(PL_ESTALLED,    -1019, "the other side stopped in the middle of a message")     \
  X(PL_ESTARTED,    -1020, "already started")

#define PL_STATUS_ENUM(name, value, text) name = value,
enum { PL_OK = 0, PL_STATUS_LIST(PL_STATUS_ENUM) };
#undef PL_STATUS_ENUM

/* The message of a code of the list, strerror's for -errno, "success"
 * for 0. */
const char *pl_status_text(int code);

#endif
