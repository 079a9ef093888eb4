/*
 * Pacing: when the next automatic collection starts (next_gc, from
 * trigger_percent like GOGC, min_heap_bytes and memory_limit like
 * GOMEMLIMIT), heap_sys as the stats and the pacer see it, and giving
 * empty pool memory back to the OS when the heap is over its limit.
 */
#define _GNU_SOURCE
#include "gc/heap_internal.h"

#include "core/os_internal.h"
#include "pool/pool_internal.h"

#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- pacing ----------------------------------------------------------------------- */

static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

void tp__gc_pace(tp_heap *h) {
  uint64_t live = tp__counter_get(&h->live_bytes);
  uint64_t goal = UINT64_MAX;
  if (h->trigger_percent) {
    /* live * percent / 100 without overflow for any live below 2^57. */
    uint64_t grow = live / 100 * h->trigger_percent + live % 100 * h->trigger_percent / 100;
    goal = sat_add(live, grow);
  }
  if (h->memory_limit) {
    /* Like GOMEMLIMIT: leave room for what is mapped but not in objects
     * (fragmentation, cached regions, metadata), but never closer to the
     * live heap than 1/16 of it or four regions (a soft limit: over it
     * the heap collects often, it does not fail). */
    uint64_t sys = tp__gc_heap_sys(h);
    uint64_t alloc = tp__heap_alloc_now(h);
    uint64_t overhead = sys > alloc ? sys - alloc : 0;
    uint64_t lgoal = h->memory_limit > overhead ? h->memory_limit - overhead : 0;
    uint64_t floor = live + (live / 16 > 4 * h->region_size ? live / 16 : 4 * h->region_size);
    if (lgoal < floor) lgoal = floor;
    if (lgoal < goal) goal = lgoal;
  }
  if (goal != UINT64_MAX) {
    if (goal < h->min_heap) goal = h->min_heap;
    /* At least a region above live: a goal at live (live * percent / 100
     * rounds to 0, min_heap <= live) would make every allocation after a
     * collection collect again, forever. A region is also the pacer's
     * resolution (heap_alloc lags by a buffer per thread). */
    uint64_t least = sat_add(live, h->region_size);
    if (goal < least) goal = least;
  }
  __atomic_store_n(&h->next_gc, goal, __ATOMIC_RELAXED);
}

void tp__gc_trim(tp_heap *h) {
  size_t retain = 0;
  pthread_mutex_lock(&tp__pool_pass_lock);
  tp__pool_scavenge(h->pool);
  tp__pool_release_empty(h->pool, tp__now_ms_coarse(), 0, &retain);
  pthread_mutex_unlock(&tp__pool_pass_lock);
}

/* No pool lock: the pacer calls this under the heap lock (rank 40), above
 * the pools' (30). */
uint64_t tp__gc_heap_sys(const tp_heap *h) {
  return tp__pool_bytes_mapped(h->pool) + tp__counter_get(&h->large_map_bytes) +
         tp__counter_get(&h->meta_bytes);
}
