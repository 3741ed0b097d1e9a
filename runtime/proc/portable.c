/* Messages that cross a process boundary, and the registry of the objects
 * that can (see portable.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"
#include "proc/conn.h"
#include "core/errors.h"
#include "proc/portable.h"
#include "proc/pqueue.h"

#define HEAD 8
#define ENTRY 24
#define MAX_OBJS PL_WIRE_MAX_FDS  /* every object takes a descriptor at least */

/* ---- ids ------------------------------------------------------------- */

static atomic_uint_fast64_t id_prefix;
static atomic_uint id_counter;
static pthread_once_t prefix_once = PTHREAD_ONCE_INIT;

static uint64_t draw_prefix(void) {
  uint32_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    r = (uint32_t)t.tv_nsec ^ (uint32_t)getpid() * 2654435761u;
  }
  return (uint64_t)(r | 1u) << 32;
}

static void init_prefix(void) { atomic_store(&id_prefix, draw_prefix()); }

uint64_t pl_port_new_id(void) {
  pthread_once(&prefix_once, init_prefix);
  return atomic_load(&id_prefix) | (uint64_t)(atomic_fetch_add(&id_counter, 1) + 1);
}

/* ---- the registry ---------------------------------------------------- */

typedef struct entry {
  struct entry *next;
  uint64_t id;
  int kind;
  void *obj;
  atomic_int *refs;
} entry;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static entry *reg_head;  /* guarded by reg_mu */

void pl_port_register(uint64_t id, int kind, void *obj, atomic_int *refs) {
  entry *e = malloc(sizeof *e);
  if (e == NULL) return;  /* only identity across messages is lost */
  e->id = id;
  e->kind = kind;
  e->obj = obj;
  e->refs = refs;
  pthread_mutex_lock(&reg_mu);
  e->next = reg_head;
  reg_head = e;
  pthread_mutex_unlock(&reg_mu);
}

void pl_port_unregister(uint64_t id, void *obj) {
  entry *gone = NULL;
  pthread_mutex_lock(&reg_mu);
  for (entry **p = &reg_head; *p != NULL; p = &(*p)->next) {
    if ((*p)->id == id && (*p)->obj == obj) {
      gone = *p;
      *p = gone->next;
      break;
    }
  }
  pthread_mutex_unlock(&reg_mu);
  free(gone);
}

/* One more reference, unless the count already reached 0 (the object is
 * on its way out and will unregister itself). */
static int try_incref(atomic_int *refs) {
  int n = atomic_load(refs);
  while (n > 0)
    if (atomic_compare_exchange_weak(refs, &n, n + 1)) return 1;
  return 0;
}

void *pl_port_lookup(uint64_t id, int kind) {
  void *obj = NULL;
  pthread_mutex_lock(&reg_mu);
  for (entry *e = reg_head; e != NULL; e = e->next) {
    if (e->id == id && e->kind == kind && try_incref(e->refs)) {
      obj = e->obj;
      break;
    }
  }
  pthread_mutex_unlock(&reg_mu);
  return obj;
}

void pl_port_child_reset(void) {
  /* Only the forking thread exists now; another thread of the parent may
   * have held reg_mu.  The old entries name the parent's objects: the
   * list is dropped (not freed: its memory is the parent's copy). */
  pthread_mutex_init(&reg_mu, NULL);
  reg_head = NULL;
  atomic_store(&id_prefix, draw_prefix());
  atomic_store(&id_counter, 0);
}

/* ---- objects --------------------------------------------------------- */

void pl_portobj_release(int kind, void *obj) {
  if (kind == PL_PORT_CONN) pl_conn_decref(obj);
  else if (kind == PL_PORT_QUEUE) pl_sync_decref(&((pl_queue *)obj)->head);
}

static void portobj_retain(int kind, void *obj) {
  if (kind == PL_PORT_CONN) pl_conn_incref(obj);
  else if (kind == PL_PORT_QUEUE) pl_sync_incref(&((pl_queue *)obj)->head);
}

/* ---- packing --------------------------------------------------------- */

static void put_entry(unsigned char *p, int kind, int nfds, uint64_t id, int64_t extra) {
  memset(p, 0, ENTRY);
  p[0] = (unsigned char)kind;
  p[1] = (unsigned char)nfds;
  memcpy(p + 8, &id, 8);
  memcpy(p + 16, &extra, 8);
}

static const char *os_reason(int err, char *buf, size_t n) {
  if (err == -E2BIG) snprintf(buf, n, "too many pipes and queues in one message (at most %d descriptors)",
                              PL_WIRE_MAX_FDS);
  else snprintf(buf, n, "%s", strerror(-err));
  return buf;
}

