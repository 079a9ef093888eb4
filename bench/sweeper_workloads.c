/*
 * bench/sweeper_workloads.c — background reclaimers (issue 6), for every
 * allocator with a pool interface (the driver runs every case in a fresh
 * process, so the RSS is that case's alone).
 *
 *   burst          4 threads take 1 M 64-byte objects each (256 MiB in
 *                  all, every object written: it links the thread's list),
 *                  then all are put back; the process then idles while the
 *                  RSS is sampled every 100 ms for 2.5 s. An allocator with
 *                  a background reclaimer (tidepool: tp_sweeper_start(NULL),
 *                  the defaults) has it started first.
 *   pair_sweep1ms  the pool group's pair with the reclaimer waking every
 *                  1 ms, against the same pairs without it (allocators with
 *                  a reclaimer only)
 *
 * The burst's threads stay alive (parked) while the RSS is sampled, as a
 * server's thread pool would.
 *
 * Burst counters: base_MiB (before), peak_MiB (all objects out),
 * rss_<ms>_MiB (samples, ms after the last put), back_ms (first sample at
 * or under base + 10 % of peak; -1 if none), get_ns and put_ns (wall time
 * of each phase per object). ns_per_op: both phases, per object.
 */
#include "bench/alloc.h"

#if BENCH_HAVE_POOL

#include <pthread.h>
#include <stdio.h>

#define BURST_THREADS 4
#define BURST_OBJECTS (4u << 20)
#define BURST_OBJ_SIZE 64
#define SAMPLE_MS 100
#define SAMPLES 26 /* 0 .. 2500 ms */

static const bench_pool_ops *const P = &bench_pool_impl;

typedef struct burst_state {
  void *ctx;
  pthread_barrier_t phase;
  int failed;
  size_t base, peak;
  uint64_t t_start, t_got, t_put; /* phase boundaries (ns) */
  bench_out *out;
} burst_state;

static double mib(size_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

/* Thread 0, after the last put: samples the RSS while every thread of the
 * burst stays alive and idle (parked in a barrier), like a server's
 * thread pool after a spike. */
static void burst_sample(burst_state *s) {
  bench_out *out = s->out;
  double threshold = mib(s->base) + 0.10 * mib(s->peak), back_ms = -1;
  for (int k = 0; k < SAMPLES; k++) {
    bench_sleep_until_ns(s->t_put + (uint64_t)k * SAMPLE_MS * 1000000u);
    double rss = mib(bench_rss_bytes());
    char name[BENCH_COUNTER_NAME];
    snprintf(name, sizeof name, "rss_%04d_MiB", k * SAMPLE_MS);
    bench_counter(out, name, rss);
    if (back_ms < 0 && rss <= threshold) back_ms = k * SAMPLE_MS;
  }
  bench_counter(out, "back_ms", back_ms);
}

static void burst_body(void *arg, int idx) {
  burst_state *s = arg;
  void *list = NULL;
  if (idx == 0) s->t_start = bench_now_ns();
  for (unsigned i = 0; i < BURST_OBJECTS / BURST_THREADS; i++) {
    void **o = P->get(s->ctx);
    if (BENCH_UNLIKELY(!o)) {
      __atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
      break;
    }
    *o = list; /* writes the object: its page is resident */
    list = o;
  }
  /* Everyone holds everything: the peak. */
  pthread_barrier_wait(&s->phase);
  if (idx == 0) {
    s->t_got = bench_now_ns();
    s->peak = bench_rss_bytes();
  }
  pthread_barrier_wait(&s->phase);
  while (list) {
    void *next = *(void **)list;
    P->put(s->ctx, list);
    list = next;
  }
  pthread_barrier_wait(&s->phase);
  if (idx == 0) {
    s->t_put = bench_now_ns();
    burst_sample(s);
  }
  pthread_barrier_wait(&s->phase);
}

static void run_burst(const bench_case *c, void *state, bench_out *out) {
  (void)c;
  (void)state;
  burst_state s = {.out = out};
  if (P->reclaimer_start && P->reclaimer_start(0) != 0) {
    bench_fail(out, "could not start the reclaimer");
    return;
  }
  s.ctx = P->create(BURST_OBJ_SIZE);
  pthread_barrier_init(&s.phase, NULL, BURST_THREADS);
  s.base = bench_rss_bytes();
  bench_counter(out, "base_MiB", mib(s.base));
  bench_run_threads(BURST_THREADS, NULL, burst_body, &s, out);
  bench_counter(out, "peak_MiB", mib(s.peak));
  /* Wall time of the phases, per object (4 threads on the machine's cores). */
  bench_counter(out, "get_ns", (double)(s.t_got - s.t_start) / BURST_OBJECTS);
  bench_counter(out, "put_ns", (double)(s.t_put - s.t_got) / BURST_OBJECTS);
  out->ns = (double)(s.t_put - s.t_start);
  out->ops = BURST_OBJECTS;
  pthread_barrier_destroy(&s.phase);
  P->destroy(s.ctx);
  if (P->reclaimer_stop) P->reclaimer_stop();
  if (s.failed) bench_fail(out, "get returned NULL");
}

BENCH_CASE(burst, .workload = "burst", .impl = bench_pool_impl.name, .group = "sweeper",
           .unit = "object get+put in a 256 MiB burst (4 threads)", .iterations = 1,
           .run = run_burst)

/* ---- pair with the background reclaimer waking every 1 ms -----------------
 * Slices of pairs alternate with the reclaimer off and on (order ABBA, so
 * drift cancels); ns_per_op is the "on" time, counter off_ns the "off" time
 * of the same run, so their ratio is free of the machine's slow drift. */
#define SWEEP_SLICES 8
#define PAIR_OBJ_SIZE 64 /* as the pool group's pair */

static void *pair_sweep_setup(const bench_case *c) {
  (void)c;
  return P->create(PAIR_OBJ_SIZE); /* the state is the allocator's context */
}

static void pair_sweep_teardown(const bench_case *c, void *ctx) {
  (void)c;
  if (ctx) P->destroy(ctx);
}

static void run_pair_sweep(const bench_case *c, void *ctx, bench_out *out) {
  BENCH_NEED_STATE(ctx, out);
  static const int on_at[SWEEP_SLICES] = {1, 0, 0, 1, 1, 0, 0, 1};
  uint64_t per = c->ops / SWEEP_SLICES, ns[2] = {0, 0};
  for (int k = 0; k < SWEEP_SLICES; k++) {
    int on = on_at[k];
    if (on && P->reclaimer_start(1) != 0) {
      bench_fail(out, "could not start the reclaimer");
      return;
    }
    ns[on] += bench_pair_loop(ctx, per, out);
    if (on) P->reclaimer_stop();
    if (out->error[0]) return;
  }
  uint64_t half = per * SWEEP_SLICES / 2;
  out->ns = (double)ns[1];
  out->ops = (double)half;
  bench_counter(out, "off_ns", (double)ns[0] / (double)half);
}

__attribute__((constructor)) static void register_pair_sweep(void) {
  if (!bench_pool_impl.reclaimer_start) return;
  bench_register(&(const bench_case){
      .workload = "pair_sweep1ms", .impl = bench_pool_impl.name, .group = "sweeper",
      .unit = "pair, reclaimer waking every 1 ms", .ops = 8 * 1000000,
      .setup = pair_sweep_setup, .run = run_pair_sweep, .teardown = pair_sweep_teardown});
}

#endif /* BENCH_HAVE_POOL */
