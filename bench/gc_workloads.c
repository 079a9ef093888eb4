/*
 * bench/gc_workloads.c — tracing collectors (issue 7), written once against
 * bench_gc_ops: tidepool's tp_heap against the Boehm-Demers-Weiser
 * collector (libgc, Debian 8.2), on the same object shape. Group "gc".
 *
 * Objects are GCBench nodes (bench_gnode): two pointers and two ints, 24
 * bytes. Both collectors then use 32 bytes per node (tp_heap: an 8-byte
 * header; Boehm: its 1 extra byte for interior pointers rounds 25 up to
 * 32). tp_heap knows the node's pointer offsets (a precise type) and marks
 * with its default markers (one per CPU: an explicit collection on all of
 * them, a paced one on a quarter, at least one); Boehm scans it
 * conservatively (GC_MALLOC) with its parallel markers (2 on this 2-core
 * VM). See bench/alloc_tidepool.h and
 * bench/alloc_boehm.h.
 *
 *   gc_alloc       1 M node allocations, collection off (tp: a manual-only
 *                  heap; Boehm: GC_disable), each node written; after the
 *                  timed loop an untimed collection makes the memory
 *                  reusable, so runs measure the steady state (memory
 *                  warm, no page faults); ns per allocation
 *   gc_alloc_cold  4 M allocations into a fresh heap, collection off: page
 *                  faults included (one run per process)
 *   gc_tree_1g     a complete binary tree of 2^25 - 1 nodes (1 GiB of
 *                  nodes) built untimed, one untimed warm-up collection,
 *                  then one full collection timed; ns per collection;
 *                  counters: secs, mark_MBps (1 GiB / time), heap_MiB (one
 *                  run per process)
 *   gc_pause_256m  a 256 MiB live tree (2^23 - 1 nodes), then 1 s (0.3 s
 *                  with --quick) of steady allocation of short-lived trees
 *                  of 63 nodes with automatic collections (tp: trigger
 *                  100 %; Boehm: its defaults); ns per allocation with the
 *                  collections in it; counters: gcs, pause_mean_ms and
 *                  pause_max_ms (world stopped, as each collector measures
 *                  it: Boehm's every stop from its events; tp's each
 *                  growth of its stopped total seen after every 64 trees,
 *                  two per concurrent cycle),
 *                  gc_share, heap_MiB, and the distribution of
 *                  those pauses for the plot: pause_cdf_PPPP_ms
 *                  (quantiles, bench_counter_cdf), pauses_seen
 *   gc_cycles      rings of 100 nodes (each node linked both ways: cyclic
 *                  garbage that reference counting would leak), 20 000
 *                  rings, only the newest one rooted, automatic
 *                  collections; ns per ring; counters heap_max_MiB, gcs,
 *                  gc_share and the pause distribution (pause_cdf_PPPP_ms,
 *                  pauses_seen, polled after every ring); fails if the
 *                  heap grows past 256 MiB (the cycles leaked)
 *
 * tidepool only (tp_heap API directly):
 *   gc_arena_roots_NxS  N arenas of S bytes used each registered as roots
 *                  (tp_heap_add_arena; issue 12): every 8th word of the
 *                  arenas points into one of 4096 live heap nodes (also
 *                  rooted), the rest are small integers. Each run does
 *                  ROUNDS collections with the arenas registered and
 *                  ROUNDS with them removed, interleaved; ns of
 *                  stopped world per collection with them (pause 1 and
 *                  pause 2: the arenas are scanned in pause 1); counters
 *                  pause_with_us,
 *                  pause_without_us (medians), arena_MiB, ns_per_MiB
 *                  ((with - without) / MiB scanned), read_ns_per_MiB
 *                  (the baseline: summing the same words, interleaved).
 *                  _c: concurrent arenas (TP_ARENA_CONCURRENT)
 *   gc_read_stats  tp_heap_read_stats on a heap after one collection, from
 *                  its (attached) thread; ns per call (issue 12's target:
 *                  <= 200 ns)
 */
#include "bench/alloc.h"

#include <stdlib.h>

#if BENCH_HAVE_GC

#include "bench/gc_pauses.h"

static const bench_gc_ops *const G = &bench_gc_impl;

/* The roots: a static array (tp_heap: registered; Boehm: scanned with the
 * data segment). */
#define NROOTS 64
static void *gc_roots[NROOTS];

/* ---- shapes ------------------------------------------------------------------ */

typedef struct gc_state {
  int depth;
  long nodes;
} gc_state;

