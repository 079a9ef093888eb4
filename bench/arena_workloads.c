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
 *   arena_conc_tN  N threads allocate 32 B from one concurrent arena,
 *                  16384 each, then it is reset (implementations with
 *                  create_concurrent only)
 */
#include "bench/alloc.h"

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
  uint64_t per_thread;
  int failed;
  bench_spin_barrier barrier;
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

/* Rounds: every thread allocates CONC_ROUND x 32 B (touched), all meet,
 * thread 0 resets, all meet again. The working set (128 KiB a thread)
 * stays in cache, as in arena32, so this measures the allocator's scaling
 * rather than the machine's memory bandwidth. */
#define CONC_ROUND 16384

static void conc_body(void *arg, int idx) {
  arena_state *s = arg;
  void *a = s->arena[0];
  for (uint64_t r = 0; r < s->per_thread / CONC_ROUND; r++) {
    for (unsigned i = 0; i < CONC_ROUND; i++) {
      void *p = A->alloc(a, 32);
      if (BENCH_UNLIKELY(!p)) {
        __atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
        break;
      }
      bench_touch(p, i + (uint64_t)idx);
    }
    bench_spin_barrier_wait(&s->barrier);
    if (idx == 0) A->reset(a);
    bench_spin_barrier_wait(&s->barrier);
  }
}

static void *conc_setup(const bench_case *c) {
  (void)c;
  return arena_state_new(1, A->create_concurrent);
}

static void run_conc(const bench_case *c, void *state, bench_out *out) {
  arena_state *s = state;
  BENCH_NEED_STATE(s, out);
  s->per_thread = c->ops / (uint64_t)c->param / CONC_ROUND * CONC_ROUND;
  s->failed = 0;
  s->barrier = (bench_spin_barrier){.n = (unsigned)c->param};
  out->ns = bench_run_threads((int)c->param, NULL, conc_body, s, out);
  out->ops = (double)(s->per_thread * (uint64_t)c->param);
  if (s->failed) bench_fail(out, "allocation returned NULL");
}

__attribute__((constructor)) static void register_conc(void) {
  if (!A->create_concurrent) return;
  static const long threads[] = {1, 2};
  static const char *const names[] = {"arena_conc_t1", "arena_conc_t2"};
  static const char *const units[] = {
      "32 B allocation, concurrent arena, 1 thread (reset every 16384)",
      "32 B allocation, concurrent arena, 2 threads (reset every 2x16384), aggregate"};
  for (int i = 0; i < 2; i++)
    bench_register(&(const bench_case){.workload = names[i], .impl = A->name, .group = "arena",
                                       .unit = units[i], .throughput = 1, .ops = 400000,
                                       .param = threads[i], .setup = conc_setup,
                                       .run = run_conc, .teardown = arena_teardown});
}

#endif /* BENCH_HAVE_ARENA */
