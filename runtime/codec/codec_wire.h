/* Private to runtime/codec.c (the encoder) and runtime/decode.c (the
 * decoder): the tags of the wire format described in codec.h, its limits,
 * and the MAC that signs bytecode.
 *
 * Kept marks: right after the flags byte the encoder writes
 *   nkept:u32   the number of objects marked T_KEEP
 * and sets T_KEEP on the tag of every object (TABLE, TABLE_MT, FUNC, MSTR,
 * OBJ, DESC) that a later REF or JOIN names -- it goes back to the tag when
 * it writes the first such REF.  The decoder then holds on to those objects
 * only (most tables of a message are never named again), and a REF to an
 * unmarked one is malformed. */
#ifndef PL_CODEC_WIRE_H
#define PL_CODEC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the codec writes numbers in host order and assumes little-endian"
#endif

#define PL_WIRE_MAGIC 'L'
#define PL_WIRE_VERSION 3  /* 3: FLOATS and INTS runs in a table's array part */
#define PL_WIRE_F_REFS 1  /* flags: some REF or JOIN follows */

enum {
  T_NIL, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_STR, T_TABLE, T_TABLE_MT, T_REF,
  T_FUNC, T_GLOBALS, T_NAMED, T_REGMT, T_OBJ, T_DESC, T_JOIN, T_MSTR,
  T_FLOATS, T_INTS,   /* runs of array values: only inside a TABLE's narr values */
  T_SSTR = 0x20,      /* 0x20..0x3f: a string of 0..31 bytes */
  T_SMALLINT = 0x40,  /* 0x40..0x7f: the integers 0..63 */
  T_KEEP = 0x80       /* on the tag of an object that gets an id: a later
                       * REF or JOIN names it */
};

/* The kind of value a NAMED record names; the receiver checks it finds one. */
enum { NAMED_TABLE = 1, NAMED_FUNCTION = 2, NAMED_LIGHT = 3 };

#define PL_WIRE_MAX_DESC 8  /* values in a description */

/* SipHash-2-4 of n bytes under this process's key (codec.c). */
uint64_t pl_codec_mac(const unsigned char *p, size_t n);

#endif
