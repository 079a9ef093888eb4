/*
 * An allocating thread that waits for the heap lock does not hold up a
 * stop of the world (gc/mutators.c, tp__mut_lock_heap).
 *
 * The concurrent sweep holds h->lock a batch of regions at a time, and a
 * thread that needs a region waits for it. Before, that wait was a plain
 * pthread_mutex_lock in a RUNNING thread, and a stop waited for the
 * thread to get the lock, run and reach a safepoint (4.3 ms in one
 * gcserver pause). Now the wait is a blocking section.
 *
 * This test holds h->lock itself (it reads the heap's internals) while a
 * worker allocates, so the worker's next refill waits for it, and checks:
 *  - the worker is counted as stopped (BLOCKING) while it waits: without
 *    the change it stays RUNNING and the test fails after its bound;
 *  - a collection asked for meanwhile gets its world stopped: its pause 1
 *    then waits for h->lock (held here), and when the lock goes, either
 *    the worker gets it first and hands it back (a stop is wanted), or the
 *    pause runs first and the worker, which slept through it, reads the
 *    mark flag the pause left (a hole it opens during the mark must be
 *    born black). Rounds alternate both orders by chance; every collection is
 *    checkmarked (TIDEPOOL_GC_CHECKMARK=1), and the worker's list is
 *    checked whole after each round.
 * Time-bounded; the rounds count is printed. TP_TEST_SECONDS_SCALE scales.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sched.h>

#include <tidepool/gc.h>

#include "gc/heap_internal.h"
#include "gc_test_util.h"
#include "test_util.h"

struct node {
  struct node *next;
  uint64_t value;
};
static const size_t node_offs[] = {offsetof(struct node, next)};
static const tp_type node_type = {"lw_node", sizeof(struct node), NULL, node_offs, 1, NULL, 0};

static tp_heap *heap;
static int stop;
static uint64_t allocated; /* by the worker, relaxed */
static int list_broken;

/* Builds lists of up to 4096 nodes on its stack (a root), checks each
 * whole before it drops it. */
static void *worker(void *arg) {
  (void)arg;
  assert_int_equal(tp_heap_attach(heap), 0);
  struct node *head = NULL;
  uint64_t n = 0;
  while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
    struct node *x = tp_heap_alloc(heap, &node_type);
    if (!x) break;
    x->value = n;
    x->next = head; /* a fresh object: no barrier */
    head = x;
    if (++n % 4096 == 0) {
      uint64_t v = n - 1, k = 0;
      for (struct node *p = head; p; p = p->next, v--, k++)
        if (p->value != v) __atomic_store_n(&list_broken, 1, __ATOMIC_RELAXED);
      if (k != 4096) __atomic_store_n(&list_broken, 1, __ATOMIC_RELAXED);
      head = NULL;
    }
    __atomic_store_n(&allocated, n, __ATOMIC_RELAXED);
  }
  tp_heap_detach(heap);
  return NULL;
}

/* The state of the one attached record, read under sp_lock. */
static int worker_state(void) {
  pthread_mutex_lock(&heap->sp_lock);
  int st = -1;
  for (tp__mut *m = heap->muts; m; m = m->next)
    if (m->attach_depth) st = m->state;
  pthread_mutex_unlock(&heap->sp_lock);
  return st;
}

static void *collector(void *arg) {
  (void)arg;
  tp_heap_collect(heap);
  return NULL;
}

static void test_lock_wait(void **state) {
  (void)state;
  tp_heap_config c = {.trigger_percent = 0, .region_size = 32 << 10};
  heap = tp_heap_create(&c);
  assert_non_null(heap);
  pthread_t w;
  assert_int_equal(pthread_create(&w, NULL, worker, NULL), 0);
  while (__atomic_load_n(&allocated, __ATOMIC_RELAXED) < 10000) sched_yield();
  uint64_t end = tt_deadline(3.0);
  int rounds = 0;
  while (rounds < 20 || tt_now_ns() < end) {
    pthread_mutex_lock(&heap->lock);
    /* The worker's next refill waits for the lock: within a 32 KiB region
     * of 32-byte nodes, a thousand allocations at most. */
    uint64_t bound = tt_hang_deadline();
    int st;
    while ((st = worker_state()) != TP__MS_BLOCKING && tt_now_ns() < bound) sched_yield();
    if (st != TP__MS_BLOCKING) {
      pthread_mutex_unlock(&heap->lock);
      fail_msg("round %d: the worker waits for the heap lock in state %d, not BLOCKING", rounds, st);
    }
    /* A collection now: its stop completes (the worker is BLOCKING); its
     * pause 1 then waits for h->lock. */
    pthread_t ct;
    assert_int_equal(pthread_create(&ct, NULL, collector, NULL), 0);
    bound = tt_hang_deadline();
    while (!tp__stw_wanted(heap) && tt_now_ns() < bound) sched_yield();
    pthread_mutex_unlock(&heap->lock);
    assert_int_equal(pthread_join(ct, NULL), 0);
    assert_false(__atomic_load_n(&list_broken, __ATOMIC_RELAXED));
    rounds++;
  }
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  assert_int_equal(pthread_join(w, NULL), 0);
  assert_false(__atomic_load_n(&list_broken, __ATOMIC_RELAXED));
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(heap, &s), 0);
  printf("lock_wait: %d rounds, worker BLOCKING on the heap lock in each; %llu collections, "
         "%llu nodes allocated\n",
         rounds, (unsigned long long)s.num_gc, (unsigned long long)allocated);
  assert_true(s.num_gc >= (uint64_t)rounds);
  tp_heap_destroy(heap);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lock_wait),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
