/*
 * The concurrent collector under mutation: a seeded, time-bounded stress
 * with a reachability oracle outside the heap.
 *
 * Five mutator threads (more than the machine's cores) and a thread
 * calling tp_heap_collect back to back, on a heap whose small goal also
 * starts automatic cycles; every cycle marks concurrently with the
 * mutators, and TIDEPOOL_GC_CHECKMARK=1 re-verifies each one. Each mutator
 * owns a structure: registered root slots, a table (a heap array reachable
 * from a root slot), nodes hanging off those, nodes held only in locals
 * across safepoints and blocking sections, and weak references. It moves
 * pointers between all of these while marks run, with the patterns that
 * break a collector without a snapshot barrier:
 *   - "wrap": a new node (born black, never scanned) takes the old value
 *     of a field, then replaces it there (tp_heap_write);
 *   - "move": a pointer travels field -> local -> other field, the source
 *     being overwritten in between;
 *   - "stash": a pointer lives only in a local across allocations and a
 *     blocking section, then goes back into the heap;
 *   - "revive": a weak reference's target, unreachable otherwise, is
 *     stored back into the heap.
 * The oracle: every location (root slot, table entry, field, local) has a
 * shadow of the id it must hold, kept by its thread outside the heap, and
 * every node stores the ids its fields must reach; each node carries id
 * and a checksum. Verification walks everything reachable from the
 * thread's locations and compares. Finalizers (on a third of the nodes)
 * count: each runs exactly once (a flag in the node) and all have run
 * after tp_heap_destroy. Weak references: while the target is held the
 * reference returns exactly it; a non-NULL result is always the intact
 * node; once NULL it stays NULL.
 *
 * It can fail: TIDEPOOL_GC_NOBARRIER=1 turns the barrier's logging off
 * (docs/options.md) and then the checkmark of some cycle aborts (reachable
 * object not marked), or the oracle finds a freed node reused. That run is
 * //tests:gc_concurrent_stress_nobarrier_test, which expects the abort.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <tidepool/gc.h>

#include <pthread.h>
#include <sys/wait.h>

#include "gc_test_util.h"

#ifdef TT_NOBARRIER
TT_SETENV_AT_START(TIDEPOOL_GC_NOBARRIER, "1")
#endif

#define NMUT 5
#define NROOT 4
#define TAB 128
#define NSTACK 6
#define NWEAK 4

struct node {
  uint64_t id, check;
  struct node *a, *b;
  uint64_t aid, bid; /* the ids a and b must reach (0: NULL) */
  uint64_t finalized;
};
static const size_t node_offs[] = {offsetof(struct node, a), offsetof(struct node, b)};

static uint64_t fin_ran, fin_allocated, fin_twice, fin_corrupt;

static uint64_t mix(uint64_t id) { return id * 0x9e3779b97f4a7c15ull ^ 0x5bd1e995u; }

static void node_finalize(void *obj) {
  struct node *n = obj;
  if (__atomic_exchange_n(&n->finalized, 1, __ATOMIC_RELAXED)) __atomic_fetch_add(&fin_twice, 1, __ATOMIC_RELAXED);
  /* Resurrected with what it reaches: its children are intact. */
  if (n->check != mix(n->id) || (n->a && n->a->id != n->aid) || (n->b && n->b->id != n->bid))
    __atomic_fetch_add(&fin_corrupt, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&fin_ran, 1, __ATOMIC_RELAXED);
}

static const tp_type node_type = {"node", sizeof(struct node), NULL, node_offs, 2, NULL, 0};
static const tp_type fin_type = {"fnode", sizeof(struct node), NULL, node_offs, 2, node_finalize, 0};
static const size_t slot_offs[] = {0};
static const tp_type slot_type = {"slot", sizeof(void *), NULL, slot_offs, 1, NULL, 0};

static tp_heap *heap;
static uint64_t deadline;
static int stop_collector;
static tt_failures failures;

struct mut {
  int idx;
  uint64_t seed, next_id;
  void *roots[NROOT];  /* registered root slots; roots[0] holds the table */
  uint64_t root_id[NROOT];
  uint64_t tab_id[TAB];
  tp_weak *weak[NWEAK];
  uint64_t weak_id[NWEAK];
  int weak_held[NWEAK]; /* its target is in roots[weak_slot] */
  int weak_dead[NWEAK]; /* it returned NULL once */
  uint64_t ops, wraps, moves, stashes, revives, blocks, verifies;
};

