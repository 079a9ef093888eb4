/*
 * bench/arena_workloads.c — region allocator workloads (issue 5), written
 * once against bench_arena_ops: tp_arena (tidepool worker), malloc +
 * free-all (glibc worker), talloc, APR pools.
 *
 *   arena32        1000 allocations of 32 B (each touched), then reset;
 *                  ns per allocation, the reset included (amortized)
 *   request        100 allocations of mixed sizes (8 B .. 4 KiB, the same
 *                  sequence for everyone; each touched), then reset;
 *                  ns per request
 *   arena_reset    reset of an arena holding 56 x 4 KiB (4 tp chunks of
 *                  64 KiB), filled untimed, the reset timed alone
 *   arena_reset_x64  the same for 64 such arenas reset back to back
 *                  (many requests ending together)
 *   arena_conc_tN  N threads allocate 32 B from one concurrent arena for
 *                  as long as thread 0 takes to make 16384 allocations,
 *                  then it is reset; aggregate allocations per second
 *                  (implementations with create_concurrent only)
 *   arena_conc_scaling  the same 1- and 2-thread rounds in interleaved
 *                  slices of one process, with a control that has no
 *                  allocator in it; counters: the ratios (see there)
 */
#include "bench/alloc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if BENCH_HAVE_ARENA

#define ALLOCS_PER_RESET 1000
#define REQUEST_ALLOCS 100
#define RESET_ARENAS 64
#define RESET_ALLOCS 56
#define RESET_ALLOC_SIZE 4096

static const bench_arena_ops *const A = &bench_arena_impl;

typedef struct arena_state {
  void *arena[RESET_ARENAS]; /* [0] only, except arena_reset_x64 */
  uint32_t sizes[REQUEST_ALLOCS];
} arena_state;

static void arena_teardown(const bench_case *c, void *state) {
  (void)c;
  arena_state *s = state;
  if (!s) return;
  for (int i = 0; i < RESET_ARENAS; i++)
    if (s->arena[i]) A->destroy(s->arena[i]);
  bench_unmap(s, sizeof *s);
}

/* State with `n` arenas made by `create`; NULL if any fails. */
static arena_state *arena_state_new(int n, void *(*create)(void)) {
  arena_state *s = bench_map(sizeof *s);
  if (!s) return NULL;
  for (int i = 0; i < n; i++)
    if (!(s->arena[i] = create())) {
      arena_teardown(NULL, s);
      return NULL;
    }
  /* The request mix: 70 % 8..64 B, 25 % 65..512 B, 5 % 513..4096 B. */
  uint64_t seed = 42;
  for (int i = 0; i < REQUEST_ALLOCS; i++) {
    uint64_t r = bench_rand(&seed), pick = r % 100, v = r >> 32;
    s->sizes[i] = (uint32_t)(pick < 70 ? 8 + v % 57 : pick < 95 ? 65 + v % 448 : 513 + v % 3584);
  }
  return s;
}

static void *arena_setup(const bench_case *c) {
  (void)c;
  return arena_state_new(1, A->create);
}


/* Allocates, touches the first byte; fails the run on NULL. */
#define ALLOC_TOUCH(a, size, v, out)                   \
  do {                                                 \
    void *p_ = A->alloc((a), (size));                  \
    if (BENCH_UNLIKELY(!p_)) {                         \
      bench_fail(out, "allocation returned NULL");     \
      return;                                          \
    }                                                  \
    bench_touch(p_, (v));                              \
  } while (0)

/* ---- arena32 ---------------------------------------------------------------- */

static void run_arena32(const bench_case *c, void *state, bench_out *out) {
  arena_state *s = state;
  BENCH_NEED_STATE(s, out);
  void *a = s->arena[0];
  uint64_t rounds = c->ops / ALLOCS_PER_RESET;
  uint64_t t0 = bench_now_ns();
  for (uint64_t r = 0; r < rounds; r++) {
    for (unsigned i = 0; i < ALLOCS_PER_RESET; i++) ALLOC_TOUCH(a, 32, i, out);
    A->reset(a);
  }
  out->ns = (double)(bench_now_ns() - t0);
  out->ops = (double)(rounds * ALLOCS_PER_RESET);
}

BENCH_CASE(arena32, .workload = "arena32", .impl = bench_arena_impl.name, .group = "arena",
           .unit = "32 B allocation (reset every 1000, included)", .ops = 200 * ALLOCS_PER_RESET,
           .setup = arena_setup, .run = run_arena32, .teardown = arena_teardown)

