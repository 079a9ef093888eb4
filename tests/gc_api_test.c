/*
 * tp_heap: the API one call at a time — bad input, roots, cycles, weak
 * references, finalizers, arrays, large objects, interior pointers,
 * conservative types, root ranges, stack scanning, stats, and the
 * checkmark verifier catching a marking bug (death test).
 *
 * Tests that expect an object to be collected collect from a detached
 * thread (tt_collect_unscanned): a conservative scan of this thread's stack
 * could keep a stale copy of the pointer alive, which is allowed but would
 * make the test flaky.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tidepool/gc.h>

#include "death.h"
#include "gc_test_util.h"
#include "test_util.h"

struct node {
  struct node *a, *b;
  long id;
  long pad;
};

static const size_t node_offs[] = {offsetof(struct node, a), offsetof(struct node, b)};
static const tp_type node_type = {"node", sizeof(struct node), NULL, node_offs, 2, NULL, 0};

static void node_trace(void *obj, tp_tracer *t) {
  struct node *n = obj;
  tp_trace(t, n->a);
  tp_trace(t, n->b);
}
static const tp_type traced_type = {"traced", sizeof(struct node), node_trace, NULL, 0, NULL, 0};
static const tp_type cons_type = {"cons", sizeof(struct node), NULL, NULL, 0, NULL,
                                  TP_TYPE_CONSERVATIVE};
static const tp_type leaf_type = {"leaf", 40, NULL, NULL, 0, NULL, TP_TYPE_LEAF};
static const size_t ptr_offs[] = {0};
static const tp_type ptr_type = {"ptr", sizeof(void *), NULL, ptr_offs, 1, NULL, 0};

static int fin_runs[4096];
static void node_fin(void *obj) {
  struct node *n = obj;
  if (n->id >= 0 && n->id < 4096) fin_runs[n->id]++;
}
static const tp_type fin_type = {"fin", sizeof(struct node), NULL, node_offs, 2, node_fin, 0};

static tp_heap_config small_cfg(void) {
  tp_heap_config c = {.trigger_percent = 0, .region_size = 64 << 10};
  return c;
}

static tp_heap *new_heap(void) {
  tp_heap_config c = small_cfg();
  tp_heap *h = tp_heap_create(&c);
  assert_non_null(h);
  return h;
}

static struct node *new_node(tp_heap *h, const tp_type *t, long id) {
  struct node *n = tp_heap_alloc(h, t);
  assert_non_null(n);
  assert_int_equal(((uintptr_t)n) & 15, 0);
  assert_null(n->a);
  assert_null(n->b);
  assert_int_equal(n->id, 0);
  n->id = id;
  return n;
}

/* ---- configuration and bad input ------------------------------------------ */

static void test_config(void **state) {
  (void)state;
  tp_heap_config c = {.region_size = 1000};
  errno = 0;
  assert_null(tp_heap_create(&c));
  assert_int_equal(errno, EINVAL);
  c.region_size = 16 << 10;
  assert_null(tp_heap_create(&c));
  c.region_size = 2 << 20;
  assert_null(tp_heap_create(&c));
  tp_heap *h = tp_heap_create(NULL);
  assert_non_null(h);
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(h, &s), 0);
  assert_int_equal(s.checkmark, 1); /* TIDEPOOL_GC_CHECKMARK=1 in all tests */
  assert_int_equal(s.region_size, 256 << 10);
  assert_int_equal(s.next_gc, 4 << 20); /* default floor, nothing live */
  assert_int_equal(s.num_gc, 0);
  tp_heap_destroy(h);
  c = (tp_heap_config){.trigger_percent = 0};
  h = tp_heap_create(&c);
  tp_heap_read_stats(h, &s);
  assert_int_equal(s.next_gc, UINT64_MAX); /* manual only */
  tp_heap_destroy(h);
  tp_heap_destroy(NULL);
}

