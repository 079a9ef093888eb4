/*
 * Parallel marking against an exact oracle: a seeded, time-bounded stress
 * of tp_heap_collect on 4 markers (more marker threads than the
 * machine's 2 cores) over a random graph that the test mutates between
 * collections: small objects of precise types (ptr_offsets and a trace
 * callback, plain and arrays) and large pointer arrays (ptr_offsets and a
 * trace callback) far longer than the gray stack, so that marking shares
 * work between markers, scans large objects in chunks, and runs the
 * overflow pass on every marker. The test keeps a shadow of the graph
 * outside the heap and, after each collection:
 *   - heap_live's object count equals the number of objects its own
 *     breadth-first search reaches: one left unmarked is caught here (and
 *     by the checkmark, TIDEPOOL_GC_CHECKMARK=1), one scanned by two
 *     markers counts twice;
 *   - every reachable object holds the id and pointers the shadow says
 *     (a freed object is reused by the next round's allocations).
 * Variants: the default gray stack, a 16-entry one (overflows all the
 * time; shared blocks larger than what fits), and many short marks of a
 * small graph (sharing near each mark's end, where termination races). Collections run with this
 * thread detached (no stack is scanned), so the count is exact.
 * TP_TEST_SEED replays; TP_TEST_SECONDS_SCALE scales the time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tidepool/gc.h>

#include "gc_test_util.h"
#include "test_util.h"

#define NF 4          /* fields of an object */
#define MAXN 60000    /* shadow slots (the small variant uses fewer) */
#define NROOTS 16
#define NLARGE 4      /* large arrays alive at a time (at most) */
#define LARGE_MIN 20000
#define LARGE_MAX 70000

struct obj {
  long id;
  void *f[NF];
};
struct elem {
  void *p;
};

static const size_t obj_offs[] = {offsetof(struct obj, f[0]), offsetof(struct obj, f[1]),
                                  offsetof(struct obj, f[2]), offsetof(struct obj, f[3])};
static void obj_trace(void *o, tp_tracer *t) {
  struct obj *x = o;
  for (int i = 0; i < NF; i++) tp_trace(t, x->f[i]);
}
static const size_t elem_offs[] = {0};
static void elem_trace(void *o, tp_tracer *t) { tp_trace(t, ((struct elem *)o)->p); }

enum kind { K_OFFS, K_TRACE, K_OFFS_ARR, K_LARGE, K_LARGE_TRACE };
static const tp_type obj_offs_type = {"pobj", sizeof(struct obj), NULL, obj_offs, NF, NULL, 0};
static const tp_type obj_trace_type = {"tobj", sizeof(struct obj), obj_trace, NULL, 0, NULL, 0};
static const tp_type elem_type = {"pelem", sizeof(struct elem), NULL, elem_offs, 1, NULL, 0};
static const tp_type elem_trace_type = {"telem", sizeof(struct elem), elem_trace, NULL, 0, NULL, 0};

/* A shadow node: the object, its kind, and the slot each pointer must
 * reach (-1: NULL). Objects: NF edges (arrays of objects: 3 elements, the
 * edges of each); large arrays: n edges. */
struct node {
  void *p;
  int kind;
  int n;        /* edges */
  int *edge;
  long id;
  bool used, seen;
};

struct world {
  tp_heap *h;
  uint64_t seed;
  struct node *nodes;
  int *free_slots, nfree;
  void *roots[NROOTS];
  int root_slot[NROOTS];
  int nlarge;
  long next_id;
  int *queue;
  int maxn;     /* slots in use: MAXN, or fewer for short marks */
};

static void **edge_addr(struct node *n, int j) {
  switch (n->kind) {
  case K_LARGE:
  case K_LARGE_TRACE:
    return &((struct elem *)n->p)[j].p;
  case K_OFFS_ARR:
    return &((struct obj *)n->p)[j / NF].f[j % NF];
  default:
    return &((struct obj *)n->p)->f[j];
  }
}

/* The id an object carries (large arrays: none; their element 0 is an edge). */
static long *id_addr(struct node *n) {
  return n->kind == K_LARGE || n->kind == K_LARGE_TRACE ? NULL : &((struct obj *)n->p)->id;
}

