/*
 * Concurrent arena stress (issue 5): 8 threads on 2 cores allocate from one
 * TP_ARENA_CONCURRENT arena (random sizes, aligned, calloc, strdup, large,
 * cleanups), each writing a pattern that names the thread and allocation
 * into every byte it got, and reading the stats now and then (stats may run
 * alongside allocations, not alongside reset). After each
 * round every pattern is checked, all allocations are sorted and checked
 * for overlap, the stats are checked, and the arena is reset for the next
 * round. Seeded, time-bounded; meant to run under TSan as well.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <tidepool/arena.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"

#define NTHREADS 8
#define PER_ROUND 4000

struct rec {
  unsigned char *p;
  size_t n;
  unsigned char pat;
};

static tp_arena *arena;
static struct rec recs[NTHREADS][PER_ROUND];
static uint64_t seed;
static int round_no;
static unsigned cleanups_registered, cleanups_run;
static pthread_barrier_t go, done;

static void cleanup(void *arg) {
  (void)arg;
  __atomic_fetch_add(&cleanups_run, 1, __ATOMIC_RELAXED);
}

static long thread_error;

/* One round of one thread: 0, or an error code. */
static long do_round(uintptr_t id, int r) {
  {
    uint64_t rng = seed ^ (id << 32) ^ (uint64_t)r * 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < PER_ROUND; i++) {
      uint64_t k = tt_rand(&rng);
      size_t n = k % 300;
      unsigned char *p;
      unsigned char pat = (unsigned char)(id * 31 + (uint64_t)i * 7 + 1);
      switch ((k >> 20) % 16) {
        case 0:
          n = 1 + k % 5000;
          p = tp_arena_alloc_aligned(arena, n, (size_t)1 << ((k >> 40) % 13));
          break;
        case 1:
          p = tp_arena_calloc(arena, n, 3);
          n *= 3;
          if (p)
            for (size_t b = 0; b < n; b++)
              if (p[b]) return 1; /* calloc not zero */
          break;
        case 2: {
          char s[64];
          snprintf(s, sizeof s, "t%lu-%d", (unsigned long)id, i);
          p = (unsigned char *)tp_arena_strdup(arena, s);
          if (p && strcmp((char *)p, s)) return 2;
          n = strlen(s) + 1;
          break;
        }
        case 3:
          if ((k >> 32) % 64 == 0) n = 16 * 1024 + k % 40000; /* large */
          p = tp_arena_alloc(arena, n);
          break;
        case 4:
          if (tp_arena_on_reset(arena, cleanup, NULL) != 0) return 3;
          __atomic_fetch_add(&cleanups_registered, 1, __ATOMIC_RELAXED);
          p = tp_arena_alloc(arena, n);
          break;
        default:
          p = tp_arena_alloc(arena, n);
      }
      if (!p) return 4;
      if ((uintptr_t)p % 16) return 5;
      memset(p, pat, n);
      recs[id][i] = (struct rec){p, n, pat};
      if (i % 256 == 0) {
        tp_arena_stats s;
        if (tp_arena_read_stats(arena, &s) != 0 || s.bytes_held < s.chunks) return 7;
      }
      /* Re-check an earlier allocation of this thread now and then. */
      if (i && k % 8 == 0) {
        struct rec *o = &recs[id][k % (uint64_t)i];
        for (size_t b = 0; b < o->n; b++)
          if (o->p[b] != o->pat) return 6;
      }
    }
  }
  return 0;
}

static void *allocator(void *arg) {
  uintptr_t id = (uintptr_t)arg;
  for (;;) {
    pthread_barrier_wait(&go);
    int r = __atomic_load_n(&round_no, __ATOMIC_RELAXED);
    if (r < 0) return NULL;
    long e = do_round(id, r);
    if (e) {
      long z = 0;
      __atomic_compare_exchange_n(&thread_error, &z, e * 100 + (long)id, 0, __ATOMIC_RELAXED,
                                  __ATOMIC_RELAXED);
      memset(recs[id], 0, sizeof recs[id]); /* nothing to check */
    }
    pthread_barrier_wait(&done);
  }
}