/* ---- request ------------------------------------------------------------------ */

static void run_request(const bench_case *c, void *state, bench_out *out) {
  arena_state *s = state;
  BENCH_NEED_STATE(s, out);
  void *a = s->arena[0];
  uint64_t t0 = bench_now_ns();
  for (uint64_t r = 0; r < c->ops; r++) {
    for (unsigned i = 0; i < REQUEST_ALLOCS; i++) ALLOC_TOUCH(a, s->sizes[i], r, out);
    A->reset(a);
  }
  out->ns = (double)(bench_now_ns() - t0);
  out->ops = (double)c->ops;
}

BENCH_CASE(request, .workload = "request", .impl = bench_arena_impl.name, .group = "arena",
           .unit = "request: 100 mixed-size allocations + reset", .ops = 2000,
           .setup = arena_setup, .run = run_request, .teardown = arena_teardown)

/* ---- reset of a 4-chunk arena ----------------------------------------------------- */

/* Fills arena k with RESET_ALLOCS x 4 KiB, each touched (returns from the
 * run on failure). */
#define FILL_FOR_RESET(s, k, out)                                   \
  do {                                                              \
    for (unsigned i_ = 0; i_ < RESET_ALLOCS; i_++)                  \
      ALLOC_TOUCH((s)->arena[k], RESET_ALLOC_SIZE, i_, out);        \
  } while (0)

/* One arena, filled untimed, then one reset timed alone: what a server
 * does between two requests. Each reset is bracketed by clock reads; an
 * empty bracket right after it measures the clock's own cost, which is
 * subtracted (counter timer_ns). */
static void run_arena_reset(const bench_case *c, void *state, bench_out *out) {
  arena_state *s = state;
  BENCH_NEED_STATE(s, out);
  uint64_t spent = 0, timer = 0;
  for (uint64_t r = 0; r < c->ops; r++) {
    FILL_FOR_RESET(s, 0, out);
    uint64_t t0 = bench_now_ns();
    A->reset(s->arena[0]);
    uint64_t t1 = bench_now_ns();
    uint64_t t2 = bench_now_ns();
    spent += t1 - t0;
    timer += t2 - t1;
  }
  out->ns = spent > timer ? (double)(spent - timer) : 1;
  out->ops = (double)c->ops;
  bench_counter(out, "timer_ns", (double)timer / (double)c->ops);
}

BENCH_CASE(arena_reset, .workload = "arena_reset", .impl = bench_arena_impl.name,
           .group = "arena", .unit = "reset of an arena holding 56 x 4 KiB (4 tp chunks)",
           .ops = 200, .setup = arena_setup, .run = run_arena_reset, .teardown = arena_teardown)

/* 64 arenas filled, then reset back to back (many requests ending at once). */
static void *reset_x64_setup(const bench_case *c) {
  (void)c;
  return arena_state_new(RESET_ARENAS, A->create);
}

static void run_arena_reset_x64(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  arena_state *s = state;
  BENCH_NEED_STATE(s, out);
  for (int k = 0; k < RESET_ARENAS; k++) FILL_FOR_RESET(s, k, out);
  uint64_t t0 = bench_now_ns();
  for (int k = 0; k < RESET_ARENAS; k++) A->reset(s->arena[k]);
  out->ns = (double)(bench_now_ns() - t0);
  out->ops = RESET_ARENAS;
}

BENCH_CASE(arena_reset_x64, .workload = "arena_reset_x64", .impl = bench_arena_impl.name,
           .group = "arena", .unit = "reset, 64 arenas of 56 x 4 KiB reset back to back",
           .iterations = 200, .setup = reset_x64_setup, .run = run_arena_reset_x64,
           .teardown = arena_teardown)

/* ---- concurrent allocation ----------------------------------------------------------- */

/*
 * Rounds. Thread 0 paces: it makes CONC_ROUND allocations of 32 B (touched)
 * and ends the round; the other thread allocates until it sees the end, in
 * steps of CONC_STEP. All meet, thread 0 resets, all meet again. The
 * result is aggregate throughput: every allocation made counts, over the
 * span from the first thread's start to the last one's end.
 *
 * Why paced rather than a fixed share per thread: with fixed shares each
 * round lasts as long as the slower thread, so on a shared VM, where the
 * host now and then halves one vCPU's speed, a round measured the slowed
 * vCPU twice instead of the allocator once. Throughput counts what both
 * threads did in the time they had.
 *
 * A round's working set is CONC_ROUND x 32 B = 512 KiB per thread, inside a
 * core's L2 on the machines this ran on (1 MiB), as arena32 stays in cache:
 * this measures the allocator's scaling rather than memory bandwidth.
 */
