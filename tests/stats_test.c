/*
 * tp_stats_print (<tidepool/stats.h>): the table shows every section with
 * the figures of what the test did; bad arguments and write errors are
 * reported; and reports written from several threads — plain, inside read
 * sections and from retire callbacks — while other threads churn pools,
 * arenas, heaps and retires neither block them nor crash (ThreadSanitizer
 * and AddressSanitizer check the reads in CI). Seeded, time-bounded.
 */
#include <tidepool/tidepool.h>

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/test_util.h"

static const tp_type node_type = {"node", 64, NULL, NULL, 0, NULL, TP_TYPE_LEAF};

/* The report as a string. */
static char *report(const char *opts) {
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  assert_non_null(m);
  assert_int_equal(tp_stats_print(m, opts), 0);
  fclose(m);
  return buf;
}

static void test_table_sections(void **state) {
  (void)state;
  tp_pool_config pc = {.name = "stats-conn", .obj_size = 200};
  tp_pool *p = tp_pool_create(&pc);
  assert_non_null(p);
  void *objs[37];
  for (int i = 0; i < 37; i++) assert_non_null(objs[i] = tp_pool_get(p));
  tp_arena *a = tp_arena_create(NULL);
  assert_non_null(tp_arena_alloc(a, 100));
  tp_heap *h = tp_heap_create(NULL);
  assert_non_null(h);
  assert_non_null(tp_heap_alloc(h, &node_type));
  tp_heap_collect(h);
  void *r = tp_pool_get(p);
  assert_int_equal(tp_pool_retire(p, r), 0);
  assert_int_equal(tp_epoch_barrier(), 0);

  char *t = report(NULL);
  printf("%s", t);
  assert_non_null(strstr(t, "statistics (pid"));
  assert_non_null(strstr(t, "process: mapped "));
  /* The pool's row: name, size 200, 37 in use. */
  const char *row = strstr(t, "\nstats-conn ");
  assert_non_null(row);
  unsigned long size, in_use;
  assert_int_equal(sscanf(row + 1, "stats-conn %lu %lu", &size, &in_use), 2);
  assert_int_equal(size, 200);
  assert_int_equal(in_use, 37);
  assert_non_null(strstr(t, "\narena chunk pools (chunks):\n"));
  assert_null(strstr(t, "(none: no arena created yet)"));
  assert_non_null(strstr(t, "\nepoch: retired "));
  assert_non_null(strstr(t, "\nsweeper: not running, interval 50 ms, decay 1000 ms"));
  assert_non_null(strstr(t, "\nheaps (tracing collector): 1\n"));
  assert_non_null(strstr(t, "\nheap 0: "));
  assert_non_null(strstr(t, "  collections 1,"));
  free(t);

  /* JSON: the same figures (json_test parses it with python3). */
  t = report("json");
  assert_non_null(strstr(t, "\"name\": \"stats-conn\", \"obj_size\": 200, \"stride\": "));
  assert_non_null(strstr(t, "\"in_use\": 37,"));
  assert_non_null(strstr(t, "\"num_gc\": 1,"));
  free(t);

  for (int i = 0; i < 37; i++) tp_pool_put(p, objs[i]);
  tp_heap_destroy(h);
  tp_arena_destroy(a);
  tp_pool_destroy(p);
  t = report(NULL);
  assert_null(strstr(t, "\nstats-conn "));
  assert_non_null(strstr(t, "\nheaps (tracing collector): 0\n"));
  free(t);
}

static void test_bad_arguments(void **state) {
  (void)state;
  errno = 0;
  assert_int_equal(tp_stats_print(NULL, NULL), -EINVAL);
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_int_equal(tp_stats_print(stdout, "yaml"), -EINVAL);
  assert_int_equal(errno, EINVAL);
  assert_int_equal(tp_stats_print(stdout, "jsonx"), -EINVAL);
  /* A stream that cannot be written. */
  FILE *ro = fopen("/dev/null", "r");
  assert_non_null(ro);
  errno = 0;
  assert_int_equal(tp_stats_print(ro, NULL), -EIO);
  assert_int_equal(errno, EIO);
  fclose(ro);
}

/* ---- reports while everything else runs ------------------------------------ */

static atomic_bool stop;
static atomic_ulong reports, churn_ops, callback_reports;
static tp_pool *shared_pool;
static FILE *sink;

