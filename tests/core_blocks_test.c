/*
 * core/blocks: the fixed-size block cache. A put keeps up to `hold` free
 * blocks and unmaps the rest; tp__blocks_trim unmaps all but `keep`; what
 * is kept is reused by the next get (with its contents), a fresh block is
 * zeroed; tp__blocks_decay unmaps what a whole period left unused; every
 * mapping is counted in tp__os.mapped; tp__blocks_check accepts the cache
 * after each step and names a keep above hold.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/blocks_internal.h"
#include "core/os_internal.h"

enum { N = 6, KEEP = 2, HOLD = 4 };

static void put_holds_trim_keeps(void **state) {
  (void)state;
  size_t page = tp__os_page_size();
  tp__blocks b = TP__BLOCKS_INIT(2 * page, KEEP, HOLD);
  uint64_t m0 = tp__counter_get(&tp__os.mapped);
  void *blk[N];
  for (int i = 0; i < N; i++) {
    blk[i] = tp__blocks_get(&b);
    assert_non_null(blk[i]);
    const unsigned char *c = blk[i];
    for (size_t k = 0; k < 2 * page; k += 512) assert_int_equal(c[k], 0); /* fresh: zero */
    memset(blk[i], 0xA0 + i, 2 * page);
  }
  assert_int_equal(tp__counter_get(&tp__os.mapped), m0 + N * 2 * page);
  assert_int_equal(tp__blocks_check(&b), 0);

  /* Puts: HOLD kept, the rest unmapped at once. */
  for (int i = 0; i < N; i++) tp__blocks_put(&b, blk[i]);
  assert_int_equal(b.nfree, HOLD);
  assert_int_equal(tp__counter_get(&tp__os.mapped), m0 + HOLD * 2 * page);
  assert_int_equal(tp__blocks_check(&b), 0);

  /* Trim: down to KEEP (it says how much went); a second trim changes
   * nothing. */
  assert_int_equal(tp__blocks_trim(&b), (HOLD - KEEP) * 2 * page);
  assert_int_equal(b.nfree, KEEP);
  assert_int_equal(tp__counter_get(&tp__os.mapped), m0 + KEEP * 2 * page);
  assert_int_equal(tp__blocks_check(&b), 0);
  assert_int_equal(tp__blocks_trim(&b), 0);
  assert_int_equal(b.nfree, KEEP);

  /* The kept blocks come back with their contents (blocks put first), then
   * fresh ones. */
  void *got[KEEP];
  for (int i = 0; i < KEEP; i++) {
    got[i] = tp__blocks_get(&b);
    assert_ptr_equal(got[i], blk[KEEP - 1 - i]);
    assert_int_equal(((unsigned char *)got[i])[page], 0xA0 + (KEEP - 1 - i));
  }
  assert_int_equal(b.nfree, 0);
  void *fresh = tp__blocks_get(&b);
  assert_non_null(fresh);
  assert_int_equal(((unsigned char *)fresh)[0], 0);
  tp__blocks_put(&b, fresh);
  for (int i = 0; i < KEEP; i++) tp__blocks_put(&b, got[i]);
  tp__blocks_put(&b, NULL); /* a no-op */
  assert_int_equal(b.nfree, KEEP + 1);
  tp__blocks_trim(&b);
  assert_int_equal(tp__counter_get(&tp__os.mapped), m0 + KEEP * 2 * page);
  assert_int_equal(tp__blocks_check(&b), 0);
}

/* Decay: what stayed free a whole period (the least number free since the
 * last decay) goes, down to keep; blocks a get needed in the period stay.
 * (A decay that unmaps nothing, or everything above keep, fails here.) */
static void decay_unmaps_what_a_period_left_unused(void **state) {
  (void)state;
  size_t page = tp__os_page_size();
  tp__blocks b = TP__BLOCKS_INIT(page, 2, 64);
  uint64_t m0 = tp__counter_get(&tp__os.mapped);
  void *blk[10];
  for (int i = 0; i < 10; i++) assert_non_null(blk[i] = tp__blocks_get(&b));
  for (int i = 0; i < 10; i++) tp__blocks_put(&b, blk[i]);
  /* This period's gets emptied the list: everything was needed. */
  tp__blocks_decay(&b);
  assert_int_equal(b.nfree, 10);
  assert_int_equal(tp__blocks_check(&b), 0);
  /* Next period: 3 gets at most out at once; 7 stayed free all along,
   * of which all but keep (2) go: 5 unmapped, 5 left. */
  for (int i = 0; i < 3; i++) assert_non_null(blk[i] = tp__blocks_get(&b));
  for (int i = 0; i < 3; i++) tp__blocks_put(&b, blk[i]);
  tp__blocks_decay(&b);
  assert_int_equal(b.nfree, 5);
  assert_int_equal(tp__counter_get(&tp__os.mapped), m0 + 5 * page);
  assert_int_equal(tp__blocks_check(&b), 0);
  /* A period with no get at all: down to keep. */
  tp__blocks_decay(&b);
  assert_int_equal(b.nfree, 2);
  assert_int_equal(tp__counter_get(&tp__os.mapped), m0 + 2 * page);
  tp__blocks_decay(&b);
  assert_int_equal(b.nfree, 2);
  assert_int_equal(tp__blocks_check(&b), 0);
  tp__blocks_trim(&b);
}

static void check_names_keep_above_hold(void **state) {
  (void)state;
  tp__blocks b = TP__BLOCKS_INIT(tp__os_page_size(), 3, 2);
  errno = 0;
  assert_int_equal(tp__blocks_check(&b), -EINVAL);
  assert_int_equal(errno, EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(put_holds_trim_keeps),
      cmocka_unit_test(decay_unmaps_what_a_period_left_unused),
      cmocka_unit_test(check_names_keep_above_hold),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
