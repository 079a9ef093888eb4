/*
 * Issue 14, fault 11: a mark saved on an arena that was then destroyed must
 * not be accepted by a new arena created at the same address (its first
 * chunk comes back from the chunk pool's CPU cache, so the address, the
 * chunk and the bump position all match). Rewinding to it must change
 * nothing: no cleanup of the new arena runs, live data is not overwritten.
 * Also: a mark from before a reset stays refused after many resets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <string.h>
#include <tidepool/tidepool.h>

#include "tests/death.h"

static int cleanups_run;
static void count_cleanup(void *arg) {
  (void)arg;
  cleanups_run++;
}

/* Rewinds to a mark the arena must refuse: release builds ignore it (the
 * test then checks that nothing changed); debug builds abort with "invalid
 * mark" (arena.h), checked in a child. There the checks that follow only
 * confirm the parent's arena, which never saw the rewind: the debug run
 * tests the abort, the release runs the refusal. */
#if defined(TP_DEBUG) && TP_DEBUG
struct rewind_arg {
  tp_arena *a;
  tp_arena_mark m;
};
static void rewind_to(void *arg) {
  struct rewind_arg *r = arg;
  tp_arena_rewind(r->a, r->m);
}
#endif
static void rewind_refused(tp_arena *a, tp_arena_mark m) {
#if defined(TP_DEBUG) && TP_DEBUG
  struct rewind_arg r = {a, m};
  assert_true(tt_dies_with(rewind_to, &r, "invalid mark"));
#else
  tp_arena_rewind(a, m);
#endif
}

static void pin_here(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  int c = sched_getcpu();
  CPU_SET(c < 0 ? 0 : c, &set);
  sched_setaffinity(0, sizeof set, &set);
}

static void mark_of_destroyed_arena_is_refused(void **s) {
  (void)s;
  pin_here();
  tp_arena *a = tp_arena_create(NULL);
  assert_non_null(a);
  assert_non_null(tp_arena_alloc(a, 64));
  tp_arena_mark m = tp_arena_save(a);
  tp_arena_destroy(a);

  tp_arena *b = tp_arena_create(NULL);
  assert_non_null(b);
  /* The case needs the reuse; the chunk pool's LIFO cache on this CPU
   * gives it (checked, so the test cannot pass vacuously). */
  assert_ptr_equal(a, b);
  char *live = tp_arena_alloc(b, 64); /* where the old mark points */
  assert_non_null(live);
  memset(live, 0x5a, 64);
  assert_int_equal(tp_arena_on_reset(b, count_cleanup, NULL), 0);
  tp_arena_stats before, after;
  assert_int_equal(tp_arena_read_stats(b, &before), 0);

  rewind_refused(b, m); /* must be ignored (or abort, in debug builds) */

  assert_int_equal(cleanups_run, 0);
  assert_int_equal(tp_arena_read_stats(b, &after), 0);
  assert_int_equal(after.allocated, before.allocated);
  char *next = tp_arena_alloc(b, 64);
  assert_true(next >= live + 64 || next + 64 <= live); /* no overlap */
  for (int i = 0; i < 64; i++) assert_int_equal((unsigned char)live[i], 0x5a);
  tp_arena_destroy(b);
  assert_int_equal(cleanups_run, 1); /* once, by destroy */
}

static void mark_from_before_resets_is_refused(void **s) {
  (void)s;
  tp_arena *a = tp_arena_create(NULL);
  assert_non_null(tp_arena_alloc(a, 64));
  tp_arena_mark m = tp_arena_save(a);
  for (int i = 0; i < 1000; i++) tp_arena_reset(a);
  char *live = tp_arena_alloc(a, 256);
  memset(live, 0x11, 256);
  rewind_refused(a, m);
  char *next = tp_arena_alloc(a, 64);
  assert_true(next >= live + 256);
  tp_arena_destroy(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(mark_of_destroyed_arena_is_refused),
      cmocka_unit_test(mark_from_before_resets_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
