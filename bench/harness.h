/*
 * bench/harness.h — helpers every workload uses: clocks, defeating
 * dead-code elimination, a fast PRNG, running N threads with a common
 * start, RSS, and a latency histogram.
 */
#ifndef TP_BENCH_HARNESS_H
#define TP_BENCH_HARNESS_H

#include "bench/workloads.h"

#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define BENCH_INLINE static inline __attribute__((always_inline))
#define BENCH_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* In a run(): fails it when setup() returned NULL. */
#define BENCH_NEED_STATE(state, out)           \
  do {                                         \
    if (!(state)) {                            \
      bench_fail(out, "setup failed");         \
      return;                                  \
    }                                          \
  } while (0)

/* Monotonic clock in ns (vDSO, ~20 ns). */
BENCH_INLINE uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Uses an object the way a program would: writes one byte of it. The
 * volatile store keeps the compiler from eliding an alloc/free pair. */
BENCH_INLINE void bench_touch(void *p, uint64_t v) {
  *(volatile unsigned char *)p = (unsigned char)v;
}

/* Reads one byte of an object (for consumers), folded into a sink. */
BENCH_INLINE uint64_t bench_peek(const void *p) {
  return *(const volatile unsigned char *)p;
}

/* Makes the compiler believe `v` is used. */
BENCH_INLINE void bench_keep(uint64_t v) { __asm__ volatile("" : : "r"(v) : "memory"); }

/* xorshift64*: a few cycles per number. */
BENCH_INLINE uint64_t bench_rand(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

BENCH_INLINE void bench_pause(void) { __builtin_ia32_pause(); }

/* One step of a polite spin (*spins counts them, start at 0): a pause, and
 * every 256th step a yield (the VM may have descheduled the thread that
 * is waited for). */
BENCH_INLINE void bench_spin_wait(unsigned *spins) {
  if ((++*spins & 255) == 0) sched_yield();
  else bench_pause();
}

/* Runs body(arg, i) on n threads (i = 0..n-1). init(arg, i), if given,
 * runs first on each thread and is not timed. Returns the span in ns from
 * the first thread's start to the last thread's end (all threads start
 * together after a barrier). Returns 0 and sets *err when out of memory;
 * a thread that cannot be created aborts the worker (the threads already
 * started wait at the barrier for it), which the driver reports as a failed
 * case. */
double bench_run_threads(int n, void (*init)(void *arg, int i), void (*body)(void *arg, int i),
                         void *arg, bench_out *err);

/* A barrier for threads that each have a core (spins, yields now and then):
 * ~100 ns instead of a futex round trip. Initialize with {.n = threads}. */
typedef struct bench_spin_barrier {
  unsigned n;
  _Alignas(64) unsigned arrived;
  unsigned generation;
} bench_spin_barrier;
void bench_spin_barrier_wait(bench_spin_barrier *b);

/* The process's resident set size in bytes (from /proc/self/statm). */
size_t bench_rss_bytes(void);

/* Sleeps until the monotonic clock reads `ns`. */
void bench_sleep_until_ns(uint64_t ns);

/* Latency histogram: 1 us buckets up to BENCH_HIST_US, then one overflow
 * bucket. Adding is thread-safe (relaxed atomic increments). */
#define BENCH_HIST_US 65536
typedef struct bench_hist {
  uint64_t count, max_ns;
  uint32_t bucket[BENCH_HIST_US + 1];
} bench_hist;

bench_hist *bench_hist_new(void); /* zeroed, or NULL */
void bench_hist_free(bench_hist *h);
void bench_hist_add(bench_hist *h, uint64_t ns);
/* The q-quantile (0 < q < 1) in microseconds (upper bucket edge). */
double bench_hist_quantile_us(const bench_hist *h, double q);

/* A distribution as counters, for the plots of //bench (bench/plots.py):
 * one counter "<prefix>_PPPP<suffix>" per point of bench_cdf_permille
 * (PPPP: the quantile in permille), holding quantile(q, arg). */
#define BENCH_CDF_POINTS 14
extern const unsigned bench_cdf_permille[BENCH_CDF_POINTS];
void bench_counter_cdf(bench_out *out, const char *prefix, const char *suffix,
                       double (*quantile)(double q, const void *arg), const void *arg);
/* quantile() of a latency histogram (arg: const bench_hist *), in us. */
double bench_hist_quantile_fn(double q, const void *hist);
/* quantile() of an ascending array (arg: const bench_sorted *). */
typedef struct bench_sorted {
  const double *v;
  size_t n;
} bench_sorted;
double bench_sorted_quantile_fn(double q, const void *sorted);

/* Allocator-neutral memory for harness bookkeeping (mmap'd, zeroed). */
void *bench_map(size_t bytes);
void bench_unmap(void *p, size_t bytes);

#endif /* TP_BENCH_HARNESS_H */
