/*
 * Issue 14, fault 9: tp_heap_attach on the main thread aborted ("cannot
 * find the thread's stack") when the process was out of file descriptors:
 * glibc's pthread_getattr_np reads /proc/self/maps for the main thread.
 * Now the main thread's stack is found without opening anything, and a
 * failure to find a stack is -ENOMEM, never an abort.
 *
 * In a forked child: RLIMIT_NOFILE lowered and every descriptor used up,
 * then attach, allocate (a stack-held object survives a collection) and
 * collect, on the main thread and on a second thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <tidepool/tidepool.h>

#include "tests/issue14_util.h"

struct node {
  struct node *next;
  uint64_t v;
};
static const size_t node_offsets[] = {0};
static const tp_type node_type = {.name = "node", .size = sizeof(struct node), .ptr_offsets = node_offsets, .n_ptr_offsets = 1};

static int use_heap(tp_heap *h) {
  T14_CHECK(tp_heap_attach(h) == 0);
  struct node *volatile keep = tp_heap_alloc(h, &node_type);
  T14_CHECK(keep != NULL);
  keep->v = 42;
  for (int i = 0; i < 1000; i++) T14_CHECK(tp_heap_alloc(h, &node_type) != NULL);
  tp_heap_collect(h);
  T14_CHECK(keep->v == 42);
  tp_heap_detach(h);
  return 0;
}

static void *thread_main(void *arg) { return (void *)(intptr_t)use_heap(arg); }

static int no_fds_child(void *arg) {
  (void)arg;
  struct rlimit rl = {64, 64};
  T14_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
  int n = 0;
  while (open("/dev/null", O_RDONLY) >= 0) n++;
  T14_CHECK(errno == EMFILE);
  T14_CHECK(open("/proc/self/maps", O_RDONLY) < 0); /* really none left */
  tp_heap *h = tp_heap_create(NULL);
  T14_CHECK(h != NULL);
  T14_CHECK(use_heap(h) == 0); /* the main thread */
  pthread_t t;
  void *rc = (void *)1;
  T14_CHECK(pthread_create(&t, NULL, thread_main, h) == 0);
  pthread_join(t, &rc);
  T14_CHECK(rc == NULL);
  tp_heap_destroy(h);
  return 0;
}

static void test_attach_without_file_descriptors(void **state) {
  (void)state;
  assert_int_equal(t14_run_child(no_fds_child, NULL, TT_HANG_MS), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_attach_without_file_descriptors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