static void test_bad_input(void **state) {
  (void)state;
  tp_heap *h = new_heap();
  errno = 0;
  assert_null(tp_heap_alloc(NULL, &node_type));
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_null(tp_heap_alloc(h, NULL));
  assert_int_equal(errno, EINVAL);
  assert_null(tp_heap_alloc_array(NULL, &node_type, 3));
  assert_null(tp_heap_alloc_array(h, NULL, 3));

  /* Invalid types: the heap never guesses. */
  const tp_type bad[] = {
      {"size0", 0, NULL, NULL, 0, NULL, TP_TYPE_LEAF},
      {"none", 16, NULL, NULL, 0, NULL, 0},
      {"two", 16, node_trace, node_offs, 2, NULL, 0},
      {"leafcons", 16, NULL, NULL, 0, NULL, TP_TYPE_LEAF | TP_TYPE_CONSERVATIVE},
      {"flags", 16, NULL, NULL, 0, NULL, 8},
      {"tracecons", 16, node_trace, NULL, 0, NULL, TP_TYPE_CONSERVATIVE},
      {"nooffs", 16, NULL, NULL, 2, NULL, 0},
      {"offs0", 16, NULL, node_offs, 0, NULL, 0},
      {"offrange", 8, NULL, node_offs, 2, NULL, 0},
      {"size", 20, NULL, node_offs, 2, NULL, 0},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    errno = 0;
    assert_null(tp_heap_alloc(h, &bad[i]));
    assert_int_equal(errno, EINVAL);
  }
  static const size_t odd_off[] = {4};
  const tp_type misaligned = {"odd", 16, NULL, odd_off, 1, NULL, 0};
  assert_null(tp_heap_alloc(h, &misaligned));

  /* Size overflow in alloc_array. */
  errno = 0;
  assert_null(tp_heap_alloc_array(h, &node_type, SIZE_MAX / 8));
  assert_int_equal(errno, ENOMEM);
  errno = 0;
  assert_null(tp_heap_alloc_array(h, &leaf_type, ((size_t)1 << 62) / 40 + 1));
  assert_int_equal(errno, ENOMEM);

  /* Roots. */
  void *slot = NULL, *slot2 = NULL;
  assert_int_equal(tp_root_add(NULL, &slot), -EINVAL);
  assert_int_equal(tp_root_add(h, NULL), -EINVAL);
  errno = 0;
  assert_int_equal(tp_root_remove(h, &slot), -EINVAL); /* never added */
  assert_int_equal(errno, EINVAL);
  assert_int_equal(tp_root_add(h, &slot), 0);
  assert_int_equal(tp_root_add(h, &slot), -EEXIST);
  assert_int_equal(tp_root_remove(h, &slot2), -EINVAL);
  assert_int_equal(tp_root_remove(h, &slot), 0);
  assert_int_equal(tp_root_remove(h, &slot), -EINVAL);
  assert_int_equal(tp_root_remove(NULL, &slot), -EINVAL);
  assert_int_equal(tp_root_remove(h, NULL), -EINVAL);

  char buf[64];
  assert_int_equal(tp_root_add_range(NULL, buf, sizeof buf), -EINVAL);
  assert_int_equal(tp_root_add_range(h, NULL, sizeof buf), -EINVAL);
  assert_int_equal(tp_root_add_range(h, buf, 0), -EINVAL);
  assert_int_equal(tp_root_remove_range(h, buf), -EINVAL);
  assert_int_equal(tp_root_add_range(h, buf, sizeof buf), 0);
  assert_int_equal(tp_root_add_range(h, buf, 8), -EEXIST);
  assert_int_equal(tp_root_remove_range(h, buf), 0);
  assert_int_equal(tp_root_remove_range(h, buf), -EINVAL);
  assert_int_equal(tp_root_remove_range(NULL, buf), -EINVAL);

  /* Weak references need an object of the heap. */
  struct node *n = new_node(h, &node_type, 1);
  errno = 0;
  assert_null(tp_weak_new(h, buf));
  assert_int_equal(errno, EINVAL);
  assert_null(tp_weak_new(h, (char *)n + 8)); /* interior */
  assert_null(tp_weak_new(NULL, n));
  assert_null(tp_weak_new(h, NULL));
  errno = 0;
  assert_null(tp_weak_get(NULL));
  assert_int_equal(errno, EINVAL);
  tp_weak_free(NULL);

  /* The rest take NULL quietly. */
  assert_int_equal(tp_heap_attach(NULL), -EINVAL);
  tp_heap_detach(NULL);
  tp_heap_safepoint(NULL);
  tp_heap_blocking_enter(NULL);
  tp_heap_blocking_leave(NULL);
  errno = 0;
  tp_heap_collect(NULL);
  assert_int_equal(errno, EINVAL);
  assert_int_equal(tp_heap_run_finalizers(NULL), 0);
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(NULL, &s), -EINVAL);
  assert_int_equal(tp_heap_read_stats(h, NULL), -EINVAL);
  tp_trace(NULL, n);
  tp_heap_destroy(h);
}

