/*
 * Fixed-size object pools: configuration, the slow paths of get and put,
 * bulk operations, stats, destroy, and the sweeper's pass over a pool.
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
#include "core/debug_internal.h"
#include "core/fork_internal.h"
#include "core/os_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the process-wide registry ----------------------------------------- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static tp_pool *registry;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
pthread_mutex_t tp__pool_pass_lock = PTHREAD_MUTEX_INITIALIZER;
uint64_t tp__caches_drained;

static void pass_prepare(void) { pthread_mutex_lock(&tp__pool_pass_lock); }
static void pass_release(void) { pthread_mutex_unlock(&tp__pool_pass_lock); }

static void fork_prepare(void) {
  pthread_mutex_lock(&registry_lock);
  for (tp_pool *p = registry; p; p = p->reg_next) {
    pthread_mutex_lock(&p->lock);
    pthread_mutex_lock(&p->stats_lock);
  }
}
static void fork_parent(void) {
  for (tp_pool *p = registry; p; p = p->reg_next) {
    pthread_mutex_unlock(&p->stats_lock);
    pthread_mutex_unlock(&p->lock);
  }
  pthread_mutex_unlock(&registry_lock);
}
static void pool_init_once(void) {
  tp__fork_register(TP__FORK_RANK_SWEEPER, pass_prepare, pass_release, pass_release);
  tp__fork_register(TP__FORK_RANK_POOLS, fork_prepare, fork_parent, fork_parent);
}

size_t tp__pool_foreach(void (*fn)(tp_pool *, void *), void *arg) {
  /* The pass lock keeps every pool alive and every reg_next fixed
   * (tp_pool_destroy unlinks under it). A create links a new head under
   * the registry lock alone and changes no existing pool's reg_next, so the
   * walk from the head read under that lock needs no lock of its own: fn
   * may take pool locks and call into epochs (lock order, fork_internal.h).
   * Pools created during the walk are not visited. */
  pthread_mutex_lock(&tp__pool_pass_lock);
  pthread_mutex_lock(&registry_lock);
  tp_pool *head = registry;
  pthread_mutex_unlock(&registry_lock);
  size_t n = 0;
  for (tp_pool *p = head; p; p = p->reg_next, n++) fn(p, arg);
  pthread_mutex_unlock(&tp__pool_pass_lock);
  return n;
}

/* ---- debug: which slabs exist (foreign-pointer checks) ----------------- */
#if TP_DEBUG
/* Open addressing, slab address -> pool; debug builds only. */
static pthread_mutex_t slabset_lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t *slabset_key;
static tp_pool **slabset_val;
static size_t slabset_cap, slabset_n;
#define SLABSET_TOMB ((uintptr_t)1)

