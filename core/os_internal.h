/*
 * Internal: page mapping, clocks and the process-wide memory counters.
 *
 * tidepool's memory comes from tp__os_map (anonymous mmap) so that the
 * process-wide view in tp_read_stats() can be kept with a few relaxed
 * atomic counters instead of a walk over every structure. Two kinds of
 * reservation are mapped otherwise and counted as they are touched: the
 * magazine segments (pool/depot.c, tp__os_reserve) and the read-only zero
 * region (core/percpu.c).
 */
#ifndef TIDEPOOL_OS_INTERNAL_H
#define TIDEPOOL_OS_INTERNAL_H

#include <tidepool/common.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Maps `size` bytes (a multiple of the page size) aligned to `align` (a power
 * of two >= the page size). NULL + errno ENOMEM on failure.
 * Counts `size` in tp__os_mapped. Safe to call concurrently. */
void *tp__os_map(size_t size, size_t align);
/* Reserves `size` bytes aligned to `align` (MAP_NORESERVE: touched pages
 * are committed on demand) without counting them anywhere: for callers that
 * count what they use (the magazine segments). NULL + errno ENOMEM.
 * Safe to call concurrently. */
void *tp__os_reserve(size_t size, size_t align);
/* Unmaps what tp__os_reserve returned (uncounted). */
void tp__os_unreserve(void *p, size_t size);
/* Unmaps what tp__os_map returned. Safe to call concurrently. */
void tp__os_unmap(void *p, size_t size);
/* Gives the pages back to the OS but keeps the range mapped (reads then see
 * zeros). Returns 0 or -errno. Safe to call concurrently. */
int tp__os_decommit(void *p, size_t size);

size_t tp__os_page_size(void);
static inline size_t tp__round_up(size_t n, size_t align) {
  return (n + align - 1) & ~(align - 1);
}
static inline bool tp__is_pow2(size_t n) { return n && !(n & (n - 1)); }
/* Smallest power of two >= n (n <= 2^62). */
static inline size_t tp__pow2_ceil(size_t n) {
  return n <= 1 ? 1 : (size_t)1 << (64 - __builtin_clzll((unsigned long long)n - 1));
}

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t tp__now_ns(void);
/* Any clock in nanoseconds (e.g. CLOCK_THREAD_CPUTIME_ID); 0 if it cannot
 * be read. */
uint64_t tp__clock_ns(clockid_t clock);
/* CLOCK_MONOTONIC_COARSE in milliseconds: a few ns to read, ~4 ms steps;
 * good enough for decay stamps on slow paths. */
uint64_t tp__now_ms_coarse(void);

/* Process-wide counters kept by the whole library (relaxed atomics: each is
 * exact on its own, a set read together is not a snapshot). */
struct tp__os_counters {
  uint64_t mapped;    /* bytes currently mapped by tidepool */
  uint64_t resident;  /* bytes tidepool has touched and not given back */
  uint64_t returned;  /* bytes given back to the OS, ever (unmap or decommit) */
};
extern struct tp__os_counters tp__os;

static inline void tp__counter_add(uint64_t *c, int64_t delta) {
  __atomic_fetch_add(c, (uint64_t)delta, __ATOMIC_RELAXED);
}
static inline uint64_t tp__counter_get(const uint64_t *c) {
  return __atomic_load_n(c, __ATOMIC_RELAXED);
}
/* Raises *c to v if it is below: a racy maximum (two raisers may both
 * store; the smaller may win), good for a statistic. */
static inline void tp__counter_max(uint64_t *c, uint64_t v) {
  if (v > tp__counter_get(c)) __atomic_store_n(c, v, __ATOMIC_RELAXED);
}

/* Initializes a condition variable whose timed waits run on CLOCK_MONOTONIC
 * (a wall-clock jump neither stretches nor cuts them); time them out with
 * tp__deadline_ms. */
void tp__cond_init_monotonic(pthread_cond_t *cv);
/* The CLOCK_MONOTONIC time `ms` (`ns`) from now, as pthread_cond_timedwait
 * takes it. */
struct timespec tp__deadline_ms(uint64_t ms);
struct timespec tp__deadline_ns(uint64_t ns);

/* Starts a background thread with every signal blocked (a library thread
 * must never run the application's signal handlers). 0 or -errno;
 * -EAGAIN always in a TSan build's child of a multi-threaded fork
 * (tp__fork_child_threadless). */
int tp__thread_create_quiet(pthread_t *out, void *(*fn)(void *), void *arg);
/* The same on a stack the caller mapped (stack_size bytes; NULL: the
 * default): glibc never hands a stack the program provided to another
 * thread (the collector's threads rely on it in a fork child). */
int tp__thread_create_quiet_on(pthread_t *out, void *stack, size_t stack_size,
                               void *(*fn)(void *), void *arg);

#endif /* TIDEPOOL_OS_INTERNAL_H */
