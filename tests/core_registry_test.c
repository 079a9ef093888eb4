/*
 * core/registry: the process-wide registry and its fork handling.
 *
 *  - link, unlink (head, middle, tail, last), foreach and the head snapshot
 *    keep a well-formed list, walked both ways;
 *  - a fork while another thread holds an element's lock: the prepare
 *    handler waits for it (the holder lets go only once prepare has come to
 *    that element, or after HOLD_MS without it), so the child's copy is not
 *    locked; the child callback runs once per element, the child and the
 *    parent get every lock back, and the child may link and unlink;
 *  - a seeded, time-bounded stress, more threads than cores: threads link,
 *    unlink and lock their own (linked) elements while others walk the
 *    registry under its lock (each walk checks the links it crosses) and
 *    one forks (each child checks the whole list and that no linked
 *    element's lock is held).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/registry_internal.h"
#include "tests/test_util.h"

#define MAGIC 0x5e91u
#define HOLD_MS 3000u /* the holder's bound when prepare never comes */

struct elem {
  unsigned magic, id;
  pthread_mutex_t lock;
  struct tp__reg_link reg;
  int child_runs; /* the child callback's count (in the child) */
  bool in;        /* linked (its owner's view) */
};

static struct elem *elem_of(struct tp__reg_link *l) {
  return TP__REG_OBJ(l, struct elem, reg);
}

/* Set by el_lock once prepare has come to `watched` (about to wait for its
 * lock): the holder then lets go. */
static struct elem *watched;
static int prepare_reached;

static void el_lock(struct tp__reg_link *l) {
  struct elem *e = elem_of(l);
  if (e == __atomic_load_n(&watched, __ATOMIC_ACQUIRE))
    __atomic_store_n(&prepare_reached, 1, __ATOMIC_RELEASE);
  pthread_mutex_lock(&e->lock);
}
static void el_unlock(struct tp__reg_link *l) { pthread_mutex_unlock(&elem_of(l)->lock); }
static void el_child(struct tp__reg_link *l) { elem_of(l)->child_runs++; }
static const struct tp__registry_ops ops = {el_lock, el_unlock, el_child};

static void elem_init(struct elem *e, unsigned id) {
  *e = (struct elem){.magic = MAGIC, .id = id};
  pthread_mutex_init(&e->lock, NULL);
}

/* The list, checked both ways (caller holds r's lock or is alone): the
 * elements from head to tail into out (at most cap); -1 if a link is
 * broken (a prev that does not point back, a tail that is not the last, a
 * bad element). */
static int walk(const struct tp__registry *r, struct elem **out, int cap) {
  int n = 0;
  const struct tp__reg_link *prev = NULL;
  for (struct tp__reg_link *l = r->head; l; prev = l, l = l->next) {
    if (l->prev != prev || n == cap || elem_of(l)->magic != MAGIC) return -1;
    if (out) out[n] = elem_of(l);
    n++;
  }
  if (r->tail != prev) return -1;
  int back = 0;
  for (const struct tp__reg_link *l = r->tail; l; l = l->prev)
    if (++back > n) return -1;
  return back == n ? n : -1;
}

/* ---- link, unlink, foreach ---------------------------------------------------------- */

/* The registries here borrow a name the lock-order table ranks (debug
 * builds check a registry's lock by its name; the test's element locks are
 * not checked) and a fork rank no module uses. */
#define LOCK_NAME "pool registry lock"
#define FORK_RANK 35

static struct tp__registry basic = TP__REGISTRY_INIT(FORK_RANK, LOCK_NAME, &ops);

static void count_visit(struct tp__reg_link *l, void *arg) {
  struct elem **seen = arg;
  size_t i = 0;
  while (seen[i]) i++;
  seen[i] = elem_of(l);
}

static void expect(struct elem *const *want, int n) {
  struct elem *got[8] = {0};
  assert_int_equal(walk(&basic, got, 8), n);
  for (int i = 0; i < n; i++) assert_ptr_equal(got[i], want[i]);
  struct elem *seen[9] = {0};
  assert_int_equal(tp__registry_foreach(&basic, count_visit, seen), (size_t)n);
  for (int i = 0; i < n; i++) assert_ptr_equal(seen[i], want[i]);
  struct tp__reg_link *h = tp__registry_head(&basic);
  assert_ptr_equal(h ? elem_of(h) : NULL, n ? want[0] : NULL);
}