static void *gc_state_new(void) {
  gc_state *s = bench_map(sizeof *s);
  return s;
}

static void gc_teardown(const bench_case *c, void *state) {
  (void)c;
  G->close();
  if (state) bench_unmap(state, sizeof(gc_state));
}

/* ---- gc_alloc / gc_alloc_cold ----------------------------------------------------- */

static void *gc_alloc_setup(const bench_case *c) {
  gc_state *s = gc_state_new();
  if (!s || G->open(gc_roots, NROOTS, 0) != 0) return NULL;
  if (c->param) {
    /* Warm: one batch allocated and collected before the timed runs. */
    for (uint64_t i = 0; i < c->ops; i++)
      if (!G->node()) return NULL;
    G->collect();
  }
  return s;
}

static void gc_alloc_run(const bench_case *c, void *state, bench_out *out) {
  BENCH_NEED_STATE(state, out);
  uint64_t n = c->ops, t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    bench_gnode *x = G->node();
    if (BENCH_UNLIKELY(!x)) {
      bench_fail(out, "allocation returned NULL");
      return;
    }
    x->i = (int)i;
  }
  uint64_t t1 = bench_now_ns();
  out->ns = (double)(t1 - t0);
  out->ops = (double)n;
  if (c->param) G->collect(); /* untimed: the next run reuses the memory */
}

BENCH_CASE(gc_alloc, .workload = "gc_alloc", .impl = bench_gc_impl.name, .group = "gc",
           .unit = "allocation (24 B node, collection off, warm)", .throughput = 1,
           .ops = 1000000, .param = 1, .setup = gc_alloc_setup, .run = gc_alloc_run,
           .teardown = gc_teardown)
BENCH_CASE(gc_alloc_cold, .workload = "gc_alloc_cold", .impl = bench_gc_impl.name,
           .group = "gc", .unit = "allocation (fresh heap, page faults)", .throughput = 1,
           .ops = 4000000, .iterations = 1, .param = 0, .setup = gc_alloc_setup,
           .run = gc_alloc_run, .teardown = gc_teardown)

/* ---- gc_tree_1g and gc_pause_256m: a live tree ------------------------------- */

/* A live binary tree of depth c->param in root 0. */
static gc_state *live_tree_setup(const bench_case *c, int auto_collect) {
  gc_state *s = gc_state_new();
  if (!s || G->open(gc_roots, NROOTS, auto_collect) != 0) return NULL;
  s->depth = (int)c->param;
  gc_roots[0] = bench_gc_make_tree(s->depth);
  if (!gc_roots[0]) return NULL;
  s->nodes = ((long)2 << s->depth) - 1;
  return s;
}

static void *gc_tree_setup(const bench_case *c) {
  gc_state *s = live_tree_setup(c, 0);
  if (s) G->collect(); /* warm-up (untimed) */
  return s;
}

static void gc_tree_run(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  BENCH_NEED_STATE(state, out);
  gc_state *s = state;
  uint64_t t0 = bench_now_ns();
  G->collect();
  uint64_t t1 = bench_now_ns();
  if (bench_gc_count_tree(gc_roots[0]) != s->nodes) {
    bench_fail(out, "the tree lost nodes");
    return;
  }
  double secs = (double)(t1 - t0) / 1e9, mb = (double)s->nodes * 32.0 / (1024.0 * 1024.0);
  out->ns = (double)(t1 - t0);
  out->ops = 1;
  bench_counter(out, "secs", secs);
  bench_counter(out, "tree_MiB", mb);
  bench_counter(out, "mark_MBps", mb / secs);
  bench_counter(out, "heap_MiB", G->heap_mib());
  if (G->describe_run) G->describe_run(out);
}

BENCH_CASE(gc_tree_1g, .workload = "gc_tree_1g", .impl = bench_gc_impl.name, .group = "gc",
           .unit = "full collection, 1 GiB live binary tree", .ops = 1, .iterations = 1,
           .param = 24, .setup = gc_tree_setup, .run = gc_tree_run, .teardown = gc_teardown)

/* ---- gc_pause_256m ----------------------------------------------------------------- */

static void *gc_pause_setup(const bench_case *c) { return live_tree_setup(c, 1); }

/* The pauses a run sees (bench/gc_pauses.h), for the plots' distributions
 * (pause_cdf_PPPP_ms, pauses_seen) and the mean and max. */
static bench_pauses plog; /* one case per process */

