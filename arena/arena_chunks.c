/*
 * Region arenas: the chunk pools shared by every arena (one per chunk
 * size) and large allocations, which get mappings of their own.
 */
#define _GNU_SOURCE
#include <errno.h>
#include "arena/arena_state_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- chunk pools, one per chunk size ------------------------------------ */

#define MAX_CHUNK_POOLS 16

/*
 * The table of chunk pools. Entries are only ever added, under
 * chunk_pools_lock; an entry is published by the release store of its pool
 * pointer, after its size. Lookups take no lock: an acquire load of the
 * pool pointer, then its size (so every arena create, from any thread, is
 * one short scan, and a child forked while another thread held the lock
 * still finds every pool published before the fork).
 *
 * Fork: no prepare handler can take chunk_pools_lock, because pools are
 * created (and register their own fork handlers, under the fork table's
 * lock) while it is held. A child forked while another thread held it
 * gets the lock re-initialized (the holder does not exist in the child);
 * whatever that thread was creating was not published and is not seen.
 */
static pthread_mutex_t chunk_pools_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  size_t size;
  tp_pool *pool; /* NULL: free; published with release */
} chunk_pools[MAX_CHUNK_POOLS];

static void chunk_pools_fork_child(void) {
  pthread_mutex_init(&chunk_pools_lock, NULL);
}
static pthread_once_t chunk_pools_once = PTHREAD_ONCE_INIT;
static void chunk_pools_init_once(void) {
  tp__fork_register(TP__FORK_RANK_ARENAS, NULL, NULL, chunk_pools_fork_child);
}

static tp_pool *chunk_pool_find(size_t size, int *free_slot) {
  int i;
  for (i = 0; i < MAX_CHUNK_POOLS; i++) {
    /* acquire: pairs with the release store that published the entry, so
     * its size (written before) is seen. */
    tp_pool *p = __atomic_load_n(&chunk_pools[i].pool, __ATOMIC_ACQUIRE);
    if (!p) break;
    if (chunk_pools[i].size == size) return p;
  }
  *free_slot = i;
  return NULL;
}

tp_pool *tp__arena_chunk_pool(size_t size) {
  int i;
  tp_pool *p = chunk_pool_find(size, &i);
  if (p) return p;
  pthread_once(&chunk_pools_once, chunk_pools_init_once);
  pthread_mutex_lock(&chunk_pools_lock);
  p = chunk_pool_find(size, &i); /* another thread may have added it */
  if (!p && i < MAX_CHUNK_POOLS) {
    /* CPU caches of 32 chunks (2 MiB at the default size): resets and
     * refills stay on the per-CPU fast path; the sweeper trims what idles. */
    tp_pool_config cfg = {.name = "arena-chunks", .obj_size = size, .align = 64};
    p = tp__pool_create(&cfg, 64, 32 * size);
    if (p) {
      chunk_pools[i].size = size;
      __atomic_store_n(&chunk_pools[i].pool, p, __ATOMIC_RELEASE); /* publishes */
    }
  } else if (!p) {
    errno = ENOMEM;
  }
  pthread_mutex_unlock(&chunk_pools_lock);
  return p;
}

/* ---- large allocations -------------------------------------------------------- */

/* Records of large allocations come from one internal pool, so neither the
 * mapping nor the arena's chunks carry them. */
static tp_pool *large_records;
static pthread_once_t large_records_once = PTHREAD_ONCE_INIT;
static void large_records_init(void) {
  tp_pool_config c = {.name = "arena-large-records", .obj_size = sizeof(struct tp__arena_large)};
  large_records = tp__pool_create(&c, 16, 64 * sizeof(struct tp__arena_large));
}

/* Maps a large allocation. The mapping is the allocation alone: its size
 * rounded up to a page, at most 2x what was asked because large sizes
 * exceed half a page (chunks are at least 8 KiB; large means over a quarter
 * chunk). Page alignment covers every alignment the API allows (<= 4096).
 * On failure nothing has changed. Concurrent arenas: caller holds a->lock. */
void *tp__arena_large_alloc(tp_arena *a, size_t size) {
  size_t page = tp__os_page_size();
  size_t bytes = tp__round_up(size, page); /* no overflow: alloc_impl caps size */
  if (!tp__arena_may_hold(a, bytes)) {
    errno = ENOMEM;
    return NULL;
  }
  pthread_once(&large_records_once, large_records_init);
  struct tp__arena_large *l = large_records ? tp_pool_get(large_records) : NULL;
  if (!l) {
    errno = ENOMEM;
    return NULL;
  }
  void *m = tp__os_map(bytes, page);
  if (!m) {
    tp_pool_put(large_records, l);
    errno = ENOMEM;
    return NULL;
  }
  tp__counter_add(&tp__os.resident, (int64_t)bytes);
  l->map = m;
  l->map_bytes = bytes;
  l->size = size;
  l->next = a->large;
  a->large = l;
  a->nlarge++;
  a->large_bytes += size;
  tp__arena_note_held(a, (ssize_t)bytes);
  return m;
}

void tp__arena_large_free(tp_arena *a, struct tp__arena_large *l) {
  a->nlarge--;
  a->large_bytes -= l->size;
  tp__arena_note_held(a, -(ssize_t)l->map_bytes);
  tp__counter_add(&tp__os.resident, -(int64_t)l->map_bytes);
  tp__os_unmap(l->map, l->map_bytes);
  tp_pool_put(large_records, l);
}

/* ---- stats ------------------------------------------------------------------ */

size_t tp__arena_chunk_pools(tp_pool **pools, size_t *sizes, size_t max) {
  size_t n = 0;
  for (; n < MAX_CHUNK_POOLS; n++) {
    tp_pool *p = __atomic_load_n(&chunk_pools[n].pool, __ATOMIC_ACQUIRE); /* see find */
    if (!p) break;
    if (n < max) pools[n] = p, sizes[n] = chunk_pools[n].size;
  }
  return n;
}
