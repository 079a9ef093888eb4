/* bench/alloc_boehm.h — the Boehm-Demers-Weiser collector (Debian's
 * libgc), the peer of tidepool's tp_heap in bench/gc_workloads.c. It has
 * no pool or arena interface here: GC_MALLOC objects are not freed one by
 * one, so only the "gc" group runs in this worker. */
#define GC_THREADS 1
#include <gc.h>

#include <stdio.h>
#include <string.h>

#define BENCH_HAVE_GC 1

/* Boehm scans nodes conservatively (GC_MALLOC) and marks with its parallel
 * marker threads (GC_start_mark_threads: Boehm at its best). Its roots
 * include the data segment, where the workloads' root array is. Its
 * collection events time the collections: from the start of one to its
 * end, the world stopped in between (sweeping is lazy, in later
 * allocations). */
static uint64_t boehm_n, boehm_total_ns, boehm_last_ns, boehm_t0;
static int boehm_manual; /* open(auto_collect 0): collection disabled */

/* Every world stop, exact (GC_EVENT_PRE_STOP_WORLD to
 * GC_EVENT_POST_START_WORLD, on the collecting thread; one collection at
 * a time, so plain statics): for the server workload's pause
 * distribution. */
#define BOEHM_STW_MAX 16384
static uint64_t boehm_stw_t0, boehm_stw_n, boehm_stw[BOEHM_STW_MAX];

static inline void boehm_event(GC_EventType e) {
  if (e == GC_EVENT_PRE_STOP_WORLD) boehm_stw_t0 = bench_now_ns();
  if (e == GC_EVENT_POST_START_WORLD && boehm_stw_t0) {
    if (boehm_stw_n < BOEHM_STW_MAX) boehm_stw[boehm_stw_n] = bench_now_ns() - boehm_stw_t0;
    boehm_stw_n++;
    boehm_stw_t0 = 0;
  }
  if (e == GC_EVENT_START) boehm_t0 = bench_now_ns();
  if (e == GC_EVENT_END && boehm_t0) {
    boehm_last_ns = bench_now_ns() - boehm_t0;
    boehm_n++;
    boehm_total_ns += boehm_last_ns;
    boehm_t0 = 0;
  }
}

static inline int boehm_open(void **roots, size_t nroots, int auto_collect) {
  (void)roots; /* static storage: scanned with the data segment */
  (void)nroots;
  GC_INIT();
  GC_start_mark_threads();
  GC_set_on_collection_event(boehm_event);
  boehm_manual = !auto_collect;
  if (boehm_manual) GC_disable();
  return 0;
}
static inline void boehm_close(void) {} /* one heap for the process's life */
static inline bench_gnode *boehm_node(void) { return GC_MALLOC(sizeof(bench_gnode)); }
static inline void boehm_collect(void) {
  if (boehm_manual) GC_enable(); /* GC_gcollect does nothing while disabled */
  GC_gcollect();
  if (boehm_manual) GC_disable();
}
static inline double boehm_heap_mib(void) {
  return (double)GC_get_heap_size() / (1024.0 * 1024.0);
}
static inline void boehm_pauses(uint64_t *n, uint64_t *total_ns, uint64_t *last_ns) {
  *n = boehm_n;
  *total_ns = boehm_total_ns;
  *last_ns = boehm_last_ns;
}
/* GC_MALLOC everywhere (conservative, as the nodes); the table is one
 * large object. The pointer-free array is GC_MALLOC_ATOMIC (never
 * scanned), zeroed here as the other collectors' arrays are. */
static inline bench_gentry *boehm_entry(void) { return GC_MALLOC(sizeof(bench_gentry)); }
static inline void **boehm_table(size_t n) { return GC_MALLOC(n * sizeof(void *)); }
static inline double *boehm_leaf_doubles(size_t n) {
  double *d = GC_MALLOC_ATOMIC(n * sizeof(double));
  if (d) memset(d, 0, n * sizeof(double));
  return d;
}
/* Boehm marks with GC_MARKERS threads (the collecting one included), set
 * before GC_INIT. */
static inline int boehm_markers(unsigned n) {
  GC_set_markers_count(n);
  return 0;
}
static inline size_t boehm_stw_log(uint64_t *ns, size_t cap) {
  size_t n = boehm_stw_n < BOEHM_STW_MAX ? boehm_stw_n : BOEHM_STW_MAX;
  for (size_t i = 0; i < n && i < cap; i++) ns[i] = boehm_stw[i];
  return n;
}
static inline void boehm_describe_run(bench_out *out) {
  bench_counter(out, "markers", (double)GC_get_parallel() + 1);
}

BENCH_IMPL bench_gc_ops bench_gc_impl = {
    .name = "boehm",
    .open = boehm_open,
    .close = boehm_close,
    .node = boehm_node,
    .collect = boehm_collect,
    .heap_mib = boehm_heap_mib,
    .pauses = boehm_pauses,
    .describe_run = boehm_describe_run,
    .entry = boehm_entry,
    .table = boehm_table,
    .leaf_doubles = boehm_leaf_doubles,
    /* Threads: gc.h (GC_THREADS) turns pthread_create into
     * GC_pthread_create in every workload file, which registers them;
     * stores need no barrier; collections stop threads with signals, so a
     * waiting thread needs nothing either. */
    .markers = boehm_markers,
    .stw_log = boehm_stw_log,
};

static inline void bench_impl_describe(void) {
  unsigned v = GC_get_version();
  char s[32];
  snprintf(s, sizeof s, "%u.%u.%u", v >> 16, (v >> 8) & 0xff, v & 0xff);
  bench_info("boehm", s);
}
