/*
 * tp_heap pacing and memory (gc/pacing.c has the model): the goal next_gc
 * = live * (100 + trigger_percent) / 100 (floored at min_heap_bytes and at
 * live + one region; none with trigger_percent 0), earlier under a
 * memory_limit; a cycle is asked for at gc_trigger, before the goal by the
 * runway the last marks needed; past the goal allocations assist (bounded
 * per slow path), past gc_hard_limit they wait for the mark; heap_sys
 * falls when a big graph is dropped (regions back to the pool at once, the
 * pool's slabs to the OS when swept; with a memory_limit at once).
 *
 * The trigger and the assists are tested with the marker held still: a
 * rooted "gate" object whose trace callback waits while the gate is
 * closed, so a test knows exactly what was allocated during a mark, and
 * can check that allocations go on past the goal while the mark cannot
 * end (before bounded assists, an allocation waited for the mark there:
 * with the marker held, forever; a watchdog opens the gate after
 * TT_HANG_MS and the test fails).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tidepool/gc.h>

#include "gc_test_util.h"
#include "test_util.h"

struct node {
  struct node *next;
  long id, pad[2];
};
static const size_t node_offs[] = {offsetof(struct node, next)};
static const tp_type node_type = {"node", sizeof(struct node), NULL, node_offs, 1, NULL, 0};
#define NODE_SLOT 48 /* header + 32 bytes, 16-rounded */

#define REGION (64 << 10)

static void *root;

static tp_heap *heap(unsigned pct, size_t min_heap, size_t limit) {
  tp_heap_config c = {.trigger_percent = pct, .min_heap_bytes = min_heap,
                      .memory_limit = limit, .region_size = REGION};
  tp_heap *h = tp_heap_create(&c);
  assert_non_null(h);
  root = NULL;
  assert_int_equal(tp_root_add(h, &root), 0);
  return h;
}

static tp_heap_stats stats(tp_heap *h) {
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(h, &s), 0);
  return s;
}

/* A rooted chain of n nodes. */
static void build_live(tp_heap *h, long n) {
  for (long i = 0; i < n; i++) {
    struct node *x = tp_heap_alloc(h, &node_type);
    assert_non_null(x);
    x->id = i;
    x->next = root;
    root = x;
  }
}

static uint64_t goal(uint64_t live, unsigned pct, uint64_t min_heap) {
  uint64_t g = live + live * pct / 100;
  return g < min_heap ? min_heap : g;
}

/* gc/pacing.c's trigger for a goal, given k (Q16: bytes allocated per
 * byte marked, the largest of the last marks'). */
static uint64_t trigger(uint64_t live, uint64_t g, uint64_t min_heap, uint64_t k) {
  uint64_t runway = (uint64_t)((unsigned __int128)live * k >> 16) / 4 * 5 + REGION;
  uint64_t t = g > runway ? g - runway : 0;
  if (t < live + (g - live) / 8) t = live + (g - live) / 8;
  if (t < min_heap) t = min_heap;
  return t < g ? t : g;
}

static uint64_t hard_limit(uint64_t live, uint64_t g) {
  uint64_t grow = g - live < 4 * REGION ? 4 * REGION : g - live;
  return g + 2 * grow;
}