static struct node **table(struct mut *m) { return (struct node **)m->roots[0]; }

static struct node *new_node(struct mut *m) {
  int fin = tt_rand(&m->seed) % 3 == 0;
  struct node *n = tp_heap_alloc(heap, fin ? &fin_type : &node_type);
  if (!n) return NULL;
  n->id = ((uint64_t)(m->idx + 1) << 40) | ++m->next_id;
  n->check = mix(n->id);
  if (fin) __atomic_fetch_add(&fin_allocated, 1, __ATOMIC_RELAXED);
  return n;
}

/* A field of a node, through the barrier, with its shadow. */
static void set_field(struct node *n, int which, struct node *v) {
  if (which) {
    tp_heap_write(heap, n, (void **)&n->b, v);
    n->bid = v ? v->id : 0;
  } else {
    tp_heap_write(heap, n, (void **)&n->a, v);
    n->aid = v ? v->id : 0;
  }
}

static void set_tab(struct mut *m, size_t i, struct node *v) {
  struct node **t = table(m);
  tp_heap_write(heap, t, (void **)&t[i], v);
  m->tab_id[i] = v ? v->id : 0;
}

/* Checks one node and everything below it (depth-bounded: the structure
 * is a DAG that grows by wrapping, so it is walked to a fixed depth). */
static void verify_node(struct mut *m, const struct node *n, uint64_t want, int depth) {
  if (!n) {
    if (want) tt_fail_once(&failures, "mutator %d: id %llx lost (NULL)", m->idx, (unsigned long long)want);
    return;
  }
  if (n->id != want || n->check != mix(n->id)) {
    tt_fail_once(&failures, "mutator %d: want id %llx, found id %llx check %s", m->idx,
                 (unsigned long long)want, (unsigned long long)n->id,
                 n->check == mix(n->id) ? "ok" : "BAD");
    return;
  }
  if (depth == 0) return;
  verify_node(m, __atomic_load_n(&n->a, __ATOMIC_RELAXED), n->aid, depth - 1);
  verify_node(m, __atomic_load_n(&n->b, __ATOMIC_RELAXED), n->bid, depth - 1);
}

static void verify_all(struct mut *m, struct node *const *stack, const uint64_t *stack_id) {
  for (int r = 1; r < NROOT; r++) verify_node(m, m->roots[r], m->root_id[r], 6);
  for (size_t i = 0; i < TAB; i++) verify_node(m, table(m)[i], m->tab_id[i], 6);
  for (int s = 0; s < NSTACK; s++) verify_node(m, stack[s], stack_id[s], 6);
  for (int w = 0; w < NWEAK; w++) {
    if (!m->weak[w]) continue;
    struct node *p = tp_weak_get(m->weak[w]);
    if (m->weak_held[w] && p != m->roots[m->weak_held[w]])
      tt_fail_once(&failures, "mutator %d: weak ref of a held node returned %p", m->idx, (void *)p);
    if (p && (p->id != m->weak_id[w] || p->check != mix(p->id)))
      tt_fail_once(&failures, "mutator %d: weak ref returned a wrong object", m->idx);
    if (p && m->weak_dead[w]) tt_fail_once(&failures, "mutator %d: weak ref came back", m->idx);
    if (!p) m->weak_dead[w] = 1;
  }
  m->verifies++;
}

/* A random location's node (root slot 1.., table entry) and where it is. */
static struct node *pick(struct mut *m, int *kind, size_t *idx) {
  if (tt_rand(&m->seed) % 4 == 0) {
    *kind = 0;
    *idx = 1 + tt_rand(&m->seed) % (NROOT - 1);
    return m->roots[*idx];
  }
  *kind = 1;
  *idx = tt_rand(&m->seed) % TAB;
  return table(m)[*idx];
}

static void put(struct mut *m, int kind, size_t idx, struct node *v) {
  if (kind == 0) {
    for (int w = 0; w < NWEAK; w++)
      if (m->weak_held[w] == (int)idx) m->weak_held[w] = 0; /* no longer held */
    m->roots[idx] = v; /* a root slot: a plain store */
    m->root_id[idx] = v ? v->id : 0;
  } else {
    set_tab(m, idx, v);
  }
}

