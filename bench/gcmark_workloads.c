/*
 * bench/gcmark_workloads.c — what a concurrent mark of tp_heap costs its
 * marker thread while the mutators do different things (issue 12: the
 * concurrent mark of the gcserver heap takes several times the CPU of the
 * same mark with the mutators idle). tidepool only (tp_heap_read_stats'
 * mark_bg_cpu_ns), group "gc".
 *
 *   gc_mark_cpu_<mode>
 *         the gcserver_256m heap (a root-held table of 2^21 pointers to
 *         56-byte entries, each holding a 3-node tree of 24-byte nodes:
 *         336 MiB live; --quick: 2^19, 84 MiB; the table shuffled, as
 *         gcserver's is once running), one marker
 *         (tp_heap_config.markers = 1), no automatic collections. Two
 *         mutator threads run `mode` while the main thread asks for 3
 *         collections (tp_heap_collect, each a full concurrent cycle)
 *         and reads the stats around each; ns per op is the marker
 *         thread's CPU time per cycle (mark_bg_cpu_ns), so lower is
 *         better and the modes compare as ratios within one run:
 *           idle     the mutators wait (a blocking section)
 *           read     each op reads a random entry and its tree's root
 *           spin     each op is 100 rounds of xorshift (no memory)
 *           alloc    each op allocates an entry and its tree, dropped
 *           replace  each op replaces a random entry with a new entry and
 *                    tree through tp_heap_write (gcserver's operation)
 *           swap     each op swaps the entries of two random slots through
 *                    two tp_heap_writes (no allocation; the live set stays)
 *         Counters: mark_wall_ms (per cycle, mark_ns), mutator_Mops (ops
 *         of both mutators per second of the collections), live_MiB,
 *         pause_max_ms (the longest stop since the heap was created).
 *
 * The measured figures, and what they ruled out, are in docs/gc.md
 * ("Where the concurrent mark's CPU goes"), in one place.
 */
#include "bench/alloc.h"

#if BENCH_HAVE_GC && BENCH_HAVE_EPOCH

#include <pthread.h>
#include <time.h>

enum gm_mode { GM_IDLE, GM_READ, GM_SPIN, GM_ALLOC, GM_REPLACE, GM_SWAP, GM_MODES };
static const char *const gm_names[GM_MODES] = {"idle", "read", "spin", "alloc", "replace", "swap"};

#define GM_CYCLES 3

typedef struct gm_node {
  struct gm_node *l, *r;
  uint64_t v;
} gm_node;
typedef struct gm_entry {
  gm_node *tree;
  uint64_t key, pad[5];
} gm_entry;
static const size_t gm_node_offs[] = {offsetof(gm_node, l), offsetof(gm_node, r)};
static const tp_type gm_node_type = {"gm_node", sizeof(gm_node), NULL, gm_node_offs, 2, NULL, 0};
static const size_t gm_entry_offs[] = {offsetof(gm_entry, tree)};
static const tp_type gm_entry_type = {"gm_entry", sizeof(gm_entry), NULL, gm_entry_offs, 1,
                                      NULL, 0};
static const size_t gm_ptr_offs[] = {0};
static const tp_type gm_ptr_type = {"gm_ptr", sizeof(void *), NULL, gm_ptr_offs, 1, NULL, 0};

typedef struct gm_state {
  tp_heap *h;
  void *root; /* the table: a registered root */
  size_t n;
  enum gm_mode mode;
  int stop;
  uint64_t ops[2]; /* each mutator's, stored (relaxed) every 16 ops */
  pthread_t th[2];
} gm_state;

static gm_entry *gm_make(tp_heap *h, uint64_t key) {
  gm_node *a = tp_heap_alloc(h, &gm_node_type), *b = tp_heap_alloc(h, &gm_node_type),
          *c = tp_heap_alloc(h, &gm_node_type);
  gm_entry *e = tp_heap_alloc(h, &gm_entry_type);
  if (!a || !b || !c || !e) return NULL;
  a->l = b;
  a->r = c;
  e->tree = a;
  e->key = key;
  return e;
}

typedef struct gm_arg {
  gm_state *s;
  int id;
} gm_arg;
static gm_arg gm_args[2];

static void *gm_mutator(void *arg) {
  gm_arg *a = arg;
  gm_state *s = a->s;
  tp_heap *h = s->h;
  uint64_t seed = 0x9e3779b97f4a7c15u * (uint64_t)(a->id + 1), ops = 0, sink = 0;
  tp_heap_attach(h);
  void **t = s->root;
  if (s->mode == GM_IDLE) {
    tp_heap_blocking_enter(h);
    while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
      struct timespec d = {0, 1000000};
      nanosleep(&d, NULL);
    }
    tp_heap_blocking_leave(h);
  }
  while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
    for (int k = 0; k < 16; k++, ops++) {
      size_t i = bench_rand(&seed) % s->n;
      switch (s->mode) {
        case GM_READ: {
          gm_entry *e = __atomic_load_n((gm_entry **)&t[i], __ATOMIC_RELAXED);
          sink += e->key + (uintptr_t)e->tree->l;
          break;
        }
        case GM_SPIN:
          for (int j = 0; j < 100; j++) sink += bench_rand(&seed);
          break;
        case GM_ALLOC:
          sink += (uintptr_t)gm_make(h, i);
          break;
        case GM_REPLACE: {
          gm_entry *e = gm_make(h, i);
          if (e) tp_heap_write(h, t, &t[i], e);
          break;
        }
        case GM_SWAP: {
          /* Not atomic: two mutators swapping an overlapping slot at once
           * may duplicate one entry and drop another (rare: 2^21 slots). */
          size_t j = bench_rand(&seed) % s->n;
          void *x = __atomic_load_n(&t[i], __ATOMIC_RELAXED);
          void *y = __atomic_load_n(&t[j], __ATOMIC_RELAXED);
          tp_heap_write(h, t, &t[i], y);
          tp_heap_write(h, t, &t[j], x);
          break;
        }
        default:
          break;
      }
    }
    __atomic_store_n(&s->ops[a->id], ops, __ATOMIC_RELAXED);
    tp_heap_safepoint(h);
  }
  if (sink == 42) __atomic_store_n(&s->ops[a->id], ops + 1, __ATOMIC_RELAXED); /* sink kept */
  tp_heap_detach(h);
  return NULL;
}