/* Ends the log; counters pauses_seen and pause_cdf_PPPP_ms. */
static void pause_log_end(bench_out *out) {
  uint64_t gcs, total;
  bench_pauses_end(&plog, G, &gcs, &total);
  bench_sorted ms = bench_pauses_ms(&plog);
  bench_counter(out, "pauses_seen", (double)plog.n);
  bench_counter_cdf(out, "pause_cdf", "_ms", bench_sorted_quantile_fn, &ms);
}

static void gc_pause_run(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  BENCH_NEED_STATE(state, out);
  gc_state *s = state;
  uint64_t n0, tot0, last, n1, tot1;
  G->pauses(&n0, &tot0, &last);
  uint64_t dur = bench_quick() ? 300000000u : 1000000000u;
  uint64_t t0 = bench_now_ns(), end = t0 + dur, allocs = 0, seed = 7;
  /* Short-lived trees; 1 in 8 stays rooted for a while in one of 63 slots.
   * After every 64 trees: a poll of the pauses. */
  bench_pauses_start(&plog, G);
  while (bench_now_ns() < end) {
    for (int k = 0; k < 64; k++) {
      bench_gnode *t = bench_gc_make_tree(5);
      if (BENCH_UNLIKELY(!t)) {
        bench_fail(out, "allocation returned NULL");
        return;
      }
      allocs += 63;
      uint64_t r = bench_rand(&seed);
      if ((r & 7) == 0) gc_roots[1 + (r >> 8) % (NROOTS - 1)] = t;
    }
    bench_pauses_poll(&plog, G);
  }
  uint64_t t1 = bench_now_ns();
  G->pauses(&n1, &tot1, &last);
  pause_log_end(out);
  if (bench_gc_count_tree(gc_roots[0]) != s->nodes) {
    bench_fail(out, "the live tree lost nodes");
    return;
  }
  uint64_t gcs = n1 - n0;
  out->ns = (double)(t1 - t0);
  out->ops = (double)allocs;
  bench_counter(out, "gcs", (double)gcs);
  bench_counter(out, "pause_mean_ms",
                plog.n ? (double)bench_pauses_sum_ns(&plog) / (double)plog.n / 1e6 : 0);
  bench_counter(out, "pause_max_ms", (double)bench_pauses_max_ns(&plog) / 1e6);
  bench_counter(out, "gc_share", (double)(tot1 - tot0) / (double)(t1 - t0));
  bench_counter(out, "heap_MiB", G->heap_mib());
}

BENCH_CASE(gc_pause_256m, .workload = "gc_pause_256m", .impl = bench_gc_impl.name, .group = "gc",
           .unit = "allocation, 256 MiB live, collections included", .throughput = 1, .ops = 1,
           .iterations = 1, .param = 22, .setup = gc_pause_setup, .run = gc_pause_run,
           .teardown = gc_teardown)

/* ---- gc_cycles -------------------------------------------------------------------- */

#define RING 100
#define RINGS 20000

static void *gc_cycles_setup(const bench_case *c) {
  (void)c;
  gc_state *s = gc_state_new();
  if (!s || G->open(gc_roots, NROOTS, 1) != 0) return NULL;
  return s;
}

static void gc_cycles_run(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  BENCH_NEED_STATE(state, out);
  double max_mib = 0;
  uint64_t n0, tot0, n1, tot1, last;
  G->pauses(&n0, &tot0, &last);
  bench_pauses_start(&plog, G);
  uint64_t t0 = bench_now_ns();
  for (int k = 0; k < RINGS; k++) {
    bench_gnode *first = G->node(), *prev = first;
    if (BENCH_UNLIKELY(!first)) {
      bench_fail(out, "allocation returned NULL");
      return;
    }
    for (int i = 1; i < RING; i++) {
      bench_gnode *x = G->node();
      if (BENCH_UNLIKELY(!x)) {
        bench_fail(out, "allocation returned NULL");
        return;
      }
      x->i = i;
      x->r = prev; /* back edge */
      prev->l = x; /* forward edge */
      prev = x;
    }
    prev->l = first;
    first->r = prev;
    gc_roots[0] = first; /* the previous ring is now cyclic garbage */
    bench_pauses_poll(&plog, G);
    if (k % 256 == 0) {
      double m = G->heap_mib();
      if (m > max_mib) max_mib = m;
    }
  }
  uint64_t t1 = bench_now_ns();
  G->pauses(&n1, &tot1, &last);
  pause_log_end(out);
  out->ns = (double)(t1 - t0);
  out->ops = RINGS;
  bench_counter(out, "heap_max_MiB", max_mib);
  bench_counter(out, "gcs", (double)(n1 - n0));
  bench_counter(out, "gc_share", (double)(tot1 - tot0) / (double)(t1 - t0));
  if (max_mib > 256) bench_fail(out, "heap grew to %.0f MiB: cycles were not collected", max_mib);
}