static size_t slabset_hash(uintptr_t k, size_t cap) {
  return (size_t)((k >> 12) * 0x9e3779b97f4a7c15ull) & (cap - 1);
}
static void slabset_put_locked(uintptr_t k, tp_pool *v);
static void slabset_grow(void) {
  size_t old = slabset_cap;
  uintptr_t *ok = slabset_key;
  tp_pool **ov = slabset_val;
  slabset_cap = old ? old * 2 : 1024;
  slabset_key = calloc(slabset_cap, sizeof *slabset_key);
  slabset_val = calloc(slabset_cap, sizeof *slabset_val);
  if (!slabset_key || !slabset_val) tp__fatal("tp_pool", NULL, "debug slab set: out of memory");
  slabset_n = 0;
  for (size_t i = 0; i < old; i++)
    if (ok[i] > SLABSET_TOMB) slabset_put_locked(ok[i], ov[i]);
  free(ok);
  free(ov);
}
static void slabset_put_locked(uintptr_t k, tp_pool *v) {
  if ((slabset_n + 1) * 2 > slabset_cap) slabset_grow();
  size_t i = slabset_hash(k, slabset_cap);
  while (slabset_key[i] > SLABSET_TOMB) i = (i + 1) & (slabset_cap - 1);
  slabset_key[i] = k;
  slabset_val[i] = v;
  slabset_n++;
}
static void slabset_add(void *slab, tp_pool *p) {
  pthread_mutex_lock(&slabset_lock);
  slabset_put_locked((uintptr_t)slab, p);
  pthread_mutex_unlock(&slabset_lock);
}
static tp_pool *slabset_find_locked(uintptr_t k, size_t *at) {
  if (!slabset_cap) return NULL;
  size_t i = slabset_hash(k, slabset_cap);
  while (slabset_key[i]) {
    if (slabset_key[i] == k) {
      if (at) *at = i;
      return slabset_val[i];
    }
    i = (i + 1) & (slabset_cap - 1);
  }
  return NULL;
}
static void slabset_del(void *slab) {
  pthread_mutex_lock(&slabset_lock);
  size_t at;
  if (slabset_find_locked((uintptr_t)slab, &at)) {
    slabset_key[at] = SLABSET_TOMB;
    slabset_val[at] = NULL;
  }
  pthread_mutex_unlock(&slabset_lock);
}
static tp_pool *slabset_owner(const void *slab) {
  pthread_mutex_lock(&slabset_lock);
  tp_pool *p = slabset_find_locked((uintptr_t)slab, NULL);
  pthread_mutex_unlock(&slabset_lock);
  return p;
}
#endif

/* ---- layout ------------------------------------------------------------ */

static size_t bitmap_words(uint32_t n) { return (n + 63) / 64; }

static size_t header_bytes(uint32_t capacity) {
  size_t words = bitmap_words(capacity);
  return sizeof(tp_slab) + words * 8 * (TP_DEBUG ? 2 : 1);
}

/* Objects a slab of `size` holds with `stride`/`align`, or 0. */
static uint32_t slab_capacity(size_t size, size_t stride, size_t align,
                              size_t *data_off) {
  size_t bound = size / stride;
  if (bound == 0) return 0;
  size_t off = tp__round_up(header_bytes((uint32_t)bound), align);
  if (off >= size) return 0;
  *data_off = off;
  return (uint32_t)((size - off) / stride);
}

/* ---- object hand-over extras (debug, sanitizers, valgrind, ZERO) -------- */

static inline size_t obj_index(const tp_pool *p, const tp_slab *s, const void *obj) {
  size_t off = (size_t)((const char *)obj - s->data);
  return p->stride_shift ? off >> p->stride_shift : off / p->stride;
}

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
  size_t i = obj_index(p, s, obj);
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
static void check_put(tp_pool *p, void *obj, const char *func) {
#if TP_DEBUG
  tp_slab *s = (tp_slab *)((uintptr_t)obj & ~(uintptr_t)(p->slab_size - 1));
  if (slabset_owner(s) != p)
    tp__fatal(func, obj, "pointer is not from this pool");
  if ((char *)obj < s->data || (size_t)((char *)obj - s->data) % p->stride ||
      obj_index(p, s, obj) >= s->carved)
    tp__fatal(func, obj, "pointer is not an object of this pool");
  size_t i = obj_index(p, s, obj);
  uint64_t bit = 1ull << (i & 63);
  if (!(__atomic_fetch_and(&s->out_bits[i / 64], ~bit, __ATOMIC_RELAXED) & bit))
    tp__fatal(func, obj, "double put (object is not out)");
  fill_poison(p, obj);
#else
  /* The cheap check: the slab header names its pool. */
  if (TP_UNLIKELY(tp__slab_of(p, obj)->pool != p))
    tp__fatal(func, obj, "pointer is not from this pool");
#endif
  if (p->extras) {
    TP_POISON(obj, p->stride);
    VALGRIND_MEMPOOL_FREE(p, obj);
  }
  TP_TSAN_RELEASE(obj);
}

/* ---- slabs (under p->lock) ---------------------------------------------- */

