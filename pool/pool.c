/*
 * Fixed-size object pools: slabs, the debug set of slabs, the get/put hand-
 * over checks, the slow paths of get and put, the depot exchange, and bulk
 * operations. (A pool's life is in lifecycle.c, its stats in pool_stats.c,
 * the sweeper's pass in sweep.c, retire in retire.c.)
 *
 * Where an object can be (the tiers):
 *   application  --put-->  CPU cache  --flush (batch)-->  depot  --> slabs
 *   application  <--get--  CPU cache  <--refill (batch)-- depot  <-- slabs
 * The fast paths (pool.h) move one object between the application and the
 * calling CPU's cache. Everything else is here: when the cache is empty, a
 * whole batch comes from the depot (one magazine, one CAS) or, failing that,
 * from the slabs under the pool's lock; when it is full, a batch leaves for
 * the depot, or for the slabs when the depot is at its cap.
 *
 * Counting without counting on the fast path. Each CPU block's commit word
 * carries a removal counter that every pop advances. Puts are derived:
 *   count_sum = (puts into caches + refill_in) - removals
 *   gets from caches = removals - removed_internal (flushes, drains)
 * so stats need no store on the fast path beyond the commit itself.
 */
#define _GNU_SOURCE
#include "pool/pool_internal.h"
#include "core/list_internal.h"
#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/fork_internal.h"
#include "core/os_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- object hand-over extras (debug, sanitizers, valgrind, ZERO) -------- */

#if TP_DEBUG
static void check_poison(tp_pool *p, void *obj) {
  if (p->ctor) return; /* constructed state is kept, not poisoned */
  const unsigned char *b = obj;
  for (size_t i = 0; i < p->obj_size; i++)
    if (b[i] != TP_POISON_BYTE)
      tp__fatal("tp_pool_get", obj, "free object was written to (use after put)");
}
#endif

static void fill_poison(tp_pool *p, void *obj) {
#if TP_DEBUG
  if (!p->ctor) memset(obj, TP_POISON_BYTE, p->obj_size);
#else
  (void)p;
  (void)obj;
#endif
}

/* Prepares an object leaving the pool for the application. */
static inline void *finish_get(tp_pool *p, void *obj) {
  TP_TSAN_ACQUIRE(obj);
  if (TP_LIKELY(!p->extras)) return obj;
  TP_UNPOISON(obj, p->obj_size);
  VALGRIND_MEMPOOL_ALLOC(p, obj, p->obj_size);
  /* A constructed object's contents are defined; the debug poison is read
   * by check_poison, then counts as uninitialized for the application. */
  if (p->ctor || TP_DEBUG) VALGRIND_MAKE_MEM_DEFINED(obj, p->obj_size);
#if TP_DEBUG
  tp_slab *s = tp__slab_of(p, obj);
  size_t i = tp__pool_obj_at(p, s, obj);
  uint64_t bit = 1ull << (i & 63);
  if (__atomic_fetch_or(&s->out_bits[i / 64], bit, __ATOMIC_RELAXED) & bit)
    tp__fatal("tp_pool_get", obj, "internal error: object handed out twice");
  check_poison(p, obj);
  if (!p->ctor) VALGRIND_MAKE_MEM_UNDEFINED(obj, p->obj_size);
#endif
  if (p->flags & TP_POOL_ZERO) memset(obj, 0, p->obj_size);
  return obj;
}

/* Checks and prepares an object the application gives back. */
static void check_put(tp_pool *p, void *obj, const char *func, const tp_slab **known) {
  /* Any build: the slab is live and names p, obj is on an object boundary
   * (a wild pointer is refused before its slab header is read). */
  tp__pool_check_owner(p, obj, func, known);
#if TP_DEBUG
  tp_slab *s = tp__slab_of(p, obj);
  /* Without the slab lock (a carve of another object of s may run): obj
   * was carved before it was handed out, and carved only grows. */
  if (tp__pool_obj_at(p, s, obj) >= __atomic_load_n(&s->carved, __ATOMIC_RELAXED))
    tp__fatal(func, obj, "pointer is not an object of this pool");
  size_t i = tp__pool_obj_at(p, s, obj);
  uint64_t bit = 1ull << (i & 63);
  if (!(__atomic_fetch_and(&s->out_bits[i / 64], ~bit, __ATOMIC_RELAXED) & bit))
    tp__fatal(func, obj, "double put (object is not out)");
  fill_poison(p, obj);
#endif
  if (p->extras) {
    TP_POISON(obj, p->stride);
    VALGRIND_MEMPOOL_FREE(p, obj);
  }
  TP_TSAN_RELEASE(obj);
}

