/* The lock timeline: a ring of lock events shared by a family tree (see
 * gil_trace.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/debug.h"
#include "core/clock.h"
#include "core/gil.h"
#include "core/gil_trace.h"
#include "core/tstate.h"

struct pl_gil_trace {
  int refs;                 /* guarded by homes_mu: the gils that joined */
  pthread_mutex_t mu;       /* guards everything below */
  pl_gil **gils;            /* the tree's locks; changed under homes_mu too */
  size_t ngils, gils_cap;
  int on;
  uint64_t epoch;           /* bumped at every start: cached lanes go stale */
  pl_gil_event *ring;
  size_t capacity;
  uint64_t written;         /* events ever written this session */
  pl_gil_lane *lanes;
  size_t nlanes, lanes_cap;
  int next_state;
  int64_t start_ns;
};

/* Guards every gil's trace_home and every trace's refs: joining a tree
 * must not race with its root making the tree's trace. */
static pthread_mutex_t homes_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const reason_names[PL_GIL_NREASONS] = {
    [PL_GIL_SWITCH] = "interval expired",
    [PL_GIL_URGENT] = "urgent request",
    [PL_GIL_SLEEP] = "blocking call: sleep",
    [PL_GIL_QUEUE] = "blocking call: queue",
    [PL_GIL_SYNC] = "blocking call: lock wait",
    [PL_GIL_FUTURE] = "blocking call: future wait",
    [PL_GIL_JOIN] = "blocking call: thread join",
    [PL_GIL_POOL] = "blocking call: pool",
    [PL_GIL_POPEN] = "blocking call: popen",
    [PL_GIL_PIPE] = "blocking call: pipe",
    [PL_GIL_PROCESS] = "blocking call: process",
    [PL_GIL_FFI] = "blocking call: ffi nogil",
    [PL_GIL_IO] = "blocking call: io",
    [PL_GIL_BLOCKING] = "blocking call",
    [PL_GIL_IDLE] = "worker idle",
    [PL_GIL_THREAD_END] = "thread end",
    [PL_GIL_LEAVE] = "left the state",
};

const char *pl_gil_reason_name(pl_gil_reason why) {
  return (unsigned)why < PL_GIL_NREASONS ? reason_names[why] : "unknown";
}

static pl_gil_trace *trace_new(void) {
  pl_gil_trace *tr = calloc(1, sizeof *tr);
  if (tr == NULL) return NULL;
  if (pthread_mutex_init(&tr->mu, NULL) != 0) {
    free(tr);
    return NULL;
  }
  return tr;
}

static void trace_free(pl_gil_trace *tr) {
  pthread_mutex_destroy(&tr->mu);
  free(tr->gils);
  free(tr->ring);
  free(tr->lanes);
  free(tr);
}

/* Under homes_mu: `gil` becomes a member of tr (one more reference). */
static int add_gil_locked(pl_gil_trace *tr, pl_gil *gil) {
  PL_ASSERT_HELD(&homes_mu);
  pthread_mutex_lock(&tr->mu);
  if (tr->ngils == tr->gils_cap) {
    size_t cap = tr->gils_cap ? tr->gils_cap * 2 : 4;
    pl_gil **g = realloc(tr->gils, cap * sizeof *g);
    if (g == NULL) {
      pthread_mutex_unlock(&tr->mu);
      return -1;
    }
    tr->gils = g;
    tr->gils_cap = cap;
  }
  tr->gils[tr->ngils++] = gil;
  gil->trace_home = tr;
  tr->refs++;
  if (tr->on) atomic_store(&gil->recording, tr);
  pthread_mutex_unlock(&tr->mu);
  return 0;
}

/* Under homes_mu: the tree's trace of `gil`, made when it has none. */
static pl_gil_trace *home_of_locked(pl_gil *gil) {
  PL_ASSERT_HELD(&homes_mu);
  if (gil->trace_home != NULL) return gil->trace_home;
  pl_gil_trace *tr = trace_new();
  if (tr == NULL) return NULL;
  if (add_gil_locked(tr, gil) != 0) {
    trace_free(tr);
    return NULL;
  }
  return tr;
}