/* ---- roots, cycles, types ------------------------------------------------- */

/* A ring of n nodes of type t: returns the first. */
static struct node *ring(tp_heap *h, const tp_type *t, long n, long id0) {
  struct node *first = new_node(h, t, id0), *prev = first;
  for (long i = 1; i < n; i++) {
    struct node *x = new_node(h, t, id0 + i);
    tp_heap_write(h, prev, (void **)&prev->a, x);
    x->b = first; /* and a back edge: many cycles */
    prev = x;
  }
  prev->a = first;
  return first;
}

static long ring_check(struct node *first, long id0) {
  long n = 0;
  struct node *x = first;
  do {
    assert_int_equal(x->id, id0 + n);
    assert_ptr_equal(x->b ? x->b : first, first);
    x = x->a;
    n++;
  } while (x != first);
  return n;
}

static void test_cycles(void **state) {
  (void)state;
  const tp_type *types[] = {&node_type, &traced_type, &cons_type};
  for (int k = 0; k < 3; k++) {
    tp_heap *h = new_heap();
    static void *root;
    assert_int_equal(tp_root_add(h, &root), 0);
    root = ring(h, types[k], 5000, 100);
    tp_weak *w = tp_weak_new(h, ((struct node *)root)->a);
    assert_non_null(w);
    tt_collect_unscanned(h);
    assert_int_equal(ring_check(root, 100), 5000);
    assert_ptr_equal(tp_weak_get(w), ((struct node *)root)->a);
    tp_heap_stats s;
    tp_heap_read_stats(h, &s);
    assert_int_equal(s.objects_live, 5000);
    assert_int_equal(s.heap_live, 5000 * 48); /* 8-byte header + 32, 16-rounded */
    assert_int_equal(s.heap_alloc, s.heap_live);
    assert_int_equal(s.objects_freed, 0);
    /* Churn garbage, then drop the ring: the cycles go. */
    for (int i = 0; i < 20000; i++) new_node(h, types[k], -1);
    root = NULL;
    tt_collect_unscanned(h);
    tp_heap_read_stats(h, &s);
    assert_null(tp_weak_get(w));
    assert_int_equal(s.objects_live, 0);
    assert_int_equal(s.heap_live, 0);
    assert_int_equal(s.objects_freed, 25000);
    assert_int_equal(s.objects_alloc, 25000);
    assert_int_equal(s.regions, 0); /* every region went back whole */
    assert_true(s.regions_released > 0);
    assert_int_equal(s.num_gc, 2);
    tp_weak_free(w);
    tp_root_remove(h, &root);
    tp_heap_destroy(h);
  }
}

