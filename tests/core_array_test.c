/*
 * core/array: the growable array. Appends through TP__ARRAY_RESERVE keep
 * every element (the array moves as it grows), the capacity doubles from
 * the minimum, a reserve that fits does not move the array, and a
 * capacity that would overflow is -ENOMEM with the array untouched.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/array_internal.h"

struct elem {
  uint64_t a, b, c;
};

static void appends_keep_every_element(void **state) {
  (void)state;
  struct elem *v = NULL;
  size_t n = 0, cap = 0;
  size_t caps_seen = 0, last_cap = 0;
  for (uint64_t i = 0; i < 100000; i++) {
    assert_int_equal(TP__ARRAY_RESERVE(v, cap, n + 1, 8), 0);
    assert_true(cap >= n + 1);
    if (cap != last_cap) {
      /* 8, 16, 32, ...: doubled from the minimum each time it grows. */
      assert_int_equal(cap, (size_t)8 << caps_seen);
      caps_seen++;
      last_cap = cap;
    }
    v[n++] = (struct elem){i, ~i, i * 3};
  }
  for (uint64_t i = 0; i < n; i++) {
    assert_int_equal(v[i].a, i);
    assert_int_equal(v[i].b, ~i);
    assert_int_equal(v[i].c, i * 3);
  }
  /* A reserve that fits neither moves nor grows the array. */
  struct elem *before = v;
  size_t cap_before = cap;
  assert_int_equal(TP__ARRAY_RESERVE(v, cap, n, 8), 0);
  assert_ptr_equal(v, before);
  assert_int_equal(cap, cap_before);
  free(v);
}

static void reserve_many_at_once(void **state) {
  (void)state;
  int *v = NULL;
  size_t cap = 0;
  assert_int_equal(TP__ARRAY_RESERVE(v, cap, 1000, 16), 0);
  assert_int_equal(cap, 1024);
  for (int i = 0; i < 1000; i++) v[i] = i;
  assert_int_equal(TP__ARRAY_RESERVE(v, cap, 1025, 16), 0);
  assert_int_equal(cap, 2048);
  for (int i = 0; i < 1000; i++) assert_int_equal(v[i], i);
  free(v);
}

static void overflow_is_enomem(void **state) {
  (void)state;
  struct elem *v = NULL;
  size_t cap = 0;
  assert_int_equal(TP__ARRAY_RESERVE(v, cap, 4, 4), 0);
  v[0].a = 42;
  struct elem *before = v;
  errno = 0;
  assert_int_equal(TP__ARRAY_RESERVE(v, cap, SIZE_MAX / 2, 4), -ENOMEM);
  assert_int_equal(errno, ENOMEM);
  assert_int_equal(TP__ARRAY_RESERVE(v, cap, SIZE_MAX, 4), -ENOMEM);
  assert_ptr_equal(v, before);
  assert_int_equal(cap, 4);
  assert_int_equal(v[0].a, 42);
  free(v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(appends_keep_every_element),
      cmocka_unit_test(reserve_many_at_once),
      cmocka_unit_test(overflow_is_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