#define CONC_ROUND 16384
#define CONC_STEP 64

/* One set of concurrent rounds: an allocator's context (the concurrent
 * arena, or the control's ceil_ctl) and what its threads share. */
typedef struct conc_state {
  void *ctx;
  uint64_t rounds;
  int failed;
  bench_spin_barrier barrier;
  _Alignas(128) uint64_t round_over; /* rounds thread 0 has finished */
  struct {
    _Alignas(128) uint64_t n; /* a line pair each */
  } made[2];                  /* allocations per thread */
} conc_state;

/* Thread 0 (or the caller before the threads start) sets up rounds for
 * `threads` threads. */
static void conc_prepare(conc_state *s, uint64_t rounds, int threads) {
  s->rounds = rounds;
  s->round_over = 0;
  s->made[0].n = s->made[1].n = 0;
  s->barrier = (bench_spin_barrier){.n = (unsigned)threads};
}

/* One thread's part of the rounds, for any allocator: always inlined with
 * constant alloc and reset, so each caller gets its own loop with the
 * allocator's inline fast path in it. */
static inline __attribute__((always_inline)) bool conc_alloc_n(conc_state *s, void *a,
                                                               void *(*alloc)(void *, size_t),
                                                               unsigned n, uint64_t tag) {
  for (unsigned i = 0; i < n; i++) {
    void *p = alloc(a, 32);
    if (BENCH_UNLIKELY(!p)) {
      __atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
      return false;
    }
    bench_touch(p, i + tag);
  }
  return true;
}

/* Returns the allocations this thread made. */
static inline __attribute__((always_inline)) uint64_t conc_rounds(conc_state *s, int idx,
                                                                  void *(*alloc)(void *, size_t),
                                                                  void (*reset)(void *)) {
  void *a = s->ctx;
  uint64_t made = 0;
  for (uint64_t r = 0; r < s->rounds; r++) {
    if (idx == 0) {
      if (conc_alloc_n(s, a, alloc, CONC_ROUND, 0)) made += CONC_ROUND;
      /* release: nothing to publish but the flag; pairs with the acquire */
      __atomic_store_n(&s->round_over, r + 1, __ATOMIC_RELEASE);
    } else {
      while (__atomic_load_n(&s->round_over, __ATOMIC_ACQUIRE) <= r &&
             conc_alloc_n(s, a, alloc, CONC_STEP, (uint64_t)idx))
        made += CONC_STEP;
    }
    bench_spin_barrier_wait(&s->barrier);
    if (idx == 0) reset(a);
    bench_spin_barrier_wait(&s->barrier);
  }
  return made;
}

static void conc_body(void *arg, int idx) {
  conc_state *s = arg;
  s->made[idx].n = conc_rounds(s, idx, A->alloc, A->reset);
}

static void conc_teardown(const bench_case *c, void *state) {
  (void)c;
  conc_state *s = state;
  if (!s) return;
  if (s->ctx) A->destroy(s->ctx);
  bench_unmap(s, sizeof *s);
}

static void *conc_setup(const bench_case *c) {
  conc_state *s = bench_map(sizeof *s);
  if (s && !(s->ctx = A->create_concurrent())) {
    conc_teardown(c, s);
    return NULL;
  }
  return s;
}

static void run_conc(const bench_case *c, void *state, bench_out *out) {
  conc_state *s = state;
  BENCH_NEED_STATE(s, out);
  if (c->param < 1 || c->param > 2) {
    bench_fail(out, "1 or 2 threads");
    return;
  }
  conc_prepare(s, c->ops / (uint64_t)c->param / CONC_ROUND, (int)c->param);
  s->failed = 0;
  out->ns = bench_run_threads((int)c->param, NULL, conc_body, s, out);
  out->ops = (double)(s->made[0].n + s->made[1].n);
  if (s->failed) bench_fail(out, "allocation returned NULL");
}

/*
 * The control for arena_conc_scaling: the same rounds with no allocator in
 * them. Each thread bumps a pointer of its own (on its own page, loaded and
 * stored in memory on every call, as an allocator's must be) through a
 * buffer of its own, and reset rewinds them. Its 2-thread / 1-thread ratio
 * is what the machine gives this loop shape at that moment: on a shared VM
 * it swings (two vCPUs are not always two idle cores).
 */
