/*
 * Region arenas: observers and allocated ranges, for a layer above that
 * reads an arena's memory (the collector scans registered arenas as
 * roots; see arena_roots_internal.h for the contract).
 *
 * Which bytes of a chunk are allocated. A plain arena: the current chunk up
 * to the bump pointer, an older chunk up to `used` (recorded when it stopped
 * being current). A concurrent arena has several bump ranges at once — one
 * per CPU region and the shared region — each always ending at its chunk's
 * end, so the chunk a range is in is `end - chunk_size`. A chunk that stops
 * being a range's gets `used` recorded before the range leaves it: by the
 * rseq install sequence (arena_concurrent.c) before it zeroes the region's
 * end, or under the arena's lock for the shared region and the fallback
 * (percpu-cas) regions. So, with the lock held (no chunk is taken or
 * retired through the locked paths), a chunk's allocated end is the larger
 * of its recorded `used` and the bump pointer of any range found in it.
 *
 * Why reading a region while its CPU may bump it is safe. The walk reads a
 * region's end, then its ptr (acquire loads), then the chunk's used. The
 * install sequence stores used, then end = 0, then ptr, then end = to: a
 * walk that saw the old end and then a ptr outside that chunk raced an
 * install, so used was stored before (it precedes the ptr store the walk
 * saw; x86 keeps stores in order, the acquire loads keep the walk's loads
 * in order) — the claim is dropped and used is read after. A region left
 * with end 0 by an aborted install (its CPU changed part-way) still holds a
 * ptr; it is matched to the chunk that contains it. Bumps that commit
 * during the walk only add allocations; the walk may or may not include
 * them (the collector only needs what was allocated before the world
 * stopped: see gc/arena_roots.c).
 */
#define _GNU_SOURCE
#include "arena/arena_roots_internal.h"
#include "arena/arena_state_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- observers --------------------------------------------------------------- */

static tp__arena_observer_fn *observer_fn;

void tp__arena_observer_set_fn(tp__arena_observer_fn *fn) {
  /* The registry observed arenas join registers its fork handlers now, not
   * under the observer's lock (the fork table's lock ranks first). */
  tp__arena_arenas_init();
  __atomic_store_n(&observer_fn, fn, __ATOMIC_RELEASE);
}

void *tp__arena_observer(const tp_arena *a) { return __atomic_load_n(&a->observer, __ATOMIC_RELAXED); }

void tp__arena_observer_set(tp_arena *a, void *o) {
  void *was = tp__arena_observer(a);
  __atomic_store_n(&a->observer, o, __ATOMIC_RELAXED);
  /* Concurrent arenas are in the registry from create to destroy. */
  if (a->flags & TP_ARENA_CONCURRENT) return;
  if (!was && o)
    tp__arena_arenas_link(a);
  else if (was && !o)
    tp__arena_arenas_unlink(a);
}

void tp__arena_notify_destroy(tp_arena *a) {
  if (!tp__arena_observer(a)) return;
  tp__arena_observer_fn *fn = __atomic_load_n(&observer_fn, __ATOMIC_ACQUIRE);
  if (fn) fn(a);
  TP_ASSERT(!tp__arena_observer(a));
}

/* Around a reset's or rewind's drop of memory: the lock when observed. */
bool tp__arena_drop_begin(tp_arena *a) {
  if (!tp__arena_observer(a)) return false;
  pthread_mutex_lock(&a->lock);
  return true;
}

void tp__arena_drop_end(tp_arena *a, bool locked) {
  if (locked) pthread_mutex_unlock(&a->lock);
}

void tp__arena_ranges_lock(tp_arena *a) { pthread_mutex_lock(&a->lock); }
void tp__arena_ranges_unlock(tp_arena *a) { pthread_mutex_unlock(&a->lock); }

/* ---- ranges ------------------------------------------------------------------- */

/* The bump pointer of range {pp, pe} if it lies in chunk c, else NULL. */
static char *range_claim(const tp_arena *a, struct tp__arena_chunk *c, char *const *pp,
                         char *const *pe) {
  char *start = tp__arena_alloc_start(a, c), *cend = tp__arena_chunk_end(a, c);
  char *e = __atomic_load_n(pe, __ATOMIC_ACQUIRE);
  char *p = __atomic_load_n(pp, __ATOMIC_ACQUIRE);
  if (e && e != cend) return NULL; /* another chunk's range */
  if (!p || p < start || p > cend) return NULL;
  if (!e && p == start) return NULL; /* end 0: only a ptr inside c names it */
  return p;
}

/* The allocated end of concurrent arena a's chunk c (lock held). */
static char *concurrent_chunk_hi(tp_arena *a, struct tp__arena_chunk *c) {
  char *hi = tp__arena_alloc_start(a, c);
  char *p = range_claim(a, c, &a->sptr, &a->send);
  if (p > hi) hi = p;
  if (a->head.regions)
    for (unsigned cpu = 0; cpu < a->ncpu; cpu++) {
      struct tp__arena_region *r = tp__arena_region_of(a, cpu);
      p = range_claim(a, c, &r->ptr, &r->end);
      if (p > hi) hi = p;
    }
  char *u = tp__arena_alloc_start(a, c) + __atomic_load_n(&c->used, __ATOMIC_ACQUIRE);
  return u > hi ? u : hi;
}

size_t tp__arena_foreach_range(tp_arena *a, tp__arena_range_fn *fn, void *arg) {
  size_t bytes = 0;
  bool conc = a->flags & TP_ARENA_CONCURRENT;
  for (struct tp__arena_chunk *c = a->cur; c; c = c->next) {
    char *lo = tp__arena_alloc_start(a, c), *hi;
    if (conc)
      hi = concurrent_chunk_hi(a, c);
    else
      hi = c == a->cur ? *tp__arena_bump_ptr(a) : lo + c->used;
    if (hi > lo) {
      fn(arg, lo, hi);
      bytes += (size_t)(hi - lo);
    }
    if (c == a->first) break;
  }
  for (struct tp__arena_large *l = a->large; l; l = l->next) {
    fn(arg, (const char *)l->map, (const char *)l->map + l->size);
    bytes += l->size;
  }
  return bytes;
}