void tp__pool_owner_fatal(const tp_pool *p, const void *obj, const char *func) {
  tp_slab *s = tp__slab_of(p, obj);
  if (tp__slabmap_has(s) && s->pool == p)
    tp__fatal(func, obj, "pointer is not an object of this pool");
  tp__fatal(func, obj, "pointer is not from this pool");
}

/* A batch leaving a CPU cache (flushed to the depot or the slabs, drained
 * by the sweeper or a scavenge). The inline put does not check the owner,
 * so a foreign pointer put there is caught here, before anything counts or
 * moves it: the abort names it instead of corrupting two pools. */
static void check_batch(const tp_pool *p, void *const *objs, unsigned n) {
  const tp_slab *known = NULL;
  for (unsigned i = 0; i < n; i++) {
    /* TSan: the object was handed over through the CPU cache (invisible to
     * it) by whoever put it (check_put released it): acquire that before
     * the check reads its slab header, written under p->lock by slab_new
     * and ordered before the putter's get by the same chain. */
    TP_TSAN_ACQUIRE(objs[i]);
    tp__pool_check_owner(p, objs[i], "tp_pool_put (object leaving the CPU cache)", &known);
  }
}

/* ---- slabs (under p->lock) ---------------------------------------------- */

void tp__pool_avail_remove(tp_pool *p, tp_slab *s) {
  if (!s->on_avail) return;
  TP__LIST2_UNLINK(p->avail_head, p->avail_tail, s, prev, next);
  s->prev = s->next = NULL;
  s->on_avail = false;
}
static void avail_push_front(tp_pool *p, tp_slab *s) {
  TP__LIST2_PUSH_FRONT(p->avail_head, p->avail_tail, s, prev, next);
  s->on_avail = true;
}
static void avail_push_back(tp_pool *p, tp_slab *s) {
  TP__LIST2_PUSH_BACK(p->avail_head, p->avail_tail, s, prev, next);
  s->on_avail = true;
}

void tp__pool_set_resident(tp_pool *p, tp_slab *s, size_t bytes) {
  if (bytes == s->resident) return;
  int64_t d = (int64_t)bytes - (int64_t)s->resident;
  s->resident = bytes;
  tp__counter_add(&p->resident_bytes, d);
  tp__counter_add(&tp__os.resident, d);
}

/* Maps a new slab; NULL + errno (ENOMEM, also when max_bytes is reached). */
static tp_slab *slab_new(tp_pool *p) {
  if (p->max_bytes && tp__counter_get(&p->slab_bytes) + p->slab_size > p->max_bytes) {
    errno = ENOMEM;
    return NULL;
  }
  tp_slab *s = tp__os_map(p->slab_size, p->slab_size);
  if (!s) return NULL;
  if (tp__slabmap_add(s) != 0) {
    tp__os_unmap(s, p->slab_size);
    errno = ENOMEM;
    return NULL;
  }
  s->pool = p;
  s->capacity = p->capacity;
  s->data = (char *)s + p->data_off;
  s->stamp_ms = tp__now_ms_coarse();
#if TP_DEBUG
  s->out_bits = s->free_bits + tp__pool_bitmap_words(p->capacity);
#endif
  s->all_next = p->all;
  if (p->all) p->all->all_prev = s;
  p->all = s;
  avail_push_front(p, s);
  tp__counter_add(&p->slabs, 1);
  tp__counter_add(&p->slab_bytes, (int64_t)p->slab_size);
  tp__pool_set_resident(p, s, tp__round_up(p->data_off, tp__os_page_size()));
  TP_POISON(s->data, (size_t)p->capacity * p->stride);
  VALGRIND_MAKE_MEM_NOACCESS(s->data, (size_t)p->capacity * p->stride);
  return s;
}

