/*
 * Region arenas: chunks from shared chunk pools, bump allocation, large
 * mappings, marks, cleanups, per-CPU bump regions for concurrent arenas.
 *
 * Layout. The first chunk holds struct tp_arena, then allocations. Every
 * chunk starts with a struct chunk header; allocations follow at 16-byte
 * alignment. Chunks in use form a list, newest first; `cur` is the head.
 * Large allocations (over a quarter chunk) that do not fit in the rest of
 * the current chunk are separate page-rounded mappings on their own list,
 * so they never waste the current chunk. (The inline fast path serves any
 * size that fits the current chunk; the slow path does the same, so every
 * build, with the fast path or without it, lays out alike.)
 *
 * Concurrent arenas. Each CPU has a bump region {ptr, end} on its own pair
 * of cache lines. An allocation is one rseq sequence, inline in arena.h
 * (tp__arena_region_bump): read the CPU's region, check
 * ptr + n <= end, commit with one store of ptr (no atomic; see
 * <tidepool/percpu.h> for why a sequence that commits had the region to
 * itself). A CPU whose region is exhausted installs a fresh chunk with a
 * sequence of three stores — end = 0, ptr, then end (the commit) — so that
 * if it is aborted part-way the region is left with end == 0, which refuses
 * every allocation (never a region that spans two chunks). Chunks are
 * taken from the pool and linked into the arena under the arena's mutex.
 * Without rseq, a region is taken with a CAS on its `busy` word (acquire)
 * and given back with a release store; its ptr and end are accessed with
 * relaxed atomics (read_stats reads them from other threads). A busy
 * region sends the allocation to the arena's mutex-protected shared region
 * (no spinning), and so does a thread that rseq left unregistered (its
 * cpu_id is negative: the sentinel regions must stay empty). A refill holds
 * the region's busy word, then the arena's mutex: nobody waits for busy.
 */
#define _GNU_SOURCE
#include <tidepool/arena.h>
#include <tidepool/epoch.h>
#include <tidepool/pool.h>

#include "core/debug_internal.h"
#include "core/fork_internal.h"
#include "core/os_internal.h"
#include "core/percpu_internal.h"
#include "arena/chunk_pools_internal.h"
#include "pool/pool_internal.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

#define DEFAULT_CHUNK ((size_t)64 << 10)
#define MIN_CHUNK ((size_t)8 << 10) /* large sizes (> chunk/4) exceed half a page */
#define MAX_CHUNK ((size_t)1 << 20)
#define ALIGN_MAX ((size_t)4096)

struct chunk {
  struct chunk *next; /* older chunk */
  size_t used;        /* bytes used, recorded when it stopped being current */
};
#define CHUNK_HDR tp__round_up(sizeof(struct chunk), 16)

/* A large allocation's record (from the large_records pool). */
struct large {
  struct large *next;
  void *map;
  size_t map_bytes;
  size_t size; /* as asked */
};

struct cleanup {
  struct cleanup *next;
  void (*fn)(void *);
  void *arg;
};

/* A CPU's bump region (concurrent arenas); two cache lines each. */
struct region {
  char *ptr;
  char *end;
  uint64_t busy; /* fallback only */
  char pad[2 * TP_CACHELINE - 2 * sizeof(char *) - sizeof(uint64_t)];
};
/* Two lines per CPU: the L2's spatial prefetcher fetches lines in 128-byte
 * pairs, so neighbours one line apart would still bounce between cores. */
#define REGION_SHIFT TP__ARENA_REGION_SHIFT /* the inline bump's (arena.h) */
_Static_assert(sizeof(struct region) == (1u << REGION_SHIFT), "one line pair per CPU");
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
  struct chunk *first, *cur; /* cur: newest (head of the list) */
  struct chunk *spare;       /* kept by reset, used before the pool */
  struct large *large;
  struct cleanup *cleanups;
  size_t nchunks, nlarge, held, high_water, large_bytes;
  size_t wasted; /* concurrent arenas: relaxed atomic adds */
  size_t retired_used; /* bytes used in chunks that stopped being current */
  uint64_t generation, resets;
  /* Concurrent arenas. */
  pthread_mutex_t lock;
  char *sptr, *send; /* the shared region (lock) */
  unsigned ncpu;
  struct tp_arena *reg_prev, *reg_next; /* concurrent arenas (arenas_lock) */
};

/* ---- fork: every concurrent arena's lock -------------------------------- */

/* A concurrent arena's lock is taken by refills and large allocations from
 * any thread; a fork while another thread holds it would leave the child's
 * copy locked forever. The registry lists the concurrent arenas so that
 * fork's prepare handler (rank TP__FORK_RANK_ARENAS, below the pools' locks
 * that a refill takes under a->lock) holds every one of them across fork. */