static void test_leaf_and_partial_regions(void **state) {
  (void)state;
  tp_heap *h = new_heap();
  enum { N = 20000 };
  static void *keep[N / 7 + 1];
  assert_int_equal(tp_root_add_range(h, keep, sizeof keep), 0);
  /* Interleave kept and dropped leaf objects: regions become partly live
   * and their free lines are reused for new objects. */
  for (int i = 0; i < N; i++) {
    char *p = tp_heap_alloc(h, &leaf_type);
    assert_non_null(p);
    memset(p, 0x5a, 40);
    if (i % 7 == 0) keep[i / 7] = p;
  }
  tt_collect_unscanned(h);
  tp_heap_stats s1, s2;
  tp_heap_read_stats(h, &s1);
  assert_int_equal(s1.objects_live, N / 7 + 1);
  /* Allocation fills the holes before taking new regions. */
  for (int i = 0; i < N / 10; i++) assert_non_null(tp_heap_alloc(h, &leaf_type));
  tp_heap_read_stats(h, &s2);
  assert_int_equal(s2.regions, s1.regions);
  for (size_t i = 0; i < N / 7 + 1; i++)
    for (int j = 0; j < 40; j++) assert_int_equal(((unsigned char *)keep[i])[j], 0x5a);
  assert_int_equal(tp_root_remove_range(h, keep), 0);
  tt_collect_unscanned(h);
  tp_heap_read_stats(h, &s2);
  assert_int_equal(s2.objects_live, 0);
  tp_heap_destroy(h);
}

/* ---- weak references and finalizers ----------------------------------------- */

static void test_weak(void **state) {
  (void)state;
  tp_heap *h = new_heap();
  static void *root;
  assert_int_equal(tp_root_add(h, &root), 0);
  struct node *a = new_node(h, &node_type, 1), *b = new_node(h, &node_type, 2);
  a->a = b;
  root = a;
  tp_weak *wa = tp_weak_new(h, a), *wb = tp_weak_new(h, b);
  assert_non_null(wa);
  assert_non_null(wb);
  for (int i = 0; i < 3; i++) {
    tt_collect_unscanned(h);
    assert_ptr_equal(tp_weak_get(wa), a);
    assert_ptr_equal(tp_weak_get(wb), b);
  }
  a->a = NULL; /* b dies now, a stays */
  tt_collect_unscanned(h);
  assert_ptr_equal(tp_weak_get(wa), a);
  assert_null(tp_weak_get(wb));
  root = NULL;
  tt_collect_unscanned(h);
  assert_null(tp_weak_get(wa));
  tp_weak_free(wa);
  /* A weak reference outlives its heap. */
  struct node *c = new_node(h, &node_type, 3);
  root = c;
  tp_weak *wc = tp_weak_new(h, c);
  tp_heap_destroy(h);
  assert_null(tp_weak_get(wc));
  tp_weak_free(wc);
  tp_weak_free(wb);
}

static void *resurrected;
static int resurrect_runs;
static void resurrect_fin(void *obj) {
  resurrect_runs++;
  resurrected = obj;
}
static const tp_type resurrect_type = {"res", sizeof(struct node), NULL, node_offs, 2,
                                       resurrect_fin, 0};

static tp_heap *alloc_fin_heap;
static void alloc_fin(void *obj) {
  /* A finalizer may allocate. */
  struct node *n = tp_heap_alloc(alloc_fin_heap, &node_type);
  assert_non_null(n);
  n->a = obj;
  node_fin(obj);
}
static const tp_type alloc_fin_type = {"allocfin", sizeof(struct node), NULL, node_offs, 2,
                                       alloc_fin, 0};

