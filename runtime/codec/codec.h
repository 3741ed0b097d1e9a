/* Private to the parlua runtime: the value codec -- a Lua value of one state
 * turned into bytes (a message), and back into a value of another state.
 *
 * What crosses, and how (API.md section 5):
 *   nil, booleans, integers, floats (their 64 bits, so NaN payloads and
 *   -0.0 survive), strings (any bytes);
 *   tables, with shared references and cycles kept and metatables carried
 *   along (a metatable made by luaL_newmetatable, such as the error
 *   objects', goes by its registry name and arrives as the receiver's own);
 *   Lua functions as bytecode with debug information (tracebacks keep their
 *   lines) plus their upvalues, encoded the same way; upvalues shared
 *   between closures stay shared (lua_upvalueid / lua_upvaluejoin);
 *   the sender's globals table (an `_ENV` upvalue, `_G`) arrives as the
 *   receiver's globals, so local functions and closures work there;
 *   C functions, tables and light userdata reachable by name from
 *   package.loaded -- a module (`string`, `parlua`) or a field of one
 *   (`string.format`, `_G.print`, `cjson.null`) -- go by name and arrive as
 *   the receiver's own (required there if needed);
 *   a C function without upvalues that has no name goes as itself (same
 *   process only);
 *   userdata whose metatable is a registered transfer type (below).
 * Anything else is refused with a Transfer error naming the path to the
 * value: `argument 2: field "cb": cannot send a coroutine`.
 *
 * Transfer types.  A binding registers, per state, the box types that may
 * cross (pl_codec_register_type), keyed by metatable.  A *shared* type
 * (locks, events, queues, ...) travels out of band: the message keeps a
 * reference to the C object itself, and the receiver gets a new box holding
 * the same object.  Bytes never carry a pointer: they name an entry of the
 * message's object table, so a forged message cannot make one up.  A
 * *described* type (ffi functions) travels as a few plain values from which
 * the receiver rebuilds its own object.
 *
 * The wire format (version 3), little-endian, every length a varint:
 *   message  := 'L' 0x03 flags:u8 nkept:u32 count:varint value*count
 *   value    := NIL | FALSE | TRUE | INT zigzag | SMALLINT(0..63 in the tag)
 *             | FLOAT 8 bytes | STR len bytes | SSTR(len 0..31 in the tag) bytes
 *             | MSTR len bytes (a table key that later REFs repeat)
 *             | TABLE narr:u32 nhash:u32 item* (key value)*nhash
 *               where the items make narr values: a value, or a run of
 *               k >= 2 of them, FLOATS k:u32 8-bytes*k | INTS k:u32 zigzag*k
 *               (consecutive floats, or integers beyond 0..63, of the
 *               array part)
 *             | TABLE_MT (as TABLE) metatable-value
 *             | REF id | GLOBALS | REGMT name-string
 *             | NAMED module-string has_field:u8 [field-string] kind:u8
 *             | FUNC mac:u64 len bytecode nups:u8 (value | JOIN id:varint n:u8)*nups
 *             | OBJ index | DESC tname-string module-string n:u8 primitive*n
 * Every table, function, userdata and MSTR that is not a REF gets the next
 * id, in order of appearance (a table or function before its contents),
 * so a REF or JOIN names an earlier one; flags bit 0 says whether there is
 * any, and the tag of every object one names carries a mark (nkept counts
 * them: codec_wire.h).  The globals and named values take no id.
 *
 * The decoder trusts nothing: every length, count, id and index is checked
 * against what the message holds, nesting is limited, and bytecode is only
 * ever loaded (mode "b"), never run.  Lua's loader itself trusts binary
 * chunks (crafted ones crash it), so bytecode travels with a MAC
 * (SipHash-2-4 under a key made once per process from the system's
 * randomness, inherited by forked children): the decoder loads only
 * bytecode this process -- or its forked workers -- encoded.  Any byte
 * string thus decodes or raises a Transfer error ("malformed message: ...").
 *
 * Caches (all per state, all safe to drop):
 *   sender:   the bytecode of each function (a weak-keyed table), with
 *             its MAC; the reverse name map of package.loaded, rebuilt
 *             when package.loaded changes;
 *   receiver: functions without upvalues (or only the globals) by MAC,
 *             checked byte for byte, reused across messages (their one
 *             upvalue is reset each time).
 * Buffers are reused; a small message is one allocation.
 *
 * Errors: the encoder raises a Transfer error in the sending state (having
 * let go of everything it took), the decoder a Transfer error in the
 * receiving state.  Neither holds any mutex.
 */
