/* The C declaration parser of parlua.ffi (see cdecl.h).
 *
 * A declaration is   type name '(' params ')' [';']
 * a parameter is     type [name] ['[' [digits] ']']   (an array is a pointer)
 * a type is          specifiers and qualifiers in any order, then stars,
 *                    each optionally followed by qualifiers.
 * Specifiers combine as C says (`unsigned long long int`, `short signed`);
 * a combination C rejects is an error at the token that breaks it.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "ffi/cdecl.h"

enum { T_END, T_IDENT, T_NUMBER, T_PUNCT, T_ELLIPSIS, T_BAD };

typedef struct token {
  int type;
  size_t pos, len;
} token;

typedef struct parser {
  const char *src;
  size_t len;
  token t;          /* the current token */
  char *err;
  size_t errlen;
} parser;

/* ---- tokens ---- */

static int is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

/* The token that starts at or after `pos`. */
static token lex(const parser *p, size_t pos) {
  token t;
  while (pos < p->len && is_space((unsigned char)p->src[pos])) pos++;
  t.pos = pos;
  t.len = 1;
  if (pos >= p->len) {
    t.type = T_END;
    t.len = 0;
    return t;
  }
  unsigned char c = (unsigned char)p->src[pos];
  if (is_alpha(c) || is_digit(c)) {
    size_t e = pos + 1;
    while (e < p->len && (is_alpha((unsigned char)p->src[e]) || is_digit((unsigned char)p->src[e]))) e++;
    t.type = is_digit(c) ? T_NUMBER : T_IDENT;
    t.len = e - pos;
  } else if (c == '.' && p->len - pos >= 3 && memcmp(p->src + pos, "...", 3) == 0) {
    t.type = T_ELLIPSIS;
    t.len = 3;
  } else if (strchr("*(),;[]", c) != NULL && c != '\0') {
    t.type = T_PUNCT;
  } else {
    t.type = T_BAD;
  }
  return t;
}

static void advance(parser *p) { p->t = lex(p, p->t.pos + p->t.len); }

static int is_punct(const token *t, const parser *p, char c) {
  return t->type == T_PUNCT && p->src[t->pos] == c;
}

static int tok_is(const parser *p, const token *t, const char *word) {
  size_t n = strlen(word);
  return t->type == T_IDENT && t->len == n && memcmp(p->src + t->pos, word, n) == 0;
}

/* Set the error: "unexpected <token> at column N: <what>".  Returns -1. */
static int fail_at(parser *p, const token *t, const char *what) {
  if (p->errlen == 0) return -1;
  int col = (int)t->pos + 1;
  if (t->type == T_END) {
    snprintf(p->err, p->errlen, "unexpected end of input at column %d: %s", col, what);
  } else if (t->type == T_BAD) {
    unsigned char c = (unsigned char)p->src[t->pos];
    if (c >= 0x20 && c < 0x7f)
      snprintf(p->err, p->errlen, "unexpected '%c' at column %d: %s", c, col, what);
    else
      snprintf(p->err, p->errlen, "unexpected byte 0x%02x at column %d: %s", c, col, what);
  } else {
    int n = t->len > 40 ? 40 : (int)t->len;
    snprintf(p->err, p->errlen, "unexpected '%.*s%s' at column %d: %s", n, p->src + t->pos,
             t->len > 40 ? "..." : "", col, what);
  }
  return -1;
}

static int fail(parser *p, const char *what) { return fail_at(p, &p->t, what); }

/* ---- specifiers ---- */

enum { K_QUAL, K_CONST, K_SIGNED, K_UNSIGNED, K_SHORT, K_LONG, K_INT, K_CHAR, K_BASE, K_RECORD, K_ENUM };

typedef struct keyword {
  const char *name;
  int cls;
  int kind;  /* K_BASE: the pl_ckind */
} keyword;

