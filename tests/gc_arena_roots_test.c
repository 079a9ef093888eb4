/*
 * Arenas as roots (tp_heap_add_arena / tp_heap_remove_arena): heap objects
 * reachable only from a registered arena survive collections — a plain
 * arena over many chunks, a large arena allocation (pointer in its last
 * word), a TP_ARENA_CONCURRENT arena written by several threads (per-CPU
 * regions refilled many times) — and are collected after rewind, reset,
 * remove, destroy and retire; an arena registered with two heaps; heap
 * destroy with arenas registered; bad arguments; and add/remove/reset/
 * destroy racing collections (seeded, time-bounded, more threads than
 * cores); fork() while other threads register, reset and collect (the
 * child's locks are usable: it collects, registers, resets, destroys);
 * the checkmark of a concurrent cycle meeting a stale arena word (a reset
 * chunk re-allocated between pause 1 and pause 2) does not abort.
 *
 * Objects are observed through weak references (not roots), and every
 * collection that must find an object dead runs with no thread attached
 * (tt_collect_unscanned), so only the arena can keep it.
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
#include <sys/wait.h>
#include <unistd.h>

#include <tidepool/arena.h>
#include <tidepool/epoch.h>
#include <tidepool/gc.h>

#include "gc_test_util.h"
#include "test_util.h"

#define MAGIC 0x6172656e61726f6full

struct obj {
  uint64_t magic;
  uint64_t id;
};
static const tp_type obj_type = {"obj", sizeof(struct obj), NULL, NULL, 0, NULL, TP_TYPE_LEAF};

static tp_heap *new_heap(void) {
  tp_heap_config c = {.trigger_percent = 0, .region_size = 64 << 10};
  tp_heap *h = tp_heap_create(&c);
  assert_non_null(h);
  return h;
}

/* A fresh object of h, its weak reference in *w. */
static struct obj *new_obj(tp_heap *h, uint64_t id, tp_weak **w) {
  struct obj *o = tp_heap_alloc(h, &obj_type);
  assert_non_null(o);
  o->magic = MAGIC;
  o->id = id;
  *w = tp_weak_new(h, o);
  assert_non_null(*w);
  return o;
}

static int alive(tp_weak *w, uint64_t id) {
  struct obj *o = tp_weak_get(w);
  if (!o) return 0;
  assert_true(o->magic == MAGIC && o->id == id);
  return 1;
}

static uint64_t count_alive(tp_weak **w, size_t n, size_t from) {
  uint64_t k = 0;
  for (size_t i = from; i < n; i++) k += (uint64_t)alive(w[i], i);
  return k;
}

static void free_weaks(tp_weak **w, size_t n) {
  for (size_t i = 0; i < n; i++) tp_weak_free(w[i]);
}

/* ---- bad arguments ------------------------------------------------------------ */

static void test_bad_args(void **state) {
  (void)state;
  tp_heap *h = new_heap(), *h2 = new_heap();
  tp_arena *a = tp_arena_create(NULL);
  assert_non_null(a);
  errno = 0;
  assert_int_equal(tp_heap_add_arena(NULL, a), -EINVAL);
  assert_int_equal(errno, EINVAL);
  assert_int_equal(tp_heap_add_arena(h, NULL), -EINVAL);
  assert_int_equal(tp_heap_remove_arena(NULL, a), -EINVAL);
  assert_int_equal(tp_heap_remove_arena(h, NULL), -EINVAL);
  errno = 0;
  assert_int_equal(tp_heap_remove_arena(h, a), -ENOENT);
  assert_int_equal(errno, ENOENT);
  assert_int_equal(tp_heap_add_arena(h, a), 0);
  errno = 0;
  assert_int_equal(tp_heap_add_arena(h, a), -EEXIST);
  assert_int_equal(errno, EEXIST);
  assert_int_equal(tp_heap_add_arena(h2, a), 0); /* another heap: fine */
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(h, &s), 0);
  assert_int_equal(s.arenas, 1);
  assert_int_equal(tp_heap_remove_arena(h, a), 0);
  assert_int_equal(tp_heap_remove_arena(h, a), -ENOENT);
  assert_int_equal(tp_heap_read_stats(h, &s), 0);
  assert_int_equal(s.arenas, 0);
  assert_int_equal(tp_heap_read_stats(h2, &s), 0);
  assert_int_equal(s.arenas, 1);
  tp_arena_destroy(a); /* removes it from h2 */
  assert_int_equal(tp_heap_read_stats(h2, &s), 0);
  assert_int_equal(s.arenas, 0);
  tp_heap_destroy(h);
  tp_heap_destroy(h2);
}

