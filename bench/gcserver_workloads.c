/*
 * bench/gcserver_workloads.c — issue 12's collector benchmarks, group
 * "gcserver": tp_heap and Boehm here (written once against bench_gc_ops),
 * Go in bench/go/main.go (the same workloads, line for line, in the same
 * order; keep the two in step). The driver prints them side by side.
 *
 *   gcserver_256m / gcserver_1g
 *         the server-like workload of ../shared/notes/gc-facts.md: a
 *         root-held pointer table of N entries, each entry (56 B) holding a
 *         3-node tree (24 B nodes); 2 mutator threads each replace a random
 *         entry with a fresh entry + tree per operation, as fast as they
 *         can, for a fixed time (256 MiB of objects, N = 2^21: 10 s, 2 s
 *         with --quick; 1 GiB, N = 2^23: 30 s, full run only). Pacing at
 *         100 % (tp trigger 100 %, Boehm's defaults with 2 markers, Go
 *         GOGC=100). ns per operation, both threads together (Mops/s is
 *         the throughput). Counters:
 *           gcs                collections during the timed part
 *           stw_p50/p99/max_ms world-stopped pauses (see below)
 *           stw_total_ms, pauses_seen
 *           stall_max_ms       the longest gap between consecutive clock
 *                              reads of one mutator (see below)
 *           stalls             gaps over 100 us, both mutators
 *           mmu_PPPPms         minimum mutator utilization over windows of
 *                              PPPP ms (1 ms .. 1 s), the worst mutator
 *           util               1 - (sum of the gaps) / time, worst mutator
 *           rss_peak_MiB       getrusage's maxrss (setup included)
 *           pause_cdf_PPPP_ms  the pause distribution (plots)
 *         After the timed part every entry is checked (key and tree): a
 *         collector that freed a live object fails the case.
 *
 *   Stalls, identically for all three: each mutator reads CLOCK_MONOTONIC
 *   every 16 operations and records every gap over 100 us with its start
 *   time. MMU(w) is computed from those gaps: the least fraction of any
 *   window of w within the run in which the mutator was not in a gap.
 *   A gap includes the 16 operations' own time (a few us): negligible
 *   against 100 us.
 *
 *   Pauses: tp_heap — tp_heap_read_stats polled by mutator 0 after every
 *   16 operations: a pause is what pause_total_ns grew by since the last
 *   poll (each stop, also the several stops of one concurrent
 *   collection; the polling mutator stands still in each, so two stops
 *   fall between two polls only if it did fewer than 16 operations
 *   between them); Boehm — every stop, exact, from
 *   GC_set_on_collection_event (PRE_STOP_WORLD .. POST_START_WORLD); Go —
 *   runtime/metrics' /gc/pauses:seconds (each stop, in buckets of 1/16
 *   of a power of two; the upper bound of the bucket is reported, at most
 *   6.25 % above the pause).
 *
 *   gcserver_tree_m1 / gcserver_tree_m2
 *         a complete binary tree of 2^25 - 1 nodes (1 GiB of 32-byte
 *         nodes; --quick 2^23 - 1, 256 MiB), an untimed warm-up
 *         collection, then one full collection timed, with 1 and 2 marker
 *         threads: Boehm GC_set_markers_count, Go runtime.GC() under
 *         GOMAXPROCS 1 and 2, tp_heap_config.markers 1 and 2.
 *         ns per collection; counter secs, markers.
 *
 *   gcserver_write
 *         10 M pointer stores into a heap array of 4096 slots (alternately
 *         two rooted nodes) while no collection runs: tp through
 *         tp_heap_write (the barrier), Boehm a plain store, Go its own
 *         store (with the compiler's write-barrier check); ns per store.
 *
 *   gcserver_gcbench
 *         GCBench (Ellis, Kovac, Boehm): a stretch tree of depth 18
 *         dropped, a long-lived tree of depth 16 and an array of 500 000
 *         doubles kept, then top-down and bottom-up trees of depth 4, 6,
 *         .. 16 (2 * |stretch tree| nodes per depth and direction); ns for
 *         the whole run; counters gcs, stw_max_ms, stw_total_ms. Pauses as
 *         above (tp polled every 256 node allocations).
 */
