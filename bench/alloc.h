/*
 * bench/alloc.h — the interfaces an implementation under test provides,
 * and the selection of this worker's implementation.
 *
 * Every worker binary is compiled with -DBENCH_ALLOC=<name>; this header
 * then includes bench/alloc_<name>.h, which defines, for whatever it
 * supports:
 *
 *   BENCH_HAVE_POOL 1   + static const bench_pool_ops  bench_pool_impl
 *   BENCH_HAVE_ARENA 1  + static const bench_arena_ops bench_arena_impl
 *   BENCH_HAVE_GC 1     + static const bench_gc_ops    bench_gc_impl
 *   BENCH_HAVE_EPOCH 1  (tidepool only: the epoch workloads)
 *
 * and always  static inline void bench_impl_describe(void),  which reports
 * versions and modes with bench_info() (bench/worker.c calls it once).
 *
 * Workloads call the implementation through these const vtables. The
 * vtables and their functions are static and visible in the workload's
 * translation unit, so the compiler resolves every call at compile time
 * and inlines it: tp_pool_get's inline fast path stays inline, and a peer's
 * malloc is one direct call, exactly as in a program using them.
 */
#ifndef TP_BENCH_ALLOC_H
#define TP_BENCH_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#include "bench/harness.h"

/* A fixed-size object allocator: tp_pool, or malloc/free of a peer. */
typedef struct bench_pool_ops {
  const char *name;                   /* column name: "tp", "jemalloc", ... */
  void *(*create)(size_t obj_size);   /* the context passed to the calls below */
  void (*destroy)(void *ctx);
  void *(*get)(void *ctx);
  void (*put)(void *ctx, void *obj);
  /* Optional (NULL: the workload loops over get/put). */
  size_t (*get_bulk)(void *ctx, void **objs, size_t n);
  void (*put_bulk)(void *ctx, void *const *objs, size_t n);
  /* Optional: the allocator's background reclaimer (tidepool's sweeper).
   * interval_ms 0 = its default configuration. 0 on success. */
  int (*reclaimer_start)(unsigned interval_ms);
  void (*reclaimer_stop)(void);
} bench_pool_ops;

/* A region allocator: tp_arena, talloc, APR pools, malloc + free-all. */
typedef struct bench_arena_ops {
  const char *name;
  void *(*create)(void);
  void (*destroy)(void *arena);
  void *(*alloc)(void *arena, size_t size);
  void (*reset)(void *arena); /* frees everything; the arena stays usable */
  /* Optional: an arena any number of threads may allocate from at once. */
  void *(*create_concurrent)(void);
} bench_arena_ops;

/* A tracing collector: tp_heap, or the Boehm-Demers-Weiser collector. It
 * allocates one object shape, GCBench's node. There is one heap per
 * process (Boehm has no other kind). */
typedef struct bench_gnode {
  struct bench_gnode *l, *r; /* the only pointers */
  int i, j;
} bench_gnode;

/* The server workload's table entry: 56 bytes, one pointer (to a 3-node
 * tree of bench_gnode), then a key and payload. */
typedef struct bench_gentry {
  bench_gnode *tree; /* the only pointer */
  uint64_t key;
  uint64_t payload[5];
} bench_gentry;

typedef struct bench_gc_ops {
  const char *name;
  /* Makes the heap. roots[0..nroots) hold its roots (static storage).
   * auto_collect 0: no collections but collect()'s. 0 on success. */
  int (*open)(void **roots, size_t nroots, int auto_collect);
  void (*close)(void);
  bench_gnode *(*node)(void); /* a zeroed node, or NULL */
  void (*collect)(void);      /* a full collection, now (either mode) */
  double (*heap_mib)(void);   /* memory mapped for the heap */
  /* Collections so far, the world-stopped time they took in all, and the
   * last one's, each measured by the collector itself. */
  void (*pauses)(uint64_t *n, uint64_t *total_ns, uint64_t *last_ns);
  /* Optional: extra counters for a run (bench_counter); cumulative ones
   * count from the last run_start (optional: the timed part begins), or
   * from open without one. */
  void (*describe_run)(bench_out *out);
  void (*run_start)(void);

  /* The server-like workloads (bench/gcserver_workloads.c) need these too;
   * a collector without entry/table/leaf_doubles has no gcserver cases. */
  bench_gentry *(*entry)(void);        /* a zeroed 56-byte entry, or NULL */
  void **(*table)(size_t n);           /* a zeroed heap array of n pointers */
  double *(*leaf_doubles)(size_t n);   /* n doubles, no pointers (GCBench) */
  /* Optional: stores value into the pointer field *field of the heap
   * object obj (tp_heap_write, the write barrier); NULL: a plain store. */
  void (*write)(void *obj, void **field, void *value);
  /* Optional: a mutator thread begins / ends (attach, detach). */
  void (*thread_start)(void);
  void (*thread_stop)(void);
  /* Optional: around a wait of the opening thread (pthread_join, sleep)
   * while other mutators run: collections must not wait for it. */
  void (*blocking_enter)(void);
  void (*blocking_leave)(void);
  /* Optional: before open(), asks for n marker threads; 0, or -1 if the
   * collector has no such option. NULL: no marker-count option (the
   * 2-marker case is then not registered: n/a). */
  int (*markers)(unsigned n);
  /* Optional: the world-stopped pauses since open(), each as the
   * collector reports it (exact, one per stop), copied into ns[0..cap);
   * returns how many there are. NULL: the workloads poll pauses(). */
  size_t (*stw_log)(uint64_t *ns, size_t cap);
} bench_gc_ops;

