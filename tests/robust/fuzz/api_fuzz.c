/*
 * API-sequence fuzzing (libFuzzer): each input is a program over pools,
 * arenas, heaps and epochs, one operation per byte (plus argument bytes),
 * run against a model of what the library must do:
 *   pools   create (size, align, max_bytes, ZERO), get, put, get_bulk,
 *           put_bulk, retire, read_stats, destroy; every object held is
 *           distinct, keeps the bytes written into it until put back,
 *           reads zero from a ZERO pool, and in_use is exactly what the
 *           model holds (after a barrier for retires);
 *   arenas  create (plain or concurrent, chunk, max_bytes, keep), alloc,
 *           alloc_aligned, calloc, strdup, on_reset, save/rewind (plain),
 *           reset, destroy; live allocations keep their bytes, calloc reads
 *           zero, alignment holds, cleanups run exactly when the model says
 *           (last in, first out);
 *   heaps   alloc into root slots, link, unlink, collect, weak refs: every
 *           node reachable from a root keeps its id, a weak ref to a node
 *           the model knows is reachable is never cleared;
 *   epochs  retire with a counting callback; a barrier runs all of them;
 *   misuse  a put of a pointer no pool owns, or a rewind to a mark from a
 *           reset, must abort with tidepool's message: run in a forked child
 *           (at most one per input) whose status is checked.
 * A difference from the model is __builtin_trap() (a crash for libFuzzer).
 * Built with ASan + UBSan and TP_DEBUG (invariant checks, poisoning, the
 * lock-order checker) by //tests/robust:api_fuzz; run by api_fuzz_test.
 */
