/* Private to the parlua runtime: the lock timeline (par.gil_trace).
 *
 * A trace records every request for, taking of and letting go of the
 * global locks of a family tree -- a state and the `states` workers of its
 * pools, each with its own lock -- into one bounded ring that keeps the
 * newest events.  The families of a tree share one pl_gil_trace, made the
 * first time it is needed and freed when the last family lets go of it.
 *
 * Cost when off: each lock event loads the family's `recording` pointer
 * (relaxed) and finds it NULL.  When on, the event is written under the
 * trace's own mutex, taken inside the lock's mutex (lock order: gil->mu
 * before trace->mu), so the ring's order is the order the lock saw.
 */
#ifndef PL_GIL_TRACE_H
#define PL_GIL_TRACE_H

#include <pthread.h>
#include <stdint.h>

typedef struct pl_gil pl_gil;
typedef struct pl_tstate pl_tstate;

/* Why a thread let the lock go; the names are in pl_gil_reason_name. */
typedef enum pl_gil_reason {
  PL_GIL_SWITCH,      /* its interval expired and a waiter asked for it */
  PL_GIL_URGENT,      /* a thread back from a blocking call asked for it */
  PL_GIL_SLEEP,       /* a blocking call: par.sleep */
  PL_GIL_QUEUE,       /* ... a queue's get, put or join */
  PL_GIL_SYNC,        /* ... a lock, event, condition, semaphore or barrier */
  PL_GIL_FUTURE,      /* ... waiting for futures (result, wait, as_completed) */
  PL_GIL_JOIN,        /* ... joining or starting a thread */
  PL_GIL_POOL,        /* ... a pool's map or shutdown */
  PL_GIL_POPEN,       /* ... a subprocess: wait, communicate, its pipes */
  PL_GIL_PIPE,        /* ... a par.pipe or a process queue */
  PL_GIL_PROCESS,     /* ... a par.process: start, join */
  PL_GIL_FFI,         /* ... an ffi function declared nogil */
  PL_GIL_IO,          /* ... Lua's io and os library, a C module's system call */
  PL_GIL_BLOCKING,    /* ... a blocking call that gave no name (parlua_unlock) */
  PL_GIL_IDLE,        /* a pool worker waits for its next task */
  PL_GIL_THREAD_END,  /* the thread is done */
  PL_GIL_LEAVE,       /* the thread leaves the state (host, callbacks, closing) */
  PL_GIL_NREASONS
} pl_gil_reason;

const char *pl_gil_reason_name(pl_gil_reason why);

enum { PL_GIL_EV_REQUEST = 0, PL_GIL_EV_ACQUIRED = 1, PL_GIL_EV_RELEASED = 2 };

typedef struct pl_gil_event {
  int64_t t_ns;        /* monotonic clock */
  uint32_t lane;       /* index into the lanes of the trace */
  uint8_t kind;        /* PL_GIL_EV_* */
  uint8_t detail;      /* released: a pl_gil_reason; request: 1 when urgent;
                          acquired: 1 when it was held as the trace began */
} pl_gil_event;

/* One lane per OS thread and family: what the picture labels it with. */
typedef struct pl_gil_lane {
  char name[64];
  long ident;          /* the OS thread id (gettid) */
  int state;           /* 1 for the family that started the trace, then 2, 3... */
  const pl_gil *gil;   /* which lock; compared only, never followed */
} pl_gil_lane;

typedef struct pl_gil_trace pl_gil_trace;

/* A snapshot taken by pl_gil_trace_stop, owned by the caller. */
typedef struct pl_gil_trace_log {
  pl_gil_event *events;   /* oldest first */
  size_t nevents;
  uint64_t dropped;       /* events the full ring overwrote */
  size_t capacity;
  pl_gil_lane *lanes;
  size_t nlanes;
  int64_t start_ns, stop_ns;
} pl_gil_trace_log;

/* `gil` joins the tree of `parent` (a states worker's lock joins the lock
 * of the family that made the pool): recorded whenever the tree is.
 * Returns -1 when out of memory (the gil is then simply never traced). */
int pl_gil_trace_join(pl_gil *gil, pl_gil *parent);
/* The gil leaves its tree (its family is being destroyed). */
void pl_gil_trace_leave(pl_gil *gil);

/* Start recording the tree of `gil` into a ring of `capacity` events.
 * 0, -1 out of memory, -2 already recording. */
int pl_gil_trace_start(pl_gil *gil, size_t capacity);
/* Stop, and hand the events over.  0, -1 out of memory, -2 not recording. */
int pl_gil_trace_stop(pl_gil *gil, pl_gil_trace_log *out);
void pl_gil_trace_log_free(pl_gil_trace_log *log);

/* gil.c, holding gil->mu, once it has seen gil->recording non-NULL. */
void pl_gil_trace_record(pl_gil_trace *tr, pl_gil *gil, pl_tstate *ts, int kind, int detail,
                         int64_t t_ns);

/* In a forked child: the parent's other threads are gone, and so is any
 * hold they had on the trees' mutex. */
void pl_gil_trace_child_reset(void);

#endif
