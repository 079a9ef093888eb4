/*
 * Issue 14, fault 1: the library under a real RLIMIT_AS of a few hundred
 * MiB. Each case runs in a forked child that caps its own address space;
 * pools, arenas and epochs must work, fail with ENOMEM (never abort) when
 * the cap is reached, and work again once memory is given back.
 *
 * Not under ASan/TSan (tag nosan): their shadow memory needs terabytes of
 * address space, which no RLIMIT_AS of this size allows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <tidepool/tidepool.h>

#include "tests/issue14_util.h"

#define CAP ((size_t)256 << 20)

/* The first slow path of a pool under the cap: it used to reserve 4 GiB
 * of magazine space and abort ("cannot reserve magazine space"). */
static int first_get_child(void *arg) {
  (void)arg;
  T14_CHECK(t14_cap_as(CAP) == 0);
  tp_pool *p = tp_pool_create(&(tp_pool_config){.name = "capped", .obj_size = 64});
  T14_CHECK(p != NULL);
  void *o = tp_pool_get(p);
  T14_CHECK(o != NULL);
  tp_pool_put(p, o);
  tp_pool_destroy(p);
  return 0;
}

static void test_first_slow_path_under_cap(void **state) {
  (void)state;
  assert_int_equal(t14_run_child(first_get_child, NULL, TT_HANG_MS), 0);
}

/* Gets until the cap: ENOMEM, not an abort; everything back; the same
 * number again (the process recovers); epochs and arenas work meanwhile. */
static int exhaust_child(void *arg) {
  (void)arg;
  T14_CHECK(t14_cap_as(CAP) == 0);
  tp_pool *p = tp_pool_create(&(tp_pool_config){.name = "big", .obj_size = 4096});
  T14_CHECK(p != NULL);
  size_t cap = (CAP / 4096) * 2, n = 0;
  void **objs = malloc(cap * sizeof *objs);
  T14_CHECK(objs != NULL);
  for (;;) {
    T14_CHECK(n < cap); /* the cap must stop it first */
    errno = 0;
    void *o = tp_pool_get(p);
    if (!o) {
      T14_CHECK(errno == ENOMEM);
      break;
    }
    memset(o, 0x5a, 64);
    objs[n++] = o;
  }
  T14_CHECK(n > 1000);
  /* Epochs and arenas at the edge: errors, not aborts. */
  tp_arena *a = tp_arena_create(NULL);
  if (a) {
    for (int i = 0; i < 1000 && tp_arena_alloc(a, 1000); i++) {
    }
    tp_arena_destroy(a);
  } else {
    T14_CHECK(errno == ENOMEM);
  }
  tp_pool_put_bulk(p, objs, n);
  /* Give the memory back, then (nearly) the same count fits again: a
   * slab is mapped with a transient over-map for its alignment, so the
   * last slabs below the cap may not map again; 90% must. */
  T14_CHECK(tp_sweep_all() > 0);
  size_t again = 0;
  while (again < n && (objs[again] = tp_pool_get(p)) != NULL) again++;
  if (again < n) fprintf(stderr, "recovered %zu of %zu objects\n", again, n);
  T14_CHECK(again >= n / 10 * 9);
  tp_pool_put_bulk(p, objs, again);
  tp_sweep_all(); /* room for the reclaimer's thread stack */
  void *o = tp_pool_get(p);
  T14_CHECK(o != NULL);
  T14_CHECK(tp_pool_retire(p, o) == 0);
  T14_CHECK(tp_epoch_barrier() == 0);
  tp_pool_destroy(p);
  a = tp_arena_create(NULL);
  T14_CHECK(a != NULL && tp_arena_alloc(a, 100000) != NULL);
  tp_arena_destroy(a);
  free(objs);
  return 0;
}

static void test_exhaust_and_recover(void **state) {
  (void)state;
  assert_int_equal(t14_run_child(exhaust_child, NULL, TT_HANG_MS), 0);
}

/* A slab aligned to its own size (16 MiB for 1 MiB objects) under a cap
 * with room for one slab and a half: mapping it used to over-map by the
 * alignment (twice the slab for an instant) and fail with ENOMEM. */
static int aligned_slab_child(void *arg) {
  (void)arg;
  tp_pool_config cfg = {.name = "wide", .obj_size = (size_t)1 << 20};
  tp_pool *warm = tp_pool_create(&cfg), *p = tp_pool_create(&cfg);
  T14_CHECK(warm != NULL && p != NULL);
  void *o = tp_pool_get(warm); /* the per-CPU and depot space, one slab */
  T14_CHECK(o != NULL);
  tp_pool_stats st;
  T14_CHECK(tp_pool_read_stats(warm, &st) == 0 && st.slabs == 1);
  size_t slab = (size_t)st.bytes_mapped; /* the slab and warm's CPU blocks */
  T14_CHECK(t14_cap_as(slab + slab / 2) == 0);
  errno = 0;
  void *q = tp_pool_get(p);
  if (!q) fprintf(stderr, "get under a cap of 1.5 slabs failed: errno %d\n", errno);
  T14_CHECK(q != NULL);
  tp_pool_put(p, q);
  tp_pool_put(warm, o);
  tp_pool_destroy(p);
  tp_pool_destroy(warm);
  return 0;
}

static void test_aligned_slab_under_tight_cap(void **state) {
  (void)state;
  assert_int_equal(t14_run_child(aligned_slab_child, NULL, TT_HANG_MS), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_first_slow_path_under_cap),
      cmocka_unit_test(test_exhaust_and_recover),
      cmocka_unit_test(test_aligned_slab_under_tight_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
