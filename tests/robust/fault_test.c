/*
 * Fault injection (core/fault_internal.h): for each module, a workload runs
 * with the Nth of the library's own system calls failing (mmap, munmap,
 * madvise, pthread_create, opens, malloc/calloc/realloc), for every N from 1
 * until an armed run injects nothing (past the last call site). Two modes:
 * one failure at N, and every call from N on failing (memory that stays
 * short). Each run checks that
 *   - every failure surfaced as an error (NULL or -errno, with errno set),
 *     never an abort, a crash or a hang;
 *   - nothing was lost or duplicated: what succeeded is intact and
 *     distinct, counters match what the test holds, and capacity (gets to
 *     max_bytes, arena bytes to max_bytes) is what a fresh object has;
 *   - the object stays usable and the same process recovers once the fault
 *     is lifted (retires run, the sweeper starts, collections complete).
 * Calls are counted on the test's thread only (TP__FAULT_THIS_THREAD), so a
 * sweep is deterministic. Each module's sweeps run in a child process with
 * a deadline (a hang is a failure, not a stuck test); "warm" sweeps first
 * run the workload once unarmed (the library's one-time setup is done),
 * the "cold" sweep starts every N in a fresh child whose first library
 * call is already armed.
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
#include <cmocka.h>

#include "core/fault_internal.h"
#include "tests/robust/child.h"
#include "tests/test_util.h"

#define SWEEP_MS 120000u /* one module's sweeps (a few s): only a hang gets near */

/* An error result must come with a meaningful errno. */
#define CHECK_ERRNO() TT_CHECK(errno == ENOMEM || errno == EAGAIN || errno == EMFILE)

/* ---- pool ---------------------------------------------------------------- */

#define POOL_OBJ 256
#define POOL_MAX (1u << 20)
#define POOL_WORK 1200

static size_t pool_capacity; /* gets a fresh pool allows (warm-up) */
static uint64_t retired_ran;

static void stamp(void *o, uint64_t v) { memcpy(o, &v, sizeof v); }
static uint64_t stamp_of(const void *o) {
  uint64_t v;
  memcpy(&v, o, sizeof v);
  return v;
}

static tp_pool *pool_new(void) {
  tp_pool_config cfg = {.name = "fault", .obj_size = POOL_OBJ, .max_bytes = POOL_MAX};
  return tp_pool_create(&cfg);
}

/* Gets until max_bytes: the count; puts them all back. */
static size_t pool_fill_count(tp_pool *p) {
  void **v = malloc(POOL_MAX / POOL_OBJ * sizeof *v);
  TT_CHECK(v);
  size_t n = 0;
  while (n < POOL_MAX / POOL_OBJ && (v[n] = tp_pool_get(p)) != NULL) n++;
  tp_pool_put_bulk(p, v, n);
  free(v);
  return n;
}

/* The workload under a fault; then, lifted, the checks. */
static void pool_workload(int armed) {
  static void *held[POOL_WORK];
  size_t n = 0;
  uint64_t id = 1;
  tp_pool *p = pool_new();
  if (!p) {
    CHECK_ERRNO();
    TT_CHECK(armed);
  } else {
    for (int round = 0; round < 3; round++) {
      for (int i = 0; i < 300 && n < POOL_WORK; i++) {
        void *o = tp_pool_get(p);
        if (!o) {
          CHECK_ERRNO();
          continue;
        }
        stamp(o, id++);
        held[n++] = o;
      }
      size_t want = POOL_WORK - n < 64 ? POOL_WORK - n : 64;
      size_t got = tp_pool_get_bulk(p, held + n, want);
      if (got < want) CHECK_ERRNO();
      for (size_t i = n; i < n + got; i++) stamp(held[i], id++);
      n += got;
      /* Back: one by one, in bulk, and by retire. */
      for (int i = 0; i < 50 && n; i++) tp_pool_put(p, held[--n]);
      size_t k = n < 40 ? n : 40;
      n -= k;
      tp_pool_put_bulk(p, held + n, k);
      for (int i = 0; i < 10 && n; i++) {
        int rc = tp_pool_retire(p, held[n - 1]);
        if (rc == 0) {
          n--;
        } else {
          TT_CHECK(rc < 0 && errno == -rc);
          CHECK_ERRNO();
          break; /* still ours */
        }
      }
      tp_sweep_all();
    }
  }
  tp__fault_disarm();
  if (!p) {
    p = pool_new();
    TT_CHECK(p);
  }
  TT_CHECK(tp_epoch_barrier() == 0);
  tp_pool_stats st;
  TT_CHECK(tp_pool_read_stats(p, &st) == 0);
  TT_CHECK(st.in_use == n);
  qsort(held, n, sizeof *held, tt_cmp_ptr);
  for (size_t i = 0; i + 1 < n; i++) TT_CHECK(held[i] != held[i + 1]);
  for (size_t i = 0; i < n; i++) TT_CHECK(stamp_of(held[i]) != 0);
  tp_pool_put_bulk(p, held, n);
  TT_CHECK(tp_pool_read_stats(p, &st) == 0 && st.in_use == 0);
  size_t cap = pool_fill_count(p);
  if (pool_capacity) TT_CHECK(cap == pool_capacity);
  else pool_capacity = cap;
  tp_pool_destroy(p);
}

