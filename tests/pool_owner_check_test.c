/*
 * TP_POOL_CHECK_OWNER: with it defined, the inline put checks the slab
 * header's owner on every put, so a pointer from another pool aborts even in
 * a release build and even when the CPU cache has room. Without it, release
 * builds check on the slow path (tests the same in pool_death_test for
 * debug builds).
 */
#define TP_POOL_CHECK_OWNER 1
#include <tidepool/pool.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/death.h"

static void do_foreign(void *arg) {
  (void)arg;
  tp_pool_config ca = {.name = "a", .obj_size = 64}, cb = {.name = "b", .obj_size = 64};
  tp_pool *a = tp_pool_create(&ca), *b = tp_pool_create(&cb);
  void *keep = tp_pool_get(a); /* a's cache has room for a put */
  (void)keep;
  void *o = tp_pool_get(b);
  tp_pool_put(a, o);
}

/* Without the macro a foreign put that reaches the slow path aborts too. */
static void foreign_put_aborts(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_foreign, NULL, "not from this pool"));
}

static void checked_put_works(void **s) {
  (void)s;
  tp_pool_config c = {.name = "ok", .obj_size = 48};
  tp_pool *p = tp_pool_create(&c);
  void *v[3000];
  for (int r = 0; r < 3; r++) {
    for (int i = 0; i < 3000; i++) v[i] = tp_pool_get(p);
    for (int i = 0; i < 3000; i++) tp_pool_put(p, v[i]);
  }
  tp_pool_stats st;
  tp_pool_read_stats(p, &st);
  assert_int_equal(st.in_use, 0);
  tp_pool_destroy(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(foreign_put_aborts),
      cmocka_unit_test(checked_put_works),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
