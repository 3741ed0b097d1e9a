/* The walker of Lua 5.4 dumps (see bytecode.h). */
#include <stdint.h>

#include "codec/bytecode.h"
#include "codec/codec.h"

typedef struct dump {
  const unsigned char *p, *end;
  int ok;
} dump;

static unsigned dump_byte(dump *u) {
  if (u->p >= u->end) {
    u->ok = 0;
    return 0;
  }
  return *u->p++;
}

static size_t dump_size(dump *u) {  /* MSB first, the last byte has 0x80 */
  size_t x = 0;
  unsigned b;
  do {
    b = dump_byte(u);
    if (x > (SIZE_MAX >> 7)) u->ok = 0;
    x = (x << 7) | (b & 0x7f);
  } while (u->ok && !(b & 0x80));
  return x;
}

static void dump_skip(dump *u, size_t n) {
  if ((size_t)(u->end - u->p) < n) u->ok = 0;
  else u->p += n;
}

static void dump_string(dump *u) {
  size_t n = dump_size(u);
  if (n > 0) dump_skip(u, n - 1);
}

#define DUMP_HEADER 31  /* signature 4, version, format, data 6, 3 sizes, int 8, num 8 */
#define OP_SETUPVAL 10  /* lopcodes.h of Lua 5.4 */

static void dump_constants(dump *u) {
  size_t nk = dump_size(u);
  for (size_t i = 0; u->ok && i < nk; i++) {
    switch (dump_byte(u)) {
    case 0: case 1: case 17: break;            /* nil, false, true */
    case 3: case 19: dump_skip(u, 8); break;   /* integer, float */
    case 4: case 20: dump_string(u); break;    /* short, long string */
    default: u->ok = 0; break;
    }
  }
}

int pl_bytecode_upvalues_match(const unsigned char *code, size_t n, unsigned nups) {
  dump u = {code, code + n, 1};
  dump_skip(&u, DUMP_HEADER);
  unsigned closure = dump_byte(&u);
  dump_string(&u);                    /* source */
  dump_size(&u);                      /* linedefined */
  dump_size(&u);                      /* lastlinedefined */
  dump_skip(&u, 3);                   /* numparams, is_vararg, maxstacksize */
  size_t ncode = dump_size(&u);
  if (!u.ok || ncode > (size_t)(u.end - u.p) / 4) return 0;
  dump_skip(&u, ncode * 4);
  dump_constants(&u);
  size_t proto = dump_size(&u);
  return u.ok && closure == nups && proto == nups;
}

/* Walk one function of a dump (after its header); *writes is set when any
 * of its instructions, or of the functions nested in it, assigns an
 * upvalue.  0 when the dump is not what 5.4 writes. */
static int dump_function(dump *u, int depth, int *writes) {
  if (depth > PL_CODEC_MAX_DEPTH) return 0;
  dump_string(u);
  dump_size(u);
  dump_size(u);
  dump_skip(u, 3);
  size_t ncode = dump_size(u);
  if (!u->ok || ncode > (size_t)(u->end - u->p) / 4) return 0;
  for (size_t i = 0; i < ncode; i++)  /* the opcode: the low 7 bits, little-endian */
    if ((u->p[4 * i] & 0x7f) == OP_SETUPVAL) *writes = 1;
  dump_skip(u, ncode * 4);
  dump_constants(u);
  size_t nup = dump_size(u);
  if (!u->ok || nup > (size_t)(u->end - u->p) / 3) return 0;
  dump_skip(u, nup * 3);
  size_t np = dump_size(u);
  for (size_t i = 0; u->ok && i < np; i++)
    if (!dump_function(u, depth + 1, writes)) return 0;
  size_t nline = dump_size(u);           /* debug information */
  dump_skip(u, nline);
  size_t nabs = dump_size(u);
  for (size_t i = 0; u->ok && i < nabs; i++) {
    dump_size(u);
    dump_size(u);
  }
  size_t nloc = dump_size(u);
  for (size_t i = 0; u->ok && i < nloc; i++) {
    dump_string(u);
    dump_size(u);
    dump_size(u);
  }
  size_t nnames = dump_size(u);
  for (size_t i = 0; u->ok && i < nnames; i++) dump_string(u);
  return u->ok;
}

int pl_bytecode_keeps_upvalues(const unsigned char *code, size_t n) {
  dump u = {code, code + n, 1};
  int writes = 0;
  dump_skip(&u, DUMP_HEADER + 1);
  return dump_function(&u, 0, &writes) && u.p == u.end && !writes;
}
