/* Private to the parlua runtime: messages that cross a process boundary.
 *
 * A codec message (codec.h) is bytes plus an object table of C pointers,
 * which mean nothing in another process.  Its portable form replaces each
 * object by a process-portable reference: a kind, a 64-bit id and the
 * descriptors the object is made of, which travel beside the bytes as
 * SCM_RIGHTS (wire.h).  Two kinds of object can do that -- par.pipe
 * connections and par.queue queues (through the queue's process channel,
 * pqueue.h); every other runtime object (locks, events, conditions,
 * semaphores, barriers) is refused when the message is encoded, with a
 * Transfer error naming where it was ("argument 1: cannot send a lock to
 * another process").  Because descriptors go with every message, a pipe
 * or a queue can be sent to a process whenever it likes -- also to one
 * started before the pipe or queue was made.
 *
 *   portable := 'P' 'M' nobjs:u16 reserved:u32
 *               (kind:u8 nfds:u8 reserved:u16 pad:u32 id:u64 extra:i64)*nobjs
 *               codec-message-bytes
 *
 * The receiver looks each id up in a process-wide registry of the
 * connections and queues it already has (so an object that comes back,
 * or comes twice, is the same object, and the duplicate descriptors are
 * closed) and otherwise makes one around the descriptors it received.
 * The registry is process-wide rather than per runtime because
 * descriptors and fork are: two runtimes in one process see the same
 * socket as the same object.  It holds no references: an object leaves
 * it when its last reference goes.
 *
 * Ids are unique across processes: a random 32-bit prefix per process
 * (drawn again in every forked child) and a counter.
 */
#ifndef PL_PORTABLE_H
#define PL_PORTABLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "lua.h"
#include "codec/codec.h"
#include "proc/wire.h"

enum { PL_PORT_CONN = 1, PL_PORT_QUEUE = 2 };

/* pl_codec_register_type for a type with a port_kind, which is also
 * remembered for the process: a receiving state that has not registered it
 * yet gets it from its module (t->module, from package.preload). */
void pl_port_register_type(lua_State *L, const pl_transfer_type *t);

typedef struct pl_portobj {
  int kind;      /* PL_PORT_* */
  void *obj;     /* a pl_conn or pl_queue, one reference */
} pl_portobj;

/* A message ready to decode in any state of this process. */
typedef struct pl_pmsg {
  void *mem;                 /* what to free (pl_frame_mem_free) */
  size_t memcap;
  const unsigned char *data; /* the codec bytes, inside mem */
  size_t len;
  int nobjs;
  pl_portobj *objs;          /* malloc'd */
} pl_pmsg;

/* ---- ids and the registry -------------------------------------------- */

uint64_t pl_port_new_id(void);
/* Register obj (whose reference count is *refs) under id. */
void pl_port_register(uint64_t id, int kind, void *obj, atomic_int *refs);
/* Forget obj, if it is what id names (called as its count reaches 0). */
void pl_port_unregister(uint64_t id, void *obj);
/* The object registered under id with one more reference, or NULL (none,
 * or it is being destroyed). */
void *pl_port_lookup(uint64_t id, int kind);
/* In a forked child, before anything else: a fresh registry and id
 * prefix (the parent's entries are objects the child must not touch). */
void pl_port_child_reset(void);

/* ---- messages -------------------------------------------------------- */

/* The portable form of m appended to out, duplicates of the objects'
 * descriptors added to fds.  0, or -1 with a message in err (an object
 * that cannot cross, descriptors exhausted, no memory). */
int pl_port_pack(const pl_msg *m, pl_obuf *out, pl_fdlist *fds, char *err, size_t errlen);

/* [-0, +0] Encode the n values from `first` (named as for
 * pl_codec_encode) straight into the portable form.  Raises a Transfer
 * error, having added nothing to out or fds. */
void pl_port_encode(lua_State *L, int first, int n, const char *head, const char *each,
                    pl_obuf *out, pl_fdlist *fds);

/* [-0, +0] The one value at idx, encoded as by pl_port_encode (named
 * `head`) after what out holds.  On an error out and fds are freed first:
 * for a caller whose message would otherwise leak when the error unwinds. */
void pl_port_encode_or_free(lua_State *L, int idx, const char *head, pl_obuf *out, pl_fdlist *fds);

/* Read the portable form in [p, p+len), taking descriptors from fds[]
 * from *used on (each taken one is set to -1).  0, or -1 with err
 * (malformed: nothing is left half-made). */
int pl_port_unpack(const unsigned char *p, size_t len, int *fds, int nfds, int *used,
                   pl_pmsg *out, char *err, size_t errlen);
/* The same for a whole received frame: its bytes are taken over (f->mem
 * becomes the message's), its unused descriptors closed. */
int pl_port_unpack_frame(pl_frame *f, size_t offset, pl_pmsg *out, char *err, size_t errlen);

/* [-0, +n] Decode the values into L; raises a Transfer error. */
int pl_pmsg_decode(lua_State *L, const pl_pmsg *m);
/* A copy sharing nothing but the objects (referenced again).  0 or -1. */
int pl_pmsg_copy(const pl_pmsg *m, pl_pmsg *out);
/* Let go of the bytes and the objects; no Lua state needed. */
void pl_pmsg_free(pl_pmsg *m);

/* Objects, by kind. */
void pl_portobj_release(int kind, void *obj);

#endif