static void avail_remove(tp_pool *p, tp_slab *s) {
  if (!s->on_avail) return;
  if (s->prev) s->prev->next = s->next; else p->avail_head = s->next;
  if (s->next) s->next->prev = s->prev; else p->avail_tail = s->prev;
  s->prev = s->next = NULL;
  s->on_avail = false;
}
static void avail_push_front(tp_pool *p, tp_slab *s) {
  s->prev = NULL;
  s->next = p->avail_head;
  if (p->avail_head) p->avail_head->prev = s; else p->avail_tail = s;
  p->avail_head = s;
  s->on_avail = true;
}
static void avail_push_back(tp_pool *p, tp_slab *s) {
  s->next = NULL;
  s->prev = p->avail_tail;
  if (p->avail_tail) p->avail_tail->next = s; else p->avail_head = s;
  p->avail_tail = s;
  s->on_avail = true;
}

static void set_resident(tp_pool *p, tp_slab *s, size_t bytes) {
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
  s->pool = p;
  s->capacity = p->capacity;
  s->data = (char *)s + p->data_off;
  s->stamp_ms = tp__now_ms_coarse();
#if TP_DEBUG
  s->out_bits = s->free_bits + bitmap_words(p->capacity);
  slabset_add(s, p);
#endif
  s->all_next = p->all;
  if (p->all) p->all->all_prev = s;
  p->all = s;
  avail_push_front(p, s);
  tp__counter_add(&p->slabs, 1);
  tp__counter_add(&p->slab_bytes, (int64_t)p->slab_size);
  set_resident(p, s, tp__round_up(p->data_off, tp__os_page_size()));
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
    size_t words = bitmap_words(s->capacity);
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
      s->carved++;
      out[got++] = obj;
    }
    set_resident(p, s, tp__round_up(p->data_off + (size_t)s->carved * p->stride, page));
    s->used += got - before;
    tp__counter_add(&p->used_total, got - before);
    if (s->nfree == 0 && s->carved == s->capacity) avail_remove(p, s);
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
static void central_free(tp_pool *p, void *const *objs, unsigned n, uint64_t stamp_ms) {
  pthread_mutex_lock(&p->lock);
  for (unsigned k = 0; k < n; k++) {
    tp_slab *s = tp__slab_of(p, objs[k]);
    size_t i = obj_index(p, s, objs[k]);
    TP_ASSERT(!(s->free_bits[i / 64] & (1ull << (i & 63))));
    s->free_bits[i / 64] |= 1ull << (i & 63);
    s->nfree++;
    s->used--;
    if (stamp_ms > s->stamp_ms) s->stamp_ms = stamp_ms;
    if (s->used == 0) {
      /* Empty: to the tail, reused last, so it can decay. */
      avail_remove(p, s);
      avail_push_back(p, s);
    } else if (!s->on_avail) {
      avail_push_front(p, s);
    }
  }
  tp__counter_add(&p->used_total, -(int64_t)n);
  pthread_mutex_unlock(&p->lock);
}

/* ---- depot -------------------------------------------------------------- */

/* The depot's counters follow a batch in (+1) or out (-1). */
static void depot_count(tp_pool *p, const tp__mag *m, int sign) {
  tp__counter_add(&p->depot_mags, sign);
  tp__counter_add(&p->depot_objs, sign * (int64_t)m->count);
}

/* Parks a batch in the depot, or in the slabs when the depot is full. */
static void depot_put(tp_pool *p, tp__mag *m, uint64_t now_ms) {
  if (tp__counter_get(&p->depot_mags) < p->depot_cap) {
    m->stamp_ms = now_ms;
    depot_count(p, m, 1);
    tp__mag_push(&p->depot, m);
    return;
  }
  central_free(p, m->obj, m->count, now_ms);
  tp__mag_free(m);
}

static tp__mag *depot_get(tp_pool *p) {
  tp__mag *m = tp__mag_pop(&p->depot);
  if (m) depot_count(p, m, -1);
  return m;
}

/* Drains CPU c's cache into the slabs (buf: room for a cache), stamping
 * the slabs with stamp_ms. Returns how many objects moved. */