static void test_finalizers(void **state) {
  (void)state;
  memset(fin_runs, 0, sizeof fin_runs);
  tp_heap *h = new_heap();
  static void *root;
  assert_int_equal(tp_root_add(h, &root), 0);
  /* 1000 finalizable nodes; even ids stay reachable from the root chain;
   * odd ones hang off the even ones only through a node that is itself
   * dropped, so they all die together, in cycles. */
  struct node *head = NULL;
  struct node *dropped = new_node(h, &node_type, -1);
  for (long i = 0; i < 1000; i++) {
    struct node *n = new_node(h, &fin_type, i);
    if (i % 2 == 0) {
      n->a = head;
      head = n;
    } else {
      n->a = dropped->a;
      n->b = n; /* self cycle */
      dropped->a = n;
    }
  }
  root = head;
  tp_weak *wd = tp_weak_new(h, dropped->a);
  dropped = NULL;
  head = NULL;
  tt_collect_unscanned(h);
  tp_heap_stats s;
  tp_heap_read_stats(h, &s);
  assert_int_equal(s.finalizers_run, 500);
  assert_int_equal(s.finalizers_pending, 0);
  assert_null(tp_weak_get(wd)); /* cleared before its finalizer ran */
  for (int i = 0; i < 1000; i++) assert_int_equal(fin_runs[i], i % 2);
  /* Finalized objects are freed by the next collection, never finalized
   * twice. */
  tt_collect_unscanned(h);
  tt_collect_unscanned(h);
  for (int i = 0; i < 1000; i++) assert_int_equal(fin_runs[i], i % 2);
  tp_heap_read_stats(h, &s);
  assert_int_equal(s.objects_live, 500);

  /* Resurrection: the finalizer stores the object in a root; it lives on,
   * its finalizer does not run again, its weak reference stays NULL. */
  assert_int_equal(tp_root_add(h, &resurrected), 0);
  struct node *r = new_node(h, &resurrect_type, 77);
  tp_weak *wr = tp_weak_new(h, r);
  r = NULL;
  tt_collect_unscanned(h);
  assert_int_equal(resurrect_runs, 1);
  assert_non_null(resurrected);
  assert_int_equal(((struct node *)resurrected)->id, 77);
  assert_null(tp_weak_get(wr));
  tt_collect_unscanned(h);
  assert_int_equal(((struct node *)resurrected)->id, 77);
  resurrected = NULL;
  tt_collect_unscanned(h);
  tt_collect_unscanned(h);
  assert_int_equal(resurrect_runs, 1);

  /* A finalizer that allocates. */
  alloc_fin_heap = h;
  struct node *af = new_node(h, &alloc_fin_type, 3000);
  af = NULL;
  (void)af;
  tt_collect_unscanned(h);
  assert_int_equal(fin_runs[3000], 1);

  /* Destroy finalizes what is still allocated (the 500 even ones), once. */
  tp_heap_destroy(h);
  for (int i = 0; i < 1000; i++) assert_int_equal(fin_runs[i], 1);
  assert_int_equal(fin_runs[3000], 1);
  tp_weak_free(wd);
  tp_weak_free(wr);
}

/* ---- arrays, large objects, interior pointers, ranges ------------------------ */