static void *mutator(void *arg) {
  struct mut *m = arg;
  for (int r = 0; r < NROOT; r++)
    if (tp_root_add(heap, &m->roots[r]) != 0) tt_fail_once(&failures, "tp_root_add failed");
  m->roots[0] = tp_heap_alloc_array(heap, &slot_type, TAB);
  if (!m->roots[0]) {
    tt_fail_once(&failures, "no table");
    return NULL;
  }
  /* The locals the collector finds only on this stack. */
  struct node *volatile stack[NSTACK] = {0};
  uint64_t stack_id[NSTACK] = {0};
  while (tt_now_ns() < deadline && !tt_failed(&failures)) {
    m->ops++;
    int kind;
    size_t idx;
    unsigned op = (unsigned)(tt_rand(&m->seed) % 100);
    if (op < 30) {
      /* wrap: a new node takes the old value and replaces it. */
      struct node *old = pick(m, &kind, &idx);
      struct node *n = new_node(m);
      if (!n) continue;
      n->a = old; /* n is new and unpublished: no barrier needed */
      n->aid = old ? old->id : 0;
      if (old && tt_rand(&m->seed) & 1) set_field(old, 1, NULL); /* a deletion too */
      put(m, kind, idx, n);
      m->wraps++;
    } else if (op < 55) {
      /* move: field -> local -> another place, the source overwritten. */
      struct node *src = pick(m, &kind, &idx);
      if (!src) continue;
      int which = (int)(tt_rand(&m->seed) & 1);
      struct node *v = which ? src->b : src->a;
      set_field(src, which, NULL);
      struct node *fresh = new_node(m); /* a safepoint in between */
      if (fresh) put(m, kind, idx, fresh);
      int k2;
      size_t i2;
      struct node *dst = pick(m, &k2, &i2);
      if (dst && dst != src) {
        set_field(dst, (int)(tt_rand(&m->seed) & 1), v);
      } else {
        put(m, k2, i2, v);
      }
      m->moves++;
    } else if (op < 70) {
      /* stash: a pointer lives only in a local for a while. */
      int s = (int)(tt_rand(&m->seed) % NSTACK);
      struct node *v = pick(m, &kind, &idx);
      if (stack[s]) {
        put(m, kind, idx, stack[s]); /* back into the heap */
      } else {
        put(m, kind, idx, NULL);
      }
      stack[s] = v;
      stack_id[s] = v ? v->id : 0;
      m->stashes++;
    } else if (op < 74) {
      /* A blocking section holding stacked pointers. */
      tp_heap_blocking_enter(heap);
      struct timespec ts = {0, 50 * 1000};
      nanosleep(&ts, NULL);
      tp_heap_blocking_leave(heap);
      m->blocks++;
    } else if (op < 80) {
      /* weak: reference a node held in a root slot, drop it, revive it. */
      int w = (int)(tt_rand(&m->seed) % NWEAK);
      size_t r = 1 + tt_rand(&m->seed) % (NROOT - 1);
      if (!m->weak[w]) {
        struct node *t = m->roots[r];
        if (!t) continue;
        m->weak[w] = tp_weak_new(heap, t);
        if (!m->weak[w]) continue;
        m->weak_id[w] = t->id;
        m->weak_held[w] = (int)r;
        m->weak_dead[w] = 0;
      } else if (m->weak_held[w]) {
        put(m, 0, (size_t)m->weak_held[w], NULL); /* only weakly reachable now */
      } else {
        struct node *p = tp_weak_get(m->weak[w]);
        if (p) {
          if (p->id != m->weak_id[w] || p->check != mix(p->id))
            tt_fail_once(&failures, "mutator %d: weak ref returned a wrong object", m->idx);
          /* revive: into a new node, which the marker never scans */
          struct node *n = new_node(m);
          if (n) {
            n->b = p;
            n->bid = p->id;
            put(m, 1, tt_rand(&m->seed) % TAB, n);
            m->revives++;
          }
        } else {
          m->weak_dead[w] = 1;
        }
        tp_weak_free(m->weak[w]);
        m->weak[w] = NULL;
      }
    } else if (op < 97) {
      /* churn: garbage and fresh nodes (drives the pacer). */
      struct node *n = new_node(m);
      if (n && tt_rand(&m->seed) % 4 == 0) {
        pick(m, &kind, &idx);
        put(m, kind, idx, n);
      }
    } else {
      verify_all(m, (struct node *const *)stack, stack_id);
    }
  }
  verify_all(m, (struct node *const *)stack, stack_id);
  for (int w = 0; w < NWEAK; w++) tp_weak_free(m->weak[w]);
  for (int r = 0; r < NROOT; r++) {
    m->roots[r] = NULL;
    tp_root_remove(heap, &m->roots[r]);
  }
  tp_heap_detach(heap);
  return NULL;
}