static pthread_mutex_t arenas_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tp_arena *arenas; /* concurrent arenas (arenas_lock) */
static pthread_once_t arenas_once = PTHREAD_ONCE_INIT;

static void arenas_fork_prepare(void) {
  pthread_mutex_lock(&arenas_lock);
  for (struct tp_arena *a = arenas; a; a = a->reg_next) pthread_mutex_lock(&a->lock);
}
static void arenas_fork_release(void) {
  for (struct tp_arena *a = arenas; a; a = a->reg_next) pthread_mutex_unlock(&a->lock);
  pthread_mutex_unlock(&arenas_lock);
}
static void arenas_init_once(void) {
  tp__fork_register(TP__FORK_RANK_ARENAS, arenas_fork_prepare, arenas_fork_release,
                    arenas_fork_release);
}

static void arenas_link(struct tp_arena *a) {
  pthread_once(&arenas_once, arenas_init_once);
  pthread_mutex_lock(&arenas_lock);
  a->reg_prev = NULL;
  a->reg_next = arenas;
  if (arenas) arenas->reg_prev = a;
  arenas = a;
  pthread_mutex_unlock(&arenas_lock);
}

static void arenas_unlink(struct tp_arena *a) {
  pthread_mutex_lock(&arenas_lock);
  if (a->reg_prev) a->reg_prev->reg_next = a->reg_next; else arenas = a->reg_next;
  if (a->reg_next) a->reg_next->reg_prev = a->reg_prev;
  pthread_mutex_unlock(&arenas_lock);
}

/* ---- chunk pools, one per chunk size ------------------------------------ */

#define MAX_CHUNK_POOLS 16
static pthread_mutex_t chunk_pools_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  size_t size;
  tp_pool *pool;
} chunk_pools[MAX_CHUNK_POOLS];

static tp_pool *chunk_pool(size_t size) {
  tp_pool *p = NULL;
  pthread_mutex_lock(&chunk_pools_lock);
  int i;
  for (i = 0; i < MAX_CHUNK_POOLS && chunk_pools[i].pool; i++)
    if (chunk_pools[i].size == size) {
      p = chunk_pools[i].pool;
      break;
    }
  if (!p && i < MAX_CHUNK_POOLS) {
    /* CPU caches of 32 chunks (2 MiB at the default size): resets and
     * refills stay on the per-CPU fast path; the sweeper trims what idles. */
    tp_pool_config cfg = {.name = "arena-chunks", .obj_size = size, .align = 64};
    p = tp__pool_create(&cfg, 64, 32 * size);
    if (p) chunk_pools[i].size = size, chunk_pools[i].pool = p;
  } else if (!p) {
    errno = ENOMEM;
  }
  pthread_mutex_unlock(&chunk_pools_lock);
  return p;
}

/* ---- helpers ---------------------------------------------------------------- */

/* A generation no arena in this process has had: marks carry it, so a mark
 * from a destroyed arena never matches a new arena at the same address,
 * nor one from before a reset. Each thread takes blocks of 2^16 from one
 * counter (one shared atomic per 65536 creates/resets); 0 is never used. */
static uint64_t generation_source = 1;
static uint64_t next_generation(void) {
  static __thread uint64_t next, end;
  if (next == end) {
    next = __atomic_fetch_add(&generation_source, (uint64_t)1 << 16, __ATOMIC_RELAXED);
    end = next + ((uint64_t)1 << 16);
  }
  return next++;
}

static inline char *chunk_data(struct chunk *c) { return (char *)c + CHUNK_HDR; }
static inline char *chunk_end(const tp_arena *a, struct chunk *c) {
  return (char *)c + a->chunk_size;
}
/* Where allocations start in c: after the arena itself in the first chunk. */
static inline char *alloc_start(const tp_arena *a, struct chunk *c) {
  return c == a->first ? (char *)tp__round_up((uintptr_t)(a + 1), 16) : chunk_data(c);
}

static void note_held(tp_arena *a, ssize_t delta) {
  a->held = (size_t)((ssize_t)a->held + delta);
  if (a->held > a->high_water) a->high_water = a->held;
}

static bool may_hold(const tp_arena *a, size_t more) {
  return !a->max_bytes || (a->held <= a->max_bytes && more <= a->max_bytes - a->held);
}

/* A chunk for the arena: a spare kept by reset, else one from the pool.
 * Its data is poisoned until allocated from. */
static struct chunk *chunk_take(tp_arena *a) {
  struct chunk *c = a->spare;
  if (c) {
    a->spare = c->next;
  } else {
    if (!may_hold(a, a->chunk_size)) {
      errno = ENOMEM;
      return NULL;
    }
    if (!(c = tp_pool_get(a->chunks))) return NULL;
    a->nchunks++;
    note_held(a, (ssize_t)a->chunk_size);
    TP_POISON(chunk_data(c), a->chunk_size - CHUNK_HDR);
  }
  c->next = NULL;
  c->used = 0;
  return c;
}

