/*
 * The address map: which region or large object of a heap holds an
 * address. A two-level radix table (address >> region_shift -> region
 * header, or large header | 1; gc/heap_internal.h describes the layout),
 * maintained here under h->lock as regions and large objects come and go,
 * and the lookup of the object containing an address (tp__find_obj, inline
 * in gc/heap_internal.h for the marker) that conservative scanning and
 * tp_weak_new use.
 */
#define _GNU_SOURCE
#include "gc/heap_internal.h"

#include "core/os_internal.h"

#include <errno.h>

/* ---- the address map ------------------------------------------------------ */

int tp__map_set_range(tp_heap *h, uintptr_t start, size_t len, void *entry) {
  uintptr_t k0 = start >> h->region_shift, k1 = (start + len - 1) >> h->region_shift;
  const uintptr_t l2mask = ((uintptr_t)1 << TP__MAP_L2_BITS) - 1;
  const size_t l2bytes = sizeof(void *) << TP__MAP_L2_BITS;
  if ((start + len - 1) >> TP__USER_ADDR_BITS) return -ENOMEM;
  /* Make every second-level table exist first, so failure changes nothing. */
  for (uintptr_t k = k0; k <= k1; k = (k | l2mask) + 1) {
    if (!h->map_l1[k >> TP__MAP_L2_BITS]) {
      void **l2 = tp__os_map(l2bytes, 0);
      if (!l2) return -ENOMEM;
      /* release: a concurrent marker's acquire load (tp__map_get) sees
       * the table zeroed. */
      __atomic_store_n(&h->map_l1[k >> TP__MAP_L2_BITS], l2, __ATOMIC_RELEASE);
      tp__counter_add(&h->meta_bytes, (int64_t)l2bytes);
    }
  }
  /* release: a concurrent marker that finds the entry (acquire) sees the
   * region's header and bitmaps, or the large header, as written. */
  for (uintptr_t k = k0; k <= k1; k++)
    __atomic_store_n(&h->map_l1[k >> TP__MAP_L2_BITS][k & l2mask], entry, __ATOMIC_RELEASE);
  if (!h->lo || start < h->lo) h->lo = start;
  if (start + len > h->hi) h->hi = start + len;
  return 0;
}

void tp__map_clear_range(tp_heap *h, uintptr_t start, size_t len) {
  uintptr_t k0 = start >> h->region_shift, k1 = (start + len - 1) >> h->region_shift;
  const uintptr_t l2mask = ((uintptr_t)1 << TP__MAP_L2_BITS) - 1;
  /* Never while a mark runs (only sweeps clear entries); atomic because
   * tp__map_get's loads are. */
  for (uintptr_t k = k0; k <= k1; k++)
    __atomic_store_n(&h->map_l1[k >> TP__MAP_L2_BITS][k & l2mask], NULL, __ATOMIC_RELAXED);
}

uintptr_t tp__gc_find(const tp_heap *h, uintptr_t a) {
  struct tp__region *r;
  struct tp__large *l;
  size_t g;
  return tp__find_obj(h, a, &r, &l, &g);
}