static unsigned drain_cpu(tp_pool *p, unsigned c, void **buf, uint64_t stamp_ms) {
  int n = tp__pcache_drain(p->caches, c, buf);
  if (n <= 0) return 0;
  tp__counter_add(&p->removed_internal, n);
  central_free(p, buf, (unsigned)n, stamp_ms);
  return (unsigned)n;
}

/* ---- the slow paths ----------------------------------------------------- */

/* The inline paths run the real per-CPU caches (else the all-zero region
 * sends every call here, which then runs them itself). */
static inline bool fast_path_on(const tp_pool *p) { return p->head.fast_base == p->caches; }

/* Drains every CPU cache and the depot into the slabs (max_bytes reached:
 * objects sitting in other CPUs' caches are the only ones left). */
size_t tp__pool_scavenge(tp_pool *p) {
  void **buf = malloc(TP__PCACHE_SLOTS * sizeof(void *));
  size_t moved = 0;
  if (buf) {
    for (unsigned c = 0; c < p->ncpu; c++) moved += drain_cpu(p, c, buf, 0);
    free(buf);
  }
  for (tp__mag *m; (m = depot_get(p));) {
    central_free(p, m->obj, m->count, m->stamp_ms);
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
  if (n == 0 && errno == ENOMEM && p->max_bytes && tp__pool_scavenge(p))
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
  check_put(p, obj, "tp_pool_put");
  if (!fast_path_on(p) && tp__pcache_push_n(p->caches, &obj, 1) == 1) return;
  tp__counter_add(&p->misses, 1);
  /* Full (or locked, or rseq unavailable): move a batch to the depot. */
  tp__mag *m = tp__mag_new();
  if (!m) {
    tp__counter_add(&p->slow_puts, 1);
    central_free(p, &obj, 1, tp__now_ms_coarse());
    return;
  }
  /* Leave room for obj: the push below fails when the thread moved to
   * another CPU whose cache is full, or (percpu-cas) found the block held,
   * and a full batch (TP__MAG_CAP) plus obj would write past the magazine. */
  unsigned want = p->batch < TP__MAG_CAP ? p->batch : TP__MAG_CAP - 1;
  unsigned k = tp__pcache_pop_n(p->caches, m->obj, want);
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
    /* Check a run of up to 64 objects, skipping NULLs. */
    unsigned m = 0;
    for (; i < n && m < 64; i++) {
      if (!objs[i]) continue;
      check_put(p, objs[i], "tp_pool_put_bulk");
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
      central_free(p, buf + k, m - k, now);
      continue;
    }
    memcpy(mag->obj, buf + k, (m - k) * sizeof(void *));
    mag->count = m - k;
    depot_put(p, mag, now);
  }
}

/* ---- create / destroy ------------------------------------------------------ */