static void test_arrays_and_large(void **state) {
  (void)state;
  tp_heap *h = new_heap(); /* 64 KiB regions: over 16 KiB is large */
  static void *root_small, *root_large, *root_empty;
  assert_int_equal(tp_root_add(h, &root_small), 0);
  assert_int_equal(tp_root_add(h, &root_large), 0);
  assert_int_equal(tp_root_add(h, &root_empty), 0);
  void **small = tp_heap_alloc_array(h, &ptr_type, 100);
  void **large = tp_heap_alloc_array(h, &ptr_type, 100000);
  void **empty = tp_heap_alloc_array(h, &ptr_type, 0);
  assert_non_null(small);
  assert_non_null(large);
  assert_non_null(empty);
  assert_int_equal((uintptr_t)large & 15, 0);
  for (int i = 0; i < 100000; i++) assert_null(large[i]);
  for (int i = 0; i < 100; i++) small[i] = new_node(h, &node_type, i);
  for (int i = 0; i < 100000; i += 100) large[i] = new_node(h, &traced_type, 1000 + i);
  root_small = small;
  root_large = large;
  root_empty = empty;
  tp_heap_stats s;
  tp_heap_read_stats(h, &s);
  assert_int_equal(s.large_objects, 1);
  tt_collect_unscanned(h);
  for (int i = 0; i < 100; i++) assert_int_equal(((struct node *)small[i])->id, i);
  for (int i = 0; i < 100000; i += 100) assert_int_equal(((struct node *)large[i])->id, 1000 + i);
  tp_heap_read_stats(h, &s);
  assert_int_equal(s.objects_live, 3 + 100 + 1000);
  assert_int_equal(s.large_objects, 1);
  /* A large leaf object, and one reached only by an interior pointer. */
  char *big = tp_heap_alloc_array(h, &leaf_type, 10000);
  assert_non_null(big);
  big[399999] = 7;
  root_empty = big + 123457; /* interior pointer in a precise root */
  tt_collect_unscanned(h);
  assert_int_equal(big[399999], 7);
  tp_heap_read_stats(h, &s);
  assert_int_equal(s.large_objects, 2);
  uint64_t sys_before = s.heap_sys;
  root_small = root_large = root_empty = NULL;
  tt_collect_unscanned(h);
  tp_heap_read_stats(h, &s);
  assert_int_equal(s.large_objects, 0);
  assert_int_equal(s.objects_live, 0);
  assert_true(s.heap_sys < sys_before); /* large mappings go at once */
  tp_heap_destroy(h);
}

static void test_interior_and_ranges(void **state) {
  (void)state;
  tp_heap *h = new_heap();
  static uintptr_t range[16];
  assert_int_equal(tp_root_add_range(h, range, sizeof range), 0);
  struct node *x = new_node(h, &node_type, 1), *y = new_node(h, &node_type, 2);
  struct node *z = new_node(h, &node_type, 3);
  /* An array next: its slot starts with a padding word, so the word just
   * past z's slot belongs to no object. */
  void **spacer = tp_heap_alloc_array(h, &ptr_type, 1);
  assert_ptr_equal((char *)spacer, (char *)z + 64);
  struct node *c = new_node(h, &cons_type, 4);
  range[3] = (uintptr_t)x + 20;      /* interior, in a conservative range */
  range[7] = (uintptr_t)c;           /* a conservative object ... */
  c->a = (struct node *)((char *)y + 31); /* ... holding an interior pointer */
  c->pad = (long)((char *)z + 40);   /* one past z's slot: not inside z */
  tp_weak *wx = tp_weak_new(h, x), *wy = tp_weak_new(h, y), *wz = tp_weak_new(h, z);
  x = y = z = c = NULL;
  tt_collect_unscanned(h);
  assert_non_null(tp_weak_get(wx));
  assert_non_null(tp_weak_get(wy));
  assert_int_equal(((struct node *)tp_weak_get(wx))->id, 1);
  assert_int_equal(((struct node *)tp_weak_get(wy))->id, 2);
  assert_null(tp_weak_get(wz));
  assert_int_equal(tp_root_remove_range(h, range), 0);
  tt_collect_unscanned(h);
  assert_null(tp_weak_get(wx));
  assert_null(tp_weak_get(wy));
  tp_weak_free(wx);
  tp_weak_free(wy);
  tp_weak_free(wz);
  tp_heap_destroy(h);
}

/* ---- stacks ------------------------------------------------------------------ */

static __attribute__((noinline)) void *make_chain(tp_heap *h, int n) {
  struct node *head = NULL;
  for (int i = 0; i < n; i++) {
    struct node *x = new_node(h, &node_type, i);
    x->a = head;
    head = x;
  }
  return head;
}