static const keyword keywords[] = {
    {"const", K_CONST, 0},        {"volatile", K_QUAL, 0},       {"restrict", K_QUAL, 0},
    {"__restrict", K_QUAL, 0},    {"__restrict__", K_QUAL, 0},   {"signed", K_SIGNED, 0},
    {"unsigned", K_UNSIGNED, 0},  {"short", K_SHORT, 0},         {"long", K_LONG, 0},
    {"int", K_INT, 0},            {"char", K_CHAR, 0},           {"void", K_BASE, PL_C_VOID},
    {"bool", K_BASE, PL_C_BOOL},  {"_Bool", K_BASE, PL_C_BOOL},  {"float", K_BASE, PL_C_FLOAT},
    {"double", K_BASE, PL_C_DOUBLE},
    {"int8_t", K_BASE, PL_C_INT8},     {"uint8_t", K_BASE, PL_C_UINT8},
    {"int16_t", K_BASE, PL_C_INT16},   {"uint16_t", K_BASE, PL_C_UINT16},
    {"int32_t", K_BASE, PL_C_INT32},   {"uint32_t", K_BASE, PL_C_UINT32},
    {"int64_t", K_BASE, PL_C_INT64},   {"uint64_t", K_BASE, PL_C_UINT64},
    {"size_t", K_BASE, PL_C_SIZE},     {"ssize_t", K_BASE, PL_C_SSIZE},
    {"intptr_t", K_BASE, PL_C_INTPTR}, {"uintptr_t", K_BASE, PL_C_UINTPTR},
    {"ptrdiff_t", K_BASE, PL_C_PTRDIFF},
    {"struct", K_RECORD, 0},      {"union", K_RECORD, 0},        {"enum", K_ENUM, 0},
    {NULL, 0, 0}};

static const keyword *lookup(const parser *p, const token *t) {
  if (t->type != T_IDENT) return NULL;
  for (const keyword *k = keywords; k->name != NULL; k++)
    if (tok_is(p, t, k->name)) return k;
  return NULL;
}

typedef struct specs {
  int any;                 /* a type specifier was seen */
  int sign;                /* K_SIGNED, K_UNSIGNED or 0 */
  int nshort, nlong, nint, nchar;
  int base;                /* a pl_ckind from K_BASE/record/enum/opaque, or -1 */
  int is_const;
  size_t first, last;      /* span of the specifiers so far, for messages */
  size_t tag, taglen;
} specs;

static int conflict(parser *p, const specs *s) {
  char what[96];
  int n = (int)(s->last - s->first);
  if (n > 40) n = 40;
  snprintf(what, sizeof what, "cannot be combined with '%.*s'", n, p->src + s->first);
  return fail(p, what);
}

/* Add the keyword at the current token to s, or fail at it. */
static int add_spec(parser *p, specs *s, const keyword *k) {
  switch (k->cls) {
    case K_CONST: s->is_const = 1; return 0;
    case K_QUAL: return 0;
    case K_SIGNED:
    case K_UNSIGNED:
      if (s->sign == k->cls) return fail(p, "duplicate sign specifier");
      if (s->sign != 0 || s->base >= 0) return conflict(p, s);
      s->sign = k->cls;
      break;
    case K_SHORT:
      if (s->nshort || s->nlong || s->nchar || s->base >= 0) return conflict(p, s);
      s->nshort = 1;
      break;
    case K_LONG:
      if (s->base == PL_C_DOUBLE) return fail(p, "long double is not supported");
      if (s->nlong == 2) return fail(p, "'long long long' is too long");
      if (s->nshort || s->nchar || s->base >= 0) return conflict(p, s);
      s->nlong++;
      break;
    case K_INT:
      if (s->nint) return fail(p, "duplicate 'int'");
      if (s->nchar || s->base >= 0) return conflict(p, s);
      s->nint = 1;
      break;
    case K_CHAR:
      if (s->nchar || s->nshort || s->nlong || s->nint || s->base >= 0) return conflict(p, s);
      s->nchar = 1;
      break;
    default:  /* K_BASE, K_RECORD, K_ENUM: a whole type on their own */
      if (k->cls == K_BASE && k->kind == PL_C_DOUBLE && s->nlong && !s->sign && !s->nint &&
          s->base < 0)
        return fail(p, "long double is not supported");
      if (s->any) return conflict(p, s);
      s->base = k->cls == K_BASE ? k->kind : k->cls == K_RECORD ? PL_C_RECORD : PL_C_INT;
      break;
  }
  if (!s->any) s->first = p->t.pos;
  s->any = 1;
  s->last = p->t.pos + p->t.len;
  return 0;
}