/* ---- arena (plain and concurrent) --------------------------------------- */

#define ARENA_MAX (2u << 20)
#define ARENA_CHUNK (64u << 10)
#define ARENA_WORK 400

static unsigned arena_flags;
static int cleanups_ran;
static void cleanup(void *arg) { (*(int *)arg)++; }

struct alloc_rec {
  unsigned char *p;
  size_t n;
  unsigned char byte;
};

static void arena_workload(int armed) {
  static struct alloc_rec rec[ARENA_WORK];
  size_t nrec = 0;
  int cleanups = 0;
  cleanups_ran = 0;
  tp_arena_config cfg = {.chunk_size = ARENA_CHUNK, .max_bytes = ARENA_MAX,
                         .keep_bytes = 2 * ARENA_CHUNK, .flags = arena_flags};
  tp_arena *a = tp_arena_create(&cfg);
  if (!a) {
    CHECK_ERRNO();
    TT_CHECK(armed);
  } else {
    uint64_t rnd = 42;
    for (int round = 0; round < 3; round++) {
      tp_arena_mark m = tp_arena_save(a);
      size_t at_mark = nrec;
      for (int i = 0; i < 100 && nrec < ARENA_WORK; i++) {
        uint64_t r = tt_rand(&rnd);
        size_t sz = (r & 7) == 0 ? 100000 + (r >> 40) % 50000 : 1 + (r >> 20) % 700;
        unsigned char *q = (r & 3) == 1 ? tp_arena_calloc(a, 1, sz) : tp_arena_alloc(a, sz);
        if (!q) {
          CHECK_ERRNO();
          continue;
        }
        unsigned char b = (unsigned char)(1 + nrec % 250);
        memset(q, b, sz);
        rec[nrec++] = (struct alloc_rec){q, sz, b};
      }
      int rc = tp_arena_on_reset(a, cleanup, &cleanups_ran);
      if (rc == 0) cleanups++;
      else TT_CHECK(rc < 0 && errno == -rc);
      if (!(arena_flags & TP_ARENA_CONCURRENT) && round == 1) {
        /* Rewinding runs the cleanups registered since the mark. */
        int before = cleanups_ran;
        tp_arena_rewind(a, m);
        TT_CHECK(cleanups_ran - before == (rc == 0));
        cleanups -= rc == 0;
        nrec = at_mark;
      }
    }
  }
  tp__fault_disarm();
  if (!a) {
    a = tp_arena_create(&cfg);
    TT_CHECK(a);
  }
  for (size_t i = 0; i < nrec; i++)
    for (size_t j = 0; j < rec[i].n; j += 61) TT_CHECK(rec[i].p[j] == rec[i].byte);
  tp_arena_stats st;
  TT_CHECK(tp_arena_read_stats(a, &st) == 0);
  TT_CHECK(st.bytes_held <= ARENA_MAX);
  int before = cleanups_ran;
  tp_arena_reset(a);
  TT_CHECK(cleanups_ran - before == cleanups);
  /* Nothing lost: all but the last chunk's worth of max_bytes is there. */
  size_t got = 0;
  void *q;
  while ((q = tp_arena_alloc(a, 1024)) != NULL) {
    memset(q, 7, 1024);
    got += 1024;
  }
  TT_CHECK(errno == ENOMEM);
  TT_CHECK(got + 2 * ARENA_CHUNK >= ARENA_MAX);
  tp_arena_destroy(a);
}

