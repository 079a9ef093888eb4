/*
 * Debug-build misuse checks of epochs and arenas (linked with
 * //:tidepool_debug): each aborts with a message instead of going on.
 * (Release builds ignore or refuse the same calls; see epoch_unit_test,
 * epoch_stall_test and arena_unit_test.) The parent stays single-threaded,
 * so the children may start threads under every sanitizer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <tidepool/arena.h>
#include <tidepool/epoch.h>

#include "tests/death.h"

static void leave_without_enter(void *arg) {
  (void)arg;
  tp_epoch_leave();
}

static void test_unbalanced_leave_aborts(void **state) {
  (void)state;
  assert_true(tt_dies_with(leave_without_enter, NULL, "leave without a matching enter"));
}

static void noop_cb(void *obj, void *arg) {
  (void)obj;
  (void)arg;
}

static void retire_over_cap_in_section(void *arg) {
  (void)arg;
  tp_epoch_config c = {.retire_cap = 1 << 20};
  tp_epoch_configure(&c);
  tp_epoch_enter();
  for (int i = 0; i < 1000; i++) tp_epoch_retire_sized(NULL, 64 * 1024, noop_cb, NULL);
  tp_epoch_leave();
}

static void test_over_cap_in_section_aborts(void **state) {
  (void)state;
  assert_true(tt_dies_with(retire_over_cap_in_section, NULL, "retire cap reached inside a read section"));
}

static void rewind_invalid(void *arg) {
  (void)arg;
  tp_arena *a = tp_arena_create(NULL);
  tp_arena_mark m = tp_arena_save(a);
  tp_arena_reset(a); /* m is stale now */
  tp_arena_rewind(a, m);
}

static void test_invalid_mark_aborts(void **state) {
  (void)state;
  assert_true(tt_dies_with(rewind_invalid, NULL, "invalid mark"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unbalanced_leave_aborts),
      cmocka_unit_test(test_over_cap_in_section_aborts),
      cmocka_unit_test(test_invalid_mark_aborts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
