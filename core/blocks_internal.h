/*
 * Internal: a cache of fixed-size blocks mapped straight from the OS, for
 * layers that need a little memory of their own and must not depend on a
 * higher layer's allocator (the epoch's retire queues and segments).
 *
 * Each block is its own mapping of `size` bytes (a multiple of the page
 * size). A put keeps up to `hold` free blocks on the cache's free list for
 * the next get and unmaps the rest; tp__blocks_trim unmaps all but `keep`
 * of them. A cache with hold == keep leaves at most `keep` blocks behind a
 * burst at once; one with a larger hold keeps a burst's blocks for reuse
 * until its owner trims it (the epoch's segments: while retires flow, a
 * segment the reclaimer frees is the next one the retiring thread needs,
 * and an unmap and a fresh map each time cost a TLB shootdown of the
 * retiring CPU and two page faults, per 254 retires). Its owner also calls
 * tp__blocks_decay now and then, which unmaps what a whole period left
 * unused (down to `keep`), so a trickle that never lets the owner trim
 * does not pin a past burst's blocks. Blocks freed by one thread are
 * reused by any other. Mapped blocks are counted in the process-wide
 * counters (tp__os_map).
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
  unsigned keep; /* free blocks kept mapped by tp__blocks_trim */
  unsigned hold; /* free blocks kept mapped by a put (>= keep) */
  /* Under the blocks lock. */
  unsigned nfree;
  unsigned low;  /* the least nfree since the last decay (<= nfree) */
  void *free;    /* free blocks, linked through their first word */
} tp__blocks;

#define TP__BLOCKS_INIT(bytes, keep_, hold_) {(bytes), (keep_), (hold_), 0, 0, NULL}

/* A block of b->size bytes, zeroed when fresh from the OS, else with the
 * contents it was put back with. NULL + errno ENOMEM. */
void *tp__blocks_get(tp__blocks *b);
/* Gives a block back (kept if fewer than `hold` are free, else unmapped);
 * NULL is a no-op. */
void tp__blocks_put(tp__blocks *b, void *blk);
/* Unmaps free blocks beyond `keep`; returns the bytes unmapped. */
size_t tp__blocks_trim(tp__blocks *b);
/* Unmaps the free blocks no get needed since the last call (the least
 * number free over the period, above `keep`), and starts a new period. */
void tp__blocks_decay(tp__blocks *b);

/* Validity check: the free list holds nfree <= hold distinct page-aligned
 * blocks, and keep <= hold. 0, or -EINVAL (and a message on stderr) naming what is broken. */
int tp__blocks_check(tp__blocks *b);

#endif /* TIDEPOOL_BLOCKS_INTERNAL_H */
