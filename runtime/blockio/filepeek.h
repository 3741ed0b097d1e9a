/* Private to the parlua runtime: would this stdio call block?
 *
 * The io library lets the global lock go only around a call that may wait
 * (a pipe, a FIFO, a terminal, a socket): reading a regular file line by
 * line, or writing into a half-empty buffer, must cost nothing extra.  These
 * predicates look at the FILE's buffer (glibc: _IO_read_ptr/_IO_read_end;
 * elsewhere the portable <stdio_ext.h> calls, and fstat) and answer
 * conservatively: 1 unless the call surely completes without waiting.
 */
#ifndef PL_FILEPEEK_H
#define PL_FILEPEEK_H

#include <stddef.h>
#include <stdio.h>

/* What a read needs from the buffer to be sure not to wait. */
enum {
  PL_NEED_LINE,   /* a whole line: a '\n' already buffered */
  PL_NEED_ANY,    /* one byte */
  PL_NEED_ALL     /* everything to end of file: only a disk file is quick */
};

/* `need` is one of PL_NEED_*; `count` (> 0) asks for that many bytes instead. */
int pl_read_may_block(FILE *f, int need, size_t count);
/* Writing `n` more bytes (flushing too, with n == 0 meaning "flush"). */
int pl_write_may_block(FILE *f, size_t n);
int pl_flush_may_block(FILE *f);
/* A regular file or a block device: never waits the way a pipe does. */
int pl_file_is_disk(FILE *f);

#endif