/* The kind the specifiers name (they were checked as they came). */
static int resolve(const specs *s) {
  int u = s->sign == K_UNSIGNED;
  if (s->base >= 0) return s->base;
  if (s->nchar) return s->sign == K_SIGNED ? PL_C_SCHAR : u ? PL_C_UCHAR : PL_C_CHAR;
  if (s->nshort) return u ? PL_C_USHORT : PL_C_SHORT;
  if (s->nlong == 1) return u ? PL_C_ULONG : PL_C_LONG;
  if (s->nlong == 2) return u ? PL_C_ULLONG : PL_C_LLONG;
  return u ? PL_C_UINT : PL_C_INT;
}

/* Parse a type at the current token.  *top_const: the outermost level is
 * const (`const int`, `char *const`), which an array parameter needs. */
static int parse_type(parser *p, pl_ctype *t, int *top_const) {
  specs s;
  memset(&s, 0, sizeof s);
  s.base = -1;
  token start = p->t;
  while (p->t.type == T_IDENT) {
    const keyword *k = lookup(p, &p->t);
    if (k != NULL) {
      if (add_spec(p, &s, k) != 0) return -1;
      if (k->cls == K_RECORD || k->cls == K_ENUM) {
        size_t kw = p->t.pos;
        advance(p);
        if (p->t.type != T_IDENT || lookup(p, &p->t) != NULL)
          return fail(p, k->cls == K_RECORD ? "expected a struct or union tag" : "expected an enum tag");
        s.tag = kw;
        s.taglen = p->t.pos + p->t.len - kw;
        s.last = kw + s.taglen;
      }
      advance(p);
      continue;
    }
    /* Another name before any specifier, followed by a star: an opaque
     * type such as FILE, which only its pointers can use. */
    if (!s.any) {
      token next = lex(p, p->t.pos + p->t.len);
      if (is_punct(&next, p, '*')) {
        s.any = 1;
        s.base = PL_C_OPAQUE;
        s.first = s.tag = p->t.pos;
        s.taglen = p->t.len;
        s.last = p->t.pos + p->t.len;
        advance(p);
        continue;
      }
    }
    break;
  }
  if (!s.any) return fail(p, "expected a type");
  int kind = resolve(&s);
  int depth = 0, pointee_const = 0, cur_const = s.is_const;
  for (;;) {
    if (is_punct(&p->t, p, '*')) {
      if (depth == 255) return fail(p, "too many '*'");
      depth++;
      pointee_const = cur_const;
      cur_const = 0;
    } else {
      const keyword *k = lookup(p, &p->t);
      if (k == NULL || (k->cls != K_QUAL && k->cls != K_CONST)) break;
      if (k->cls == K_CONST) cur_const = 1;
    }
    advance(p);
  }
  if (depth == 0 && kind == PL_C_RECORD)
    return fail_at(p, &start, "a struct or union cannot be passed by value; use a pointer to it");
  memset(t, 0, sizeof *t);
  if (s.taglen > 0) {
    t->tag = (unsigned short)s.tag;
    t->taglen = (unsigned short)s.taglen;
  }
  if (depth > 0) {
    t->kind = PL_C_POINTER;
    t->base = (unsigned char)kind;
    t->depth = (unsigned char)depth;
    t->is_const = (unsigned char)pointee_const;
  } else {
    t->kind = (unsigned char)kind;
    t->base = (unsigned char)kind;
  }
  *top_const = cur_const;
  return 0;
}

/* type [name] ['[' [digits] ']'] */
static int parse_param(parser *p, pl_ctype *t) {
  int top_const;
  token start = p->t;
  if (parse_type(p, t, &top_const) != 0) return -1;
  if (p->t.type == T_IDENT) {  /* the name */
    if (lookup(p, &p->t) != NULL) return fail(p, "expected a parameter name, ',' or ')'");
    advance(p);
  }
  if (is_punct(&p->t, p, '[')) {
    advance(p);
    if (p->t.type == T_NUMBER) advance(p);
    if (!is_punct(&p->t, p, ']')) return fail(p, "expected ']'");
    advance(p);
    if (t->kind == PL_C_VOID) return fail_at(p, &start, "an array of void is not a type");
    if (t->kind != PL_C_POINTER) {
      t->base = t->kind;
      t->kind = PL_C_POINTER;
    }
    if (t->depth == 255) return fail(p, "too many '*'");
    t->depth++;
    t->is_const = (unsigned char)top_const;
  } else if (t->kind == PL_C_VOID) {
    return fail_at(p, &start, "void cannot be a parameter type (only `f(void)` alone)");
  }
  return 0;
}