static void test_stack_roots(void **state) {
  (void)state;
  tp_heap *h = new_heap();
  /* Only this thread's stack (or registers) refers to the chain, partly
   * by an interior pointer. Churn garbage so freed memory is reused: a
   * chain node collected by mistake would be overwritten. */
  struct node *volatile head = make_chain(h, 2000);
  char *volatile inner = (char *)make_chain(h, 10) + 17;
  for (int round = 0; round < 5; round++) {
    tp_heap_collect(h); /* attached: the stack is scanned */
    for (int i = 0; i < 30000; i++) new_node(h, &node_type, -1);
  }
  long n = 0;
  for (struct node *x = head; x; x = x->a, n++) assert_int_equal(x->id, 1999 - n);
  assert_int_equal(n, 2000);
  n = 0;
  for (struct node *x = (struct node *)(inner - 17); x; x = x->a, n++) assert_int_equal(x->id, 9 - n);
  assert_int_equal(n, 10);
  tp_heap_stats s;
  tp_heap_read_stats(h, &s);
  assert_true(s.objects_live >= 2010);
  assert_true(s.objects_live < 2010 + 30000); /* most garbage went */
  tp_heap_destroy(h);
}

/* ---- stats ------------------------------------------------------------------- */

static void test_stats(void **state) {
  (void)state;
  tp_heap_config c = {.trigger_percent = 100, .min_heap_bytes = 1 << 20, .region_size = 64 << 10};
  tp_heap *h = tp_heap_create(&c);
  static void *root;
  tp_root_add(h, &root);
  uint64_t seed = tt_seed("test_stats");
  for (int round = 0; round < 20; round++) {
    int n = (int)(tt_rand(&seed) % 20000);
    for (int i = 0; i < n; i++) {
      struct node *x = new_node(h, &node_type, i);
      if (tt_rand(&seed) % 3 == 0) {
        x->a = root;
        root = x;
      }
    }
    if (tt_rand(&seed) % 4 == 0) root = NULL;
    tt_collect_unscanned(h);
    tp_heap_stats s;
    tp_heap_read_stats(h, &s);
    /* After a collection on a quiescent heap everything agrees. */
    assert_int_equal(s.heap_alloc, s.heap_live);
    assert_int_equal(s.objects_alloc - s.objects_freed, s.objects_live);
    assert_int_equal(s.heap_live, s.objects_live * 48);
    assert_true(s.heap_inuse >= s.heap_live);
    assert_true(s.heap_sys >= s.heap_inuse);
    assert_int_equal(s.heap_inuse, s.regions * (64 << 10));
    uint64_t goal = s.heap_live * 2 > (1 << 20) ? s.heap_live * 2 : (1 << 20);
    assert_int_equal(s.next_gc, goal);
    assert_true(s.num_gc >= (uint64_t)round + 1);
    assert_true(s.pause_max_ns >= s.last_pause_ns);
    assert_true(s.pause_total_ns >= s.pause_max_ns);
    assert_true(s.mark_ns > 0 && s.sweep_ns > 0);
    /* Marking and sweeping run concurrently, outside the two pauses of a
     * cycle: their times are not part of pause_total_ns any more. */
    assert_true(s.pause_total_ns > 0);
    assert_int_equal(s.threads, 0);
  }
  tp_heap_destroy(h);
}

/* ---- verification and misuse (death tests) -------------------------------------- */

/* A trace callback that lies: it visits a's target only on its second
 * call for each object (the checkmark traversal), so that traversal reaches
 * an object the marking never saw. The verifier must abort. */
static int lie_calls;
static void lying_trace(void *obj, tp_tracer *t) {
  struct node *n = obj;
  if (n->id == 1 && lie_calls++ % 2 == 1) tp_trace(t, n->a);
}
static const tp_type lying_type = {"liar", sizeof(struct node), lying_trace, NULL, 0, NULL, 0};

static void checkmark_catches(void *arg) {
  (void)arg;
  tp_heap *h = new_heap();
  static void *root;
  tp_root_add(h, &root);
  struct node *n = new_node(h, &lying_type, 1);
  n->a = new_node(h, &node_type, 2);
  root = n;
  n = NULL;
  tt_collect_unscanned(h); /* must abort in the verifier */
}

