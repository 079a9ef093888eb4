/*
 * Internal: fork() support. Each module registers its handlers once with a
 * rank; before fork, prepare handlers run in ascending rank (so locks are
 * taken in the library's lock order), after it parent/child handlers run in
 * descending rank. One pthread_atfork registration serves them all.
 *
 * Lock order (rank): epoch grace-period lock (10) < epoch consume lock (12)
 * < sweeper start/stop (18) < sweeper pass lock (20) < concurrent arena locks (25) <
 * pool registry and pool slab locks (30) <
 * collector heaps (40) < epoch registry and reclaimer state (50).
 */
/*
 * The ranks are the lock order for normal operation too: code holding a
 * lock of rank r may only take locks of higher rank. In particular pool
 * locks (30) rank below collector heaps (40): heap code must not call into
 * a pool (tp_pool_get/put) while it holds a heap lock; and epoch callbacks
 * (run under the consume lock, 12) may take pool and heap locks. The full
 * table, lock by lock, with the cross-module waits, is in core/lockorder.c;
 * debug builds check every acquisition against it.
 */
#ifndef TIDEPOOL_FORK_INTERNAL_H
#define TIDEPOOL_FORK_INTERNAL_H

enum {
  TP__FORK_RANK_EPOCH_GP = 10,
  TP__FORK_RANK_EPOCH_CONSUME = 12,
  TP__FORK_RANK_SWEEPER_CTL = 18,
  TP__FORK_RANK_SWEEPER = 20,
  TP__FORK_RANK_ARENAS = 25, /* a refill takes pool locks under a->lock */
  TP__FORK_RANK_POOLS = 30,
  TP__FORK_RANK_HEAPS = 40,
  TP__FORK_RANK_EPOCH_STATE = 50,
};

/* Registers handlers (any may be NULL). Call once per module, from its
 * pthread_once initializer. Safe to call concurrently. */
void tp__fork_register(int rank, void (*prepare)(void), void (*parent)(void),
                       void (*child)(void));

#endif /* TIDEPOOL_FORK_INTERNAL_H */