int pl_port_pack(const pl_msg *m, pl_obuf *out, pl_fdlist *fds, char *err, size_t errlen) {
  size_t at = out->len;
  int fd0 = fds->n;
  char why[160];
  if (m->nobjs > MAX_OBJS) {
    snprintf(err, errlen, "too many pipes and queues in one message (at most %d)", MAX_OBJS);
    return -1;
  }
  if (pl_obuf_reserve(out, HEAD + (size_t)m->nobjs * ENTRY + m->len) != 0) {
    snprintf(err, errlen, "not enough memory");
    return -1;
  }
  unsigned char *h = out->data + at;
  memset(h, 0, HEAD);
  h[0] = 'P';
  h[1] = 'M';
  uint16_t n16 = (uint16_t)m->nobjs;
  memcpy(h + 2, &n16, 2);
  out->len += HEAD + (size_t)m->nobjs * ENTRY;
  for (int i = 0; i < m->nobjs; i++) {
    const pl_msgobj *o = &m->objs[i];
    unsigned char *ent = out->data + at + HEAD + (size_t)i * ENTRY;
    int before = fds->n, rc;
    if (o->type->port_kind == PL_PORT_CONN) {
      pl_conn *c = o->obj;
      rc = pl_conn_export(c, fds);
      if (rc == PL_ECLOSED) {
        snprintf(err, errlen, "cannot send a closed pipe connection");
        goto fail;
      }
      if (rc != 0) {
        snprintf(err, errlen, "cannot send a pipe connection: %s", os_reason(rc, why, sizeof why));
        goto fail;
      }
      put_entry(ent, PL_PORT_CONN, 1, c->id, c->flags);
    } else if (o->type->port_kind == PL_PORT_QUEUE) {
      pl_pchan *c;
      uint64_t id;
      long long maxsize;
      if (pl_pchan_attach(o->obj, &c, err, errlen) != 0) goto fail;
      rc = pl_pchan_export(c, fds, &id, &maxsize);
      if (rc != 0) {
        snprintf(err, errlen, "cannot send a queue: %s", os_reason(rc, why, sizeof why));
        goto fail;
      }
      put_entry(ent, PL_PORT_QUEUE, fds->n - before, id, maxsize);
    } else {
      snprintf(err, errlen, "cannot send %s %s to another process", pl_article(o->type->what),
               o->type->what);
      goto fail;
    }
  }
  memcpy(out->data + out->len, m->data, m->len);
  out->len += m->len;
  return 0;
fail:
  out->len = at;
  while (fds->n > fd0) (void)close(fds->fd[--fds->n]);
  return -1;
}

/* Raise a Transfer error for a message that cannot be made portable. */
static int raise_pack(lua_State *L) {
  const char *err = lua_touserdata(L, 1);
  return pl_error_raise(L, PL_TRANSFER, "%s", err);
}

static int crosses(const pl_transfer_type *t) { return t->port_kind != 0; }

void pl_port_encode(lua_State *L, int first, int n, const char *head, const char *each,
                    pl_obuf *out, pl_fdlist *fds) {
  pl_msg *m = pl_codec_encode_portable(L, first, n, head, each, crosses);
  char err[256];
  int rc = pl_port_pack(m, out, fds, err, sizeof err);
  pl_msg_free(m);
  if (rc != 0) {
    lua_pushcfunction(L, raise_pack);
    lua_pushlightuserdata(L, err);
    lua_call(L, 1, 0);
  }
}

typedef struct encode_job {
  const char *head;
  pl_obuf *out;
  pl_fdlist *fds;
} encode_job;

static int encode_protected(lua_State *L) {
  encode_job *j = lua_touserdata(L, 2);
  pl_port_encode(L, 1, 1, j->head, NULL, j->out, j->fds);
  return 0;
}

void pl_port_encode_or_free(lua_State *L, int idx, const char *head, pl_obuf *out, pl_fdlist *fds) {
  encode_job j = {head, out, fds};
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, encode_protected);
  lua_pushvalue(L, idx);
  lua_pushlightuserdata(L, &j);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    pl_obuf_free(out);
    pl_fdlist_free(fds);
    pl_error_throw(L);
  }
}

/* ---- unpacking ------------------------------------------------------- */

int pl_port_unpack(const unsigned char *p, size_t len, int *fds, int nfds, int *used,
                   pl_pmsg *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (len < HEAD || p[0] != 'P' || p[1] != 'M') {
    snprintf(err, errlen, "malformed message: not a portable message");
    return -1;
  }
  uint16_t n16;
  memcpy(&n16, p + 2, 2);
  int nobjs = n16;
  if (nobjs > MAX_OBJS || len - HEAD < (size_t)nobjs * ENTRY) {
    snprintf(err, errlen, "malformed message: bad object table");
    return -1;
  }
  /* Check the whole table before making anything. */
  int need = 0;
  for (int i = 0; i < nobjs; i++) {
    const unsigned char *ent = p + HEAD + (size_t)i * ENTRY;
    int kind = ent[0], k = ent[1];
    if ((kind == PL_PORT_CONN && k != 1) || (kind == PL_PORT_QUEUE && (k < 5 || k > 6)) ||
        (kind != PL_PORT_CONN && kind != PL_PORT_QUEUE)) {
      snprintf(err, errlen, "malformed message: bad object entry");
      return -1;
    }
    need += k;
  }
  if (need > nfds - *used) {
    snprintf(err, errlen, "malformed message: descriptors missing");
    return -1;
  }
  out->objs = nobjs > 0 ? calloc((size_t)nobjs, sizeof *out->objs) : NULL;
  if (nobjs > 0 && out->objs == NULL) {
    snprintf(err, errlen, "not enough memory");
    return -1;
  }
  for (int i = 0; i < nobjs; i++) {
    const unsigned char *ent = p + HEAD + (size_t)i * ENTRY;
    int kind = ent[0], k = ent[1];
    uint64_t id;
    int64_t extra;
    memcpy(&id, ent + 8, 8);
    memcpy(&extra, ent + 16, 8);
    int *mine = fds + *used;
    *used += k;
    void *obj;
    if (kind == PL_PORT_CONN) {
      obj = pl_conn_adopt(id, mine[0], (int)extra);
      mine[0] = -1;
      if (obj == NULL) snprintf(err, errlen, "not enough memory");
    } else {
      obj = pl_pchan_adopt(id, extra, mine, k, err, errlen);
    }
    if (obj == NULL) {
      out->nobjs = i;
      pl_pmsg_free(out);
      return -1;
    }
    out->objs[i].kind = kind;
    out->objs[i].obj = obj;
  }
  out->nobjs = nobjs;
  out->data = p + HEAD + (size_t)nobjs * ENTRY;
  out->len = len - HEAD - (size_t)nobjs * ENTRY;
  return 0;
}

