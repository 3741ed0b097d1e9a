/* Private to parlua: a parser for the C declarations parlua.ffi reads.
 *
 *   double cos(double)
 *   int snprintf(char *buf, size_t n, const char *fmt, ...);
 *   int clock_gettime(int, struct timespec *)
 *
 * and for bare type names ("unsigned long long", "const char *").  It knows
 * only the scalar types of API.md section 8 and pointers: `struct x *`,
 * `union x *` and `T *` for any other name T are opaque pointers, which
 * is all the ABI needs of them.  Structs by value, function pointers and
 * long double are rejected with a message.
 *
 * No Lua and no allocation, so that it can be fuzzed on its own
 * (tests/fuzz/fuzz_cdecl.c).  Every error message names the offending
 * token and its 1-based column: "unexpected 'foo' at column 12: expected
 * a type".
 */
#ifndef PL_CDECL_H
#define PL_CDECL_H

#include <stddef.h>

typedef enum pl_ckind {
  PL_C_VOID,
  PL_C_BOOL,
  PL_C_CHAR, PL_C_SCHAR, PL_C_UCHAR,
  PL_C_SHORT, PL_C_USHORT,
  PL_C_INT, PL_C_UINT,
  PL_C_LONG, PL_C_ULONG,
  PL_C_LLONG, PL_C_ULLONG,
  PL_C_INT8, PL_C_UINT8, PL_C_INT16, PL_C_UINT16,
  PL_C_INT32, PL_C_UINT32, PL_C_INT64, PL_C_UINT64,
  PL_C_SIZE, PL_C_SSIZE, PL_C_INTPTR, PL_C_UINTPTR, PL_C_PTRDIFF,
  PL_C_FLOAT, PL_C_DOUBLE,
  PL_C_RECORD,   /* struct/union tag: only ever pointed at */
  PL_C_OPAQUE,   /* another type name, e.g. FILE: only ever pointed at */
  PL_C_POINTER,  /* any T *; `base` says what T is */
  PL_C_NKINDS
} pl_ckind;

typedef struct pl_ctype {
  unsigned char kind;      /* pl_ckind */
  unsigned char base;      /* pointers: the kind under all the stars */
  unsigned char depth;     /* pointers: how many stars */
  unsigned char is_const;  /* pointers: what it points at is const */
  unsigned short tag;      /* RECORD/OPAQUE base: its name, as an offset */
  unsigned short taglen;   /* and length in the parsed text */
} pl_ctype;

#define PL_CDECL_MAX_PARAMS 32
#define PL_CDECL_MAX_NAME 128
#define PL_CDECL_MAX_LEN 4096  /* longest text accepted (tags are 16-bit offsets) */

typedef struct pl_cdecl {
  pl_ctype ret;
  int nparams;             /* not counting the `...` */
  int variadic;            /* ends in `...` */
  char name[PL_CDECL_MAX_NAME];
  pl_ctype params[PL_CDECL_MAX_PARAMS];
} pl_cdecl;

/* Parse a function declaration of `len` bytes.  0 on success; -1 with a
 * message in err (always NUL-terminated when errlen > 0). */
int pl_cdecl_parse(const char *src, size_t len, pl_cdecl *out, char *err, size_t errlen);

/* Parse a type name ("int", "struct tm *").  `void` is accepted; a struct
 * by value is not.  0 or -1 with a message. */
int pl_ctype_parse(const char *src, size_t len, pl_ctype *out, char *err, size_t errlen);

/* sizeof the type; 0 for void (and for RECORD/OPAQUE, which have none). */
size_t pl_ctype_size(const pl_ctype *t);

/* 1 for the integer kinds (bool and char included), 0 otherwise. */
int pl_ckind_is_integer(int kind);
/* 1 when the integer kind is signed. */
int pl_ckind_is_signed(int kind);

/* 1 for `const char *`: the type that means "a string" to parlua.ffi. */
int pl_ctype_is_string(const pl_ctype *t);

/* Write the type's canonical name ("unsigned int", "const char *",
 * "struct timespec *") into buf.  `src` is the text the type was parsed
 * from (for tag names; may be NULL, then tags print as "?"). */
void pl_ctype_name(const pl_ctype *t, const char *src, char *buf, size_t n);

#endif
