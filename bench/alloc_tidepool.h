/* bench/alloc_tidepool.h — tidepool: tp_pool, tp_arena, epochs, the
 * sweeper, tp_heap. */
#include <tidepool/tidepool.h>

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define BENCH_HAVE_POOL 1
#define BENCH_HAVE_ARENA 1
#define BENCH_HAVE_GC 1
#define BENCH_HAVE_EPOCH 1

static inline void *tp_b_create(size_t size) {
  tp_pool_config cfg = {.name = "bench", .obj_size = size};
  return tp_pool_create(&cfg);
}
static inline void tp_b_destroy(void *p) { tp_pool_destroy(p); }
static inline void *tp_b_get(void *p) { return tp_pool_get(p); }
static inline void tp_b_put(void *p, void *o) { tp_pool_put(p, o); }
static inline size_t tp_b_get_bulk(void *p, void **v, size_t n) { return tp_pool_get_bulk(p, v, n); }
static inline void tp_b_put_bulk(void *p, void *const *v, size_t n) { tp_pool_put_bulk(p, v, n); }

static inline int tp_b_sweeper_start(unsigned interval_ms) {
  if (interval_ms == 0) return tp_sweeper_start(NULL);
  tp_sweeper_config cfg = {.interval_ms = interval_ms};
  return tp_sweeper_start(&cfg);
}
static inline void tp_b_sweeper_stop(void) { tp_sweeper_stop(); }

BENCH_IMPL bench_pool_ops bench_pool_impl = {
    .name = "tp",
    .create = tp_b_create,
    .destroy = tp_b_destroy,
    .get = tp_b_get,
    .put = tp_b_put,
    .get_bulk = tp_b_get_bulk,
    .put_bulk = tp_b_put_bulk,
    .reclaimer_start = tp_b_sweeper_start,
    .reclaimer_stop = tp_b_sweeper_stop,
};

static inline void *tp_b_arena_create(void) { return tp_arena_create(NULL); }
static inline void *tp_b_arena_create_concurrent(void) {
  tp_arena_config cfg = {.flags = TP_ARENA_CONCURRENT};
  return tp_arena_create(&cfg);
}
static inline void tp_b_arena_destroy(void *a) { tp_arena_destroy(a); }
static inline void *tp_b_arena_alloc(void *a, size_t n) { return tp_arena_alloc(a, n); }
static inline void tp_b_arena_reset(void *a) { tp_arena_reset(a); }

BENCH_IMPL bench_arena_ops bench_arena_impl = {
    .name = "tp",
    .create = tp_b_arena_create,
    .destroy = tp_b_arena_destroy,
    .alloc = tp_b_arena_alloc,
    .reset = tp_b_arena_reset,
    .create_concurrent = tp_b_arena_create_concurrent,
};

/* tp_heap knows the node's pointers (a precise type) and marks on
 * tp_heap_config.markers threads (default: one per CPU); its stats time
 * every collection. */
static tp_heap *tp_b_heap;
static unsigned tp_b_markers; /* tp_heap_config.markers of the next open (0: default) */
static const size_t tp_b_gnode_offs[] = {offsetof(bench_gnode, l), offsetof(bench_gnode, r)};
static const tp_type tp_b_gnode_type = {"gnode", sizeof(bench_gnode), NULL, tp_b_gnode_offs, 2,
                                        NULL, 0};

/* The stats at the start of the timed part (zero: since open). */
static tp_heap_stats tp_b_gc_s0;