static void report_in_callback(void *obj, void *arg) {
  (void)arg;
  if (tp_stats_print(sink, (uintptr_t)obj & 16 ? "json" : NULL) == 0)
    atomic_fetch_add(&callback_reports, 1);
  tp_pool_put(shared_pool, obj);
}

static void *churn(void *arg) {
  uint64_t seed = (uint64_t)(uintptr_t)arg;
  tp_heap *h = tp_heap_create(NULL);
  assert_non_null(h);
  while (!atomic_load(&stop)) {
    seed = seed * 6364136223846793005u + 1442695040888963407u;
    switch ((seed >> 33) % 5) {
      case 0: { /* pool registry churn */
        tp_pool_config pc = {.name = "churn", .obj_size = 16 + (seed >> 40) % 512};
        tp_pool *p = tp_pool_create(&pc);
        assert_non_null(p);
        void *o = tp_pool_get(p);
        tp_pool_put(p, o);
        tp_pool_destroy(p);
        break;
      }
      case 1: { /* arenas (and their chunk pools) */
        tp_arena *a = tp_arena_create(NULL);
        for (int i = 0; i < 64; i++) assert_non_null(tp_arena_alloc(a, 256));
        tp_arena_destroy(a);
        break;
      }
      case 2: /* the heap */
        for (int i = 0; i < 256; i++) assert_non_null(tp_heap_alloc(h, &node_type));
        if ((seed >> 45) % 8 == 0) tp_heap_collect(h);
        break;
      case 3: { /* retires, some of whose callbacks write a report */
        void *o = tp_pool_get(shared_pool);
        assert_non_null(o);
        if ((seed >> 50) % 16 == 0) {
          assert_int_equal(tp_epoch_retire(o, report_in_callback, NULL), 0);
        } else {
          assert_int_equal(tp_pool_retire(shared_pool, o), 0);
        }
        break;
      }
      default: { /* a heap created and destroyed (heap registry churn) */
        tp_heap *h2 = tp_heap_create(NULL);
        assert_non_null(h2);
        tp_heap_destroy(h2);
        break;
      }
    }
    atomic_fetch_add(&churn_ops, 1);
  }
  tp_heap_destroy(h);
  return NULL;
}

static void *reporter(void *arg) {
  uintptr_t k = (uintptr_t)arg;
  while (!atomic_load(&stop)) {
    int in_section = k & 1;
    if (in_section) tp_epoch_enter();
    assert_int_equal(tp_stats_print(sink, k & 2 ? "json" : NULL), 0);
    if (in_section) tp_epoch_leave();
    atomic_fetch_add(&reports, 1);
    k++;
  }
  return NULL;
}

static void test_concurrent_reports(void **state) {
  (void)state;
  uint64_t seed = tt_seed("stats_test concurrent");
  sink = fopen("/dev/null", "w");
  assert_non_null(sink);
  tp_pool_config pc = {.name = "retired", .obj_size = 64};
  shared_pool = tp_pool_create(&pc);
  assert_non_null(shared_pool);
  assert_int_equal(tp_sweeper_start(&(tp_sweeper_config){1, 1, 0}), 0);
  /* More threads than the CI machine has cores. */
  enum { NCHURN = 3, NREP = 2 };
  pthread_t t[NCHURN + NREP];
  for (int i = 0; i < NCHURN; i++)
    assert_int_equal(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(seed + (uint64_t)i * 7919)), 0);
  for (int i = 0; i < NREP; i++)
    assert_int_equal(pthread_create(&t[NCHURN + i], NULL, reporter, (void *)(uintptr_t)i), 0);
  uint64_t end = tt_deadline(2.0);
  while (tt_now_ns() < end) usleep(10000);
  atomic_store(&stop, true);
  for (int i = 0; i < NCHURN + NREP; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  tp_sweeper_stop();
  printf("reports %lu (from retire callbacks %lu), churn operations %lu\n", atomic_load(&reports),
         atomic_load(&callback_reports), atomic_load(&churn_ops));
  /* Both sides made progress: reports did not stall the churn, nor it them. */
  assert_true(atomic_load(&reports) > 0);
  assert_true(atomic_load(&churn_ops) > 0);
  tp_pool_destroy(shared_pool);
  fclose(sink);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table_sections),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_concurrent_reports),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