static void chunk_give(tp_arena *a, struct chunk *c) {
  TP_UNPOISON(c, a->chunk_size);
  a->nchunks--;
  note_held(a, -(ssize_t)a->chunk_size);
  tp_pool_put(a->chunks, c);
}

/* The plain arena's bump pointer lives in the head, where the inline fast
 * path uses it, except under ASan: the fast path cannot unpoison, so the
 * head stays NULL and every allocation takes the slow path. */
static inline char **bump_ptr(tp_arena *a) { return TP_ASAN ? &a->ptr : &a->head.ptr; }
static inline char **bump_end(tp_arena *a) { return TP_ASAN ? &a->end : &a->head.end; }

/* c becomes the current chunk; the old one (cur is never NULL: the first
 * chunk is current from create on) records what it used. */
static void make_current(tp_arena *a, struct chunk *c, char *from) {
  char *p = *bump_ptr(a);
  size_t used = (size_t)(p - alloc_start(a, a->cur));
  a->cur->used = used;
  a->retired_used += used;
  a->wasted += (size_t)(chunk_end(a, a->cur) - p);
  c->next = a->cur;
  a->cur = c;
  *bump_ptr(a) = from;
  *bump_end(a) = chunk_end(a, c);
}

/* ---- large allocations -------------------------------------------------------- */

/* Records of large allocations come from one internal pool, so neither the
 * mapping nor the arena's chunks carry them. */
static tp_pool *large_records;
static pthread_once_t large_records_once = PTHREAD_ONCE_INIT;
static void large_records_init(void) {
  tp_pool_config c = {.name = "arena-large-records", .obj_size = sizeof(struct large)};
  large_records = tp__pool_create(&c, 16, 64 * sizeof(struct large));
}

/* Maps a large allocation. The mapping is the allocation alone: its size
 * rounded up to a page, at most 2x what was asked because large sizes
 * exceed half a page (chunks are at least 8 KiB; large means over a quarter
 * chunk). Page alignment covers every alignment the API allows (<= 4096).
 * On failure nothing has changed. Concurrent arenas: caller holds a->lock. */
static void *large_alloc(tp_arena *a, size_t size) {
  size_t page = tp__os_page_size();
  size_t bytes = tp__round_up(size, page); /* no overflow: alloc_impl caps size */
  if (!may_hold(a, bytes)) {
    errno = ENOMEM;
    return NULL;
  }
  pthread_once(&large_records_once, large_records_init);
  struct large *l = large_records ? tp_pool_get(large_records) : NULL;
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
  note_held(a, (ssize_t)bytes);
  return m;
}

static void large_free(tp_arena *a, struct large *l) {
  a->nlarge--;
  a->large_bytes -= l->size;
  note_held(a, -(ssize_t)l->map_bytes);
  tp__counter_add(&tp__os.resident, -(int64_t)l->map_bytes);
  tp__os_unmap(l->map, l->map_bytes);
  tp_pool_put(large_records, l);
}

/* ---- concurrent arenas: per-CPU bump regions --------------------------------- */

/*
 * Installs chunk data [from, to) as the calling CPU's region and allocates n
 * bytes from it, in one sequence; returns the allocation. old_ptr and old_end
 * receive what the region held (its unused tail is counted as waste).
 */
static char *region_install_rseq(char *base, char *from, char *to, size_t n,
                                 char **old_ptr, char **old_end) {
  char *optr, *oend;
  __asm__ volatile(TP__RSEQ_CS_DESCRIPTOR TP__RSEQ_ENTER TP__RSEQ_BLOCK_AT(REGION_SHIFT)
                   "movq (%%rax), %[optr]\n\t"
                   "movq 8(%%rax), %[oend]\n\t"
                   "movq $0, 8(%%rax)\n\t"          /* end = 0: refuse all */
                   "leaq (%[from],%[n]), %%rcx\n\t"
                   "movq %%rcx, (%%rax)\n\t"        /* ptr = from + n */
                   "movq %[to], 8(%%rax)\n\t"       /* commit: end = to */
                   "2:\n\t" TP__RSEQ_ABORT_HANDLER
                   : [optr] "=&r"(optr), [oend] "=&r"(oend)
                   : [rseq] "r"(__rseq_offset), [base] "r"(base), [from] "r"(from),
                     [to] "r"(to), [n] "r"(n)
                   : "rax", "rcx", "memory", "cc");
  *old_ptr = optr;
  *old_end = oend;
  return from;
}

