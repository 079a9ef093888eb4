/*
 * bench/gc_workloads.c — the tracing collector (issue 7): tidepool's
 * tp_heap against the Boehm-Demers-Weiser collector (libgc, Debian 8.2),
 * on the same object shape in the same run. Group "gc".
 *
 * Objects are GCBench nodes: two pointers and two ints, 24 bytes. Both
 * collectors then use 32 bytes per node (tp_heap: an 8-byte header; Boehm:
 * its 1 extra byte for interior pointers rounds 25 up to 32). tp_heap
 * knows the node's pointer offsets (a precise type); Boehm scans it
 * conservatively (GC_MALLOC). Boehm gets its parallel marker threads
 * (GC_start_mark_threads: 2 markers on this 2-core VM); tp_heap marks on
 * one thread.
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
 *                  then one full collection timed (tp_heap_collect /
 *                  GC_gcollect); ns per collection; counters: secs,
 *                  mark_MBps (1 GiB / time), heap_MiB (one run per process)
 *   gc_pause_256m  a 256 MiB live tree (2^23 - 1 nodes), then 1 s (0.3 s
 *                  with --quick) of steady allocation of short-lived trees
 *                  of 63 nodes with automatic collections (tp: trigger
 *                  100 %; Boehm: its defaults); ns per allocation with the
 *                  collections in it; counters: gcs, pause_mean_ms,
 *                  pause_max_ms (world stopped, measured by each collector
 *                  itself: tp_heap_stats / Boehm's collection events)
 *   gc_cycles      rings of 100 nodes (each node linked both ways: cyclic
 *                  garbage that reference counting would leak), 20 000
 *                  rings, only the newest one rooted, automatic
 *                  collections; ns per ring; counter heap_max_MiB; fails
 *                  if the heap grows past 256 MiB (the cycles leaked)
 */
#include "bench/alloc.h"

#if defined(TIDEPOOL_GC_H) || defined(BENCH_HAVE_BOEHM)

#include <stdio.h>
#include <string.h>

struct gnode {
  struct gnode *l, *r;
  int i, j;
};

/* Roots: a static array (tp_heap: registered; Boehm scans data). */
#define NROOTS 64
static void *gc_roots[NROOTS];

/* ---- the two collectors ---------------------------------------------------- */

#if defined(TIDEPOOL_GC_H)

#define GC_IMPL "tp"
static tp_heap *gc_h;
static const size_t gnode_offs[] = {offsetof(struct gnode, l), offsetof(struct gnode, r)};
static const tp_type gnode_type = {"gnode", sizeof(struct gnode), NULL, gnode_offs, 2, NULL, 0};

/* auto_collect: pacing on (trigger 100 %) or manual only. */
static int gc_open(int auto_collect) {
  tp_heap_config cfg = {.trigger_percent = auto_collect ? 100 : 0};
  gc_h = tp_heap_create(&cfg);
  if (!gc_h) return -1;
  for (int i = 0; i < NROOTS; i++)
    if (tp_root_add(gc_h, &gc_roots[i]) != 0) return -1;
  return 0;
}
static void gc_close(void) {
  tp_heap_destroy(gc_h);
  gc_h = NULL;
}
BENCH_INLINE struct gnode *gc_node(void) { return tp_heap_alloc(gc_h, &gnode_type); }
static void gc_collect(void) { tp_heap_collect(gc_h); }
/* Collection off for a timed allocation loop: the heap is manual-only. */
static void gc_pause_collection(void) {}
static void gc_resume_collection(void) {}
static double gc_heap_mib(void) {
  tp_heap_stats s;
  tp_heap_read_stats(gc_h, &s);
  return (double)s.heap_sys / (1024.0 * 1024.0);
}
/* Collections and world-stopped time so far. */
static void gc_pauses(uint64_t *n, uint64_t *total_ns, uint64_t *max_ns) {
  tp_heap_stats s;
  tp_heap_read_stats(gc_h, &s);
  *n = s.num_gc;
  *total_ns = s.pause_total_ns;
  *max_ns = s.pause_max_ns;
}
static void gc_reset_max(void) {} /* see gc_pause_run: max over the run */
static void gc_describe_run(bench_out *out) {
  tp_heap_stats s;
  tp_heap_read_stats(gc_h, &s);
  bench_counter(out, "mark_ms_total", (double)s.mark_ns / 1e6);
  bench_counter(out, "sweep_ms_total", (double)s.sweep_ns / 1e6);
}