tp_pool *tp__pool_create(const tp_pool_config *cfg, size_t max_align, size_t cache_bytes) {
  pthread_once(&pool_once, pool_init_once);
  if (!cfg || cfg->obj_size == 0 || cfg->obj_size > TP__OBJ_SIZE_MAX ||
      (cfg->align && (!tp__is_pow2(cfg->align) || cfg->align > max_align)) ||
      (cfg->flags & ~TP_POOL_ZERO) || ((cfg->flags & TP_POOL_ZERO) && cfg->ctor)) {
    errno = EINVAL;
    return NULL;
  }
  const struct tp__percpu_info *pi = tp__percpu();
  size_t align = cfg->align;
  if (!align) align = cfg->obj_size >= 16 ? 16 : tp__pow2_ceil(cfg->obj_size);
  size_t stride = tp__round_up(cfg->obj_size, align < 8 ? 8 : align);

  /* Slab: a power of two of at least 64 KiB, doubled until it holds 8
   * objects and its header (rounded up to align) costs at most 1/64 of it —
   * which matters for large alignments: a self-aligned object (the
   * collector's regions) loses a whole slot to the header, so such a slab
   * holds 63. Objects are at most 1 MiB, so this ends by 64 MiB. Smaller
   * when max_bytes asks for less (down to one object). */
  size_t page = tp__os_page_size(), size = 64 * 1024, off = 0;
  uint32_t cap;
  while (((cap = slab_capacity(size, stride, align, &off)) < 8 || off * 64 > size) &&
         size < ((size_t)64 << 20))
    size *= 2;
  if (cfg->max_bytes) {
    while (size > cfg->max_bytes && size > page) size /= 2;
    cap = slab_capacity(size, stride, align, &off);
    if (cap == 0 || size > cfg->max_bytes) {
      errno = EINVAL;
      return NULL;
    }
  }

  tp_pool *p = aligned_alloc(TP_CACHELINE, tp__round_up(sizeof *p, TP_CACHELINE));
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  memset(p, 0, sizeof *p);
  if (cfg->name) snprintf(p->name, sizeof p->name, "%s", cfg->name);
  p->obj_size = cfg->obj_size;
  p->stride = stride;
  p->stride_shift = tp__is_pow2(stride) ? (uint32_t)__builtin_ctzll(stride) : 0;
  p->slab_size = size;
  p->data_off = off;
  p->capacity = cap;
  p->max_bytes = cfg->max_bytes;
  p->ctor = cfg->ctor;
  p->dtor = cfg->dtor;
  p->arg = cfg->arg;
  p->flags = cfg->flags;
  p->ncpu = pi->ncpu;
  /* A CPU cache holds cache_bytes of objects (256 KiB unless an internal
   * pool asks otherwise; 2 .. TP__PCACHE_SLOTS of them); a depot batch is
   * half a cache; the depot keeps up to 4 batches per CPU (at least 8). */
  size_t cc = (cache_bytes ? cache_bytes : 256 * 1024) / stride;
  p->cache_cap = (uint32_t)(cc < 2 ? 2 : cc > TP__PCACHE_SLOTS ? TP__PCACHE_SLOTS : cc);
  p->batch = p->cache_cap / 2 > TP__MAG_CAP ? TP__MAG_CAP : p->cache_cap / 2;
  if (p->batch == 0) p->batch = 1;
  p->depot_cap = 4 * p->ncpu < 8 ? 8 : 4 * p->ncpu;
  pthread_mutex_init(&p->lock, NULL);
  pthread_mutex_init(&p->stats_lock, NULL);

  p->removals_seen = calloc(p->ncpu, sizeof(uint64_t));
  p->removals_wraps = calloc(p->ncpu, sizeof(uint64_t));
  p->sweep_word = calloc(p->ncpu, sizeof(uint64_t));
  p->sweep_since_ms = calloc(p->ncpu, sizeof(uint64_t));
  p->caches = tp__pcache_region_new(p->cache_cap);
  if (!p->removals_seen || !p->removals_wraps || !p->sweep_word ||
      !p->sweep_since_ms || !p->caches) {
    tp__pcache_region_free(p->caches);
    free(p->removals_seen);
    free(p->removals_wraps);
    free(p->sweep_word);
    free(p->sweep_since_ms);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->stats_lock);
    free(p);
    errno = ENOMEM;
    return NULL;
  }

  /* The inline fast path runs only where it does the whole job. */
  p->extras = TP_DEBUG || TP_ASAN || TP_VG_RUNNING() || (p->flags & TP_POOL_ZERO);
  bool fast_on = pi->rseq && !p->extras && !TP_TSAN;
  p->head.self = p;
  if (fast_on) {
    p->head.fast_base = p->caches;
    p->head.slab_mask = ~(uintptr_t)(size - 1);
    p->head.owner_bias = 0;
  } else {
    p->head.fast_base = pi->zero_base;
    p->head.slab_mask = 0;
    p->head.owner_bias = (uintptr_t)&p->head.self;
  }
  VALGRIND_CREATE_MEMPOOL(p, 0, 0);

  pthread_mutex_lock(&registry_lock);
  p->reg_next = registry;
  if (registry) registry->reg_prev = p;
  registry = p;
  pthread_mutex_unlock(&registry_lock);
  return p;
}

