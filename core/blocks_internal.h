/*
 * Internal: a cache of fixed-size blocks mapped straight from the OS, for
 * layers that need a little memory of their own and must not depend on a
 * higher layer's allocator (the epoch's retire queues and segments).
 *
 * Each block is its own mapping of `size` bytes (a multiple of the page
 * size). A put keeps up to `keep` free blocks on the cache's free list for
 * the next get and unmaps the rest, so a burst leaves at most `keep` blocks
 * behind, and blocks freed by one thread are reused by any other. Both are
 * counted in the process-wide counters (tp__os_map).
 *
 * Thread safety: get and put are safe to call concurrently; one mutex for
 * all caches (TP__FORK_RANK_CORE_BLOCKS, a leaf: nothing is called under
 * it), held across fork so the child finds it free.
 */
#ifndef TIDEPOOL_BLOCKS_INTERNAL_H
#define TIDEPOOL_BLOCKS_INTERNAL_H

#include <stddef.h>

typedef struct tp__blocks {
  size_t size;   /* bytes per block: a multiple of the page size */
  unsigned keep; /* free blocks kept mapped at most */
  /* Under the blocks lock. */
  unsigned nfree;
  void *free;    /* free blocks, linked through their first word */
} tp__blocks;

#define TP__BLOCKS_INIT(bytes, keep_) {(bytes), (keep_), 0, NULL}

/* A block of b->size bytes, zeroed when fresh from the OS, else with the
 * contents it was put back with. NULL + errno ENOMEM. */
void *tp__blocks_get(tp__blocks *b);
/* Gives a block back; NULL is a no-op. */
void tp__blocks_put(tp__blocks *b, void *blk);

/* Validity check: the free list holds nfree <= keep distinct page-aligned
 * blocks. 0, or -EINVAL (and a message on stderr) naming what is broken. */
int tp__blocks_check(tp__blocks *b);

#endif /* TIDEPOOL_BLOCKS_INTERNAL_H */