static void test_trigger_ratio(void **state) {
  (void)state;
  static const unsigned pcts[] = {25, 50, 100, 200};
  for (size_t k = 0; k < sizeof pcts / sizeof pcts[0]; k++) {
    unsigned pct = pcts[k];
    tp_heap *h = heap(pct, 256 << 10, 0);
    build_live(h, 40000); /* ~1.9 MiB live */
    /* The automatic cycles of build_live allocated while they marked;
     * four that allocate nothing push them out of the pacer's history. */
    for (int i = 0; i < 4; i++) tt_collect_unscanned(h);
    tp_heap_stats s = stats(h);
    assert_int_equal(s.heap_live, 40000 * NODE_SLOT);
    assert_int_equal(s.next_gc, goal(s.heap_live, pct, 256 << 10));
    /* Nothing was allocated during the last marks: the trigger is a
     * region before the goal (or at its floor). */
    assert_int_equal(s.gc_trigger, trigger(s.heap_live, s.next_gc, 256 << 10, 0));
    assert_int_equal(s.gc_hard_limit, hard_limit(s.heap_live, s.next_gc));
    /* Allocate garbage. Each automatic cycle is asked for when heap_alloc
     * reaches gc_trigger (not before, give or take the allocation buffer
     * that crossed it) and marks concurrently while this thread allocates
     * on; the thread assists past the goal and waits only past the hard
     * limit, so a cycle ends with heap_alloc between the trigger and that
     * limit (plus a region). num_gc and the new goal change together, in
     * the cycle's second pause. */
    int cycles = 0;
    tp_heap_stats prev = s;
    while (cycles < 8) {
      struct node *g = tp_heap_alloc(h, &node_type);
      assert_non_null(g);
      s = stats(h);
      if (s.num_gc == prev.num_gc) {
        prev = s;
        continue;
      }
      if (s.num_gc != prev.num_gc + 1) {
        /* Two cycles ended during one allocation (it waited at the hard
         * limit, or the machine is loaded): nothing to measure. */
        prev = s;
        continue;
      }
      /* prev: the last state before the collection. */
      uint64_t crossed = prev.heap_alloc + NODE_SLOT;
      assert_true(crossed + REGION >= prev.gc_trigger);
      assert_true(prev.heap_alloc <= prev.gc_hard_limit + REGION);
      /* The trigger lies between its floor (an eighth of the goal's
       * growth, or min_heap_bytes) and the goal. */
      assert_true(prev.gc_trigger <= prev.next_gc);
      assert_true(prev.gc_trigger >= trigger(prev.heap_live, prev.next_gc, 256 << 10, UINT32_MAX));
      /* Measured ratio: bytes allocated since the last collection over
       * what was live after it: at least an eighth of the goal's, at most
       * the hard limit's. */
      double ratio = (double)(crossed - prev.heap_live) / (double)prev.heap_live * 100.0;
      double slack = 100.0 * REGION / (double)prev.heap_live + 1;
      assert_true(ratio > pct / 8.0 - slack);
      assert_true(ratio < 100.0 * (double)(prev.gc_hard_limit - prev.heap_live) /
                                  (double)prev.heap_live + slack);
      /* The new goal follows the new live size. */
      assert_int_equal(s.next_gc, goal(s.heap_live, pct, 256 << 10));
      assert_true(s.gc_trigger <= s.next_gc);
      assert_int_equal(s.gc_hard_limit, hard_limit(s.heap_live, s.next_gc));
      cycles++;
      prev = s;
    }
    printf("trigger_percent %u: %d automatic collections, live %llu, trigger %llu, "
           "next_gc %llu, assists %llu (%llu ns)\n",
           pct, cycles, (unsigned long long)s.heap_live, (unsigned long long)s.gc_trigger,
           (unsigned long long)s.next_gc, (unsigned long long)s.assists,
           (unsigned long long)s.mark_assist_ns);
    tp_heap_destroy(h);
  }
}

static void test_floor_and_manual(void **state) {
  (void)state;
  /* Nothing automatic below min_heap_bytes. */
  tp_heap *h = heap(100, 8 << 20, 0);
  uint64_t at = 0;
  while (stats(h).num_gc == 0) {
    assert_non_null(tp_heap_alloc(h, &node_type));
    at += NODE_SLOT;
    /* The cycle asked for at 8 MiB (the trigger is the goal there: no
     * automatic collection below min_heap_bytes) ends before the hard
     * limit, 24 MiB, where this thread would wait for it. */
    assert_true(at < (24 << 20) + REGION);
  }
  assert_true(at + REGION >= (8u << 20));
  tp_heap_destroy(h);
  /* trigger_percent 0: never automatic. */
  h = heap(0, 256 << 10, 0);
  for (long i = 0; i < (16 << 20) / NODE_SLOT; i++) assert_non_null(tp_heap_alloc(h, &node_type));
  tp_heap_stats s = stats(h);
  assert_int_equal(s.num_gc, 0);
  assert_int_equal(s.next_gc, UINT64_MAX);
  assert_true(s.heap_alloc >= (16u << 20) - REGION);
  tp_heap_destroy(h);
}

