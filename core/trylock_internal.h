/*
 * Internal: the busy-bit try-lock of the per-CPU fallback (percpu-cas
 * mode), written once for the two places that use it: a pool's CPU cache
 * block (core/percpu.c, the busy bit inside the block's commit word) and a
 * concurrent arena's CPU region (arena/arena_concurrent.c, a busy word of
 * its own).
 *
 * It is a try-lock, not a lock-free CAS on the data: whoever sets the busy
 * bit owns everything the word guards until it stores the word back; a
 * thread that finds the bit set does not wait, it takes another path (the
 * shared block, the arena's mutex). So it cannot deadlock, a thread
 * preempted while holding it only diverts the others for that long, and
 * no ABA arises (the data is never read without ownership).
 *
 *   fence / order               | what it orders
 *   ----------------------------+---------------------------------------
 *   CAS acquire (tp__busy_try)  | the previous owner's writes to the guarded
 *                               | data (published by its release) before
 *                               | our reads of it
 *   store release (tp__busy_give)| our writes to the guarded data before
 *                               | the word that frees it
 *   failed CAS relaxed          | nothing: we do not touch the data
 */
#ifndef TIDEPOOL_TRYLOCK_INTERNAL_H
#define TIDEPOOL_TRYLOCK_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

/* Sets busy in *word if it is clear, trying at most `tries` CASes (a CAS
 * fails when a concurrent owner changes the word between our read and the
 * CAS; tries bounds how long we chase it). On success returns true and the
 * word as it was before (busy clear) in *seen; on failure (busy found set,
 * or tries exhausted) returns false and leaves the data alone. */
static inline bool tp__busy_try(uint64_t *word, uint64_t busy, int tries, uint64_t *seen) {
  uint64_t w = __atomic_load_n(word, __ATOMIC_RELAXED);
  for (int i = 0; i < tries; i++) {
    if (w & busy) return false;
    if (__atomic_compare_exchange_n(word, &w, w | busy, false, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED)) {
      *seen = w;
      return true;
    }
  }
  return false;
}

/* Frees the word, storing its new value (busy clear). */
static inline void tp__busy_give(uint64_t *word, uint64_t value) {
  __atomic_store_n(word, value, __ATOMIC_RELEASE);
}

#endif /* TIDEPOOL_TRYLOCK_INTERNAL_H */