/* Takes up to n objects from the slabs. Returns how many; 0 + errno. */
static unsigned central_alloc(tp_pool *p, void **out, unsigned n) {
  unsigned got = 0;
  int err = ENOMEM;
  size_t page = tp__os_page_size();
  pthread_mutex_lock(&p->lock);
  while (got < n) {
    tp_slab *s = p->avail_head;
    if (!s && !(s = slab_new(p))) {
      err = errno;
      break;
    }
    unsigned before = got;
    /* Free objects first (constructed, warm), found word by word. */
    size_t words = tp__pool_bitmap_words(s->capacity);
    while (got < n && s->nfree) {
      size_t w = s->scan;
      while (!s->free_bits[w]) w = (w + 1 == words) ? 0 : w + 1;
      s->scan = (uint32_t)w;
      uint64_t bits = s->free_bits[w];
      while (bits && got < n) {
        unsigned b = (unsigned)__builtin_ctzll(bits);
        bits &= bits - 1;
        out[got++] = s->data + ((w * 64 + b) * p->stride);
        s->nfree--;
      }
      s->free_bits[w] = bits;
    }
    /* Then carve fresh ones. */
    bool ctor_failed = false;
    while (got < n && s->carved < s->capacity) {
      char *obj = s->data + (size_t)s->carved * p->stride;
      if (p->ctor) {
        TP_UNPOISON(obj, p->obj_size);
        VALGRIND_MAKE_MEM_UNDEFINED(obj, p->obj_size);
        int rc = p->ctor(obj, p->arg);
        if (rc != 0) {
          TP_POISON(obj, p->stride);
          VALGRIND_MAKE_MEM_NOACCESS(obj, p->obj_size);
          err = rc > 0 ? rc : ENOMEM;
          ctor_failed = true;
          break;
        }
        TP_POISON(obj, p->stride);
        VALGRIND_MAKE_MEM_NOACCESS(obj, p->obj_size);
      } else if (TP_DEBUG) {
        TP_UNPOISON(obj, p->obj_size);
        VALGRIND_MAKE_MEM_UNDEFINED(obj, p->obj_size);
        fill_poison(p, obj);
        TP_POISON(obj, p->stride);
        VALGRIND_MAKE_MEM_NOACCESS(obj, p->obj_size);
      }
      /* relaxed atomic: the debug check of a put reads it without the lock
       * (check_put); it only grows. */
      __atomic_store_n(&s->carved, s->carved + 1, __ATOMIC_RELAXED);
      out[got++] = obj;
    }
    tp__pool_set_resident(p, s, tp__round_up(p->data_off + (size_t)s->carved * p->stride, page));
    s->used += got - before;
    tp__counter_add(&p->used_total, got - before);
    if (s->nfree == 0 && s->carved == s->capacity) tp__pool_avail_remove(p, s);
    if (ctor_failed) break;
  }
  pthread_mutex_unlock(&p->lock);
  /* Objects leave the slab lock for caches the rseq sequences reach
   * (invisible to TSan): name the edge to whoever gets them. */
  for (unsigned i = 0; i < got; i++) TP_TSAN_RELEASE(out[i]);
  if (got == 0) errno = err;
  return got;
}

/* Gives n objects back to their slabs. stamp_ms: when they were last used
 * by the application (decay clock of the slab). */
void tp__pool_central_free(tp_pool *p, void *const *objs, unsigned n, uint64_t stamp_ms) {
  pthread_mutex_lock(&p->lock);
  for (unsigned k = 0; k < n; k++) {
    tp_slab *s = tp__slab_of(p, objs[k]);
    size_t i = tp__pool_obj_at(p, s, objs[k]);
    TP_ASSERT(!(s->free_bits[i / 64] & (1ull << (i & 63))));
    s->free_bits[i / 64] |= 1ull << (i & 63);
    s->nfree++;
    s->used--;
    if (stamp_ms > s->stamp_ms) s->stamp_ms = stamp_ms;
    if (s->used == 0) {
      /* Empty: to the tail, reused last, so it can decay. */
      tp__pool_avail_remove(p, s);
      avail_push_back(p, s);
    } else if (!s->on_avail) {
      avail_push_front(p, s);
    }
    /* Debug: the slab is valid again once this batch's run of its objects
     * ends (checked once per run, not per object: the check reads the
     * whole bitmap, and per object it made a large drain quadratic). */
    if (TP_DEBUG && (k + 1 == n || tp__slab_of(p, objs[k + 1]) != s)) {
      const char *why = tp__pool_slab_invalid(p, s);
      if (why) tp__fatal("tp_pool_put", s, why);
    }
  }
  tp__counter_add(&p->used_total, -(int64_t)n);
  pthread_mutex_unlock(&p->lock);
}

/* ---- depot -------------------------------------------------------------- */

