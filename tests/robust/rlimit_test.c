/*
 * Under a real address-space limit (RLIMIT_AS of a few hundred MiB, set in
 * a forked child, the way a container or `ulimit -v` would), each module
 * runs until memory runs out, then recovers:
 *   - running out is an error (NULL + ENOMEM, -EAGAIN for threads), never
 *     an abort;
 *   - what was handed out before is intact;
 *   - once the test gives memory back, the same objects work again.
 * nosan: the sanitizers reserve terabytes of shadow address space.
 */
#include <tidepool/arena.h>
#include <tidepool/epoch.h>
#include <tidepool/gc.h>
#include <tidepool/pool.h>
#include <tidepool/sweeper.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <cmocka.h>

#include "tests/robust/child.h"
#include "tests/test_util.h"

#define LIMIT (384ul << 20)
#define CHILD_MS 120000u
#define MAX_HELD (LIMIT / 4096)

static void **held; /* allocated before the limit */

static void limit_as(void) {
  held = malloc(MAX_HELD * sizeof *held);
  TT_CHECK(held);
  memset(held, 0, MAX_HELD * sizeof *held);
  struct rlimit rl = {LIMIT, LIMIT};
  TT_CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
}

static tp_pool *big_pool(void) {
  tp_pool_config cfg = {.name = "rlimit", .obj_size = 4096};
  return tp_pool_create(&cfg);
}

/* Gets from p until memory runs out: the count (errno checked). */
static size_t exhaust(tp_pool *p) {
  size_t n = 0;
  for (;;) {
    TT_CHECK(n < MAX_HELD);
    void *o = tp_pool_get(p);
    if (!o) break;
    memcpy(o, &n, sizeof n);
    held[n++] = o;
  }
  TT_CHECK(errno == ENOMEM);
  for (size_t i = 0; i < n; i++) TT_CHECK(memcmp(held[i], &i, sizeof i) == 0);
  return n;
}

static void pool_case(void *arg) {
  (void)arg;
  limit_as();
  tp_pool *p = big_pool();
  TT_CHECK(p);
  size_t n = exhaust(p);
  TT_CHECK(n > 1000);
  tp_pool_put_bulk(p, held, n);
  size_t again = exhaust(p); /* the same memory serves again */
  TT_CHECK(again >= n);
  tp_pool_put_bulk(p, held, again);
  tp_pool_destroy(p);
  tp_sweep_all();
  p = big_pool();
  TT_CHECK(p);
  void *o = tp_pool_get(p);
  TT_CHECK(o);
  tp_pool_put(p, o);
  tp_pool_destroy(p);
}

static void arena_case(void *arg) {
  unsigned flags = (unsigned)(uintptr_t)arg;
  limit_as();
  tp_arena_config cfg = {.flags = flags};
  tp_arena *a = tp_arena_create(&cfg);
  TT_CHECK(a);
  for (int round = 0; round < 2; round++) {
    size_t n = 0;
    for (;;) {
      TT_CHECK(n < MAX_HELD);
      char *q = tp_arena_alloc(a, (n & 15) == 15 ? 300000 : 2000);
      if (!q) break;
      q[0] = (char)n;
      held[n++] = q;
    }
    TT_CHECK(errno == ENOMEM);
    TT_CHECK(n > 100);
    for (size_t i = 0; i < n; i++) TT_CHECK(((char *)held[i])[0] == (char)i);
    tp_arena_reset(a);
  }
  tp_arena_destroy(a);
  a = tp_arena_create(&cfg);
  TT_CHECK(a && tp_arena_alloc(a, 100));
  tp_arena_destroy(a);
}

static uint64_t ran;
static void count_free(void *obj, void *arg) {
  (void)arg;
  (void)obj;
  __atomic_fetch_add(&ran, 1, __ATOMIC_RELAXED);
}

