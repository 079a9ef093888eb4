/*
 * Epoch unit tests (issue 4): nesting, -EDEADLK inside a section and inside
 * a retire callback, unbalanced leave, barrier semantics across threads,
 * mode, publish/deref, NULL arguments, configuration defaults, pool retires.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <tidepool/epoch.h>
#include <tidepool/pool.h>

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/test_util.h"

static void count_cb(void *obj, void *arg) {
  (void)obj;
  __atomic_fetch_add((uint64_t *)arg, 1, __ATOMIC_RELAXED);
}

/* ---- nesting ------------------------------------------------------------- */

static uint64_t nest_freed;
static int barrier_done;

static void *barrier_thread(void *arg) {
  (void)arg;
  int rc = tp_epoch_barrier();
  __atomic_store_n(&barrier_done, rc == 0 ? 1 : -1, __ATOMIC_RELEASE);
  return NULL;
}

static void test_nesting(void **state) {
  (void)state;
  assert_int_equal(tp_epoch_in_section(), 0);
  tp_epoch_enter();
  assert_int_equal(tp_epoch_in_section(), 1);
  tp_epoch_enter();
  tp_epoch_enter();
  assert_int_equal(tp_epoch_in_section(), 1);
  /* Retired inside the nest: may not run while any level is open. */
  assert_int_equal(tp_epoch_retire(&nest_freed, count_cb, &nest_freed), 0);
  tp_epoch_leave();
  tp_epoch_leave();
  assert_int_equal(tp_epoch_in_section(), 1); /* still inside the outer one */
  pthread_t t;
  __atomic_store_n(&barrier_done, 0, __ATOMIC_RELAXED);
  assert_int_equal(pthread_create(&t, NULL, barrier_thread, NULL), 0);
  tt_sleep_ms(150);
  assert_int_equal(__atomic_load_n(&nest_freed, __ATOMIC_ACQUIRE), 0);
  assert_int_equal(__atomic_load_n(&barrier_done, __ATOMIC_ACQUIRE), 0);
  tp_epoch_leave();
  assert_int_equal(tp_epoch_in_section(), 0);
  assert_int_equal(tt_join_within(t, TT_HANG_MS, NULL), 0);
  assert_int_equal(__atomic_load_n(&barrier_done, __ATOMIC_ACQUIRE), 1);
  assert_int_equal(__atomic_load_n(&nest_freed, __ATOMIC_ACQUIRE), 1);
}

/* ---- -EDEADLK inside a section ------------------------------------------- */

static void test_synchronize_in_section(void **state) {
  (void)state;
  tp_epoch_enter();
  errno = 0;
  assert_int_equal(tp_epoch_synchronize(), -EDEADLK);
  assert_int_equal(errno, EDEADLK);
  errno = 0;
  assert_int_equal(tp_epoch_barrier(), -EDEADLK);
  assert_int_equal(errno, EDEADLK);
  tp_epoch_enter(); /* nested: still refused */
  errno = 0;
  assert_int_equal(tp_epoch_synchronize(), -EDEADLK);
  assert_int_equal(errno, EDEADLK);
  tp_epoch_leave();
  tp_epoch_leave();
  assert_int_equal(tp_epoch_synchronize(), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
}

/* ---- leave without enter ------------------------------------------------- */

static void *unbalanced_thread(void *arg) {
  (void)arg;
  tp_epoch_leave(); /* never entered, never registered */
  if (tp_epoch_in_section()) return (void *)1;
  tp_epoch_enter();
  tp_epoch_leave();
  tp_epoch_leave(); /* one too many */
  tp_epoch_leave();
  if (tp_epoch_in_section()) return (void *)2;
  if (tp_epoch_synchronize() != 0) return (void *)3;
  tp_epoch_enter();
  int in = tp_epoch_in_section();
  tp_epoch_leave();
  if (!in || tp_epoch_in_section()) return (void *)4;
  return NULL;
}

static void test_unbalanced_leave(void **state) {
  (void)state;
#ifdef TP_DEBUG
  skip(); /* debug builds abort instead (epoch_death_test) */
#endif
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, unbalanced_thread, NULL), 0);
  void *ret = (void *)-1;
  assert_int_equal(pthread_join(t, &ret), 0);
  assert_null(ret);
  /* Same on this (registered) thread; then grace periods still end. */
  tp_epoch_leave();
  tp_epoch_leave();
  assert_int_equal(tp_epoch_in_section(), 0);
  assert_int_equal(tp_epoch_synchronize(), 0);
  uint64_t n = 0;
  assert_int_equal(tp_epoch_retire(&n, count_cb, &n), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(n, 1);
}

