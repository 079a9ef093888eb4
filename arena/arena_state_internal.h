/*
 * Internal to arena/: the arena's layout (struct tp_arena, chunk, large and
 * cleanup records, per-CPU regions) and the helpers its files share
 * (arena.c: create, allocation, marks, reset, stats; arena_concurrent.c:
 * per-CPU regions and the fork registry; arena_chunks.c: chunk pools and
 * large mappings; arena_check.c). Not for the layers above.
 */
#ifndef TIDEPOOL_ARENA_STATE_INTERNAL_H
#define TIDEPOOL_ARENA_STATE_INTERNAL_H

#include <stdatomic.h>
#include <tidepool/arena.h>
#include <tidepool/epoch.h>
#include <tidepool/pool.h>

#include "core/debug_internal.h"
#include "core/list_internal.h"
#include "core/fork_internal.h"
#include "core/os_internal.h"
#include "core/percpu_internal.h"
#include "core/registry_internal.h"
#include "arena/chunk_pools_internal.h"
#include "pool/pool_internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DEFAULT_CHUNK ((size_t)64 << 10)
#define MIN_CHUNK ((size_t)8 << 10) /* large sizes (> chunk/4) exceed half a page */
#define MAX_CHUNK ((size_t)1 << 20)
#define ALIGN_MAX ((size_t)4096)

struct tp__arena_chunk {
  struct tp__arena_chunk *next; /* older chunk */
  size_t used;        /* bytes used (from tp__arena_alloc_start), recorded
                         when it stopped being current; concurrent arenas:
                         0 while a region or the shared region is in it
                         (the region install's rseq sequence stores it: an
                         atomic 8-byte store, read with atomic loads) */
};
#define CHUNK_HDR tp__round_up(sizeof(struct tp__arena_chunk), 16)
/* The region install (arena_concurrent.c) writes `used` from assembly. */
_Static_assert(sizeof(struct tp__arena_chunk) == 16 && offsetof(struct tp__arena_chunk, used) == 8,
               "chunk header: 16 bytes, used at offset 8");

/* A large allocation's record (from the large_records pool). */
struct tp__arena_large {
  struct tp__arena_large *next;
  void *map;
  size_t map_bytes;
  size_t size; /* as asked */
};

struct tp__arena_cleanup {
  struct tp__arena_cleanup *next;
  void (*fn)(void *);
  void *arg;
};

/* A CPU's bump region (concurrent arenas); two cache lines each. */
struct tp__arena_region {
  char *ptr;
  char *end;
  uint64_t busy; /* fallback only */
  char pad[2 * TP_CACHELINE - 2 * sizeof(char *) - sizeof(uint64_t)];
};
/* Two lines per CPU: the L2's spatial prefetcher fetches lines in 128-byte
 * pairs, so neighbours one line apart would still bounce between cores. */
#define REGION_SHIFT TP__ARENA_REGION_SHIFT /* the inline bump's (arena.h) */
_Static_assert(sizeof(struct tp__arena_region) == (1u << REGION_SHIFT), "one line pair per CPU");
/* The empty regions below region 0 that rseq cpu_ids -1 and -2 land on. */
#define REGION_SENTINEL_BYTES ((size_t)TP__PCACHE_SENTINELS << REGION_SHIFT)