static void epoch_case(void *arg) {
  (void)arg;
  limit_as();
  tp_pool *p = big_pool();
  TT_CHECK(p);
  size_t n = exhaust(p);
  /* Out of memory: retires either succeed or fail cleanly: ENOMEM (no
   * block for the queue), or EAGAIN when the reclaimer thread cannot start
   * (its stack does not fit under the cap; epoch.h). */
  uint64_t ok = 0;
  static char objs[100000];
  for (size_t i = 0; i < sizeof objs; i++) {
    int rc = tp_epoch_retire(&objs[i], count_free, NULL);
    if (rc == 0) ok++;
    else TT_CHECK((rc == -ENOMEM && errno == ENOMEM) || (rc == -EAGAIN && errno == EAGAIN));
  }
  tp_pool_put_bulk(p, held, n);
  tp_pool_destroy(p);
  tp_sweep_all();
  TT_CHECK(tp_epoch_barrier() == 0);
  TT_CHECK(__atomic_load_n(&ran, __ATOMIC_RELAXED) == ok);
  TT_CHECK(tp_epoch_retire(&objs[0], count_free, NULL) == 0);
  TT_CHECK(tp_epoch_barrier() == 0);
  TT_CHECK(__atomic_load_n(&ran, __ATOMIC_RELAXED) == ok + 1);
}

struct node {
  struct node *next;
  char pad[1000];
};
static const size_t node_offs[] = {0};
static const tp_type node_type = {.name = "node", .size = sizeof(struct node),
                                  .ptr_offsets = node_offs, .n_ptr_offsets = 1};
static void *root;

static void heap_case(void *arg) {
  (void)arg;
  limit_as();
  tp_heap *h = tp_heap_create(NULL);
  TT_CHECK(h);
  TT_CHECK(tp_heap_attach(h) == 0);
  TT_CHECK(tp_root_add(h, &root) == 0);
  for (int round = 0; round < 2; round++) {
    size_t n = 0;
    for (;;) {
      struct node *x = tp_heap_alloc(h, &node_type);
      if (!x) break;
      x->next = root;
      root = x;
      n++;
    }
    TT_CHECK(errno == ENOMEM);
    TT_CHECK(n > 1000);
    size_t k = 0;
    for (struct node *x = root; x; x = x->next) k++;
    TT_CHECK(k == n);
    root = NULL;
    tp_heap_collect(h);
  }
  TT_CHECK(tp_root_remove(h, &root) == 0);
  tp_heap_detach(h);
  tp_heap_destroy(h);
}

static void sweeper_case(void *arg) {
  (void)arg;
  limit_as();
  tp_pool *p = big_pool();
  TT_CHECK(p);
  size_t n = exhaust(p);
  int rc = tp_sweeper_start(NULL);
  TT_CHECK(rc == 0 || (rc == -EAGAIN && errno == EAGAIN && !tp_sweeper_running()));
  if (rc == 0) tp_sweeper_stop();
  tp_pool_put_bulk(p, held, n);
  tp_sweep_all();
  tp_stats st;
  TT_CHECK(tp_read_stats(&st) == 0 && st.bytes_mapped < LIMIT / 2);
  TT_CHECK(tp_sweeper_start(NULL) == 0);
  tp_sweeper_stop();
  TT_CHECK(exhaust(p) >= n / 2);
  tp_pool_destroy(p);
}

struct rcase {
  void (*fn)(void *);
  void *arg;
};

static void run(void **state) {
  const struct rcase *c = *state;
  assert_true(tt_in_child(c->fn, c->arg, CHILD_MS));
}

static const struct rcase c_pool = {pool_case, NULL}, c_arena = {arena_case, (void *)0},
                          c_arena_conc = {arena_case, (void *)(uintptr_t)TP_ARENA_CONCURRENT},
                          c_epoch = {epoch_case, NULL}, c_heap = {heap_case, NULL},
                          c_sweeper = {sweeper_case, NULL};

int main(void) {
  const struct CMUnitTest tests[] = {
      {"pool", run, NULL, NULL, (void *)&c_pool},
      {"arena", run, NULL, NULL, (void *)&c_arena},
      {"arena_concurrent", run, NULL, NULL, (void *)&c_arena_conc},
      {"epoch", run, NULL, NULL, (void *)&c_epoch},
      {"heap", run, NULL, NULL, (void *)&c_heap},
      {"sweeper", run, NULL, NULL, (void *)&c_sweeper},
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
