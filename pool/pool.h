/*
 * <tidepool/pool.h> — fixed-size object pools on per-CPU caches.
 *
 * A pool hands out objects of one size. Free objects live in three tiers:
 * a bounded cache per CPU (rseq, no atomics: see <tidepool/detail/rseq.h>), a
 * lock-free depot of full batches shared by all CPUs, and the slabs the
 * objects were carved from. A get or put touches only the calling CPU's
 * cache unless it is empty or full; then one whole batch moves between the
 * cache and the depot. Slabs are aligned spans from mmap; an object's slab is
 * found by masking its address, so a put needs no lookup.
 *
 *   tp_pool_config cfg = { .name = "conn", .obj_size = sizeof(struct conn) };
 *   tp_pool *p = tp_pool_create(&cfg);
 *   struct conn *c = tp_pool_get(p);      // any thread
 *   ...
 *   tp_pool_put(p, c);                    // any thread, not only the getter's
 *   tp_pool_destroy(p);
 *
 * Thread safety: tp_pool_get, tp_pool_put, the bulk forms and
 * tp_pool_read_stats are safe to call concurrently from any number of
 * threads, on any CPU, with one another and with the sweeper. tp_pool_create
 * is safe to call concurrently. tp_pool_destroy must not run concurrently
 * with any other call on the same pool.
 *
 * Objects keep their contents while they sit in the pool: a ctor runs once
 * when an object is first carved from a slab, a dtor once when its slab goes
 * back to the OS or the pool is destroyed (kmem_cache semantics). ctor and
 * dtor run with the pool's slab lock held and must not call into the same
 * pool.
 */
#ifndef TIDEPOOL_POOL_H
#define TIDEPOOL_POOL_H

#include <tidepool/common.h>
#include <tidepool/detail/rseq.h> /* the inline fast paths */
#include <tidepool/percpu.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_pool tp_pool;

/* Objects are zeroed on get (not compatible with a ctor). */
#define TP_POOL_ZERO 1u

typedef struct tp_pool_config {
  const char *name; /* shows in stats; copied (up to 31 bytes); may be NULL */
  size_t obj_size;  /* 1 .. 1 MiB */
  size_t align;     /* 0 = default: 16, or for sizes under 16 the next power
                       of two; else a power of two <= 4096 */
  size_t max_bytes; /* 0 = unlimited; cap on the slab memory the pool maps:
                       past it tp_pool_get returns NULL, errno ENOMEM */
  int (*ctor)(void *obj, void *arg);  /* optional; nonzero = failure */
  void (*dtor)(void *obj, void *arg); /* optional */
  void *arg;                          /* passed to ctor and dtor */
  unsigned flags;                     /* TP_POOL_ZERO */
} tp_pool_config;

typedef struct tp_pool_stats {
  char name[32];
  size_t obj_size;        /* as configured */
  size_t stride;          /* bytes each object takes in a slab */
  uint64_t in_use;        /* objects held by the application (gets - puts) */
  uint64_t cached;        /* free objects in CPU caches and the depot */
  uint64_t cached_cpu;    /* ... of which in CPU caches */
  uint64_t cached_depot;  /* ... of which in the depot */
  uint64_t slabs;         /* slabs mapped */
  uint64_t bytes_mapped;  /* slab memory mapped, plus the per-CPU blocks */
  uint64_t bytes_resident;/* of that, touched and not given back */
  uint64_t gets, puts;    /* operations, ever (bulk counts each object) */
  uint64_t cache_hits;    /* gets and puts served by a CPU cache */
  uint64_t cache_misses;  /* gets and puts that left the CPU cache */
  uint64_t depot_exchanges; /* batches moved between a CPU cache and the depot */
  uint64_t slabs_freed;   /* slabs given back to the OS, ever */
  uint32_t cpu_cache_cap; /* objects one CPU cache holds at most */
  uint32_t batch;         /* objects per depot batch */
  uint32_t depot_cap;     /* batches the depot holds at most */
  uint32_t ncpu;          /* CPU caches */
} tp_pool_stats;

/* Creates a pool. NULL + errno EINVAL on a bad config (NULL, obj_size 0 or
 * over 1 MiB, align not a power of two or over 4096, TP_POOL_ZERO with a
 * ctor, unknown flags, max_bytes too small for one slab); ENOMEM.
 * Safe to call concurrently. */
TP_API tp_pool *tp_pool_create(const tp_pool_config *cfg);

/* Gives all the pool's memory back; runs the dtor on every constructed
 * object. Objects still out are reported on stderr in debug builds.
 * If the pool was ever retired into (tp_pool_retire), it first waits for a
 * tp_epoch_barrier() so that every retire of it has run — and aborts when
 * that wait is impossible: called inside an epoch read section or a retire
 * callback. NULL is a no-op. Not safe concurrently with other calls on
 * this pool. */
TP_API void tp_pool_destroy(tp_pool *p);

