/*
 * tp_heap_stats after Go's runtime/metrics: the pause histogram counts
 * every pause, two per concurrent collection (pause 1 and pause 2), each in
 * the bucket of its duration (consistent with last_pause_ns, pause_max_ns,
 * pause_total_ns, and stop_total_ns/stop_max_ns within them); the phase is idle between collections; mark assist is 0
 * (the collector has none) and background mark CPU grows with the
 * concurrent marks; tp_heap_read_stats racing collections, allocations and
 * arena registrations from other threads (seeded, time-bounded, more
 * threads than cores) sees every counter monotonic (ThreadSanitizer checks
 * the reads are race-free).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tidepool/arena.h>
#include <tidepool/gc.h>

#include "gc_test_util.h"
#include "test_util.h"

struct node {
  struct node *next;
  uint64_t pad[5];
};
static const size_t node_offs[] = {offsetof(struct node, next)};
static const tp_type node_type = {"node", sizeof(struct node), NULL, node_offs, 1, NULL, 0};

static unsigned bucket_of(uint64_t ns) {
  unsigned k = 0;
  while (k + 1 < TP_HEAP_PAUSE_BUCKETS && tp_heap_pause_bucket_ns(k + 1) <= ns) k++;
  return k;
}

static uint64_t hist_sum(const tp_heap_stats *s) {
  uint64_t n = 0;
  for (unsigned k = 0; k < TP_HEAP_PAUSE_BUCKETS; k++) n += s->pause_hist[k];
  return n;
}

static void test_bucket_bounds(void **state) {
  (void)state;
  assert_int_equal(tp_heap_pause_bucket_ns(0), 0);
  assert_int_equal(tp_heap_pause_bucket_ns(1), 1024);
  for (unsigned k = 1; k + 1 < TP_HEAP_PAUSE_BUCKETS; k++)
    assert_int_equal(tp_heap_pause_bucket_ns(k + 1), 2 * tp_heap_pause_bucket_ns(k));
  assert_int_equal(tp_heap_pause_bucket_ns(TP_HEAP_PAUSE_BUCKETS - 1), (uint64_t)1 << 32);
  assert_int_equal(tp_heap_pause_bucket_ns(TP_HEAP_PAUSE_BUCKETS), UINT64_MAX);
}

static void test_histogram(void **state) {
  (void)state;
  tp_heap_config c = {.trigger_percent = 0, .region_size = 64 << 10};
  tp_heap *h = tp_heap_create(&c);
  assert_non_null(h);
  struct node *list = NULL;
  assert_int_equal(tp_root_add(h, (void **)&list), 0);
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(h, &s), 0);
  assert_int_equal(hist_sum(&s), 0);
  assert_int_equal(s.pauses, 0);
  assert_int_equal(s.phase, TP_GC_PHASE_IDLE);
  /* Collections of growing live heaps: pauses of several durations. */
  for (int round = 0; round < 40; round++) {
    for (int i = 0; i < 500 * round; i++) {
      struct node *n = tp_heap_alloc(h, &node_type);
      n->next = list;
      list = n;
    }
    tp_heap_collect(h);
    assert_int_equal(tp_heap_read_stats(h, &s), 0);
    /* Every pause in one bucket; two per collection here: each is a
     * concurrent cycle (the marker thread runs), pause 1 and pause 2. */
    assert_int_equal(hist_sum(&s), s.pauses);
    assert_int_equal(s.pauses, 2 * s.num_gc);
    assert_int_equal(s.phase, TP_GC_PHASE_IDLE);
    /* The last pause is in its bucket; nothing above the max's bucket. */
    unsigned kl = bucket_of(s.last_pause_ns), km = bucket_of(s.pause_max_ns);
    assert_true(s.pause_hist[kl] >= 1);
    assert_true(s.pause_hist[km] >= 1);
    for (unsigned k = km + 1; k < TP_HEAP_PAUSE_BUCKETS; k++) assert_int_equal(s.pause_hist[k], 0);
    /* The total lies between the buckets' bounds. */
    uint64_t lo = 0, hi = 0;
    for (unsigned k = 0; k < TP_HEAP_PAUSE_BUCKETS; k++) {
      lo += s.pause_hist[k] * tp_heap_pause_bucket_ns(k);
      hi += s.pause_hist[k] * (tp_heap_pause_bucket_ns(k + 1) - 1);
    }
    assert_true(lo <= s.pause_total_ns && s.pause_total_ns <= hi);
    /* Stopping is part of each pause, and takes some time (two clock
     * reads at least). */
    assert_true(s.stop_total_ns > 0);
    assert_true(s.stop_total_ns <= s.pause_total_ns);
    assert_true(s.stop_max_ns <= s.pause_max_ns);
  }
  assert_int_equal(s.num_gc, 40);
  /* Manual only: no goal, so no allocation assisted or waited. */
  assert_int_equal(s.mark_assist_ns, 0);
  assert_int_equal(s.assists, 0);
  assert_int_equal(s.limit_waits, 0);
  assert_int_equal(s.gc_trigger, UINT64_MAX);
  assert_int_equal(s.gc_hard_limit, UINT64_MAX);
  assert_true(s.mark_bg_cpu_ns > 0);     /* 40 concurrent marks, of up to 390k objects */
  printf("histogram:");
  for (unsigned k = 0; k < TP_HEAP_PAUSE_BUCKETS; k++)
    if (s.pause_hist[k]) printf(" [%llu ns..) %llu", (unsigned long long)tp_heap_pause_bucket_ns(k),
                                (unsigned long long)s.pause_hist[k]);
  printf("\n");
  list = NULL;
  tp_heap_destroy(h);
}