static void *collector(void *arg) {
  uint64_t *n = arg;
  while (!__atomic_load_n(&stop_collector, __ATOMIC_RELAXED)) {
    tp_heap_collect(heap);
    (*n)++;
  }
  return NULL;
}

static void test_concurrent_mutation(void **state) {
  (void)state;
  uint64_t seed = tt_seed("gc_concurrent_stress");
  tp_heap_config c = {.trigger_percent = 50, .min_heap_bytes = 1 << 20, .region_size = 64 << 10,
                      .gray_stack_entries = 256 /* the overflow pass runs too */,
                      .markers = 4 /* explicit cycles mark on 4 threads beside the mutators */};
  heap = tp_heap_create(&c);
  assert_non_null(heap);
  tt_failures_reset(&failures);
  deadline = tt_deadline(4);
  static struct mut muts[NMUT];
  pthread_t t[NMUT], ct;
  uint64_t explicit = 0;
  for (int i = 0; i < NMUT; i++) {
    muts[i] = (struct mut){.idx = i, .seed = seed + (uint64_t)i * 0x1234567};
    assert_int_equal(pthread_create(&t[i], NULL, mutator, &muts[i]), 0);
  }
  __atomic_store_n(&stop_collector, 0, __ATOMIC_RELAXED);
  assert_int_equal(pthread_create(&ct, NULL, collector, &explicit), 0);
  for (int i = 0; i < NMUT; i++) assert_int_equal(tt_join_within(t[i], TT_HANG_MS + 60000, NULL), 0);
  __atomic_store_n(&stop_collector, 1, __ATOMIC_RELAXED);
  assert_int_equal(tt_join_within(ct, TT_HANG_MS, NULL), 0);
  tp_heap_stats s;
  tp_heap_read_stats(heap, &s);
  uint64_t ops = 0, wraps = 0, moves = 0, stashes = 0, revives = 0, blocks = 0, verifies = 0;
  for (int i = 0; i < NMUT; i++) {
    ops += muts[i].ops;
    wraps += muts[i].wraps;
    moves += muts[i].moves;
    stashes += muts[i].stashes;
    revives += muts[i].revives;
    blocks += muts[i].blocks;
    verifies += muts[i].verifies;
  }
  printf("%llu ops (%llu wraps, %llu moves, %llu stashes, %llu revives, %llu blocking "
         "sections, %llu verifications); %llu collections (%llu explicit), pause max %.3f ms\n",
         (unsigned long long)ops, (unsigned long long)wraps, (unsigned long long)moves,
         (unsigned long long)stashes, (unsigned long long)revives, (unsigned long long)blocks,
         (unsigned long long)verifies, (unsigned long long)s.num_gc, (unsigned long long)explicit,
         s.pause_max_ns / 1e6);
  tt_assert_no_failures(&failures);
  assert_true(s.num_gc >= 3);
  assert_int_equal(s.checkmark, 1);
  tp_heap_destroy(heap);
  /* Every finalizable node's finalizer ran, once (destroy runs the rest). */
  printf("finalizers: %llu of %llu allocated\n", (unsigned long long)fin_ran,
         (unsigned long long)fin_allocated);
  assert_int_equal(fin_twice, 0);
  assert_int_equal(fin_corrupt, 0);
  assert_int_equal(fin_ran, fin_allocated);
}

#ifdef TT_NOBARRIER
/* With the barrier off the same stress must fail: run it in a child and
 * expect the checkmark's abort (or the oracle's failure report). */
static void test_fails_without_barrier(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(stdout);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_concurrent_mutation)};
    _exit(cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0);
  }
  close(fds[1]);
  static char buf[1 << 16];
  tt_read_all(fds[0], buf, sizeof buf);
  close(fds[0]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  printf("the stress without the barrier:\n%s", buf);
  assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_true(strstr(buf, "checkmark: a reachable object was not marked") ||
              strstr(buf, "want id") || strstr(buf, "lost"));
}
#endif

int main(void) {
  const struct CMUnitTest tests[] = {
#ifdef TT_NOBARRIER
      cmocka_unit_test(test_fails_without_barrier),
#else
      cmocka_unit_test(test_concurrent_mutation),
#endif
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
