/*
 * Page mapping, clocks, fatal errors and background-thread creation.
 */
#define _GNU_SOURCE
#include "core/os_internal.h"
#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/fork_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct tp__os_counters tp__os;

const char *tp_version(void) { return TP_VERSION_STRING; }

size_t tp__os_page_size(void) {
  static size_t page;
  size_t p = __atomic_load_n(&page, __ATOMIC_RELAXED);
  if (TP_UNLIKELY(p == 0)) {
    long v = sysconf(_SC_PAGESIZE);
    p = v > 0 ? (size_t)v : 4096;
    __atomic_store_n(&page, p, __ATOMIC_RELAXED);
  }
  return p;
}

/* Maps `size` bytes aligned to `align` with extra mmap flags; no counting.
 *
 * Three tries, so that a tight RLIMIT_AS (which counts every byte mapped,
 * even for an instant) does not fail a mapping that fits:
 *  1. exactly `size` anywhere: aligned by chance (always when align is a
 *     page), done;
 *  2. otherwise exactly `size` at the aligned address just below where the
 *     kernel put it (MAP_FIXED_NOREPLACE: fails rather than replace a
 *     mapping); the kernel hands out addresses top-down, so that space is
 *     usually free;
 *  3. otherwise over-map by align - page and trim both ends, which needs
 *     size + align - page of address space for an instant.
 * Undoing a whole mapping of our own cannot fail (munmap fails only when
 * it would split a mapping past vm.max_map_count), so it is not a fault
 * injection point. */
static void *map_aligned(size_t size, size_t align, int flags) {
  size_t page = tp__os_page_size();
  if (align < page) align = page;
  if (size == 0 || (size & (page - 1)) || !tp__is_pow2(align) ||
      size > SIZE_MAX - align) {
    errno = EINVAL;
    return NULL;
  }
  const int prot = PROT_READ | PROT_WRITE, kind = MAP_PRIVATE | MAP_ANONYMOUS | flags;
  char *raw = tp__mmap(NULL, size, prot, kind, -1, 0);
  if (raw == MAP_FAILED) {
    errno = ENOMEM;
    return NULL;
  }
  if (((uintptr_t)raw & (align - 1)) == 0) return raw;
  munmap(raw, size);
  char *want = (char *)((uintptr_t)raw & ~(uintptr_t)(align - 1));
  char *p = tp__mmap(want, size, prot, kind | MAP_FIXED_NOREPLACE, -1, 0);
  if (p == want) return p;
  if (p != MAP_FAILED) munmap(p, size); /* a kernel before 4.17 took it as a hint */

  size_t span = size + align - page;
  raw = tp__mmap(NULL, span, prot, kind, -1, 0);
  if (raw == MAP_FAILED) {
    errno = ENOMEM;
    return NULL;
  }
  p = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
  if (p > raw) tp__munmap(raw, (size_t)(p - raw));
  char *end = p + size, *raw_end = raw + span;
  if (raw_end > end) tp__munmap(end, (size_t)(raw_end - end));
  return p;
}

void *tp__os_map(size_t size, size_t align) {
  void *p = map_aligned(size, align, 0);
  if (p) tp__counter_add(&tp__os.mapped, (int64_t)size);
  return p;
}

void *tp__os_reserve(size_t size, size_t align) {
  return map_aligned(size, align, MAP_NORESERVE);
}

void tp__os_unreserve(void *p, size_t size) {
  if (p && size) tp__munmap(p, size);
}

void tp__os_unmap(void *p, size_t size) {
  if (!p || !size) return;
  if (tp__munmap(p, size) == 0) {
    tp__counter_add(&tp__os.mapped, -(int64_t)size);
    tp__counter_add(&tp__os.returned, (int64_t)size);
  }
}

int tp__os_decommit(void *p, size_t size) {
  if (tp__madvise(p, size, MADV_DONTNEED) != 0) return -errno;
  tp__counter_add(&tp__os.returned, (int64_t)size);
  return 0;
}

uint64_t tp__clock_ns(clockid_t clock) {
  struct timespec ts;
  if (clock_gettime(clock, &ts)) return 0;
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t tp__now_ns(void) { return tp__clock_ns(CLOCK_MONOTONIC); }

uint64_t tp__now_ms_coarse(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void tp__cond_init_monotonic(pthread_cond_t *cv) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &ca);
  pthread_condattr_destroy(&ca);
}

struct timespec tp__deadline_ns(uint64_t ns) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t n = (uint64_t)ts.tv_nsec + ns % 1000000000u;
  ts.tv_sec += (time_t)(ns / 1000000000u + n / 1000000000u);
  ts.tv_nsec = (long)(n % 1000000000u);
  return ts;
}

struct timespec tp__deadline_ms(uint64_t ms) {
  return tp__deadline_ns(ms > UINT64_MAX / 1000000u ? UINT64_MAX : ms * 1000000u);
}

void tp__fatal(const char *func, const void *ptr, const char *msg) {
  if (ptr)
    fprintf(stderr, "tidepool: %s(%p): %s\n", func, ptr, msg);
  else
    fprintf(stderr, "tidepool: %s: %s\n", func, msg);
  fflush(stderr);
  abort();
}

int tp__thread_create_quiet_on(pthread_t *out, void *stack, size_t stack_size,
                               void *(*fn)(void *), void *arg) {
  /* A TSan build's child of a multi-threaded fork can start no thread
   * (core/fork.c): every background thread of the library (reclaimer,
   * watchdog, sweeper, marker, helper markers) is refused here, as when
   * the thread limit is reached, and its caller's fallback runs. */
  if (tp__fork_child_threadless()) return -EAGAIN;
  pthread_attr_t attr;
  if (stack) {
    if (pthread_attr_init(&attr) != 0) return -EAGAIN;
    pthread_attr_setstack(&attr, stack, stack_size);
  }
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  /* The new thread inherits the all-blocked mask; ours is restored. */
  int rc = tp__pthread_create(out, stack ? &attr : NULL, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (stack) pthread_attr_destroy(&attr);
  return -rc;
}

int tp__thread_create_quiet(pthread_t *out, void *(*fn)(void *), void *arg) {
  return tp__thread_create_quiet_on(out, NULL, 0, fn, arg);
}
