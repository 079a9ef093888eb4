/*
 * The validity checks (tp_pool_check, tp_epoch_check, tp_arena_check,
 * tp_heap_check): they pass on structures the library built, while other
 * threads work (epoch), and they find a broken one — a CPU cache holding
 * another pool's object, which the inline put does not catch by default;
 * a heap region whose header was overwritten. Linked twice: with the
 * library (the checks called directly) and with its debug build (which also
 * runs them inside the library: every slab handed objects back, every
 * destroy, every reclaim cycle, every region a sweep keeps).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <tidepool/tidepool.h>

#include <stdatomic.h>
#include <sys/wait.h>

#include "tests/test_util.h"

static void pool_checks_pass(void **state) {
  (void)state;
  assert_int_equal(tp_pool_check(NULL), -EINVAL);
  tp_pool_config cfg = {.name = "check", .obj_size = 48};
  tp_pool *p = tp_pool_create(&cfg);
  assert_non_null(p);
  assert_int_equal(tp_pool_check(p), 0);
  enum { N = 5000 };
  static void *objs[N];
  for (int i = 0; i < N; i++) assert_non_null(objs[i] = tp_pool_get(p));
  assert_int_equal(tp_pool_check(p), 0);
  /* The first half one by one (evens, then odds), the second in bulk. */
  for (int i = 0; i < N / 2; i += 2) tp_pool_put(p, objs[i]);
  assert_int_equal(tp_pool_check(p), 0);
  tp_pool_put_bulk(p, objs + N / 2, N / 2);
  assert_int_equal(tp_pool_get_bulk(p, objs + N / 2, N / 2), N / 2);
  assert_int_equal(tp_pool_check(p), 0);
  for (int i = 1; i < N / 2; i += 2) tp_pool_put(p, objs[i]);
  tp_pool_put_bulk(p, objs + N / 2, N / 2);
  assert_int_equal(tp_pool_check(p), 0);
  tp_sweep_all(); /* drains caches and the depot, gives slabs back */
  assert_int_equal(tp_pool_check(p), 0);
  tp_pool_destroy(p);
}

/* Another pool's object put into p. Where the inline put runs (rseq mode,
 * release build), it lands in p's CPU cache unchecked, and tp_pool_check
 * must report it; elsewhere the put itself aborts (the slow path checks
 * the owner). Either way the pool is not left silently broken. In a child
 * process, since both end with a broken pool or an abort. */
static void pool_check_finds_foreign_object(void **state) {
  (void)state;
  tp_pool_config cfg = {.name = "victim", .obj_size = 64};
  tp_pool *p = tp_pool_create(&cfg);
  tp_pool_config qcfg = {.name = "other", .obj_size = 64};
  tp_pool *q = tp_pool_create(&qcfg);
  assert_non_null(p);
  assert_non_null(q);
  int inline_put = ((struct tp__pool_head *)p)->slab_mask != 0;
  fflush(stdout);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    void *mine = tp_pool_get(p); /* p has slabs and a warm cache */
    tp_pool_put(p, mine);
    void *foreign = tp_pool_get(q);
    tp_pool_put(p, foreign);
    _exit(tp_pool_check(p) == -EINVAL ? 0 : 1);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (inline_put) {
    printf("inline put: tp_pool_check must report the foreign object\n");
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  } else {
    printf("no inline put here: the put must abort\n");
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
  }
  tp_pool_destroy(q);
  tp_pool_destroy(p);
}

static atomic_ulong freed;
static void count_cb(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  atomic_fetch_add(&freed, 1);
}

static int in_callback_rc = 1;
static void check_from_callback(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  in_callback_rc = tp_epoch_check();
}

static atomic_int stop;
static void *retirer(void *arg) {
  (void)arg;
  while (!atomic_load(&stop))
    for (int i = 0; i < 1000; i++) assert_int_equal(tp_epoch_retire(NULL, count_cb, NULL), 0);
  return NULL;
}