/* Allocators without per-size state: the context is the object size. */
static inline void *bench_size_ctx(size_t size) { return (void *)(uintptr_t)size; }
static inline size_t bench_ctx_size(const void *ctx) { return (size_t)(uintptr_t)ctx; }
static inline void bench_no_destroy(void *ctx) { (void)ctx; }

/* Defines a vtable that some translation units of a worker do not use. */
#define BENCH_IMPL static const __attribute__((unused))

/* The pool interface of a malloc-style allocator: get = alloc_fn(size),
 * put = free_fn(obj). Defines bench_pool_impl named `impl_name`. */
#define BENCH_MALLOC_POOL(impl_name, alloc_fn, free_fn)                            \
  static inline void *bench_malloc_get(void *ctx) { return alloc_fn(bench_ctx_size(ctx)); } \
  static inline void bench_malloc_put(void *ctx, void *obj) {                \
    (void)ctx;                                                                \
    free_fn(obj);                                                             \
  }                                                                           \
  BENCH_IMPL bench_pool_ops bench_pool_impl = {                               \
      .name = impl_name,                                                      \
      .create = bench_size_ctx,                                               \
      .destroy = bench_no_destroy,                                            \
      .get = bench_malloc_get,                                                \
      .put = bench_malloc_put,                                                \
  };

/* ---- this worker's implementation: bench/alloc_$(BENCH_ALLOC).h ---------- */
#ifndef BENCH_ALLOC
#error "compile workers with -DBENCH_ALLOC=<name> (see bench/BUILD)"
#endif
#define BENCH_STR_(x) #x
#define BENCH_STR(x) BENCH_STR_(x)
#define BENCH_IMPL_HEADER_(n) BENCH_STR(bench/alloc_##n.h)
#define BENCH_IMPL_HEADER(n) BENCH_IMPL_HEADER_(n)
#include BENCH_IMPL_HEADER(BENCH_ALLOC)

#ifndef BENCH_HAVE_POOL
#define BENCH_HAVE_POOL 0
#endif
#ifndef BENCH_HAVE_ARENA
#define BENCH_HAVE_ARENA 0
#endif
#ifndef BENCH_HAVE_GC
#define BENCH_HAVE_GC 0
#endif
#ifndef BENCH_HAVE_EPOCH
#define BENCH_HAVE_EPOCH 0
#endif

#if BENCH_HAVE_POOL
/* n get+touch+put pairs on ctx: the pool group's pair, and the sweeper
 * group's pair_sweep1ms. Returns the ns they took, or 0 (and fails *out)
 * when a get returns NULL. */
static inline uint64_t bench_pair_loop(void *ctx, uint64_t n, bench_out *out) {
  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    void *o = bench_pool_impl.get(ctx);
    if (BENCH_UNLIKELY(!o)) {
      bench_fail(out, "get returned NULL");
      return 0;
    }
    bench_touch(o, i);
    bench_pool_impl.put(ctx, o);
  }
  return bench_now_ns() - t0;
}
#endif

#if BENCH_HAVE_GC
/* A complete binary tree of the given depth (2^(depth+1) - 1 nodes), built
 * top-down like GCBench (so it is laid out in preorder); NULL when an
 * allocation fails. */
static inline bench_gnode *bench_gc_make_tree(int depth) {
  bench_gnode *n = bench_gc_impl.node();
  if (!n) return NULL;
  n->i = depth;
  if (depth > 0) {
    n->l = bench_gc_make_tree(depth - 1);
    n->r = bench_gc_make_tree(depth - 1);
    if (!n->l || !n->r) return NULL;
  }
  return n;
}

static inline long bench_gc_count_tree(const bench_gnode *n) {
  return n ? 1 + bench_gc_count_tree(n->l) + bench_gc_count_tree(n->r) : 0;
}
#endif

#endif /* TP_BENCH_ALLOC_H */