/* ---- epoch ----------------------------------------------------------------- */

static void count_and_free(void *obj, void *arg) {
  (void)arg;
  free(obj);
  __atomic_fetch_add(&retired_ran, 1, __ATOMIC_RELAXED);
}

static void epoch_workload(int armed) {
  (void)armed;
  uint64_t want = 0;
  __atomic_store_n(&retired_ran, 0, __ATOMIC_RELAXED);
  for (int i = 0; i < 200; i++) {
    void *o = malloc(64);
    TT_CHECK(o);
    int rc = (i & 1) ? tp_epoch_retire_sized(o, 64, count_and_free, NULL)
                     : tp_epoch_retire(o, count_and_free, NULL);
    if (rc == 0) {
      want++;
    } else {
      TT_CHECK(rc < 0 && errno == -rc);
      CHECK_ERRNO();
      free(o); /* still ours */
    }
    if (i % 50 == 49) {
      int s = tp_epoch_synchronize();
      TT_CHECK(s == 0 || (s < 0 && errno == -s));
    }
  }
  /* Still under the fault: a barrier must not wait for a reclaimer that
   * cannot start (issue 14, fault 4), and every retire that returned 0 has
   * run once it returns. */
  TT_CHECK(tp_epoch_barrier() == 0);
  TT_CHECK(__atomic_load_n(&retired_ran, __ATOMIC_RELAXED) == want);
  tp__fault_disarm();
  TT_CHECK(tp_epoch_barrier() == 0);
  TT_CHECK(__atomic_load_n(&retired_ran, __ATOMIC_RELAXED) == want);
  /* Recovered: a retire now succeeds and runs. */
  void *o = malloc(8);
  TT_CHECK(o);
  int rc = tp_epoch_retire(o, count_and_free, NULL);
  if (rc) fprintf(stderr, "epoch: a retire after the fault: %d (%s)\n", rc, strerror(-rc));
  TT_CHECK(rc == 0);
  TT_CHECK(tp_epoch_barrier() == 0);
  TT_CHECK(__atomic_load_n(&retired_ran, __ATOMIC_RELAXED) == want + 1);
}

/* ---- heap ----------------------------------------------------------------- */

struct node {
  struct node *next;
  uint64_t value;
  char pad[40];
};
static const size_t node_offs[] = {offsetof(struct node, next)};
static const tp_type node_type = {.name = "node", .size = sizeof(struct node),
                                  .ptr_offsets = node_offs, .n_ptr_offsets = 1};
static const tp_type blob_type = {.name = "blob", .size = 4096, .flags = TP_TYPE_LEAF};

static void *heap_root;

static uint64_t list_check(struct node *n) {
  uint64_t k = 0;
  for (; n; n = n->next, k++) TT_CHECK(n->value == k);
  return k;
}

static void heap_workload(int armed) {
  tp_heap_config cfg = {.trigger_percent = 0, .region_size = 32u << 10, .gray_stack_entries = 8};
  tp_heap *h = tp_heap_create(&cfg);
  uint64_t built = 0;
  tp_weak *weak[8] = {0};
  int attached = 0, rooted = 0;
  heap_root = NULL;
  if (!h) {
    CHECK_ERRNO();
    TT_CHECK(armed);
  } else {
    int rc = tp_heap_attach(h);
    TT_CHECK(rc == 0 || (rc < 0 && errno == -rc));
    attached = rc == 0;
    rc = tp_root_add(h, &heap_root);
    TT_CHECK(rc == 0 || (rc < 0 && errno == -rc));
    rooted = rc == 0;
    if (attached && rooted) {
      /* A list built tail first, so every prefix stays a valid list. */
      struct node *tail = NULL;
      for (int i = 0; i < 3000; i++) {
        struct node *n = tp_heap_alloc(h, &node_type);
        if (!n) {
          CHECK_ERRNO();
          continue;
        }
        n->next = tail;
        tail = n;
        heap_root = tail; /* renumbered below */
        built++;
        if (i % 500 == 0) {
          void *b = tp_heap_alloc_array(h, &blob_type, 40); /* large */
          if (!b) CHECK_ERRNO();
        }
        if (i % 400 == 0) {
          tp_weak *w = tp_weak_new(h, n);
          if (!w) CHECK_ERRNO();
          else weak[i / 400] = w;
        }
        if (i % 1000 == 999) tp_heap_collect(h);
      }
      uint64_t k = 0;
      for (struct node *n = heap_root; n; n = n->next) n->value = k++;
      tp_heap_collect(h);
    }
  }
  tp__fault_disarm();
  if (!h) {
    h = tp_heap_create(&cfg);
    TT_CHECK(h);
  }
  if (!attached) TT_CHECK(tp_heap_attach(h) == 0);
  if (!rooted) TT_CHECK(tp_root_add(h, &heap_root) == 0);
  TT_CHECK(list_check(heap_root) == built);
  tp_heap_collect(h);
  TT_CHECK(list_check(heap_root) == built);
  for (int i = 0; i < 8; i++)
    if (weak[i]) TT_CHECK(tp_weak_get(weak[i]) != NULL);
  /* Usable: more objects, a collection, the list still whole. */
  struct node *n = tp_heap_alloc(h, &node_type);
  TT_CHECK(n);
  tp_heap_stats st;
  TT_CHECK(tp_heap_read_stats(h, &st) == 0 && st.objects_live >= built);
  heap_root = NULL;
  tp_heap_collect(h);
  for (int i = 0; i < 8; i++)
    if (weak[i]) {
      TT_CHECK(tp_weak_get(weak[i]) == NULL);
      tp_weak_free(weak[i]);
    }
  TT_CHECK(tp_root_remove(h, &heap_root) == 0);
  tp_heap_detach(h);
  tp_heap_destroy(h);
}

