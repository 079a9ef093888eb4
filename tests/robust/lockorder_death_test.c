/*
 * The lock-order checker of debug builds (core/lockorder.c): a call that
 * takes locks against the documented order aborts naming both. Each case
 * is a real inversion reachable through the API:
 *   - a pool ctor (run under the pool's slab lock) that runs a sweeper pass
 *     (the pass lock ranks below pool locks: a pass takes them under it);
 *   - a pool ctor that waits for an epoch grace period, by synchronize or
 *     by barrier (readers take pool locks inside their sections);
 *   - a pool ctor that forks (fork's prepare handlers take every lock);
 * And the other side: the same calls in the documented order do not abort,
 * nor does a grace period waited for by an attached heap thread: its epoch
 * waits are blocking sections of its heaps (issue 14, fault 3). Before that
 * fix the checker aborted there ("waiting for an epoch grace period ...
 * while holding attached heap mutator"), which is the deadlock of fault 3:
 * a thread parked for a collection inside its read section waits for it.
 */
#include <tidepool/epoch.h>
#include <tidepool/gc.h>
#include <tidepool/pool.h>
#include <tidepool/sweeper.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/death.h"
#include "tests/test_util.h"

static int ctor_sweep(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  tp_sweep_now();
  return 0;
}
static int ctor_synchronize(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  tp_epoch_synchronize();
  return 0;
}
static int ctor_barrier(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  tp_epoch_barrier();
  return 0;
}
static void noop(void *obj, void *arg) {
  (void)obj;
  (void)arg;
}
static int ctor_fork(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  return 0;
}

static void get_with_ctor(void *arg) {
  /* One-time setup first (it registers fork handlers: the first use of a
   * module from a ctor would abort on the fork table lock instead). */
  static char x;
  tp_sweep_now();
  tp_epoch_retire(&x, noop, NULL); /* so that a barrier has to wait */
  tp_epoch_barrier();
  tp_pool_config cfg = {.name = "ctor", .obj_size = 64, .ctor = (int (*)(void *, void *))arg};
  tp_pool *p = tp_pool_create(&cfg);
  if (p) tp_pool_get(p);
}

static void sweep_in_ctor(void **state) {
  (void)state;
  assert_true(tt_dies_with(get_with_ctor, (void *)ctor_sweep, "while holding pool slab lock"));
  assert_true(tt_dies_with(get_with_ctor, (void *)ctor_sweep, "lock order violation: taking sweeper"));
}

static void grace_period_in_ctor(void **state) {
  (void)state;
  /* synchronize takes the grace-period lock, barrier waits on the
   * reclaimer's grace periods without it: both are caught. */
  assert_true(tt_dies_with(get_with_ctor, (void *)ctor_synchronize,
                           "lock order violation: taking epoch grace-period lock"));
  assert_true(tt_dies_with(get_with_ctor, (void *)ctor_synchronize, "while holding pool slab lock"));
  assert_true(tt_dies_with(get_with_ctor, (void *)ctor_barrier,
                           "lock order violation: waiting for an epoch grace period"));
  assert_true(tt_dies_with(get_with_ctor, (void *)ctor_barrier, "while holding pool slab lock"));
}

static void fork_in_ctor(void **state) {
  (void)state;
  assert_true(tt_dies_with(get_with_ctor, (void *)ctor_fork,
                           "taking fork handler table lock (rank 2, core/fork.c"));
  assert_true(tt_dies_with(get_with_ctor, (void *)ctor_fork, "while holding pool slab lock"));
}

/* An attached, running heap thread waits for grace periods: allowed (and
 * checked: the wait is a blocking section, so the heap "lock" is not held). */
static void synchronize_while_attached(void **state) {
  (void)state;
  static char x;
  tp_heap *h = tp_heap_create(NULL);
  assert_non_null(h);
  assert_int_equal(tp_heap_attach(h), 0);
  assert_int_equal(tp_epoch_synchronize(), 0);
  assert_int_equal(tp_epoch_retire(&x, noop, NULL), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  tp_heap_collect(h);
  tp_heap_detach(h);
  tp_heap_destroy(h);
}

/* The same operations in the documented order do not abort. */
static void clean_order(void **state) {
  (void)state;
  tp_pool_config cfg = {.name = "plain", .obj_size = 64};
  tp_pool *p = tp_pool_create(&cfg);
  assert_non_null(p);
  void *o = tp_pool_get(p);
  assert_non_null(o);
  tp_sweep_now();
  assert_int_equal(tp_epoch_synchronize(), 0);
  tp_heap *h = tp_heap_create(NULL);
  assert_non_null(h);
  assert_int_equal(tp_heap_attach(h), 0);
  tp_heap_blocking_enter(h);
  assert_int_equal(tp_epoch_synchronize(), 0); /* not running: fine */
  tp_heap_blocking_leave(h);
  tp_heap_collect(h);
  tp_heap_detach(h);
  tp_heap_destroy(h);
  tp_pool_put(p, o);
  tp_pool_destroy(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(sweep_in_ctor),
      cmocka_unit_test(grace_period_in_ctor),
      cmocka_unit_test(fork_in_ctor),
      cmocka_unit_test(synchronize_while_attached),
      cmocka_unit_test(clean_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
