/*
 * Internal: the process-wide set of live slabs (pool/slabmap.c).
 *
 * Answers "is this address the start of a slab some pool mapped?" without
 * touching the address, so a pointer the application hands back can be
 * checked before its slab header is read: a malloc'd pointer, a small
 * integer or a pointer into a slab that was given back is refused instead
 * of faulting on an unmapped header.
 *
 * Synchronization table:
 *   tp__slabmap_add / _del  — by the slab's creator / releaser; safe to call
 *                             concurrently with each other and with _has
 *                             (atomic OR / AND on the slab's bit).
 *   tp__slabmap_has         — any thread, any time; exact for a slab whose
 *                             lifetime the caller's own object keeps (it
 *                             cannot be added or deleted meanwhile).
 */
#ifndef TIDEPOOL_SLABMAP_INTERNAL_H
#define TIDEPOOL_SLABMAP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Marks the page-aligned slab start `slab` live. 0, or -ENOMEM (a leaf of
 * the map could not be mapped; nothing changed). */
int tp__slabmap_add(const void *slab);
/* Marks it dead (before its pages are unmapped). */
void tp__slabmap_del(const void *slab);
/* The map's layout (pool/slabmap.c): page numbers of the 47-bit user
 * address space, split into a top index and a bit of a 2^20-bit leaf. */
#define TP__SLABMAP_PAGE_SHIFT 12
#define TP__SLABMAP_LEAF_BITS 20
#define TP__SLABMAP_TOP_BITS (47 - TP__SLABMAP_PAGE_SHIFT - TP__SLABMAP_LEAF_BITS)
/* Leaf pointers (installed once, release; read acquire). */
extern uint64_t *tp__slabmap_top[(size_t)1 << TP__SLABMAP_TOP_BITS];

/* The map position of the page at `slab`: its top index (*t) and its bit
 * in that leaf (*bit); false if it is not a user address. */
static inline bool tp__slabmap_split(const void *slab, uintptr_t *t, uintptr_t *bit) {
  uintptr_t pn = (uintptr_t)slab >> TP__SLABMAP_PAGE_SHIFT;
  *t = pn >> TP__SLABMAP_LEAF_BITS;
  *bit = pn & (((uintptr_t)1 << TP__SLABMAP_LEAF_BITS) - 1);
  return !(pn >> (TP__SLABMAP_LEAF_BITS + TP__SLABMAP_TOP_BITS));
}

/* Whether `slab` is a live slab start. Two loads; never faults. Inline: it
 * is on the owner check of every tp_pool_retire (20 instructions there);
 * out of line, the call and the registers it made tp_pool_retire save cost
 * 16 more per retire (callgrind). */
static inline bool tp__slabmap_has(const void *slab) {
  uintptr_t t, b;
  /* One branch for both refusals: not a user address, or not page aligned. */
  bool user = tp__slabmap_split(slab, &t, &b);
  bool aligned = !((uintptr_t)slab & (((uintptr_t)1 << TP__SLABMAP_PAGE_SHIFT) - 1));
  if (!(user & aligned)) return false;
  const uint64_t *leaf = __atomic_load_n(&tp__slabmap_top[t], __ATOMIC_ACQUIRE);
  return leaf && (__atomic_load_n(&leaf[b / 64], __ATOMIC_RELAXED) >> (b % 64) & 1);
}

#endif /* TIDEPOOL_SLABMAP_INTERNAL_H */