/* A plain arena of 8 KiB chunks (so a test spans many), keeping 1 MiB
 * across resets, registered with h. */
static tp_arena *registered_small_chunk_arena(tp_heap *h) {
  tp_arena_config ac = {.chunk_size = 8 << 10, .keep_bytes = 1 << 20};
  tp_arena *a = tp_arena_create(&ac);
  assert_non_null(a);
  assert_int_equal(tp_heap_add_arena(h, a), 0);
  return a;
}

/* ---- a plain arena: chunks, a large allocation, rewind, reset, remove ---------- */

#define N_PLAIN 2000

static void test_plain(void **state) {
  (void)state;
  tp_heap *h = new_heap();
  tp_arena *a = registered_small_chunk_arena(h);
  static tp_weak *w[N_PLAIN + 1];
  /* Pointer slots spread over ~30 chunks; from slot N_PLAIN / 2 on they
   * come after a mark. */
  tp_arena_mark mark = {0};
  for (size_t i = 0; i < N_PLAIN; i++) {
    if (i == N_PLAIN / 2) mark = tp_arena_save(a);
    struct obj **slot = tp_arena_alloc(a, 3 * sizeof(void *));
    assert_non_null(slot);
    slot[0] = slot[2] = NULL;
    slot[1] = new_obj(h, i, &w[i]);
  }
  /* A large allocation (own mapping) whose last word is the only pointer. */
  size_t big = 40 << 10;
  char *l = tp_arena_alloc(a, big);
  assert_non_null(l);
  memset(l, 0, big);
  *(struct obj **)(l + big - sizeof(void *)) = new_obj(h, N_PLAIN, &w[N_PLAIN]);
  tp_arena_stats as;
  assert_int_equal(tp_arena_read_stats(a, &as), 0);
  assert_true(as.chunks > 5 && as.large == 1);

  tt_collect_unscanned(h);
  tt_collect_unscanned(h);
  assert_int_equal(count_alive(w, N_PLAIN + 1, 0), N_PLAIN + 1);

  /* Rewind: the slots after the mark (and the large one) are gone. */
  tp_arena_rewind(a, mark);
  tt_collect_unscanned(h);
  assert_int_equal(count_alive(w, N_PLAIN / 2, 0), N_PLAIN / 2);
  assert_int_equal(count_alive(w, N_PLAIN + 1, N_PLAIN / 2), 0);

  /* Reset: the memory is still there (kept chunks, the first chunk), the
   * pointers in it too, but it is not allocated any more. */
  tp_arena_reset(a);
  tt_collect_unscanned(h);
  assert_int_equal(count_alive(w, N_PLAIN + 1, 0), 0);
  free_weaks(w, N_PLAIN + 1);

  /* Remove. */
  struct obj **slot = tp_arena_alloc(a, sizeof(void *));
  *slot = new_obj(h, 0, &w[0]);
  tt_collect_unscanned(h);
  assert_true(alive(w[0], 0));
  assert_int_equal(tp_heap_remove_arena(h, a), 0);
  tt_collect_unscanned(h);
  assert_false(alive(w[0], 0));
  tp_weak_free(w[0]);

  /* Destroy removes it. */
  assert_int_equal(tp_heap_add_arena(h, a), 0);
  slot = tp_arena_alloc(a, sizeof(void *));
  *slot = new_obj(h, 0, &w[0]);
  tt_collect_unscanned(h);
  assert_true(alive(w[0], 0));
  tp_arena_destroy(a);
  tt_collect_unscanned(h);
  assert_false(alive(w[0], 0));
  tp_weak_free(w[0]);
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(h, &s), 0);
  assert_int_equal(s.arenas, 0);
  tp_heap_destroy(h);
}