static void init(parser *p, const char *src, size_t len, char *err, size_t errlen) {
  p->src = src;
  p->len = len;
  p->err = err;
  p->errlen = errlen;
  if (errlen > 0) err[0] = '\0';
  p->t = lex(p, 0);
}

static int too_long(size_t len, char *err, size_t errlen) {
  if (len <= PL_CDECL_MAX_LEN) return 0;
  if (errlen > 0) snprintf(err, errlen, "declaration too long (%zu bytes, at most %d)", len, PL_CDECL_MAX_LEN);
  return 1;
}

int pl_cdecl_parse(const char *src, size_t len, pl_cdecl *out, char *err, size_t errlen) {
  parser p;
  int top_const;
  if (too_long(len, err, errlen)) return -1;
  init(&p, src, len, err, errlen);
  memset(out, 0, sizeof *out);
  if (parse_type(&p, &out->ret, &top_const) != 0) return -1;
  if (p.t.type != T_IDENT || lookup(&p, &p.t) != NULL) return fail(&p, "expected the function name");
  if (p.t.len >= PL_CDECL_MAX_NAME) return fail(&p, "function name too long");
  memcpy(out->name, src + p.t.pos, p.t.len);
  out->name[p.t.len] = '\0';
  advance(&p);
  if (!is_punct(&p.t, &p, '(')) return fail(&p, "expected '('");
  advance(&p);
  if (tok_is(&p, &p.t, "void")) {  /* f(void): no parameters */
    token next = lex(&p, p.t.pos + p.t.len);
    if (is_punct(&next, &p, ')')) advance(&p);
  }
  if (!is_punct(&p.t, &p, ')')) {
    for (;;) {
      if (p.t.type == T_ELLIPSIS) {
        if (out->nparams == 0) return fail(&p, "'...' needs a named parameter before it");
        out->variadic = 1;
        advance(&p);
        if (!is_punct(&p.t, &p, ')')) return fail(&p, "expected ')' after '...'");
        break;
      }
      if (out->nparams == PL_CDECL_MAX_PARAMS) return fail(&p, "too many parameters (at most 32)");
      if (parse_param(&p, &out->params[out->nparams]) != 0) return -1;
      out->nparams++;
      if (is_punct(&p.t, &p, ')')) break;
      if (!is_punct(&p.t, &p, ',')) return fail(&p, "expected ',' or ')'");
      advance(&p);
    }
  }
  advance(&p);  /* the ')' */
  if (is_punct(&p.t, &p, ';')) advance(&p);
  if (p.t.type != T_END) return fail(&p, "expected the end of the declaration");
  return 0;
}

int pl_ctype_parse(const char *src, size_t len, pl_ctype *out, char *err, size_t errlen) {
  parser p;
  int top_const;
  if (too_long(len, err, errlen)) return -1;
  init(&p, src, len, err, errlen);
  if (parse_type(&p, out, &top_const) != 0) return -1;
  if (p.t.type != T_END) return fail(&p, "expected the end of the type");
  return 0;
}

/* ---- facts about kinds ---- */

typedef struct kind_info {
  const char *name;
  unsigned char size;
  unsigned char is_integer, is_signed;
} kind_info;

