/*
 * Helpers shared by the tp_heap tests (gc_*_test.c). Include after
 * <cmocka.h> and <tidepool/gc.h>.
 */
#ifndef TIDEPOOL_TESTS_GC_TEST_UTIL_H
#define TIDEPOOL_TESTS_GC_TEST_UTIL_H

#include <stdint.h>
#include <stdlib.h>

#include "test_util.h"

/* Every collection of the gc tests is re-verified by an independent
 * traversal (TIDEPOOL_GC_CHECKMARK=1, read once at start-up), set before
 * the library starts (TT_SETENV_AT_START, test_util.h), so the binary
 * checks the same way however it is started. */
TT_SETENV_AT_START(TIDEPOOL_GC_CHECKMARK, "1")

/* A collection whose collector scans no stack: this thread detaches first
 * (nothing else runs, so its pointers stay valid; the next allocation
 * attaches it again). Tests that expect an object to be collected use it:
 * a conservative scan of this thread's stack could keep a stale copy of a
 * pointer alive, which is allowed but would make them flaky. */
static inline void tt_collect_unscanned(tp_heap *h) {
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(h, &s), 0);
  for (uint64_t i = 0; i < s.threads; i++) tp_heap_detach(h);
  tp_heap_collect(h);
}

#endif /* TIDEPOOL_TESTS_GC_TEST_UTIL_H */
