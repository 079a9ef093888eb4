/*
 * Internal: the marker's state (struct tp__marker) and the marking entry
 * points the collector's other files call (gc/mark.c holds them): the
 * root enumeration (gc/roots.c) and the finalizer queue (gc/weak.c) push
 * through tp__mark_visit and tp__mark_words, the collection
 * (gc/collect.c) drives the drain and the verification.
 */
#ifndef TIDEPOOL_GC_MARK_INTERNAL_H
#define TIDEPOOL_GC_MARK_INTERNAL_H

#include "gc/heap_internal.h"


/* Marks (or, for the checkmark traversal, checks) the object containing
 * address a, if any. */
void tp__mark_visit(struct tp__marker *mk, uintptr_t a);

/* Every aligned word of [lo, hi) as a possible pointer (tp__mark_visit). */
void tp__mark_words(struct tp__marker *mk, const char *lo, const char *hi);

/* Marks until nothing is left: empties mk's gray stack and scans pending
 * (overflowed, deferred) objects, on up to `want` markers: mk (the
 * leader, on the calling thread) and helper threads (gc/mark_parallel.c);
 * mk's counters then include the helpers'. Call with no session open (the
 * marker thread or a pause; h->lock may be held). */
void tp__mark_drain(struct tp__marker *mk, unsigned want);

/* gc/mark_parallel.c: one marker's part of a mark (par: in a session):
 * its stack, the shared list, the overflow pass, until the end. */
void tp__mark_loop(struct tp__marker *mk, bool par);

/* gc/mark.c: empties mk's gray stack (par: atomic mark bits, sharing). */
void tp__mark_drain_stack(struct tp__marker *mk, bool par);

/* gc/mark_parallel.c: defers an object whose mark bit mk just set to the
 * overflow pass (small: region r, granule g; large: l). */
void tp__mark_pend(struct tp__marker *mk, struct tp__region *r, struct tp__large *l, size_t g,
                   bool par);

/* gc/mark_parallel.c: the shared list and the session, for gc/mark.c. */

/* An idle peer waits and the shared list is empty (relaxed: a hint). */
static inline bool tp__markwork_hungry(struct tp__markwork *ws) {
  return __atomic_load_n(&ws->idle, __ATOMIC_RELAXED) &&
         !__atomic_load_n(&ws->nfull, __ATOMIC_RELAXED);
}
/* Puts v[0..n) (n <= TP__GRAYBLK_N) on the shared list; false on ENOMEM. */
bool tp__markwork_share(struct tp__markwork *ws, const uintptr_t *v, size_t n);
/* Shares half of mk's stack (at most a block) from its bottom. */
void tp__markwork_share_stack(struct tp__marker *mk);
/* Takes a block from the shared list into mk's (empty) stack. */
bool tp__markwork_take(struct tp__marker *mk);
/* mk found no work: waits for some or for the end. true: terminated. */
bool tp__markwork_idle(struct tp__markwork *ws);
/* Wakes idle markers (overflow work appeared). */
void tp__markwork_wake(struct tp__markwork *ws);

/* Resets the overflow pass for a mark starting with mk (a pause). */
void tp__markwork_begin(struct tp__markwork *ws, struct tp__marker *mk);

/* Whether the object with payload p (an object of h) is marked. */
bool tp__gc_is_marked(const tp_heap *h, uintptr_t p);

/* TIDEPOOL_GC_CHECKMARK: re-traverses from the roots and aborts on a
 * reachable unmarked object (h->lock held, world stopped). concurrent:
 * the mark being checked ran concurrently (pause 2), so an unmarked
 * object found only through a stack word is a stale word, not a bug. */
void tp__gc_checkmark(tp_heap *h, bool concurrent);

/* Processes the SATB chunks on `list` (marks their values gray) and gives
 * them back to h->satb_free; returns how many values. */
size_t tp__mark_satb_list(struct tp__marker *mk, struct tp__satb *list);

/* gc/roots.c: visits every root: precise slots, ranges, stopped threads'
 * stacks and registers, registered arenas, the finalizer queue and running
 * finalizers. */
void tp__mark_roots(struct tp__marker *mk);

/* gc/weak.c: after the roots are marked, clears the weak references whose
 * target is white; then queues the white objects with a finalizer and
 * marks them (not drained: the caller drains). */
void tp__gc_clear_weaks(tp_heap *h);
void tp__gc_queue_finalizers(tp_heap *h, struct tp__marker *mk);

#endif /* TIDEPOOL_GC_MARK_INTERNAL_H */