/* Both mutators' operations so far. */
static uint64_t gm_ops(gm_state *s) {
  return __atomic_load_n(&s->ops[0], __ATOMIC_RELAXED) + __atomic_load_n(&s->ops[1], __ATOMIC_RELAXED);
}

static void *gm_setup(const bench_case *c) {
  gm_state *s = bench_map(sizeof *s);
  if (!s) return NULL;
  s->mode = (enum gm_mode)c->param;
  s->n = bench_quick() ? (size_t)1 << 19 : (size_t)1 << 21;
  tp_heap_config cfg = {.trigger_percent = 0, .markers = 1};
  if (!(s->h = tp_heap_create(&cfg))) return NULL;
  if (tp_heap_attach(s->h) != 0 || tp_root_add(s->h, &s->root) != 0) return NULL;
  void **t = tp_heap_alloc_array(s->h, &gm_ptr_type, s->n);
  if (!t) return NULL;
  s->root = t;
  for (size_t i = 0; i < s->n; i++)
    if (!(t[i] = gm_make(s->h, i))) return NULL;
  /* The table shuffled (Fisher-Yates), as gcserver's is after its first
   * seconds of random replacements: a table in allocation order is
   * scanned in address order, which made the idle mark 1.5x cheaper than
   * any later one (measured: 160-200 against 240-340 ms per cycle). */
  uint64_t seed = 12345;
  for (size_t i = s->n - 1; i > 0; i--) {
    size_t j = bench_rand(&seed) % (i + 1);
    void *x = t[i];
    t[i] = t[j];
    t[j] = x;
  }
  tp_heap_collect(s->h); /* the heap settled: the timed cycles start alike */
  return s;
}

static void gm_run(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  BENCH_NEED_STATE(state, out);
  gm_state *s = state;
  tp_heap *h = s->h;
  __atomic_store_n(&s->stop, 0, __ATOMIC_RELEASE);
  s->ops[0] = s->ops[1] = 0;
  for (int i = 0; i < 2; i++) {
    gm_args[i] = (gm_arg){s, i};
    if (pthread_create(&s->th[i], NULL, gm_mutator, &gm_args[i]) != 0) {
      bench_fail(out, "pthread_create failed");
      return;
    }
  }
  tp_heap_stats a, b;
  tp_heap_read_stats(h, &a);
  uint64_t t0 = bench_now_ns(), ops0 = gm_ops(s);
  for (int k = 0; k < GM_CYCLES; k++) tp_heap_collect(h);
  uint64_t t1 = bench_now_ns(), ops1 = gm_ops(s);
  tp_heap_read_stats(h, &b);
  __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
  tp_heap_blocking_enter(h); /* the joins: collections must not wait for us */
  for (int i = 0; i < 2; i++) pthread_join(s->th[i], NULL);
  tp_heap_blocking_leave(h);
  if (b.num_gc - a.num_gc != GM_CYCLES) {
    bench_fail(out, "%llu collections, not %d", (unsigned long long)(b.num_gc - a.num_gc),
               GM_CYCLES);
    return;
  }
  out->ns = (double)(b.mark_bg_cpu_ns - a.mark_bg_cpu_ns);
  out->ops = GM_CYCLES;
  bench_counter(out, "mark_wall_ms", (double)(b.mark_ns - a.mark_ns) / 1e6 / GM_CYCLES);
  bench_counter(out, "mutator_Mops", (double)(ops1 - ops0) / ((double)(t1 - t0) / 1e3));
  bench_counter(out, "live_MiB", (double)b.heap_live / 1048576.0);
  bench_counter(out, "pause_max_ms", (double)b.pause_max_ns / 1e6); /* since open */
  bench_counter(out, "store_assists", (double)(b.store_assists - a.store_assists) / GM_CYCLES);
  bench_counter(out, "store_assist_ms", (double)(b.store_assist_ns - a.store_assist_ns) / 1e6 / GM_CYCLES);
  bench_counter(out, "pause2_satb_max", (double)b.mark_term_satb_max); /* since open */
}

static void gm_teardown(const bench_case *c, void *state) {
  (void)c;
  gm_state *s = state;
  if (!s) return;
  if (s->h) {
    s->root = NULL;
    tp_heap_detach(s->h);
    tp_heap_destroy(s->h);
  }
  bench_unmap(s, sizeof *s);
}

__attribute__((constructor)) static void gm_register(void) {
  static char workload[GM_MODES][32], unit[GM_MODES][128];
  for (int m = 0; m < GM_MODES; m++) {
    snprintf(workload[m], sizeof workload[m], "gc_mark_cpu_%s", gm_names[m]);
    snprintf(unit[m], sizeof unit[m],
             "concurrent cycle: marker CPU time (mutators: %s)", gm_names[m]);
    bench_register(&(const bench_case){.workload = workload[m], .impl = "tp", .group = "gc",
                                       .unit = unit[m], .ops = GM_CYCLES, .iterations = 1,
                                       .param = m, .setup = gm_setup, .run = gm_run,
                                       .teardown = gm_teardown});
  }
}

#endif /* BENCH_HAVE_GC && BENCH_HAVE_EPOCH */