BENCH_CASE(gc_cycles, .workload = "gc_cycles", .impl = bench_gc_impl.name, .group = "gc",
           .unit = "ring of 100 nodes (cyclic garbage)", .throughput = 1, .ops = RINGS,
           .setup = gc_cycles_setup, .run = gc_cycles_run, .teardown = gc_teardown)

/* ---- tidepool only: arenas as roots, reading the stats --------------------------- */

#ifdef TIDEPOOL_GC_H

#define AR_NODES 4096
#define AR_ROUNDS 9

typedef struct ar_state {
  tp_heap *h;
  bench_gnode *nodes[AR_NODES];
  tp_arena **arenas;
  size_t narenas, bytes_each;
  uintptr_t **recs; /* every 256-byte record (malloc'd: not a root) */
  size_t nrecs;
} ar_state;

static const struct {
  size_t n, bytes;
  unsigned flags;
} ar_shapes[] = {
    {1, 64 << 10, 0},       {1, 4 << 20, 0},     {16, 1 << 20, 0}, {16, 4 << 20, 0},
    {256, 64 << 10, 0},     {256, 256 << 10, 0}, {16, 1 << 20, TP_ARENA_CONCURRENT},
};

static void ar_teardown(const bench_case *c, void *state) {
  (void)c;
  ar_state *s = state;
  if (!s) return;
  for (size_t i = 0; i < s->narenas; i++)
    if (s->arenas[i]) tp_arena_destroy(s->arenas[i]);
  free(s->arenas);
  free(s->recs);
  if (s->h) tp_heap_destroy(s->h);
  bench_unmap(s, sizeof *s);
}

static void *ar_setup(const bench_case *c) {
  ar_state *s = bench_map(sizeof *s);
  if (!s) return NULL;
  tp_heap_config hc = {.trigger_percent = 0};
  s->h = tp_heap_create(&hc);
  s->narenas = ar_shapes[c->param].n;
  s->bytes_each = ar_shapes[c->param].bytes;
  s->arenas = calloc(s->narenas, sizeof *s->arenas);
  s->recs = malloc(s->narenas * (s->bytes_each / 256) * sizeof *s->recs);
  if (!s->h || !s->arenas || !s->recs || tp_root_add_range(s->h, s->nodes, sizeof s->nodes) != 0) {
    ar_teardown(c, s);
    return NULL;
  }
  for (size_t i = 0; i < AR_NODES; i++)
    if (!(s->nodes[i] = tp_heap_alloc(s->h, &tp_b_gnode_type))) goto fail;
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < s->narenas; i++) {
    tp_arena_config ac = {.flags = ar_shapes[c->param].flags};
    if (!(s->arenas[i] = tp_arena_create(&ac))) goto fail;
    /* Requests' worth of 256-byte records. */
    for (size_t used = 0; used < s->bytes_each; used += 256) {
      uintptr_t *w = tp_arena_alloc(s->arenas[i], 256);
      if (!w) goto fail;
      s->recs[s->nrecs++] = w;
      for (int k = 0; k < 32; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        w[k] = k % 8 == 0 ? (uintptr_t)s->nodes[x % AR_NODES] : (uintptr_t)(x & 0xffff);
      }
    }
  }
  tp_heap_detach(s->h); /* this thread's stack is not a root: only the arenas */
  tp_heap_collect(s->h); /* warm-up */
  return s;
fail:
  ar_teardown(c, s);
  return NULL;
}

/* The world-stopped time of one collection: both pauses of a concurrent
 * cycle (the arenas are scanned in pause 1; last_pause_ns is pause 2). */
static uint64_t ar_collect(ar_state *s) {
  tp_heap_stats st0, st1;
  tp_heap_read_stats(s->h, &st0);
  tp_heap_collect(s->h);
  tp_heap_read_stats(s->h, &st1);
  return st1.pause_total_ns - st0.pause_total_ns;
}

/* The baseline: reading the same records (a sum of their words). */
static uint64_t ar_read(ar_state *s, uint64_t *acc) {
  uint64_t t0 = bench_now_ns(), x = 0;
  for (size_t i = 0; i < s->nrecs; i++)
    for (int k = 0; k < 32; k++) x += s->recs[i][k];
  *acc += x;
  return bench_now_ns() - t0;
}

