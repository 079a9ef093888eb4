/*
 * A pool's life: the process-wide registry of pools (and its fork
 * handlers), the slab layout a configuration gives, tp_pool_create and
 * tp_pool_destroy, and giving one slab back (tp__pool_slab_release).
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

/* ---- the process-wide registry ----------------------------------------- */

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
pthread_mutex_t tp__pool_pass_lock = PTHREAD_MUTEX_INITIALIZER;
uint64_t tp__caches_drained;

static void pass_prepare(void) { pthread_mutex_lock(&tp__pool_pass_lock); }
static void pass_release(void) { pthread_mutex_unlock(&tp__pool_pass_lock); }

/* Fork holds every pool's slab and stats locks (core/registry.c). */
static void pool_fork_lock(struct tp__reg_link *l) {
  tp_pool *p = TP__REG_OBJ(l, tp_pool, reg);
  pthread_mutex_lock(&p->lock);
  pthread_mutex_lock(&p->stats_lock);
}
static void pool_fork_unlock(struct tp__reg_link *l) {
  tp_pool *p = TP__REG_OBJ(l, tp_pool, reg);
  pthread_mutex_unlock(&p->stats_lock);
  pthread_mutex_unlock(&p->lock);
}
static const struct tp__registry_ops pool_fork_ops = {pool_fork_lock, pool_fork_unlock, NULL};
static struct tp__registry pools =
    TP__REGISTRY_INIT(TP__FORK_RANK_POOLS, "pool registry lock", &pool_fork_ops);

static void pool_init_once(void) {
  tp__fork_register(TP__FORK_RANK_SWEEPER, pass_prepare, pass_release, pass_release);
  tp__registry_init(&pools);
}

size_t tp__pool_foreach(void (*fn)(tp_pool *, void *), void *arg) {
  /* The pass lock keeps every pool alive and every link fixed
   * (tp_pool_destroy unlinks under it). A create links a new head under
   * the registry lock alone and changes no existing pool's next link, so
   * the walk from the head read under that lock needs no lock of its own:
   * fn may take pool locks and call into epochs (lock order,
   * fork_internal.h). Pools created during the walk are not visited. */
  pthread_mutex_lock(&tp__pool_pass_lock);
  size_t n = 0;
  for (struct tp__reg_link *l = tp__registry_head(&pools); l; l = l->next, n++)
    fn(TP__REG_OBJ(l, tp_pool, reg), arg);
  pthread_mutex_unlock(&tp__pool_pass_lock);
  return n;
}

/* ---- layout ------------------------------------------------------------ */

static size_t header_bytes(uint32_t capacity) {
  size_t words = tp__pool_bitmap_words(capacity);
  return sizeof(tp_slab) + words * 8 * (TP_DEBUG ? 2 : 1);
}

/* Objects a slab of `size` holds with `stride`/`align`, or 0. */
uint32_t tp__pool_slab_capacity(size_t size, size_t stride, size_t align,
                              size_t *data_off) {
  size_t bound = size / stride;
  if (bound == 0) return 0;
  size_t off = tp__round_up(header_bytes((uint32_t)bound), align);
  if (off >= size) return 0;
  *data_off = off;
  return (uint32_t)((size - off) / stride);
}

/* ---- create / destroy ------------------------------------------------------ */

/* Frees the pool's own memory (its CPU cache region, per-CPU arrays, locks,
 * the struct): the end of destroy, and of a create that ran out of memory. */