static void epoch_checks_pass_while_retiring(void **state) {
  (void)state;
  assert_int_equal(tp_epoch_check(), 0);
  enum { T = 3 };
  pthread_t th[T];
  for (int i = 0; i < T; i++) assert_int_equal(pthread_create(&th[i], NULL, retirer, NULL), 0);
  uint64_t end = tt_now_ns() + 300000000ull; /* a bounded phase, not a timed assertion */
  unsigned checks = 0;
  while (tt_now_ns() < end) {
    assert_int_equal(tp_epoch_check(), 0);
    checks++;
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(tp_epoch_check(), 0);
  printf("%u checks while %lu callbacks ran\n", checks, (unsigned long)atomic_load(&freed));
  assert_true(checks > 0);
  assert_int_equal(tp_epoch_retire(NULL, check_from_callback, NULL), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(in_callback_rc, -EDEADLK);
}

static void arena_checks_pass(void **state) {
  (void)state;
  assert_int_equal(tp_arena_check(NULL), -EINVAL);
  for (int conc = 0; conc < 2; conc++) {
    tp_arena_config cfg = {.chunk_size = 8192, .keep_bytes = 16384,
                           .flags = conc ? TP_ARENA_CONCURRENT : 0};
    tp_arena *a = tp_arena_create(&cfg);
    assert_non_null(a);
    assert_int_equal(tp_arena_check(a), 0);
    for (int round = 0; round < 3; round++) {
      for (int i = 0; i < 2000; i++) assert_non_null(tp_arena_alloc(a, (size_t)(i % 200) + 1));
      assert_non_null(tp_arena_alloc(a, 100000)); /* a large allocation */
      assert_int_equal(tp_arena_check(a), 0);
      tp_arena_reset(a);
      assert_int_equal(tp_arena_check(a), 0);
    }
    tp_arena_destroy(a);
  }
}

/* ---- collector heaps ---- */

struct hnode {
  struct hnode *left, *right;
  long id;
};
static const size_t hnode_offs[] = {0, 8};
static const tp_type hnode_type = {"hnode", sizeof(struct hnode), NULL, hnode_offs, 2, NULL, 0};
static const tp_type hleaf_type = {"hleaf", 200, NULL, NULL, 0, NULL, TP_TYPE_LEAF};

/* A tree of depth d, with leaves of another size between its nodes so
 * regions hold objects of several sizes. */
static struct hnode *tree(tp_heap *h, int d) {
  struct hnode *n = tp_heap_alloc(h, &hnode_type);
  assert_non_null(n);
  assert_non_null(tp_heap_alloc(h, &hleaf_type)); /* garbage at once */
  n->id = d;
  if (d > 0) {
    tp_heap_write(h, n, (void **)&n->left, tree(h, d - 1));
    tp_heap_write(h, n, (void **)&n->right, tree(h, d - 1));
  }
  return n;
}

static struct hnode *volatile heap_root;

/* tp_heap_check passes between collections that free and keep objects in
 * the same regions (the debug build checks every region each sweep keeps:
 * its line marks and objects), with large objects and a root set. */
static void heap_checks_pass(void **state) {
  (void)state;
  assert_int_equal(tp_heap_check(NULL), -EINVAL);
  tp_heap_config cfg = {.region_size = 64 << 10};
  tp_heap *h = tp_heap_create(&cfg);
  assert_non_null(h);
  assert_int_equal(tp_heap_check(h), 0);
  assert_int_equal(tp_heap_attach(h), 0);
  assert_int_equal(tp_root_add(h, (void **)&heap_root), 0);
  for (int round = 0; round < 6; round++) {
    heap_root = tree(h, 11);
    struct hnode *keep = heap_root;
    for (int i = 0; i < 3; i++) (void)tree(h, 9); /* garbage beside it */
    void *big = tp_heap_alloc_array(h, &hleaf_type, 1000); /* large object */
    assert_non_null(big);
    assert_int_equal(tp_heap_check(h), 0);
    tp_heap_collect(h);
    assert_int_equal(tp_heap_check(h), 0);
    if (round % 2) heap_root = keep->left; /* half the tree dies next time */
  }
  heap_root = NULL;
  tp_heap_collect(h);
  assert_int_equal(tp_heap_check(h), 0);
  assert_int_equal(tp_root_remove(h, (void **)&heap_root), 0);
  tp_heap_detach(h);
  tp_heap_destroy(h);
}

/* A region whose header was overwritten is reported. The region is found
 * by masking an object's address with the region size; its first word is
 * the region magic (gc/heap_internal.h), checked here first so a change
 * of layout fails this test rather than passing it vacuously. */
static void heap_check_finds_broken_region(void **state) {
  (void)state;
  tp_heap_config cfg = {.region_size = 64 << 10};
  tp_heap *h = tp_heap_create(&cfg);
  assert_non_null(h);
  assert_int_equal(tp_heap_attach(h), 0);
  void *obj = tp_heap_alloc(h, &hleaf_type);
  assert_non_null(obj);
  uint32_t *magic = (uint32_t *)((uintptr_t)obj & ~(uintptr_t)((64 << 10) - 1));
  assert_int_equal(*magic, 0x74706772u); /* TP__REGION_MAGIC, "tpgr" */
  assert_int_equal(tp_heap_check(h), 0);
  *magic = 0x12345678u;
  errno = 0;
  assert_int_equal(tp_heap_check(h), -EINVAL);
  assert_int_equal(errno, EINVAL);
  *magic = 0x74706772u;
  assert_int_equal(tp_heap_check(h), 0);
  tp_heap_detach(h);
  tp_heap_destroy(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(pool_checks_pass),
      cmocka_unit_test(pool_check_finds_foreign_object),
      cmocka_unit_test(epoch_checks_pass_while_retiring),
      cmocka_unit_test(arena_checks_pass),
      cmocka_unit_test(heap_checks_pass),
      cmocka_unit_test(heap_check_finds_broken_region),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