#include <tidepool/arena.h>
#include <tidepool/epoch.h>
#include <tidepool/gc.h>
#include <tidepool/pool.h>
#include <tidepool/sweeper.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(c)                                                                 \
  do {                                                                           \
    if (!(c)) {                                                                  \
      fprintf(stderr, "api_fuzz: model mismatch at %s:%d: %s\n", __FILE__, __LINE__, #c); \
      __builtin_trap();                                                          \
    }                                                                            \
  } while (0)

/* ---- input ----------------------------------------------------------------- */

static const uint8_t *in;
static size_t in_left;

static unsigned byte(void) {
  if (!in_left) return 0;
  in_left--;
  return *in++;
}
static unsigned u16(void) { return byte() | byte() << 8; }

/* ---- model ----------------------------------------------------------------- */

#define NPOOLS 4
#define MAXHELD 256
struct mpool {
  tp_pool *p;
  size_t size;
  int zero, capped;
  void *held[MAXHELD];
  uint8_t fill[MAXHELD];
  size_t n;
};
static struct mpool pools[NPOOLS];
static uint64_t retired_pending_put; /* pool retires not yet known to have run */

#define NARENAS 3
#define MAXALLOC 256
#define MAXMARKS 8
#define MAXCLEAN 32
struct malloc_rec {
  uint8_t *p;
  size_t n;
  uint8_t fill;
};
struct marena {
  tp_arena *a;
  int conc, capped;
  struct malloc_rec rec[MAXALLOC];
  size_t nrec;
  struct {
    tp_arena_mark m;
    size_t nrec, nclean;
  } marks[MAXMARKS];
  size_t nmarks;
  int clean_id[MAXCLEAN]; /* registered cleanups, in order */
  size_t nclean;
};
static struct marena arenas[NARENAS];
static int ran_log[1024];
static size_t nran;

static void cleanup_cb(void *arg) {
  if (nran < sizeof ran_log / sizeof *ran_log) ran_log[nran++] = (int)(intptr_t)arg;
}

/* Checks that cleanups [from, to) of a ran in reverse order, then forgets them. */
static void expect_cleanups(struct marena *m, size_t from, size_t before_nran) {
  size_t k = before_nran;
  for (size_t i = m->nclean; i-- > from;) {
    CHECK(k < nran && ran_log[k] == m->clean_id[i]);
    k++;
  }
  CHECK(k == nran);
  m->nclean = from;
  nran = 0;
}

struct node {
  struct node *next;
  uint64_t id;
};
static const size_t node_offs[] = {offsetof(struct node, next)};
static const tp_type node_type = {.name = "fz", .size = sizeof(struct node),
                                  .ptr_offsets = node_offs, .n_ptr_offsets = 1};
#define NROOTS 8
static tp_heap *heap;
static void *roots[NROOTS];
static uint64_t next_id = 1;
static tp_weak *weak[NROOTS];
static void *weak_target[NROOTS];

static uint64_t epoch_ran, epoch_want;
static void epoch_cb(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  epoch_ran++;
}

static int death_used;

/* A barrier from this (heap-attached) thread: inside a blocking section, as
 * for any wait of an attached thread (a running one would hold up every
 * collection, and the lock-order checker aborts). */
static void pool_destroy(tp_pool *p) { /* may wait for a barrier */
  if (heap) tp_heap_blocking_enter(heap);
  tp_pool_destroy(p);
  if (heap) tp_heap_blocking_leave(heap);
}

static int barrier(void) {
  if (heap) tp_heap_blocking_enter(heap);
  int rc = tp_epoch_barrier();
  if (heap) tp_heap_blocking_leave(heap);
  return rc;
}

/* ---- pools ----------------------------------------------------------------- */

static void pool_check_obj(struct mpool *m, size_t i) {
  const uint8_t *o = m->held[i];
  size_t n = m->size < 64 ? m->size : 64;
  for (size_t k = 0; k < n; k++) CHECK(o[k] == m->fill[i]);
}

static void pool_take(struct mpool *m, void *o) {
  CHECK(o != NULL);
  for (int q = 0; q < NPOOLS; q++)
    for (size_t i = 0; i < pools[q].n; i++) CHECK(pools[q].held[i] != o);
  if (m->zero) {
    size_t n = m->size < 64 ? m->size : 64;
    for (size_t k = 0; k < n; k++) CHECK(((uint8_t *)o)[k] == 0);
  }
  uint8_t f = (uint8_t)(1 + m->n * 7);
  memset(o, f, m->size < 64 ? m->size : 64);
  m->held[m->n] = o;
  m->fill[m->n] = f;
  m->n++;
}

static void *pool_drop(struct mpool *m, size_t i) {
  pool_check_obj(m, i);
  void *o = m->held[i];
  m->held[i] = m->held[m->n - 1];
  m->fill[i] = m->fill[m->n - 1];
  m->n--;
  return o;
}

static void pool_stats_check(struct mpool *m) {
  if (retired_pending_put) {
    CHECK(barrier() == 0);
    retired_pending_put = 0;
  }
  tp_pool_stats st;
  CHECK(tp_pool_read_stats(m->p, &st) == 0);
  CHECK(st.in_use == m->n);
  CHECK(st.obj_size == m->size);
}

static void op_pool(unsigned op) {
  struct mpool *m = &pools[byte() % NPOOLS];
  if (!m->p) {
    static const size_t sizes[] = {1, 8, 24, 64, 100, 256, 1000, 4096, 20000};
    unsigned a = byte();
    m->size = sizes[a % 9];
    m->zero = (a >> 4) & 1;
    m->capped = (a >> 5) & 1;
    tp_pool_config cfg = {.name = "fz", .obj_size = m->size,
                          .align = (a >> 6) == 1 ? 64 : 0,
                          .max_bytes = m->capped ? (size_t)1 << 20 : 0,
                          .flags = m->zero ? TP_POOL_ZERO : 0};
    m->p = tp_pool_create(&cfg);
    CHECK(m->p != NULL);
    m->n = 0;
    return;
  }
  switch (op % 8) {
    case 0:
    case 1: { /* get */
      if (m->n == MAXHELD) break;
      void *o = tp_pool_get(m->p);
      if (!o) {
        CHECK(m->capped && errno == ENOMEM);
        break;
      }
      pool_take(m, o);
      break;
    }
    case 2:
    case 3: /* put */
      if (m->n) tp_pool_put(m->p, pool_drop(m, byte() % m->n));
      break;
    case 4: { /* get_bulk */
      void *v[32];
      size_t want = byte() % 33;
      if (want > MAXHELD - m->n) want = MAXHELD - m->n;
      size_t got = tp_pool_get_bulk(m->p, v, want);
      CHECK(got == want || (m->capped && errno == ENOMEM));
      for (size_t i = 0; i < got; i++) pool_take(m, v[i]);
      break;
    }
    case 5: { /* put_bulk, with NULLs skipped */
      void *v[40]; /* up to 32 objects and a NULL after every fifth */
      size_t k = byte() % 33, n = 0;
      for (size_t i = 0; i < k && m->n; i++) {
        v[n++] = pool_drop(m, byte() % m->n);
        if (i % 5 == 4) v[n++] = NULL;
      }
      tp_pool_put_bulk(m->p, v, n);
      break;
    }
    case 6: /* retire */
      if (m->n) {
        size_t i = byte() % m->n;
        void *o = m->held[i];
        pool_drop(m, i);
        CHECK(tp_pool_retire(m->p, o) == 0);
        retired_pending_put++;
      }
      pool_stats_check(m);
      break;
    default: /* destroy, everything put back first */
      while (m->n) tp_pool_put(m->p, pool_drop(m, 0));
      pool_stats_check(m);
      pool_destroy(m->p);
      m->p = NULL;
      break;
  }
}

/* ---- arenas ---------------------------------------------------------------- */

static void arena_check_all(struct marena *m) {
  for (size_t i = 0; i < m->nrec; i++) {
    const struct malloc_rec *r = &m->rec[i];
    size_t n = r->n < 32 ? r->n : 32;
    for (size_t k = 0; k < n; k++) CHECK(r->p[k] == r->fill);
    CHECK(r->p[r->n - 1] == r->fill);
  }
}

static void arena_record(struct marena *m, void *p, size_t n, int zero) {
  if (!p) {
    CHECK(m->capped && errno == ENOMEM);
    return;
  }
  uint8_t *q = p;
  if (zero)
    for (size_t k = 0; k < n; k++) CHECK(q[k] == 0);
  uint8_t f = (uint8_t)(0x40 + m->nrec);
  memset(q, f, n);
  if (m->nrec < MAXALLOC) m->rec[m->nrec++] = (struct malloc_rec){q, n, f};
}

static void op_arena(unsigned op) {
  struct marena *m = &arenas[byte() % NARENAS];
  if (!m->a) {
    unsigned a = byte();
    m->conc = a & 1;
    m->capped = (a >> 1) & 1;
    tp_arena_config cfg = {.chunk_size = (a >> 2) & 1 ? 8192 : 0,
                           .max_bytes = m->capped ? (size_t)1 << 20 : 0,
                           .keep_bytes = (a >> 3) & 1 ? 65536 : 0,
                           .flags = m->conc ? TP_ARENA_CONCURRENT : 0};
    m->a = tp_arena_create(&cfg);
    CHECK(m->a != NULL);
    m->nrec = m->nmarks = m->nclean = 0;
    return;
  }
  switch (op % 10) {
    case 0:
    case 1: { /* alloc: small mostly, sometimes large */
      unsigned s = u16();
      size_t n = (s & 0xf000) == 0xf000 ? 70000 + (s & 0xfff) * 16 : (s & 0x7ff) + 1;
      if (m->nrec < MAXALLOC) arena_record(m, tp_arena_alloc(m->a, n), n, 0);
      break;
    }
    case 2: { /* aligned */
      size_t align = (size_t)1 << (byte() % 13), n = byte() + 1;
      void *p = tp_arena_alloc_aligned(m->a, n, align);
      if (p) CHECK(((uintptr_t)p & (align - 1)) == 0);
      if (m->nrec < MAXALLOC) arena_record(m, p, n, 0);
      break;
    }
    case 3: { /* calloc */
      size_t n = byte() + 1, k = byte() % 8 + 1;
      if (m->nrec < MAXALLOC) arena_record(m, tp_arena_calloc(m->a, k, n), n * k, 1);
      break;
    }
    case 4: { /* strdup */
      char *s = tp_arena_strdup(m->a, "tidepool-fuzz");
      if (!s) CHECK(m->capped && errno == ENOMEM);
      else CHECK(strcmp(s, "tidepool-fuzz") == 0);
      break;
    }
    case 5: /* on_reset */
      if (m->nclean < MAXCLEAN) {
        int id = (int)byte() + 1;
        int rc = tp_arena_on_reset(m->a, cleanup_cb, (void *)(intptr_t)id);
        if (rc == 0) m->clean_id[m->nclean++] = id;
        else CHECK(m->capped && rc == -ENOMEM);
      }
      break;
    case 6: /* save */
      if (!m->conc && m->nmarks < MAXMARKS) {
        m->marks[m->nmarks].m = tp_arena_save(m->a);
        m->marks[m->nmarks].nrec = m->nrec;
        m->marks[m->nmarks].nclean = m->nclean;
        m->nmarks++;
      }
      break;
    case 7: /* rewind to a valid mark */
      if (!m->conc && m->nmarks) {
        size_t k = byte() % m->nmarks;
        arena_check_all(m);
        size_t before = nran;
        tp_arena_rewind(m->a, m->marks[k].m);
        expect_cleanups(m, m->marks[k].nclean, before);
        m->nrec = m->marks[k].nrec;
        m->nmarks = k + 1; /* later marks are invalid now; this one stays */
      }
      break;
    case 8: { /* reset */
      arena_check_all(m);
      size_t before = nran;
      tp_arena_reset(m->a);
      expect_cleanups(m, 0, before);
      m->nrec = m->nmarks = 0;
      tp_arena_stats st;
      CHECK(tp_arena_read_stats(m->a, &st) == 0 && st.allocated == 0);
      break;
    }
    default: { /* destroy */
      arena_check_all(m);
      size_t before = nran;
      tp_arena_destroy(m->a);
      expect_cleanups(m, 0, before);
      m->a = NULL;
      break;
    }
  }
}

/* ---- heap -------------------------------------------------------------------- */

static void heap_check(void) {
  for (int r = 0; r < NROOTS; r++) {
    size_t k = 0;
    for (struct node *n = roots[r]; n && k < 10000; n = n->next, k++) CHECK(n->id != 0 && n->id < next_id);
  }
}

static int reachable(const void *p) {
  for (int r = 0; r < NROOTS; r++) {
    size_t k = 0;
    for (const struct node *n = roots[r]; n && k < 10000; n = n->next, k++)
      if (n == p) return 1;
  }
  return 0;
}

static void op_heap(unsigned op) {
  if (!heap) {
    tp_heap_config hc = {.trigger_percent = byte() % 2 ? 0 : 100, .gray_stack_entries = 8};
    heap = tp_heap_create(&hc);
    CHECK(heap != NULL);
    CHECK(tp_heap_attach(heap) == 0);
    for (int r = 0; r < NROOTS; r++) {
      roots[r] = NULL;
      CHECK(tp_root_add(heap, &roots[r]) == 0);
    }
    return;
  }
  unsigned r = byte() % NROOTS, s = byte() % NROOTS;
  switch (op % 6) {
    case 0:
    case 1: { /* alloc at the head of chain r */
      struct node *n = tp_heap_alloc(heap, &node_type);
      CHECK(n != NULL && n->next == NULL && n->id == 0);
      n->id = next_id++;
      n->next = roots[r];
      roots[r] = n;
      break;
    }
    case 2: /* link: chain r's head points into chain s (may share, may cycle) */
      if (roots[r]) ((struct node *)roots[r])->next = roots[s];
      break;
    case 3: /* drop a chain */
      roots[r] = NULL;
      break;
    case 4: /* weak ref to chain r's head */
      if (roots[r] && !weak[r]) {
        weak[r] = tp_weak_new(heap, roots[r]);
        CHECK(weak[r] != NULL);
        weak_target[r] = roots[r];
      }
      break;
    default: /* collect */
      tp_heap_collect(heap);
      heap_check();
      for (int w = 0; w < NROOTS; w++) {
        if (!weak[w]) continue;
        void *t = tp_weak_get(weak[w]);
        if (reachable(weak_target[w])) CHECK(t == weak_target[w]);
        else CHECK(t == NULL || t == weak_target[w]);
        if (!t) {
          tp_weak_free(weak[w]);
          weak[w] = NULL;
        }
      }
      break;
  }
}

/* ---- epoch and misuse ------------------------------------------------------- */

static void op_epoch(unsigned op) {
  static char objs[256];
  if (op & 1) {
    CHECK(tp_epoch_retire(&objs[byte()], epoch_cb, NULL) == 0);
    epoch_want++;
  } else {
    CHECK(barrier() == 0);
    CHECK(epoch_ran == epoch_want);
  }
}

/* Runs fn in a child; it must abort with "tidepool:" on stderr. A child
 * that neither aborts nor exits within 5 s is killed (reported). */
static void must_abort(void (*fn)(void *), void *arg) {
  int fds[2];
  CHECK(pipe(fds) == 0);
  fflush(stderr);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    signal(SIGABRT, SIG_DFL); /* not libFuzzer's crash handler */
    dup2(fds[1], 2);
    fn(arg);
    _exit(0);
  }
  close(fds[1]);
  char buf[512];
  ssize_t n = 0, r;
  /* Until EOF; libFuzzer's -timeout SIGALRM interrupts read (EINTR). */
  while (n < (ssize_t)sizeof buf - 1) {
    r = read(fds[0], buf + n, sizeof buf - 1 - (size_t)n);
    if (r > 0) n += r;
    else if (r == 0 || errno != EINTR) break;
  }
  buf[n] = 0;
  close(fds[0]);
  int st = 0;
  for (int i = 0; i < 5000 && waitpid(pid, &st, WNOHANG) == 0; i++) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  if (waitpid(pid, &st, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fprintf(stderr, "api_fuzz: misuse child hung\n");
    __builtin_trap();
  }
  if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT && strstr(buf, "tidepool:")))
    fprintf(stderr, "api_fuzz: misuse not caught: status %d, stderr: %s\n", st, buf);
  CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT && strstr(buf, "tidepool:"));
}