tp_pool *tp_pool_create(const tp_pool_config *cfg) {
  return tp__pool_create(cfg, TP__ALIGN_MAX, 0);
}

/* Runs the dtor over every constructed object of s and unmaps it. */
static void slab_release(tp_pool *p, tp_slab *s) {
  if (p->dtor) {
    for (uint32_t i = 0; i < s->carved; i++) {
      char *obj = s->data + (size_t)i * p->stride;
      TP_UNPOISON(obj, p->obj_size);
      VALGRIND_MAKE_MEM_DEFINED(obj, p->obj_size);
      p->dtor(obj, p->arg);
    }
  }
#if TP_DEBUG
  slabset_del(s);
#endif
  TP_UNPOISON(s->data, (size_t)p->capacity * p->stride);
  tp__counter_add(&tp__os.resident, -(int64_t)s->resident);
  tp__os_unmap(s, p->slab_size);
}

void tp_pool_destroy(tp_pool *p) {
  if (!p) return;
  /* Out of the registry first (the pass lock waits for a sweeper pass that
   * may be working on p), then wait for retires still queued for p. */
  pthread_mutex_lock(&tp__pool_pass_lock);
  pthread_mutex_lock(&registry_lock);
  if (p->reg_prev) p->reg_prev->reg_next = p->reg_next; else registry = p->reg_next;
  if (p->reg_next) p->reg_next->reg_prev = p->reg_prev;
  pthread_mutex_unlock(&registry_lock);
  pthread_mutex_unlock(&tp__pool_pass_lock);
  /* relaxed: the caller's own synchronization (destroy runs alone) makes
   * every earlier retire into p, and its store of epoch_used, visible. */
  if (__atomic_load_n(&p->epoch_used, __ATOMIC_RELAXED)) tp__pool_epoch_quiesce(p);

  /* No other thread may use p now, so the caches are read without fences. */
  uint64_t cached = 0;
  for (unsigned c = 0; c < p->ncpu; c++)
    cached += tp__pcache_count(tp__pcache_peek(p->caches, c));
  for (tp__mag *m = tp__mag_take_all(&p->depot), *next; m; m = next) {
    next = tp__mag_next(m);
    cached += m->count;
    tp__mag_free(m);
  }
  uint64_t out = p->used_total - cached;
  if (TP_DEBUG && out)
    fprintf(stderr, "tidepool: tp_pool_destroy(%s): %llu objects still out\n",
            p->name[0] ? p->name : "(unnamed)", (unsigned long long)out);
  for (tp_slab *s = p->all, *next; s; s = next) {
    next = s->all_next;
    slab_release(p, s);
  }
  VALGRIND_DESTROY_MEMPOOL(p);
  tp__pcache_region_free(p->caches);
  free(p->removals_seen);
  free(p->removals_wraps);
  free(p->sweep_word);
  free(p->sweep_since_ms);
  pthread_mutex_destroy(&p->lock);
  pthread_mutex_destroy(&p->stats_lock);
  free(p);
}

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

/* ---- the sweeper's pass ------------------------------------------------------ */

/* Epoch callback for a slab retired by tp__pool_release_empty. */
void tp__pool_slab_retired(tp_slab *s) { slab_release(s->pool, s); }

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
    if (!buf && !(buf = malloc(TP__PCACHE_SLOTS * sizeof(void *)))) break;
    if (drain_cpu(p, c, buf, p->sweep_since_ms[c])) tp__counter_add(&tp__caches_drained, 1);
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
      depot_count(p, m, -1);
      central_free(p, m->obj, m->count, m->stamp_ms);
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
    avail_remove(p, s);
    if (s->all_prev) s->all_prev->all_next = s->all_next; else p->all = s->all_next;
    if (s->all_next) s->all_next->all_prev = s->all_prev;
    tp__counter_add(&p->slabs, -1);
    tp__counter_add(&p->slab_bytes, -(int64_t)p->slab_size);
    set_resident(p, s, 0);
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
      slab_release(p, s);
    }
  }
  return released;
}
