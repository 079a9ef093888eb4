/*
 * Correct use of a pool, for the tests that build pools with extra checks
 * (pool_death_test: the TP_DEBUG library; pool_owner_check_test: the inline
 * owner check of TP_POOL_CHECK_OWNER): none of them may fire. Include after
 * <cmocka.h> and <tidepool/pool.h> (and after defining the macro, if any:
 * the puts below are compiled with the includer's settings).
 */
#ifndef TIDEPOOL_TESTS_POOL_TEST_UTIL_H
#define TIDEPOOL_TESTS_POOL_TEST_UTIL_H

#include <string.h>

/* Three rounds of 3000 gets, every object written, then the 3000 puts;
 * every object is back at the end. */
static inline void tt_pool_clean_use(size_t obj_size) {
  tp_pool_config c = {.name = "clean", .obj_size = obj_size};
  tp_pool *p = tp_pool_create(&c);
  assert_non_null(p);
  static void *v[3000];
  for (int r = 0; r < 3; r++) {
    for (int i = 0; i < 3000; i++) {
      v[i] = tp_pool_get(p);
      assert_non_null(v[i]);
      memset(v[i], r, obj_size);
    }
    for (int i = 0; i < 3000; i++) tp_pool_put(p, v[i]);
  }
  tp_pool_stats st;
  assert_int_equal(tp_pool_read_stats(p, &st), 0);
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.gets, st.puts);
  tp_pool_destroy(p);
}

#endif /* TIDEPOOL_TESTS_POOL_TEST_UTIL_H */