/* ---- barrier covers every thread's earlier retires ------------------------ */

#define BT_THREADS 4
#define BT_RETIRES 3000
static uint64_t bt_count;
static pthread_barrier_t bt_sync;

static void *bt_retirer(void *arg) {
  (void)arg;
  for (int i = 0; i < BT_RETIRES; i++)
    if (tp_epoch_retire(NULL, count_cb, &bt_count) != 0) return (void *)1;
  pthread_barrier_wait(&bt_sync); /* retired everything */
  pthread_barrier_wait(&bt_sync); /* main has checked; stay alive until then */
  return NULL;
}

static void test_barrier_all_threads(void **state) {
  (void)state;
  tp_epoch_stats before, after;
  assert_int_equal(tp_epoch_read_stats(&before), 0);
  __atomic_store_n(&bt_count, 0, __ATOMIC_RELAXED);
  pthread_barrier_init(&bt_sync, NULL, BT_THREADS + 1);
  pthread_t t[BT_THREADS];
  for (int i = 0; i < BT_THREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, bt_retirer, NULL), 0);
  pthread_barrier_wait(&bt_sync);
  /* Retirers are alive (queues not orphaned): the barrier alone must run
   * every callback they issued before it. */
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(__atomic_load_n(&bt_count, __ATOMIC_RELAXED),
                   (uint64_t)BT_THREADS * BT_RETIRES);
  assert_int_equal(tp_epoch_read_stats(&after), 0);
  assert_true(after.retired - before.retired >= (uint64_t)BT_THREADS * BT_RETIRES);
  assert_int_equal(after.pending, 0);
  assert_int_equal(after.retired, after.freed);
  assert_true(after.grace_periods > before.grace_periods);
  pthread_barrier_wait(&bt_sync);
  for (int i = 0; i < BT_THREADS; i++) {
    void *ret = (void *)-1;
    pthread_join(t[i], &ret);
    assert_null(ret);
  }
  pthread_barrier_destroy(&bt_sync);
}

/* A retire is not run while a section that began before it is open. */
static int gp_reader_go, gp_reader_stop;

static void *gp_reader(void *arg) {
  (void)arg;
  tp_epoch_enter();
  __atomic_store_n(&gp_reader_go, 1, __ATOMIC_RELEASE);
  tt_wait_for(&gp_reader_stop, 1); /* a hang: the main thread's checks report it */
  tp_epoch_leave();
  return NULL;
}

static void test_grace_period_waits(void **state) {
  (void)state;
  uint64_t n = 0;
  gp_reader_go = gp_reader_stop = 0;
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, gp_reader, NULL), 0);
  assert_true(tt_wait_for(&gp_reader_go, 1));
  assert_int_equal(tp_epoch_retire(&n, count_cb, &n), 0);
  tt_sleep_ms(200); /* the reclaimer runs every ms while something is pending */
  assert_int_equal(__atomic_load_n(&n, __ATOMIC_RELAXED), 0);
  __atomic_store_n(&gp_reader_stop, 1, __ATOMIC_RELEASE);
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(__atomic_load_n(&n, __ATOMIC_RELAXED), 1);
  assert_int_equal(tt_join_within(t, TT_HANG_MS, NULL), 0);
}