int pl_port_unpack_frame(pl_frame *f, size_t offset, pl_pmsg *out, char *err, size_t errlen) {
  int used = 0;
  int rc = -1;
  if (offset > f->len) snprintf(err, errlen, "malformed message: too short");
  else rc = pl_port_unpack(f->data + offset, f->len - offset, f->fds, f->nfds, &used, out, err, errlen);
  if (rc == 0) {
    out->mem = f->mem;
    out->memcap = f->memcap;
    f->mem = NULL;
    f->memcap = 0;
    f->data = NULL;
  }
  pl_frame_free(f);  /* closes the descriptors nobody took */
  return rc;
}

/* ---- decoding -------------------------------------------------------- */

/* The two portable types as the bindings described them: the same static
 * descriptors in every state of the process (and of its forked children),
 * written when a state registers them, read by decoders. */
static _Atomic(const pl_transfer_type *) port_types[PL_PORT_QUEUE + 1];

void pl_port_register_type(lua_State *L, const pl_transfer_type *t) {
  pl_codec_register_type(L, t);
  atomic_store(&port_types[t->port_kind], t);
}

/* [-0, +0] require `module` through its package.preload entry, as the
 * state's own require would, but whatever the script did to require. */
static void load_module(lua_State *L, const char *module) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_CFunction open = lua_getfield(L, -1, module) == LUA_TFUNCTION ? lua_tocfunction(L, -1) : NULL;
  lua_pop(L, 2);
  if (open == NULL) return;
  luaL_requiref(L, module, open, 0);
  lua_pop(L, 1);
}

static const pl_transfer_type *type_of(lua_State *L, int kind) {
  const pl_transfer_type *t = atomic_load(&port_types[kind]);
  if (t == NULL) pl_error_raise(L, PL_TRANSFER, "malformed message: no type for a portable object");
  if (pl_codec_find_type(L, t->tname) == NULL) {  /* a state that never loaded its module */
    load_module(L, t->module);
    if (pl_codec_find_type(L, t->tname) == NULL)
      pl_error_raise(L, PL_TRANSFER, "no class %s in the receiving state", t->tname);
  }
  return t;
}

int pl_pmsg_decode(lua_State *L, const pl_pmsg *m) {
  pl_msgobj objs[MAX_OBJS];
  pl_msg tmp;
  memset(&tmp, 0, sizeof tmp);
  for (int i = 0; i < m->nobjs; i++) {
    objs[i].type = type_of(L, m->objs[i].kind);
    objs[i].obj = m->objs[i].obj;
  }
  tmp.len = m->len;
  tmp.data = m->data;
  tmp.nobjs = m->nobjs;
  tmp.objs = objs;
  return pl_codec_decode(L, &tmp);
}

int pl_pmsg_copy(const pl_pmsg *m, pl_pmsg *out) {
  memset(out, 0, sizeof *out);
  out->mem = malloc(m->len > 0 ? m->len : 1);
  out->objs = m->nobjs > 0 ? malloc((size_t)m->nobjs * sizeof *out->objs) : NULL;
  if (out->mem == NULL || (m->nobjs > 0 && out->objs == NULL)) {
    free(out->mem);
    free(out->objs);
    memset(out, 0, sizeof *out);
    return -1;
  }
  memcpy(out->mem, m->data, m->len);
  out->data = out->mem;
  out->len = m->len;
  out->nobjs = m->nobjs;
  for (int i = 0; i < m->nobjs; i++) {
    out->objs[i] = m->objs[i];
    portobj_retain(out->objs[i].kind, out->objs[i].obj);
  }
  return 0;
}

void pl_pmsg_free(pl_pmsg *m) {
  for (int i = 0; i < m->nobjs; i++) pl_portobj_release(m->objs[i].kind, m->objs[i].obj);
  free(m->objs);
  pl_frame_mem_free(m->mem, m->memcap);
  memset(m, 0, sizeof *m);
}
