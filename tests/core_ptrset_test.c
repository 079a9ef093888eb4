/*
 * core/ptrset: the pointer set (open addressing with tombstones), against
 * a model. Seeded random adds and removes of pointers from a small
 * universe (so adds of members, removes of non-members and reuse of
 * tombstones all happen), with growth, tombstone purges and iteration
 * checked after every step; and the argument errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/ptrset_internal.h"
#include "tests/test_util.h"

enum { UNIVERSE = 600, STEPS = 40000 };

/* Pointers as a heap's root slots are: 8-aligned addresses of one array. */
static void *universe[UNIVERSE];
static void *ptr(size_t i) { return &universe[i]; }

/* The set holds exactly the pointers the model marks: membership of
 * every pointer of the universe, the count, and iteration (each member
 * once, nothing else). */
static void check_against_model(const struct tp__ptrset *s, const bool *in) {
  size_t n = 0;
  for (size_t i = 0; i < UNIVERSE; i++) {
    assert_int_equal(tp__ptrset_has(s, ptr(i)), in[i]);
    n += in[i];
  }
  assert_int_equal(s->n, n);
  assert_true(s->used >= s->n);
  assert_true(s->cap == 0 || (s->used + 0) * 2 <= s->cap);
  static bool seen[UNIVERSE];
  for (size_t i = 0; i < UNIVERSE; i++) seen[i] = false;
  size_t it = 0, count = 0;
  void *p;
  while ((p = tp__ptrset_next(s, &it))) {
    size_t i = (size_t)((void **)p - universe);
    assert_true(i < UNIVERSE);
    assert_true(in[i]);
    assert_false(seen[i]);
    seen[i] = true;
    count++;
  }
  assert_int_equal(count, n);
}

static void matches_model(void **state) {
  (void)state;
  uint64_t rng = tt_seed("core_ptrset_test");
  struct tp__ptrset s = {0};
  static bool in[UNIVERSE];
  for (int step = 0; step < STEPS; step++) {
    /* Phases that fill and drain, so the table grows, then mostly holds
     * tombstones, which a later add purges. */
    int adding = (step / 3000) % 2 == 0;
    size_t i = tt_rand(&rng) % UNIVERSE;
    if ((tt_rand(&rng) % 4 != 0) == adding) {
      int rc = tp__ptrset_add(&s, ptr(i));
      assert_int_equal(rc, in[i] ? -EEXIST : 0);
      in[i] = true;
    } else {
      int rc = tp__ptrset_remove(&s, ptr(i));
      assert_int_equal(rc, in[i] ? 0 : -ENOENT);
      in[i] = false;
    }
    if (step % 97 == 0) check_against_model(&s, in);
  }
  check_against_model(&s, in);
  tp__ptrset_free(&s);
  assert_null(s.slots);
  assert_int_equal(s.n, 0);
  assert_false(tp__ptrset_has(&s, ptr(0)));
  size_t it = 0;
  assert_null(tp__ptrset_next(&s, &it));
}

/* Removing every member leaves tombstones only; the adds that follow
 * reuse or purge them instead of growing the table for ever. */
static void tombstones_do_not_grow_the_table(void **state) {
  (void)state;
  struct tp__ptrset s = {0};
  for (int round = 0; round < 200; round++) {
    for (size_t i = 0; i < 8; i++) assert_int_equal(tp__ptrset_add(&s, ptr(round * 2 + i)), 0);
    for (size_t i = 0; i < 8; i++) assert_int_equal(tp__ptrset_remove(&s, ptr(round * 2 + i)), 0);
  }
  assert_int_equal(s.n, 0);
  assert_true(s.cap <= 64);
  tp__ptrset_free(&s);
}

static void bad_arguments(void **state) {
  (void)state;
  struct tp__ptrset s = {0};
  assert_int_equal(tp__ptrset_add(&s, NULL), -EINVAL);
  assert_int_equal(tp__ptrset_add(&s, TP__PTRSET_TOMB), -EINVAL);
  assert_int_equal(tp__ptrset_remove(&s, NULL), -ENOENT);
  assert_int_equal(tp__ptrset_remove(&s, ptr(1)), -ENOENT);
  assert_int_equal(tp__ptrset_add(&s, ptr(1)), 0);
  assert_int_equal(tp__ptrset_remove(&s, TP__PTRSET_TOMB), -ENOENT);
  assert_false(tp__ptrset_has(&s, TP__PTRSET_TOMB));
  assert_true(tp__ptrset_has(&s, ptr(1)));
  tp__ptrset_free(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(matches_model),
      cmocka_unit_test(tombstones_do_not_grow_the_table),
      cmocka_unit_test(bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
