/*
 * Concurrent arena stress (issue 5): 8 threads on 2 cores allocate from one
 * TP_ARENA_CONCURRENT arena (random sizes, aligned, calloc, strdup, large,
 * cleanups), each writing a pattern that names the thread and allocation
 * into every byte it got, and reading the stats now and then (stats may run
 * alongside allocations, not alongside reset). After each
 * round every pattern is checked, all allocations are sorted and checked
 * for overlap, the stats are checked, and the arena is reset for the next
 * round. Seeded, time-bounded; meant to run under TSan as well.
 *
 * A second test drives the inline region bump (tp_arena_alloc of small
 * sizes: the rseq sequence compiled into this file from arena.h) under a
 * 20 kHz timer signal, so sequences are interrupted and restarted mid-way:
 * every 32-byte allocation is stamped with its thread and index, and after
 * the run every stamp must be intact and no two allocations may overlap.
 * Where the inline bump is off (percpu-cas, ASan builds) the same checks
 * run against the library's path, which the signals interrupt as well.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <tidepool/arena.h>

#include <tidepool/percpu.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

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

/* ---- the inline bump under signals ---------------------------------------- */

#define BUMP_THREADS 4
#define BUMP_PER_ROUND 50000 /* allocations per thread and round */

struct stamp {
  uint64_t thread, index, check, pad;
};
static struct stamp *bumped[BUMP_THREADS][BUMP_PER_ROUND];
static uint64_t alarms;
static int bump_round; /* -1: stop */
static long bump_error;

static void on_alarm(int sig) {
  (void)sig;
  __atomic_fetch_add(&alarms, 1, __ATOMIC_RELAXED);
}

static uint64_t stamp_check(uint64_t id, uint64_t i, int r) {
  return (id * 0x9e3779b97f4a7c15ull) ^ (i << 20) ^ (uint64_t)r;
}

static void *bumper(void *arg) {
  uintptr_t id = (uintptr_t)arg;
  for (;;) {
    pthread_barrier_wait(&go);
    int r = __atomic_load_n(&bump_round, __ATOMIC_RELAXED);
    if (r < 0) return NULL;
    for (size_t i = 0; i < BUMP_PER_ROUND; i++) {
      struct stamp *p = tp_arena_alloc(arena, sizeof *p);
      if (!p) {
        __atomic_store_n(&bump_error, 1, __ATOMIC_RELAXED);
        break;
      }
      *p = (struct stamp){id, i, stamp_check(id, i, r), 0};
      bumped[id][i] = p;
    }
    pthread_barrier_wait(&done);
  }
}

/* After a round: every stamp intact, no two allocations overlapping. */
static void check_bumped(int r) {
  static char *all[BUMP_THREADS * BUMP_PER_ROUND];
  size_t m = 0;
  for (uintptr_t id = 0; id < BUMP_THREADS; id++)
    for (size_t i = 0; i < BUMP_PER_ROUND; i++) {
      struct stamp *p = bumped[id][i];
      if (p->thread != id || p->index != i || p->check != stamp_check(id, i, r))
        fail_msg("round %d, thread %lu, allocation %zu: stamp overwritten", r, (unsigned long)id, i);
      all[m++] = (char *)p;
    }
  qsort(all, m, sizeof *all, tt_cmp_ptr);
  for (size_t i = 1; i < m; i++)
    if (all[i - 1] + sizeof(struct stamp) > all[i])
      fail_msg("allocations overlap: %p and %p", (void *)all[i - 1], (void *)all[i]);
}

static void test_inline_bump_under_signals(void **state) {
  (void)state;
  printf("  per-CPU mode: %s\n", tp_percpu_mode());
  tp_arena_config c = {.flags = TP_ARENA_CONCURRENT};
  arena = tp_arena_create(&c);
  assert_non_null(arena);
  pthread_barrier_init(&go, NULL, BUMP_THREADS + 1);
  pthread_barrier_init(&done, NULL, BUMP_THREADS + 1);
  /* Only the bumpers take the signal: the main thread blocks it, after
   * creating them with it unblocked (a thread inherits the mask). */
  pthread_t t[BUMP_THREADS];
  for (uintptr_t i = 0; i < BUMP_THREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, bumper, (void *)i), 0);
  sigset_t old;
  tt_block_alarm(&old);
  tt_alarm_every(on_alarm, 50);
  uint64_t end = tt_deadline(1.0);
  int r = 0;
  do {
    __atomic_store_n(&bump_round, r, __ATOMIC_RELAXED);
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&done);
    if (__atomic_load_n(&bump_error, __ATOMIC_RELAXED)) break;
    check_bumped(r);
    tp_arena_reset(arena); /* no thread uses the arena now */
    r++;
  } while (tt_now_ns() < end || r < 2);
  tt_alarm_every(NULL, 0);
  __atomic_store_n(&bump_round, -1, __ATOMIC_RELAXED);
  pthread_barrier_wait(&go);
  for (int i = 0; i < BUMP_THREADS; i++) assert_int_equal(tt_join_within(t[i], TT_HANG_MS, NULL), 0);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  assert_int_equal(__atomic_load_n(&bump_error, __ATOMIC_RELAXED), 0); /* no NULL */
  uint64_t n_alarms = __atomic_load_n(&alarms, __ATOMIC_RELAXED);
  printf("  %d rounds of %d x %d allocations, %lu timer signals\n", r, BUMP_THREADS,
         BUMP_PER_ROUND, (unsigned long)n_alarms);
  assert_true(n_alarms > 0); /* signals reached the allocating threads */
  tp_arena_destroy(arena);
  pthread_barrier_destroy(&go);
  pthread_barrier_destroy(&done);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_concurrent_stress),
      cmocka_unit_test(test_inline_bump_under_signals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