static void link_unlink_foreach(void **state) {
  (void)state;
  static struct elem e[5];
  for (unsigned i = 0; i < 5; i++) elem_init(&e[i], i);
  expect(NULL, 0);
  for (int i = 0; i < 5; i++) tp__registry_link(&basic, &e[i].reg);
  /* A link is at the head. */
  expect((struct elem *[]){&e[4], &e[3], &e[2], &e[1], &e[0]}, 5);
  tp__registry_unlink(&basic, &e[2].reg); /* middle */
  expect((struct elem *[]){&e[4], &e[3], &e[1], &e[0]}, 4);
  tp__registry_unlink(&basic, &e[4].reg); /* head */
  expect((struct elem *[]){&e[3], &e[1], &e[0]}, 3);
  tp__registry_unlink(&basic, &e[0].reg); /* tail */
  expect((struct elem *[]){&e[3], &e[1]}, 2);
  tp__registry_link(&basic, &e[2].reg); /* again, after an unlink */
  expect((struct elem *[]){&e[2], &e[3], &e[1]}, 3);
  tp__registry_unlink(&basic, &e[1].reg);
  tp__registry_unlink(&basic, &e[3].reg);
  tp__registry_unlink(&basic, &e[2].reg); /* the last */
  expect(NULL, 0);
  tp__registry_link(&basic, &e[0].reg);
  expect((struct elem *[]){&e[0]}, 1);
  tp__registry_unlink(&basic, &e[0].reg);
  expect(NULL, 0);
}

/* ---- fork while an element's lock is held --------------------------------------------- */

static struct tp__registry forkreg = TP__REGISTRY_INIT(FORK_RANK, LOCK_NAME, &ops);
static struct elem fe[4];
static int holding, held_done; /* the holder has the lock; has let it go */

static void *holder(void *arg) {
  struct elem *e = arg;
  pthread_mutex_lock(&e->lock);
  __atomic_store_n(&holding, 1, __ATOMIC_RELEASE);
  /* Let go once prepare is at e (it then waits for this lock), or after
   * HOLD_MS: a prepare that does not wait has forked by then. */
  uint64_t end = tt_now_ns() + (uint64_t)HOLD_MS * 1000000u;
  while (!__atomic_load_n(&prepare_reached, __ATOMIC_ACQUIRE) && tt_now_ns() < end) tt_sleep_ms(1);
  tt_sleep_ms(20); /* prepare is blocked in the lock by now (if it is not, no matter) */
  pthread_mutex_unlock(&e->lock);
  __atomic_store_n(&held_done, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* In the child: every element's lock free, the child callback run once on
 * each, the registry usable. An exit status says what failed. */
static int child_checks(void) {
  for (int i = 0; i < 4; i++) {
    int rc = pthread_mutex_trylock(&fe[i].lock);
    if (rc == EBUSY) {
      fprintf(stderr, "child: element %d's lock is held (prepare did not wait for it)\n", i);
      return 10 + i;
    }
    if (rc) return 20;
    pthread_mutex_unlock(&fe[i].lock);
    if (fe[i].child_runs != 1) {
      fprintf(stderr, "child: element %d's child callback ran %d times\n", i, fe[i].child_runs);
      return 30 + i;
    }
  }
  if (walk(&forkreg, NULL, 4) != 4) return 40;
  tp__registry_unlink(&forkreg, &fe[0].reg);
  tp__registry_link(&forkreg, &fe[0].reg);
  return walk(&forkreg, NULL, 4) == 4 ? 0 : 41;
}

static void fork_waits_for_element_locks(void **state) {
  (void)state;
  for (unsigned i = 0; i < 4; i++) {
    elem_init(&fe[i], i);
    tp__registry_link(&forkreg, &fe[i].reg);
  }
  /* An element in the middle of the prepare walk. */
  __atomic_store_n(&watched, &fe[2], __ATOMIC_RELEASE);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, holder, &fe[2]), 0);
  /* Detached: it may end between prepare and the fork, and ThreadSanitizer
   * reports a finished, unjoined thread at the child's exit. */
  assert_int_equal(pthread_detach(t), 0);
  assert_true(tt_wait_for(&holding, 1));
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(child_checks());
  assert_true(tt_wait_for(&held_done, 1));
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  /* The parent: every lock released, no child callback. */
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pthread_mutex_trylock(&fe[i].lock), 0);
    pthread_mutex_unlock(&fe[i].lock);
    assert_int_equal(fe[i].child_runs, 0);
  }
  assert_int_equal(walk(&forkreg, NULL, 4), 4);
  for (int i = 0; i < 4; i++) tp__registry_unlink(&forkreg, &fe[i].reg);
  __atomic_store_n(&watched, NULL, __ATOMIC_RELEASE);
}

/* ---- stress ------------------------------------------------------------------------ */

enum { LINKERS = 4, WALKERS = 2, PER = 16, TOTAL = LINKERS * PER };

static struct tp__registry stressreg = TP__REGISTRY_INIT(FORK_RANK, LOCK_NAME, &ops);
static struct elem se[TOTAL];
static int stop;
static tt_failures fails;
static uint64_t base_seed;
static uint64_t ops_done, walks_done, forks_done; /* atomic */

