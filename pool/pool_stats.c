/*
 * A pool's statistics (tp_pool_read_stats), derived from the CPU caches'
 * removal counters and the slow paths' counters without any store on the
 * fast path (see the head of pool.c for the derivation).
 */
#define _GNU_SOURCE
#include "pool/pool_internal.h"
#include "core/debug_internal.h"
#include "core/fork_internal.h"
#include "core/os_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- stats ------------------------------------------------------------------ */

uint64_t tp__pool_bytes_mapped(const tp_pool *p) {
  return tp__counter_get(&p->slab_bytes) + tp__pcache_region_bytes();
}

int tp_pool_read_stats(const tp_pool *cp, tp_pool_stats *out) {
  if (!cp || !out) {
    errno = EINVAL;
    return -EINVAL;
  }
  tp_pool *p = (tp_pool *)cp; /* only the stats wrap state is written */
  memset(out, 0, sizeof *out);
  memcpy(out->name, p->name, sizeof out->name);
  uint64_t count_sum = 0, removals = 0;
  pthread_mutex_lock(&p->stats_lock);
  for (unsigned c = 0; c < p->ncpu; c++) {
    uint64_t w = tp__pcache_peek(p->caches, c);
    uint64_t r = w >> 16; /* 48 bits */
    if (r < p->removals_seen[c]) p->removals_wraps[c]++;
    p->removals_seen[c] = r;
    count_sum += tp__pcache_count(w) & ~TP__PCACHE_BUSY; /* fallback's held bit */
    removals += r + (p->removals_wraps[c] << 48);
  }
  pthread_mutex_unlock(&p->stats_lock);
  uint64_t refill_in = tp__counter_get(&p->refill_in);
  uint64_t internal = tp__counter_get(&p->removed_internal);
  uint64_t gets_cache = removals - internal;
  uint64_t puts_cache = count_sum + removals - refill_in;
  out->obj_size = p->obj_size;
  out->stride = p->stride;
  out->cached_cpu = count_sum;
  out->cached_depot = tp__counter_get(&p->depot_objs);
  out->cached = out->cached_cpu + out->cached_depot;
  uint64_t used = tp__counter_get(&p->used_total);
  out->in_use = used > out->cached ? used - out->cached : 0;
  out->gets = gets_cache + tp__counter_get(&p->slow_gets);
  out->puts = puts_cache + tp__counter_get(&p->slow_puts);
  out->cache_misses = tp__counter_get(&p->misses);
  out->cache_hits = gets_cache + puts_cache;
  out->depot_exchanges = tp__counter_get(&p->exchanges);
  out->slabs = tp__counter_get(&p->slabs);
  out->bytes_mapped = tp__pool_bytes_mapped(p);
  out->bytes_resident = tp__counter_get(&p->resident_bytes) + tp__pcache_region_resident();
  out->slabs_freed = tp__counter_get(&p->slabs_freed);
  out->cpu_cache_cap = p->cache_cap;
  out->batch = p->batch;
  out->depot_cap = p->depot_cap;
  out->ncpu = p->ncpu;
  return 0;
}