/* ---- retire: the deferred destroy removes it ------------------------------------ */

static void test_retire(void **state) {
  (void)state;
  tp_heap *h = new_heap();
  tp_arena *a = tp_arena_create(NULL);
  assert_non_null(a);
  assert_int_equal(tp_heap_add_arena(h, a), 0);
  tp_weak *w;
  struct obj **slot = tp_arena_alloc(a, sizeof(void *));
  *slot = new_obj(h, 7, &w);
  /* A read section holds the grace period (the retire's destroy) off. */
  tp_epoch_enter();
  assert_int_equal(tp_arena_retire(a), 0);
  tt_collect_unscanned(h); /* before the grace period: still a root */
  assert_true(alive(w, 7));
  tp_epoch_leave();
  tp_epoch_barrier(); /* the retire's destroy has run */
  tt_collect_unscanned(h);
  assert_false(alive(w, 7));
  tp_weak_free(w);
  tp_heap_destroy(h);
}

/* ---- two heaps; heap destroy with arenas registered --------------------------- */

static void test_two_heaps(void **state) {
  (void)state;
  tp_heap *h1 = new_heap(), *h2 = new_heap();
  tp_arena *a = tp_arena_create(NULL);
  tp_arena_config cc = {.flags = TP_ARENA_CONCURRENT};
  tp_arena *b = tp_arena_create(&cc);
  assert_non_null(a);
  assert_non_null(b);
  assert_int_equal(tp_heap_add_arena(h1, a), 0);
  assert_int_equal(tp_heap_add_arena(h2, a), 0);
  assert_int_equal(tp_heap_add_arena(h1, b), 0);
  tp_weak *w1, *w2;
  struct obj **s = tp_arena_alloc(a, 2 * sizeof(void *));
  s[0] = new_obj(h1, 1, &w1);
  s[1] = new_obj(h2, 2, &w2);
  tt_collect_unscanned(h1);
  tt_collect_unscanned(h2);
  assert_true(alive(w1, 1));
  assert_true(alive(w2, 2));
  /* h1 goes with a and b registered: they keep working, h2 still scans a. */
  tp_heap_destroy(h1);
  tp_weak_free(w1);
  tt_collect_unscanned(h2);
  assert_true(alive(w2, 2));
  tp_arena_reset(b); /* no observer left: nothing to wait for */
  tp_arena_destroy(b);
  tp_arena_reset(a);
  tt_collect_unscanned(h2);
  assert_false(alive(w2, 2));
  tp_weak_free(w2);
  tp_arena_destroy(a);
  tp_heap_destroy(h2);
}

/* ---- a concurrent arena written by several threads ---------------------------- */

#define CT_THREADS 4
#define CT_PER 3000

struct ct_arg {
  tp_heap *h;
  tp_arena *a;
  unsigned t;
  tp_weak **w;
};

static void *ct_worker(void *p) {
  struct ct_arg *c = p;
  for (unsigned i = 0; i < CT_PER; i++) {
    size_t id = (size_t)c->t * CT_PER + i;
    /* Slots of varied sizes: regions fill and are refilled many times. */
    size_t words = 1 + id % 7;
    void **slot = tp_arena_alloc(c->a, words * sizeof(void *));
    if (!slot) abort();
    memset(slot, 0, words * sizeof(void *));
    struct obj *o = tp_heap_alloc(c->h, &obj_type); /* may collect */
    if (!o) abort();
    o->magic = MAGIC;
    o->id = id;
    c->w[id] = tp_weak_new(c->h, o);
    slot[words - 1] = o;
  }
  tp_heap_detach(c->h);
  return NULL;
}

