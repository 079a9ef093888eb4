/*
 * Internal: what the layer above (the collector, gc/arena_roots.c) needs of
 * an arena to scan it as a root, without the arena knowing the collector
 * (layers: arena -> gc; calls upward go through a hook the upper layer
 * installs). Implemented in arena/arena_ranges.c.
 *
 *  - An observer word per arena, owned by the upper layer (NULL: nobody
 *    observes the arena), and one process-wide observer function, set once
 *    by the upper layer. tp_arena_destroy of an observed arena calls the
 *    function first, before anything is freed (also when the destroy is
 *    tp_arena_retire's, after its grace period, on the reclaimer thread);
 *    the function must leave the word NULL.
 *  - An observed arena is in the arena layer's registry, so fork holds its
 *    lock (a plain arena's too), and tp_arena_reset and tp_arena_rewind of
 *    an observed arena drop its memory holding the arena's lock (after the
 *    cleanups ran, outside it). An observer that walks the ranges with the
 *    lock held therefore never reads memory being given back.
 *  - The allocated ranges: every chunk's bytes from its first allocation up
 *    to its bump pointer (or up to where it stopped being current), and
 *    every large allocation's asked-for bytes. Never a chunk's unallocated
 *    tail, a spare chunk or memory a reset or rewind gave up. The ranges
 *    include the padding between allocations (16-byte rounding, alignment
 *    gaps), which ASan keeps poisoned: a reader must not be instrumented.
 */
#ifndef TIDEPOOL_ARENA_ROOTS_INTERNAL_H
#define TIDEPOOL_ARENA_ROOTS_INTERNAL_H

#include <tidepool/arena.h>

/* Called once per observed arena at the start of tp_arena_destroy (the
 * arena is still whole). Must set the observer word to NULL. Runs with no
 * arena lock held; may take locks ranked before the arena locks. */
typedef void tp__arena_observer_fn(tp_arena *a);

/* Installs the process-wide observer function (once; later calls replace
 * it). Call with no lock held (it registers fork handlers). Safe to call
 * concurrently. */
void tp__arena_observer_set_fn(tp__arena_observer_fn *fn);

/* The arena's observer word. set: o != NULL links a plain arena into the
 * arena registry (fork), NULL unlinks it. The caller serializes set calls
 * of one arena (the upper layer's lock) and does not run them concurrently
 * with tp_arena_reset, _rewind or _destroy of the arena. */
void *tp__arena_observer(const tp_arena *a);
void tp__arena_observer_set(tp_arena *a, void *o);

/* The arena's lock, held while its ranges are walked: no chunk is taken,
 * retired, reset or rewound meanwhile (allocations within a concurrent
 * arena's per-CPU regions go on: a range may grow while it is walked, which
 * only the allocating thread's own writes can be in). Rank 25 (arena
 * locks). Safe to call concurrently. */
void tp__arena_ranges_lock(tp_arena *a);
void tp__arena_ranges_unlock(tp_arena *a);

/* Calls fn(arg, lo, hi) for each allocated range [lo, hi) of a (see the
 * top of this file). Caller holds tp__arena_ranges_lock(a); a plain arena
 * must not be allocated from meanwhile (its owner is stopped). fn must not
 * call into the arena. Returns the bytes visited. */
typedef void tp__arena_range_fn(void *arg, const char *lo, const char *hi);
size_t tp__arena_foreach_range(tp_arena *a, tp__arena_range_fn *fn, void *arg);

#endif /* TIDEPOOL_ARENA_ROOTS_INTERNAL_H */
