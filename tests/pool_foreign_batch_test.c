/*
 * Issue 14, fault 6 (release library): a pointer that is not an
 * object of the pool it is put into.
 *
 * Fault 6: the inline put does not check the owner (that is what keeps it
 * fast), so another pool's object, or (void *)16, sits in the CPU cache
 * unnoticed. When it leaves the cache in a batch — flushed to the depot by
 * a put that finds the cache full, or drained by the sweeper — it must
 * abort with a message before any count moves, not be freed into the wrong
 * pool's slabs.
 *
 * Under ASan/TSan every put takes the checked slow path, so the foreign put
 * itself aborts, with the same message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <tidepool/tidepool.h>

#include "tests/death.h"

#define MSG "not from this pool"

static void pin_here(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  int c = sched_getcpu();
  CPU_SET(c < 0 ? 0 : c, &set);
  sched_setaffinity(0, sizeof set, &set);
}

static tp_pool *mk(const char *name) {
  return tp_pool_create(&(tp_pool_config){.name = name, .obj_size = 64});
}

/* Fills a's CPU cache to one below its cap with a's own objects, puts
 * `foreign` on top, then one more own object: the cache is full, so the
 * put flushes the top batch — foreign included — towards the depot. */
static void do_flush_foreign(void *foreign_arg) {
  pin_here();
  tp_pool *a = mk("a"), *b = mk("b");
  void *foreign = foreign_arg ? foreign_arg : tp_pool_get(b);
  static void *own[8192];
  size_t n = 0;
  tp_pool_stats st;
  tp_pool_read_stats(a, &st);
  size_t cap = st.cpu_cache_cap;
  while (n < 2 * cap + 2) own[n++] = tp_pool_get(a);
  tp_pool_read_stats(a, &st);
  size_t have = st.cached_cpu;
  while (have + 1 < cap) tp_pool_put(a, own[--n]), have++;
  tp_pool_put(a, foreign);
  tp_pool_put(a, own[--n]); /* full: the batch with foreign leaves */
  fprintf(stderr, "survived the flush\n");
}

static void foreign_object_flushed_to_depot_aborts(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_flush_foreign, NULL, MSG));
}

static void small_integer_flushed_to_depot_aborts(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_flush_foreign, (void *)16, MSG));
}

/* A foreign object in an idle CPU cache: the sweeper's drain finds it
 * (two passes: the first notes the cache idle, the second drains it). */
static void do_drain_foreign(void *foreign_arg) {
  pin_here();
  tp_pool *a = mk("a"), *b = mk("b");
  void *keep = tp_pool_get(a); /* a's cache has room */
  (void)keep;
  void *foreign = foreign_arg ? foreign_arg : tp_pool_get(b);
  tp_pool_put(a, foreign);
  tp_sweep_all();
  tp_sweep_all();
  tp_sweep_all();
  fprintf(stderr, "survived the drain\n");
}

static void foreign_object_drained_by_sweeper_aborts(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_drain_foreign, NULL, MSG));
}

static void small_integer_drained_by_sweeper_aborts(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_drain_foreign, (void *)16, MSG));
}

/* And none of the checks fires on correct use with batches moving. */
static void correct_batches_pass(void **s) {
  (void)s;
  tp_pool *a = mk("a");
  static void *v[20000];
  for (int r = 0; r < 3; r++) {
    for (int i = 0; i < 20000; i++) assert_non_null(v[i] = tp_pool_get(a));
    tp_pool_put_bulk(a, v, 10000);
    for (int i = 10000; i < 20000; i++) tp_pool_put(a, v[i]);
    tp_sweep_all();
    tp_sweep_all();
  }
  assert_int_equal(tp_pool_retire(a, tp_pool_get(a)), 0);
  tp_pool_destroy(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(foreign_object_flushed_to_depot_aborts),
      cmocka_unit_test(small_integer_flushed_to_depot_aborts),
      cmocka_unit_test(foreign_object_drained_by_sweeper_aborts),
      cmocka_unit_test(small_integer_drained_by_sweeper_aborts),
      cmocka_unit_test(correct_batches_pass),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