static void alloc_while_blocking(void *arg) {
  (void)arg;
  tp_heap *h = new_heap();
  tp_heap_attach(h);
  tp_heap_blocking_enter(h);
  tp_heap_alloc(h, &node_type);
}

static void test_death(void **state) {
  (void)state;
  assert_true(tt_dies_with(checkmark_catches, NULL, "checkmark"));
  assert_true(tt_dies_with(alloc_while_blocking, NULL, "blocking"));
}

/* ---- attach / detach / destroy with threads ----------------------------------------- */

static tp_heap *orphan_heap;
static pthread_mutex_t orphan_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t orphan_cv = PTHREAD_COND_INITIALIZER;
static int orphan_phase;
static tt_failures orphan_failures;

static void *orphan_thread(void *arg) {
  (void)arg;
  /* Allocate (attaches), detach, then wait while the heap is destroyed,
   * then use a new heap: the orphaned record must not get in the way. */
  if (!tp_heap_alloc(orphan_heap, &node_type))
    tt_fail_once(&orphan_failures, "allocation from the first heap failed");
  tp_heap_detach(orphan_heap);
  pthread_mutex_lock(&orphan_mu);
  orphan_phase = 1;
  pthread_cond_broadcast(&orphan_cv);
  while (orphan_phase != 2) pthread_cond_wait(&orphan_cv, &orphan_mu);
  pthread_mutex_unlock(&orphan_mu);
  tp_heap_config c = small_cfg();
  tp_heap *h2 = tp_heap_create(&c);
  if (!h2) {
    tt_fail_once(&orphan_failures, "second heap: create failed");
    return NULL;
  }
  if (!tp_heap_alloc(h2, &node_type))
    tt_fail_once(&orphan_failures, "allocation from the second heap failed");
  tp_heap_collect(h2);
  tp_heap_detach(h2);
  tp_heap_destroy(h2);
  return NULL;
}

static void test_attach_destroy(void **state) {
  (void)state;
  tp_heap *h = new_heap();
  assert_int_equal(tp_heap_attach(h), 0);
  assert_int_equal(tp_heap_attach(h), 0); /* nests */
  tp_heap_stats s;
  tp_heap_read_stats(h, &s);
  assert_int_equal(s.threads, 1);
  tp_heap_detach(h);
  tp_heap_read_stats(h, &s);
  assert_int_equal(s.threads, 1);
  tp_heap_detach(h);
  tp_heap_read_stats(h, &s);
  assert_int_equal(s.threads, 0);
  tp_heap_detach(h); /* not attached: no-op */
  tp_heap_safepoint(h);
  tp_heap_blocking_enter(h); /* not attached: no-op */
  tp_heap_blocking_leave(h);
  tp_heap_destroy(h);

  orphan_heap = new_heap();
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, orphan_thread, NULL), 0);
  pthread_mutex_lock(&orphan_mu);
  while (orphan_phase != 1) pthread_cond_wait(&orphan_cv, &orphan_mu);
  pthread_mutex_unlock(&orphan_mu);
  tp_heap_destroy(orphan_heap);
  pthread_mutex_lock(&orphan_mu);
  orphan_phase = 2;
  pthread_cond_broadcast(&orphan_cv);
  pthread_mutex_unlock(&orphan_mu);
  pthread_join(t, NULL);
  tt_assert_no_failures(&orphan_failures);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_cycles),
      cmocka_unit_test(test_leaf_and_partial_regions),
      cmocka_unit_test(test_weak),
      cmocka_unit_test(test_finalizers),
      cmocka_unit_test(test_arrays_and_large),
      cmocka_unit_test(test_interior_and_ranges),
      cmocka_unit_test(test_stack_roots),
      cmocka_unit_test(test_stats),
      cmocka_unit_test(test_death),
      cmocka_unit_test(test_attach_destroy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