#else /* Boehm */

#define GC_IMPL "boehm"
static uint64_t boehm_n, boehm_total, boehm_max, boehm_t0;

static void boehm_event(GC_EventType e) {
  /* The collection as the mutator sees it: from the start of the
   * collection to its end (the world is stopped in between; sweeping is
   * lazy and happens in later allocations). */
  if (e == GC_EVENT_START) boehm_t0 = bench_now_ns();
  if (e == GC_EVENT_END && boehm_t0) {
    uint64_t d = bench_now_ns() - boehm_t0;
    boehm_n++;
    boehm_total += d;
    if (d > boehm_max) boehm_max = d;
    boehm_t0 = 0;
  }
}

static int gc_open(int auto_collect) {
  GC_INIT();
  GC_start_mark_threads(); /* parallel marking: Boehm at its best here */
  GC_set_on_collection_event(boehm_event);
  if (!auto_collect) GC_disable();
  return 0;
}
static void gc_close(void) {}
BENCH_INLINE struct gnode *gc_node(void) { return GC_MALLOC(sizeof(struct gnode)); }
static void gc_collect(void) {
  GC_enable();
  GC_gcollect();
  GC_disable();
}
static void gc_pause_collection(void) { GC_disable(); }
static void gc_resume_collection(void) { GC_enable(); }
static double gc_heap_mib(void) { return (double)GC_get_heap_size() / (1024.0 * 1024.0); }
static void gc_pauses(uint64_t *n, uint64_t *total_ns, uint64_t *max_ns) {
  *n = boehm_n;
  *total_ns = boehm_total;
  *max_ns = boehm_max;
}
static void gc_reset_max(void) { boehm_max = 0; }
static void gc_describe_run(bench_out *out) {
  bench_counter(out, "markers", (double)GC_get_parallel() + 1);
}

#endif

/* ---- shapes ------------------------------------------------------------------ */

/* A complete binary tree of the given depth (2^(depth+1) - 1 nodes), built
 * top-down like GCBench (so it is laid out in preorder). */
static struct gnode *make_tree(int depth) {
  struct gnode *n = gc_node();
  if (!n) return NULL;
  n->i = depth;
  if (depth > 0) {
    n->l = make_tree(depth - 1);
    n->r = make_tree(depth - 1);
    if (!n->l || !n->r) return NULL;
  }
  return n;
}

static long count_tree(const struct gnode *n) { return n ? 1 + count_tree(n->l) + count_tree(n->r) : 0; }

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
  gc_close();
  if (state) bench_unmap(state, sizeof(gc_state));
}

/* ---- gc_alloc / gc_alloc_cold ----------------------------------------------------- */

static void *gc_alloc_setup(const bench_case *c) {
  gc_state *s = gc_state_new();
  if (!s || gc_open(0) != 0) return NULL;
  if (c->param) {
    /* Warm: one batch allocated and collected before the timed runs. */
    for (uint64_t i = 0; i < c->ops; i++)
      if (!gc_node()) return NULL;
    gc_collect();
  }
  return s;
}

static void gc_alloc_run(const bench_case *c, void *state, bench_out *out) {
  BENCH_NEED_STATE(state, out);
  gc_pause_collection();
  uint64_t n = c->ops, t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    struct gnode *x = gc_node();
    if (BENCH_UNLIKELY(!x)) {
      bench_fail(out, "allocation returned NULL");
      return;
    }
    x->i = (int)i;
  }
  uint64_t t1 = bench_now_ns();
  gc_resume_collection();
  out->ns = (double)(t1 - t0);
  out->ops = (double)n;
  if (c->param) gc_collect(); /* untimed: the next run reuses the memory */
}

