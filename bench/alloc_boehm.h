/* bench/alloc_boehm.h — the Boehm-Demers-Weiser collector (Debian's
 * libgc), the peer of tidepool's tp_heap in bench/gc_workloads.c. It has
 * no pool or arena interface here: GC_MALLOC objects are not freed one by
 * one, so only the "gc" group runs in this worker. */
#define GC_THREADS 1
#include <gc.h>

#include <stdio.h>

#define BENCH_HAVE_GC 1

/* Boehm scans nodes conservatively (GC_MALLOC) and marks with its parallel
 * marker threads (GC_start_mark_threads: Boehm at its best). Its roots
 * include the data segment, where the workloads' root array is. Its
 * collection events time the collections: from the start of one to its
 * end, the world stopped in between (sweeping is lazy, in later
 * allocations). */
static uint64_t boehm_n, boehm_total_ns, boehm_last_ns, boehm_t0;
static int boehm_manual; /* open(auto_collect 0): collection disabled */

static inline void boehm_event(GC_EventType e) {
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
};

static inline void bench_impl_describe(void) {
  unsigned v = GC_get_version();
  char s[32];
  snprintf(s, sizeof s, "%u.%u.%u", v >> 16, (v >> 8) & 0xff, v & 0xff);
  bench_info("boehm", s);
}
