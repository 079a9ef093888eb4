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
#include <stdint.h>

/* Marks the page-aligned slab start `slab` live. 0, or -ENOMEM (a leaf of
 * the map could not be mapped; nothing changed). */
int tp__slabmap_add(const void *slab);
/* Marks it dead (before its pages are unmapped). */
void tp__slabmap_del(const void *slab);
/* Whether `slab` is a live slab start. Two loads; never faults. */
bool tp__slabmap_has(const void *slab);

#endif /* TIDEPOOL_SLABMAP_INTERNAL_H */
