/*
 * tp_heap against a reachability oracle: random object graphs (cycles,
 * arrays, large objects, interior pointers, precise roots, conservative
 * root ranges) are mutated at random — objects added, edges rewired, roots
 * dropped — and after each collection the set of survivors (objects whose
 * weak reference is still set) is compared with the set the test computes
 * itself by breadth-first search over its shadow copy of the graph:
 *
 *   precise types (ptr_offsets, trace callbacks)  survivors == reachable
 *   conservative types, stale words                survivors  ⊇ reachable
 *
 * Then freed memory is reused by a burst of garbage allocations and every
 * reachable object is checked field by field against the shadow graph, so
 * an object freed while reachable shows up as corrupted data. Objects with
 * finalizers must have theirs run exactly once, in the collection that
 * finds them unreachable. One variant runs with an 8-entry gray stack so
 * marking overflows all the time. TIDEPOOL_GC_CHECKMARK=1 re-verifies every
 * mark. Seeded (TP_TEST_SEED replays), time-bounded (TP_TEST_SECONDS_SCALE).
 *
 * Collections run with this thread detached, so no stack is scanned and
 * the precise variants can demand an exact match.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tidepool/gc.h>

#include "gc_test_util.h"
#include "test_util.h"

#define NF 4 /* edges of a struct object */

struct obj {
  long id;
  void *f[NF];
  uintptr_t junk; /* conservative variant: a stale or random word */
};

struct elem {
  void *p;
  long id; /* elem[0].id is the array's id */
};

static const size_t obj_offs[] = {offsetof(struct obj, f[0]), offsetof(struct obj, f[1]),
                                  offsetof(struct obj, f[2]), offsetof(struct obj, f[3])};
static void obj_trace(void *o, tp_tracer *t) {
  struct obj *x = o;
  for (int i = 0; i < NF; i++) tp_trace(t, x->f[i]);
}
static const size_t elem_offs[] = {offsetof(struct elem, p)};

static int *fin_count; /* by id */
static long fin_cap;
static void obj_fin(void *o) {
  long id = ((struct obj *)o)->id;
  if (id >= 0 && id < fin_cap) fin_count[id]++;
}

enum kind { K_OFFS, K_TRACE, K_FIN, K_ARRAY, K_CONS, NKINDS };
static const tp_type types[NKINDS] = {
    [K_OFFS] = {"offs", sizeof(struct obj), NULL, obj_offs, NF, NULL, 0},
    [K_TRACE] = {"trace", sizeof(struct obj), obj_trace, NULL, 0, NULL, 0},
    [K_FIN] = {"fin", sizeof(struct obj), NULL, obj_offs, NF, obj_fin, 0},
    [K_ARRAY] = {"elem", sizeof(struct elem), NULL, elem_offs, 1, NULL, 0},
    [K_CONS] = {"cons", sizeof(struct obj), NULL, NULL, 0, NULL, TP_TYPE_CONSERVATIVE},
};

/* The shadow graph. */
struct shadow {
  int kind;
  int nedges;      /* NF, or the array length */
  char *base;      /* the object */
  tp_weak *weak;
  long *edge;      /* target id or -1, per edge */
  uintptr_t *val;  /* the word stored for each edge */
  bool alive;      /* not yet found dead */
};

#define NROOTS 64
#define NRANGE 32

struct world {
  tp_heap *h;
  uint64_t seed;
  bool conservative;
  struct shadow *s;
  long n, cap;
  long *live; /* ids of alive objects */
  long nlive;
  void *roots[NROOTS];
  long root_id[NROOTS];
  uintptr_t range[NRANGE];
  long range_id[NRANGE];
  uint8_t *mark;
  long *queue;
};

static uint64_t rnd(struct world *w, uint64_t n) { return tt_rand(&w->seed) % n; }