static void test_concurrent(void **state) {
  (void)state;
  /* Collections while the threads allocate: min heap small, 100 %. */
  tp_heap_config hc = {.trigger_percent = 100, .min_heap_bytes = 256 << 10,
                       .region_size = 64 << 10};
  tp_heap *h = tp_heap_create(&hc);
  assert_non_null(h);
  tp_arena_config cc = {.flags = TP_ARENA_CONCURRENT, .chunk_size = 8 << 10};
  tp_arena *a = tp_arena_create(&cc);
  assert_non_null(a);
  assert_int_equal(tp_heap_add_arena(h, a), 0);
  static tp_weak *w[CT_THREADS * CT_PER];
  pthread_t th[CT_THREADS];
  struct ct_arg args[CT_THREADS];
  for (unsigned t = 0; t < CT_THREADS; t++) {
    args[t] = (struct ct_arg){h, a, t, w};
    assert_int_equal(pthread_create(&th[t], NULL, ct_worker, &args[t]), 0);
  }
  /* The main thread is not attached: it collects alongside. */
  for (int i = 0; i < 20; i++) {
    tp_heap_collect(h);
    tt_sleep_ms(1);
  }
  for (unsigned t = 0; t < CT_THREADS; t++) assert_int_equal(tt_join_within(th[t], TT_HANG_MS, NULL), 0);
  tt_collect_unscanned(h);
  tt_collect_unscanned(h);
  assert_int_equal(count_alive(w, CT_THREADS * CT_PER, 0), CT_THREADS * CT_PER);
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(h, &s), 0);
  printf("concurrent: %llu collections\n", (unsigned long long)s.num_gc);
  tp_arena_stats as;
  assert_int_equal(tp_arena_read_stats(a, &as), 0);
  assert_true(as.chunks > 10);
  /* Reset drops them all. */
  tp_arena_reset(a);
  tt_collect_unscanned(h);
  assert_int_equal(count_alive(w, CT_THREADS * CT_PER, 0), 0);
  free_weaks(w, CT_THREADS * CT_PER);
  /* Destroy removes it. */
  tp_weak *w0;
  void **slot = tp_arena_alloc(a, 64 << 10); /* large: its own mapping */
  assert_non_null(slot);
  memset(slot, 0, 64 << 10);
  slot[(64 << 10) / sizeof(void *) - 1] = new_obj(h, 5, &w0);
  tt_collect_unscanned(h);
  assert_true(alive(w0, 5));
  tp_arena_destroy(a);
  tt_collect_unscanned(h);
  assert_false(alive(w0, 5));
  tp_weak_free(w0);
  tp_heap_destroy(h);
}

/* ---- races: add, remove, reset, destroy, retire against collections ------------- */

#define RACE_WORKERS 4

struct race {
  tp_heap *h;
  int stop;
  tt_failures f;
  uint64_t seed;
  uint64_t checks, rounds, dropped;
};

/* Waits (detached) until a collection has completed after this call. */
static void wait_collection(struct race *r) {
  tp_heap_stats s;
  tp_heap_read_stats(r->h, &s);
  uint64_t n0 = s.num_gc, end = tt_hang_deadline();
  do {
    tt_sleep_ms(1);
    tp_heap_read_stats(r->h, &s);
  } while (s.num_gc < n0 + 2 && tt_now_ns() < end && !__atomic_load_n(&r->stop, __ATOMIC_RELAXED));
}

