/*
 * Threads that exit inside and outside read sections, with retires still
 * pending, leak nothing and hang nothing (issue 4).
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

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
/* (gcc ships no allocator_interface.h; the runtime has the function.) */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_bytes(void) { return __sanitizer_get_current_allocated_bytes(); }
#else
#include <malloc.h>
static size_t heap_bytes(void) { return mallinfo2().uordblks; }
#endif

#include "tests/test_util.h"

static uint64_t freed_count;
static void count_cb(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  __atomic_fetch_add(&freed_count, 1, __ATOMIC_RELAXED);
}

static tp_pool *pool;

/* A thread that retires `n` objects and a few callbacks, then exits with
 * `depth` sections open. */
struct job {
  int n, depth;
};

static void *retire_and_exit(void *arg) {
  struct job *j = arg;
  for (int i = 0; i < j->n; i++) {
    void *o = tp_pool_get(pool);
    if (!o) return (void *)1;
    if (tp_pool_retire(pool, o) != 0) return (void *)2;
    if (tp_epoch_retire(NULL, count_cb, NULL) != 0) return (void *)3;
  }
  for (int d = 0; d < j->depth; d++) tp_epoch_enter();
  /* Retired inside the section too: pending when the thread dies. */
  if (j->depth && tp_epoch_retire(NULL, count_cb, NULL) != 0) return (void *)4;
  return NULL;
}

static void *sync_thread(void *arg) {
  (void)arg;
  return tp_epoch_synchronize() == 0 ? NULL : (void *)1;
}

static void check_quiet(uint64_t readers0, uint64_t expect_freed) {
  /* A grace period ends (no dead reader holds it up)... */
  pthread_t s;
  assert_int_equal(pthread_create(&s, NULL, sync_thread, NULL), 0);
  void *ret = (void *)-1;
  assert_int_equal(tt_join_within(s, TT_HANG_MS, &ret), 0);
  assert_null(ret);
  /* ...and everything the dead threads retired has run. */
  assert_int_equal(tp_epoch_barrier(), 0);
  tp_epoch_stats st;
  assert_int_equal(tp_epoch_read_stats(&st), 0);
  assert_int_equal(st.pending, 0);
  assert_int_equal(st.retired, st.freed);
  assert_int_equal(st.readers, readers0);
  assert_int_equal(__atomic_load_n(&freed_count, __ATOMIC_RELAXED), expect_freed);
  tp_pool_stats ps;
  assert_int_equal(tp_pool_read_stats(pool, &ps), 0);
  assert_int_equal(ps.in_use, 0);
}

static void run_jobs(struct job *jobs, int n) {
  pthread_t t[16];
  assert_true(n <= 16);
  for (int i = 0; i < n; i++) assert_int_equal(pthread_create(&t[i], NULL, retire_and_exit, &jobs[i]), 0);
  for (int i = 0; i < n; i++) {
    void *ret = (void *)-1;
    assert_int_equal(tt_join_within(t[i], TT_HANG_MS, &ret), 0);
    assert_null(ret);
  }
}

static uint64_t readers_now(void) {
  tp_epoch_stats st;
  assert_int_equal(tp_epoch_read_stats(&st), 0);
  return st.readers;
}

static void test_exit_outside_section(void **state) {
  (void)state;
  uint64_t r0 = readers_now();
  freed_count = 0;
  struct job jobs[4] = {{1000, 0}, {1000, 0}, {10, 0}, {0, 0}};
  run_jobs(jobs, 4);
  check_quiet(r0, 2010);
}

static void test_exit_inside_section(void **state) {
  (void)state;
  uint64_t r0 = readers_now();
  freed_count = 0;
  struct job jobs[4] = {{1000, 1}, {500, 3}, {0, 1}, {0, 2}};
  run_jobs(jobs, 4);
  check_quiet(r0, 1500 + 4);
}

/* A grace period already waiting for a reader ends when the reader's thread
 * exits inside its section, and not before: the reader sets `exiting` just
 * before it returns, and synchronize must return after that. */