#define CEIL_BUF ((size_t)8 << 20)
typedef struct ceil_thread {
  char *ptr, *end, *base;
  char pad[4096 - 3 * sizeof(char *)];
} ceil_thread;
typedef struct ceil_ctl {
  ceil_thread t[2];
} ceil_ctl;
static __thread int ceil_idx;

static void *ceil_alloc(void *ctl, size_t n) {
  ceil_thread *t = &((ceil_ctl *)ctl)->t[ceil_idx];
  char *p = __atomic_load_n(&t->ptr, __ATOMIC_RELAXED);
  if (BENCH_UNLIKELY(n > (size_t)(t->end - p))) p = t->base; /* wrap: reuse the buffer */
  __atomic_store_n(&t->ptr, p + n, __ATOMIC_RELAXED);
  return p;
}
static void ceil_reset(void *ctl) {
  ceil_ctl *c = ctl;
  for (int i = 0; i < 2; i++) __atomic_store_n(&c->t[i].ptr, c->t[i].base, __ATOMIC_RELAXED);
}
static void ceil_init(void *arg, int idx) {
  (void)arg;
  ceil_idx = idx;
}
static void ceil_free(ceil_ctl *ctl) {
  if (!ctl) return;
  for (int i = 0; i < 2; i++)
    if (ctl->t[i].base) bench_unmap(ctl->t[i].base, CEIL_BUF);
  bench_unmap(ctl, sizeof *ctl);
}
static ceil_ctl *ceil_new(void) {
  ceil_ctl *ctl = bench_map(sizeof *ctl);
  if (!ctl) return NULL;
  for (int i = 0; i < 2; i++) {
    char *b = bench_map(CEIL_BUF);
    if (!b) {
      ceil_free(ctl);
      return NULL;
    }
    memset(b, 0, CEIL_BUF); /* resident before the clock starts, as warm chunks are */
    ctl->t[i] = (ceil_thread){.ptr = b, .end = b + CEIL_BUF, .base = b};
  }
  return ctl;
}

/* ---- scaling, interleaved: arena_conc_scaling ---------------------------------
 * The scaling target read in one process, paired and interleaved: slices of
 * ROUNDS_PER_SLICE rounds run in the order tp 1 thread, tp 2 threads,
 * control 1 thread, control 2 threads, reversed every other group (ABBA,
 * so drift cancels), SCALING_GROUPS groups. Each group gives one ratio per
 * allocator (2-thread throughput / 1-thread throughput from adjacent
 * slices); the counters are their medians. Compared with arena_conc_t1/t2,
 * which are separate processes, this removes what changes between
 * processes (where the threads land, how busy the host is) from the
 * ratio, and the control shows what the machine gave the same loop with no
 * allocator in it at the same moments. A thread not in a slice sleeps in a
 * futex barrier, so 1-thread slices run with the other vCPU idle. */
#define SCALING_GROUPS 31 /* odd: the median is one group's */
#define ROUNDS_PER_SLICE 32

typedef struct scaling_state {
  conc_state tp, ctl; /* the arena and the control, each with its rounds */
  pthread_barrier_t slice; /* both threads, sleeping, around every slice */
  uint64_t ns[4][SCALING_GROUPS], made[4][SCALING_GROUPS];
} scaling_state;

static void scaling_teardown(const bench_case *c, void *state) {
  (void)c;
  scaling_state *s = state;
  if (!s) return;
  if (s->tp.ctx) A->destroy(s->tp.ctx);
  ceil_free(s->ctl.ctx);
  pthread_barrier_destroy(&s->slice);
  bench_unmap(s, sizeof *s);
}

static void *scaling_setup(const bench_case *c) {
  scaling_state *s = bench_map(sizeof *s);
  if (!s) return NULL;
  pthread_barrier_init(&s->slice, NULL, 2);
  if (!(s->ctl.ctx = ceil_new()) || !(s->tp.ctx = A->create_concurrent())) {
    scaling_teardown(c, s);
    return NULL;
  }
  return s;
}

/* Slice j of group k: bit 0 = two threads, bit 1 = the control. */
static int scaling_kind(int k, int j) { return k & 1 ? 3 - j : j; }

