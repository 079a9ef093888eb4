/*
 * Validity checks of a pool's structures (tp_pool_check): every slab and
 * the two slab lists (under the pool's lock), every CPU cache block, and
 * the depot's magazines. Debug builds run the slab check on every slab
 * they hand objects back to and the whole check in tp_pool_destroy; tests
 * call tp_pool_check directly.
 *
 * What is checked (the invariants pool_internal.h and detail/rseq.h state):
 *  - slab: owned by this pool; used + nfree == carved <= capacity; nfree
 *    is the number of set free bits and no bit is set at or past carved;
 *    a slab with a free or uncarved object is on the avail list;
 *  - lists: every prev/next link of the avail list and the all-slabs list
 *    is mirrored; the pool's slab count and used_total match the slabs;
 *  - CPU cache block: count <= limit <= TP__PCACHE_SLOTS while unlocked,
 *    and each cached object is non-NULL and from a slab of this pool;
 *  - depot: every magazine holds 1..TP__MAG_CAP objects of this pool, and
 *    the depot's counters match the magazines.
 */
#define _GNU_SOURCE
#include "pool/pool_internal.h"
#include "core/debug_internal.h"
#include "core/os_internal.h"

#include <errno.h>
#include <stdio.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

static int report(const tp_pool *p, const char *what, const void *at) {
  fprintf(stderr, "tidepool: tp_pool_check(%s): %s (%p)\n", p->name[0] ? p->name : "(unnamed)",
          what, at);
  errno = EINVAL;
  return -EINVAL;
}

/* An object pointer is p's when it lies in a slab whose header names p, at
 * an object boundary. Reads the header at the masked address. */
static bool owns(const tp_pool *p, const void *obj) {
  if (!obj) return false;
  const tp_slab *s = tp__slab_of(p, obj);
  if (s->pool != p) return false;
  size_t i;
  return tp__pool_obj_index(p, s, obj, &i) && i < s->capacity;
}

const char *tp__pool_slab_invalid(const tp_pool *p, const tp_slab *s) {
  if (s->pool != p) return "slab header names another pool";
  if (s->capacity != p->capacity) return "slab capacity differs from the pool's";
  if (s->carved > s->capacity) return "slab carved past its capacity";
  if ((uint64_t)s->used + s->nfree != s->carved) return "slab used + nfree != carved";
  uint64_t bits = 0;
  size_t words = tp__pool_bitmap_words(s->capacity);
  for (size_t w = 0; w < words; w++) {
    uint64_t word = s->free_bits[w];
    bits += (uint64_t)__builtin_popcountll(word);
    /* No free bit at or past carved. */
    if (w * 64 + 64 > s->carved) {
      size_t first_bad = s->carved > w * 64 ? s->carved - w * 64 : 0;
      if (first_bad < 64 && (word >> first_bad)) return "slab free bit set past carved";
    }
  }
  if (bits != s->nfree) return "slab nfree differs from its free bits";
  if ((s->nfree > 0 || s->carved < s->capacity) && !s->on_avail)
    return "slab with free objects is not on the avail list";
  return NULL;
}

static int check_slabs_locked(const tp_pool *p) {
  uint64_t nslabs = 0, used = 0, on_avail = 0, avail_len = 0;
  const tp_slab *prev = NULL;
  for (const tp_slab *s = p->all; s; prev = s, s = s->all_next) {
    if (s->all_prev != prev) return report(p, "all-slabs list: prev link broken", s);
    const char *why = tp__pool_slab_invalid(p, s);
    if (why) return report(p, why, s);
    if (++nslabs > (uint64_t)1 << 40) return report(p, "all-slabs list: cycle", s);
    used += s->used;
    on_avail += s->on_avail;
  }
  prev = NULL;
  for (const tp_slab *s = p->avail_head; s; prev = s, s = s->next) {
    if (s->prev != prev) return report(p, "avail list: prev link broken", s);
    if (!s->on_avail) return report(p, "avail list holds a slab not marked on_avail", s);
    if (++avail_len > nslabs) return report(p, "avail list longer than the slabs (cycle?)", s);
  }
  if (p->avail_tail != prev) return report(p, "avail list: tail is not its last slab", p->avail_tail);
  if (avail_len != on_avail) return report(p, "avail list length != slabs marked on_avail", p);
  if (nslabs != tp__counter_get(&p->slabs)) return report(p, "slab count differs from the slabs", p);
  if (used != tp__counter_get(&p->used_total)) return report(p, "used_total differs from the slabs", p);
  return 0;
}

static int check_caches(const tp_pool *p) {
  for (unsigned c = 0; c < p->ncpu; c++) {
    const tp__pcache *b = tp__pcache_at(p->caches, c);
    uint64_t w = __atomic_load_n(&b->word, __ATOMIC_ACQUIRE);
    uint64_t bounds = __atomic_load_n(&b->bounds, __ATOMIC_ACQUIRE);
    unsigned count = tp__pcache_count(w) & ~(unsigned)TP__PCACHE_BUSY;
    uint32_t lo = (uint32_t)bounds, limit = (uint32_t)(bounds >> 32);
    if ((w & TP__PCACHE_BUSY) || lo == TP__PCACHE_LOCKED) continue; /* held by a drain */
    if (limit > TP__PCACHE_SLOTS) return report(p, "CPU cache limit above the slots", b);
    if (count > limit) return report(p, "CPU cache count above its limit", b);
    for (unsigned i = 0; i < count; i++)
      if (!owns(p, b->slot[i])) return report(p, "CPU cache holds an object not from this pool", b->slot[i]);
  }
  return 0;
}

/* Detaches the depot, checks it, and puts it back in its order. */
static int check_depot(tp_pool *p) {
  int rc = 0;
  uint64_t mags = 0, objs = 0;
  tp__mag_chain keep = {0};
  for (tp__mag *m = tp__mag_take_all(&p->depot), *next; m; m = next) {
    next = tp__mag_next(m);
    if (!rc) {
      mags++;
      objs += m->count;
      if (m->count == 0 || m->count > TP__MAG_CAP) rc = report(p, "depot magazine count out of range", m);
      for (uint32_t i = 0; !rc && i < m->count; i++)
        if (!owns(p, m->obj[i])) rc = report(p, "depot holds an object not from this pool", m->obj[i]);
    }
    tp__mag_chain_append(&keep, m);
  }
  tp__mag_push_chain(&p->depot, &keep);
  if (!rc && mags != tp__counter_get(&p->depot_mags)) rc = report(p, "depot magazine count differs", p);
  if (!rc && objs != tp__counter_get(&p->depot_objs)) rc = report(p, "depot object count differs", p);
  return rc;
}

int tp_pool_check(tp_pool *p) {
  if (!p) {
    errno = EINVAL;
    return -EINVAL;
  }
  pthread_mutex_lock(&p->lock);
  int rc = check_slabs_locked(p);
  pthread_mutex_unlock(&p->lock);
  if (!rc) rc = check_caches(p);
  if (!rc) rc = check_depot(p);
  return rc;
}
