/*
 * Store assists bound what the concurrent mark leaves to pause 2.
 *
 * Three threads (more than the machine's 2 cores) do nothing but swap the
 * entries of random slots of a large shuffled pointer table through
 * tp_heap_write: two logged values per swap, no allocation, so the
 * pacer's allocation assists never slow them, and they log faster than
 * the one marker looks the values up. Meanwhile this thread runs
 * collections back to back. Before store assists, each concurrent round's
 * log was bigger than the last; the concurrent mark cut off at the first
 * that did not shrink and left that whole log to pause 2 (millions of
 * values, a pause of seconds in bench gc_mark_cpu_swap; and before that
 * cut, tp_heap_collect never returned). Now a writer whose log chunk is
 * full waits for the marker (gc/barrier.c), and pause 2 marks a few chunks
 * per writer: the test asserts at most 256 chunks' worth in any pause 2
 * (mark_term_satb_max), and that every collection returns (a hang fails
 * by the test's timeout). Each collection is checkmarked
 * (TIDEPOOL_GC_CHECKMARK=1), and after the run every table slot must still
 * hold an entry with its tag: nothing reachable was freed while the
 * writers waited in assists (blocking sections) across pauses.
 * TP_TEST_SEED replays; TP_TEST_SECONDS_SCALE scales the time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <tidepool/gc.h>

#include "gc_test_util.h"
#include "test_util.h"

#define WRITERS 3
#define SLOTS ((size_t)1 << 20)
#define TAG ((uint64_t)0x5a5a5a5a << 32)
#define SATB_CHUNK_VALUES 254 /* TP__SATB_N, gc/heap_internal.h */
#define MAX_CHUNKS 256

struct node {
  struct node *l, *r;
};
struct entry {
  uint64_t tag; /* TAG | the slot it was made for */
  struct node *tree;
};
static const size_t node_offs[] = {offsetof(struct node, l), offsetof(struct node, r)};
static const tp_type node_type = {"sa_node", sizeof(struct node), NULL, node_offs, 2, NULL, 0};
static const size_t entry_offs[] = {offsetof(struct entry, tree)};
static const tp_type entry_type = {"sa_entry", sizeof(struct entry), NULL, entry_offs, 1, NULL, 0};
static const size_t ptr_offs[] = {0};
static const tp_type ptr_type = {"sa_ptr", sizeof(void *), NULL, ptr_offs, 1, NULL, 0};

static tp_heap *heap;
static void *table; /* a registered root */
static int stop;
static uint64_t seed;
static uint64_t swaps[WRITERS];

static void *writer(void *arg) {
  uintptr_t id = (uintptr_t)arg;
  uint64_t x = (seed ^ (0x9e3779b97f4a7c15u * (id + 1))) | 1, n = 0;
  assert_int_equal(tp_heap_attach(heap), 0);
  void **t = table;
  while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
    for (int k = 0; k < 64; k++, n++) {
      size_t i = tt_rand(&x) % SLOTS, j = tt_rand(&x) % SLOTS;
      /* Not atomic as a pair: two writers swapping an overlapping slot at
       * once may duplicate one entry and drop another (then collected). */
      void *a = __atomic_load_n(&t[i], __ATOMIC_RELAXED);
      void *b = __atomic_load_n(&t[j], __ATOMIC_RELAXED);
      tp_heap_write(heap, t, &t[i], b);
      tp_heap_write(heap, t, &t[j], a);
    }
    tp_heap_safepoint(heap);
  }
  swaps[id] = n;
  tp_heap_detach(heap);
  return NULL;
}

static void test_pause2_bounded(void **state) {
  (void)state;
  seed = tt_seed("gc_store_assist_test");
  /* One marker: the writers outpace it (the case store assists are for). */
  tp_heap_config cfg = {.trigger_percent = 0, .markers = 1};
  assert_non_null(heap = tp_heap_create(&cfg));
  assert_int_equal(tp_root_add(heap, &table), 0);
  void **t = tp_heap_alloc_array(heap, &ptr_type, SLOTS);
  assert_non_null(t);
  table = t;
  for (size_t i = 0; i < SLOTS; i++) {
    struct entry *e = tp_heap_alloc(heap, &entry_type);
    struct node *a = tp_heap_alloc(heap, &node_type), *b = tp_heap_alloc(heap, &node_type);
    assert_true(e && a && b);
    a->l = b;
    e->tree = a;
    e->tag = TAG | i;
    t[i] = e;
  }
  /* Shuffled: the marker's lookups miss the cache, as a server's do. */
  uint64_t x = seed | 1; /* xorshift: never 0 */
  for (size_t i = SLOTS - 1; i > 0; i--) {
    size_t j = tt_rand(&x) % (i + 1);
    void *v = t[i];
    t[i] = t[j];
    t[j] = v;
  }
  t = NULL; /* the table is reached through the root only */

  pthread_t th[WRITERS];
  for (uintptr_t i = 0; i < WRITERS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, writer, (void *)i), 0);
  uint64_t end = tt_deadline(4.0);
  int cycles = 0;
  do {
    tp_heap_collect(heap);
    cycles++;
  } while (cycles < 3 || tt_now_ns() < end);
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  for (int i = 0; i < WRITERS; i++) assert_int_equal(tt_join_within(th[i], TT_HANG_MS, NULL), 0);

  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(heap, &s), 0);
  uint64_t total = 0;
  for (int i = 0; i < WRITERS; i++) total += swaps[i];
  printf("%d collections, %llu swaps; pause 2 marked at most %llu logged values (bound %d); "
         "store assists %llu (%.1f ms); pause max %.3f ms\n",
         cycles, (unsigned long long)total, (unsigned long long)s.mark_term_satb_max,
         MAX_CHUNKS * SATB_CHUNK_VALUES, (unsigned long long)s.store_assists,
         (double)s.store_assist_ns / 1e6, (double)s.pause_max_ns / 1e6);
  assert_true(s.mark_term_satb_max <= (uint64_t)MAX_CHUNKS * SATB_CHUNK_VALUES);

  /* Every slot holds a live entry: tagged, with its tree. */
  void **tt = table;
  for (size_t i = 0; i < SLOTS; i++) {
    struct entry *e = tt[i];
    assert_non_null(e);
    assert_true(e->tag - TAG < SLOTS);
    assert_non_null(e->tree);
    assert_non_null(e->tree->l);
  }
  tp_heap_destroy(heap);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_pause2_bounded)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