static bool region_lock(struct region *r) {
  uint64_t z = 0;
  /* acquire: the previous holder's ptr/end stores are visible. */
  return __atomic_compare_exchange_n(&r->busy, &z, 1, false, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED);
}
static void region_unlock(struct region *r) {
  __atomic_store_n(&r->busy, 0, __ATOMIC_RELEASE);
}

static inline struct region *region_of(tp_arena *a, unsigned cpu) {
  return (struct region *)(a->head.regions + ((size_t)cpu << REGION_SHIFT));
}

/* A fresh chunk for a concurrent arena, linked at the head of the list as
 * in a plain arena (cur is off the allocation's read-only line). Caller
 * holds a->lock. NULL + errno from chunk_take (the pthread calls around it
 * return their errors and leave errno alone). */
static struct chunk *concurrent_chunk_locked(tp_arena *a) {
  struct chunk *c = chunk_take(a);
  if (c) {
    c->next = a->cur;
    a->cur = c;
  }
  return c;
}

/*
 * Takes n bytes from a bump range {*pp, *pe} the caller owns (the shared
 * region under a->lock, or a fallback region under its busy word), moving
 * the range to a fresh chunk when it has no room (the old tail counts as
 * waste). `locked`: the caller holds a->lock, else the refill takes it.
 * Relaxed atomics: ownership (the mutex, or busy's acquire/release) orders
 * the owners; the range is atomic only because read_stats reads fallback
 * regions it does not own, and wasted is a statistic. NULL + errno, the
 * range unchanged, without a chunk.
 */
static char *range_alloc(tp_arena *a, char **pp, char **pe, size_t n, bool locked) {
  char *p = __atomic_load_n(pp, __ATOMIC_RELAXED);
  char *e = __atomic_load_n(pe, __ATOMIC_RELAXED);
  if (!p || n > (size_t)(e - p)) {
    if (!locked) pthread_mutex_lock(&a->lock);
    struct chunk *c = concurrent_chunk_locked(a);
    if (!locked) pthread_mutex_unlock(&a->lock);
    if (!c) return NULL;
    if (p && e > p) __atomic_fetch_add(&a->wasted, (size_t)(e - p), __ATOMIC_RELAXED);
    p = chunk_data(c);
    __atomic_store_n(pe, chunk_end(a, c), __ATOMIC_RELAXED);
  }
  __atomic_store_n(pp, p + n, __ATOMIC_RELAXED);
  TP_UNPOISON(p, n);
  return p;
}

/* The shared region, under the arena's mutex. */
static void *shared_alloc(tp_arena *a, size_t n) {
  pthread_mutex_lock(&a->lock);
  char *p = range_alloc(a, &a->sptr, &a->send, n, true);
  pthread_mutex_unlock(&a->lock);
  return p;
}

/* The common case of a concurrent arena's allocation of n bytes (a multiple
 * of 16) in rseq mode: one bump. NULL when it does not fit. */
static inline char *concurrent_bump(tp_arena *a, size_t n) {
  char *p = tp__arena_region_bump(a->head.regions, n);
  if (TP_LIKELY(p != NULL)) TP_UNPOISON(p, n);
  return p;
}

/* rseq mode, after the bump missed: a fresh chunk, linked into the arena
 * under its lock, then installed as the region of whatever CPU the
 * sequence runs on (a thread rseq left unregistered uses the shared
 * region: the sentinel regions must stay empty). */
static TP_NOINLINE void *rseq_refill(tp_arena *a, size_t n) {
  if (tp__rseq_cpu_id() < 0) return shared_alloc(a, n);
  pthread_mutex_lock(&a->lock);
  struct chunk *c = concurrent_chunk_locked(a);
  pthread_mutex_unlock(&a->lock);
  /* No chunk (max_bytes, or the pool is out of memory): what is left of
   * the shared region (the first chunk's tail, at first) may still fit. */
  if (!c) return shared_alloc(a, n);
  char *optr, *oend;
  char *p = region_install_rseq(a->head.regions, chunk_data(c), chunk_end(a, c), n, &optr, &oend);
  /* relaxed: a statistic; no second trip through the lock per refill. */
  if (optr && oend > optr) __atomic_fetch_add(&a->wasted, (size_t)(oend - optr), __ATOMIC_RELAXED);
  TP_UNPOISON(p, n);
  return p;
}

/* percpu-cas mode: the CPU's region under its busy word, refilled in place;
 * a busy region sends the allocation to the shared one (no spinning). */
static TP_NOINLINE void *cas_alloc(tp_arena *a, size_t n) {
  struct region *r = region_of(a, tp__current_cpu());
  if (!region_lock(r)) return shared_alloc(a, n);
  char *p = range_alloc(a, &r->ptr, &r->end, n, false); /* a refill keeps r */
  region_unlock(r);
  /* No chunk for the region: the shared region may still have room. */
  return p ? p : shared_alloc(a, n);
}