/* The depot's counters follow a batch in (+1) or out (-1). */
void tp__pool_depot_count(tp_pool *p, const tp__mag *m, int sign) {
  tp__counter_add(&p->depot_mags, sign);
  tp__counter_add(&p->depot_objs, sign * (int64_t)m->count);
}

/* Parks a batch in the depot, or in the slabs when the depot is full. */
static void depot_put(tp_pool *p, tp__mag *m, uint64_t now_ms) {
  if (tp__counter_get(&p->depot_mags) < p->depot_cap) {
    m->stamp_ms = now_ms;
    tp__pool_depot_count(p, m, 1);
    tp__mag_push(&p->depot, m);
    return;
  }
  tp__pool_central_free(p, m->obj, m->count, now_ms);
  tp__mag_free(m);
}

static tp__mag *depot_get(tp_pool *p) {
  tp__mag *m = tp__mag_pop(&p->depot);
  if (m) tp__pool_depot_count(p, m, -1);
  return m;
}

/* Drains CPU c's cache into the slabs (buf: room for a cache), stamping
 * the slabs with stamp_ms. Returns how many objects moved. */
unsigned tp__pool_drain_cpu(tp_pool *p, unsigned c, void **buf, uint64_t stamp_ms) {
  int n = tp__pcache_drain(p->caches, c, buf);
  if (n <= 0) return 0;
  check_batch(p, buf, (unsigned)n);
  tp__counter_add(&p->removed_internal, n);
  tp__pool_central_free(p, buf, (unsigned)n, stamp_ms);
  return (unsigned)n;
}

/* ---- the slow paths ----------------------------------------------------- */

/* The inline paths run the real per-CPU caches (else the all-zero region
 * sends every call here, which then runs them itself). */
static inline bool fast_path_on(const tp_pool *p) { return p->head.fast_base == p->caches; }

/* Drains every CPU cache and the depot into the slabs (out of memory:
 * objects sitting in other CPUs' caches are the only ones left). */
size_t tp__pool_scavenge(tp_pool *p) {
  void **buf = tp__malloc(TP__PCACHE_SLOTS * sizeof(void *));
  size_t moved = 0;
  if (buf) {
    for (unsigned c = 0; c < p->ncpu; c++) moved += tp__pool_drain_cpu(p, c, buf, 0);
    free(buf);
  }
  for (tp__mag *m; (m = depot_get(p));) {
    tp__pool_central_free(p, m->obj, m->count, m->stamp_ms);
    moved += m->count;
    tp__mag_free(m);
  }
  return moved;
}

/* Points *mp at a batch: a depot magazine, else up to p->batch objects
 * from the slabs. Returns its size; 0 + errno. */
static unsigned refill(tp_pool *p, tp__mag **mp) {
  tp__mag *m = depot_get(p);
  if (m) {
    tp__counter_add(&p->exchanges, 1);
    *mp = m;
    return m->count;
  }
  m = tp__mag_new();
  if (!m) return 0;
  unsigned n = central_alloc(p, m->obj, p->batch);
  /* Out of memory (max_bytes, or the OS refused a slab): free objects may
   * still sit in other CPUs' caches or the depot; bring them back and try
   * once more before failing. */
  if (n == 0 && errno == ENOMEM && tp__pool_scavenge(p))
    n = central_alloc(p, m->obj, p->batch);
  if (n == 0) {
    int e = errno;
    tp__mag_free(m);
    errno = e;
    return 0;
  }
  m->count = n;
  *mp = m;
  return n;
}

void *tp__pool_get_slow(tp_pool *p) {
  if (!p) {
    errno = EINVAL;
    return NULL;
  }
  void *obj;
  if (!fast_path_on(p) && tp__pcache_pop_n(p->caches, &obj, 1) == 1)
    return finish_get(p, obj);
  tp__counter_add(&p->misses, 1);
  tp__mag *m = NULL;
  unsigned n = refill(p, &m);
  if (n == 0) return NULL; /* errno set */
  obj = m->obj[--n];
  unsigned k = tp__pcache_push_n(p->caches, m->obj, n);
  tp__counter_add(&p->refill_in, k);
  tp__counter_add(&p->slow_gets, 1);
  if (k < n) {
    /* Migrated to a full cache, or the cache is locked: park the rest. */
    memmove(m->obj, m->obj + k, (n - k) * sizeof(void *));
    m->count = n - k;
    depot_put(p, m, tp__now_ms_coarse());
  } else {
    tp__mag_free(m);
  }
  return finish_get(p, obj);
}

