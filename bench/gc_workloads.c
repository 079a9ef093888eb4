/*
 * bench/gc_workloads.c — tracing collectors (issue 7), written once against
 * bench_gc_ops: tidepool's tp_heap against the Boehm-Demers-Weiser
 * collector (libgc, Debian 8.2), on the same object shape. Group "gc".
 *
 * Objects are GCBench nodes (bench_gnode): two pointers and two ints, 24
 * bytes. Both collectors then use 32 bytes per node (tp_heap: an 8-byte
 * header; Boehm: its 1 extra byte for interior pointers rounds 25 up to
 * 32). tp_heap knows the node's pointer offsets (a precise type) and marks
 * on one thread; Boehm scans it conservatively (GC_MALLOC) with its
 * parallel markers (2 on this 2-core VM). See bench/alloc_tidepool.h and
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
 *                  collections in it; counters: gcs, pause_mean_ms,
 *                  pause_max_ms (world stopped, as each collector measures
 *                  it; the max is over the last pause seen after every 64
 *                  trees, and collections are megabytes of allocation
 *                  apart), gc_share, heap_MiB, and the distribution of
 *                  those pauses for the plot: pause_cdf_PPPP_ms
 *                  (quantiles, bench_counter_cdf), pauses_seen
 *   gc_cycles      rings of 100 nodes (each node linked both ways: cyclic
 *                  garbage that reference counting would leak), 20 000
 *                  rings, only the newest one rooted, automatic
 *                  collections; ns per ring; counters heap_max_MiB, gcs,
 *                  gc_share and the pause distribution (pause_cdf_PPPP_ms,
 *                  pauses_seen, polled after every ring); fails if the
 *                  heap grows past 256 MiB (the cycles leaked)
 */
#include "bench/alloc.h"

#include <stdlib.h>

#if BENCH_HAVE_GC

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

/* The pauses a run sees, for the plots' distributions: polled with
 * G->pauses (the last pause, whenever the count moved), so a collection
 * that ends between two polls with another is missed (pauses_seen says how
 * many were seen). */
#define PAUSE_LOG_MAX 4096
typedef struct pause_log {
  uint64_t count, worst_ns;
  size_t n;
  double ms[PAUSE_LOG_MAX];
} pause_log;
static pause_log plog; /* one case per process */

static void pause_log_start(pause_log *l) {
  uint64_t tot, last;
  G->pauses(&l->count, &tot, &last);
  l->worst_ns = 0;
  l->n = 0;
}

static void pause_log_poll(pause_log *l) {
  uint64_t n, tot, last;
  G->pauses(&n, &tot, &last);
  if (n == l->count) return;
  l->count = n;
  if (last > l->worst_ns) l->worst_ns = last;
  if (l->n < PAUSE_LOG_MAX) l->ms[l->n++] = (double)last / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Counters pauses_seen and pause_cdf_PPPP_ms (bench_counter_cdf). */
static void pause_log_report(pause_log *l, bench_out *out) {
  qsort(l->ms, l->n, sizeof l->ms[0], cmp_double);
  bench_sorted sorted = {l->ms, l->n};
  bench_counter(out, "pauses_seen", (double)l->n);
  bench_counter_cdf(out, "pause_cdf", "_ms", bench_sorted_quantile_fn, &sorted);
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
   * After every 64 trees: the last pause, if a collection ended since. */
  pause_log_start(&plog);
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
    pause_log_poll(&plog);
  }
  uint64_t t1 = bench_now_ns();
  G->pauses(&n1, &tot1, &last);
  if (bench_gc_count_tree(gc_roots[0]) != s->nodes) {
    bench_fail(out, "the live tree lost nodes");
    return;
  }
  uint64_t gcs = n1 - n0;
  out->ns = (double)(t1 - t0);
  out->ops = (double)allocs;
  bench_counter(out, "gcs", (double)gcs);
  bench_counter(out, "pause_mean_ms", gcs ? (double)(tot1 - tot0) / (double)gcs / 1e6 : 0);
  bench_counter(out, "pause_max_ms", (double)plog.worst_ns / 1e6);
  bench_counter(out, "gc_share", (double)(tot1 - tot0) / (double)(t1 - t0));
  bench_counter(out, "heap_MiB", G->heap_mib());
  pause_log_report(&plog, out);
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
  pause_log_start(&plog);
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
    pause_log_poll(&plog); /* two loads and a compare while nothing ended */
    if (k % 256 == 0) {
      double m = G->heap_mib();
      if (m > max_mib) max_mib = m;
    }
  }
  uint64_t t1 = bench_now_ns();
  G->pauses(&n1, &tot1, &last);
  out->ns = (double)(t1 - t0);
  out->ops = RINGS;
  bench_counter(out, "heap_max_MiB", max_mib);
  bench_counter(out, "gcs", (double)(n1 - n0));
  bench_counter(out, "gc_share", (double)(tot1 - tot0) / (double)(t1 - t0));
  pause_log_report(&plog, out);
  if (max_mib > 256) bench_fail(out, "heap grew to %.0f MiB: cycles were not collected", max_mib);
}

BENCH_CASE(gc_cycles, .workload = "gc_cycles", .impl = bench_gc_impl.name, .group = "gc",
           .unit = "ring of 100 nodes (cyclic garbage)", .throughput = 1, .ops = RINGS,
           .setup = gc_cycles_setup, .run = gc_cycles_run, .teardown = gc_teardown)

#endif /* BENCH_HAVE_GC */
