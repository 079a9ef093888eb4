/*
 * tp_heap pacing and memory: automatic collections start when heap_alloc
 * reaches next_gc = live * (100 + trigger_percent) / 100 (floored at
 * min_heap_bytes and at live + one region; never with trigger_percent 0),
 * earlier under a
 * memory_limit; heap_sys falls when a big graph is dropped (regions back
 * to the pool at once, the pool's slabs to the OS when swept; with a
 * memory_limit at once).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

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

static void test_trigger_ratio(void **state) {
  (void)state;
  static const unsigned pcts[] = {25, 50, 100, 200};
  for (size_t k = 0; k < sizeof pcts / sizeof pcts[0]; k++) {
    unsigned pct = pcts[k];
    tp_heap *h = heap(pct, 256 << 10, 0);
    build_live(h, 40000); /* ~1.9 MiB live */
    tt_collect_unscanned(h);
    tp_heap_stats s = stats(h);
    assert_int_equal(s.heap_live, 40000 * NODE_SLOT);
    assert_int_equal(s.next_gc, goal(s.heap_live, pct, 256 << 10));
    /* Allocate garbage. Each automatic cycle is asked for when heap_alloc
     * reaches next_gc (not before, give or take the allocation buffer that
     * crossed it) and marks concurrently while this thread allocates on;
     * the thread waits for it only past the hard limit (next_gc plus the
     * goal's growth over live), so a cycle ends with heap_alloc between
     * next_gc and that limit (plus a region). num_gc and the new goal
     * change together, in the cycle's second pause. */
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
      uint64_t grow = prev.next_gc - prev.heap_live;
      if (grow < 4 * REGION) grow = 4 * REGION;
      assert_true(crossed + REGION >= prev.next_gc);
      assert_true(prev.heap_alloc <= prev.next_gc + grow + REGION);
      /* Measured ratio: bytes allocated since the last collection over
       * what was live after it: at least the goal's, at most twice. */
      double ratio = (double)(crossed - prev.heap_live) / (double)prev.heap_live * 100.0;
      double slack = 100.0 * REGION / (double)prev.heap_live + 1;
      assert_true(ratio > pct - slack);
      assert_true(ratio < 100.0 * (double)grow / (double)prev.heap_live + pct + slack);
      /* The new goal follows the new live size. */
      assert_int_equal(s.next_gc, goal(s.heap_live, pct, 256 << 10));
      cycles++;
      prev = s;
    }
    printf("trigger_percent %u: %d automatic collections, live %llu, next_gc %llu\n", pct,
           cycles, (unsigned long long)s.heap_live, (unsigned long long)s.next_gc);
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
    /* The cycle asked for at 8 MiB ends before the hard limit, 16 MiB. */
    assert_true(at < (16 << 20) + REGION);
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
      cmocka_unit_test(test_memory_limit),
      cmocka_unit_test(test_heap_sys_falls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