/* A growth that rounds to 0 (live * 1 / 100 of 48 bytes) with min_heap_bytes
 * below live once set next_gc to live: every allocation after a collection
 * then collected again, forever. */
static void test_goal_above_live(void **state) {
  (void)state;
  tp_heap *h = heap(1, 1, 0);
  build_live(h, 1);
  tt_collect_unscanned(h);
  tp_heap_stats s = stats(h);
  assert_int_equal(s.heap_live, NODE_SLOT);
  assert_true(s.next_gc > s.heap_live);
  /* Garbage: automatic collections start and finish. */
  for (long i = 0; i < (2 << 20) / NODE_SLOT; i++) assert_non_null(tp_heap_alloc(h, &node_type));
  tp_heap_stats after = stats(h);
  assert_true(after.num_gc > s.num_gc);
  assert_true(after.next_gc > after.heap_live);
  tp_heap_destroy(h);
}

/* ---- the marker held still: the gate ----------------------------------------------- */

/* The gate: a rooted object whose trace callback, run by the marker thread
 * in the concurrent mark, waits while gate_closed is set (and says so in
 * gate_entered). Pause 1 only shades roots, so the world runs while the
 * marker waits; pause 2 cannot come until the gate opens. */
struct gate {
  struct gate *next;
};
static int gate_closed, gate_entered;
static void *gate_root;

static void gate_trace(void *obj, tp_tracer *t) {
  if (__atomic_load_n(&gate_closed, __ATOMIC_ACQUIRE)) {
    __atomic_store_n(&gate_entered, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&gate_closed, __ATOMIC_ACQUIRE)) tt_sleep_ms(1);
  }
  tp_trace(t, ((struct gate *)obj)->next);
}
static const tp_type gate_type = {"gate", sizeof(struct gate), gate_trace, NULL, 0, NULL, 0};

static void gate_close(void) {
  __atomic_store_n(&gate_entered, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&gate_closed, 1, __ATOMIC_RELEASE);
}
static void gate_open(void) { __atomic_store_n(&gate_closed, 0, __ATOMIC_RELEASE); }

/* A heap with a rooted chain of n nodes and the gate, collected once. */
static tp_heap *gated_heap(long n) {
  tp_heap *h = heap(100, 256 << 10, 0);
  build_live(h, n);
  gate_root = NULL;
  assert_int_equal(tp_root_add(h, &gate_root), 0);
  gate_root = tp_heap_alloc(h, &gate_type);
  assert_non_null(gate_root);
  gate_open();
  /* Marks that allocate nothing, enough to push the automatic cycles of
   * build_live (which allocated while they marked) out of the pacer's
   * history (gc/pacing.c: the last TP__PACE_HISTORY = 4 marks). */
  for (int i = 0; i < 4; i++) tt_collect_unscanned(h);
  return h;
}

/* Waits, at safepoints (pause 1 needs this attached thread), until the
 * marker is in the gate. */
static void wait_gate_entered(tp_heap *h) {
  uint64_t end = tt_hang_deadline();
  while (!__atomic_load_n(&gate_entered, __ATOMIC_ACQUIRE)) {
    assert_true(tt_now_ns() < end);
    tp_heap_safepoint(h);
    tt_sleep_ms(1);
  }
}

static void *collect_thread(void *arg) {
  tp_heap_collect(arg); /* an unattached thread: waits plainly */
  return NULL;
}

/* The trigger learns the runway from what the mutators allocated during
 * the last marks: exactly A bytes allocated while the marker is held make
 * k = A / heap_live, and the trigger moves down by 5/4 of the runway that
 * gives the next mark; after TP__PACE_HISTORY (4) marks allocating
 * nothing, it is back a region before the goal. */
