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
#include "tests/pool_test_util.h"

static void do_foreign(void *arg) {
  (void)arg;
  tp_pool_config ca = {.name = "a", .obj_size = 64}, cb = {.name = "b", .obj_size = 64};
  tp_pool *a = tp_pool_create(&ca), *b = tp_pool_create(&cb);
  void *keep = tp_pool_get(a); /* a's cache has room for a put */
  (void)keep;
  void *o = tp_pool_get(b);
  tp_pool_put(a, o);
}

/* With the macro a put of another pool's object aborts on the inline fast
 * path too: a's CPU cache has room for it (one object was taken out), where
 * the unchecked push would cache it unnoticed. */
static void foreign_put_aborts(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_foreign, NULL, "not from this pool"));
}

/* And the check never fires on a correct put. */
static void checked_put_works(void **s) {
  (void)s;
  tt_pool_clean_use(48);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(foreign_put_aborts),
      cmocka_unit_test(checked_put_works),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