#ifndef PL_CODEC_H
#define PL_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lua.h"

#define PL_CODEC_MAX_DEPTH 200

typedef struct pl_transfer_type pl_transfer_type;
typedef struct pl_msg pl_msg;

/* "a" or "an", for messages naming a type's `what`: "an event". */
static inline const char *pl_article(const char *noun) {
  return noun[0] != '\0' && strchr("aeiou", noun[0]) != NULL ? "an" : "a";
}

struct pl_transfer_type {
  const char *tname;   /* metatable name of the box (registry key) */
  const char *what;    /* "queue": for messages */
  const char *module;  /* require'd by a receiver that lacks the type */
  /* Shared types (describe == NULL): the box is a userdata holding one
   * pointer to the object (NULL once closed). */
  void (*retain)(void *obj);
  void (*release)(void *obj);
  /* Optional, sender, its lock held: obj is about to be seen by another
   * state.  0, or -1 with an error message pushed. */
  int (*share)(lua_State *L, void *obj);
  /* Receiver: push a new box holding a new reference to obj. */
  void (*push)(lua_State *L, const pl_transfer_type *t, void *obj);
  /* Described types: push at most 8 nil/boolean/number/string values from
   * which rebuild(L, n) makes the receiver's own object ([-n, +1]). */
  int (*describe)(lua_State *L, int idx);
  void (*rebuild)(lua_State *L, int n);
  /* PL_PORT_CONN or PL_PORT_QUEUE for the two types that can cross to
   * another process (proc/portable.h), 0 for the others. */
  int port_kind;
};

typedef struct pl_msgobj {
  const pl_transfer_type *type;
  void *obj;           /* one reference, owned by the message */
} pl_msgobj;

struct pl_msg {
  size_t len;
  int nobjs;
  int big;             /* data is a separate allocation, */
  size_t cap;          /* ... of cap bytes (codec.c: malloc's or a big block) */
  const unsigned char *data;
  pl_msgobj *objs;
};

/* Register t for the metatable registered under t->tname (which must
 * exist) in L's state. */
void pl_codec_register_type(lua_State *L, const pl_transfer_type *t);
/* The type registered under `tname` in L's state, or NULL. */
const pl_transfer_type *pl_codec_find_type(lua_State *L, const char *tname);

/* [-0, +0] Encode the n values from index `first` into a new message.
 * Values are named in errors `head` (the first, if head != NULL) and then
 * by `each`, a format whose %d (if any) is the position from 1 ("argument
 * %d").  Raises a Transfer error. */
pl_msg *pl_codec_encode(lua_State *L, int first, int n, const char *head, const char *each);
/* The same for a message bound for another process: shared objects whose
 * type `crosses` does not accept (locks, events, ...: all but pipes and
 * queues, runtime/portable.h) and C functions without a name are refused
 * with a Transfer error naming where they were ("argument 1: cannot send
 * a lock to another process"). */
pl_msg *pl_codec_encode_portable(lua_State *L, int first, int n, const char *head, const char *each,
                                 int (*crosses)(const pl_transfer_type *t));
/* The same for a message bound for an mpi worker, which may be on another
 * machine: every shared object and every C function without a name is
 * refused ("argument 1: cannot send a queue to an mpi worker (no shared
 * object crosses machines)"); the message's object table stays empty, so
 * its bytes alone are the message. */
pl_msg *pl_codec_encode_remote(lua_State *L, int first, int n, const char *head, const char *each);
/* [-0, +n] Decode every value of m into L and return their number; m is
 * not changed (it may be decoded again).  Raises a Transfer error. */
int pl_codec_decode(lua_State *L, const pl_msg *m);
/* [-0, +n] the same for bytes with no object table (a test hook, the
 * fuzzer; later, data from another process). */
int pl_codec_decode_bytes(lua_State *L, const void *data, size_t len);

/* The bytecode key, for processes that are not forked children and must
 * decode each other's functions: kind mpi's master hands its key to the
 * ranks that serve it (MPI ranks of one job trust each other), which set
 * it before they decode or encode anything. */
void pl_codec_get_key(uint64_t key[2]);
void pl_codec_set_key(const uint64_t key[2]);

/* Tests only (the fuzzer, its seed generator): sign bytecode with a fixed,
 * public key instead of this process's secret one. */
void pl_codec_use_test_key(void);

pl_msg *pl_msg_copy(const pl_msg *m);
/* Releases the objects the message holds; no Lua state needed. */
void pl_msg_free(pl_msg *m);

#endif
