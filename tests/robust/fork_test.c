/*
 * Fork at any point, module by module (pool, plain arena, concurrent arena,
 * epoch, heap, sweeper): worker threads (more than cores) run every kind of
 * operation of the module under test in a loop while the main thread forks
 * again and again, after seeded random pauses. Each child — left with only
 * the forking thread, and with whatever the workers were in the middle of —
 * uses the parent's objects and every module afresh (pools, plain and
 * concurrent arenas, epochs and retires, a heap with a collection, the
 * sweeper), then exits 0. The parent waits for each child with a bound
 * (TT_HANG_MS): a child that hangs on a lock left held across fork is
 * killed and reported, it never hangs the test.
 *
 * Seeded (TP_TEST_SEED) and bounded by a number of forks, not by time.
 */
#include <tidepool/arena.h>
#include <tidepool/epoch.h>
#include <tidepool/gc.h>
#include <tidepool/pool.h>
#include <tidepool/sweeper.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/robust/child.h"
#include "tests/test_util.h"

#if defined(__SANITIZE_THREAD__)
/* TSan cannot start threads in the child of a multi-threaded process (see
 * epoch_fork_test.c): under TSan the child does everything that needs no
 * new thread (no retire, barrier or sweep pass, which may start the
 * reclaimer; no sweeper thread). */
const char *__tsan_default_options(void) { return "die_after_fork=0"; }
#define CHILD_THREADS 0
#else
#define CHILD_THREADS 1
#endif

#if defined(__SANITIZE_ADDRESS__)
/* gcc 12's ASan allocator has no fork handlers (a child whose parent had a
 * thread inside malloc hangs in its first malloc): under ASan the workers
 * pause between operations for each fork. Elsewhere they fork mid-call. */
#define QUIESCE 1
#else
#define QUIESCE 0
#endif

#define NWORKERS 4
#define NFORKS 12

enum module { POOL, ARENA, ARENA_CONC, EPOCH, HEAP, SWEEPER };

static struct {
  enum module mod;
  int stop, pause, paused;
  tp_pool *pool;
  tp_arena *conc; /* the current concurrent arena (epoch-published) */
  tp_heap *heap;
  tt_failures fails;
} g;

/* ---- what the child does ------------------------------------------------- */

static uint64_t retired;
static void count_cb(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  __atomic_fetch_add(&retired, 1, __ATOMIC_RELAXED);
}

struct node {
  struct node *next;
  uint64_t v;
};
static const size_t node_offs[] = {0};
static const tp_type node_type = {.name = "node", .size = sizeof(struct node),
                                  .ptr_offsets = node_offs, .n_ptr_offsets = 1};

static void use_pool(tp_pool *p, int retire) {
  void *v[300];
  for (int i = 0; i < 300; i++) TT_CHECK((v[i] = tp_pool_get(p)) != NULL);
  for (int i = 0; i < 150; i++) tp_pool_put(p, v[i]);
  tp_pool_put_bulk(p, v + 150, 149);
  if (retire) {
    TT_CHECK(tp_pool_retire(p, v[299]) == 0);
    TT_CHECK(tp_epoch_barrier() == 0);
  } else {
    tp_pool_put(p, v[299]);
  }
  TT_CHECK(tp_pool_get_bulk(p, v, 64) == 64);
  tp_pool_put_bulk(p, v, 64);
}

static void use_arena(unsigned flags) {
  tp_arena_config cfg = {.flags = flags};
  tp_arena *a = tp_arena_create(&cfg);
  TT_CHECK(a);
  for (int r = 0; r < 3; r++) {
    for (int i = 0; i < 2000; i++) {
      char *q = tp_arena_alloc(a, (size_t)(i % 300) + 1);
      TT_CHECK(q);
      q[0] = 1;
    }
    TT_CHECK(tp_arena_alloc(a, 200000) != NULL); /* large */
    tp_arena_reset(a);
  }
  tp_arena_destroy(a);
}

static void use_heap(tp_heap *h) {
  static void *root;
  TT_CHECK(tp_heap_attach(h) == 0);
  TT_CHECK(tp_root_add(h, &root) == 0);
  root = NULL;
  for (int i = 0; i < 3000; i++) {
    struct node *n = tp_heap_alloc(h, &node_type);
    TT_CHECK(n);
    n->next = root;
    n->v = (uint64_t)i;
    root = n;
  }
  tp_heap_collect(h);
  uint64_t k = 3000;
  for (struct node *n = root; n; n = n->next) TT_CHECK(n->v == --k);
  TT_CHECK(k == 0);
  root = NULL;
  TT_CHECK(tp_root_remove(h, &root) == 0);
  tp_heap_detach(h);
}