/* ---- mode, publish/deref ----------------------------------------------------- */

static void test_mode(void **state) {
  (void)state;
  const char *m = tp_epoch_mode();
  assert_non_null(m);
  assert_true(strcmp(m, "membarrier") == 0 || strcmp(m, "mb") == 0);
  printf("epoch mode: %s\n", m);
}

struct cfg {
  int a, b;
};
static struct cfg *current_cfg;

static void test_publish_deref(void **state) {
  (void)state;
  static struct cfg c1 = {1, 2}, c2 = {3, 4};
  tp_publish(current_cfg, &c1);
  tp_epoch_enter();
  struct cfg *c = tp_deref(current_cfg);
  assert_ptr_equal(c, &c1);
  assert_int_equal(c->a + c->b, 3);
  tp_epoch_leave();
  tp_publish(current_cfg, &c2);
  tp_epoch_enter();
  c = tp_deref(current_cfg);
  assert_ptr_equal(c, &c2);
  assert_int_equal(c->b, 4);
  tp_epoch_leave();
  tp_publish(current_cfg, NULL);
  assert_null(tp_deref(current_cfg));
}

/* ---- NULL arguments -------------------------------------------------------------- */

static void test_null_args(void **state) {
  (void)state;
  int x;
  errno = 0;
  assert_int_equal(tp_epoch_retire(&x, NULL, NULL), -EINVAL);
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_int_equal(tp_epoch_retire_sized(&x, 100, NULL, NULL), -EINVAL);
  assert_int_equal(errno, EINVAL);
  tp_pool_config pc = {.name = "unit", .obj_size = 64};
  tp_pool *p = tp_pool_create(&pc);
  assert_non_null(p);
  errno = 0;
  assert_int_equal(tp_pool_retire(NULL, &x), -EINVAL);
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_int_equal(tp_pool_retire(p, NULL), -EINVAL);
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_int_equal(tp_epoch_read_stats(NULL), -EINVAL);
  assert_int_equal(errno, EINVAL);
  tp_pool_destroy(p);
}

/* ---- configuration ------------------------------------------------------------------ */

static void test_configure_defaults(void **state) {
  (void)state;
  /* TP_RETIRE_CAP=8M was set before the library started (below). */
  tp_epoch_stats s;
  assert_int_equal(tp_epoch_read_stats(&s), 0);
  assert_int_equal(s.retire_cap, (uint64_t)8 << 20);
  tp_epoch_config c = {.retire_cap = (size_t)3 << 20};
  assert_int_equal(tp_epoch_configure(&c), 0);
  assert_int_equal(tp_epoch_read_stats(&s), 0);
  assert_int_equal(s.retire_cap, (uint64_t)3 << 20);
  /* 0 / NULL = the default: the environment's value, not the built-in. */
  assert_int_equal(tp_epoch_configure(NULL), 0);
  assert_int_equal(tp_epoch_read_stats(&s), 0);
  assert_int_equal(s.retire_cap, (uint64_t)8 << 20);
  tp_epoch_config z = {0};
  assert_int_equal(tp_epoch_configure(&z), 0);
  assert_int_equal(tp_epoch_read_stats(&s), 0);
  assert_int_equal(s.retire_cap, (uint64_t)8 << 20);
}

/* ---- retire callbacks may not wait ---------------------------------------------------- */

static int cb_sync_rc = 1, cb_barrier_rc = 1, cb_retire_rc = 1;
static uint64_t cb_chain_count;

static void restricted_cb(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  cb_sync_rc = tp_epoch_synchronize();
  cb_barrier_rc = tp_epoch_barrier();
  /* Retiring from a callback is fine (chained reclamation). */
  cb_retire_rc = tp_epoch_retire(NULL, count_cb, &cb_chain_count);
}

