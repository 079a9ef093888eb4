/*
 * The fixed-size block cache (blocks_internal.h): one mapping per block, a
 * bounded free list per cache, one mutex for all caches.
 */
#define _GNU_SOURCE
#include "core/blocks_internal.h"
#include "core/debug_internal.h"
#include "core/fork_internal.h"
#include "core/os_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

static pthread_mutex_t blocks_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t blocks_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void) { pthread_mutex_lock(&blocks_lock); }
static void fork_after(void) { pthread_mutex_unlock(&blocks_lock); }

static void blocks_init(void) {
  tp__fork_register(TP__FORK_RANK_CORE_BLOCKS, fork_prepare, fork_after, fork_after);
}

void *tp__blocks_get(tp__blocks *b) {
  pthread_once(&blocks_once, blocks_init);
  pthread_mutex_lock(&blocks_lock);
  void *blk = b->free;
  if (blk) {
    b->free = *(void **)blk;
    if (--b->nfree < b->low) b->low = b->nfree;
  }
  pthread_mutex_unlock(&blocks_lock);
  if (!blk) blk = tp__os_map(b->size, 0); /* NULL + ENOMEM */
  return blk;
}

/* The unmaps below happen under the lock: a block taken off the list and
 * not yet unmapped when another thread forks would stay mapped in the
 * child, off every list, forever (the fork handler holds the lock, so the
 * child sees each block either listed or gone). Trims are rare; a get
 * meanwhile waits for them. */
void tp__blocks_put(tp__blocks *b, void *blk) {
  if (!blk) return;
  pthread_mutex_lock(&blocks_lock);
  if (b->nfree < b->hold) {
    *(void **)blk = b->free;
    b->free = blk;
    b->nfree++;
  } else {
    tp__os_unmap(blk, b->size);
  }
  pthread_mutex_unlock(&blocks_lock);
}

/* Unmaps free blocks until `target` are left; the bytes unmapped. Blocks
 * lock held. */
static size_t unmap_down_to(tp__blocks *b, unsigned target) {
  size_t n = 0;
  for (; b->nfree > target; n++) {
    void *blk = b->free;
    b->free = *(void **)blk;
    b->nfree--;
    tp__os_unmap(blk, b->size);
  }
  if (b->low > b->nfree) b->low = b->nfree;
  return n * b->size;
}

size_t tp__blocks_trim(tp__blocks *b) {
  pthread_mutex_lock(&blocks_lock);
  size_t bytes = unmap_down_to(b, b->keep);
  pthread_mutex_unlock(&blocks_lock);
  return bytes;
}

void tp__blocks_decay(tp__blocks *b) {
  pthread_mutex_lock(&blocks_lock);
  /* low blocks stayed free all period: none of them was needed. */
  unsigned unused = b->low > b->keep ? b->low - b->keep : 0;
  unmap_down_to(b, b->nfree - unused);
  b->low = b->nfree;
  pthread_mutex_unlock(&blocks_lock);
}

int tp__blocks_check(tp__blocks *b) {
  const char *bad = NULL;
  size_t page = tp__os_page_size();
  pthread_mutex_lock(&blocks_lock);
  unsigned n = 0;
  if (b->size == 0 || b->size % page) bad = "block size is not a page multiple";
  else if (b->keep > b->hold) bad = "keep is above hold";
  for (void *p = b->free; p && !bad; p = *(void **)p) {
    if ((uintptr_t)p % page) bad = "free block not page-aligned";
    else if (++n > b->hold) bad = "free list longer than hold (or a cycle)";
  }
  if (!bad && n != b->nfree) bad = "nfree does not match the free list";
  if (!bad && b->low > b->nfree) bad = "low is above nfree";
  pthread_mutex_unlock(&blocks_lock);
  if (!bad) return 0;
  fprintf(stderr, "tidepool: blocks %p: %s\n", (void *)b, bad);
  errno = EINVAL;
  return -EINVAL;
}
