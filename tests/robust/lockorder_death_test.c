/*
 * The lock-order checker of debug builds (core/lockorder.c): a call that
 * takes locks against the documented order aborts naming both. Each case
 * is a real inversion reachable through the API:
 *   - a pool ctor (run under the pool's slab lock) that runs a sweeper pass
 *     (the pass lock ranks below pool locks: a pass takes them under it);
 *   - a pool ctor that waits for an epoch grace period, by synchronize or
 *     by barrier (readers take pool locks inside their sections);
 *   - a pool ctor that forks (fork's prepare handlers take every lock);
 *   - a pool ctor that creates a pool: the pool registry's lock is a named
 *     lock of core/registry.c (one call site for every registry), ranked
 *     by its name and reported with its owner's file;
 * And the other side: the same calls in the documented order do not abort,
 * nor does a fork with several pools, heaps and concurrent arenas (the
 * registries' handlers take every element's locks in list order under the
 * named registry lock: pool 1's stats lock, then pool 2's slab lock, which
 * ranks below it, is allowed only as a member of the registry's group),
 * nor does a grace period waited for by an attached heap thread: its epoch
 * waits are blocking sections of its heaps (issue 14, fault 3). Before that
 * fix the checker aborted there ("waiting for an epoch grace period ...
 * while holding attached heap mutator"), which is the deadlock of fault 3:
 * a thread parked for a collection inside its read section waits for it.
 */
#include <tidepool/arena.h>
#include <tidepool/epoch.h>
#include <tidepool/gc.h>
#include <tidepool/pool.h>
#include <tidepool/sweeper.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/wait.h>

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

static int ctor_create_pool(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  tp_pool_config cfg = {.name = "inner", .obj_size = 32};
  tp_pool_destroy(tp_pool_create(&cfg));
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

static void create_pool_in_ctor(void **state) {
  (void)state;
  assert_true(tt_dies_with(get_with_ctor, (void *)ctor_create_pool,
                           "taking pool registry lock (rank 30, pool/lifecycle.c"));
  assert_true(tt_dies_with(get_with_ctor, (void *)ctor_create_pool, "while holding pool slab lock"));
}

/* A fork with two of each registered kind: the prepare handlers nest the
 * elements' locks under the registries' named locks without a report, and
 * the child can use every registry. */
static void fork_with_registries(void **state) {
  (void)state;
  tp_pool_config cfg = {.name = "a", .obj_size = 64};
  tp_pool *p1 = tp_pool_create(&cfg), *p2 = tp_pool_create(&cfg);
  tp_heap *h1 = tp_heap_create(NULL), *h2 = tp_heap_create(NULL);
  tp_arena_config ac = {.flags = TP_ARENA_CONCURRENT};
  tp_arena *a1 = tp_arena_create(&ac), *a2 = tp_arena_create(&ac);
  assert_true(p1 && p2 && h1 && h2 && a1 && a2);
  assert_non_null(tp_arena_alloc(a1, 100));
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    tp_pool *p3 = tp_pool_create(&cfg);
    tp_heap *h3 = tp_heap_create(NULL);
    tp_arena *a3 = tp_arena_create(&ac);
    int ok = p3 && h3 && a3 && tp_pool_get(p1) && tp_arena_alloc(a2, 100);
    tp_arena_destroy(a3);
    tp_heap_destroy(h3);
    tp_pool_destroy(p3);
    _exit(ok ? 0 : 1);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  tp_arena_destroy(a2);
  tp_arena_destroy(a1);
  tp_heap_destroy(h2);
  tp_heap_destroy(h1);
  tp_pool_destroy(p2);
  tp_pool_destroy(p1);
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
      cmocka_unit_test(create_pool_in_ctor),
      cmocka_unit_test(synchronize_while_attached),
      cmocka_unit_test(clean_order),
      cmocka_unit_test(fork_with_registries),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