static void **edge_slot(struct world *w, long i, int e) {
  struct shadow *s = &w->s[i];
  if (s->kind == K_ARRAY) return &((struct elem *)s->base)[e].p;
  return &((struct obj *)s->base)->f[e];
}

/* A pointer to target j: its start, or (sometimes) a pointer into it. */
static uintptr_t ptr_to(struct world *w, long j) {
  struct shadow *t = &w->s[j];
  size_t size = t->kind == K_ARRAY ? (size_t)t->nedges * sizeof(struct elem) : sizeof(struct obj);
  uintptr_t off = rnd(w, 3) == 0 ? (uintptr_t)(rnd(w, size / 8) * 8 + rnd(w, 8)) : 0;
  return (uintptr_t)t->base + off;
}

static void set_edge(struct world *w, long i, int e, long j) {
  uintptr_t v = j < 0 ? 0 : ptr_to(w, j);
  void **slot = edge_slot(w, i, e);
  tp_heap_write(w->h, w->s[i].base, slot, (void *)v);
  w->s[i].edge[e] = j;
  w->s[i].val[e] = v;
}

static long random_live(struct world *w) { return w->nlive ? w->live[rnd(w, (uint64_t)w->nlive)] : -1; }

static void add_object(struct world *w) {
  if (w->n == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 1024;
    w->s = realloc(w->s, (size_t)w->cap * sizeof *w->s);
    w->live = realloc(w->live, (size_t)w->cap * sizeof *w->live);
    w->mark = realloc(w->mark, (size_t)w->cap);
    w->queue = realloc(w->queue, (size_t)w->cap * sizeof *w->queue);
    assert_non_null(w->s);
    if (w->cap > fin_cap) {
      fin_count = realloc(fin_count, (size_t)w->cap * sizeof *fin_count);
      memset(fin_count + fin_cap, 0, (size_t)(w->cap - fin_cap) * sizeof *fin_count);
      fin_cap = w->cap;
    }
  }
  long id = w->n++;
  struct shadow *s = &w->s[id];
  memset(s, 0, sizeof *s);
  int kinds = w->conservative ? NKINDS : K_CONS;
  s->kind = (int)rnd(w, (uint64_t)kinds);
  if (s->kind == K_ARRAY) {
    /* Mostly small; sometimes over a quarter region (a large object). */
    s->nedges = rnd(w, 40) == 0 ? 1100 + (int)rnd(w, 2000) : 1 + (int)rnd(w, 12);
    s->base = tp_heap_alloc_array(w->h, &types[K_ARRAY], (size_t)s->nedges);
    assert_non_null(s->base);
    ((struct elem *)s->base)[0].id = id;
  } else {
    s->nedges = NF;
    s->base = tp_heap_alloc(w->h, &types[s->kind]);
    assert_non_null(s->base);
    struct obj *o = (struct obj *)s->base;
    for (int i = 0; i < NF; i++) assert_null(o->f[i]);
    o->id = id;
    if (s->kind == K_CONS) o->junk = rnd(w, 2) ? ptr_to(w, id) : (uintptr_t)tt_rand(&w->seed);
  }
  s->edge = malloc((size_t)s->nedges * sizeof *s->edge);
  s->val = calloc((size_t)s->nedges, sizeof *s->val);
  for (int e = 0; e < s->nedges; e++) s->edge[e] = -1;
  s->weak = tp_weak_new(w->h, s->base);
  assert_non_null(s->weak);
  s->alive = true;
  w->live[w->nlive++] = id;
  /* A few edges right away. */
  int k = (int)rnd(w, 3);
  for (int i = 0; i < k; i++) set_edge(w, id, (int)rnd(w, (uint64_t)s->nedges), random_live(w));
}

