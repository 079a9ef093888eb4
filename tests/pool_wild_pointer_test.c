/*
 * Issue 14, fault 7 (release library): tp_pool_put_bulk and tp_pool_retire
 * of a pointer whose slab header is not mapped (a small integer, a freed
 * mapping) or not a slab (malloc) must abort with "pointer is not from this
 * pool", not fault reading the header: the slab map (pool/slabmap.c) is
 * asked before the header is read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <sys/mman.h>
#include <tidepool/tidepool.h>

#include "tests/death.h"

#define MSG "not from this pool"

static tp_pool *mk(const char *name) {
  return tp_pool_create(&(tp_pool_config){.name = name, .obj_size = 64});
}

/* A pointer whose would-be slab header is not mapped. */
static void *unmapped_pointer(void) {
  size_t len = (size_t)4 << 20;
  char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  munmap(m, len);
  return m + ((size_t)1 << 20) + 64;
}

static void do_bulk(void *bad) {
  tp_pool *a = mk("a");
  void *v[2] = {tp_pool_get(a), bad};
  tp_pool_put_bulk(a, v, 2);
}

static void do_retire(void *bad) {
  tp_pool *a = mk("a");
  tp_pool_retire(a, bad);
}

static void put_bulk_of_wild_pointers_aborts(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_bulk, (void *)16, MSG));
  assert_true(tt_dies_with(do_bulk, unmapped_pointer(), MSG));
  void *m = malloc(100);
  assert_true(tt_dies_with(do_bulk, m, MSG));
  free(m);
}

static void retire_of_wild_pointers_aborts(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_retire, (void *)16, MSG));
  assert_true(tt_dies_with(do_retire, unmapped_pointer(), MSG));
  void *m = malloc(100);
  assert_true(tt_dies_with(do_retire, m, MSG));
  free(m);
}

/* The check passes every correct put_bulk and retire. */
static void correct_use_passes(void **s) {
  (void)s;
  tp_pool *a = mk("a");
  static void *v[5000];
  for (int r = 0; r < 3; r++) {
    for (int i = 0; i < 5000; i++) assert_non_null(v[i] = tp_pool_get(a));
    tp_pool_put_bulk(a, v, 5000);
  }
  assert_int_equal(tp_pool_retire(a, tp_pool_get(a)), 0);
  tp_pool_destroy(a);
}

/* Interior and past-the-end pointers into a pool whose stride is not a
 * power of two (40 B): the boundary test (a multiplication, not a
 * division: pool_internal.h) must refuse them and pass every object. */
static tp_pool *mk40(void) {
  return tp_pool_create(&(tp_pool_config){.name = "s40", .obj_size = 40});
}

static void do_bulk_interior(void *delta) {
  tp_pool *a = mk40();
  char *o = tp_pool_get(a);
  void *v[2] = {tp_pool_get(a), o + (uintptr_t)delta};
  tp_pool_put_bulk(a, v, 2);
}

static void interior_pointers_abort(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_bulk_interior, (void *)8, "not an object of this pool"));
  assert_true(tt_dies_with(do_bulk_interior, (void *)39, "not an object of this pool"));
  assert_true(tt_dies_with(do_bulk_interior, (void *)1, "not an object of this pool"));
}

static void odd_stride_correct_use_passes(void **s) {
  (void)s;
  tp_pool *a = mk40();
  static void *v[20000];
  for (int r = 0; r < 2; r++) {
    for (int i = 0; i < 20000; i++) assert_non_null(v[i] = tp_pool_get(a));
    tp_pool_put_bulk(a, v, 20000);
  }
  tp_pool_destroy(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(put_bulk_of_wild_pointers_aborts),
      cmocka_unit_test(retire_of_wild_pointers_aborts),
      cmocka_unit_test(correct_use_passes),
      cmocka_unit_test(interior_pointers_abort),
      cmocka_unit_test(odd_stride_correct_use_passes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
