/* libFuzzer target for the C declaration parser of parlua.ffi (runtime/cdecl.c).
 *
 * Built and run by `make fuzz` (FUZZ_SECONDS each, default 600); new inputs
 * go to build-fuzz/cdecl_corpus, the seeds in tests/fuzz/cdecl_corpus stay
 * untouched.
 *
 * Each input is parsed as a declaration and as a type name.  Besides the
 * sanitizers' checks, the target asserts what callers rely on: an error
 * message is non-empty and points at a column inside the input (or one past
 * its end), a success yields counts and names within bounds, and type names
 * print within their buffer.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ffi/cdecl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error(const char *err, size_t size) {
  assert(err[0] != '\0');
  const char *col = strstr(err, "at column ");
  if (col != NULL) {
    long c = strtol(col + 10, NULL, 10);
    assert(c >= 1 && (size_t)c <= size + 1);
  } else {
    assert(strstr(err, "too long") != NULL);
  }
}

static void check_type(const pl_ctype *t, const char *src, size_t size) {
  char name[64];
  assert(t->kind < PL_C_NKINDS);
  if (t->kind == PL_C_POINTER) assert(t->depth >= 1 && t->base < PL_C_POINTER);
  if (t->taglen > 0) assert((size_t)t->tag + t->taglen <= size);
  pl_ctype_name(t, src, name, sizeof name);
  assert(strlen(name) < sizeof name);
  (void)pl_ctype_size(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy, so reading past the input is caught. */
  char *src = malloc(size ? size : 1);
  if (src == NULL) return 0;
  if (size) memcpy(src, data, size);
  char err[256];
  pl_cdecl d;
  memset(err, 'x', sizeof err);
  if (pl_cdecl_parse(src, size, &d, err, sizeof err) == 0) {
    assert(d.nparams >= 0 && d.nparams <= PL_CDECL_MAX_PARAMS);
    assert(strlen(d.name) > 0 && strlen(d.name) < PL_CDECL_MAX_NAME);
    assert(d.ret.kind != PL_C_RECORD && d.ret.kind != PL_C_OPAQUE);
    check_type(&d.ret, src, size);
    for (int i = 0; i < d.nparams; i++) {
      assert(d.params[i].kind != PL_C_VOID && d.params[i].kind != PL_C_RECORD);
      check_type(&d.params[i], src, size);
    }
  } else {
    check_error(err, size);
  }
  pl_ctype t;
  memset(err, 'x', sizeof err);
  if (pl_ctype_parse(src, size, &t, err, sizeof err) == 0) check_type(&t, src, size);
  else check_error(err, size);
  /* A tiny error buffer must still be terminated. */
  char small[8];
  if (pl_ctype_parse(src, size, &t, small, sizeof small) != 0) assert(strlen(small) < sizeof small);
  free(src);
  return 0;
}