static void test_trigger_learns(void **state) {
  (void)state;
  tp_heap *h = gated_heap(20000); /* ~0.9 MiB live */
  tp_heap_stats s = stats(h);
  uint64_t live = s.heap_live;
  assert_int_equal(s.gc_trigger, trigger(live, s.next_gc, 256 << 10, 0));
  assert_int_equal(s.next_gc - REGION, s.gc_trigger);
  /* A mark during which this thread allocates 5000 nodes. */
  gate_close();
  pthread_t c;
  assert_int_equal(pthread_create(&c, NULL, collect_thread, h), 0);
  wait_gate_entered(h);
  const uint64_t a = 5000 * NODE_SLOT; /* below the trigger: no other cycle */
  assert_true(s.heap_alloc + a < s.gc_trigger);
  for (int i = 0; i < 5000; i++) assert_non_null(tp_heap_alloc(h, &node_type));
  tp_heap_blocking_enter(h); /* pause 2 need not wait for this thread */
  gate_open();
  assert_int_equal(tt_join_within(c, TT_HANG_MS, NULL), 0);
  tp_heap_blocking_leave(h);
  s = stats(h);
  assert_int_equal(s.heap_live, live); /* what it allocated was born black */
  uint64_t k = (a << 16) / live;
  uint64_t want = trigger(live, s.next_gc, 256 << 10, k);
  printf("trigger: goal %llu, %llu bytes allocated during a mark of %llu: trigger %llu "
         "(%llu before the goal)\n",
         (unsigned long long)s.next_gc, (unsigned long long)a, (unsigned long long)live,
         (unsigned long long)s.gc_trigger, (unsigned long long)(s.next_gc - s.gc_trigger));
  assert_int_equal(s.gc_trigger, want);
  assert_true(s.gc_trigger < s.next_gc - a - REGION); /* the runway covers A and more */
  /* Three quiet marks: the largest of the last four is still k. */
  for (int i = 0; i < 3; i++) tt_collect_unscanned(h);
  s = stats(h);
  assert_int_equal(s.heap_live, live);
  assert_int_equal(s.gc_trigger, want);
  /* The fourth pushes it out. */
  tt_collect_unscanned(h);
  s = stats(h);
  assert_int_equal(s.gc_trigger, s.next_gc - REGION);
  tp_heap_destroy(h);
}

/* The watchdog of the assist test: opens the gate once TT_HANG_MS has
 * passed (an allocation blocked while the marker is held would otherwise
 * never return) and says it did. */
struct watchdog {
  int done, fired;
};
static void *watchdog_thread(void *arg) {
  struct watchdog *w = arg;
  uint64_t end = tt_hang_deadline();
  while (!__atomic_load_n(&w->done, __ATOMIC_ACQUIRE)) {
    if (tt_now_ns() >= end) {
      __atomic_store_n(&w->fired, 1, __ATOMIC_RELEASE);
      gate_open();
      return NULL;
    }
    tt_sleep_ms(5);
  }
  return NULL;
}

struct hog {
  tp_heap *h;
  int stop;
  uint64_t allocs;
};
static void *hog_thread(void *arg) {
  struct hog *g = arg;
  while (!__atomic_load_n(&g->stop, __ATOMIC_ACQUIRE)) {
    if (!tp_heap_alloc(g->h, &node_type)) break;
    __atomic_store_n(&g->allocs, g->allocs + 1, __ATOMIC_RELAXED);
  }
  tp_heap_detach(g->h);
  return NULL;
}

/* Past the goal while the mark cannot end, allocations go on (assisting:
 * each slow path yields at most 1 ms) up to the hard limit, twice the
 * goal's growth above it; a thread that reaches the hard limit waits there
 * (memory stays bounded) until the mark ends. */