static int cmp_rec(const void *a, const void *b) {
  const struct rec *x = a, *y = b;
  return x->p < y->p ? -1 : x->p > y->p;
}

static void check_round(void) {
  static struct rec all[NTHREADS * PER_ROUND];
  size_t m = 0, sum = 0;
  for (int t = 0; t < NTHREADS; t++)
    for (int i = 0; i < PER_ROUND; i++) {
      struct rec *r = &recs[t][i];
      for (size_t b = 0; b < r->n; b++)
        if (r->p[b] != r->pat) fail_msg("thread %d alloc %d: byte %zu overwritten", t, i, b);
      all[m++] = *r;
      sum += r->n;
    }
  qsort(all, m, sizeof *all, cmp_rec);
  for (size_t i = 1; i < m; i++) {
    /* Size-0 requests take 16 bytes: count at least one byte each. */
    size_t len = all[i - 1].n ? all[i - 1].n : 1;
    if (all[i - 1].p + len > all[i].p)
      fail_msg("allocations overlap: %p+%zu and %p", (void *)all[i - 1].p, all[i - 1].n,
               (void *)all[i].p);
  }
  tp_arena_stats s;
  assert_int_equal(tp_arena_read_stats(arena, &s), 0);
  assert_true(s.allocated >= sum);
  assert_true(s.bytes_held >= s.allocated);
  assert_true(s.high_water >= s.bytes_held);
}

static void test_concurrent_stress(void **state) {
  (void)state;
  seed = tt_seed("arena_concurrent_test");
  tp_arena_config c = {.chunk_size = 16 * 1024, .keep_bytes = 64 * 1024,
                       .flags = TP_ARENA_CONCURRENT};
  arena = tp_arena_create(&c);
  assert_non_null(arena);
  pthread_barrier_init(&go, NULL, NTHREADS + 1);
  pthread_barrier_init(&done, NULL, NTHREADS + 1);
  pthread_t t[NTHREADS];
  for (uintptr_t i = 0; i < NTHREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, allocator, (void *)i), 0);
  uint64_t end = tt_deadline(2.0);
  int rounds = 0;
  unsigned expect_cleanups = 0;
  do {
    __atomic_store_n(&round_no, rounds, __ATOMIC_RELAXED);
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&done);
    long e = __atomic_load_n(&thread_error, __ATOMIC_RELAXED);
    if (e) {
      __atomic_store_n(&round_no, -1, __ATOMIC_RELAXED);
      pthread_barrier_wait(&go);
      fail_msg("round %d: thread %ld failed with code %ld", rounds, e % 100, e / 100);
    }
    check_round();
    expect_cleanups = __atomic_load_n(&cleanups_registered, __ATOMIC_RELAXED);
    tp_arena_reset(arena); /* no thread uses the arena now */
    assert_int_equal(__atomic_load_n(&cleanups_run, __ATOMIC_RELAXED), expect_cleanups);
    tp_arena_stats s;
    assert_int_equal(tp_arena_read_stats(arena, &s), 0);
    assert_int_equal(s.allocated, 0);
    assert_int_equal(s.large, 0);
    assert_true(s.chunks <= 1 + 4);
    rounds++;
  } while ((tt_now_ns() < end || rounds < 2) && rounds < 1000);
  __atomic_store_n(&round_no, -1, __ATOMIC_RELAXED);
  pthread_barrier_wait(&go);
  for (int i = 0; i < NTHREADS; i++) {
    pthread_join(t[i], NULL);
  }
  printf("  %d rounds of %d x %d allocations, %u cleanups\n", rounds, NTHREADS, PER_ROUND,
         expect_cleanups);
  tp_arena_destroy(arena);
  pthread_barrier_destroy(&go);
  pthread_barrier_destroy(&done);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_concurrent_stress),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
