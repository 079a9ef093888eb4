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

/* Empties the gray stack and scans pending (overflowed) objects until no
 * overflow is left. */
void tp__mark_drain_all(struct tp__marker *mk);

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