static void test_assists_past_goal(void **state) {
  (void)state;
  tp_heap *h = gated_heap(20000);
  tp_heap_stats s0 = stats(h);
  uint64_t g = s0.next_gc, hard = s0.gc_hard_limit, grow = g - s0.heap_live;
  assert_int_equal(hard, g + 2 * grow);
  struct watchdog w = {0, 0};
  pthread_t wd;
  gate_close();
  assert_int_equal(pthread_create(&wd, NULL, watchdog_thread, &w), 0);
  /* Garbage up to the trigger: a cycle starts and its marker is held. */
  while (!__atomic_load_n(&gate_entered, __ATOMIC_ACQUIRE)) {
    assert_non_null(tp_heap_alloc(h, &node_type));
    assert_true(stats(h).heap_alloc < hard);
  }
  /* Past the goal and on past the goal's growth again, the old hard limit,
   * with the mark held: each allocation returns. */
  uint64_t target = g + grow + 4 * REGION;
  assert_true(target + 2 * REGION < hard);
  tp_heap_stats s;
  do {
    for (int i = 0; i < 64; i++) assert_non_null(tp_heap_alloc(h, &node_type));
    s = stats(h);
    /* Time passes (a thread owes assists for the time it runs past the
     * goal), so some slow paths owe more than the 50 us minimum. */
    tt_sleep_ms(1);
  } while (s.heap_alloc < target && !__atomic_load_n(&w.fired, __ATOMIC_ACQUIRE));
  assert_false(__atomic_load_n(&w.fired, __ATOMIC_ACQUIRE)); /* blocked past the goal */
  assert_int_equal(s.num_gc, s0.num_gc);
  assert_int_equal(s.phase, TP_GC_PHASE_MARK);
  /* (The counters count since the heap began: build_live's cycles.) */
  assert_true(s.assists > s0.assists && s.mark_assist_ns > s0.mark_assist_ns);
  assert_int_equal(s.limit_waits, s0.limit_waits);
  printf("assists: heap_alloc %llu past a goal of %llu with the mark held: %llu assists, "
         "%llu ns, the longest %llu ns\n",
         (unsigned long long)s.heap_alloc, (unsigned long long)g,
         (unsigned long long)(s.assists - s0.assists),
         (unsigned long long)(s.mark_assist_ns - s0.mark_assist_ns),
         (unsigned long long)s.assist_max_ns);
  /* Another thread allocates on: it reaches the hard limit and waits;
   * heap_alloc never passes it by more than the buffer it accounted
   * there (a region). */
  struct hog hg = {h, 0, 0};
  pthread_t ht;
  assert_int_equal(pthread_create(&ht, NULL, hog_thread, &hg), 0);
  uint64_t end = tt_hang_deadline(), max_alloc = 0;
  while (stats(h).limit_waits == s0.limit_waits) {
    assert_true(tt_now_ns() < end);
    assert_false(__atomic_load_n(&w.fired, __ATOMIC_ACQUIRE));
    tp_heap_safepoint(h);
    uint64_t now = stats(h).heap_alloc;
    if (now > max_alloc) max_alloc = now;
    tt_sleep_ms(1);
  }
  for (int i = 0; i < 20; i++) {
    uint64_t now = stats(h).heap_alloc;
    if (now > max_alloc) max_alloc = now;
    tp_heap_safepoint(h);
    tt_sleep_ms(1);
  }
  s = stats(h);
  printf("hard limit %llu: the other thread waits there after %llu allocations; heap_alloc at "
         "most %llu\n",
         (unsigned long long)hard, (unsigned long long)__atomic_load_n(&hg.allocs, __ATOMIC_RELAXED),
         (unsigned long long)max_alloc);
  assert_true(max_alloc >= hard - REGION);
  assert_true(max_alloc <= hard + REGION);
  assert_int_equal(s.num_gc, s0.num_gc);
  /* The mark ends; the waiting thread goes on. */
  __atomic_store_n(&w.done, 1, __ATOMIC_RELEASE);
  assert_int_equal(tt_join_within(wd, TT_HANG_MS, NULL), 0);
  tp_heap_blocking_enter(h);
  gate_open();
  __atomic_store_n(&hg.stop, 1, __ATOMIC_RELEASE);
  assert_int_equal(tt_join_within(ht, TT_HANG_MS, NULL), 0);
  tp_heap_blocking_leave(h);
  tt_collect_unscanned(h);
  s = stats(h);
  assert_true(s.limit_waits > s0.limit_waits && s.limit_wait_ns > s0.limit_wait_ns);
  assert_int_equal(s.heap_live, s0.heap_live); /* the chain and the gate, intact */
  long n = 0;
  for (struct node *x = root; x; x = x->next) assert_int_equal(x->id, 19999 - n++);
  assert_int_equal(n, 20000);
  tp_heap_destroy(h);
}

/* Allocates `bytes` of garbage (with a small live set) and returns the
 * largest heap_alloc and heap_sys seen. */
