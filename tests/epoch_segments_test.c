/*
 * epoch: the retire queue's segments after a burst. A backlog of ~200
 * segments is built inside a read section (no grace period can end, so
 * none is freed meanwhile); once the barrier has run them all, the
 * reclaimer holds the freed segments for the next retires, and when it
 * goes to sleep (nothing pending for a few intervals) it unmaps all but
 * 32 of them: tidepool's mapped bytes come back to within 32 segments of
 * what they were before the burst. (A reclaimer that never trims keeps the
 * whole burst mapped and the wait below reports a hang.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <tidepool/epoch.h>
#include <tidepool/sweeper.h>

#include <stdio.h>

#include "tests/test_util.h"

enum {
  SEG_BYTES = 8192, /* a segment's block (epoch/epoch.c) */
  SEG_ENTRIES = 254,
  SEG_KEEP = 32,    /* kept mapped once retires stop */
  BURST_SEGS = 200,
};

static uint64_t freed;

static void count_cb(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  __atomic_fetch_add(&freed, 1, __ATOMIC_RELAXED);
}

static uint64_t mapped(void) {
  tp_stats st;
  assert_int_equal(tp_read_stats(&st), 0);
  return st.bytes_mapped;
}

static void burst_is_trimmed_after_it_drains(void **state) {
  (void)state;
  tp_epoch_register_thread();
  /* Warm up: the queue, the reclaimer and its watchdog exist. */
  assert_int_equal(tp_epoch_retire(&freed, count_cb, NULL), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  uint64_t m0 = mapped(), n = (uint64_t)BURST_SEGS * SEG_ENTRIES;

  tp_epoch_enter();
  for (uint64_t i = 0; i < n; i++) assert_int_equal(tp_epoch_retire(&freed, count_cb, NULL), 0);
  /* Read inside the section: once it ends the reclaimer may run the
   * backlog, free its segments and trim them before a read after it. */
  uint64_t m1 = mapped();
  tp_epoch_leave();
  /* The backlog was all in segments at once (at most 32 came from the
   * free list). */
  assert_true(m1 >= m0 + (uint64_t)(BURST_SEGS - SEG_KEEP - 1) * SEG_BYTES);

  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(__atomic_load_n(&freed, __ATOMIC_RELAXED), n + 1);

  uint64_t end = tt_hang_deadline(), m2;
  while ((m2 = mapped()) > m0 + (uint64_t)SEG_KEEP * SEG_BYTES && tt_now_ns() < end) tt_sleep_ms(1);
  fprintf(stderr, "mapped: before %llu, burst %+lld, after the reclaimer slept %+lld bytes\n",
          (unsigned long long)m0, (long long)(m1 - m0), (long long)(m2 - m0));
  assert_true(m2 <= m0 + (uint64_t)SEG_KEEP * SEG_BYTES);
  assert_int_equal(tp_epoch_check(), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(burst_is_trimmed_after_it_drains),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