static void mutate(struct world *w) {
  long adds = 50 + (long)rnd(w, 400);
  for (long i = 0; i < adds; i++) add_object(w);
  long rewires = (long)rnd(w, 2 * (uint64_t)w->nlive + 1);
  for (long i = 0; i < rewires; i++) {
    long a = random_live(w);
    int e = (int)rnd(w, (uint64_t)w->s[a].nedges);
    set_edge(w, a, e, rnd(w, 4) == 0 ? -1 : random_live(w));
  }
  for (int r = 0; r < NROOTS; r++) {
    if (rnd(w, 3)) continue;
    long j = rnd(w, 3) == 0 ? -1 : random_live(w);
    w->root_id[r] = j;
    w->roots[r] = j < 0 ? NULL : (void *)ptr_to(w, j);
  }
  for (int r = 0; r < NRANGE; r++) {
    if (rnd(w, 4)) continue;
    long j = rnd(w, 2) == 0 ? -1 : random_live(w);
    w->range_id[r] = j;
    /* A dead slot holds a random word in the conservative variant (it may
     * hit an object: that is allowed there), 0 in the precise ones. */
    uintptr_t junk = w->conservative ? (uintptr_t)tt_rand(&w->seed) >> 16 : 0;
    w->range[r] = j < 0 ? junk : ptr_to(w, j);
  }
}

/* The oracle: marks what the shadow graph reaches from the roots. */
static void oracle(struct world *w) {
  memset(w->mark, 0, (size_t)w->n);
  long qh = 0, qt = 0;
  for (int r = 0; r < NROOTS; r++)
    if (w->root_id[r] >= 0 && !w->mark[w->root_id[r]]) w->mark[w->queue[qt++] = w->root_id[r]] = 1;
  for (int r = 0; r < NRANGE; r++)
    if (w->range_id[r] >= 0 && !w->mark[w->range_id[r]]) w->mark[w->queue[qt++] = w->range_id[r]] = 1;
  while (qh < qt) {
    struct shadow *s = &w->s[w->queue[qh++]];
    for (int e = 0; e < s->nedges; e++) {
      long j = s->edge[e];
      if (j >= 0 && !w->mark[j]) w->mark[w->queue[qt++] = j] = 1;
    }
  }
}

static void churn(struct world *w) {
  /* Reuse freed memory; fill it with a pattern that no id matches. */
  long n = 2000 + (long)rnd(w, 4000);
  for (long i = 0; i < n; i++) {
    struct obj *o = tp_heap_alloc(w->h, &types[K_OFFS]);
    assert_non_null(o);
    o->id = -7;
  }
}

static void check_round(struct world *w) {
  oracle(w);
  for (long k = 0; k < w->nlive; k++) {
    long i = w->live[k];
    if (w->s[i].kind == K_FIN) assert_int_equal(fin_count[i], 0);
  }
  tt_collect_unscanned(w->h);
  long nl = 0;
  for (long k = 0; k < w->nlive; k++) {
    long i = w->live[k];
    struct shadow *s = &w->s[i];
    void *got = tp_weak_get(s->weak);
    bool reachable = w->mark[i];
    if (reachable && !got)
      fail_msg("object %ld (kind %d) is reachable but was collected", i, s->kind);
    if (!reachable && got && !w->conservative)
      fail_msg("object %ld (kind %d) is unreachable but survived", i, s->kind);
    if (got) assert_ptr_equal(got, s->base);
    if (s->kind == K_FIN) {
      /* Exactly once, in the collection that found it unreachable. */
      assert_int_equal(fin_count[i], got ? 0 : 1);
    }
    if (got) {
      w->live[nl++] = i;
    } else {
      s->alive = false;
      tp_weak_free(s->weak);
      s->weak = NULL;
      free(s->edge);
      free(s->val);
      s->edge = NULL;
      s->val = NULL;
    }
  }
  w->nlive = nl;
  /* Survivors' fields may only point at survivors: drop edges to the
   * dead from the shadow (an unreachable survivor may point at them). */
  for (long k = 0; k < w->nlive; k++) {
    struct shadow *s = &w->s[w->live[k]];
    for (int e = 0; e < s->nedges; e++)
      if (s->edge[e] >= 0 && !w->s[s->edge[e]].alive) set_edge(w, w->live[k], e, -1);
  }
  for (int r = 0; r < NROOTS; r++)
    if (w->root_id[r] >= 0 && !w->s[w->root_id[r]].alive) {
      w->root_id[r] = -1;
      w->roots[r] = NULL;
    }
  for (int r = 0; r < NRANGE; r++)
    if (w->range_id[r] >= 0 && !w->s[w->range_id[r]].alive) w->range_id[r] = -1;
  churn(w);
  /* Every survivor is intact. */
  for (long k = 0; k < w->nlive; k++) {
    long i = w->live[k];
    struct shadow *s = &w->s[i];
    if (s->kind == K_ARRAY)
      assert_int_equal(((struct elem *)s->base)[0].id, i);
    else
      assert_int_equal(((struct obj *)s->base)->id, i);
    for (int e = 0; e < s->nedges; e++) {
      assert_int_equal((uintptr_t)*edge_slot(w, i, e), s->val[e]);
      long j = s->edge[e];
      if (j < 0) continue;
      struct shadow *t = &w->s[j];
      long tid = t->kind == K_ARRAY ? ((struct elem *)t->base)[0].id : ((struct obj *)t->base)->id;
      assert_int_equal(tid, j);
    }
  }
}

