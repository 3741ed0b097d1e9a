/* Big blocks: mapped, and the last few given back kept for the next (see
 * bigmem.h). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/bigmem.h"
#include "core/clock.h"

#define PAGE ((size_t)4096)
#define KEPT_SLOTS 4
#define KEPT_NS 2000000000LL  /* a block kept longer, unused, is unmapped */

static size_t round_up(size_t n, size_t to) { return (n + to - 1) & ~(to - 1); }

/* ---- kept blocks ----------------------------------------------------- */

typedef struct kept {
  void *p;
  size_t size;         /* page-rounded */
  int64_t since;       /* when it was kept */
} kept;

static pthread_mutex_t kept_mu = PTHREAD_MUTEX_INITIALIZER;
static kept kept_blocks[KEPT_SLOTS];  /* guarded by kept_mu */
static size_t kept_total;             /* guarded by kept_mu */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* A fork while another thread holds kept_mu would leave the child's copy
 * locked forever: forks wait for it.  The child lets go of the kept
 * blocks: they are copy-on-write pages shared with the parent, so a write
 * to them would cost a fault and a copy per page in both. */
static void fork_prepare(void) { pthread_mutex_lock(&kept_mu); }
static void fork_parent(void) { pthread_mutex_unlock(&kept_mu); }
static void fork_child(void) {
  for (int i = 0; i < KEPT_SLOTS; i++) {
    if (kept_blocks[i].p != NULL) (void)munmap(kept_blocks[i].p, kept_blocks[i].size);
    kept_blocks[i].p = NULL;
  }
  kept_total = 0;
  pthread_mutex_unlock(&kept_mu);
}
static void register_atfork(void) { (void)pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* Unmap the blocks kept longer than KEPT_NS (kept_mu held): memory a
 * program no longer sends big values with goes back to the system. */
static void expire_locked(int64_t now) {
  for (int i = 0; i < KEPT_SLOTS; i++) {
    if (kept_blocks[i].p != NULL && now - kept_blocks[i].since > KEPT_NS) {
      (void)munmap(kept_blocks[i].p, kept_blocks[i].size);
      kept_total -= kept_blocks[i].size;
      kept_blocks[i].p = NULL;
    }
  }
}

/* A kept block, as it is, or NULL: of those from lo to hi bytes, the one
 * nearest in size to `size`; *got is its size. */
static void *take_kept_between(size_t lo, size_t hi, size_t size, size_t *got) {
  pthread_once(&atfork_once, register_atfork);
  void *p = NULL;
  pthread_mutex_lock(&kept_mu);
  expire_locked(pl_now_ns());
  int best = -1;
  size_t best_gap = SIZE_MAX;
  for (int i = 0; i < KEPT_SLOTS; i++) {
    size_t s = kept_blocks[i].size;
    size_t gap = s > size ? s - size : size - s;
    if (kept_blocks[i].p != NULL && lo <= s && s <= hi && gap < best_gap) {
      best = i;
      best_gap = gap;
    }
  }
  if (best >= 0) {
    p = kept_blocks[best].p;
    *got = kept_blocks[best].size;
    kept_blocks[best].p = NULL;
    kept_total -= *got;
  }
  pthread_mutex_unlock(&kept_mu);
  return p;
}

/* A kept block of `size` bytes, or NULL: the one nearest in size from
 * half to twice that, its tail beyond `size` unmapped (so that its owner
 * gives back what it asked for) or grown to `size` (fresh pages for the
 * difference only). */
static void *take_kept(size_t size) {
  size_t got = 0;
  void *p = take_kept_between(size / 2, size > SIZE_MAX / 2 ? SIZE_MAX : size * 2, size, &got);
  if (p != NULL && got > size) (void)munmap((char *)p + size, got - size);
  if (p != NULL && got < size) {
    void *q = mremap(p, got, size, MREMAP_MAYMOVE);
    if (q == MAP_FAILED) (void)munmap(p, got);
    p = q == MAP_FAILED ? NULL : q;
  }
  return p;
}

/* Keep block p (size bytes, page-rounded) if there is room (1). */
static int keep_block(void *p, size_t size) {
  int done = 0;
  int64_t now = pl_now_ns();
  pthread_mutex_lock(&kept_mu);
  expire_locked(now);
  if (kept_total + size <= PL_BIGMEM_KEEP) {
    for (int i = 0; i < KEPT_SLOTS && !done; i++) {
      if (kept_blocks[i].p == NULL) {
        kept_blocks[i].p = p;
        kept_blocks[i].size = size;
        kept_blocks[i].since = now;
        kept_total += size;
        done = 1;
      }
    }
  }
  pthread_mutex_unlock(&kept_mu);
  return done;
}

/* ---- blocks ---------------------------------------------------------- */

/* A fresh mapping of size bytes (page-rounded). */
static void *map_fresh(size_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

void *pl_bigmem_alloc(size_t n) {
  if (n > SIZE_MAX - PAGE) {
    errno = ENOMEM;
    return NULL;
  }
  size_t size = round_up(n, PAGE);
  void *p = take_kept(size);
  return p != NULL ? p : map_fresh(size);
}

void *pl_bigmem_alloc_whole(size_t n, size_t *size) {
  if (n > SIZE_MAX / 4) {
    errno = ENOMEM;
    return NULL;
  }
  *size = round_up(n, PAGE);
  void *p = take_kept_between(*size, *size * 4, *size, size);
  return p != NULL ? p : map_fresh(*size);
}

void *pl_bigmem_realloc(void *p, size_t n, size_t m) {
  if (m > SIZE_MAX - PAGE) {
    errno = ENOMEM;
    return NULL;
  }
  size_t from = round_up(n, PAGE), to = round_up(m, PAGE);
  if (from == to) return p;
  void *q = mremap(p, from, to, MREMAP_MAYMOVE);
  return q == MAP_FAILED ? NULL : q;
}

void pl_bigmem_free(void *p, size_t n) {
  if (p == NULL) return;
  size_t size = round_up(n, PAGE);
  if (!keep_block(p, size)) (void)munmap(p, size);
}

/* ---- Lua's allocator ------------------------------------------------- */

void *pl_bigmem_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (ptr == NULL) osize = 0;  /* then it says what kind of object is made */
  int was_big = osize >= PL_BIGMEM_MIN, big = nsize >= PL_BIGMEM_MIN;
  if (nsize == 0) {
    if (was_big) pl_bigmem_free(ptr, osize);
    else free(ptr);
    return NULL;
  }
  if (!was_big && !big) return realloc(ptr, nsize);
  if (was_big && big) return pl_bigmem_realloc(ptr, osize, nsize);
  void *np = big ? pl_bigmem_alloc(nsize) : malloc(nsize);
  if (np == NULL) return NULL;
  if (ptr != NULL) {
    memcpy(np, ptr, osize < nsize ? osize : nsize);
    if (was_big) pl_bigmem_free(ptr, osize);
    else free(ptr);
  }
  return np;
}