#include "bench/alloc.h"
#include "bench/gc_pauses.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#if BENCH_HAVE_GC

static const bench_gc_ops *const S = &bench_gc_impl;

#define SRV_THREADS 2
#define SRV_BATCH 16                  /* operations between clock reads */
#define SRV_GAP_NS 100000u            /* gaps recorded: over 100 us */
#define SRV_GAP_MAX (1u << 18)        /* per mutator */

/* The roots (tp_heap: registered; Boehm: the data segment). 0: the table;
 * 1, 2: GCBench's long-lived tree and array. */
#define SRV_NROOTS 4
static void *srv_roots[SRV_NROOTS];

static void srv_store(void *obj, void **field, void *value) {
  if (S->write) S->write(obj, field, value);
  else *field = value;
}

static double rss_peak_mib(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

/* ---- pauses: bench/gc_pauses.h ---------------------------------------------------- */

static void pauses_report(const bench_pauses *p, uint64_t gcs, uint64_t total_ns, bench_out *out) {
  bench_counter(out, "gcs", (double)gcs);
  bench_counter(out, "pauses_seen", (double)p->n);
  bench_sorted ms = bench_pauses_ms(p);
  bench_counter(out, "stw_p50_ms", bench_sorted_quantile_fn(0.50, &ms));
  bench_counter(out, "stw_p99_ms", bench_sorted_quantile_fn(0.99, &ms));
  bench_counter(out, "stw_max_ms", (double)bench_pauses_max_ns(p) / 1e6);
  bench_counter(out, "stw_total_ms", (double)total_ns / 1e6);
}

/* ---- stalls and MMU --------------------------------------------------------------- */

typedef struct srv_gaps {
  uint64_t t0, t1; /* the mutator's span */
  size_t n, dropped;
  uint64_t *start, *dur; /* ascending, disjoint */
} srv_gaps;

/* Pause time in [t0, x) of g, with pre[k] = sum of the first k durations. */
static uint64_t paused_before(const srv_gaps *g, const uint64_t *pre, uint64_t x) {
  size_t lo = 0, hi = g->n; /* k = gaps starting before x */
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (g->start[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  if (lo == 0) return 0;
  uint64_t s = pre[lo], end = g->start[lo - 1] + g->dur[lo - 1];
  return end > x ? s - (end - x) : s;
}

/* MMU(w) of one mutator: the worst window starts where a gap starts or
 * ends where one ends (between those, utilization is monotone). */
static double mmu(const srv_gaps *g, const uint64_t *pre, uint64_t w) {
  uint64_t span = g->t1 - g->t0;
  if (w >= span) return 1.0 - (double)pre[g->n] / (double)span;
  double worst = 1.0;
  for (size_t i = 0; i < 2 * g->n; i++) {
    uint64_t x = i < g->n ? g->start[i] : g->start[i - g->n] + g->dur[i - g->n];
    if (i >= g->n) x = x > g->t0 + w ? x - w : g->t0;
    if (x + w > g->t1) x = g->t1 - w;
    if (x < g->t0) x = g->t0;
    uint64_t p = paused_before(g, pre, x + w) - paused_before(g, pre, x);
    double u = 1.0 - (double)p / (double)w;
    if (u < worst) worst = u;
  }
  return worst < 0 ? 0 : worst;
}

static const unsigned srv_mmu_ms[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
#define SRV_MMU_POINTS (sizeof srv_mmu_ms / sizeof srv_mmu_ms[0])

static void gaps_report(srv_gaps *g, int n, bench_out *out) {
  double worst[SRV_MMU_POINTS], util = 1;
  uint64_t longest = 0, stalls = 0, dropped = 0;
  for (unsigned k = 0; k < SRV_MMU_POINTS; k++) worst[k] = 1;
  for (int t = 0; t < n; t++) {
    uint64_t *pre = malloc((g[t].n + 1) * sizeof *pre);
    if (!pre) return;
    pre[0] = 0;
    for (size_t i = 0; i < g[t].n; i++) {
      pre[i + 1] = pre[i] + g[t].dur[i];
      if (g[t].dur[i] > longest) longest = g[t].dur[i];
    }
    stalls += g[t].n;
    dropped += g[t].dropped;
    double u = 1.0 - (double)pre[g[t].n] / (double)(g[t].t1 - g[t].t0);
    if (u < util) util = u;
    for (unsigned k = 0; k < SRV_MMU_POINTS; k++) {
      double m = mmu(&g[t], pre, (uint64_t)srv_mmu_ms[k] * 1000000u);
      if (m < worst[k]) worst[k] = m;
    }
    free(pre);
  }
  bench_counter(out, "stall_max_ms", (double)longest / 1e6);
  bench_counter(out, "stalls", (double)stalls);
  if (dropped) bench_counter(out, "stalls_dropped", (double)dropped);
  bench_counter(out, "util", util);
  for (unsigned k = 0; k < SRV_MMU_POINTS; k++) {
    char name[BENCH_COUNTER_NAME];
    snprintf(name, sizeof name, "mmu_%04ums", srv_mmu_ms[k]);
    bench_counter(out, name, worst[k]);
  }
}

/* ---- the server workload ------------------------------------------------------------ */

/* Every case's state. */
typedef struct srv_state {
  size_t entries;  /* server: table size */
  uint64_t dur_ns; /* server: duration */
  int depth;       /* tree */
  long nodes;
} srv_state;

typedef struct srv_mutator {
  pthread_t tid;
  int index;
  size_t entries;
  uint64_t seed, end_ns, ops;
  int failed;
  volatile unsigned *ready, *go;
  srv_gaps gaps;
  bench_pauses *pauses; /* mutator 0 polls */
} srv_mutator;

/* One operation's objects: a fresh entry for slot i with its tree. The
 * stores into the fresh objects need no barrier (not reachable yet); the
 * one into the table goes through it. */
static inline int srv_replace(void **table, size_t i) {
  bench_gentry *e = S->entry();
  bench_gnode *a = S->node(), *b = S->node(), *c = S->node();
  if (BENCH_UNLIKELY(!e || !a || !b || !c)) return -1;
  b->i = (int)i;
  c->i = (int)i + 1;
  a->l = b;
  a->r = c;
  a->i = (int)i;
  e->tree = a;
  e->key = i;
  srv_store(table, &table[i], e);
  return 0;
}

static void *srv_mutator_main(void *arg) {
  srv_mutator *m = arg;
  if (S->thread_start) S->thread_start();
  void **table = srv_roots[0];
  uint64_t seed = m->seed, ops = 0;
  size_t n = m->entries;
  /* Attached, this thread waits for the start as a blocking section: a
   * collection still running from the setup stops the world meanwhile,
   * and the other mutator's attach waits for that (a spinning attached
   * thread would never reach a safepoint: a deadlock). */
  if (S->blocking_enter) S->blocking_enter();
  __atomic_fetch_add(m->ready, 1, __ATOMIC_RELEASE);
  unsigned spins = 0;
  while (!__atomic_load_n(m->go, __ATOMIC_ACQUIRE)) bench_spin_wait(&spins);
  if (S->blocking_leave) S->blocking_leave();
  uint64_t last = bench_now_ns(), end = m->end_ns;
  m->gaps.t0 = last;
  for (;;) {
    for (int k = 0; k < SRV_BATCH; k++) {
      size_t i = (size_t)(((bench_rand(&seed) >> 32) * (uint64_t)n) >> 32);
      if (BENCH_UNLIKELY(srv_replace(table, i) != 0)) {
        m->failed = 1;
        goto out;
      }
    }
    ops += SRV_BATCH;
    uint64_t now = bench_now_ns();
    if (BENCH_UNLIKELY(now - last > SRV_GAP_NS)) {
      if (m->gaps.n < SRV_GAP_MAX) {
        m->gaps.start[m->gaps.n] = last;
        m->gaps.dur[m->gaps.n++] = now - last;
      } else {
        m->gaps.dropped++;
      }
    }
    last = now;
    if (m->pauses) bench_pauses_poll(m->pauses, S);
    if (now >= end) break;
  }
out:
  m->gaps.t1 = last;
  m->ops = ops;
  if (S->thread_stop) S->thread_stop();
  return NULL;
}

static int srv_supported(void) { return S->entry && S->table && S->leaf_doubles; }

static void *srv_setup(const bench_case *c) {
  srv_state *s = bench_map(sizeof *s);
  if (!s || S->open(srv_roots, SRV_NROOTS, 1) != 0) return NULL;
  s->entries = (size_t)1 << c->param;
  s->dur_ns = (bench_quick() ? 2 : c->param >= 23 ? 30 : 10) * 1000000000ull;
  void **table = S->table(s->entries);
  if (!table) return NULL;
  srv_roots[0] = table;
  for (size_t i = 0; i < s->entries; i++)
    if (srv_replace(table, i) != 0) return NULL;
  return s;
}

static void srv_teardown(const bench_case *c, void *state) {
  (void)c;
  for (int i = 0; i < SRV_NROOTS; i++) srv_roots[i] = NULL;
  S->close();
  if (state) bench_unmap(state, sizeof(srv_state));
}

static bench_pauses srv_plog; /* one case per process */

static void srv_run(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  BENCH_NEED_STATE(state, out);
  srv_state *s = state;
  srv_mutator m[SRV_THREADS];
  volatile unsigned ready = 0, go = 0;
  memset(m, 0, sizeof m);
  bench_pauses_start(&srv_plog, S);
  uint64_t t0 = bench_now_ns() + 50000000u; /* the threads start within 50 ms */
  for (int t = 0; t < SRV_THREADS; t++) {
    m[t].index = t;
    m[t].entries = s->entries;
    m[t].seed = 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1);
    m[t].ready = &ready;
    m[t].go = &go;
    m[t].pauses = t == 0 ? &srv_plog : NULL;
    m[t].gaps.start = bench_map(SRV_GAP_MAX * sizeof(uint64_t));
    m[t].gaps.dur = bench_map(SRV_GAP_MAX * sizeof(uint64_t));
    if (!m[t].gaps.start || !m[t].gaps.dur) {
      bench_fail(out, "out of memory");
      return;
    }
  }
  /* The opening thread holds no heap pointers while it waits: collections
   * proceed without it. */
  if (S->blocking_enter) S->blocking_enter();
  int started = 0;
  for (; started < SRV_THREADS; started++) {
    m[started].end_ns = t0 + s->dur_ns; /* reset below, once all are up */
    if (pthread_create(&m[started].tid, NULL, srv_mutator_main, &m[started]) != 0) break;
  }
  unsigned spins = 0;
  while (__atomic_load_n(&ready, __ATOMIC_ACQUIRE) < (unsigned)started) bench_spin_wait(&spins);
  if (S->run_start) S->run_start();
  t0 = bench_now_ns();
  for (int t = 0; t < started; t++) m[t].end_ns = t0 + s->dur_ns;
  __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
  for (int t = 0; t < started; t++) pthread_join(m[t].tid, NULL);
  uint64_t t1 = bench_now_ns();
  if (S->blocking_leave) S->blocking_leave();
  uint64_t gcs, total;
  bench_pauses_end(&srv_plog, S, &gcs, &total);
  if (started < SRV_THREADS) {
    bench_fail(out, "pthread_create failed");
    return;
  }
  uint64_t ops = 0;
  for (int t = 0; t < SRV_THREADS; t++) {
    if (m[t].failed) {
      bench_fail(out, "allocation returned NULL");
      return;
    }
    ops += m[t].ops;
  }
  /* Every entry must still be whole. A collection the run started may
   * still want the world stopped: a blocking section every 64 Ki entries
   * is this thread's safepoint (without one the stop waited for the whole
   * loop, 0.3 s at 1 GiB). */
  void **table = srv_roots[0];
  for (size_t i = 0; i < s->entries; i++) {
    if ((i & 0xffff) == 0xffff && S->blocking_enter) {
      S->blocking_enter();
      S->blocking_leave();
    }
    bench_gentry *e = table[i];
    if (!e || e->key != i || !e->tree || e->tree->i != (int)i || !e->tree->l || !e->tree->r ||
        e->tree->l->i != (int)i || e->tree->r->i != (int)i + 1) {
      bench_fail(out, "entry %zu was damaged: a live object was reclaimed", i);
      return;
    }
  }
  out->ns = (double)(t1 - t0);
  out->ops = (double)ops;
  pauses_report(&srv_plog, gcs, total, out);
  gaps_report((srv_gaps[SRV_THREADS]){m[0].gaps, m[1].gaps}, SRV_THREADS, out);
  bench_counter(out, "secs", (double)(t1 - t0) / 1e9);
  bench_counter(out, "rss_peak_MiB", rss_peak_mib());
  bench_counter(out, "heap_MiB", S->heap_mib());
  if (S->describe_run) S->describe_run(out); /* tp: mark time, assists, hard-limit waits */
  bench_sorted plog_ms = bench_pauses_ms(&srv_plog);
  bench_counter_cdf(out, "pause_cdf", "_ms", bench_sorted_quantile_fn, &plog_ms);
  for (int t = 0; t < SRV_THREADS; t++) {
    bench_unmap(m[t].gaps.start, SRV_GAP_MAX * sizeof(uint64_t));
    bench_unmap(m[t].gaps.dur, SRV_GAP_MAX * sizeof(uint64_t));
  }
}

/* ---- the 1 GiB tree, 1 and 2 markers ---------------------------------------------- */

static void *tree_setup(const bench_case *c) {
  srv_state *s = bench_map(sizeof *s);
  if (!s) return NULL;
  if (S->markers && S->markers((unsigned)c->param) != 0) return NULL;
  if (S->open(srv_roots, SRV_NROOTS, 0) != 0) return NULL;
  s->depth = bench_quick() ? 22 : 24;
  s->nodes = ((long)2 << s->depth) - 1;
  srv_roots[0] = bench_gc_make_tree(s->depth);
  if (!srv_roots[0]) return NULL;
  S->collect(); /* warm-up (untimed) */
  return s;
}

static void tree_run(const bench_case *c, void *state, bench_out *out) {
  BENCH_NEED_STATE(state, out);
  srv_state *s = state;
  uint64_t t0 = bench_now_ns();
  S->collect();
  uint64_t t1 = bench_now_ns();
  if (bench_gc_count_tree(srv_roots[0]) != s->nodes) {
    bench_fail(out, "the tree lost nodes");
    return;
  }
  out->ns = (double)(t1 - t0);
  out->ops = 1;
  bench_counter(out, "secs", (double)(t1 - t0) / 1e9);
  bench_counter(out, "tree_MiB", (double)s->nodes * 32.0 / (1024.0 * 1024.0));
  bench_counter(out, "markers_asked", (double)c->param);
  if (S->describe_run) S->describe_run(out);
}

/* ---- GCBench ------------------------------------------------------------------------- */

#define GCB_STRETCH 18
#define GCB_LONG_LIVED 16
#define GCB_ARRAY 500000
#define GCB_MIN_DEPTH 4
#define GCB_MAX_DEPTH 16

static bench_pauses gcb_plog;
static int gcb_oom;
static unsigned gcb_tick;

/* A node; every 256th allocation also polls the pauses (collections can
 * come a few MiB apart here, several within one tree). */
static inline bench_gnode *gcb_node(void) {
  if (BENCH_UNLIKELY((++gcb_tick & 255) == 0)) bench_pauses_poll(&gcb_plog, S);
  return S->node();
}

static long gcb_tree_size(int depth) { return (1L << (depth + 1)) - 1; }

/* Top-down: gives node two children and recurses (stores into a node that
 * may be reachable: through the barrier). */
static void gcb_populate(int depth, bench_gnode *node) {
  if (depth <= 0) return;
  depth--;
  bench_gnode *l = gcb_node(), *r = gcb_node();
  if (!l || !r) {
    gcb_oom = 1;
    return;
  }
  srv_store(node, (void **)&node->l, l);
  srv_store(node, (void **)&node->r, r);
  gcb_populate(depth, node->l);
  gcb_populate(depth, node->r);
}

/* Bottom-up. */
static bench_gnode *gcb_make_tree(int depth) {
  if (depth <= 0) return gcb_node();
  bench_gnode *l = gcb_make_tree(depth - 1), *r = gcb_make_tree(depth - 1);
  bench_gnode *n = gcb_node();
  if (!l || !r || !n) {
    gcb_oom = 1;
    return NULL;
  }
  n->l = l;
  n->r = r;
  return n;
}

static void gcb_time_construction(int depth) {
  long iters = 2 * gcb_tree_size(GCB_STRETCH) / gcb_tree_size(depth);
  for (long i = 0; i < iters && !gcb_oom; i++) {
    bench_gnode *t = gcb_node();
    if (!t) {
      gcb_oom = 1;
      return;
    }
    gcb_populate(depth, t);
  }
  for (long i = 0; i < iters && !gcb_oom; i++) bench_keep((uint64_t)(uintptr_t)gcb_make_tree(depth));
}

static void *gcb_setup(const bench_case *c) {
  (void)c;
  srv_state *s = bench_map(sizeof *s);
  if (!s || S->open(srv_roots, SRV_NROOTS, 1) != 0) return NULL;
  return s;
}

static void gcb_run(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  BENCH_NEED_STATE(state, out);
  gcb_oom = 0;
  bench_pauses_start(&gcb_plog, S);
  uint64_t t0 = bench_now_ns();
  bench_keep((uint64_t)(uintptr_t)gcb_make_tree(GCB_STRETCH)); /* the stretch tree, dropped */
  bench_gnode *long_lived = gcb_node();
  srv_roots[1] = long_lived;
  if (long_lived) gcb_populate(GCB_LONG_LIVED, long_lived);
  double *array = S->leaf_doubles(GCB_ARRAY);
  srv_roots[2] = array;
  if (!long_lived || !array) gcb_oom = 1;
  for (int i = 1; !gcb_oom && i < GCB_ARRAY / 2; i++) array[i] = 1.0 / i;
  for (int d = GCB_MIN_DEPTH; d <= GCB_MAX_DEPTH && !gcb_oom; d += 2) gcb_time_construction(d);
  uint64_t t1 = bench_now_ns();
  bench_pauses_poll(&gcb_plog, S);
  uint64_t gcs, total;
  bench_pauses_end(&gcb_plog, S, &gcs, &total);
  if (gcb_oom) {
    bench_fail(out, "allocation returned NULL");
    return;
  }
  if (bench_gc_count_tree(long_lived) != gcb_tree_size(GCB_LONG_LIVED) || array[1000] != 1.0 / 1000) {
    bench_fail(out, "the long-lived tree or array was damaged");
    return;
  }
  srv_roots[1] = srv_roots[2] = NULL;
  out->ns = (double)(t1 - t0);
  out->ops = 1;
  pauses_report(&gcb_plog, gcs, total, out);
  bench_counter(out, "rss_peak_MiB", rss_peak_mib());
}

/* ---- the write barrier while no mark runs ----------------------------------------- */

#define WB_SLOTS 4096 /* 32 KiB of pointer slots: the stores stay in L1 */

static void *wb_setup(const bench_case *c) {
  (void)c;
  srv_state *s = bench_map(sizeof *s);
  if (!s || S->open(srv_roots, SRV_NROOTS, 0) != 0) return NULL; /* no collection */
  srv_roots[0] = S->table(WB_SLOTS);
  srv_roots[1] = S->node();
  srv_roots[2] = S->node();
  return srv_roots[0] && srv_roots[1] && srv_roots[2] ? s : NULL;
}

static void wb_run(const bench_case *c, void *state, bench_out *out) {
  BENCH_NEED_STATE(state, out);
  void **t = srv_roots[0], *v[2] = {srv_roots[1], srv_roots[2]};
  uint64_t n = c->ops, t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++) srv_store(t, &t[i & (WB_SLOTS - 1)], v[i & 1]);
  uint64_t t1 = bench_now_ns();
  if (t[0] != v[0] || t[WB_SLOTS - 1] != v[1]) {
    bench_fail(out, "a store was lost");
    return;
  }
  out->ns = (double)(t1 - t0);
  out->ops = (double)n;
}

/* ---- registration --------------------------------------------------------------------- */

/* Registered at load time; the 1 GiB server case only in the full run
 * (the driver sets TP_BENCH_QUICK before it lists the cases), the 2-marker
 * tree only for collectors with a marker count. */
__attribute__((constructor)) static void gcserver_register(void) {
  if (!srv_supported()) return;
  int quick = bench_quick();
  bench_register(&(const bench_case){
      .workload = "gcserver_256m", .impl = S->name, .group = "gcserver",
      .unit = quick ? "op (entry + 3-node tree replaced; 256 MiB live, 2 mutators, 2 s)"
                    : "op (entry + 3-node tree replaced; 256 MiB live, 2 mutators, 10 s)",
      .throughput = 1, .ops = 1, .iterations = 1, .param = 21, .setup = srv_setup,
      .run = srv_run, .teardown = srv_teardown});
  if (!quick)
    bench_register(&(const bench_case){
        .workload = "gcserver_1g", .impl = S->name, .group = "gcserver",
        .unit = "op (entry + 3-node tree replaced; 1 GiB live, 2 mutators, 30 s)",
        .throughput = 1, .ops = 1, .iterations = 1, .param = 23, .setup = srv_setup,
        .run = srv_run, .teardown = srv_teardown});
  const char *tree_unit[2][2] = {
      {"full collection, 1 GiB binary tree, 1 marker", "full collection, 1 GiB binary tree, 2 markers"},
      {"full collection, 256 MiB binary tree, 1 marker",
       "full collection, 256 MiB binary tree, 2 markers"}};
  bench_register(&(const bench_case){
      .workload = "gcserver_tree_m1", .impl = S->name, .group = "gcserver",
      .unit = tree_unit[quick][0], .ops = 1, .iterations = 1, .param = 1, .setup = tree_setup,
      .run = tree_run, .teardown = srv_teardown});
  if (S->markers)
    bench_register(&(const bench_case){
        .workload = "gcserver_tree_m2", .impl = S->name, .group = "gcserver",
        .unit = tree_unit[quick][1], .ops = 1, .iterations = 1, .param = 2, .setup = tree_setup,
        .run = tree_run, .teardown = srv_teardown});
  bench_register(&(const bench_case){
      .workload = "gcserver_write", .impl = S->name, .group = "gcserver",
      .unit = "pointer store into a heap object, no mark running (tp: tp_heap_write)",
      .throughput = 1, .ops = 10000000, .setup = wb_setup, .run = wb_run,
      .teardown = srv_teardown});
  bench_register(&(const bench_case){
      .workload = "gcserver_gcbench", .impl = S->name, .group = "gcserver",
      .unit = "GCBench run (stretch 18, long-lived 16, 500 k doubles)", .ops = 1, .iterations = 1,
      .setup = gcb_setup, .run = gcb_run, .teardown = srv_teardown});
}

#endif /* BENCH_HAVE_GC */