static void *race_worker(void *p) {
  struct race *r = p;
  uint64_t seed = r->seed + __atomic_fetch_add(&r->rounds, 0, __ATOMIC_RELAXED) * 7919;
  static unsigned next_id;
  seed ^= __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED) * 0x9e3779b97f4a7c15ull;
  while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
    uint64_t x = tt_rand(&seed);
    /* A registered plain arena is used only by threads a collection stops
     * (gc.h): attached from here to the detach below. */
    tp_heap_attach(r->h);
    tp_arena_config ac = {.chunk_size = 8 << 10,
                          .flags = (x & 1) ? TP_ARENA_CONCURRENT : 0};
    tp_arena *a = tp_arena_create(&ac);
    if (!a) {
      tt_fail_once(&r->f, "arena create");
      break;
    }
    if (tp_heap_add_arena(r->h, a) != 0) tt_fail_once(&r->f, "add");
    /* Some filler, then the one pointer, at a random place. */
    /* Zeroed: a chunk from the pool still holds what an earlier round's
     * arena wrote there, which would keep that round's object alive.
    * Sizes are multiples of 16, so no allocation leaves padding unwritten. */
    size_t fill = (size_t)(x >> 8) % 20000 & ~(size_t)15;
    void *filler = fill ? tp_arena_alloc(a, fill) : NULL;
    if (filler) memset(filler, 0, fill);
    struct obj **slot = tp_arena_alloc(a, 2 * sizeof(void *));
    if (slot) slot[1] = NULL;
    struct obj *o = tp_heap_alloc(r->h, &obj_type);
    if (!slot || !o) {
      tt_fail_once(&r->f, "alloc");
      break;
    }
    uint64_t id = x;
    o->magic = MAGIC;
    o->id = id;
    tp_weak *w = tp_weak_new(r->h, o);
    *slot = o;
    o = NULL;
    /* Detached: only the arena holds the object now. */
    tp_heap_detach(r->h);
    wait_collection(r);
    /* Attached again to read the object (docs/gc.md, rule 4: a detached
     * thread does not touch heap objects while collections may run);
     * attach waits for a running collection. */
    tp_heap_attach(r->h);
    struct obj *got = tp_weak_get(w);
    if (!got || got->magic != MAGIC || got->id != id)
      tt_fail_once(&r->f, "object kept only by a registered arena was collected (round %llu)",
                   (unsigned long long)__atomic_load_n(&r->rounds, __ATOMIC_RELAXED));
    __atomic_fetch_add(&r->checks, 1, __ATOMIC_RELAXED);
    got = NULL;
    tp_heap_detach(r->h);
    /* Let it go one way or another, while collections run. */
    switch ((x >> 40) % 5) {
      case 0: tp_heap_remove_arena(r->h, a); tp_arena_destroy(a); break;
      case 1: tp_arena_reset(a); tp_arena_destroy(a); break;
      case 2: tp_arena_destroy(a); break;
      case 3:
        if (tp_arena_retire(a) != 0) tp_arena_destroy(a);
        tp_epoch_barrier(); /* its destroy has run */
        break;
      default: {
        tp_arena_mark m = tp_arena_save(a);
        tp_arena_rewind(a, m);
        tp_heap_remove_arena(r->h, a);
        tp_arena_destroy(a);
      }
    }
    wait_collection(r);
    /* Nothing holds it now but stale words: another worker's stack (it is
     * attached) may still hold an earlier object's address that this
     * object reuses, which a conservative scan rightly keeps. So a survivor
     * is counted, not a failure (the single-threaded tests above check
     * exactly); most must go. */
    if (!tp_weak_get(w)) __atomic_fetch_add(&r->dropped, 1, __ATOMIC_RELAXED);
    tp_weak_free(w);
    __atomic_fetch_add(&r->rounds, 1, __ATOMIC_RELAXED);
  }
  tp_heap_detach(r->h);
  return NULL;
}

static void *race_collector(void *p) {
  struct race *r = p;
  while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) tp_heap_collect(r->h);
  return NULL;
}

