/*
 * Internal: the pool's structures, shared by pool.c, the sweeper, the
 * arena chunk pools and the epoch glue (pool/retire.c).
 */
#ifndef TIDEPOOL_POOL_INTERNAL_H
#define TIDEPOOL_POOL_INTERNAL_H

#include <tidepool/pool.h>
#include "core/percpu_internal.h"
#include "core/registry_internal.h"
#include "pool/depot_internal.h"
#include "pool/slabmap_internal.h"

#include <pthread.h>
#include <stdbool.h>

#define TP__OBJ_SIZE_MAX ((size_t)1 << 20)
#define TP__ALIGN_MAX ((size_t)4096)

/*
 * A slab: an aligned span of slab_size bytes. The header sits at the start
 * (found from any object by masking), objects from `data` on.
 *
 * Invariant, under the pool's lock: used + nfree == carved <= capacity.
 *   carved: objects [0, carved) have been constructed (ctor run);
 *   nfree:  set bits of free_bits, objects free in the slab;
 *   used:   objects out of the slab (in CPU caches, the depot, in transit,
 *           or held by the application).
 * A slab with nfree > 0 or carved < capacity is on the pool's avail list;
 * slabs with used == 0 sit at its tail, so they are reused last and decay.
 */
typedef struct tp_slab {
  tp_pool *pool;       /* first word: the owner (slow-path, bulk and retire
                          checks; the inline put under TP_POOL_CHECK_OWNER) */
  uint32_t capacity;
  uint32_t carved;
  uint32_t nfree;
  uint32_t used;
  uint32_t scan;       /* free_bits word to start the next search at */
  uint64_t stamp_ms;   /* last time the application gave an object back */
  size_t resident;     /* bytes of this slab counted as resident */
  char *data;
  struct tp_slab *prev, *next;         /* avail list */
  struct tp_slab *all_prev, *all_next; /* every slab of the pool */
  bool on_avail;
  uint64_t *out_bits;  /* debug builds: bit i = object i held by the app */
  uint64_t free_bits[];
} tp_slab;

struct tp_pool {
  /* Read on every fast-path operation; alone on its cache line. */
  struct tp__pool_head head;
  char pad0[TP_CACHELINE - sizeof(struct tp__pool_head)];

  /* Immutable after create. */
  char *caches;          /* the real per-CPU blocks */
  char name[32];
  size_t obj_size, stride, slab_size, data_off, max_bytes;
  uint32_t capacity;     /* objects per slab */
  uint64_t stride_magic; /* ceil(2^64 / stride): tp__pool_stride_mul */
  uint32_t cache_cap, batch, depot_cap;
  unsigned flags;
  bool extras;           /* get/put need more than moving the pointer */
  int (*ctor)(void *, void *);
  void (*dtor)(void *, void *);
  void *arg;
  unsigned ncpu;

  /* Set once, after create, by the first tp_pool_retire (relaxed). */
  bool epoch_used;

  /* The depot: full magazines, lock-free. */
  tp__mag_stack depot __attribute__((aligned(TP_CACHELINE)));
  uint64_t depot_mags, depot_objs; /* relaxed counters */

  /* Counters of the slow paths (relaxed atomics). */
  uint64_t slow_gets __attribute__((aligned(TP_CACHELINE)));
  uint64_t slow_puts, refill_in, removed_internal, misses, exchanges;
  uint64_t used_total;   /* sum of slab->used (written under lock) */
  uint64_t slabs, slab_bytes, resident_bytes, slabs_freed;

  /* Slabs, under lock. */
  pthread_mutex_t lock __attribute__((aligned(TP_CACHELINE)));
  tp_slab *avail_head, *avail_tail, *all;

  /* Stats: wrap tracking of the 48-bit removal counters (stats_lock). */
  pthread_mutex_t stats_lock;
  uint64_t *removals_seen, *removals_wraps;

  /* Sweeper state (touched only under the sweeper's pass lock). */
  uint64_t *sweep_word, *sweep_since_ms;

  /* In the process-wide registry of pools (pool/lifecycle.c). */
  struct tp__reg_link reg;
};

static inline tp_slab *tp__slab_of(const tp_pool *p, const void *obj) {
  return (tp_slab *)((uintptr_t)obj & ~(uintptr_t)(p->slab_size - 1));
}

/* Aborts: obj is not an object of p (names what is wrong). */
TP_COLD __attribute__((noreturn)) void tp__pool_owner_fatal(const tp_pool *p, const void *obj,
                                                            const char *func);

/* Object index arithmetic, by multiplication, not division (a put_bulk or
 * retire checks every object, and two 64-bit divisions cost more than the
 * rest of the check): with M = ceil(2^64 / stride), for an offset n < 2^32
 * (a slab is at most 64 MiB), n / stride = hi64(M * n) and n % stride == 0
 * iff lo64(M * n) < M (Lemire, Kaser and Kurz, "Faster remainder by direct
 * computation", 2019). */
static inline unsigned __int128 tp__pool_stride_mul(const tp_pool *p, const tp_slab *s,
                                                    const void *obj) {
  /* Unsigned subtraction: a ptrdiff_t here made gcc sign-extend it into a
   * full 128-bit product (three more instructions). */
  return (unsigned __int128)p->stride_magic * (uint64_t)((uintptr_t)obj - (uintptr_t)s->data);
}

/* The index of object obj (known to be one) in slab s. */
static inline size_t tp__pool_obj_at(const tp_pool *p, const tp_slab *s, const void *obj) {
  return (size_t)(tp__pool_stride_mul(p, s, obj) >> 64);
}