int pl_gil_trace_join(pl_gil *gil, pl_gil *parent) {
  pthread_mutex_lock(&homes_mu);
  pl_gil_trace *tr = home_of_locked(parent);
  int rc = tr != NULL ? add_gil_locked(tr, gil) : -1;
  pthread_mutex_unlock(&homes_mu);
  return rc;
}

void pl_gil_trace_leave(pl_gil *gil) {
  pthread_mutex_lock(&homes_mu);
  pl_gil_trace *tr = gil->trace_home;
  if (tr != NULL) {
    pthread_mutex_lock(&tr->mu);
    for (size_t i = 0; i < tr->ngils; i++) {
      if (tr->gils[i] == gil) {
        tr->gils[i] = tr->gils[--tr->ngils];
        break;
      }
    }
    atomic_store(&gil->recording, NULL);
    pthread_mutex_unlock(&tr->mu);
    gil->trace_home = NULL;
    if (--tr->refs == 0) trace_free(tr);
  }
  pthread_mutex_unlock(&homes_mu);
}

static void set_recording_locked(pl_gil_trace *tr, pl_gil_trace *value) {
  PL_ASSERT_HELD(&tr->mu);
  for (size_t i = 0; i < tr->ngils; i++) atomic_store(&tr->gils[i]->recording, value);
}

/* Under homes_mu (the tree cannot change): a lock held all along, such as a
 * busy states worker's, would show no event at all; so each holder gets an
 * "acquired" when the trace begins (detail 1: it had the lock already). */
static void record_holders(pl_gil_trace *tr) {
  for (size_t i = 0; i < tr->ngils; i++) {
    pl_gil *g = tr->gils[i];
    pthread_mutex_lock(&g->mu);
    if (atomic_load(&g->locked) && g->holder != NULL)
      pl_gil_trace_record(tr, g, g->holder, PL_GIL_EV_ACQUIRED, 1, tr->start_ns);
    pthread_mutex_unlock(&g->mu);
  }
}

int pl_gil_trace_start(pl_gil *gil, size_t capacity) {
  pthread_mutex_lock(&homes_mu);
  pl_gil_trace *tr = home_of_locked(gil);
  if (tr == NULL) {
    pthread_mutex_unlock(&homes_mu);
    return -1;
  }
  pthread_mutex_lock(&tr->mu);
  int rc = 0;
  if (tr->on) {
    rc = -2;
  } else if (capacity != tr->capacity) {
    pl_gil_event *ring = malloc(capacity * sizeof *ring);
    if (ring == NULL) rc = -1;
    else {
      free(tr->ring);
      tr->ring = ring;
      tr->capacity = capacity;
    }
  }
  if (rc == 0) {
    tr->epoch++;
    tr->written = 0;
    tr->nlanes = 0;
    tr->next_state = 2;
    gil->trace_state = 1;  /* the caller's family is state 1 */
    gil->trace_state_epoch = tr->epoch;
    tr->start_ns = pl_now_ns();
    tr->on = 1;
    set_recording_locked(tr, tr);
  }
  pthread_mutex_unlock(&tr->mu);
  if (rc == 0) record_holders(tr);
  pthread_mutex_unlock(&homes_mu);
  return rc;
}