BENCH_CASE(gc_alloc, .workload = "gc_alloc", .impl = GC_IMPL, .group = "gc",
           .unit = "allocation (24 B node, collection off, warm)", .throughput = 1,
           .ops = 1000000, .param = 1, .setup = gc_alloc_setup, .run = gc_alloc_run,
           .teardown = gc_teardown)
BENCH_CASE(gc_alloc_cold, .workload = "gc_alloc_cold", .impl = GC_IMPL, .group = "gc",
           .unit = "allocation (fresh heap, page faults)", .throughput = 1, .ops = 4000000,
           .iterations = 1, .param = 0, .setup = gc_alloc_setup, .run = gc_alloc_run,
           .teardown = gc_teardown)

/* ---- gc_tree_1g ----------------------------------------------------------------- */

static void *gc_tree_setup(const bench_case *c) {
  gc_state *s = gc_state_new();
  if (!s || gc_open(0) != 0) return NULL;
  s->depth = (int)c->param;
  gc_roots[0] = make_tree(s->depth);
  if (!gc_roots[0]) return NULL;
  s->nodes = ((long)2 << s->depth) - 1;
  gc_collect(); /* warm-up (untimed) */
  return s;
}

static void gc_tree_run(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  BENCH_NEED_STATE(state, out);
  gc_state *s = state;
  uint64_t t0 = bench_now_ns();
  gc_collect();
  uint64_t t1 = bench_now_ns();
  if (count_tree(gc_roots[0]) != s->nodes) {
    bench_fail(out, "the tree lost nodes");
    return;
  }
  double secs = (double)(t1 - t0) / 1e9, mb = (double)s->nodes * 32.0 / (1024.0 * 1024.0);
  out->ns = (double)(t1 - t0);
  out->ops = 1;
  bench_counter(out, "secs", secs);
  bench_counter(out, "tree_MiB", mb);
  bench_counter(out, "mark_MBps", mb / secs);
  bench_counter(out, "heap_MiB", gc_heap_mib());
  gc_describe_run(out);
}

BENCH_CASE(gc_tree_1g, .workload = "gc_tree_1g", .impl = GC_IMPL, .group = "gc",
           .unit = "full collection, 1 GiB live binary tree", .ops = 1, .iterations = 1,
           .param = 24, .setup = gc_tree_setup, .run = gc_tree_run, .teardown = gc_teardown)

/* ---- gc_pause_256m ----------------------------------------------------------------- */

static void *gc_pause_setup(const bench_case *c) {
  gc_state *s = gc_state_new();
  if (!s || gc_open(1) != 0) return NULL;
  s->depth = (int)c->param;
  gc_roots[0] = make_tree(s->depth);
  if (!gc_roots[0]) return NULL;
  s->nodes = ((long)2 << s->depth) - 1;
  return s;
}

