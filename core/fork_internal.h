/*
 * Internal: fork() support and the library's one lock order.
 *
 * Each module registers its fork handlers once with a rank; before fork,
 * prepare handlers run in ascending rank (so locks are taken in the lock
 * order), after it parent/child handlers run in descending rank. One
 * pthread_atfork registration serves them all.
 *
 * The ranks are the lock order for normal operation too: code holding a
 * lock of rank r may only take locks of higher rank. The list, outermost
 * first (layer in brackets):
 *
 *   10 EPOCH_GP        [epoch] around every liburcu synchronize
 *   12 EPOCH_CONSUME   [epoch] held while retire callbacks run; a callback
 *                      reaches any layer above epoch (pool put, arena free)
 *   18 SWEEPER_CTL     [pool]  sweeper start/stop
 *   20 SWEEPER         [pool]  the pass lock (no pool destroyed in a pass)
 *   22 HEAP_ARENAS     [gc]    arenas registered as heap roots (held by a
 *                              collection with the arenas' locks, before
 *                              the heap's lock)
 *   25 ARENAS          [arena] the concurrent-arena registry and each
 *                              concurrent arena's refill lock (a refill takes
 *                              pool locks under it)
 *   30 POOLS           [pool]  pool registry and each pool's slab lock
 *   40 HEAPS           [gc]    collector heaps (heap code must not call a
 *                              pool while it holds one)
 *   50 EPOCH_STATE     [epoch] thread/queue registry, reclaimer state: taken
 *                              by a retire from any layer, never held across
 *                              a call out of epoch
 *   60 CORE_BLOCKS     [core]  the block cache (core/blocks.c): a leaf
 *
 * Locks of a lower layer are leaves (50, 60) except epoch's two outer
 * locks, which are held while epoch runs code of the layers above it
 * (callbacks), so they rank before every lock those layers take.
 *
 * The registries of 25, 30 and 40 are core/registry.c's: each registers
 * its handlers at its rank (tp__fork_register_arg) and takes its own lock,
 * then its elements' locks.
 *
 * The full table, lock by lock, with the cross-module waits (epoch grace
 * periods from attached heap threads, heap parking, fork handlers), is in
 * core/lockorder.c; debug builds check every acquisition against it.
 */
#ifndef TIDEPOOL_FORK_INTERNAL_H
#define TIDEPOOL_FORK_INTERNAL_H

#include <stdbool.h>

enum {
  TP__FORK_RANK_EPOCH_GP = 10,
  TP__FORK_RANK_EPOCH_CONSUME = 12,
  TP__FORK_RANK_SWEEPER_CTL = 18,
  TP__FORK_RANK_SWEEPER = 20,
  TP__FORK_RANK_HEAP_ARENAS = 22, /* gc: arenas registered with heaps */
  TP__FORK_RANK_ARENAS = 25, /* a refill takes pool locks under a->lock */
  TP__FORK_RANK_POOLS = 30,
  TP__FORK_RANK_HEAPS = 40,
  TP__FORK_RANK_EPOCH_STATE = 50,
  TP__FORK_RANK_CORE_BLOCKS = 60,
};

/* Registers handlers (any may be NULL). Call once per module, from its
 * pthread_once initializer. Safe to call concurrently. */
void tp__fork_register(int rank, void (*prepare)(void), void (*parent)(void),
                       void (*child)(void));

/* The same for handlers that take an argument (one function serves many
 * objects: core/registry.c's handlers, one registration per registry). A
 * second registration of the same prepare function and arg does nothing,
 * so callers may race to register: each returns once the hooks are in the
 * table. */
void tp__fork_register_arg(int rank, void (*prepare)(void *), void (*parent)(void *),
                           void (*child)(void *), void *arg);

/* ThreadSanitizer builds start no background thread (the collector's
 * marker, the epoch stall watchdog) in the child of a multi-threaded fork:
 * true there (always false in other builds). TSan cannot start threads in
 * such a child: locks of its runtime that another thread held at the fork
 * stay held (its allocator-statistics lock, taken by every thread start
 * and exit: the new thread spins on it forever while its creator waits for
 * it to start), and by default it kills a child that tries
 * (die_after_fork). The work is done without the thread there: a
 * stop-the-world collection, no watchdog.
 *
 * Core's to know, not each module's: core's handlers are installed when
 * the library is loaded (TSan builds), so a module that the parent never
 * used, and that had no handler of its own at the fork, still learns here
 * that it runs in such a child. */
bool tp__fork_child_threadless(void);

#endif /* TIDEPOOL_FORK_INTERNAL_H */
