/*
 * Region arenas: create/destroy, bump allocation, marks, reset, cleanups and
 * stats. The rest of the layer: arena_concurrent.c (per-CPU bump regions of
 * concurrent arenas, and their registry for fork), arena_chunks.c (the shared
 * chunk pools and large mappings), arena_check.c (tp_arena_check).
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
 * An observed arena (arena_ranges.c: the collector scans it) tells its
 * observer at the start of destroy, and drops memory in reset and rewind
 * holding its lock, after the cleanups ran.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arena/arena_state_internal.h"
#include "core/fault_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

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

/* held is written by one thread at a time (the owner, or under a->lock in
 * a concurrent arena) but read without the lock by tp_arena_retire, as a
 * size hint for the retire cap, while threads that loaded the arena before
 * it was unpublished may still refill it: a relaxed store and load (no
 * ordering is needed for a hint; the atomic only makes the read whole). */
void tp__arena_note_held(tp_arena *a, ssize_t delta) {
  size_t held = atomic_load_explicit(&a->held, memory_order_relaxed) + (size_t)delta;
  atomic_store_explicit(&a->held, held, memory_order_relaxed);
  if (held > a->high_water) a->high_water = held;
}

bool tp__arena_may_hold(const tp_arena *a, size_t more) {
  size_t held = atomic_load_explicit(&a->held, memory_order_relaxed);
  return !a->max_bytes || (held <= a->max_bytes && more <= a->max_bytes - held);
}

/* A chunk for the arena: a spare kept by reset, else one from the pool.
 * Its data is poisoned until allocated from. */
struct tp__arena_chunk *tp__arena_chunk_take(tp_arena *a) {
  struct tp__arena_chunk *c = a->spare;
  if (c) {
    a->spare = c->next;
  } else {
    if (!tp__arena_may_hold(a, a->chunk_size)) {
      errno = ENOMEM;
      return NULL;
    }
    if (!(c = tp_pool_get(a->chunks))) return NULL;
    a->nchunks++;
    tp__arena_note_held(a, (ssize_t)a->chunk_size);
    TP_POISON(tp__arena_chunk_data(c), a->chunk_size - CHUNK_HDR);
  }
  c->next = NULL;
  c->used = 0;
  return c;
}

static void chunk_give(tp_arena *a, struct tp__arena_chunk *c) {
  TP_UNPOISON(c, a->chunk_size);
  a->nchunks--;
  tp__arena_note_held(a, -(ssize_t)a->chunk_size);
  tp_pool_put(a->chunks, c);
}

/* c becomes the current chunk; the old one (cur is never NULL: the first
 * chunk is current from create on) records what it used. */
static void make_current(tp_arena *a, struct tp__arena_chunk *c, char *from) {
  char *p = *tp__arena_bump_ptr(a);
  size_t used = (size_t)(p - tp__arena_alloc_start(a, a->cur));
  a->cur->used = used;
  a->retired_used += used;
  tp__arena_stat_add(&a->wasted, (size_t)(tp__arena_chunk_end(a, a->cur) - p));
  c->next = a->cur;
  a->cur = c;
  *tp__arena_bump_ptr(a) = from;
  *tp__arena_bump_end(a) = tp__arena_chunk_end(a, c);
}

/* ---- allocation ------------------------------------------------------------------ */

/* From the current chunk, if it fits (any size: as the inline fast path
 * does), else NULL. */
static void *plain_bump(tp_arena *a, size_t size, size_t align) {
  char **pp = tp__arena_bump_ptr(a), **pe = tp__arena_bump_end(a);
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
  struct tp__arena_chunk *c = tp__arena_chunk_take(a);
  if (!c) return NULL;
  p = (char *)tp__round_up((uintptr_t)tp__arena_chunk_data(c), align);
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
  if (a->flags & TP_ARENA_CONCURRENT) return tp__arena_concurrent_alloc_impl(a, size, align);
  void *p = plain_bump(a, size, align);
  if (p) return p;
  if (size > a->chunk_size / 4) return tp__arena_large_alloc(a, size); /* its own mapping */
  return plain_alloc(a, size, align);
}

