/*
 * Helpers shared by the tests: seeds, a small PRNG, deadlines, sleeping and
 * joining, failures recorded on other threads, stress phases, RSS.
 *
 * Stress tests are seeded: the seed comes from TP_TEST_SEED if set, else
 * from the clock, and is printed so a failure can be replayed. They run
 * for a bounded time (TP_TEST_SECONDS_SCALE scales it).
 *
 * No timed assertions: a deadline here either ends a phase (the test then
 * checks what was done, not how fast) or catches a hang (TT_HANG_MS, far
 * beyond anything a loaded machine needs).
 */
#ifndef TIDEPOOL_TEST_UTIL_H
#define TIDEPOOL_TEST_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t tt_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Runs the test binary with the environment variable NAME set to VALUE
 * from its start, whatever environment it was started with: the library
 * reads its TIDEPOOL_* options once, at start-up (docs/options.md), so
 * setting one in main would be too late. The constructor runs after the
 * library's (which may be a shared object, as in Bazel's tests); when NAME
 * does not hold VALUE it sets it and executes the binary again with the
 * same arguments (glibc passes argc, argv to constructors). One use per
 * NAME and file. */
static inline void tt_reexec_with_env(const char *name, const char *value, char **argv) {
  const char *v = getenv(name);
  if (v && strcmp(v, value) == 0) return;
  setenv(name, value, 1);
  execv("/proc/self/exe", argv);
  fprintf(stderr, "test: cannot execute /proc/self/exe again with %s=%s: %s\n", name, value,
          strerror(errno));
  abort();
}
#define TT_SETENV_AT_START(NAME, VALUE)                                        \
  __attribute__((constructor)) static void tt_setenv_##NAME(int argc, char **argv) { \
    (void)argc;                                                                \
    tt_reexec_with_env(#NAME, VALUE, argv);                                    \
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

/* The monotonic time `base` seconds (scaled as tt_seconds) from now. */
static inline uint64_t tt_deadline(double base) {
  return tt_now_ns() + (uint64_t)(tt_seconds(base) * 1e9);
}

/* Waits longer than this only when something hangs: the bound of polls
 * and joins that wait for an event rather than measure a time. */
#define TT_HANG_MS 30000u

/* TT_HANG_MS from now: the bound of a poll for something that must happen. */
static inline uint64_t tt_hang_deadline(void) {
  return tt_now_ns() + (uint64_t)TT_HANG_MS * 1000000u;
}

/* Sleeps ms milliseconds (all of them, across signals). */
static inline void tt_sleep_ms(unsigned ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Waits, in 1 ms steps, until *v == want (an acquire load, pairing with the
 * release store that announces the event). 1, or 0 once TT_HANG_MS has
 * passed (reported on stderr as a hang): a main thread asserts on it; a
 * worker may just go on, and the main thread's checks catch the rest. */
static inline int tt_wait_for(const int *v, int want) {
  uint64_t end = tt_hang_deadline();
  while (__atomic_load_n(v, __ATOMIC_ACQUIRE) != want) {
    if (tt_now_ns() >= end) {
      fprintf(stderr, "event not seen within %u ms (hang)\n", TT_HANG_MS);
      return 0;
    }
    tt_sleep_ms(1);
  }
  return 1;
}

/* Joins t, waiting at most ms: 0, or ETIMEDOUT (reported on stderr as a
 * hang) or another pthread error. Use with assert_int_equal(..., 0). */
static inline int tt_join_within(pthread_t t, unsigned ms, void **ret) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
  int rc = pthread_timedjoin_np(t, ret, &ts);
  if (rc == ETIMEDOUT) fprintf(stderr, "thread did not finish within %u ms (hang)\n", ms);
  return rc;
}

/* ---- failures on other threads ---------------------------------------------
 * cmocka's assertions may only run on the test's main thread (a failure
 * longjmps to the test runner). Other threads record what went wrong with
 * tt_fail_once; the main thread, after joining them, calls
 * tt_assert_no_failures. Counts every failure, keeps the first message.
 * Safe to call concurrently. (A signal handler, which may not format,
 * counts with __atomic_fetch_add(&f->count, 1, __ATOMIC_RELAXED).) */
typedef struct tt_failures {
  uint64_t count; /* atomic */
  char first[256];
} tt_failures;

__attribute__((format(printf, 2, 3))) static inline void tt_fail_once(tt_failures *f,
                                                                      const char *fmt, ...) {
  if (__atomic_fetch_add(&f->count, 1, __ATOMIC_RELAXED) != 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->first, sizeof f->first, fmt, ap);
  va_end(ap);
}

/* Failures so far (a running thread's may still be writing its message). */
static inline uint64_t tt_failed(const tt_failures *f) {
  return __atomic_load_n(&f->count, __ATOMIC_RELAXED);
}

static inline void tt_failures_reset(tt_failures *f) {
  __atomic_store_n(&f->count, 0, __ATOMIC_RELAXED);
  f->first[0] = 0;
}

/* On the main thread, after the threads that record into f are joined. */
#define tt_assert_no_failures(f)                                                       \
  do {                                                                                 \
    if (tt_failed(f))                                                                  \
      fail_msg("%llu failure(s) on other threads; first: %s",                          \
               (unsigned long long)tt_failed(f), (f)->first[0] ? (f)->first : "(see stderr)"); \
  } while (0)

/* ---- stress phases --------------------------------------------------------------
 * The main thread of a stress test: sleeps in 20 ms steps until the phase
 * is over, then sets *stop (the threads' loop condition). The phase is over
 * at the first failure recorded in f (f may be NULL), or once `deadline`
 * has passed and the threads did what the test's checks need: enough(arg)
 * runs at every step (it may sample the threads meanwhile) and returns
 * nonzero once they did (enough NULL: no minimum). A machine so loaded that
 * the minimum is not reached within TT_HANG_MS after the deadline ends the
 * phase anyway; the test's own progress assertions then fail. stop may be
 * NULL when the caller has something to do before the threads stop. */
static inline void tt_run_until(uint64_t deadline, const tt_failures *f, int (*enough)(void *),
                                void *arg, int *stop) {
  uint64_t cap = deadline + (uint64_t)TT_HANG_MS * 1000000u;
  for (;;) {
    tt_sleep_ms(20);
    int done = !enough || enough(arg);
    uint64_t now = tt_now_ns();
    if ((f && tt_failed(f)) || now >= cap || (now >= deadline && done)) break;
  }
  if (stop) __atomic_store_n(stop, 1, __ATOMIC_RELEASE);
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

/* qsort comparator for an array of pointers, by address. */
static inline int tt_cmp_ptr(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
  return x < y ? -1 : x > y;
}

/* ---- signals interrupting the threads under test ----------------------------
 * SIGALRM every usec microseconds (ITIMER_REAL), handled by fn with
 * SA_RESTART; usec 0 stops the timer (fn is then not changed). The kernel
 * delivers it to any thread that does not block it: a test that wants only
 * its workers hit creates them first, then blocks SIGALRM in the main thread
 * with tt_block_alarm. */
static inline void tt_alarm_every(void (*fn)(int), long usec) {
  if (usec) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
  }
  struct itimerval it = {{0, usec}, {0, usec}};
  setitimer(ITIMER_REAL, &it, NULL);
}

/* Blocks SIGALRM in the calling thread; *old receives the previous mask. */
static inline void tt_block_alarm(sigset_t *old) {
  sigset_t alrm;
  sigemptyset(&alrm);
  sigaddset(&alrm, SIGALRM);
  pthread_sigmask(SIG_BLOCK, &alrm, old);
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

/* Reads fd to its end (or until buf, of cap bytes, is full), retrying
 * EINTR; buf ends with a NUL. Returns the bytes read. */
static inline size_t tt_read_all(int fd, char *buf, size_t cap) {
  size_t n = 0;
  ssize_t r;
  while (n < cap - 1 && ((r = read(fd, buf + n, cap - 1 - n)) > 0 || (r < 0 && errno == EINTR)))
    if (r > 0) n += (size_t)r;
  buf[n] = 0;
  return n;
}

#endif /* TIDEPOOL_TEST_UTIL_H */
