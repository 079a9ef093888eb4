/*
 * Validity checks of a collector heap (tp_heap_check): its regions, the
 * recyclable stack and its large objects, the invariants gc/heap_internal.h
 * states. Debug builds run the region check on every region a sweep keeps
 * (gc/sweep.c), where its contents are fully known; tests call
 * tp_heap_check directly.
 *
 * What is checked:
 *  - region (always, under h->lock): the magic, alignment to region_size,
 *    the address map naming it, no start or mark bit and no line mark in
 *    its header area; outside a mark (phase IDLE or SWEEP: every region on
 *    h->regions is swept or was created after the mark), no mark bit, no
 *    pend bit and no overflow flag;
 *  - region just swept (tp__heap_region_invalid with `epoch`; no allocator
 *    holds it): also every line is free or at the mark's epoch, and the
 *    objects its start bits name are whole — a small-object header word,
 *    inside the region, not overlapping the one before, on lines of the
 *    mark's epoch (a live object's lines are live);
 *  - lists: h->regions' prev/next mirrored; it and the sweep list hold
 *    nregions regions; the recyclable stack holds held regions, each with
 *    a free line, at most nregions of them; h->large's links mirrored, each
 *    large object region-aligned, mapped to itself, with a large header,
 *    unmarked outside a mark; it and the sweep list hold nlarge.
 *
 * Not checked by tp_heap_check: start bits and object headers of regions
 * on h->regions, which an attached thread's allocator writes without the
 * heap's lock (only the sweep-time check reads them).
 */
#define _GNU_SOURCE
#include "gc/heap_internal.h"

#include <errno.h>
#include <stdio.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

static int report(const char *what, const void *at) {
  fprintf(stderr, "tidepool: tp_heap_check: %s (%p)\n", what, at);
  errno = EINVAL;
  return -EINVAL;
}

/* Whether the heap is outside a mark: every region on h->regions has been
 * swept since the last mark, or was created after it (not black). */
static bool outside_mark(const tp_heap *h) {
  int ph = __atomic_load_n(&h->phase, __ATOMIC_RELAXED);
  return ph == TP__PH_IDLE || ph == TP__PH_SWEEP;
}

/* The objects of region r after its sweep: walks the start bits in
 * address order. NULL, or what is wrong. */
static const char *objects_invalid(const tp_heap *h, struct tp__region *r, uint8_t epoch) {
  const uintptr_t base = (uintptr_t)r, end = base + h->region_size;
  const struct tp__bitpair *bits = tp__region_bits(h, r);
  const uint8_t *lines = tp__region_lines(h, r);
  uintptr_t prev_end = base + h->data_off;
  for (size_t w = h->first_word; w < h->nwords; w++) {
    for (uint64_t s = bits[w].start; s; s &= s - 1) {
      size_t g = (w << 6) + (size_t)__builtin_ctzll(s);
      uintptr_t hp = base + (g << TP__GRAN_SHIFT) + 8;
      uintptr_t hdr = *(const uintptr_t *)hp;
      uintptr_t k = hdr >> TP__HDR_K_SHIFT;
      if (hdr & TP__HDR_LARGE) return "region object with a large-object header";
      if (!tp__hdr_type(hdr)) return "region object without a type";
      if (!k) return "region object of size 0";
      uintptr_t from = (hdr & TP__HDR_ARRAY) ? hp - 8 : hp, to = hp + (k << TP__GRAN_SHIFT);
      if (to > end || to - from > h->small_max + 16) return "region object past its region";
      if (from < prev_end) return "region objects overlap";
      prev_end = to;
      for (size_t i = (hp - 8 - base) >> TP__LINE_SHIFT; i <= (to - 1 - base) >> TP__LINE_SHIFT;
           i++)
        if (lines[i] != epoch) return "live region object on a free line";
    }
  }
  return NULL;
}