static int copy_out_locked(pl_gil_trace *tr, pl_gil_trace_log *out) {
  PL_ASSERT_HELD(&tr->mu);
  memset(out, 0, sizeof *out);
  size_t n = tr->written < tr->capacity ? (size_t)tr->written : tr->capacity;
  out->events = malloc((n ? n : 1) * sizeof *out->events);
  out->lanes = malloc((tr->nlanes ? tr->nlanes : 1) * sizeof *out->lanes);
  if (out->events == NULL || out->lanes == NULL) {
    pl_gil_trace_log_free(out);
    return -1;
  }
  /* Oldest first: once the ring has wrapped, the oldest is at the cursor. */
  size_t first = tr->written > tr->capacity ? (size_t)(tr->written % tr->capacity) : 0;
  for (size_t i = 0; i < n; i++) out->events[i] = tr->ring[(first + i) % tr->capacity];
  out->nevents = n;
  out->dropped = tr->written - n;
  out->capacity = tr->capacity;
  memcpy(out->lanes, tr->lanes, tr->nlanes * sizeof *out->lanes);
  out->nlanes = tr->nlanes;
  out->start_ns = tr->start_ns;
  out->stop_ns = pl_now_ns();
  return 0;
}

int pl_gil_trace_stop(pl_gil *gil, pl_gil_trace_log *out) {
  pthread_mutex_lock(&homes_mu);
  pl_gil_trace *tr = gil->trace_home;
  int rc = -2;
  if (tr != NULL) {
    pthread_mutex_lock(&tr->mu);
    if (tr->on) {
      tr->on = 0;
      set_recording_locked(tr, NULL);
      rc = copy_out_locked(tr, out);
    }
    pthread_mutex_unlock(&tr->mu);
  }
  pthread_mutex_unlock(&homes_mu);
  return rc;
}

void pl_gil_trace_log_free(pl_gil_trace_log *log) {
  free(log->events);
  free(log->lanes);
  log->events = NULL;
  log->lanes = NULL;
  log->nevents = log->nlanes = 0;
}

/* Under tr->mu: the lane of ts's thread in `gil`'s family.  A host
 * thread that enters and leaves a state gets a new tstate each time but
 * keeps its lane, so lanes are found by (lock, thread), with the tstate
 * remembering its lane for the rest of the session. */
static int lane_of_locked(pl_gil_trace *tr, pl_gil *gil, pl_tstate *ts, uint32_t *lane) {
  PL_ASSERT_HELD(&tr->mu);
  if (ts->trace_epoch == tr->epoch) {
    *lane = ts->trace_lane;
    return 0;
  }
  long ident = ts->ident;
  size_t i = 0;
  while (i < tr->nlanes && !(tr->lanes[i].gil == gil && tr->lanes[i].ident == ident)) i++;
  if (i == tr->nlanes) {
    if (tr->nlanes == tr->lanes_cap) {
      size_t cap = tr->lanes_cap ? tr->lanes_cap * 2 : 8;
      pl_gil_lane *l = realloc(tr->lanes, cap * sizeof *l);
      if (l == NULL) return -1;
      tr->lanes = l;
      tr->lanes_cap = cap;
    }
    if (gil->trace_state_epoch != tr->epoch) {
      gil->trace_state = tr->next_state++;
      gil->trace_state_epoch = tr->epoch;
    }
    pl_gil_lane *l = &tr->lanes[tr->nlanes++];
    snprintf(l->name, sizeof l->name, "%s", ts->name[0] != '\0' ? ts->name : "MainThread");
    l->ident = ident;
    l->state = gil->trace_state;
    l->gil = gil;
  }
  ts->trace_epoch = tr->epoch;
  ts->trace_lane = (uint32_t)i;
  *lane = (uint32_t)i;
  return 0;
}

void pl_gil_trace_record(pl_gil_trace *tr, pl_gil *gil, pl_tstate *ts, int kind, int detail,
                         int64_t t_ns) {
  pthread_mutex_lock(&tr->mu);
  uint32_t lane;
  if (tr->on && ts != NULL && lane_of_locked(tr, gil, ts, &lane) == 0) {
    pl_gil_event *ev = &tr->ring[tr->written % tr->capacity];
    ev->t_ns = t_ns;
    ev->lane = lane;
    ev->kind = (uint8_t)kind;
    ev->detail = (uint8_t)detail;
    tr->written++;
  }
  pthread_mutex_unlock(&tr->mu);
}

void pl_gil_trace_child_reset(void) {
  pthread_mutex_init(&homes_mu, NULL);
}