void *tp__arena_alloc_slow(tp_arena *a, size_t size) {
  /* A concurrent arena's small size comes here when the inline bump missed
   * (a refill is due: straight to it, the bump is not tried twice) or is
   * off (ASan, percpu-cas, where this is every allocation). A plain arena's
   * small_max is 0, so the size test alone excludes it. */
  if (TP_LIKELY(a != NULL) && size - 1 < a->small_max) {
    size_t n = (size + 15) & ~(size_t)15;
    return a->head.inline_max ? tp__arena_rseq_refill(a, n) : tp__arena_concurrent_alloc(a, n);
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
  tp_pool *pool = tp__arena_chunk_pool(cs);
  if (!pool) return NULL;
  struct tp__arena_chunk *c = tp_pool_get(pool);
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
  a->high_water = cs;
  atomic_store_explicit(&a->held, cs, memory_order_relaxed);
  a->generation = next_generation();
  pthread_mutex_init(&a->lock, NULL);
  char *from = (char *)tp__round_up((uintptr_t)(a + 1), 16);
  if (a->flags & TP_ARENA_CONCURRENT) {
    const struct tp__percpu_info *pi = tp__percpu();
    a->ncpu = pi->ncpu;
    /* TSan: the rseq bump is asm TSan cannot see, so a thread bumping in
     * a region installed by another has no happens-before edge to the
     * chunk's earlier life (its hand-over through the pool is annotated,
     * the region pointer is not): TSan builds use the CAS regions, as
     * pools use their locked path (pool/lifecycle.c). */
    a->rseq = pi->rseq && !TP_TSAN;
    a->small_max = cs / 4; /* not large; cs / 4 is a multiple of 16 */
    size_t bytes = ((size_t)a->ncpu << REGION_SHIFT) + REGION_SENTINEL_BYTES;
    char *raw = tp__zalloc_aligned(2 * TP_CACHELINE, bytes); /* zero: sentinels and
                                                               empty regions refuse */
    if (!raw) {
      pthread_mutex_destroy(&a->lock);
      tp_pool_put(pool, c);
      errno = ENOMEM; /* the undo may have touched errno */
      return NULL;
    }
    a->head.regions = raw + REGION_SENTINEL_BYTES;
    /* The rest of the first chunk is the shared region's first range, so
     * an arena whose max_bytes allows one chunk still allocates. */
    a->sptr = from;
    a->send = tp__arena_chunk_end(a, c);
    /* The inline bump (arena.h) cannot unpoison: off under ASan, as the
     * plain fast path is. */
    a->head.inline_max = a->rseq && !TP_ASAN ? a->small_max : 0;
    tp__arena_arenas_link(a);
  } else {
    *tp__arena_bump_ptr(a) = from;
    *tp__arena_bump_end(a) = tp__arena_chunk_end(a, c);
  }
  TP_POISON(from, (size_t)(tp__arena_chunk_end(a, c) - from));
  return a;
}

/* Runs cleanups newer than `stop` (LIFO). */
static void run_cleanups(tp_arena *a, struct tp__arena_cleanup *stop) {
  while (a->cleanups && a->cleanups != stop) {
    struct tp__arena_cleanup *cl = a->cleanups;
    a->cleanups = cl->next;
    cl->fn(cl->arg);
  }
}

static void release_large(tp_arena *a, struct tp__arena_large *stop) {
  while (a->large && a->large != stop) {
    struct tp__arena_large *l = a->large;
    a->large = l->next;
    tp__arena_large_free(a, l);
  }
}

static void give_list(tp_arena *a, struct tp__arena_chunk *c) {
  while (c && c != a->first) {
    struct tp__arena_chunk *next = c->next;
    chunk_give(a, c);
    c = next;
  }
}

void tp_arena_destroy(tp_arena *a) {
  if (!a) return;
  tp__arena_notify_destroy(a); /* an observer (a heap scanning it) lets go first */
  run_cleanups(a, NULL);
  release_large(a, NULL);
  give_list(a, a->cur);
  give_list(a, a->spare);
  if (a->flags & TP_ARENA_CONCURRENT) tp__arena_arenas_unlink(a);
  if (a->head.regions) free(a->head.regions - REGION_SENTINEL_BYTES);
  pthread_mutex_destroy(&a->lock);
  tp_pool *pool = a->chunks;
  struct tp__arena_chunk *first = a->first;
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
  /* held is _Atomic: readers that loaded a concurrent arena before it was
   * unpublished may still be taking chunks (the figure is what the retire
   * cap counts, not a bound). */
  return tp_epoch_retire_sized(a, atomic_load_explicit(&a->held, memory_order_relaxed), retire_cb, NULL);
}

int tp_arena_on_reset(tp_arena *a, void (*fn)(void *), void *arg) {
  if (!a || !fn) {
    errno = EINVAL;
    return -EINVAL;
  }
  struct tp__arena_cleanup *cl = tp_arena_alloc(a, sizeof *cl);
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
  m.ptr = *tp__arena_bump_ptr(a);
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
  for (struct tp__arena_chunk *c = a->cur; c && !found; c = c->next) {
    if (c != m->chunk) continue;
    char *hi = c == a->cur ? *tp__arena_bump_ptr(a) : tp__arena_alloc_start(a, c) + c->used;
    if (m->ptr < tp__arena_alloc_start(a, c) || m->ptr > hi) return false;
    found = true;
  }
  if (!found) return false;
  if (m->large) {
    struct tp__arena_large *l = a->large;
    while (l && l != m->large) l = l->next;
    if (!l) return false;
  }
  if (m->cleanup) {
    struct tp__arena_cleanup *cl = a->cleanups;
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
  bool locked = tp__arena_drop_begin(a); /* observed: no range walk meanwhile */
  release_large(a, m.large);
  while (a->cur != m.chunk) {
    struct tp__arena_chunk *c = a->cur;
    a->cur = c->next;
    /* The older chunk is current again: undo what make_current counted. */
    a->retired_used -= a->cur->used;
    tp__arena_stat_add(&a->wasted, -((size_t)(tp__arena_chunk_end(a, a->cur) - tp__arena_alloc_start(a, a->cur)) - a->cur->used));
    TP_POISON(tp__arena_chunk_data(c), a->chunk_size - CHUNK_HDR);
    c->next = a->spare; /* reused before the pool; reset trims spares */
    a->spare = c;
  }
  char *end = tp__arena_chunk_end(a, a->cur);
  TP_POISON(m.ptr, (size_t)(end - m.ptr));
  *tp__arena_bump_ptr(a) = m.ptr;
  *tp__arena_bump_end(a) = end;
  tp__arena_drop_end(a, locked);
}

void tp_arena_reset(tp_arena *a) {
  if (!a) return;
  /* Debug builds: the lists are whole before reset walks them. */
  if (TP_DEBUG && tp_arena_check(a) != 0) tp__fatal("tp_arena_reset", a, "tp_arena_check failed");
  run_cleanups(a, NULL);
  bool locked = tp__arena_drop_begin(a); /* observed: no range walk meanwhile */
  release_large(a, NULL);
  /* One walk: chunks become spares up to keep_bytes (spares a rewind left
   * count first), the rest goes back to the chunk pool (the inline put:
   * nothing is written to a chunk given back). */
  size_t kept = 0;
  for (struct tp__arena_chunk **pk = &a->spare; *pk;) {
    if (kept + a->chunk_size <= a->keep_bytes) {
      kept += a->chunk_size;
      pk = &(*pk)->next;
    } else {
      struct tp__arena_chunk *g = *pk;
      *pk = g->next;
      chunk_give(a, g);
    }
  }
  struct tp__arena_chunk *c = a->cur;
  while (c && c != a->first) {
    struct tp__arena_chunk *next = c->next;
    if (kept + a->chunk_size <= a->keep_bytes) {
      kept += a->chunk_size;
      TP_POISON(tp__arena_chunk_data(c), a->chunk_size - CHUNK_HDR);
      c->next = a->spare;
      a->spare = c;
    } else {
      chunk_give(a, c);
    }
    c = next;
  }
  a->first->next = NULL;
  a->first->used = 0;
  a->cur = a->first;
  a->retired_used = 0;
  atomic_store_explicit(&a->wasted, 0, memory_order_relaxed);
  a->generation = next_generation();
  a->resets++;
  char *from = tp__arena_alloc_start(a, a->first);
  TP_POISON(from, (size_t)(tp__arena_chunk_end(a, a->first) - from));
  if (a->flags & TP_ARENA_CONCURRENT) {
    memset(a->head.regions, 0, (size_t)a->ncpu << REGION_SHIFT);
    a->sptr = from;
    a->send = tp__arena_chunk_end(a, a->first);
  } else {
    *tp__arena_bump_ptr(a) = from;
    *tp__arena_bump_end(a) = tp__arena_chunk_end(a, a->first);
  }
  tp__arena_drop_end(a, locked);
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
  out->bytes_held = atomic_load_explicit(&a->held, memory_order_relaxed);
  out->wasted = atomic_load_explicit(&a->wasted, memory_order_relaxed);
  out->high_water = a->high_water;
  out->resets = a->resets;
  if (a->flags & TP_ARENA_CONCURRENT) {
    size_t room = 0;
    for (unsigned c = 0; c < a->ncpu; c++) {
      struct tp__arena_region *r = tp__arena_region_of(a, c);
      char *p = __atomic_load_n(&r->ptr, __ATOMIC_RELAXED);
      char *e = __atomic_load_n(&r->end, __ATOMIC_RELAXED);
      if (p && e > p) room += (size_t)(e - p);
    }
    if (a->sptr && a->send > a->sptr) room += (size_t)(a->send - a->sptr);
    size_t spares = 0;
    for (struct tp__arena_chunk *k = a->spare; k; k = k->next) spares++;
    /* Chunks in regions: all but the first (the arena) and the spares;
     * plus the first chunk's tail, the shared region's first range. */
    size_t data = (a->nchunks - 1 - spares) * (a->chunk_size - CHUNK_HDR) +
                  (size_t)(tp__arena_chunk_end(a, a->first) - tp__arena_alloc_start(a, a->first));
    out->allocated = data - room - out->wasted + a->large_bytes;
    pthread_mutex_unlock(&a->lock);
    return 0;
  }
  size_t cur_used = (size_t)(*tp__arena_bump_ptr(a) - tp__arena_alloc_start(a, a->cur));
  out->allocated = a->retired_used + cur_used + a->large_bytes;
  return 0;
}