static int new_node(struct world *w, int kind) {
  if (!w->nfree) return -1;
  int s = w->free_slots[--w->nfree];
  struct node *n = &w->nodes[s];
  uint64_t r = tt_rand(&w->seed);
  switch (kind) {
  case K_LARGE:
  case K_LARGE_TRACE:
    n->n = LARGE_MIN + (int)(r % (LARGE_MAX - LARGE_MIN));
    n->p = tp_heap_alloc_array(w->h, kind == K_LARGE ? &elem_type : &elem_trace_type,
                               (size_t)n->n);
    break;
  case K_OFFS_ARR:
    n->n = 3 * NF;
    n->p = tp_heap_alloc_array(w->h, &obj_offs_type, 3);
    break;
  default:
    n->n = NF;
    n->p = tp_heap_alloc(w->h, kind == K_OFFS ? &obj_offs_type : &obj_trace_type);
  }
  assert_non_null(n->p);
  n->edge = malloc((size_t)n->n * sizeof *n->edge);
  assert_non_null(n->edge);
  for (int j = 0; j < n->n; j++) n->edge[j] = -1;
  n->kind = kind;
  n->used = true;
  n->id = w->next_id++;
  long *id = id_addr(n);
  if (id) *id = n->id;
  if (kind == K_LARGE || kind == K_LARGE_TRACE) w->nlarge++;
  return s;
}

/* A random used slot (-1 if none is found quickly). */
static int some_node(struct world *w) {
  for (int tries = 0; tries < 64; tries++) {
    int s = (int)(tt_rand(&w->seed) % (uint64_t)w->maxn);
    if (w->nodes[s].used) return s;
  }
  return -1;
}

static void set_edge(struct world *w, int from, int j, int to) {
  struct node *n = &w->nodes[from];
  n->edge[j] = to;
  tp_heap_write(w->h, n->p, edge_addr(n, j), to < 0 ? NULL : w->nodes[to].p);
}

/* One round of mutation: new objects linked in, edges rewired, roots
 * moved, sometimes a large array. */
static void mutate(struct world *w) {
  int ops = w->maxn / 30 + (int)(tt_rand(&w->seed) % (uint64_t)(w->maxn / 10));
  for (int i = 0; i < ops; i++) {
    uint64_t r = tt_rand(&w->seed) % 100;
    if (r < 45) { /* a new object, linked from an existing one or a root */
      int kind = r < 20 ? K_OFFS : r < 38 ? K_TRACE : K_OFFS_ARR;
      int s = new_node(w, kind);
      if (s < 0) break;
      int from = some_node(w);
      if (from >= 0 && from != s) {
        set_edge(w, from, (int)(tt_rand(&w->seed) % (uint64_t)w->nodes[from].n), s);
      } else {
        int k = (int)(tt_rand(&w->seed) % NROOTS);
        w->roots[k] = w->nodes[s].p;
        w->root_slot[k] = s;
      }
      for (int j = 0; j < w->nodes[s].n; j++) set_edge(w, s, j, some_node(w));
    } else if (r < 90) { /* rewire an edge (often to NULL: garbage appears) */
      int from = some_node(w), to = r < 75 ? some_node(w) : -1;
      if (from >= 0) set_edge(w, from, (int)(tt_rand(&w->seed) % (uint64_t)w->nodes[from].n), to);
    } else if (r < 98) { /* move a root */
      int k = (int)(tt_rand(&w->seed) % NROOTS), s = r < 96 ? some_node(w) : -1;
      w->roots[k] = s < 0 ? NULL : w->nodes[s].p;
      w->root_slot[k] = s;
    } else if (w->nlarge < NLARGE) { /* a large pointer array, from a root */
      int s = new_node(w, r == 98 ? K_LARGE : K_LARGE_TRACE);
      if (s < 0) break;
      struct node *n = &w->nodes[s];
      for (int j = 0; j < n->n; j++)
        if (tt_rand(&w->seed) % 4) set_edge(w, s, j, some_node(w));
      int k = (int)(tt_rand(&w->seed) % NROOTS);
      w->roots[k] = n->p;
      w->root_slot[k] = s;
    }
  }
}

/* Breadth-first search from the roots over the shadow: marks `seen`,
 * returns how many objects are reachable. */