/* ---- reads racing collections --------------------------------------------------- */

struct race {
  tp_heap *h;
  int stop;
  tt_failures f;
  uint64_t seed;
  uint64_t reads, phases[4];
};

static void *mutator(void *p) {
  struct race *r = p;
  uint64_t seed = r->seed ^ (uint64_t)(uintptr_t)&seed;
  struct node *keep = NULL;
  tp_root_add(r->h, (void **)&keep);
  tp_arena *a = tp_arena_create(NULL);
  while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
    uint64_t x = tt_rand(&seed);
    struct node *n = tp_heap_alloc(r->h, &node_type);
    if (!n) {
      tt_fail_once(&r->f, "alloc");
      break;
    }
    if (x % 64 == 0) keep = NULL; /* garbage */
    n->next = keep;
    keep = n;
    if (x % 4096 == 0) tp_heap_collect(r->h);
    if (a && x % 1024 == 1) {
      /* The arenas count changes under the readers too. */
      if (tp_heap_add_arena(r->h, a) == 0) tp_heap_remove_arena(r->h, a);
    }
  }
  tp_root_remove(r->h, (void **)&keep);
  tp_arena_destroy(a);
  tp_heap_detach(r->h);
  return NULL;
}

static void *reader(void *p) {
  struct race *r = p;
  tp_heap_stats prev, s;
  memset(&prev, 0, sizeof prev);
  while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
    if (tp_heap_read_stats(r->h, &s) != 0) {
      tt_fail_once(&r->f, "read_stats");
      break;
    }
    /* Each word is monotonic on its own (the set is not a snapshot). */
    if (s.num_gc < prev.num_gc || s.pauses < prev.pauses || s.pause_total_ns < prev.pause_total_ns ||
        s.pause_max_ns < prev.pause_max_ns || s.mark_bg_cpu_ns < prev.mark_bg_cpu_ns ||
        s.mark_assist_ns < prev.mark_assist_ns || s.assists < prev.assists ||
        s.limit_waits < prev.limit_waits || s.limit_wait_ns < prev.limit_wait_ns ||
        s.stop_total_ns < prev.stop_total_ns || s.stop_max_ns < prev.stop_max_ns)
      tt_fail_once(&r->f, "a counter went backwards");
    for (unsigned k = 0; k < TP_HEAP_PAUSE_BUCKETS; k++)
      if (s.pause_hist[k] < prev.pause_hist[k]) tt_fail_once(&r->f, "bucket %u went backwards", k);
    if (s.phase > TP_GC_PHASE_SWEEP) tt_fail_once(&r->f, "phase %u", s.phase);
    else __atomic_fetch_add(&r->phases[s.phase], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->reads, 1, __ATOMIC_RELAXED);
    prev = s;
  }
  return NULL;
}

static int race_enough(void *p) {
  struct race *r = p;
  tp_heap_stats s;
  tp_heap_read_stats(r->h, &s);
  return s.num_gc >= 10 && __atomic_load_n(&r->reads, __ATOMIC_RELAXED) >= 1000;
}

static void test_read_race(void **state) {
  (void)state;
  tp_heap_config c = {.trigger_percent = 50, .min_heap_bytes = 1 << 20, .region_size = 64 << 10};
  struct race r = {.h = tp_heap_create(&c), .seed = tt_seed("gc_metrics read race")};
  assert_non_null(r.h);
  pthread_t m[2], rd[3];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&m[i], NULL, mutator, &r), 0);
  for (int i = 0; i < 3; i++) assert_int_equal(pthread_create(&rd[i], NULL, reader, &r), 0);
  tt_run_until(tt_deadline(2), &r.f, race_enough, &r, &r.stop);
  for (int i = 0; i < 2; i++) assert_int_equal(tt_join_within(m[i], TT_HANG_MS, NULL), 0);
  for (int i = 0; i < 3; i++) assert_int_equal(tt_join_within(rd[i], TT_HANG_MS, NULL), 0);
  tt_assert_no_failures(&r.f);
  /* Quiescent: a cycle the mutators asked for may still run; this one
   * waits for it (and one more) to end. */
  tp_heap_collect(r.h);
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(r.h, &s), 0);
  /* Every pause counted once: two per concurrent collection, one per
   * stop-the-world fallback. */
  assert_int_equal(hist_sum(&s), s.pauses);
  assert_true(s.pauses >= s.num_gc && s.pauses <= 2 * s.num_gc);
  assert_int_equal(s.phase, TP_GC_PHASE_IDLE);
  assert_int_equal(s.arenas, 0);
  printf("read race: %llu collections, %llu pauses, %llu reads (idle %llu, mark %llu, "
         "mark termination %llu, sweep %llu)\n",
         (unsigned long long)s.num_gc, (unsigned long long)s.pauses, (unsigned long long)r.reads,
         (unsigned long long)r.phases[0], (unsigned long long)r.phases[1],
         (unsigned long long)r.phases[2], (unsigned long long)r.phases[3]);
  assert_true(s.num_gc >= 10);
  tp_heap_destroy(r.h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bucket_bounds),
      cmocka_unit_test(test_histogram),
      cmocka_unit_test(test_read_race),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