/* ---- sweeper --------------------------------------------------------------- */

static void sweeper_workload(int armed) {
  tp__fault_disarm();
  tp_pool *p = pool_new(); /* created unarmed: the sweeper is under test */
  TT_CHECK(p);
  static void *v[POOL_MAX / POOL_OBJ];
  size_t n = 0;
  while (n < POOL_MAX / POOL_OBJ && (v[n] = tp_pool_get(p)) != NULL) stamp(v[n], n + 1), n++;
  tp_pool_put_bulk(p, v + n / 2, n - n / 2); /* half back: empty slabs */
  size_t keep = n / 2;
  /* Armed again from here on, with the same N (the caller's counters). */
  if (armed) tp__fault_resume();
  for (int i = 0; i < 3; i++) {
    tp_sweep_all();
    tp_sweep_now();
    tp_sweeper_config sc = TP_SWEEPER_CONFIG_DEFAULT;
    sc.interval_ms = 1;
    int rc = tp_sweeper_start(&sc);
    if (rc == 0) {
      tp_sweeper_stop();
    } else {
      TT_CHECK(rc == -EAGAIN && errno == EAGAIN);
      TT_CHECK(!tp_sweeper_running());
    }
  }
  tp__fault_disarm();
  for (size_t i = 0; i < keep; i++) TT_CHECK(stamp_of(v[i]) == i + 1);
  tp_pool_stats st;
  TT_CHECK(tp_pool_read_stats(p, &st) == 0 && st.in_use == keep);
  tp_pool_put_bulk(p, v, keep);
  TT_CHECK(pool_fill_count(p) == n);
  TT_CHECK(tp_sweeper_start(NULL) == 0 && tp_sweeper_running());
  tp_sweeper_stop();
  tp_pool_destroy(p);
}

/* ---- the sweeps ------------------------------------------------------------ */

struct sweep {
  const char *name;
  void (*workload)(int armed);
  unsigned arena_flags;
  void (*warm_up)(void); /* runs once unarmed before the sweep */
  unsigned kinds;         /* of calls that fail; 0: all */
};

/* The one-time setup done, unarmed; the pool's capacity measured. */
static void pool_warm(void) { pool_workload(0); }
static void arena_warm(void) { arena_workload(0); }
static void heap_warm(void) { heap_workload(0); }
/* Pools and epochs set up, but no retire yet: the reclaimer thread's start
 * is under the fault. */
static void epoch_warm(void) {
  tp_pool *p = pool_new();
  TT_CHECK(p);
  void *o = tp_pool_get(p);
  TT_CHECK(o);
  tp_pool_put(p, o);
  tp_pool_destroy(p);
  tp_epoch_enter();
  tp_epoch_leave();
  TT_CHECK(tp_epoch_synchronize() == 0);
}

struct sweep_mode {
  const struct sweep *s;
  int persistent; /* every call from N on fails, else only the Nth */
};

/* Runs the workload for N = 1, 2, ... until a run injects nothing. In a
 * child: the same process recovers after every N. */
