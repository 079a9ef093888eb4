/*
 * The set of live slab starts (see slabmap_internal.h).
 *
 * A two-level bitmap over page numbers of the 47-bit user address space:
 * the top level is an array of 2^15 leaf pointers (tp__slabmap_top) (256 KiB of .bss,
 * of which only the pages naming a used leaf are ever touched), a leaf is a
 * 2^20-bit (128 KiB) bitmap for 4 GiB of addresses, reserved with
 * MAP_NORESERVE when the first slab in its range is added and never freed
 * (so a lookup racing with anything reads mapped memory). Slabs are page
 * aligned, so one bit per page start covers every slab size.
 *
 * Memory orders. A leaf pointer is installed with a release CAS and read
 * with acquire, so its zeroed bitmap is seen. The bits themselves are
 * relaxed: a slab's bit is set before the slab is published to anyone (its
 * objects leave the pool lock after slab_new) and cleared after the last
 * object came back, so a caller holding an object of the slab is ordered
 * after the set and before the clear by the pool's own synchronization.
 */
#define _GNU_SOURCE
#include "pool/slabmap_internal.h"
#include "core/os_internal.h"

#include <errno.h>

#define LEAF_BITS TP__SLABMAP_LEAF_BITS
#define TOP_BITS TP__SLABMAP_TOP_BITS
#define LEAF_BYTES (((size_t)1 << LEAF_BITS) / 8)

uint64_t *tp__slabmap_top[(size_t)1 << TOP_BITS];

int tp__slabmap_add(const void *slab) {
  uintptr_t t, b;
  if (!tp__slabmap_split(slab, &t, &b)) return -ENOMEM;
  uint64_t *leaf = __atomic_load_n(&tp__slabmap_top[t], __ATOMIC_ACQUIRE);
  if (!leaf) {
    uint64_t *fresh = tp__os_reserve(LEAF_BYTES, 0);
    if (!fresh) return -ENOMEM;
    leaf = NULL;
    /* release: the (zero) bitmap before the pointer; the loser unmaps. */
    if (__atomic_compare_exchange_n(&tp__slabmap_top[t], &leaf, fresh, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
      leaf = fresh;
      tp__counter_add(&tp__os.mapped, (int64_t)LEAF_BYTES);
    } else {
      tp__os_unreserve(fresh, LEAF_BYTES);
    }
  }
  __atomic_fetch_or(&leaf[b / 64], (uint64_t)1 << (b % 64), __ATOMIC_RELAXED);
  return 0;
}

void tp__slabmap_del(const void *slab) {
  uintptr_t t, b;
  if (!tp__slabmap_split(slab, &t, &b)) return;
  uint64_t *leaf = __atomic_load_n(&tp__slabmap_top[t], __ATOMIC_ACQUIRE);
  if (leaf) __atomic_fetch_and(&leaf[b / 64], ~((uint64_t)1 << (b % 64)), __ATOMIC_RELAXED);
}