static void ar_run(const bench_case *c, void *state, bench_out *out) {
  BENCH_NEED_STATE(state, out);
  ar_state *s = state;
  uint64_t with[AR_ROUNDS], without[AR_ROUNDS], rd[AR_ROUNDS], sum = 0, acc = 0;
  for (int r = 0; r < AR_ROUNDS; r++) {
    rd[r] = ar_read(s, &acc);
    for (size_t i = 0; i < s->narenas; i++) tp_heap_add_arena(s->h, s->arenas[i]);
    with[r] = ar_collect(s);
    sum += with[r];
    for (size_t i = 0; i < s->narenas; i++) tp_heap_remove_arena(s->h, s->arenas[i]);
    without[r] = ar_collect(s);
  }
  qsort(with, AR_ROUNDS, sizeof with[0], bench_cmp_u64);
  qsort(without, AR_ROUNDS, sizeof without[0], bench_cmp_u64);
  qsort(rd, AR_ROUNDS, sizeof rd[0], bench_cmp_u64);
  __asm__ volatile("" : : "r"(acc));
  double mib = 0;
  for (size_t i = 0; i < s->narenas; i++) {
    tp_arena_stats as;
    tp_arena_read_stats(s->arenas[i], &as);
    mib += (double)as.allocated / (1024.0 * 1024.0);
  }
  double w = (double)with[AR_ROUNDS / 2], wo = (double)without[AR_ROUNDS / 2];
  out->ns = (double)sum;
  out->ops = AR_ROUNDS;
  bench_counter(out, "pause_with_us", w / 1e3);
  bench_counter(out, "pause_without_us", wo / 1e3);
  bench_counter(out, "arena_MiB", mib);
  bench_counter(out, "ns_per_MiB", (w - wo) / mib);
  bench_counter(out, "read_ns_per_MiB", (double)rd[AR_ROUNDS / 2] / mib);
  (void)c;
}

#define AR_CASE(id, idx, what)                                                                   \
  BENCH_CASE(id, .workload = #id, .impl = "tp", .group = "gc",                                  \
             .unit = "collection with " what " registered as roots", .ops = AR_ROUNDS,          \
             .iterations = 3, .param = idx, .setup = ar_setup, .run = ar_run,                   \
             .teardown = ar_teardown)
AR_CASE(gc_arena_roots_1x64k, 0, "1 arena of 64 KiB")
AR_CASE(gc_arena_roots_1x4m, 1, "1 arena of 4 MiB")
AR_CASE(gc_arena_roots_16x1m, 2, "16 arenas of 1 MiB")
AR_CASE(gc_arena_roots_16x4m, 3, "16 arenas of 4 MiB")
AR_CASE(gc_arena_roots_256x64k, 4, "256 arenas of 64 KiB")
AR_CASE(gc_arena_roots_256x256k, 5, "256 arenas of 256 KiB")
AR_CASE(gc_arena_roots_16x1m_c, 6, "16 concurrent arenas of 1 MiB")

/* tp_heap_read_stats on a heap after one collection. */
static void *rs_setup(const bench_case *c) {
  (void)c;
  tp_heap_config hc = {.trigger_percent = 0};
  tp_heap *h = tp_heap_create(&hc);
  if (!h) return NULL;
  for (int i = 0; i < 1000; i++) tp_heap_alloc(h, &tp_b_gnode_type);
  tp_heap_collect(h);
  return h;
}

static void rs_run(const bench_case *c, void *state, bench_out *out) {
  BENCH_NEED_STATE(state, out);
  tp_heap *h = state;
  tp_heap_stats st;
  uint64_t sum = 0, t0 = bench_now_ns();
  for (uint64_t i = 0; i < c->ops; i++) {
    tp_heap_read_stats(h, &st);
    sum += st.num_gc;
    __asm__ volatile("" : : "r"(&st) : "memory");
  }
  uint64_t t1 = bench_now_ns();
  if (sum != c->ops) bench_fail(out, "num_gc changed");
  out->ns = (double)(t1 - t0);
  out->ops = (double)c->ops;
}

static void rs_teardown(const bench_case *c, void *state) {
  (void)c;
  if (state) tp_heap_destroy(state);
}

BENCH_CASE(gc_read_stats, .workload = "gc_read_stats", .impl = "tp", .group = "gc",
           .unit = "tp_heap_read_stats call", .ops = 1000000, .setup = rs_setup,
           .run = rs_run, .teardown = rs_teardown)

#endif /* TIDEPOOL_GC_H */

#endif /* BENCH_HAVE_GC */