struct tp_arena {
  /* Read on every allocation (and, for concurrent arenas, only read): the
   * first cache line of the arena, which sits a line after its chunk's
   * header so that linking chunks never writes it. */
  struct tp__arena_head head; /* the inline paths' fields (arena.h): plain
                                 {ptr, end}, NULL when off; concurrent
                                 regions: region 0 of ncpu (sentinels below) */
  size_t small_max;           /* concurrent: sizes 1..small_max go straight to the
                                 regions; 0 in a plain arena: none do */
  unsigned flags;
  bool rseq;                  /* concurrent: the rseq regions are in use */
  tp_pool *chunks;            /* the shared chunk pool */
  size_t chunk_size, max_bytes, keep_bytes;
  /* Written by allocations that leave the fast path. */
  _Alignas(TP_CACHELINE) char *ptr, *end; /* plain arenas in ASan builds */
  struct tp__arena_chunk *first, *cur; /* cur: newest (head of the list) */
  struct tp__arena_chunk *spare;       /* kept by reset, used before the pool */
  struct tp__arena_large *large;
  struct tp__arena_cleanup *cleanups;
  size_t nchunks, nlarge, high_water, large_bytes;
  _Atomic size_t held; /* tp_arena_retire reads it unlocked (a size hint) */
  _Atomic size_t wasted; /* concurrent arenas: relaxed atomic adds; else tp__arena_stat_add */
  size_t retired_used; /* bytes used in chunks that stopped being current */
  uint64_t generation, resets;
  /* Concurrent arenas. */
  pthread_mutex_t lock;
  char *sptr, *send; /* the shared region (lock) */
  unsigned ncpu;
  struct tp__reg_link reg; /* concurrent and observed arenas (arena_concurrent.c) */
  void *observer; /* the layer above's word (arena_roots_internal.h); relaxed
                     atomic: set under that layer's lock, read by reset */
};

static inline char *tp__arena_chunk_data(struct tp__arena_chunk *c) { return (char *)c + CHUNK_HDR; }
static inline char *tp__arena_chunk_end(const tp_arena *a, struct tp__arena_chunk *c) {
  return (char *)c + a->chunk_size;
}
/* Where allocations start in c: after the arena itself in the first chunk. */
static inline char *tp__arena_alloc_start(const tp_arena *a, struct tp__arena_chunk *c) {
  return c == a->first ? (char *)tp__round_up((uintptr_t)(a + 1), 16) : tp__arena_chunk_data(c);
}
/* The plain arena's bump pointer lives in the head, where the inline fast
 * path uses it, except under ASan: the fast path cannot unpoison, so the
 * head stays NULL and every allocation takes the slow path. */
static inline char **tp__arena_bump_ptr(tp_arena *a) { return TP_ASAN ? &a->ptr : &a->head.ptr; }
static inline char **tp__arena_bump_end(tp_arena *a) { return TP_ASAN ? &a->end : &a->head.end; }

static inline struct tp__arena_region *tp__arena_region_of(tp_arena *a, unsigned cpu) {
  return (struct tp__arena_region *)(a->head.regions + ((size_t)cpu << REGION_SHIFT));
}

/* arena.c */
/* Adds d (mod 2^64) to a statistic that one thread at a time writes (a
 * plain arena's owner, or the holder of a->lock) and others may read:
 * a relaxed load and store, no read-modify-write. */
static inline void tp__arena_stat_add(_Atomic size_t *v, size_t d) {
  atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + d, memory_order_relaxed);
}
void tp__arena_note_held(tp_arena *a, ssize_t delta);
bool tp__arena_may_hold(const tp_arena *a, size_t more);
struct tp__arena_chunk *tp__arena_chunk_take(tp_arena *a);
/* arena_concurrent.c */
void tp__arena_arenas_init(void); /* the registry's fork handlers, once */
void tp__arena_arenas_link(struct tp_arena *a);
void tp__arena_arenas_unlink(struct tp_arena *a);
void *tp__arena_concurrent_alloc(tp_arena *a, size_t n);
void *tp__arena_concurrent_alloc_impl(tp_arena *a, size_t size, size_t align);
void *tp__arena_rseq_refill(tp_arena *a, size_t n);
/* arena_ranges.c */
void tp__arena_notify_destroy(tp_arena *a);
bool tp__arena_drop_begin(tp_arena *a);
void tp__arena_drop_end(tp_arena *a, bool locked);
/* arena_chunks.c */
tp_pool *tp__arena_chunk_pool(size_t size);
void *tp__arena_large_alloc(tp_arena *a, size_t size);
void tp__arena_large_free(tp_arena *a, struct tp__arena_large *l);

#endif /* TIDEPOOL_ARENA_STATE_INTERNAL_H */