static inline int tp_b_gc_open(void **roots, size_t nroots, int auto_collect) {
  memset(&tp_b_gc_s0, 0, sizeof tp_b_gc_s0);
  tp_heap_config cfg = {.trigger_percent = auto_collect ? 100 : 0, /* 0: manual only */
                        .markers = tp_b_markers};
  tp_b_heap = tp_heap_create(&cfg);
  if (!tp_b_heap) return -1;
  for (size_t i = 0; i < nroots; i++)
    if (tp_root_add(tp_b_heap, &roots[i]) != 0) return -1;
  return 0;
}
static inline void tp_b_gc_close(void) {
  tp_heap_destroy(tp_b_heap);
  tp_b_heap = NULL;
  tp_b_markers = 0;
}
static inline bench_gnode *tp_b_gc_node(void) {
  return tp_heap_alloc(tp_b_heap, &tp_b_gnode_type);
}
static inline void tp_b_gc_collect(void) { tp_heap_collect(tp_b_heap); }
static inline double tp_b_gc_heap_mib(void) {
  tp_heap_stats s;
  tp_heap_read_stats(tp_b_heap, &s);
  return (double)s.heap_sys / (1024.0 * 1024.0);
}
static inline void tp_b_gc_pauses(uint64_t *n, uint64_t *total_ns, uint64_t *last_ns) {
  tp_heap_stats s;
  tp_heap_read_stats(tp_b_heap, &s);
  *n = s.num_gc;
  *total_ns = s.pause_total_ns;
  *last_ns = s.last_pause_ns;
}
static inline void tp_b_gc_run_start(void) { tp_heap_read_stats(tp_b_heap, &tp_b_gc_s0); }
static inline void tp_b_gc_describe_run(bench_out *out) {
  tp_heap_stats s, *s0 = &tp_b_gc_s0;
  tp_heap_read_stats(tp_b_heap, &s);
  bench_counter(out, "mark_ms_total", (double)(s.mark_ns - s0->mark_ns) / 1e6);
  bench_counter(out, "sweep_ms_total", (double)(s.sweep_ns - s0->sweep_ns) / 1e6);
  bench_counter(out, "mark_bg_cpu_ms", (double)(s.mark_bg_cpu_ns - s0->mark_bg_cpu_ns) / 1e6);
  bench_counter(out, "assists", (double)(s.assists - s0->assists));
  bench_counter(out, "assist_ms_total", (double)(s.mark_assist_ns - s0->mark_assist_ns) / 1e6);
  bench_counter(out, "assist_max_ms", (double)s.assist_max_ns / 1e6); /* since open */
  bench_counter(out, "limit_waits", (double)(s.limit_waits - s0->limit_waits));
  bench_counter(out, "limit_wait_ms_total", (double)(s.limit_wait_ns - s0->limit_wait_ns) / 1e6);
  bench_counter(out, "store_assists", (double)(s.store_assists - s0->store_assists));
  bench_counter(out, "store_assist_ms_total",
                (double)(s.store_assist_ns - s0->store_assist_ns) / 1e6);
  bench_counter(out, "mark_term_satb_max", (double)s.mark_term_satb_max); /* since open */
  bench_counter(out, "stop_max_ms", (double)s.stop_max_ns / 1e6);        /* since open */
  /* The pacer at the end of the run: live, trigger, goal, hard limit. */
  bench_counter(out, "live_MiB", (double)s.heap_live / 1048576.0);
  if (s.next_gc != UINT64_MAX) {
    bench_counter(out, "trigger_MiB", (double)s.gc_trigger / 1048576.0);
    bench_counter(out, "goal_MiB", (double)s.next_gc / 1048576.0);
    bench_counter(out, "hard_limit_MiB", (double)s.gc_hard_limit / 1048576.0);
  }
}

/* The server workload's shapes (bench/gcserver_workloads.c): the entry
 * (one pointer), the table (an array of pointers: a precise type of one
 * pointer, allocated as an array) and GCBench's array of doubles (leaf). */
static const size_t tp_b_entry_offs[] = {offsetof(bench_gentry, tree)};
static const tp_type tp_b_entry_type = {"entry", sizeof(bench_gentry), NULL, tp_b_entry_offs, 1,
                                        NULL, 0};
static const size_t tp_b_ptr_offs[] = {0};
static const tp_type tp_b_ptr_type = {"ptr", sizeof(void *), NULL, tp_b_ptr_offs, 1, NULL, 0};
static const tp_type tp_b_double_type = {"double", sizeof(double), NULL, NULL, 0, NULL,
                                         TP_TYPE_LEAF};

static inline bench_gentry *tp_b_gc_entry(void) { return tp_heap_alloc(tp_b_heap, &tp_b_entry_type); }
static inline void **tp_b_gc_table(size_t n) {
  return tp_heap_alloc_array(tp_b_heap, &tp_b_ptr_type, n);
}
static inline double *tp_b_gc_leaf_doubles(size_t n) {
  return tp_heap_alloc_array(tp_b_heap, &tp_b_double_type, n);
}
static inline void tp_b_gc_write(void *obj, void **field, void *value) {
  tp_heap_write(tp_b_heap, obj, field, value);
}
static inline void tp_b_gc_thread_start(void) { tp_heap_attach(tp_b_heap); }
static inline void tp_b_gc_thread_stop(void) { tp_heap_detach(tp_b_heap); }
static inline void tp_b_gc_blocking_enter(void) { tp_heap_blocking_enter(tp_b_heap); }
static inline void tp_b_gc_blocking_leave(void) { tp_heap_blocking_leave(tp_b_heap); }

/* tp_heap_config.markers for the next open (the tree's 1- and 2-marker
 * cases; tp_heap_collect marks on all of them). .stw_log stays NULL: the
 * stats expose the last pause and the count, which the workloads poll
 * (tp_heap_read_stats, relaxed loads). */
static inline int tp_b_gc_markers(unsigned n) {
  tp_b_markers = n;
  return 0;
}
BENCH_IMPL bench_gc_ops bench_gc_impl = {
    .name = "tp",
    .open = tp_b_gc_open,
    .close = tp_b_gc_close,
    .node = tp_b_gc_node,
    .collect = tp_b_gc_collect,
    .heap_mib = tp_b_gc_heap_mib,
    .pauses = tp_b_gc_pauses,
    .describe_run = tp_b_gc_describe_run,
    .run_start = tp_b_gc_run_start,
    .entry = tp_b_gc_entry,
    .table = tp_b_gc_table,
    .leaf_doubles = tp_b_gc_leaf_doubles,
    .write = tp_b_gc_write,
    .thread_start = tp_b_gc_thread_start,
    .thread_stop = tp_b_gc_thread_stop,
    .blocking_enter = tp_b_gc_blocking_enter,
    .blocking_leave = tp_b_gc_blocking_leave,
    .markers = tp_b_gc_markers,
};

static inline void bench_impl_describe(void) {
  bench_info("tidepool", tp_version());
  bench_info("percpu_mode", tp_percpu_mode());
  bench_info("epoch_mode", tp_epoch_mode());
}