/* Bulk forms. get_bulk returns how many objects it stored in objs (fewer
 * than n only when memory runs out: errno ENOMEM). put_bulk skips NULLs.
 * Safe to call concurrently. */
TP_API size_t tp_pool_get_bulk(tp_pool *p, void **objs, size_t n);
TP_API void tp_pool_put_bulk(tp_pool *p, void *const *objs, size_t n);

/* Fills *out; 0 or -EINVAL (and errno). Lock-free: never blocks get/put.
 * Counters are read one by one while other threads run, so a set read
 * together is not a snapshot; at quiescence in_use == gets - puts exactly.
 * Safe to call concurrently. */
TP_API int tp_pool_read_stats(const tp_pool *p, tp_pool_stats *out);

/* tp_pool_put(p, obj) after an epoch grace period (<tidepool/epoch.h>):
 * for an object readers may still hold inside a read section. Same errors
 * as tp_epoch_retire; on an error the object is still the caller's. A
 * pointer from another pool aborts with a message. Safe to call
 * concurrently. */
TP_API int tp_pool_retire(tp_pool *p, void *obj);

/* Checks the pool's structures: its slabs and slab lists, its CPU cache
 * blocks and its depot (the invariants of pool_internal.h; pool/check.c
 * lists them). 0, or -EINVAL (errno) with a message on stderr naming what
 * is broken, also for a NULL pool. For tests and debugging: call it while
 * no other thread uses the pool (the caches and the depot are read without
 * stopping anyone); it takes the pool's lock. Debug builds run it in
 * tp_pool_destroy and check each slab they return objects to. */
TP_API int tp_pool_check(tp_pool *p);

/* Slow paths of the inline functions below (not API). */
TP_API void *tp__pool_get_slow(tp_pool *p);
TP_API void tp__pool_put_slow(tp_pool *p, void *obj);

/* The part of struct tp_pool the inline fast path reads (not API). */
struct tp__pool_head {
  char *fast_base;      /* this pool's per-CPU blocks, or the all-zero region
                           when the fast path is off (fallback mode, ZERO
                           pools, debug and sanitizer builds) */
  uintptr_t slab_mask;  /* ~(slab size - 1); 0 when the fast path is off */
  uintptr_t owner_bias; /* 0; &self when the fast path is off, so the owner
                           read below never touches the object's memory */
  const void *self;     /* this pool */
};

/*
 * Gets an object. NULL + errno ENOMEM when memory or max_bytes runs out
 * (EINVAL for a NULL pool). Fast path, when the CPU cache has an object:
 * 19 instructions as a function of its own (ret included; gcc 12 -O2,
 * objdump), two branches (the NULL-pool test and the sequence's bounds
 * test), no atomic.
 * Safe to call concurrently.
 */
TP_INLINE void *tp_pool_get(tp_pool *p) {
  void *obj;
  if (TP_UNLIKELY(p == NULL) ||
      TP_UNLIKELY((obj = tp__pcache_pop(((struct tp__pool_head *)p)->fast_base)) == NULL))
    return tp__pool_get_slow(p);
  return obj;
}

/*
 * Puts an object back; any thread may put what any thread got. NULL obj is a
 * no-op. Fast path: 21 instructions as a function of its own (ret
 * included; gcc 12 -O2, objdump), three branches (NULL pool, NULL object,
 * the bounds test), no atomic.
 *
 * A pointer from another pool aborts with a message when the put leaves the
 * CPU cache (the slow path checks the slab header's owner), on every bulk
 * put and retire, and on every put in debug builds. The inline fast path
 * does not read the slab header by default: that dependent load costs ~13 %
 * of a get+put pair. Define TP_POOL_CHECK_OWNER before including this
 * header to check it on every put there too (28 instructions instead of
 * 21: the mask, the owner load, its xor with the pool, the veto folded
 * into the bounds test, and a saved register; no more branches).
 * Safe to call concurrently.
 */
TP_INLINE void tp_pool_put(tp_pool *p, void *obj) {
  const struct tp__pool_head *h = (const struct tp__pool_head *)p;
  if (TP_UNLIKELY(p == NULL || obj == NULL)) {
    tp__pool_put_slow(p, obj);
    return;
  }
#ifdef TP_POOL_CHECK_OWNER
  /* The slab header's first word names the owning pool; any difference
   * vetoes the fast push and the slow path diagnoses it. */
  uintptr_t owner =
      *(const uintptr_t *)(((uintptr_t)obj & h->slab_mask) + h->owner_bias);
  if (TP_UNLIKELY(!tp__pcache_push_checked(h->fast_base, obj, owner ^ (uintptr_t)p)))
    tp__pool_put_slow(p, obj);
#else
  if (TP_UNLIKELY(!tp__pcache_push(h->fast_base, obj))) tp__pool_put_slow(p, obj);
#endif
}

#ifdef __cplusplus
}
#endif

#endif /* TIDEPOOL_POOL_H */
