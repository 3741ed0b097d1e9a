/* Private to the parlua runtime: the reading half of Lua's io library,
 * done on a FILE into C memory so it can run without the global lock.
 *
 * Each function does exactly what liolib.c's function of the same format
 * does to the FILE (and so leaves it in the same state); the caller pushes
 * the result once it holds the lock again.  None touches a lua_State.
 */
#ifndef PL_IOREAD_H
#define PL_IOREAD_H

#include <stddef.h>
#include <stdio.h>

#define PL_MAXLENNUM 200  /* liolib's L_MAXLENNUM: the longest numeral read */

typedef struct pl_readout {
  char *data;      /* malloc'd (or NULL when empty); the caller frees it */
  size_t len;
  int ok;          /* the format's success, as liolib computes it */
  int nomem;       /* out of memory: the caller raises it */
  char num[PL_MAXLENNUM + 1];  /* "n": the numeral, to convert under the lock */
} pl_readout;

/* Formats "l" (chop = 1) and "L" (chop = 0). */
void pl_read_line(FILE *f, int chop, pl_readout *out);
/* Format "a". */
void pl_read_all(FILE *f, pl_readout *out);
/* A count n > 0. */
void pl_read_chars(FILE *f, size_t n, pl_readout *out);
/* A count of 0: "" unless at end of file. */
void pl_read_eof(FILE *f, pl_readout *out);
/* Format "n": the longest valid numeral prefix into out->num. */
void pl_read_number(FILE *f, pl_readout *out);

#endif