static const kind_info kinds[PL_C_NKINDS] = {
    [PL_C_VOID] = {"void", 0, 0, 0},
    [PL_C_BOOL] = {"bool", sizeof(_Bool), 1, 0},
    [PL_C_CHAR] = {"char", 1, 1, CHAR_MIN < 0},
    [PL_C_SCHAR] = {"signed char", 1, 1, 1},
    [PL_C_UCHAR] = {"unsigned char", 1, 1, 0},
    [PL_C_SHORT] = {"short", sizeof(short), 1, 1},
    [PL_C_USHORT] = {"unsigned short", sizeof(short), 1, 0},
    [PL_C_INT] = {"int", sizeof(int), 1, 1},
    [PL_C_UINT] = {"unsigned int", sizeof(int), 1, 0},
    [PL_C_LONG] = {"long", sizeof(long), 1, 1},
    [PL_C_ULONG] = {"unsigned long", sizeof(long), 1, 0},
    [PL_C_LLONG] = {"long long", sizeof(long long), 1, 1},
    [PL_C_ULLONG] = {"unsigned long long", sizeof(long long), 1, 0},
    [PL_C_INT8] = {"int8_t", 1, 1, 1},
    [PL_C_UINT8] = {"uint8_t", 1, 1, 0},
    [PL_C_INT16] = {"int16_t", 2, 1, 1},
    [PL_C_UINT16] = {"uint16_t", 2, 1, 0},
    [PL_C_INT32] = {"int32_t", 4, 1, 1},
    [PL_C_UINT32] = {"uint32_t", 4, 1, 0},
    [PL_C_INT64] = {"int64_t", 8, 1, 1},
    [PL_C_UINT64] = {"uint64_t", 8, 1, 0},
    [PL_C_SIZE] = {"size_t", sizeof(size_t), 1, 0},
    [PL_C_SSIZE] = {"ssize_t", sizeof(ssize_t), 1, 1},
    [PL_C_INTPTR] = {"intptr_t", sizeof(intptr_t), 1, 1},
    [PL_C_UINTPTR] = {"uintptr_t", sizeof(uintptr_t), 1, 0},
    [PL_C_PTRDIFF] = {"ptrdiff_t", sizeof(ptrdiff_t), 1, 1},
    [PL_C_FLOAT] = {"float", sizeof(float), 0, 1},
    [PL_C_DOUBLE] = {"double", sizeof(double), 0, 1},
    [PL_C_RECORD] = {"struct", 0, 0, 0},
    [PL_C_OPAQUE] = {"?", 0, 0, 0},
    [PL_C_POINTER] = {"pointer", sizeof(void *), 0, 0},
};

size_t pl_ctype_size(const pl_ctype *t) {
  return t->kind < PL_C_NKINDS ? kinds[t->kind].size : 0;
}

int pl_ckind_is_integer(int kind) {
  return kind >= 0 && kind < PL_C_NKINDS && kinds[kind].is_integer;
}

int pl_ckind_is_signed(int kind) {
  return kind >= 0 && kind < PL_C_NKINDS && kinds[kind].is_signed;
}

int pl_ctype_is_string(const pl_ctype *t) {
  return t->kind == PL_C_POINTER && t->base == PL_C_CHAR && t->depth == 1 && t->is_const;
}

/* Append s (n bytes, runs of white space made one space) to buf. */
static size_t append(char *buf, size_t size, size_t at, const char *s, size_t n) {
  for (size_t i = 0; i < n && at + 1 < size; i++) {
    if (is_space((unsigned char)s[i])) {
      if (at > 0 && buf[at - 1] == ' ') continue;
      buf[at++] = ' ';
    } else {
      buf[at++] = s[i];
    }
  }
  if (size > 0) buf[at < size ? at : size - 1] = '\0';
  return at;
}

void pl_ctype_name(const pl_ctype *t, const char *src, char *buf, size_t n) {
  size_t at = 0;
  if (n == 0) return;
  buf[0] = '\0';
  int base = t->kind == PL_C_POINTER ? t->base : t->kind;
  if (base >= PL_C_NKINDS) base = PL_C_VOID;
  if (t->kind == PL_C_POINTER && t->is_const) at = append(buf, n, at, "const ", 6);
  if (base == PL_C_RECORD || base == PL_C_OPAQUE || (base == PL_C_INT && t->taglen > 0)) {
    if (src != NULL && t->taglen > 0) at = append(buf, n, at, src + t->tag, t->taglen);
    else at = append(buf, n, at, "?", 1);
  } else {
    at = append(buf, n, at, kinds[base].name, strlen(kinds[base].name));
  }
  if (t->kind == PL_C_POINTER) {
    at = append(buf, n, at, " ", 1);
    for (int i = 0; i < t->depth; i++) at = append(buf, n, at, "*", 1);
  }
}