static void *concurrent_alloc(tp_arena *a, size_t n) {
  if (!a->rseq) return cas_alloc(a, n);
  char *p = concurrent_bump(a, n);
  return p ? p : rseq_refill(a, n);
}

/* Any size and alignment alloc_impl accepts: large sizes get their own
 * mapping (under the lock), the rest come from the regions. */
static void *concurrent_alloc_impl(tp_arena *a, size_t size, size_t align) {
  if (size > a->small_max) {
    pthread_mutex_lock(&a->lock);
    void *p = large_alloc(a, size);
    pthread_mutex_unlock(&a->lock); /* leaves errno alone */
    return p;
  }
  size_t n = tp__round_up(size ? size : 1, 16);
  if (align <= 16) return concurrent_alloc(a, n);
  /* Over-allocate, then align inside (rare; alignment > 16). */
  char *p = concurrent_alloc(a, n + align);
  return p ? (void *)tp__round_up((uintptr_t)p, align) : NULL;
}

/* ---- allocation ------------------------------------------------------------------ */

/* From the current chunk, if it fits (any size: as the inline fast path
 * does), else NULL. */
static void *plain_bump(tp_arena *a, size_t size, size_t align) {
  char **pp = bump_ptr(a), **pe = bump_end(a);
  char *p = (char *)tp__round_up((uintptr_t)*pp, align);
  size_t n = tp__round_up(size ? size : 1, 16);
  if (*pp && p <= *pe && n <= (size_t)(*pe - p)) {
    *pp = p + n;
    TP_UNPOISON(p, size);
    return p;
  }
  return NULL;
}

/* A size that is not large and does not fit the current chunk. */
static void *plain_alloc(tp_arena *a, size_t size, size_t align) {
  char *p;
  size_t n = tp__round_up(size ? size : 1, 16);
  /* A fresh chunk. */
  struct chunk *c = chunk_take(a);
  if (!c) return NULL;
  p = (char *)tp__round_up((uintptr_t)chunk_data(c), align);
  make_current(a, c, p + n);
  TP_UNPOISON(p, size);
  return p;
}

static void *alloc_impl(tp_arena *a, size_t size, size_t align) {
  if (!a) {
    errno = EINVAL;
    return NULL;
  }
  if (size > SIZE_MAX / 4) {
    errno = ENOMEM;
    return NULL;
  }
  if (a->flags & TP_ARENA_CONCURRENT) return concurrent_alloc_impl(a, size, align);
  void *p = plain_bump(a, size, align);
  if (p) return p;
  if (size > a->chunk_size / 4) return large_alloc(a, size); /* its own mapping */
  return plain_alloc(a, size, align);
}

void *tp__arena_alloc_slow(tp_arena *a, size_t size) {
  /* A concurrent arena's small size comes here when the inline bump missed
   * (a refill is due: straight to it, the bump is not tried twice) or is
   * off (ASan, percpu-cas, where this is every allocation). A plain arena's
   * small_max is 0, so the size test alone excludes it. */
  if (TP_LIKELY(a != NULL) && size - 1 < a->small_max) {
    size_t n = (size + 15) & ~(size_t)15;
    return a->head.inline_max ? rseq_refill(a, n) : concurrent_alloc(a, n);
  }
  return alloc_impl(a, size, 16);
}

void *tp_arena_alloc_aligned(tp_arena *a, size_t size, size_t align) {
  if (!a || !tp__is_pow2(align) || align > ALIGN_MAX) {
    errno = EINVAL;
    return NULL;
  }
  return alloc_impl(a, size, align < 16 ? 16 : align);
}