static void churn(tp_heap *h, uint64_t bytes, uint64_t *max_alloc, uint64_t *max_sys) {
  *max_alloc = *max_sys = 0;
  for (uint64_t done = 0; done < bytes; done += NODE_SLOT) {
    assert_non_null(tp_heap_alloc(h, &node_type));
    if ((done / NODE_SLOT) % 64 == 0) {
      tp_heap_stats s = stats(h);
      if (s.heap_alloc > *max_alloc) *max_alloc = s.heap_alloc;
      if (s.heap_sys > *max_sys) *max_sys = s.heap_sys;
    }
  }
}

static void test_memory_limit(void **state) {
  (void)state;
  const uint64_t limit = 10 << 20;
  /* Without a limit, trigger_percent 1000 lets heap_alloc grow to 11x
   * the live 2.9 MiB. */
  tp_heap *h = heap(1000, 256 << 10, 0);
  build_live(h, 60000);
  tt_collect_unscanned(h);
  uint64_t free_alloc, free_sys;
  churn(h, 96 << 20, &free_alloc, &free_sys);
  tp_heap_destroy(h);
  /* With it, collections come earlier and heap_sys stays near it. */
  h = heap(1000, 256 << 10, limit);
  build_live(h, 60000);
  tt_collect_unscanned(h);
  tp_heap_stats s0 = stats(h);
  uint64_t lim_alloc, lim_sys;
  churn(h, 96 << 20, &lim_alloc, &lim_sys);
  tp_heap_stats s = stats(h);
  printf("no limit: max heap_alloc %llu, heap_sys %llu; limit %llu: max heap_alloc %llu, "
         "heap_sys %llu, %llu collections\n",
         (unsigned long long)free_alloc, (unsigned long long)free_sys,
         (unsigned long long)limit, (unsigned long long)lim_alloc, (unsigned long long)lim_sys,
         (unsigned long long)(s.num_gc - s0.num_gc));
  assert_true(free_alloc > 2 * limit);
  assert_true(lim_alloc <= limit);
  /* heap_sys overshoots more than heap_alloc: while a cycle marks, holes
   * are whole bitmap words only and new regions come from the pool, and
   * the regions it frees go back during its concurrent sweep, not at once. */
  assert_true(lim_sys <= limit + limit / 2);
  assert_true(s.next_gc <= limit);
  tp_heap_destroy(h);
}

static void test_heap_sys_falls(void **state) {
  (void)state;
  tp_heap *h = heap(0, 256 << 10, 0);
  build_live(h, 700000); /* ~32 MiB */
  tt_collect_unscanned(h);
  tp_heap_stats big = stats(h);
  assert_true(big.heap_sys >= 32u << 20);
  root = NULL;
  tt_collect_unscanned(h);
  tp_heap_stats dropped = stats(h);
  assert_int_equal(dropped.regions, 0); /* every region back in the pool */
  assert_int_equal(dropped.heap_live, 0);
  assert_true(dropped.regions_released >= big.regions);
  /* The pool gives its empty slabs back to the OS when swept (the
   * background sweeper does this after decay_ms; tp_sweep_all now). */
  for (int i = 0; i < 3; i++) tp_sweep_all();
  tp_heap_stats swept = stats(h);
  printf("heap_sys: %llu with the graph, %llu after dropping it, %llu after the sweep\n",
         (unsigned long long)big.heap_sys, (unsigned long long)dropped.heap_sys,
         (unsigned long long)swept.heap_sys);
  assert_true(swept.heap_sys < big.heap_sys / 8);
  tp_heap_destroy(h);

  /* With a memory_limit the heap trims right after the collection. */
  h = heap(0, 256 << 10, 16 << 20);
  build_live(h, 700000);
  tt_collect_unscanned(h);
  big = stats(h);
  root = NULL;
  tt_collect_unscanned(h);
  dropped = stats(h);
  assert_true(dropped.heap_sys < big.heap_sys / 8);
  tp_heap_destroy(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_trigger_ratio),
      cmocka_unit_test(test_floor_and_manual),
      cmocka_unit_test(test_goal_above_live),
      cmocka_unit_test(test_trigger_learns),
      cmocka_unit_test(test_assists_past_goal),
      cmocka_unit_test(test_memory_limit),
      cmocka_unit_test(test_heap_sys_falls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
