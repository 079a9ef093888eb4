/*
 * Issue 14, fault 3: heaps and epochs deadlocked. Thread R, attached to a
 * heap, is inside an epoch read section and stops for a collection (at a
 * safepoint, or in its heap exit handler). Thread W, also attached, waits
 * for a grace period (tp_epoch_synchronize, tp_epoch_barrier, a retire
 * past the cap), which waits for R; the collector waits for W: nobody
 * moves. Now an epoch wait of an attached thread is a blocking section of
 * its heaps (core/blocking_internal.h), so the collection proceeds without
 * W, R resumes and leaves its section, and W's wait ends.
 *
 * The heap is created before epochs are first used (the order in which the
 * report deadlocked every time). Each case runs in a forked child with a
 * deadline: a deadlock fails the test. Deterministic: whatever the
 * interleaving, R is in its section when W waits, and the collection
 * cannot finish unless W's wait counts as blocking.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <tidepool/tidepool.h>

#include "tests/issue14_util.h"

struct node {
  struct node *next;
};
static const size_t node_offsets[] = {0};
static const tp_type node_type = {
    .name = "node", .size = sizeof(struct node), .ptr_offsets = node_offsets, .n_ptr_offsets = 1};

static tp_heap *heap;
static int r_in_section, collected, w_done;
static int w_kind; /* 0: synchronize, 1: barrier, 2: retire past the cap */

static void *reader(void *arg) {
  (void)arg;
  tp_heap_attach(heap);
  tp_epoch_enter();
  __atomic_store_n(&r_in_section, 1, __ATOMIC_RELEASE);
  /* Parks here for the collection, still inside the section. */
  while (!__atomic_load_n(&collected, __ATOMIC_ACQUIRE)) {
    tp_heap_safepoint(heap);
    tt_sleep_ms(1);
  }
  tp_epoch_leave();
  tp_heap_detach(heap);
  return NULL;
}

static void noop(void *obj, void *arg) {
  (void)obj;
  (void)arg;
}

static void *waiter(void *arg) {
  (void)arg;
  static char objs[4];
  tp_heap_attach(heap);
  tt_wait_for(&r_in_section, 1);
  int rc = 0;
  if (w_kind == 0) {
    rc = tp_epoch_synchronize();
  } else if (w_kind == 1) {
    rc = tp_epoch_retire(&objs[0], noop, NULL);
    if (rc == 0) rc = tp_epoch_barrier();
  } else {
    /* A tiny cap: the second retire waits for a grace period itself. */
    tp_epoch_configure(&(tp_epoch_config){.retire_cap = 1});
    rc = tp_epoch_retire_sized(&objs[1], 1024, noop, NULL);
    if (rc == 0) rc = tp_epoch_retire_sized(&objs[2], 1024, noop, NULL);
  }
  tp_heap_detach(heap);
  __atomic_store_n(&w_done, 1, __ATOMIC_RELEASE);
  return (void *)(intptr_t)rc;
}

static int scenario(void *arg) {
  w_kind = (int)(intptr_t)arg;
  heap = tp_heap_create(NULL); /* before any epoch use */
  T14_CHECK(heap != NULL);
  pthread_t r, w;
  T14_CHECK(pthread_create(&r, NULL, reader, NULL) == 0);
  T14_CHECK(pthread_create(&w, NULL, waiter, NULL) == 0);
  T14_CHECK(tt_wait_for(&r_in_section, 1));
  /* W cannot finish while R is in its section. */
  tt_sleep_ms(20);
  T14_CHECK(!__atomic_load_n(&w_done, __ATOMIC_ACQUIRE));
  tp_heap_collect(heap); /* needs R parked and W parked or blocking */
  __atomic_store_n(&collected, 1, __ATOMIC_RELEASE);
  void *wrc = (void *)1;
  pthread_join(w, &wrc);
  pthread_join(r, NULL);
  T14_CHECK(wrc == NULL);
  T14_CHECK(tp_heap_alloc(heap, &node_type) != NULL);
  tp_heap_destroy(heap);
  return 0;
}

static void synchronize_from_attached_thread(void **s) {
  (void)s;
  assert_int_equal(t14_run_child(scenario, (void *)0, 15000), 0);
}

static void barrier_from_attached_thread(void **s) {
  (void)s;
  assert_int_equal(t14_run_child(scenario, (void *)1, 15000), 0);
}

static void retire_past_cap_from_attached_thread(void **s) {
  (void)s;
  assert_int_equal(t14_run_child(scenario, (void *)2, 15000), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(synchronize_from_attached_thread),
      cmocka_unit_test(barrier_from_attached_thread),
      cmocka_unit_test(retire_past_cap_from_attached_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
