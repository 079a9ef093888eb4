/*
 * A put that leaves the CPU cache moves a batch to a magazine and then puts
 * the object back into the cache; when that second push fails (the thread
 * moved to a CPU whose cache is full, or percpu-cas found the block held),
 * the object joins the magazine. With a full-size batch (TP__MAG_CAP
 * objects) it used to be written one slot past the magazine's end, into the
 * next magazine's header: objects that were never the pool's came out of a
 * later refill (found by pool_stress_test and sweeper_test under
 * --config=norseq, about one run in thirty).
 *
 * This test makes the failing push happen on purpose. It runs the percpu-cas
 * mode (TIDEPOOL_PERCPU=cas) and defines sched_getcpu, which that mode uses to
 * pick a CPU, so that inside one tp_pool_put the pop runs on "CPU 0" (full)
 * and the push on "CPU 1" (full as well). The batch that reaches the depot
 * must hold at most a magazine's worth. One thread; needs no second core.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <tidepool/percpu.h>
#include <tidepool/pool.h>

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"

#define MAG_CAP 510 /* TP__MAG_CAP (pool/depot_internal.h, not exported): objects per magazine */

/* The CPU the library sees: `fake_cpu`, or the next entry of `script` while
 * one is armed. The library calls this (percpu-cas mode) to pick a block. */
static int fake_cpu;
static const int *script;
static int script_len, script_at;

int sched_getcpu(void) {
  if (script && script_at < script_len) return script[script_at++];
  return fake_cpu;
}

static tp_pool_stats stats(tp_pool *p) {
  tp_pool_stats s;
  assert_int_equal(tp_pool_read_stats(p, &s), 0);
  return s;
}

static void test_full_batch_and_a_failed_push(void **state) {
  (void)state;
  assert_string_equal(tp_percpu_mode(), "percpu-cas");
  tp_pool_config cfg = {.name = "mag", .obj_size = 64};
  tp_pool *p = tp_pool_create(&cfg);
  assert_non_null(p);
  tp_pool_stats s;
  assert_int_equal(tp_pool_read_stats(p, &s), 0);
  if (s.ncpu < 2) {
    /* The case needs two CPU caches. */
    print_message("  skipped: %u CPU cache\n", s.ncpu);
    tp_pool_destroy(p);
    skip();
  }
  /* 64-byte objects make full-size batches; if the batch rule or the
   * magazine size changes, this test must change with them. */
  assert_int_equal(s.batch, MAG_CAP);
  const unsigned cap = s.cpu_cache_cap;
  size_t n = 4 * (size_t)cap;
  void **objs = calloc(n, sizeof *objs);
  assert_non_null(objs);

  /* Take objects on CPU 0 (its cache keeps what refills left over). */
  fake_cpu = 0;
  for (size_t i = 0; i < n; i++) assert_non_null(objs[i] = tp_pool_get(p));
  size_t next = 0;
  /* CPU 1: empty until now; cap puts fill it exactly. */
  uint64_t before = stats(p).cached_cpu;
  fake_cpu = 1;
  for (unsigned i = 0; i < cap; i++) tp_pool_put(p, objs[next++]);
  assert_int_equal(stats(p).cached_cpu, before + cap);
  /* CPU 0: put until it is full too (a put into a full cache moves a batch
   * out, so keep going until both are at cap). */
  fake_cpu = 0;
  while (stats(p).cached_cpu < 2 * (uint64_t)cap) {
    assert_true(next < n);
    tp_pool_put(p, objs[next++]);
  }

  /* The put: the push into CPU 0 fails (full), the batch is popped from
   * CPU 0, the object's push lands on CPU 1 (full) and fails. */
  uint64_t depot0 = stats(p).cached_depot;
  static const int order[] = {0, 0, 1};
  script = order, script_len = 3, script_at = 0;
  tp_pool_put(p, objs[next++]);
  script = NULL;
  assert_int_equal(script_at, 3); /* the put took the path this test is for */
  uint64_t moved = stats(p).cached_depot - depot0;
  print_message("  batch to the depot: %lu objects (a magazine holds %d)\n",
                (unsigned long)moved, MAG_CAP);
  /* The depot had room: the batch (one short of a magazine) and the
   * object are all there, and no more. */
  assert_int_equal(moved, MAG_CAP);

  /* Give the rest back and let destroy account for everything. */
  for (size_t i = next; i < n; i++) tp_pool_put(p, objs[i]);
  assert_int_equal(tp_pool_read_stats(p, &s), 0);
  assert_int_equal(s.in_use, 0);
  tp_pool_destroy(p);
  free(objs);
}

/* Before the library starts: the mode is chosen once. */
TT_SETENV_AT_START(TIDEPOOL_PERCPU, "cas")

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_batch_and_a_failed_push),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
