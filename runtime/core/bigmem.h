/* Private to the parlua runtime: big blocks of memory, for the values that
 * cross between states (codec messages, frame buffers), for the outputs of
 * communicate, and for the large objects of the states the runtime makes
 * (a 64 MiB string).
 *
 * Why.  glibc serves every block of 32 MiB and more with a fresh mmap and
 * gives it back with munmap, so a 64 MiB string that goes to a worker and
 * back is four fresh mappings, each written once: 16,384 page faults
 * apiece, which cost three times the copy itself (perf: 75% of a `states`
 * round trip in the kernel's fault path and page clearing).  Blocks of
 * PL_BIGMEM_MIN bytes and more are mapped here, and the last few given
 * back are kept (up to PL_BIGMEM_KEEP bytes, for two seconds at most) for the
 * next big value, which then pays no fault and no clearing at all: the
 * 64 MiB `states` round trip went from ~0.46 to ~3.1 GB/s (1 MiB, which
 * malloc serves from memory it reuses, is left to malloc).  Tried and
 * measured worse on this machine: madvise(MADV_HUGEPAGE) on fresh blocks (clearing
 * 2 MiB pages cost more than the small faults it saves), and
 * madvise(MADV_FREE) on kept ones (their reuse went back to faulting:
 * 0.8-1.2 GB/s).  So a kept block stays resident; a program that stops
 * sending big values gets it unmapped at its next big allocation or
 * release after two seconds, and one that goes quiet keeps at most
 * PL_BIGMEM_KEEP.
 *
 * Thread-safe (one mutex, held only to take or give a kept block; a fork
 * waits for it, pthread_atfork, so a child never inherits it locked; the
 * child lets go of the kept blocks, copy-on-write pages of the parent's).
 * The main state of a stock lua5.4 (require "parlua") keeps lua5.4's
 * allocator: its big strings are malloc's.
 */
#ifndef PL_BIGMEM_H
#define PL_BIGMEM_H

#include <stddef.h>

/* Smaller blocks are malloc's, which reuses freed memory for them; from
 * 32 MiB on (DEFAULT_MMAP_THRESHOLD_MAX) it maps each one afresh. */
#define PL_BIGMEM_MIN ((size_t)32 << 20)
#define PL_BIGMEM_KEEP ((size_t)320 << 20)  /* kept at most: four 64 MiB values */

/* A block of at least n bytes (n >= PL_BIGMEM_MIN), or NULL (errno). */
void *pl_bigmem_alloc(size_t n);
/* For a buffer that grows: a block of at least n bytes (n >=
 * PL_BIGMEM_MIN), a kept one of up to 4n handed over whole, so that what
 * the last buffer of its kind faulted in is used again rather than cut
 * off; *size is its size (what to resize or free it with).  NULL (errno)
 * when there is no memory. */
void *pl_bigmem_alloc_whole(size_t n, size_t *size);
/* Resize block p of n bytes to m bytes (both >= PL_BIGMEM_MIN), keeping
 * its contents: the new address, or NULL (p unchanged). */
void *pl_bigmem_realloc(void *p, size_t n, size_t m);
/* Give back block p of n bytes (p may be NULL). */
void pl_bigmem_free(void *p, size_t n);

/* A lua_Alloc that uses the blocks above for big objects and malloc for
 * the others (the allocator of every state the runtime makes). */
void *pl_bigmem_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

#endif