void *tp_arena_calloc(tp_arena *a, size_t n, size_t size) {
  size_t bytes;
  if (!a) {
    errno = EINVAL;
    return NULL;
  }
  if (__builtin_mul_overflow(n, size, &bytes)) {
    errno = ENOMEM;
    return NULL;
  }
  void *p = tp_arena_alloc(a, bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

char *tp_arena_strdup(tp_arena *a, const char *s) {
  if (!a || !s) {
    errno = EINVAL;
    return NULL;
  }
  size_t len = strlen(s);
  char *d = tp_arena_alloc(a, len + 1);
  if (d) memcpy(d, s, len + 1);
  return d;
}

/* ---- create / destroy -------------------------------------------------------------- */

tp_arena *tp_arena_create(const tp_arena_config *cfg) {
  tp_arena_config d = {0};
  if (!cfg) cfg = &d;
  size_t cs = cfg->chunk_size ? tp__round_up(cfg->chunk_size, 64) : DEFAULT_CHUNK;
  if (cs < MIN_CHUNK || cs > MAX_CHUNK || (cfg->flags & ~TP_ARENA_CONCURRENT) ||
      (cfg->max_bytes && cfg->max_bytes < cs)) {
    errno = EINVAL;
    return NULL;
  }
  tp_pool *pool = chunk_pool(cs);
  if (!pool) return NULL;
  struct chunk *c = tp_pool_get(pool);
  if (!c) return NULL;
  c->next = NULL;
  c->used = 0;
  TP_UNPOISON(c, cs);
  tp_arena *a = (tp_arena *)((char *)c + TP_CACHELINE); /* off the header's line */
  memset(a, 0, sizeof *a);
  a->chunks = pool;
  a->chunk_size = cs;
  a->max_bytes = cfg->max_bytes;
  a->keep_bytes = cfg->keep_bytes;
  a->flags = cfg->flags;
  a->first = a->cur = c;
  a->nchunks = 1;
  a->held = a->high_water = cs;
  a->generation = next_generation();
  pthread_mutex_init(&a->lock, NULL);
  char *from = (char *)tp__round_up((uintptr_t)(a + 1), 16);
  if (a->flags & TP_ARENA_CONCURRENT) {
    const struct tp__percpu_info *pi = tp__percpu();
    a->ncpu = pi->ncpu;
    a->rseq = pi->rseq;
    a->small_max = cs / 4; /* not large; cs / 4 is a multiple of 16 */
    size_t bytes = ((size_t)a->ncpu << REGION_SHIFT) + REGION_SENTINEL_BYTES;
    char *raw = aligned_alloc(2 * TP_CACHELINE, bytes);
    if (!raw) {
      pthread_mutex_destroy(&a->lock);
      tp_pool_put(pool, c);
      errno = ENOMEM;
      return NULL;
    }
    memset(raw, 0, bytes); /* sentinels and empty regions refuse */
    a->head.regions = raw + REGION_SENTINEL_BYTES;
    /* The rest of the first chunk is the shared region's first range, so
     * an arena whose max_bytes allows one chunk still allocates. */
    a->sptr = from;
    a->send = chunk_end(a, c);
    /* The inline bump (arena.h) cannot unpoison: off under ASan, as the
     * plain fast path is. */
    a->head.inline_max = a->rseq && !TP_ASAN ? a->small_max : 0;
    arenas_link(a);
  } else {
    *bump_ptr(a) = from;
    *bump_end(a) = chunk_end(a, c);
  }
  TP_POISON(from, (size_t)(chunk_end(a, c) - from));
  return a;
}

/* Runs cleanups newer than `stop` (LIFO). */
static void run_cleanups(tp_arena *a, struct cleanup *stop) {
  while (a->cleanups && a->cleanups != stop) {
    struct cleanup *cl = a->cleanups;
    a->cleanups = cl->next;
    cl->fn(cl->arg);
  }
}

static void release_large(tp_arena *a, struct large *stop) {
  while (a->large && a->large != stop) {
    struct large *l = a->large;
    a->large = l->next;
    large_free(a, l);
  }
}

static void give_list(tp_arena *a, struct chunk *c) {
  while (c && c != a->first) {
    struct chunk *next = c->next;
    chunk_give(a, c);
    c = next;
  }
}

void tp_arena_destroy(tp_arena *a) {
  if (!a) return;
  run_cleanups(a, NULL);
  release_large(a, NULL);
  give_list(a, a->cur);
  give_list(a, a->spare);
  if (a->flags & TP_ARENA_CONCURRENT) arenas_unlink(a);
  if (a->head.regions) free(a->head.regions - REGION_SENTINEL_BYTES);
  pthread_mutex_destroy(&a->lock);
  tp_pool *pool = a->chunks;
  struct chunk *first = a->first;
  size_t cs = a->chunk_size;
  TP_UNPOISON(first, cs);
  tp_pool_put(pool, first); /* the arena itself lives here: last */
}

static void retire_cb(void *obj, void *arg) {
  (void)arg;
  tp_arena_destroy(obj);
}

int tp_arena_retire(tp_arena *a) {
  if (!a) {
    errno = EINVAL;
    return -EINVAL;
  }
  return tp_epoch_retire_sized(a, a->held, retire_cb, NULL);
}

int tp_arena_on_reset(tp_arena *a, void (*fn)(void *), void *arg) {
  if (!a || !fn) {
    errno = EINVAL;
    return -EINVAL;
  }
  struct cleanup *cl = tp_arena_alloc(a, sizeof *cl);
  if (!cl) return -errno;
  cl->fn = fn;
  cl->arg = arg;
  if (a->flags & TP_ARENA_CONCURRENT) pthread_mutex_lock(&a->lock);
  cl->next = a->cleanups;
  a->cleanups = cl;
  if (a->flags & TP_ARENA_CONCURRENT) pthread_mutex_unlock(&a->lock);
  return 0;
}

/* ---- marks and reset ------------------------------------------------------------------- */

tp_arena_mark tp_arena_save(tp_arena *a) {
  tp_arena_mark m = {0};
  if (!a || (a->flags & TP_ARENA_CONCURRENT)) return m;
  m.chunk = a->cur;
  m.ptr = *bump_ptr(a);
  m.large = a->large;
  m.cleanup = a->cleanups;
  m.generation = a->generation;
  return m;
}

/* A mark is valid while everything it names is still held: O(chunks +
 * large + cleanups), marks are rare. */
static bool mark_valid(tp_arena *a, const tp_arena_mark *m) {
  if (m->generation != a->generation || !m->chunk) return false;
  bool found = false;
  for (struct chunk *c = a->cur; c && !found; c = c->next) {
    if (c != m->chunk) continue;
    char *hi = c == a->cur ? *bump_ptr(a) : alloc_start(a, c) + c->used;
    if (m->ptr < alloc_start(a, c) || m->ptr > hi) return false;
    found = true;
  }
  if (!found) return false;
  if (m->large) {
    struct large *l = a->large;
    while (l && l != m->large) l = l->next;
    if (!l) return false;
  }
  if (m->cleanup) {
    struct cleanup *cl = a->cleanups;
    while (cl && cl != m->cleanup) cl = cl->next;
    if (!cl) return false;
  }
  return true;
}

void tp_arena_rewind(tp_arena *a, tp_arena_mark m) {
  if (!a || (a->flags & TP_ARENA_CONCURRENT)) return;
  if (!mark_valid(a, &m)) {
    if (TP_DEBUG) tp__fatal("tp_arena_rewind", a, "invalid mark");
    return;
  }
  run_cleanups(a, m.cleanup);
  release_large(a, m.large);
  while (a->cur != m.chunk) {
    struct chunk *c = a->cur;
    a->cur = c->next;
    /* The older chunk is current again: undo what make_current counted. */
    a->retired_used -= a->cur->used;
    a->wasted -= (size_t)(chunk_end(a, a->cur) - alloc_start(a, a->cur)) - a->cur->used;
    TP_POISON(chunk_data(c), a->chunk_size - CHUNK_HDR);
    c->next = a->spare; /* reused before the pool; reset trims spares */
    a->spare = c;
  }
  char *end = chunk_end(a, a->cur);
  TP_POISON(m.ptr, (size_t)(end - m.ptr));
  *bump_ptr(a) = m.ptr;
  *bump_end(a) = end;
}

void tp_arena_reset(tp_arena *a) {
  if (!a) return;
  /* Debug builds: the lists are whole before reset walks them. */
  if (TP_DEBUG && tp_arena_check(a) != 0) tp__fatal("tp_arena_reset", a, "tp_arena_check failed");
  run_cleanups(a, NULL);
  release_large(a, NULL);
  /* One walk: chunks become spares up to keep_bytes (spares a rewind left
   * count first), the rest goes back to the chunk pool (the inline put:
   * nothing is written to a chunk given back). */
  size_t kept = 0;
  for (struct chunk **pk = &a->spare; *pk;) {
    if (kept + a->chunk_size <= a->keep_bytes) {
      kept += a->chunk_size;
      pk = &(*pk)->next;
    } else {
      struct chunk *g = *pk;
      *pk = g->next;
      chunk_give(a, g);
    }
  }
  struct chunk *c = a->cur;
  while (c && c != a->first) {
    struct chunk *next = c->next;
    if (kept + a->chunk_size <= a->keep_bytes) {
      kept += a->chunk_size;
      TP_POISON(chunk_data(c), a->chunk_size - CHUNK_HDR);
      c->next = a->spare;
      a->spare = c;
    } else {
      chunk_give(a, c);
    }
    c = next;
  }
  a->first->next = NULL;
  a->cur = a->first;
  a->retired_used = 0;
  a->wasted = 0;
  a->generation = next_generation();
  a->resets++;
  char *from = alloc_start(a, a->first);
  TP_POISON(from, (size_t)(chunk_end(a, a->first) - from));
  if (a->flags & TP_ARENA_CONCURRENT) {
    memset(a->head.regions, 0, (size_t)a->ncpu << REGION_SHIFT);
    a->sptr = from;
    a->send = chunk_end(a, a->first);
    return;
  }
  *bump_ptr(a) = from;
  *bump_end(a) = chunk_end(a, a->first);
}

int tp_arena_read_stats(const tp_arena *ca, tp_arena_stats *out) {
  if (!ca || !out) {
    errno = EINVAL;
    return -EINVAL;
  }
  tp_arena *a = (tp_arena *)ca;
  memset(out, 0, sizeof *out);
  if (a->flags & TP_ARENA_CONCURRENT) pthread_mutex_lock(&a->lock);
  out->chunks = a->nchunks;
  out->large = a->nlarge;
  out->bytes_held = a->held;
  out->wasted = __atomic_load_n(&a->wasted, __ATOMIC_RELAXED);
  out->high_water = a->high_water;
  out->resets = a->resets;
  if (a->flags & TP_ARENA_CONCURRENT) {
    size_t room = 0;
    for (unsigned c = 0; c < a->ncpu; c++) {
      struct region *r = region_of(a, c);
      char *p = __atomic_load_n(&r->ptr, __ATOMIC_RELAXED);
      char *e = __atomic_load_n(&r->end, __ATOMIC_RELAXED);
      if (p && e > p) room += (size_t)(e - p);
    }
    if (a->sptr && a->send > a->sptr) room += (size_t)(a->send - a->sptr);
    size_t spares = 0;
    for (struct chunk *k = a->spare; k; k = k->next) spares++;
    /* Chunks in regions: all but the first (the arena) and the spares;
     * plus the first chunk's tail, the shared region's first range. */
    size_t data = (a->nchunks - 1 - spares) * (a->chunk_size - CHUNK_HDR) +
                  (size_t)(chunk_end(a, a->first) - alloc_start(a, a->first));
    out->allocated = data - room - out->wasted + a->large_bytes;
    pthread_mutex_unlock(&a->lock);
    return 0;
  }
  size_t cur_used = (size_t)(*bump_ptr(a) - alloc_start(a, a->cur));
  out->allocated = a->retired_used + cur_used + a->large_bytes;
  return 0;
}

/* ---- stats ------------------------------------------------------------------ */

size_t tp__arena_chunk_pools(tp_pool **pools, size_t *sizes, size_t max) {
  size_t n = 0;
  pthread_mutex_lock(&chunk_pools_lock);
  for (; n < MAX_CHUNK_POOLS && chunk_pools[n].pool; n++)
    if (n < max) pools[n] = chunk_pools[n].pool, sizes[n] = chunk_pools[n].size;
  pthread_mutex_unlock(&chunk_pools_lock);
  return n;
}

/* ---- validity check ------------------------------------------------------------- */

static int check_report(const char *what, const void *at) {
  fprintf(stderr, "tidepool: tp_arena_check: %s (%p)\n", what, at);
  errno = EINVAL;
  return -EINVAL;
}

/* The chunk list runs from cur through older chunks to first, whose next is
 * NULL; with the spares it holds nchunks chunks; each older chunk used no
 * more than it had; a plain arena's bump pointer lies in the current chunk;
 * the large list holds nlarge records. Concurrent arenas: under their lock. */
static int arena_check_locked(tp_arena *a) {
  size_t listed = 0, spares = 0, large = 0;
  const struct chunk *c = a->cur;
  for (; c; c = c->next) {
    if (++listed > a->nchunks) return check_report("chunk list longer than nchunks (cycle?)", c);
    if (c != a->cur && c->used > a->chunk_size - CHUNK_HDR)
      return check_report("chunk used past its end", c);
    if (c == a->first) break;
  }
  if (c != a->first) return check_report("chunk list does not end at the first chunk", a->cur);
  if (a->first->next) return check_report("first chunk has an older one", a->first);
  for (c = a->spare; c; c = c->next)
    if (++spares > a->nchunks) return check_report("spare list longer than nchunks", c);
  if (listed + spares != a->nchunks) return check_report("nchunks != chunks listed + spares", a);
  for (const struct large *l = a->large; l; l = l->next)
    if (++large > a->nlarge) return check_report("large list longer than nlarge", l);
  if (large != a->nlarge) return check_report("large list shorter than nlarge", a);
  if (!(a->flags & TP_ARENA_CONCURRENT)) {
    char *p = *bump_ptr(a), *end = *bump_end(a);
    if (end != chunk_end(a, a->cur)) return check_report("bump end is not the current chunk's", end);
    if (p < alloc_start(a, a->cur) || p > end) return check_report("bump pointer outside the current chunk", p);
  }
  return 0;
}

int tp_arena_check(tp_arena *a) {
  if (!a) {
    errno = EINVAL;
    return -EINVAL;
  }
  bool conc = a->flags & TP_ARENA_CONCURRENT;
  if (conc) pthread_mutex_lock(&a->lock);
  int rc = arena_check_locked(a);
  if (conc) pthread_mutex_unlock(&a->lock);
  return rc;
}