static void gc_pause_run(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  BENCH_NEED_STATE(state, out);
  gc_state *s = state;
  uint64_t n0, tot0, max0, n1, tot1, max1;
  gc_reset_max();
  gc_pauses(&n0, &tot0, &max0);
  uint64_t dur = bench_quick() ? 300000000u : 1000000000u;
  uint64_t t0 = bench_now_ns(), end = t0 + dur, allocs = 0, seed = 7;
  /* Short-lived trees; 1 in 8 stays rooted for a while in one of 63 slots. */
  uint64_t worst = 0;
#if defined(TIDEPOOL_GC_H)
  uint64_t last_n = n0;
#endif
  while (bench_now_ns() < end) {
    for (int k = 0; k < 64; k++) {
      struct gnode *t = make_tree(5);
      if (BENCH_UNLIKELY(!t)) {
        bench_fail(out, "allocation returned NULL");
        return;
      }
      allocs += 63;
      uint64_t r = bench_rand(&seed);
      if ((r & 7) == 0) gc_roots[1 + (r >> 8) % (NROOTS - 1)] = t;
    }
#if defined(TIDEPOOL_GC_H)
    /* Each collection's own pause (stats: last_pause_ns). */
    tp_heap_stats st;
    tp_heap_read_stats(gc_h, &st);
    if (st.num_gc != last_n) {
      last_n = st.num_gc;
      if (st.last_pause_ns > worst) worst = st.last_pause_ns;
    }
#endif
  }
  uint64_t t1 = bench_now_ns();
  gc_pauses(&n1, &tot1, &max1);
#if !defined(TIDEPOOL_GC_H)
  worst = max1;
#endif
  (void)max0;
  if (count_tree(gc_roots[0]) != s->nodes) {
    bench_fail(out, "the live tree lost nodes");
    return;
  }
  uint64_t gcs = n1 - n0;
  out->ns = (double)(t1 - t0);
  out->ops = (double)allocs;
  bench_counter(out, "gcs", (double)gcs);
  bench_counter(out, "pause_mean_ms", gcs ? (double)(tot1 - tot0) / (double)gcs / 1e6 : 0);
  bench_counter(out, "pause_max_ms", (double)worst / 1e6);
  bench_counter(out, "gc_share", (double)(tot1 - tot0) / (double)(t1 - t0));
  bench_counter(out, "heap_MiB", gc_heap_mib());
}

BENCH_CASE(gc_pause_256m, .workload = "gc_pause_256m", .impl = GC_IMPL, .group = "gc",
           .unit = "allocation, 256 MiB live, collections included", .throughput = 1, .ops = 1,
           .iterations = 1, .param = 22, .setup = gc_pause_setup, .run = gc_pause_run,
           .teardown = gc_teardown)

/* ---- gc_cycles -------------------------------------------------------------------- */

#define RING 100
#define RINGS 20000

static void *gc_cycles_setup(const bench_case *c) {
  (void)c;
  gc_state *s = gc_state_new();
  if (!s || gc_open(1) != 0) return NULL;
  return s;
}

static void gc_cycles_run(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  BENCH_NEED_STATE(state, out);
  double max_mib = 0;
  uint64_t n0, tot0, max0, n1, tot1, max1;
  gc_pauses(&n0, &tot0, &max0);
  uint64_t t0 = bench_now_ns();
  for (int k = 0; k < RINGS; k++) {
    struct gnode *first = gc_node(), *prev = first;
    if (BENCH_UNLIKELY(!first)) {
      bench_fail(out, "allocation returned NULL");
      return;
    }
    for (int i = 1; i < RING; i++) {
      struct gnode *x = gc_node();
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
    if (k % 256 == 0) {
      double m = gc_heap_mib();
      if (m > max_mib) max_mib = m;
    }
  }
  uint64_t t1 = bench_now_ns();
  gc_pauses(&n1, &tot1, &max1);
  (void)max0;
  (void)max1;
  out->ns = (double)(t1 - t0);
  out->ops = RINGS;
  bench_counter(out, "heap_max_MiB", max_mib);
  bench_counter(out, "gcs", (double)(n1 - n0));
  bench_counter(out, "gc_share", (double)(tot1 - tot0) / (double)(t1 - t0));
  if (max_mib > 256) bench_fail(out, "heap grew to %.0f MiB: cycles were not collected", max_mib);
}

BENCH_CASE(gc_cycles, .workload = "gc_cycles", .impl = GC_IMPL, .group = "gc",
           .unit = "ring of 100 nodes (cyclic garbage)", .throughput = 1, .ops = RINGS,
           .setup = gc_cycles_setup, .run = gc_cycles_run, .teardown = gc_teardown)

#endif /* tp_heap or Boehm */