static void child_main(void *arg) {
  (void)arg;
  /* The parent's objects, whatever state the workers left them in. */
  if (g.pool) use_pool(g.pool, CHILD_THREADS);
  if (g.conc) {
    tp_epoch_enter();
    tp_arena *a = __atomic_load_n(&g.conc, __ATOMIC_ACQUIRE);
    for (int i = 0; i < 100; i++) {
      char *q = tp_arena_alloc(a, 48);
      if (!q) {
        TT_CHECK(errno == ENOMEM); /* this arena is full: a fresh one follows */
        break;
      }
      q[0] = 1;
    }
    tp_epoch_leave();
  }
  if (g.heap) use_heap(g.heap);
  /* Every module afresh. */
  tp_pool_config pc = {.name = "child", .obj_size = 96};
  tp_pool *p = tp_pool_create(&pc);
  TT_CHECK(p);
  use_pool(p, CHILD_THREADS);
  tp_pool_destroy(p);
  use_arena(0);
  use_arena(TP_ARENA_CONCURRENT);
  tp_epoch_enter();
  tp_epoch_leave();
  TT_CHECK(tp_epoch_synchronize() == 0);
  if (CHILD_THREADS) {
    static char x[64];
    uint64_t before = __atomic_load_n(&retired, __ATOMIC_RELAXED);
    for (int i = 0; i < 64; i++) TT_CHECK(tp_epoch_retire(&x[i], count_cb, NULL) == 0);
    TT_CHECK(tp_epoch_barrier() == 0);
    /* Ours ran; so did every retire the parent's threads had queued. */
    TT_CHECK(__atomic_load_n(&retired, __ATOMIC_RELAXED) >= before + 64);
  }
  tp_heap *h = tp_heap_create(NULL);
  TT_CHECK(h);
  use_heap(h);
  tp_heap_destroy(h);
  if (CHILD_THREADS) {
    TT_CHECK(!tp_sweeper_running());
    TT_CHECK(tp_sweeper_start(NULL) == 0);
    tp_sweeper_stop();
    tp_sweep_all(); /* retires slabs: may start the reclaimer */
  }
}

/* ---- the workers: every kind of operation of the module under test ------ */

static void reset_cb(void *arg) { (void)arg; }

static void pause_point(void) {
  if (!QUIESCE || !__atomic_load_n(&g.pause, __ATOMIC_ACQUIRE)) return;
  __atomic_fetch_add(&g.paused, 1, __ATOMIC_ACQ_REL);
  while (__atomic_load_n(&g.pause, __ATOMIC_ACQUIRE) && !__atomic_load_n(&g.stop, __ATOMIC_ACQUIRE))
    tt_sleep_ms(1);
  __atomic_fetch_sub(&g.paused, 1, __ATOMIC_ACQ_REL);
}

static int stopping(void) { return __atomic_load_n(&g.stop, __ATOMIC_ACQUIRE); }

static void pool_ops(uint64_t *rnd) {
  void *v[64];
  switch (tt_rand(rnd) % 6) {
    case 0:
      for (int i = 0; i < 64; i++) v[i] = tp_pool_get(g.pool);
      for (int i = 0; i < 64; i++) tp_pool_put(g.pool, v[i]);
      break;
    case 1: {
      size_t n = tp_pool_get_bulk(g.pool, v, 64);
      tp_pool_put_bulk(g.pool, v, n);
      break;
    }
    case 2:
      if ((v[0] = tp_pool_get(g.pool)) && tp_pool_retire(g.pool, v[0]) != 0) tp_pool_put(g.pool, v[0]);
      break;
    case 3: {
      tp_pool_config pc = {.name = "w", .obj_size = 32 + tt_rand(rnd) % 512};
      tp_pool *p = tp_pool_create(&pc);
      if (p) {
        for (int i = 0; i < 16; i++) v[i] = tp_pool_get(p);
        for (int i = 0; i < 16; i++) tp_pool_put(p, v[i]);
        tp_pool_destroy(p);
      }
      break;
    }
    case 4: {
      tp_pool_stats st;
      tp_pool_read_stats(g.pool, &st);
      break;
    }
    default:
      tp_sweep_now();
      break;
  }
}