const char *tp__heap_region_invalid(const tp_heap *h, struct tp__region *r, int epoch) {
  if (r->magic != TP__REGION_MAGIC) return "region magic";
  if ((uintptr_t)r & (h->region_size - 1)) return "region not aligned to its size";
  if (tp__map_get(h, (uintptr_t)r) != r) return "address map does not name the region";
  const struct tp__bitpair *bits = tp__region_bits(h, r);
  const uint8_t *lines = tp__region_lines(h, r);
  for (size_t w = 0; w < h->first_word; w++)
    if (bits[w].start || bits[w].mark) return "start or mark bit in the region header";
  for (size_t i = 0; i < h->first_line; i++)
    if (lines[i]) return "line mark in the region header";
  if (epoch >= 0 || outside_mark(h)) {
    if (r->overflow) return "region overflow flag outside a mark";
    const uint64_t *pend = tp__region_pend(h, r);
    for (size_t w = 0; w < h->nwords; w++) {
      if (bits[w].mark) return "mark bit outside a mark";
      if (pend[w]) return "pend bit outside a mark";
    }
  }
  if (epoch < 0) return NULL;
  for (size_t i = h->first_line; i < h->nlines; i++)
    if (lines[i] && lines[i] != (uint8_t)epoch) return "line mark of another epoch after a sweep";
  return objects_invalid(h, r, (uint8_t)epoch);
}

/* Regions: h->regions, the sweep list, the recyclable stack. */
static int regions_check(const tp_heap *h) {
  const uint64_t nregions = tp__counter_get(&h->nregions);
  uint64_t n = 0;
  for (struct tp__region *r = h->regions; r; r = r->next) {
    if (++n > nregions) return report("region list longer than nregions (cycle?)", r);
    if (r->next && r->next->prev != r) return report("region list next->prev is not the region", r);
    if (r == h->regions && r->prev) return report("first region has a prev", r);
    const char *why = tp__heap_region_invalid(h, r, -1);
    if (why) return report(why, r);
  }
  for (struct tp__region *r = h->sweep_regions; r; r = r->next)
    if (++n > nregions) return report("region and sweep lists longer than nregions", r);
  if (n != nregions) return report("region and sweep lists shorter than nregions", h);
  uint64_t nrec = 0;
  for (struct tp__region *r = h->recyclable; r; r = r->rnext) {
    if (++nrec > nregions) return report("recyclable stack longer than nregions (cycle?)", r);
    if (r->magic != TP__REGION_MAGIC || tp__map_get(h, (uintptr_t)r) != r)
      return report("recyclable region is not the heap's", r);
    const uint8_t *lines = tp__region_lines(h, r);
    uint32_t i = h->first_line;
    while (i < h->nlines && __atomic_load_n(&lines[i], __ATOMIC_RELAXED)) i++;
    if (i == h->nlines) return report("recyclable region without a free line", r);
  }
  return 0;
}

/* Large objects: h->large and the sweep list. */
static int large_check(const tp_heap *h) {
  const uint64_t nlarge = tp__counter_get(&h->nlarge);
  const bool idle = outside_mark(h);
  uint64_t n = 0;
  for (struct tp__large *l = h->large; l; l = l->next) {
    if (++n > nlarge) return report("large list longer than nlarge (cycle?)", l);
    if (l->next && l->next->prev != l) return report("large list next->prev is not the object", l);
    if ((uintptr_t)l & (h->region_size - 1)) return report("large object not region-aligned", l);
    if (tp__map_get(h, (uintptr_t)l) != (void *)((uintptr_t)l | 1))
      return report("address map does not name the large object", l);
    if (!(l->hdr & TP__HDR_LARGE) || !tp__hdr_type(l->hdr))
      return report("large object header word", l);
    if (l->map_bytes < sizeof *l + l->payload) return report("large object past its mapping", l);
    if (idle && (l->marked || l->overflow)) return report("large object marked outside a mark", l);
  }
  for (struct tp__large *l = h->sweep_large; l; l = l->next)
    if (++n > nlarge) return report("large and sweep lists longer than nlarge", l);
  if (n != nlarge) return report("large and sweep lists shorter than nlarge", h);
  return 0;
}

int tp_heap_check(tp_heap *h) {
  if (!h || h->magic != TP__HEAP_MAGIC) {
    errno = EINVAL;
    return -EINVAL;
  }
  pthread_mutex_lock(&h->lock);
  int rc = regions_check(h);
  if (!rc) rc = large_check(h);
  pthread_mutex_unlock(&h->lock);
  return rc;
}