void tp__pool_put_slow(tp_pool *p, void *obj) {
  if (!obj) return;
  if (!p) {
    errno = EINVAL;
    return;
  }
  check_put(p, obj, "tp_pool_put", NULL);
  if (!fast_path_on(p) && tp__pcache_push_n(p->caches, &obj, 1) == 1) return;
  tp__counter_add(&p->misses, 1);
  /* Full (or locked, or rseq unavailable): move a batch to the depot. */
  tp__mag *m = tp__mag_new();
  if (!m) {
    tp__counter_add(&p->slow_puts, 1);
    tp__pool_central_free(p, &obj, 1, tp__now_ms_coarse());
    return;
  }
  /* Leave room for obj: the push below fails when the thread moved to
   * another CPU whose cache is full, or (percpu-cas) found the block held,
   * and a full batch (TP__MAG_CAP) plus obj would write past the magazine. */
  unsigned want = p->batch < TP__MAG_CAP ? p->batch : TP__MAG_CAP - 1;
  unsigned k = tp__pcache_pop_n(p->caches, m->obj, want);
  check_batch(p, m->obj, k);
  tp__counter_add(&p->removed_internal, k);
  if (tp__pcache_push_n(p->caches, &obj, 1) != 1) {
    TP_ASSERT(k < TP__MAG_CAP);
    m->obj[k++] = obj;
    tp__counter_add(&p->slow_puts, 1);
  }
  if (k == 0) {
    tp__mag_free(m);
    return;
  }
  m->count = k;
  if (k > 1) tp__counter_add(&p->exchanges, 1);
  depot_put(p, m, tp__now_ms_coarse());
}

size_t tp_pool_get_bulk(tp_pool *p, void **objs, size_t n) {
  if (!p || (!objs && n)) {
    errno = EINVAL;
    return 0;
  }
  size_t got = 0;
  while (got < n) {
    size_t want = n - got;
    unsigned k = tp__pcache_pop_n(p->caches, objs + got,
                                  want > TP__PCACHE_SLOTS ? TP__PCACHE_SLOTS : (unsigned)want);
    got += k;
    if (got == n) break;
    /* The cache is dry: take whole batches straight from the depot/slabs. */
    tp__counter_add(&p->misses, 1);
    tp__mag *m = NULL;
    unsigned have = refill(p, &m);
    if (have == 0) break; /* errno set */
    unsigned take = have < n - got ? have : (unsigned)(n - got);
    memcpy(objs + got, m->obj + (have - take), take * sizeof(void *));
    got += take;
    tp__counter_add(&p->slow_gets, take);
    have -= take;
    if (have) {
      unsigned pushed = tp__pcache_push_n(p->caches, m->obj, have);
      tp__counter_add(&p->refill_in, pushed);
      if (pushed < have) {
        memmove(m->obj, m->obj + pushed, (have - pushed) * sizeof(void *));
        m->count = have - pushed;
        depot_put(p, m, tp__now_ms_coarse());
        continue;
      }
    }
    tp__mag_free(m);
  }
  for (size_t i = 0; i < got; i++) finish_get(p, objs[i]);
  return got;
}

void tp_pool_put_bulk(tp_pool *p, void *const *objs, size_t n) {
  if (!p || (!objs && n)) {
    errno = EINVAL;
    return;
  }
  void *buf[64];
  size_t i = 0;
  uint64_t now = 0;
  while (i < n) {
    /* Check a run of up to 64 objects, skipping NULLs. known is reset per
     * run: once a run is pushed, its objects are no longer the caller's and
     * their slab may go (a sweeper drain) before the next run is checked. */
    unsigned m = 0;
    const tp_slab *known = NULL;
    for (; i < n && m < 64; i++) {
      if (!objs[i]) continue;
      check_put(p, objs[i], "tp_pool_put_bulk", &known);
      buf[m++] = objs[i];
    }
    unsigned k = tp__pcache_push_n(p->caches, buf, m);
    if (k == m) continue;
    /* The cache is full: the rest goes to the depot as a batch. */
    tp__counter_add(&p->misses, 1);
    tp__counter_add(&p->slow_puts, m - k);
    if (!now) now = tp__now_ms_coarse();
    tp__mag *mag = tp__mag_new();
    if (!mag) {
      tp__pool_central_free(p, buf + k, m - k, now);
      continue;
    }
    memcpy(mag->obj, buf + k, (m - k) * sizeof(void *));
    mag->count = m - k;
    depot_put(p, mag, now);
  }
}

