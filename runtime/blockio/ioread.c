/* The reading half of Lua's io library, without the Lua state (ioread.h).
 * The behaviour, format by format, is Lua 5.4's liolib.c. */
#include <ctype.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>

#include "blockio/ioread.h"

#define CHUNK 4096

/* Room for `extra` more bytes in out->data; 0 when out of memory. */
static int reserve(pl_readout *out, size_t *cap, size_t extra) {
  if (out->len + extra <= *cap) return 1;
  size_t want = *cap > 0 ? *cap : CHUNK;
  while (want < out->len + extra) want *= 2;
  char *p = realloc(out->data, want);
  if (p == NULL) {
    out->nomem = 1;
    return 0;
  }
  out->data = p;
  *cap = want;
  return 1;
}

void pl_read_line(FILE *f, int chop, pl_readout *out) {
  size_t cap = 0;
  ssize_t n = getline(&out->data, &cap, f);
  if (n < 0) {  /* end of file (or an error) before any byte */
    out->len = 0;
    out->ok = 0;
    return;
  }
  out->len = (size_t)n;
  int newline = n > 0 && out->data[n - 1] == '\n';
  if (newline && chop) out->len--;
  out->ok = newline || out->len > 0;
}

void pl_read_all(FILE *f, pl_readout *out) {
  size_t cap = 0, nr;
  do {
    if (!reserve(out, &cap, CHUNK)) return;
    nr = fread(out->data + out->len, 1, CHUNK, f);
    out->len += nr;
  } while (nr == CHUNK);
  out->ok = 1;
}

void pl_read_chars(FILE *f, size_t n, pl_readout *out) {
  size_t cap = 0;
  /* Grow as bytes come rather than allocate all of a huge count at once. */
  while (out->len < n) {
    size_t step = n - out->len < CHUNK * 16 ? n - out->len : CHUNK * 16;
    if (!reserve(out, &cap, step)) return;
    size_t nr = fread(out->data + out->len, 1, step, f);
    out->len += nr;
    if (nr < step) break;
  }
  out->ok = out->len > 0;
}

void pl_read_eof(FILE *f, pl_readout *out) {
  int c = getc(f);
  ungetc(c, f);  /* no-op when c == EOF */
  out->ok = c != EOF;
}

/* liolib's numeral scanner: a buffer, and one character of look-ahead. */
typedef struct scan {
  FILE *f;
  int c;
  int n;
  char *buff;
} scan;

static int nextc(scan *s) {
  if (s->n >= PL_MAXLENNUM) {  /* too long: invalidate the numeral */
    s->buff[0] = '\0';
    return 0;
  }
  s->buff[s->n++] = (char)s->c;
  s->c = getc_unlocked(s->f);
  return 1;
}

static int test2(scan *s, const char *set) {
  if (s->c == set[0] || s->c == set[1]) return nextc(s);
  return 0;
}

static int readdigits(scan *s, int hex) {
  int count = 0;
  while ((hex ? isxdigit(s->c) : isdigit(s->c)) && nextc(s)) count++;
  return count;
}

void pl_read_number(FILE *f, pl_readout *out) {
  scan s = {f, 0, 0, out->num};
  int count = 0, hex = 0;
  char decp[2];
  decp[0] = localeconv()->decimal_point[0];  /* lua_getlocaledecpoint() */
  decp[1] = '.';
  flockfile(f);
  do { s.c = getc_unlocked(f); } while (isspace(s.c));
  test2(&s, "-+");
  if (test2(&s, "00")) {
    if (test2(&s, "xX")) hex = 1;
    else count = 1;  /* the initial '0' is a digit */
  }
  count += readdigits(&s, hex);
  if (test2(&s, decp)) count += readdigits(&s, hex);
  if (count > 0 && test2(&s, hex ? "pP" : "eE")) {
    test2(&s, "-+");
    readdigits(&s, 0);
  }
  ungetc(s.c, f);
  funlockfile(f);
  s.buff[s.n] = '\0';
  out->ok = 1;  /* the caller decides, with lua_stringtonumber */
}
