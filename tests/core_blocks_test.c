/*
 * core/blocks: the fixed-size block cache. A put keeps up to `hold` free
 * blocks and unmaps the rest; tp__blocks_trim unmaps all but `keep`; what
 * is kept is reused by the next get (with its contents), a fresh block is
 * zeroed; every mapping is counted in tp__os.mapped; tp__blocks_check
 * accepts the cache after each step and names a keep above hold.
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

  /* Trim: down to KEEP; a second trim changes nothing. */
  tp__blocks_trim(&b);
  assert_int_equal(b.nfree, KEEP);
  assert_int_equal(tp__counter_get(&tp__os.mapped), m0 + KEEP * 2 * page);
  assert_int_equal(tp__blocks_check(&b), 0);
  tp__blocks_trim(&b);
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
      cmocka_unit_test(check_names_keep_above_hold),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
