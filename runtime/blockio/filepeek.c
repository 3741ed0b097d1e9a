/* Would a stdio call block?  See filepeek.h. */
#include <stdio_ext.h>
#include <string.h>
#include <sys/stat.h>

#include "blockio/filepeek.h"

int pl_file_is_disk(FILE *f) {
  struct stat st;
  int fd = fileno(f);
  if (fd < 0 || fstat(fd, &st) != 0) return 0;
  return S_ISREG(st.st_mode) || S_ISBLK(st.st_mode);
}

/* The bytes already read ahead into f's buffer, or NULL. */
static const char *buffered(FILE *f, size_t *n) {
#if defined(__GLIBC__)
  if (f->_IO_read_ptr != NULL && f->_IO_read_ptr < f->_IO_read_end) {
    *n = (size_t)(f->_IO_read_end - f->_IO_read_ptr);
    return f->_IO_read_ptr;
  }
#else
  (void)f;
#endif
  *n = 0;
  return NULL;
}

int pl_read_may_block(FILE *f, int need, size_t count) {
  size_t n;
  const char *p = buffered(f, &n);
  if (p != NULL) {
    if (count > 0 && n >= count) return 0;
    if (count == 0 && need == PL_NEED_ANY) return 0;
    if (count == 0 && need == PL_NEED_LINE && memchr(p, '\n', n) != NULL) return 0;
  }
  return !pl_file_is_disk(f);
}

int pl_write_may_block(FILE *f, size_t n) {
  /* Fully buffered, already writing, and the bytes fit: they only go to
   * the buffer.  A line-buffered stream (a terminal) flushes on '\n'. */
  if (__fwriting(f) && !__flbf(f) && __fbufsize(f) > 0 &&
      __fpending(f) + n < __fbufsize(f))
    return 0;
  return !pl_file_is_disk(f);
}

int pl_flush_may_block(FILE *f) {
  if (__fpending(f) == 0) return 0;
  return !pl_file_is_disk(f);
}