static void run(const char *name, bool conservative, size_t gray, double seconds) {
  struct world *w = calloc(1, sizeof *w);
  w->seed = tt_seed(name);
  w->conservative = conservative;
  tp_heap_config c = {.trigger_percent = 0, .region_size = 64 << 10, .gray_stack_entries = gray};
  w->h = tp_heap_create(&c);
  assert_non_null(w->h);
  for (int r = 0; r < NROOTS; r++) {
    w->root_id[r] = -1;
    assert_int_equal(tp_root_add(w->h, &w->roots[r]), 0);
  }
  for (int r = 0; r < NRANGE; r++) w->range_id[r] = -1;
  assert_int_equal(tp_root_add_range(w->h, w->range, sizeof w->range), 0);
  uint64_t end = tt_deadline(seconds);
  int rounds = 0;
  while (rounds < 5 || tt_now_ns() < end) {
    mutate(w);
    check_round(w);
    rounds++;
  }
  tp_heap_stats st;
  tp_heap_read_stats(w->h, &st);
  printf("%s: %d rounds, %ld objects made, %ld alive, %llu collections, %llu with gray "
         "overflow, %llu large objects now\n",
         name, rounds, w->n, w->nlive, (unsigned long long)st.num_gc,
         (unsigned long long)st.gray_overflows, (unsigned long long)st.large_objects);
  assert_int_equal(st.checkmark, 1);
  if (gray && gray < 64) assert_true(st.gray_overflows > 0);
  for (long k = 0; k < w->nlive; k++) tp_weak_free(w->s[w->live[k]].weak);
  tp_heap_destroy(w->h);
  for (long i = 0; i < w->n; i++) {
    free(w->s[i].edge);
    free(w->s[i].val);
    /* Destroy finalized the finalizable objects still alive: once each. */
    if (w->s[i].kind == K_FIN) assert_int_equal(fin_count[i], 1);
  }
  free(w->s);
  free(w->live);
  free(w->mark);
  free(w->queue);
  free(w);
  free(fin_count);
  fin_count = NULL;
  fin_cap = 0;
}

static void test_precise_exact(void **state) {
  (void)state;
  run("precise_exact", false, 0, 1.5);
}

static void test_precise_tiny_gray_stack(void **state) {
  (void)state;
  run("precise_tiny_gray_stack", false, 8, 1.0);
}

static void test_conservative_superset(void **state) {
  (void)state;
  run("conservative_superset", true, 0, 1.5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_precise_exact),
      cmocka_unit_test(test_precise_tiny_gray_stack),
      cmocka_unit_test(test_conservative_superset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