static int race_enough(void *p) {
  struct race *r = p;
  return __atomic_load_n(&r->rounds, __ATOMIC_RELAXED) >= 20;
}

static void test_races(void **state) {
  (void)state;
  struct race r = {.h = new_heap(), .seed = tt_seed("gc_arena_roots races")};
  pthread_t w[RACE_WORKERS], c;
  for (int i = 0; i < RACE_WORKERS; i++)
    assert_int_equal(pthread_create(&w[i], NULL, race_worker, &r), 0);
  assert_int_equal(pthread_create(&c, NULL, race_collector, &r), 0);
  tt_run_until(tt_deadline(3), &r.f, race_enough, &r, &r.stop);
  for (int i = 0; i < RACE_WORKERS; i++) assert_int_equal(tt_join_within(w[i], TT_HANG_MS, NULL), 0);
  assert_int_equal(tt_join_within(c, TT_HANG_MS, NULL), 0);
  tp_epoch_barrier();
  printf("races: %llu rounds, %llu checks, %llu objects collected after their arena went\n",
         (unsigned long long)r.rounds, (unsigned long long)r.checks,
         (unsigned long long)r.dropped);
  tt_assert_no_failures(&r.f);
  assert_true(r.rounds >= 20);
  assert_true(r.dropped * 2 > r.rounds);
  tp_heap_destroy(r.h);
}

/* ---- fork while others register, reset and collect --------------------------- */

struct fk {
  tp_heap *h;
  tp_arena *ca; /* registered concurrent arena the thread allocates from */
  int stop;
};

static void *fork_churn(void *p) {
  struct fk *f = p;
  tp_heap_attach(f->h); /* it uses a registered plain arena (gc.h) */
  while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
    tp_arena *a = tp_arena_create(NULL);
    if (!a) abort();
    tp_heap_add_arena(f->h, a);
    for (int i = 0; i < 64; i++) tp_arena_alloc(f->ca, 48); /* refills under ca's lock */
    tp_arena_alloc(a, 100);
    tp_arena_reset(a);
    tp_heap_collect(f->h);
    tp_arena_destroy(a);
  }
  tp_heap_detach(f->h);
  return NULL;
}

/* The child: what a collection, a registration, a reset and a destroy
 * need must not be left locked by the parent's other threads. 0: ok. */
static int fork_child(struct fk *f, tp_weak *w) {
  tp_heap_collect(f->h);
  if (!tp_weak_get(w)) return 1;
  tp_arena *a = tp_arena_create(NULL);
  if (!a || tp_heap_add_arena(f->h, a) != 0) return 2;
  tp_arena_alloc(f->ca, 48);
  tp_arena_reset(a);
  tp_heap_collect(f->h);
  tp_arena_destroy(a);
  return tp_weak_get(w) ? 0 : 3;
}

static void test_fork(void **state) {
  (void)state;
  struct fk f = {.h = new_heap()};
  tp_arena_config cc = {.flags = TP_ARENA_CONCURRENT, .chunk_size = 8 << 10};
  f.ca = tp_arena_create(&cc);
  assert_non_null(f.ca);
  assert_int_equal(tp_heap_add_arena(f.h, f.ca), 0);
  tp_weak *w;
  struct obj **slot = tp_arena_alloc(f.ca, 2 * sizeof(void *));
  slot[0] = new_obj(f.h, 3, &w);
  slot[1] = NULL;
  tp_heap_detach(f.h); /* the child's collections wait for nobody */
  pthread_t t[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, fork_churn, &f), 0);
  for (int round = 0; round < 5; round++) {
    tt_sleep_ms(20);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(fork_child(&f, w));
    int st = 0;
    uint64_t end = tt_hang_deadline();
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG)) == 0 && tt_now_ns() < end) tt_sleep_ms(5);
    if (r == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      fail_msg("fork child %d hung (a lock left held across fork?)", round);
    }
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
  }
  __atomic_store_n(&f.stop, 1, __ATOMIC_RELEASE);
  for (int i = 0; i < 2; i++) assert_int_equal(tt_join_within(t[i], TT_HANG_MS, NULL), 0);
  tt_collect_unscanned(f.h);
  assert_true(alive(w, 3));
  tp_weak_free(w);
  tp_arena_destroy(f.ca);
  tp_heap_destroy(f.h);
}