static void scaling_body(void *arg, int idx) {
  scaling_state *s = arg;
  for (int k = 0; k < SCALING_GROUPS; k++) {
    for (int j = 0; j < 4; j++) {
      int kind = scaling_kind(k, j), n = 1 + (kind & 1);
      conc_state *a = kind & 2 ? &s->ctl : &s->tp;
      if (idx == 0) conc_prepare(a, ROUNDS_PER_SLICE, n);
      pthread_barrier_wait(&s->slice); /* orders thread 0's setup before the slice */
      if (idx < n) {
        bench_spin_barrier_wait(&a->barrier); /* the clock starts with all running */
        uint64_t t0 = bench_now_ns();
        uint64_t made = kind & 2 ? conc_rounds(a, idx, ceil_alloc, ceil_reset)
                                 : conc_rounds(a, idx, A->alloc, A->reset);
        /* The last round ended in a barrier: both threads are done. */
        if (idx == 0) s->ns[kind][k] = bench_now_ns() - t0;
        a->made[idx].n = made;
      }
      pthread_barrier_wait(&s->slice); /* orders thread 1's count before the read */
      if (idx == 0) s->made[kind][k] = a->made[0].n + (n == 2 ? a->made[1].n : 0);
    }
  }
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

static void run_scaling(const bench_case *c, void *state, bench_out *out) {
  scaling_state *s = state;
  BENCH_NEED_STATE(s, out);
  (void)c;
  s->tp.failed = s->ctl.failed = 0;
  bench_run_threads(2, ceil_init, scaling_body, s, out);
  if (s->tp.failed || s->ctl.failed) {
    bench_fail(out, "allocation returned NULL");
    return;
  }
  /* ns per allocation of each slice, then the per-group ratios. */
  /* ratio[0]: tp's, [1]: the control's, [2]: tp's over the control's */
  double ratio[3][SCALING_GROUPS];
  uint64_t ns[4] = {0}, made[4] = {0};
  for (int k = 0; k < SCALING_GROUPS; k++) {
    for (int ctl = 0; ctl < 2; ctl++) {
      double one = (double)s->ns[2 * ctl][k] / (double)s->made[2 * ctl][k];
      double two = (double)s->ns[2 * ctl + 1][k] / (double)s->made[2 * ctl + 1][k];
      ratio[ctl][k] = one / two;
    }
    ratio[2][k] = ratio[0][k] / ratio[1][k];
    for (int kind = 0; kind < 4; kind++) ns[kind] += s->ns[kind][k], made[kind] += s->made[kind][k];
  }
  for (int i = 0; i < 3; i++) qsort(ratio[i], SCALING_GROUPS, sizeof(double), cmp_double);
  out->ns = (double)ns[1]; /* ns_per_op: tp, 2 threads, aggregate */
  out->ops = (double)made[1];
  bench_counter(out, "ratio", ratio[0][SCALING_GROUPS / 2]);
  bench_counter(out, "ratio_p25", ratio[0][SCALING_GROUPS / 4]);
  bench_counter(out, "ratio_p75", ratio[0][3 * SCALING_GROUPS / 4]);
  bench_counter(out, "control_ratio", ratio[1][SCALING_GROUPS / 2]);
  bench_counter(out, "vs_control", ratio[2][SCALING_GROUPS / 2]);
  bench_counter(out, "t1_ns", (double)ns[0] / (double)made[0]);
  bench_counter(out, "control_t1_ns", (double)ns[2] / (double)made[2]);
  bench_counter(out, "control_t2_ns", (double)ns[3] / (double)made[3]);
}

__attribute__((constructor)) static void register_conc(void) {
  if (!A->create_concurrent) return;
  static const long threads[] = {1, 2};
  static const char *const names[] = {"arena_conc_t1", "arena_conc_t2"};
  static const char *const units[] = {
      "32 B allocation, concurrent arena, 1 thread (reset every 16384)",
      "32 B allocation, concurrent arena, 2 threads (reset when thread 0 has made 16384), aggregate"};
  for (int i = 0; i < 2; i++)
    bench_register(&(const bench_case){.workload = names[i], .impl = A->name, .group = "arena",
                                       .unit = units[i], .throughput = 1, .ops = 4000000,
                                       .param = threads[i], .setup = conc_setup,
                                       .run = run_conc, .teardown = conc_teardown});
  bench_register(&(const bench_case){
      .workload = "arena_conc_scaling", .impl = A->name, .group = "arena",
      .unit = "32 B allocation, 2 threads, aggregate, in slices interleaved with 1 thread and "
              "the control (counters: ratios)",
      .throughput = 1, .iterations = 1, .setup = scaling_setup, .run = run_scaling,
      .teardown = scaling_teardown});
}

#endif /* BENCH_HAVE_ARENA */
