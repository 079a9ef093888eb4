/*
 * A fork child's first use of a module its multi-threaded parent never
 * used. Whether a module runs in the child of a multi-threaded fork must
 * not depend on the module having registered its fork handlers before the
 * fork: in TSan builds core's handlers, installed when the library is
 * loaded, tell every module (core/fork_internal.h,
 * tp__fork_child_threadless), and then no background thread starts there.
 *
 * The third case is the retire and sweeper threads in such a child: core's
 * thread start refuses every library thread there (core/os.c).
 *
 * fork_test's epoch module hung there under TSan, once in CI and in 11 of
 * 191 runs when looped: its parent had never created a heap, so the
 * collector had no fork handler and did not know the child was one; the
 * child's tp_heap_collect started the marker thread, and that thread
 * waited forever in TSan's runtime on an allocator lock that a parent
 * thread had held at the fork. The stall watchdog of the first grace
 * period had the same gap for a parent that never used epochs.
 *
 * Each case forks from a parent with a second thread alive (so TSan counts
 * the fork as multi-threaded) that never used the module; the child uses
 * it and, under TSan, must still be one thread at the end (/proc/self/task;
 * TSan's default die_after_fork=1 also kills a child that starts one). In
 * the other builds a child may start threads: there the cases check that
 * the child works and exits.
 */
#include <tidepool/epoch.h>
#include <tidepool/gc.h>
#include <tidepool/sweeper.h>

#include <errno.h>
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/robust/child.h"
#include "tests/test_util.h"

#if defined(__SANITIZE_THREAD__)
#define CHILD_ONE_THREAD 1
#else
#define CHILD_ONE_THREAD 0
#endif

/* Threads of this process (entries of /proc/self/task), or -1. */
static int count_threads(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* The parent's second thread: alive across every fork of a case.
 *
 * The forks wait until it runs its loop. A thread that is still starting
 * allocates inside the sanitizer runtimes (ASan's thread setup calls
 * pthread_getattr_np, which frees into the quarantine, which may refill
 * from the global allocator under a size-class lock); gcc 12's ASan does
 * not take its allocator locks across fork, so a fork at that moment
 * leaves the lock held in the child forever, and the child's first thread
 * that needs that size class hangs. That is a race of this test with
 * ASan's runtime, not of the library (it hung 3 of 20 runs under ASan
 * before the wait): the case is about a quiet second thread. */
static int stop, running;
static void *idler(void *arg) {
  (void)arg;
  __atomic_store_n(&running, 1, __ATOMIC_RELEASE);
  while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) tt_sleep_ms(1);
  return NULL;
}

static void fork_with_idler(void (*child)(void *)) {
  pthread_t t;
  __atomic_store_n(&stop, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&running, 0, __ATOMIC_RELEASE);
  assert_int_equal(pthread_create(&t, NULL, idler, NULL), 0);
  while (!__atomic_load_n(&running, __ATOMIC_ACQUIRE)) tt_sleep_ms(1);
  tt_sleep_ms(5); /* past the store: the idler is in its sleep */
  for (int i = 0; i < 3; i++) assert_true(tt_in_child(child, NULL, TT_HANG_MS));
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  assert_int_equal(pthread_join(t, NULL), 0);
}

struct node {
  struct node *next;
};
static const size_t node_offs[] = {0};
static const tp_type node_type = {.name = "node", .size = sizeof(struct node),
                                  .ptr_offsets = node_offs, .n_ptr_offsets = 1};

/* The first heap of this process, and a collection (which starts the
 * marker thread, outside a TSan fork child). */
static void heap_child(void *arg) {
  (void)arg;
  static void *root;
  tp_heap *h = tp_heap_create(NULL);
  TT_CHECK(h);
  TT_CHECK(tp_heap_attach(h) == 0);
  TT_CHECK(tp_root_add(h, &root) == 0);
  for (int i = 0; i < 1000; i++) {
    struct node *n = tp_heap_alloc(h, &node_type);
    TT_CHECK(n);
    n->next = root;
    root = n;
  }
  tp_heap_collect(h);
  int k = 0;
  for (struct node *n = root; n; n = n->next) k++;
  TT_CHECK(k == 1000);
  if (CHILD_ONE_THREAD) TT_CHECK(count_threads() == 1);
  root = NULL;
  TT_CHECK(tp_root_remove(h, &root) == 0);
  tp_heap_detach(h);
  tp_heap_destroy(h);
}

static int freed;
static void count_free(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  freed++;
}

/* A parent whose reclaimer (and watchdog) runs: it retired, then forks. */
static void fork_after_a_retire(void (*child)(void *)) {
  static char x;
  assert_int_equal(tp_epoch_retire(&x, count_free, NULL), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  fork_with_idler(child);
}

/* The parent used epochs, never a heap: fork_test's epoch module. */
static void heap_first_used_in_child(void **state) {
  (void)state;
  fork_after_a_retire(heap_child);
}

/* The first grace period of this process (which starts the stall
 * watchdog, outside a TSan fork child). */
static void epoch_child(void *arg) {
  (void)arg;
  tp_epoch_enter();
  tp_epoch_leave();
  TT_CHECK(tp_epoch_synchronize() == 0);
  if (CHILD_ONE_THREAD) TT_CHECK(count_threads() == 1);
}

/* The parent never used epochs (nor anything else of the library). */
static void epoch_first_used_in_child(void **state) {
  (void)state;
  fork_with_idler(epoch_child);
}

/* The threads a retire and the sweeper start. Under TSan the child starts
 * none: the retire is refused (EAGAIN, as when no thread can be started;
 * tp_epoch_barrier runs its cycle inline), and so is the sweeper; before
 * core's thread start asked tp__fork_child_threadless, the reclaimer's
 * pthread_create killed the child (TSan: "starting new threads after
 * multi-threaded fork is not supported"). Elsewhere both work. */
static void threads_child(void *arg) {
  (void)arg;
  static char x;
  freed = 0;
  int rc = tp_epoch_retire(&x, count_free, NULL);
  if (CHILD_ONE_THREAD) {
    TT_CHECK(rc == -EAGAIN && errno == EAGAIN);
    TT_CHECK(tp_epoch_barrier() == 0);
    TT_CHECK(tp_sweeper_start(NULL) == -EAGAIN);
    TT_CHECK(count_threads() == 1);
  } else {
    TT_CHECK(rc == 0);
    TT_CHECK(tp_epoch_barrier() == 0);
    TT_CHECK(freed == 1);
    TT_CHECK(tp_sweeper_start(NULL) == 0);
    tp_sweeper_stop();
  }
}

/* The parent's reclaimer runs, its sweeper does not. */
static void background_threads_in_child(void **state) {
  (void)state;
  fork_after_a_retire(threads_child);
}

int main(void) {
  /* epoch first: the other case uses epochs in the parent. */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(epoch_first_used_in_child),
      cmocka_unit_test(heap_first_used_in_child),
      cmocka_unit_test(background_threads_in_child),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