static void put_foreign(void *arg) {
  struct mpool *m = arg;
  static char not_ours[64];
  tp_pool_put(m->p, not_ours + 16);
}

static void rewind_stale(void *arg) {
  struct marena *m = arg;
  tp_arena_mark mk = tp_arena_save(m->a);
  tp_arena_reset(m->a);
  tp_arena_rewind(m->a, mk);
}

static void op_misuse(unsigned op) {
  if (death_used) return;
  if (op & 1) {
    for (int q = 0; q < NPOOLS; q++)
      if (pools[q].p) {
        death_used = 1;
        must_abort(put_foreign, &pools[q]);
        return;
      }
  } else {
    for (int q = 0; q < NARENAS; q++)
      if (arenas[q].a && !arenas[q].conc && arenas[q].nrec) {
        death_used = 1;
        must_abort(rewind_stale, &arenas[q]);
        return;
      }
  }
}

/* ---- one input ---------------------------------------------------------------- */

static void teardown(void) {
  for (int q = 0; q < NPOOLS; q++) {
    struct mpool *m = &pools[q];
    if (!m->p) continue;
    while (m->n) tp_pool_put(m->p, pool_drop(m, 0));
    pool_stats_check(m);
    pool_destroy(m->p);
    m->p = NULL;
  }
  for (int q = 0; q < NARENAS; q++) {
    struct marena *m = &arenas[q];
    if (!m->a) continue;
    arena_check_all(m);
    size_t before = nran;
    tp_arena_destroy(m->a);
    expect_cleanups(m, 0, before);
    m->a = NULL;
  }
  if (heap) {
    tp_heap_collect(heap);
    heap_check();
    for (int w = 0; w < NROOTS; w++)
      if (weak[w]) {
        tp_weak_free(weak[w]);
        weak[w] = NULL;
      }
    for (int r = 0; r < NROOTS; r++) CHECK(tp_root_remove(heap, &roots[r]) == 0);
    tp_heap_detach(heap);
    tp_heap_destroy(heap);
    heap = NULL;
  }
  CHECK(barrier() == 0);
  CHECK(epoch_ran == epoch_want);
  retired_pending_put = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  in = data;
  in_left = size;
  death_used = 0;
  for (int steps = 0; in_left && steps < 4000; steps++) {
    unsigned op = byte();
    switch (op >> 5) {
      case 0:
      case 1:
      case 2: op_pool(op); break;
      case 3:
      case 4: op_arena(op); break;
      case 5: op_heap(op); break;
      case 6: op_epoch(op); break;
      default:
        if ((op & 0x1f) == 0x1f) op_misuse(op >> 1);
        else if (op & 1) tp_sweep_all();
        else op_pool(op);
        break;
    }
  }
  teardown();
  return 0;
}