static void arena_ops(uint64_t *rnd) {
  tp_arena_config cfg = {.chunk_size = 16u << 10, .keep_bytes = 32u << 10};
  tp_arena *a = tp_arena_create(&cfg);
  if (!a) return;
  for (int r = 0; r < 4 && !stopping(); r++) {
    tp_arena_mark m = tp_arena_save(a);
    for (int i = 0; i < 200; i++) {
      uint64_t x = tt_rand(rnd);
      char *q = (x & 63) == 0 ? tp_arena_alloc(a, 40000) : (x & 1) ? tp_arena_calloc(a, 1, x % 200 + 1)
                                                                    : tp_arena_alloc(a, x % 500 + 1);
      if (q) q[0] = 1;
    }
    if (tp_arena_strdup(a, "fork")) {
    }
    tp_arena_on_reset(a, reset_cb, NULL);
    if (r & 1) tp_arena_rewind(a, m);
    else tp_arena_reset(a);
    pause_point();
  }
  tp_arena_destroy(a);
}

static void conc_ops(uint64_t *rnd) {
  static const tp_arena_config cfg = {.max_bytes = 4u << 20, .flags = TP_ARENA_CONCURRENT};
  for (int i = 0; i < 500; i++) {
    tp_epoch_enter();
    tp_arena *a = __atomic_load_n(&g.conc, __ATOMIC_ACQUIRE);
    uint64_t x = tt_rand(rnd);
    char *q = tp_arena_alloc(a, (x & 255) == 0 ? 70000 : x % 256 + 1);
    if (q) q[0] = 1;
    tp_epoch_leave();
    if (!q) {
      /* Full: publish a fresh arena, retire the old one. */
      tp_arena *n = tp_arena_create(&cfg);
      if (n && __atomic_compare_exchange_n(&g.conc, &a, n, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        if (tp_arena_retire(a) != 0) tt_fail_once(&g.fails, "tp_arena_retire failed");
      } else {
        tp_arena_destroy(n);
      }
    }
  }
}

static void *churn_thread(void *arg) {
  /* Exits with a retire pending, sometimes inside a section. */
  static char x;
  tp_epoch_retire(&x, count_cb, NULL);
  if ((uintptr_t)arg & 1) tp_epoch_enter();
  return NULL;
}

static void epoch_ops(uint64_t *rnd) {
  static char objs[4096];
  switch (tt_rand(rnd) % 5) {
    case 0:
      for (int i = 0; i < 100; i++) {
        tp_epoch_enter();
        tp_epoch_leave();
      }
      break;
    case 1:
      for (int i = 0; i < 100; i++) tp_epoch_retire(&objs[tt_rand(rnd) % sizeof objs], count_cb, NULL);
      break;
    case 2:
      tp_epoch_synchronize();
      break;
    case 3:
      tp_epoch_barrier();
      break;
    default: {
      pthread_t t;
      if (pthread_create(&t, NULL, churn_thread, (void *)(uintptr_t)tt_rand(rnd)) == 0)
        pthread_join(t, NULL);
      break;
    }
  }
}

static void heap_ops(uint64_t *rnd) {
  if (tp_heap_attach(g.heap) != 0) {
    tt_fail_once(&g.fails, "tp_heap_attach failed");
    return;
  }
  void *keep = NULL;
  for (int r = 0; r < 20 && !stopping(); r++) {
    switch (tt_rand(rnd) % 5) {
      case 0:
        for (int i = 0; i < 200; i++) {
          struct node *n = tp_heap_alloc(g.heap, &node_type);
          if (n) {
            n->next = keep;
            keep = n;
          }
        }
        break;
      case 1:
        tp_heap_collect(g.heap);
        keep = NULL;
        break;
      case 2:
        tp_heap_safepoint(g.heap);
        break;
      case 3:
        tp_heap_blocking_enter(g.heap);
        tt_sleep_ms(0);
        tp_heap_blocking_leave(g.heap);
        break;
      default: {
        struct node *n = tp_heap_alloc(g.heap, &node_type);
        tp_weak *w = n ? tp_weak_new(g.heap, n) : NULL;
        if (w) tp_weak_free(w);
        break;
      }
    }
    tp_heap_blocking_enter(g.heap);
    pause_point();
    tp_heap_blocking_leave(g.heap);
  }
  tp_heap_detach(g.heap);
}

static void sweeper_ops(uint64_t *rnd) {
  switch (tt_rand(rnd) % 4) {
    case 0: {
      tp_sweeper_config sc = TP_SWEEPER_CONFIG_DEFAULT;
      sc.interval_ms = 1;
      sc.decay_ms = 1;
      sc.retain_bytes = 0;
      tp_sweeper_start(&sc);
      break;
    }
    case 1:
      tp_sweeper_stop();
      break;
    case 2:
      tp_sweep_all();
      break;
    default:
      pool_ops(rnd);
      break;
  }
}

static void *worker(void *arg) {
  uint64_t rnd = (uint64_t)(uintptr_t)arg;
  while (!stopping()) {
    switch (g.mod) {
      case POOL: pool_ops(&rnd); break;
      case ARENA: arena_ops(&rnd); break;
      case ARENA_CONC: conc_ops(&rnd); break;
      case EPOCH: epoch_ops(&rnd); break;
      case HEAP: heap_ops(&rnd); break;
      case SWEEPER: sweeper_ops(&rnd); break;
    }
    pause_point();
  }
  return NULL;
}

static void fork_module(void **state) {
  enum module mod = (enum module)(uintptr_t)*state;
  memset(&g, 0, sizeof g);
  g.mod = mod;
  uint64_t seed = tt_seed("fork_test"), rnd = seed;
  if (mod == POOL || mod == SWEEPER) {
    tp_pool_config pc = {.name = "shared", .obj_size = 64};
    g.pool = tp_pool_create(&pc);
    assert_non_null(g.pool);
  }
  if (mod == ARENA_CONC) {
    tp_arena_config cfg = {.max_bytes = 4u << 20, .flags = TP_ARENA_CONCURRENT};
    g.conc = tp_arena_create(&cfg);
    assert_non_null(g.conc);
  }
  if (mod == HEAP) {
    tp_heap_config hc = {.trigger_percent = 50, .min_heap_bytes = 1u << 20};
    g.heap = tp_heap_create(&hc);
    assert_non_null(g.heap);
  }
  pthread_t t[NWORKERS];
  for (int i = 0; i < NWORKERS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(seed + 7919u * (unsigned)i + 1)), 0);
  int bad = 0;
  for (int f = 0; f < NFORKS && !bad; f++) {
    tt_sleep_ms((unsigned)(tt_rand(&rnd) % 20));
    if (QUIESCE) {
      __atomic_store_n(&g.pause, 1, __ATOMIC_RELEASE);
      uint64_t end = tt_hang_deadline();
      while (__atomic_load_n(&g.paused, __ATOMIC_ACQUIRE) < NWORKERS && tt_now_ns() < end) tt_sleep_ms(1);
    }
    if (!tt_in_child(child_main, NULL, TT_HANG_MS)) {
      fprintf(stderr, "fork %d of the %d module test failed\n", f, (int)mod);
      bad = 1;
    }
    __atomic_store_n(&g.pause, 0, __ATOMIC_RELEASE);
  }
  __atomic_store_n(&g.stop, 1, __ATOMIC_RELEASE);
  for (int i = 0; i < NWORKERS; i++) assert_int_equal(tt_join_within(t[i], TT_HANG_MS, NULL), 0);
  tt_assert_no_failures(&g.fails);
  assert_false(bad);
  tp_sweeper_stop();
  if (g.pool) tp_pool_destroy(g.pool);
  if (g.conc) tp_arena_destroy(g.conc);
  if (g.heap) tp_heap_destroy(g.heap);
  assert_int_equal(tp_epoch_barrier(), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      {"pool", fork_module, NULL, NULL, (void *)(uintptr_t)POOL},
      {"arena", fork_module, NULL, NULL, (void *)(uintptr_t)ARENA},
      {"arena_concurrent", fork_module, NULL, NULL, (void *)(uintptr_t)ARENA_CONC},
      {"epoch", fork_module, NULL, NULL, (void *)(uintptr_t)EPOCH},
      {"heap", fork_module, NULL, NULL, (void *)(uintptr_t)HEAP},
      {"sweeper", fork_module, NULL, NULL, (void *)(uintptr_t)SWEEPER},
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