static void *linker(void *arg) {
  unsigned k = (unsigned)(uintptr_t)arg;
  uint64_t rng = base_seed + k + 1;
  struct elem *mine = &se[k * PER];
  while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE) && !tt_failed(&fails)) {
    struct elem *e = &mine[tt_rand(&rng) % PER];
    switch (tt_rand(&rng) % 3) {
      case 0: /* create or destroy */
        if (e->in) {
          tp__registry_unlink(&stressreg, &e->reg);
          pthread_mutex_destroy(&e->lock);
        } else {
          /* A new object, with a new lock (as a pool's): live elements
           * keep their order in the list, so the prepare handler takes
           * any two live locks in one order, which ThreadSanitizer's
           * deadlock detector checks. */
          pthread_mutex_init(&e->lock, NULL);
          tp__registry_link(&stressreg, &e->reg);
        }
        e->in = !e->in;
        break;
      default: /* use a live one: its lock, as a pool's refill does */
        if (!e->in) break;
        pthread_mutex_lock(&e->lock);
        pthread_mutex_unlock(&e->lock);
    }
    __atomic_fetch_add(&ops_done, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

struct walk_state {
  struct tp__reg_link *prev;
  int n;
  bool bad;
};

static void walk_visit(struct tp__reg_link *l, void *arg) {
  struct walk_state *w = arg;
  if (l->prev != w->prev || elem_of(l)->magic != MAGIC || ++w->n > TOTAL) w->bad = true;
  w->prev = l;
}

static void *walker(void *arg) {
  (void)arg;
  while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE) && !tt_failed(&fails)) {
    struct walk_state w = {NULL, 0, false};
    size_t n = tp__registry_foreach(&stressreg, walk_visit, &w);
    if (w.bad || n != (size_t)w.n) {
      tt_fail_once(&fails, "a walk under the registry lock crossed a broken link (%d elements)", w.n);
      break;
    }
    __atomic_fetch_add(&walks_done, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

/* The child: a whole list, and no element in it locked (elements out of
 * the registry are not in use: their owners lock only linked ones). */
static int stress_child(void) {
  static struct elem *in[TOTAL];
  int n = walk(&stressreg, in, TOTAL);
  if (n < 0) return 1;
  for (int i = 0; i < n; i++) {
    if (pthread_mutex_trylock(&in[i]->lock) != 0) return 2;
    pthread_mutex_unlock(&in[i]->lock);
  }
  return 0;
}

static void *forker(void *arg) {
  (void)arg;
  while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE) && !tt_failed(&fails)) {
    pid_t pid = fork();
    if (pid < 0) {
      tt_fail_once(&fails, "fork: %d", errno);
      break;
    }
    if (pid == 0) _exit(stress_child());
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      tt_fail_once(&fails, "a child found %s", WIFEXITED(status) && WEXITSTATUS(status) == 2
                                                     ? "an element's lock held"
                                                     : "a broken list (or died)");
      break;
    }
    __atomic_fetch_add(&forks_done, 1, __ATOMIC_RELAXED);
    tt_sleep_ms(10);
  }
  return NULL;
}

static int enough(void *arg) {
  (void)arg;
  return __atomic_load_n(&ops_done, __ATOMIC_RELAXED) >= 10000 &&
         __atomic_load_n(&walks_done, __ATOMIC_RELAXED) >= 100 &&
         __atomic_load_n(&forks_done, __ATOMIC_RELAXED) >= 5;
}

static void concurrent_link_unlink_walk_fork(void **state) {
  (void)state;
  base_seed = tt_seed("core_registry_test");
  for (unsigned i = 0; i < TOTAL; i++) {
    elem_init(&se[i], i);
    pthread_mutex_destroy(&se[i].lock); /* each link makes it anew */
  }
  pthread_t t[LINKERS + WALKERS + 1];
  int nt = 0;
  for (unsigned k = 0; k < LINKERS; k++)
    assert_int_equal(pthread_create(&t[nt++], NULL, linker, (void *)(uintptr_t)k), 0);
  for (int k = 0; k < WALKERS; k++) assert_int_equal(pthread_create(&t[nt++], NULL, walker, NULL), 0);
  assert_int_equal(pthread_create(&t[nt++], NULL, forker, NULL), 0);
  tt_run_until(tt_deadline(1.0), &fails, enough, NULL, &stop);
  for (int i = 0; i < nt; i++) assert_int_equal(tt_join_within(t[i], TT_HANG_MS, NULL), 0);
  tt_assert_no_failures(&fails);
  printf("core_registry_test: %llu ops, %llu walks, %llu forks\n",
         (unsigned long long)ops_done, (unsigned long long)walks_done,
         (unsigned long long)forks_done);
  assert_true(enough(NULL));
  /* Exactly the elements their owners linked, once each. */
  static struct elem *got[TOTAL];
  int n = walk(&stressreg, got, TOTAL);
  int want = 0;
  for (int i = 0; i < TOTAL; i++) want += se[i].in;
  assert_int_equal(n, want);
  static bool seen[TOTAL];
  for (int i = 0; i < n; i++) {
    assert_true(got[i]->in);
    assert_false(seen[got[i]->id]);
    seen[got[i]->id] = true;
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(link_unlink_foreach),
      cmocka_unit_test(fork_waits_for_element_locks),
      cmocka_unit_test(concurrent_link_unlink_walk_fork),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
