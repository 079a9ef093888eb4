/*
 * Helpers shared by the tests: seeds, a small PRNG, deadlines, RSS.
 *
 * Stress tests are seeded: the seed comes from TP_TEST_SEED if set, else
 * from the clock, and is printed so a failure can be replayed. They run
 * for a bounded time (TP_TEST_SECONDS scales it).
 */
#ifndef TIDEPOOL_TEST_UTIL_H
#define TIDEPOOL_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t tt_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The test's seed: TP_TEST_SEED, else the clock. Printed. */
static inline uint64_t tt_seed(const char *test) {
  const char *e = getenv("TP_TEST_SEED");
  uint64_t s = e && *e ? strtoull(e, NULL, 0) : (tt_now_ns() ^ (uint64_t)getpid() << 32);
  printf("%s: seed %llu (replay with TP_TEST_SEED=%llu)\n", test, (unsigned long long)s,
         (unsigned long long)s);
  fflush(stdout);
  return s;
}

/* Seconds a stress phase runs: base * TP_TEST_SECONDS_SCALE (default 1). */
static inline double tt_seconds(double base) {
  const char *e = getenv("TP_TEST_SECONDS_SCALE");
  double k = e && *e ? atof(e) : 1.0;
  return base * (k > 0 ? k : 1.0);
}

/* xorshift64*: per-thread state, never 0. */
static inline uint64_t tt_rand(uint64_t *s) {
  uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545f4914f6cdd1dull;
}

/* Resident set size of this process in bytes (from /proc/self/statm). */
static inline size_t tt_rss(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, res = 0;
  if (f) {
    if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
    fclose(f);
  }
  return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

#endif /* TIDEPOOL_TEST_UTIL_H */