static void test_callback_restrictions(void **state) {
  (void)state;
  assert_int_equal(tp_epoch_retire(NULL, restricted_cb, NULL), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(cb_sync_rc, -EDEADLK);
  assert_int_equal(cb_barrier_rc, -EDEADLK);
  assert_int_equal(cb_retire_rc, 0);
  assert_int_equal(tp_epoch_barrier(), 0); /* runs the chained retire */
  assert_int_equal(__atomic_load_n(&cb_chain_count, __ATOMIC_RELAXED), 1);
}

/* A callback that retires past the cap must not wait (it would wait for
 * the reclaimer that runs it): no deadlock, the retire is accepted. */
static uint64_t over_count;
static int over_rc[64];

static void over_cap_cb(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  for (int i = 0; i < 64; i++)
    over_rc[i] = tp_epoch_retire_sized(NULL, (size_t)1 << 20, count_cb, &over_count);
}

static void test_callback_over_cap(void **state) {
  (void)state;
  tp_epoch_config c = {.retire_cap = (size_t)4 << 20};
  assert_int_equal(tp_epoch_configure(&c), 0);
  assert_int_equal(tp_epoch_retire(NULL, over_cap_cb, NULL), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  for (int i = 0; i < 64; i++) assert_int_equal(over_rc[i], 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(__atomic_load_n(&over_count, __ATOMIC_RELAXED), 64);
  tp_epoch_stats s;
  assert_int_equal(tp_epoch_read_stats(&s), 0);
  assert_int_equal(s.pending, 0);
  assert_int_equal(tp_epoch_configure(NULL), 0);
}

/* ---- pools ------------------------------------------------------------------------------- */

static void test_pool_retire(void **state) {
  (void)state;
  tp_pool_config pc = {.name = "unit-retire", .obj_size = 48};
  tp_pool *p = tp_pool_create(&pc);
  assert_non_null(p);
  enum { N = 5000 };
  static void *objs[N];
  for (int i = 0; i < N; i++) assert_non_null(objs[i] = tp_pool_get(p));
  tp_pool_stats ps;
  assert_int_equal(tp_pool_read_stats(p, &ps), 0);
  assert_int_equal(ps.in_use, N);
  tp_epoch_stats before, after;
  assert_int_equal(tp_epoch_read_stats(&before), 0);
  tp_epoch_enter();
  for (int i = 0; i < N; i++) assert_int_equal(tp_pool_retire(p, objs[i]), 0);
  tp_epoch_leave();
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(tp_pool_read_stats(p, &ps), 0);
  assert_int_equal(ps.in_use, 0);
  assert_int_equal(tp_epoch_read_stats(&after), 0);
  assert_int_equal(after.retired - before.retired, N);
  assert_int_equal(after.pending, 0);
  assert_int_equal(after.pending_bytes, 0);
  /* Destroy right after retiring: it must wait for the callbacks (under
   * ASan a callback running after the pool is gone would be reported). */
  for (int i = 0; i < N; i++) assert_non_null(objs[i] = tp_pool_get(p));
  for (int i = 0; i < N; i++) assert_int_equal(tp_pool_retire(p, objs[i]), 0);
  tp_pool_destroy(p);
  assert_int_equal(tp_epoch_read_stats(&after), 0);
  assert_int_equal(after.pending, 0);
}

/* Before the library reads it (at start-up). The old name: it must keep
 * working (docs/options.md). */
TT_SETENV_AT_START(TP_RETIRE_CAP, "8M")

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_configure_defaults),
      cmocka_unit_test(test_mode),
      cmocka_unit_test(test_nesting),
      cmocka_unit_test(test_synchronize_in_section),
      cmocka_unit_test(test_unbalanced_leave),
      cmocka_unit_test(test_barrier_all_threads),
      cmocka_unit_test(test_grace_period_waits),
      cmocka_unit_test(test_publish_deref),
      cmocka_unit_test(test_null_args),
      cmocka_unit_test(test_callback_restrictions),
      cmocka_unit_test(test_callback_over_cap),
      cmocka_unit_test(test_pool_retire),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