static int in_section, sync_calling, exiting;

static void *sit_then_exit(void *arg) {
  (void)arg;
  tp_epoch_enter();
  tp_epoch_enter();
  __atomic_store_n(&in_section, 1, __ATOMIC_RELEASE);
  /* Exit once the grace period has (most likely) begun waiting for us: the
   * sleep only makes the case likely; what is checked is the order. */
  tt_wait_for(&sync_calling, 1); /* a hang: the main thread's join reports it */
  tt_sleep_ms(50);
  __atomic_store_n(&exiting, 1, __ATOMIC_RELEASE);
  return NULL; /* exits with two sections open */
}

static void *sync_after_exit(void *arg) {
  (void)arg;
  __atomic_store_n(&sync_calling, 1, __ATOMIC_RELEASE);
  if (tp_epoch_synchronize() != 0) return (void *)1;
  /* Returned while the reader was still inside its sections? */
  return __atomic_load_n(&exiting, __ATOMIC_ACQUIRE) ? NULL : (void *)2;
}

static void test_exit_unblocks_waiting_grace_period(void **state) {
  (void)state;
  uint64_t r0 = readers_now();
  freed_count = 0;
  pthread_t r, s;
  assert_int_equal(pthread_create(&r, NULL, sit_then_exit, NULL), 0);
  assert_true(tt_wait_for(&in_section, 1));
  assert_int_equal(pthread_create(&s, NULL, sync_after_exit, NULL), 0);
  void *ret = (void *)-1;
  assert_int_equal(tt_join_within(s, TT_HANG_MS, &ret), 0);
  assert_null(ret); /* it waited for the reader, which then exited */
  assert_int_equal(tt_join_within(r, TT_HANG_MS, NULL), 0);
  check_quiet(r0, 0);
}

/* Many short-lived threads: registrations and queues do not accumulate. */
static void *short_lived(void *arg) {
  uintptr_t i = (uintptr_t)arg;
  tp_epoch_enter();
  tp_epoch_leave();
  if (i % 2) {
    void *o = tp_pool_get(pool);
    if (!o || tp_pool_retire(pool, o) != 0) return (void *)1;
  }
  if (i % 3 == 0) tp_epoch_enter(); /* and exit inside */
  return NULL;
}

static void churn(unsigned nthreads) {
  for (unsigned i = 0; i < nthreads; i += 8) {
    pthread_t t[8];
    for (uintptr_t k = 0; k < 8; k++)
      assert_int_equal(pthread_create(&t[k], NULL, short_lived, (void *)(i + k)), 0);
    for (int k = 0; k < 8; k++) {
      void *ret = (void *)-1;
      assert_int_equal(tt_join_within(t[k], TT_HANG_MS, &ret), 0);
      assert_null(ret);
    }
  }
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
}

static void test_churn_no_leak(void **state) {
  (void)state;
  uint64_t r0 = readers_now();
  freed_count = 0;
  churn(64); /* warm up: thread stacks, caches */
  size_t h0 = heap_bytes();
  churn(800);
  size_t h1 = heap_bytes();
  printf("  heap before %zu, after 800 threads %zu\n", h0, h1);
  /* A leaked queue is over 8 KiB: 400 of them would be megabytes. */
  assert_true(h1 < h0 + 512 * 1024);
  check_quiet(r0, 0);
}

static int setup(void **state) {
  (void)state;
  tp_pool_config pc = {.name = "exit", .obj_size = 128};
  pool = tp_pool_create(&pc);
  /* This thread is a reader too (the baseline counts it). */
  tp_epoch_enter();
  tp_epoch_leave();
  return pool ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  tp_pool_destroy(pool);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exit_outside_section),
      cmocka_unit_test(test_exit_inside_section),
      cmocka_unit_test(test_exit_unblocks_waiting_grace_period),
      cmocka_unit_test(test_churn_no_leak),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