/* Whether obj lies on an object boundary of slab s, and its index (*idx). */
static inline bool tp__pool_obj_index(const tp_pool *p, const tp_slab *s, const void *obj,
                                      size_t *idx) {
  if ((const char *)obj < s->data) return false;
  unsigned __int128 prod = tp__pool_stride_mul(p, s, obj);
  *idx = (size_t)(prod >> 64);
  return (uint64_t)prod < p->stride_magic;
}

/* Aborts with "tidepool: FUNC(OBJ): pointer is not from this pool" (or "not
 * an object of this pool") unless obj lies on an object boundary of a live
 * slab of p. A wild pointer (malloc'd, a small integer, a slab given back)
 * is refused by the slab map before its slab header is read. Any thread; a
 * few loads. known (NULL: none): the slab the previous object of the same
 * batch was found in; a run of objects of one slab asks the slab map and
 * reads the header once (in bulk32, the map lookup per object was a third
 * of the time). Sound within one batch: the slab holds that previous
 * object, which the caller is handing back, so it stays live and p's
 * meanwhile. */
static inline void tp__pool_check_owner(const tp_pool *p, const void *obj, const char *func,
                                        const tp_slab **known) {
  const tp_slab *s = tp__slab_of(p, obj);
  size_t i;
  if (!known || s != *known) {
    if (TP_UNLIKELY(!tp__slabmap_has(s) || s->pool != p)) tp__pool_owner_fatal(p, obj, func);
    if (known) *known = s;
  }
  if (TP_UNLIKELY(!tp__pool_obj_index(p, s, obj, &i) || i >= s->capacity))
    tp__pool_owner_fatal(p, obj, func);
}

/* Internal pool creation: like tp_pool_create, but `align` may be up to
 * max_align (e.g. the object size, for self-aligned regions), and with a
 * per-CPU cache budget in bytes (0 = the default 256 KiB): internal pools of
 * big, rarely used objects keep their caches small. */
tp_pool *tp__pool_create(const tp_pool_config *cfg, size_t max_align, size_t cache_bytes);

/* One sweeper pass over p: drains CPU caches idle for decay_ms, depot
 * batches older than decay_ms, and gives back slabs empty for decay_ms
 * beyond *retain (which it decrements by what it keeps). Returns the bytes
 * given back. Caller holds the sweeper's pass lock. */
size_t tp__pool_sweep(tp_pool *p, uint64_t now_ms, uint64_t decay_ms,
                      size_t *retain);

/* Held for a whole sweeper pass; tp_pool_destroy takes it to leave the
 * registry, so no pool goes away during a pass. */
extern pthread_mutex_t tp__pool_pass_lock;
/* Idle CPU caches drained by sweeper passes, ever (relaxed). */
extern uint64_t tp__caches_drained;

/* Calls fn(p, arg) for every registered pool, holding the pass lock (no
 * pool is destroyed meanwhile). Returns how many pools it visited. */
size_t tp__pool_foreach(void (*fn)(tp_pool *, void *), void *arg);

/* Pools on epochs (pool/retire.c): wait until no retire of p is pending;
 * retire a slab the sweeper detached (unmapped after a grace period, then
 * tp__pool_slab_retired runs). */
void tp__pool_epoch_quiesce(tp_pool *p);
void tp__pool_retire_slab(tp_slab *s, size_t bytes);
void tp__pool_slab_retired(tp_slab *s);

/* Step 3 of tp__pool_sweep alone: gives back slabs with nothing out that
 * were unused for decay_ms, beyond *retain. Returns the bytes. Caller holds
 * the pass lock. */
size_t tp__pool_release_empty(tp_pool *p, uint64_t now_ms, uint64_t decay_ms, size_t *retain);

/* Slab memory plus per-CPU blocks the pool maps (relaxed reads, no lock). */
uint64_t tp__pool_bytes_mapped(const tp_pool *p);

/* Moves every object out of every CPU cache and the depot back to the
 * slabs (fenced, safe while other threads run). Returns objects moved. */
size_t tp__pool_scavenge(tp_pool *p);

/* ---- shared by the pool's files (pool.c, lifecycle.c, sweep.c) ---- */

/* free_bits words for n objects. */
static inline size_t tp__pool_bitmap_words(uint32_t n) { return (n + 63) / 64; }
/* Objects a slab of `size` holds with `stride`/`align` (and where its data
 * starts, *data_off), or 0. */
uint32_t tp__pool_slab_capacity(size_t size, size_t stride, size_t align, size_t *data_off);
/* Returns n objects to their slabs, stamping them with stamp_ms (takes
 * p->lock). */
void tp__pool_central_free(tp_pool *p, void *const *objs, unsigned n, uint64_t stamp_ms);
/* Drains CPU c's cache into the slabs (buf: room for a cache), stamping
 * the slabs with stamp_ms. Returns how many objects moved. */
unsigned tp__pool_drain_cpu(tp_pool *p, unsigned c, void **buf, uint64_t stamp_ms);
/* The depot's counters follow a batch in (+1) or out (-1). */
void tp__pool_depot_count(tp_pool *p, const tp__mag *m, int sign);
/* Takes s off the avail list; caller holds p->lock. */
void tp__pool_avail_remove(tp_pool *p, tp_slab *s);
/* Sets the bytes of s counted as resident; caller holds p->lock. */
void tp__pool_set_resident(tp_pool *p, tp_slab *s, size_t bytes);
/* Runs the dtor over every constructed object of s and unmaps it. */
void tp__pool_slab_release(tp_pool *p, tp_slab *s);
/* The slab invariant (check.c): NULL, or what is broken. Caller holds
 * p->lock. */
const char *tp__pool_slab_invalid(const tp_pool *p, const tp_slab *s);

#endif /* TIDEPOOL_POOL_INTERNAL_H */