static void pool_free(tp_pool *p) {
  tp__pcache_region_free(p->caches);
  free(p->removals_seen);
  free(p->removals_wraps);
  free(p->sweep_word);
  free(p->sweep_since_ms);
  pthread_mutex_destroy(&p->lock);
  pthread_mutex_destroy(&p->stats_lock);
  free(p);
}

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
  while (((cap = tp__pool_slab_capacity(size, stride, align, &off)) < 8 || off * 64 > size) &&
         size < ((size_t)64 << 20))
    size *= 2;
  if (cfg->max_bytes) {
    while (size > cfg->max_bytes && size > page) size /= 2;
    cap = tp__pool_slab_capacity(size, stride, align, &off);
    if (cap == 0 || size > cfg->max_bytes) {
      errno = EINVAL;
      return NULL;
    }
  }

  tp_pool *p = tp__zalloc_aligned(TP_CACHELINE, sizeof *p);
  if (!p) return NULL;
  if (cfg->name) snprintf(p->name, sizeof p->name, "%s", cfg->name);
  p->obj_size = cfg->obj_size;
  p->stride = stride;
  p->stride_magic = UINT64_MAX / stride + 1; /* ceil(2^64 / stride), stride > 1 */
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

  p->removals_seen = tp__calloc(p->ncpu, sizeof(uint64_t));
  p->removals_wraps = tp__calloc(p->ncpu, sizeof(uint64_t));
  p->sweep_word = tp__calloc(p->ncpu, sizeof(uint64_t));
  p->sweep_since_ms = tp__calloc(p->ncpu, sizeof(uint64_t));
  p->caches = tp__pcache_region_new(p->cache_cap);
  /* The inline fast path runs only where it does the whole job. */
  p->extras = TP_DEBUG || TP_ASAN || TP_VG_RUNNING() || (p->flags & TP_POOL_ZERO);
  bool fast_on = pi->rseq && !p->extras && !TP_TSAN;
  char *zero = fast_on ? NULL : tp__pcache_zero_base();
  if (!p->removals_seen || !p->removals_wraps || !p->sweep_word ||
      !p->sweep_since_ms || !p->caches || (!fast_on && !zero)) {
    pool_free(p);
    errno = ENOMEM;
    return NULL;
  }

  p->head.self = p;
  if (fast_on) {
    p->head.fast_base = p->caches;
    p->head.slab_mask = ~(uintptr_t)(size - 1);
    p->head.owner_bias = 0;
  } else {
    p->head.fast_base = zero;
    p->head.slab_mask = 0;
    p->head.owner_bias = (uintptr_t)&p->head.self;
  }
  VALGRIND_CREATE_MEMPOOL(p, 0, 0);

  tp__registry_link(&pools, &p->reg);
  return p;
}

tp_pool *tp_pool_create(const tp_pool_config *cfg) {
  return tp__pool_create(cfg, TP__ALIGN_MAX, 0);
}

/* Runs the dtor over every constructed object of s and unmaps it. */
void tp__pool_slab_release(tp_pool *p, tp_slab *s) {
  if (p->dtor) {
    for (uint32_t i = 0; i < s->carved; i++) {
      char *obj = s->data + (size_t)i * p->stride;
      TP_UNPOISON(obj, p->obj_size);
      VALGRIND_MAKE_MEM_DEFINED(obj, p->obj_size);
      p->dtor(obj, p->arg);
    }
  }
  tp__slabmap_del(s);
  TP_UNPOISON(s->data, (size_t)p->capacity * p->stride);
  tp__counter_add(&tp__os.resident, -(int64_t)s->resident);
  tp__os_unmap(s, p->slab_size);
}

void tp_pool_destroy(tp_pool *p) {
  if (!p) return;
  /* Out of the registry first (the pass lock waits for a sweeper pass that
   * may be working on p), then wait for retires still queued for p. */
  pthread_mutex_lock(&tp__pool_pass_lock);
  tp__registry_unlink(&pools, &p->reg);
  pthread_mutex_unlock(&tp__pool_pass_lock);
  /* relaxed: the caller's own synchronization (destroy runs alone) makes
   * every earlier retire into p, and its store of epoch_used, visible. */
  if (__atomic_load_n(&p->epoch_used, __ATOMIC_RELAXED)) tp__pool_epoch_quiesce(p);
  /* Debug builds: the structures are whole when the pool goes away. */
  if (TP_DEBUG && tp_pool_check(p) != 0) tp__fatal("tp_pool_destroy", p, "tp_pool_check failed");

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
    tp__pool_slab_release(p, s);
  }
  VALGRIND_DESTROY_MEMPOOL(p);
  pool_free(p);
}