static long reach(struct world *w) {
  for (int s = 0; s < w->maxn; s++) w->nodes[s].seen = false;
  long n = 0;
  int head = 0, tail = 0;
  for (int k = 0; k < NROOTS; k++) {
    int s = w->root_slot[k];
    if (s >= 0 && !w->nodes[s].seen) {
      w->nodes[s].seen = true;
      w->queue[tail++] = s;
    }
  }
  while (head < tail) {
    struct node *x = &w->nodes[w->queue[head++]];
    n++;
    for (int j = 0; j < x->n; j++) {
      int t = x->edge[j];
      if (t >= 0 && !w->nodes[t].seen) {
        w->nodes[t].seen = true;
        w->queue[tail++] = t;
      }
    }
  }
  return n;
}

/* After a collection: the reachable objects are intact, the rest leave
 * the shadow (their memory was freed). */
static void check_and_prune(struct world *w) {
  for (int s = 0; s < w->maxn; s++) {
    struct node *n = &w->nodes[s];
    if (!n->used) continue;
    if (!n->seen) {
      if (n->kind == K_LARGE || n->kind == K_LARGE_TRACE) w->nlarge--;
      free(n->edge);
      *n = (struct node){0};
      w->free_slots[w->nfree++] = s;
      continue;
    }
    long *id = id_addr(n);
    if (id && *id != n->id) fail_msg("object %d: id %ld, expected %ld (freed while reachable)", s, *id, n->id);
    for (int j = 0; j < n->n; j++) {
      void *want = n->edge[j] < 0 ? NULL : w->nodes[n->edge[j]].p;
      if (*edge_addr(n, j) != want) fail_msg("object %d: edge %d changed (freed while reachable)", s, j);
    }
  }
}

static void run(const char *name, int maxn, size_t gray, double seconds) {
  struct world *w = calloc(1, sizeof *w);
  assert_non_null(w);
  w->seed = tt_seed(name);
  w->nodes = calloc(MAXN, sizeof *w->nodes);
  w->free_slots = malloc(MAXN * sizeof *w->free_slots);
  w->queue = malloc(MAXN * sizeof *w->queue);
  assert_true(w->nodes && w->free_slots && w->queue);
  w->maxn = maxn;
  for (int s = maxn; s-- > 0;) w->free_slots[w->nfree++] = s;
  for (int k = 0; k < NROOTS; k++) w->root_slot[k] = -1;
  tp_heap_config c = {.trigger_percent = 0 /* manual: the oracle decides when */, .markers = 4,
                      .gray_stack_entries = gray};
  w->h = tp_heap_create(&c);
  assert_non_null(w->h);
  for (int k = 0; k < NROOTS; k++) assert_int_equal(tp_root_add(w->h, &w->roots[k]), 0);
  uint64_t end = tt_deadline(seconds);
  int rounds = 0;
  long max_live = 0;
  do {
    mutate(w);
    long want = reach(w);
    tt_collect_unscanned(w->h);
    tp_heap_stats st;
    assert_int_equal(tp_heap_read_stats(w->h, &st), 0);
    if ((long)st.objects_live != want)
      fail_msg("round %d: %llu objects live after the mark, %ld reachable", rounds,
               (unsigned long long)st.objects_live, want);
    check_and_prune(w);
    if (want > max_live) max_live = want;
    rounds++;
  } while (tt_now_ns() < end || rounds < 3);
  tp_heap_stats st;
  tp_heap_read_stats(w->h, &st);
  printf("%s: %d collections, up to %ld reachable objects, %d large arrays now, %llu overflows\n",
         name, rounds, max_live, w->nlarge, (unsigned long long)st.gray_overflows);
  tp_heap_destroy(w->h);
  for (int s = 0; s < MAXN; s++) free(w->nodes[s].edge);
  free(w->nodes);
  free(w->free_slots);
  free(w->queue);
  free(w);
}

static void test_default_stack(void **state) {
  (void)state;
  run("gc_parallel_mark(default stack)", MAXN, 0, 3);
}

static void test_tiny_stack(void **state) {
  (void)state;
  run("gc_parallel_mark(16-entry stack)", MAXN, 16, 3);
}

/* Many short marks: work is shared near the end of each, where a
 * termination that missed shared or pending work would show (the leader
 * checks that none is left, and the oracle that all was marked). */
static void test_short_marks(void **state) {
  (void)state;
  run("gc_parallel_mark(short marks)", 3000, 64, 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_default_stack),
      cmocka_unit_test(test_tiny_stack),
      cmocka_unit_test(test_short_marks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