/* ---- the checkmark and arena memory that changed during the mark ---------------- */

/* A type whose trace callback (run by the marker thread, in the concurrent
 * mark between pause 1 and pause 2) holds the mark open until the test
 * has changed the arena. */
struct gate {
  int entered, open;
};
static struct gate gate;
static void gate_trace(void *obj, tp_tracer *t) {
  (void)obj;
  (void)t;
  if (__atomic_exchange_n(&gate.entered, 1, __ATOMIC_ACQ_REL)) return;
  tt_wait_for(&gate.open, 1); /* bounded: a hang is reported, the test fails */
}
static const tp_type gate_type = {"gate", 16, gate_trace, NULL, 0, NULL, 0};

static void *collect_thread(void *p) {
  tp_heap_collect(p);
  return NULL;
}

/* A chunk re-used after a reset holds a stale word (a pointer to an object
 * unreachable at pause 1: only the dropped part of the arena held it) that
 * the program re-allocates after pause 1 without writing it. The
 * checkmark in pause 2 reads it through the registered arena and must not
 * call that a collector bug (arena words are lenient after a concurrent
 * mark, like stack words); the object is collected. No thread is
 * attached, so no stack holds the pointer. */
static void test_checkmark_stale_word(void **state) {
  (void)state;
  tp_heap *h = new_heap();
  tp_arena *a = registered_small_chunk_arena(h);
  void **g = tp_heap_alloc(h, &gate_type);
  assert_non_null(g);
  assert_int_equal(tp_root_add(h, (void **)&g), 0);
  tp_weak *w;
  struct obj **slot = tp_arena_alloc(a, 4 * sizeof(void *));
  assert_non_null(slot);
  slot[0] = new_obj(h, 7, &w);
  slot[1] = slot[2] = slot[3] = NULL;
  /* No collection before the gated one: object 7 must still be in the
   * heap (unmarked) when the checkmark meets the stale word. */
  tp_arena_reset(a); /* the only pointer to object 7 is dropped memory now */
  tp_heap_stats s;
  assert_int_equal(tp_heap_read_stats(h, &s), 0);
  for (uint64_t i = 0; i < s.threads; i++) tp_heap_detach(h);
  gate.entered = gate.open = 0;
  pthread_t c;
  assert_int_equal(pthread_create(&c, NULL, collect_thread, h), 0);
  assert_true(tt_wait_for(&gate.entered, 1)); /* the marker is between pause 1 and pause 2 */
  /* Re-allocate the same bytes, not written: the stale word is back in the
   * allocated range. */
  struct obj **again = tp_arena_alloc(a, 4 * sizeof(void *));
  assert_true(again == slot);
  __atomic_store_n(&gate.open, 1, __ATOMIC_RELEASE);
  assert_int_equal(tt_join_within(c, TT_HANG_MS, NULL), 0);
  /* Garbage at pause 1, so freed by this cycle (weak cleared in pause 2). */
  assert_false(alive(w, 7));
  tp_weak_free(w);
  tp_root_remove(h, (void **)&g);
  tp_arena_destroy(a);
  tp_heap_destroy(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_args),   cmocka_unit_test(test_plain),
      cmocka_unit_test(test_retire),     cmocka_unit_test(test_two_heaps),
      cmocka_unit_test(test_concurrent), cmocka_unit_test(test_races),
      cmocka_unit_test(test_fork),       cmocka_unit_test(test_checkmark_stale_word),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
