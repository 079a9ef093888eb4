/*
 * The sweeper's pass over one pool (pool/sweeper.c runs it over every
 * pool): idle CPU caches drained, old depot batches returned to the slabs,
 * empty slabs given back to the OS (after a grace period for a pool that
 * was retired into, see pool/retire.c).
 */
#define _GNU_SOURCE
#include "pool/pool_internal.h"
#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/fork_internal.h"
#include "core/os_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- the sweeper's pass ------------------------------------------------------ */

/* Epoch callback for a slab retired by tp__pool_release_empty. */
void tp__pool_slab_retired(tp_slab *s) { tp__pool_slab_release(s->pool, s); }

size_t tp__pool_sweep(tp_pool *p, uint64_t now_ms, uint64_t decay_ms, size_t *retain) {
  /* 1. CPU caches whose commit word has not changed for decay_ms: nobody
   *    got or put anything there; drain them (fenced) into the slabs. */
  void **buf = NULL;
  for (unsigned c = 0; c < p->ncpu; c++) {
    uint64_t w = tp__pcache_peek(p->caches, c);
    if (w != p->sweep_word[c] || p->sweep_since_ms[c] == 0) {
      p->sweep_word[c] = w;
      p->sweep_since_ms[c] = now_ms;
      continue;
    }
    if (tp__pcache_count(w) == 0 || now_ms - p->sweep_since_ms[c] < decay_ms) continue;
    if (!buf && !(buf = tp__malloc(TP__PCACHE_SLOTS * sizeof(void *)))) break;
    if (tp__pool_drain_cpu(p, c, buf, p->sweep_since_ms[c])) tp__counter_add(&tp__caches_drained, 1);
    p->sweep_word[c] = tp__pcache_peek(p->caches, c);
  }
  free(buf);

  /* 2. Depot batches parked for decay_ms go back to the slabs; younger ones
   *    go back on the stack, in their old order. (The kept ones stay
   *    counted while detached: a depot_put meanwhile may see the depot
   *    full and free its batch to the slabs, which is harmless.) */
  tp__mag_chain keep = {0};
  for (tp__mag *m = tp__mag_take_all(&p->depot), *next; m; m = next) {
    next = tp__mag_next(m);
    if (now_ms - m->stamp_ms >= decay_ms) {
      tp__pool_depot_count(p, m, -1);
      tp__pool_central_free(p, m->obj, m->count, m->stamp_ms);
      tp__mag_free(m);
    } else {
      tp__mag_chain_append(&keep, m);
    }
  }
  tp__mag_push_chain(&p->depot, &keep);
  return tp__pool_release_empty(p, now_ms, decay_ms, retain);
}

size_t tp__pool_release_empty(tp_pool *p, uint64_t now_ms, uint64_t decay_ms, size_t *retain) {
  /* Slabs with nothing out, unused for decay_ms: keep the most recently
   * used up to *retain bytes, detach the rest and give them back. Empty
   * slabs gather at the tail of the avail list, newest last. */
  size_t released = 0;
  tp_slab *victims = NULL;
  pthread_mutex_lock(&p->lock);
  for (tp_slab *s = p->avail_tail, *prev; s; s = prev) {
    prev = s->prev;
    if (s->used != 0 || now_ms - s->stamp_ms < decay_ms) continue;
    if (*retain >= p->slab_size) {
      *retain -= p->slab_size;
      continue;
    }
    tp__pool_avail_remove(p, s);
    if (s->all_prev) s->all_prev->all_next = s->all_next; else p->all = s->all_next;
    if (s->all_next) s->all_next->all_prev = s->all_prev;
    tp__counter_add(&p->slabs, -1);
    tp__counter_add(&p->slab_bytes, -(int64_t)p->slab_size);
    tp__pool_set_resident(p, s, 0);
    s->next = victims;
    victims = s;
  }
  pthread_mutex_unlock(&p->lock);
  for (tp_slab *s = victims, *next; s; s = next) {
    next = s->next;
    tp__counter_add(&p->slabs_freed, 1);
    released += p->slab_size;
    if (__atomic_load_n(&p->epoch_used, __ATOMIC_RELAXED)) {
      /* An epoch reader may still hold a pointer into the slab from before
       * its objects were retired: give it back after a grace period. */
      tp__pool_retire_slab(s, p->slab_size);
    } else {
      tp__pool_slab_release(p, s);
    }
  }
  return released;
}
