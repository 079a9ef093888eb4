/*
 * Misuse of pools that aborts with a message naming the function and the
 * pointer. Linked with the TP_DEBUG build of the library (tidepool_debug),
 * so these run in every CI configuration.
 */
#include <tidepool/pool.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/death.h"
#include "tests/pool_test_util.h"

static tp_pool *mk(size_t size) {
  tp_pool_config c = {.name = "death", .obj_size = size};
  return tp_pool_create(&c);
}

static void do_double_put(void *arg) {
  (void)arg;
  tp_pool *p = mk(64);
  void *o = tp_pool_get(p);
  tp_pool_put(p, o);
  tp_pool_put(p, o);
}

static void do_foreign_pool(void *arg) {
  (void)arg;
  tp_pool *a = mk(64), *b = mk(64);
  void *o = tp_pool_get(b);
  tp_pool_put(a, o);
}

static void do_not_a_pool_pointer(void *arg) {
  (void)arg;
  tp_pool *a = mk(64);
  void *m = malloc(64);
  tp_pool_put(a, m);
}

static void do_interior_pointer(void *arg) {
  (void)arg;
  tp_pool *a = mk(64);
  char *o = tp_pool_get(a);
  tp_pool_put(a, o + 8);
}

static void do_use_after_put(void *arg) {
  (void)arg;
  tp_pool *a = mk(64);
  void *v[64];
  for (int i = 0; i < 64; i++) v[i] = tp_pool_get(a);
  for (int i = 0; i < 64; i++) tp_pool_put(a, v[i]);
  for (int i = 0; i < 64; i++) ((char *)v[i])[5] = 1; /* writes after put */
  for (int i = 0; i < 100000; i++) (void)tp_pool_get(a);  /* one of them */
}

static void do_bulk_double_put(void *arg) {
  (void)arg;
  tp_pool *p = mk(32);
  void *v[4];
  tp_pool_get_bulk(p, v, 4);
  v[3] = v[1];
  tp_pool_put_bulk(p, v, 4);
}

static void double_put(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_double_put, NULL, "tp_pool_put("));
  assert_true(tt_dies_with(do_double_put, NULL, "double put"));
  assert_true(tt_dies_with(do_bulk_double_put, NULL, "tp_pool_put_bulk("));
}

static void foreign_pointers(void **s) {
  (void)s;
  assert_true(tt_dies_with(do_foreign_pool, NULL, "not from this pool"));
  assert_true(tt_dies_with(do_not_a_pool_pointer, NULL, "not from this pool"));
  assert_true(tt_dies_with(do_interior_pointer, NULL, "not an object of this pool"));
}

static void use_after_put(void **s) {
  (void)s;
#if defined(__SANITIZE_ADDRESS__)
  /* ASan catches the write itself: put objects are poisoned. */
  assert_true(tt_dies_with(do_use_after_put, NULL, "use-after-poison"));
#else
  assert_true(tt_dies_with(do_use_after_put, NULL, "use after put"));
#endif
}

/* Correct use does not abort in the debug build either. */
static void clean_use(void **s) {
  (void)s;
  tt_pool_clean_use(64);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(double_put),
      cmocka_unit_test(foreign_pointers),
      cmocka_unit_test(use_after_put),
      cmocka_unit_test(clean_use),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