static void sweep_warm(void *arg) {
  const struct sweep_mode *m = arg;
  const struct sweep *s = m->s;
  arena_flags = s->arena_flags;
  s->warm_up();
  uint64_t n;
  for (n = 1;; n++) {
    tp__fault_arm(s->kinds ? s->kinds : TP__FAULT_ALL, n, m->persistent ? 0 : 1,
                  TP__FAULT_THIS_THREAD);
    s->workload(1);
    tp__fault_disarm();
    if (tp__fault_injected() == 0) break;
    TT_CHECK(n < 100000);
  }
  printf("%s: %s sweep over %llu call sites\n", s->name,
         m->persistent ? "persistent" : "single", (unsigned long long)(n - 1));
}

static void sweep_test(void **state) {
  for (int persistent = 0; persistent < 2; persistent++) {
    struct sweep_mode m = {*state, persistent};
    assert_true(tt_in_child(sweep_warm, &m, SWEEP_MS));
  }
}

static const struct sweep sweeps[] = {
    {"pool", pool_workload, 0, pool_warm, 0},
    {"arena", arena_workload, 0, arena_warm, 0},
    {"arena_concurrent", arena_workload, TP_ARENA_CONCURRENT, arena_warm, 0},
    {"epoch", epoch_workload, 0, epoch_warm, 0},
    /* Only thread starts fail: the first is the reclaimer's (fault 4). */
    {"epoch_threads", epoch_workload, 0, epoch_warm, TP__FAULT_THREAD},
    {"heap", heap_workload, 0, heap_warm, 0},
    {"sweeper", sweeper_workload, 0, pool_warm, 0},
};

/* Cold: each N in a fresh child of this process, which has not used the
 * library, so the one-time setup (magazine space, per-CPU regions, the
 * reclaimer) is under the fault too. */
static uint64_t cold_n;
static int cold_injected_pipe[2];

static void cold_run(void *arg) {
  const struct sweep *s = arg;
  arena_flags = s->arena_flags;
  tp__fault_arm(s->kinds ? s->kinds : TP__FAULT_ALL, cold_n, 1, TP__FAULT_THIS_THREAD);
  s->workload(1);
  tp__fault_disarm();
  uint64_t inj = tp__fault_injected();
  TT_CHECK(write(cold_injected_pipe[1], &inj, sizeof inj) == sizeof inj);
}

static void cold_test(void **state) {
  const struct sweep *s = *state;
  assert_int_equal(pipe(cold_injected_pipe), 0);
  for (cold_n = 1;; cold_n++) {
    if (!tt_in_child(cold_run, *state, SWEEP_MS))
      fail_msg("%s: cold run with call %llu failing", s->name, (unsigned long long)cold_n);
    uint64_t inj = 0;
    assert_int_equal(read(cold_injected_pipe[0], &inj, sizeof inj), sizeof inj);
    if (!inj) break;
    assert_true(cold_n < 10000);
  }
  printf("%s: cold sweep over %llu call sites\n", s->name, (unsigned long long)(cold_n - 1));
  close(cold_injected_pipe[0]);
  close(cold_injected_pipe[1]);
}

#define SWEEP(fn, i, name) {#fn "_" name, fn, NULL, NULL, (void *)&sweeps[i]}

int main(void) {
#ifdef FAULT_COLD
  (void)sweep_test;
  const struct CMUnitTest tests[] = {
      SWEEP(cold_test, 0, "pool"), SWEEP(cold_test, 1, "arena"), SWEEP(cold_test, 2, "arena_concurrent"),
      SWEEP(cold_test, 3, "epoch"), SWEEP(cold_test, 4, "epoch_threads"),
      SWEEP(cold_test, 5, "heap"), SWEEP(cold_test, 6, "sweeper"),
  };
#else
  (void)cold_test;
  const struct CMUnitTest tests[] = {
      SWEEP(sweep_test, 0, "pool"), SWEEP(sweep_test, 1, "arena"), SWEEP(sweep_test, 2, "arena_concurrent"),
      SWEEP(sweep_test, 3, "epoch"), SWEEP(sweep_test, 4, "epoch_threads"),
      SWEEP(sweep_test, 5, "heap"), SWEEP(sweep_test, 6, "sweeper"),
  };
#endif
  return cmocka_run_group_tests(tests, NULL, NULL);
}
