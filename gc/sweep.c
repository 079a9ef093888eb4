/*
 * Sweeping: after a mark, each region's start bits become start & mark
 * (dead objects vanish from the conservative lookup, so a stale pointer
 * can never reach a freed object), its free lines are those without the
 * mark's epoch, a region with no live line goes back to the pool (O(1):
 * one tp_pool_put, after the world restarts and outside the heap's lock),
 * one with some goes on the recyclable stack for the allocators' holes.
 * Unmarked large objects are unmapped. No object walk anywhere.
 *
 * After a concurrent mark the sweep runs on the marker thread while the
 * mutators run (tp__gc_sweep_begin .. tp__gc_sweep_some). Pause 2 moves
 * every region and large object onto h->sweep_regions / h->sweep_large
 * and empties the recyclable stack, and it retired every allocation
 * buffer, so no allocator holds an unswept region; the sweeper takes
 * them a few at a time under h->lock and puts each back on h->regions
 * (and the recyclable stack) or releases it. Why this is safe:
 *  - allocators only get holes from the recyclable stack (swept regions)
 *    or fresh regions from the pool, never an unswept region;
 *  - the conservative lookup of a mutator (tp_weak_new's check) runs under
 *    h->lock, so it sees a region either unswept (the dead objects' start
 *    bits still set: it may accept a dead object, which the caller could
 *    not legitimately hold) or swept, never half of a sweep;
 *  - the marker does not run: the next mark starts (pause 1) only after
 *    the sweep has finished, so a mark never sees unswept regions and
 *    "outside a mark every mark bit is clear" holds when it starts.
 */
#define _GNU_SOURCE
#include "gc/heap_internal.h"

#include "core/list_internal.h"
#include "core/debug_internal.h"
#include "core/os_internal.h"
#include "pool/pool_internal.h"

/* ---- sweeping -------------------------------------------------------------------- */

/* Sweeps region r after the mark of epoch `epoch` (h->lock held, or the
 * world stopped; no allocator uses r). Returns how many of its data lines
 * are free; counts its dead objects in *freed. */
static uint32_t sweep_region(tp_heap *h, struct tp__region *r, uint8_t epoch, uint64_t *freed) {
  struct tp__bitpair *bits = tp__region_bits(h, r);
  for (size_t w = h->first_word; w < h->nwords; w++) {
    uint64_t s = bits[w].start, mk = bits[w].mark;
    *freed += (uint64_t)__builtin_popcountll(s & ~mk);
    bits[w].start = s & mk;
    bits[w].mark = 0;
  }
  uint8_t *lines = tp__region_lines(h, r);
  uint32_t nfree = 0;
  for (uint32_t i = h->first_line; i < h->nlines; i++) {
    if (lines[i] == epoch) continue;
    lines[i] = 0;
    nfree++;
    TP_POISON((char *)r + ((size_t)i << TP__LINE_SHIFT), TP__LINE); /* ASan only */
  }
  return nfree;
}

/* Sweeps a large object: true if it lives; else it leaves the map and
 * the counters (the caller unlinks it and puts it on rel). */
static bool sweep_large(tp_heap *h, struct tp__large *l) {
  if (l->marked) {
    l->marked = 0;
    return true;
  }
  tp__map_clear_range(h, (uintptr_t)l, l->map_bytes);
  tp__counter_add(&h->nlarge, -1);
  tp__counter_add(&h->large_map_bytes, -(int64_t)l->map_bytes);
  return false;
}

/* ---- the concurrent sweep ------------------------------------------------------ */

void tp__gc_sweep_begin(tp_heap *h, uint8_t epoch) {
  h->sweep_regions = h->regions;
  h->regions = NULL;
  h->sweep_large = h->large;
  h->large = NULL;
  h->recyclable = NULL;
  h->sweep_epoch = epoch;
}

bool tp__gc_sweep_some(tp_heap *h, size_t budget, struct tp__release *rel) {
  uint64_t freed = 0, released = 0;
  const uint32_t data_lines = h->nlines - h->first_line;
  for (; budget && h->sweep_regions; budget--) {
    struct tp__region *r = h->sweep_regions;
    h->sweep_regions = r->next;
    uint32_t nfree = sweep_region(h, r, h->sweep_epoch, &freed);
    if (nfree == data_lines) {
      tp__map_clear_range(h, (uintptr_t)r, h->region_size);
      r->rnext = rel->regions;
      rel->regions = r;
      released++;
      continue;
    }
    if (TP_DEBUG) { /* gc/check.c: what the sweep keeps is whole */
      const char *why = tp__heap_region_invalid(h, r, h->sweep_epoch);
      if (why) tp__fatal("sweep", r, why);
    }
    TP__LIST_PUSH(h->regions, r, prev, next);
    if (nfree) {
      r->rnext = h->recyclable;
      h->recyclable = r;
    }
  }
  for (; budget && h->sweep_large; budget--) {
    struct tp__large *l = h->sweep_large;
    h->sweep_large = l->next;
    if (sweep_large(h, l)) {
      TP__LIST_PUSH(h->large, l, prev, next);
    } else {
      l->next = rel->large;
      rel->large = l;
      freed++;
    }
  }
  tp__counter_add(&h->objs_freed, (int64_t)freed);
  tp__counter_add(&h->nregions, -(int64_t)released);
  tp__counter_add(&h->regions_released, (int64_t)released);
  return !h->sweep_regions && !h->sweep_large;
}

void tp__gc_release(tp_heap *h, struct tp__release *rel) {
  /* Give memory back outside every heap lock (the pool's locks rank
   * below the heap's) and after the world restarted. */
  for (struct tp__region *r = rel->regions, *next; r; r = next) {
    next = r->rnext;
    TP_UNPOISON(r, h->region_size);
    tp_pool_put(h->pool, r);
  }
  for (struct tp__large *l = rel->large, *next; l; l = next) {
    next = l->next;
    tp__os_unmap(l, l->map_bytes);
  }
}

/* The stop-the-world sweep (the fallback without a marker thread): the
 * concurrent sweep, all of it at once. */
void tp__gc_sweep(tp_heap *h, uint8_t epoch, struct tp__release *rel) {
  tp__gc_sweep_begin(h, epoch);
  tp__gc_sweep_some(h, SIZE_MAX, rel);
}
