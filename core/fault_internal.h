/*
 * Internal, test-only: fault injection at the library's own system calls.
 *
 * Every mmap, munmap, madvise, pthread_create, file open and heap
 * allocation (malloc/calloc/realloc) tidepool makes for itself goes through
 * the wrappers below. In a build with TP_DEBUG (the tidepool_debug variant)
 * or TP_FAULT_INJECT, a test can arm a fault: the Nth call of the chosen
 * kinds (counted from the arm, optionally only on the arming thread) and the
 * count - 1 calls after it fail as the real call would when memory or
 * descriptors run out (ENOMEM, EAGAIN, EMFILE). A test sweeps N over every
 * call of a workload: an armed run that injects nothing has passed the last
 * call site.
 *
 * In other builds TP__FAULT() is the constant 0 and the wrappers are the
 * plain calls; in fault builds an unarmed call costs one relaxed load and a
 * predicted branch.
 */
#ifndef TIDEPOOL_FAULT_INTERNAL_H
#define TIDEPOOL_FAULT_INTERNAL_H

#include <tidepool/common.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if !defined(TP_FAULT_INJECT) && defined(TP_DEBUG) && TP_DEBUG
#define TP_FAULT_INJECT 1
#endif
#ifndef TP_FAULT_INJECT
#define TP_FAULT_INJECT 0
#endif

/* Kinds of call, as bits for tp__fault_arm. */
enum {
  TP__FAULT_MMAP = 1u << 0,
  TP__FAULT_MUNMAP = 1u << 1,
  TP__FAULT_MADVISE = 1u << 2,
  TP__FAULT_THREAD = 1u << 3, /* pthread_create */
  TP__FAULT_OPEN = 1u << 4,   /* fopen, and calls that open files (pthread_getattr_np) */
  TP__FAULT_ALLOC = 1u << 5,  /* malloc, calloc, realloc */
  TP__FAULT_ALL = (1u << 6) - 1,
};

/* Arming flags. */
enum {
  TP__FAULT_THIS_THREAD = 1u << 0, /* count and fail only the arming thread's calls */
};

#if TP_FAULT_INJECT
/* TP_API: tests link the library's shared form too (fault builds only). */
TP_API extern int tp__fault_armed;
/* The slow half of TP__FAULT: counts the call, true if it must fail. */
bool tp__fault_hit(unsigned kind);
#define TP__FAULT(kind) \
  (__builtin_expect(__atomic_load_n(&tp__fault_armed, __ATOMIC_RELAXED), 0) && tp__fault_hit(kind))

/* Arms: the nth (1-based) call of `kinds` from now and the count - 1 after
 * it fail (count 0: every call from the nth on). Resets the counters. */
TP_API void tp__fault_arm(unsigned kinds, uint64_t nth, uint64_t count, unsigned flags);
/* Lifts the fault; the counters keep their values. */
TP_API void tp__fault_disarm(void);
/* Arms again as the last tp__fault_arm did, the counters going on from
 * where they stopped (calls made while disarmed are not counted). */
TP_API void tp__fault_resume(void);
/* Calls of the armed kinds seen, and calls failed, since the last arm. */
TP_API uint64_t tp__fault_calls(void);
TP_API uint64_t tp__fault_injected(void);
#else
#define TP__FAULT(kind) 0
#endif

static inline void *tp__mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  if (TP__FAULT(TP__FAULT_MMAP)) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  return mmap(addr, len, prot, flags, fd, off);
}

static inline int tp__munmap(void *addr, size_t len) {
  if (TP__FAULT(TP__FAULT_MUNMAP)) {
    errno = ENOMEM; /* splitting a mapping past vm.max_map_count */
    return -1;
  }
  return munmap(addr, len);
}

static inline int tp__madvise(void *addr, size_t len, int advice) {
  if (TP__FAULT(TP__FAULT_MADVISE)) {
    errno = EAGAIN;
    return -1;
  }
  return madvise(addr, len, advice);
}

static inline int tp__pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *),
                                     void *arg) {
  if (TP__FAULT(TP__FAULT_THREAD)) return EAGAIN;
  return pthread_create(t, a, fn, arg);
}

static inline FILE *tp__fopen(const char *path, const char *mode) {
  if (TP__FAULT(TP__FAULT_OPEN)) {
    errno = EMFILE;
    return NULL;
  }
  return fopen(path, mode);
}

/* pthread_getattr_np opens /proc/self/maps for the main thread. */
static inline int tp__pthread_getattr_np(pthread_t t, pthread_attr_t *a) {
  if (TP__FAULT(TP__FAULT_OPEN)) return EMFILE;
  return pthread_getattr_np(t, a);
}

static inline void *tp__malloc(size_t n) {
  if (TP__FAULT(TP__FAULT_ALLOC)) {
    errno = ENOMEM;
    return NULL;
  }
  return malloc(n);
}

static inline void *tp__calloc(size_t n, size_t size) {
  if (TP__FAULT(TP__FAULT_ALLOC)) {
    errno = ENOMEM;
    return NULL;
  }
  return calloc(n, size);
}

/* n zeroed bytes at a multiple of align (a power of two), the size rounded
 * up to a multiple of align as aligned_alloc wants; NULL with errno ENOMEM
 * (the library's cache-line-aligned control blocks: pools, heaps, the
 * concurrent arenas' regions). free() releases it. */
static inline void *tp__zalloc_aligned(size_t align, size_t n) {
  if (TP__FAULT(TP__FAULT_ALLOC) || n > SIZE_MAX - align) {
    errno = ENOMEM;
    return NULL;
  }
  n = (n + align - 1) & ~(align - 1);
  void *p = aligned_alloc(align, n);
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  return memset(p, 0, n);
}

static inline void *tp__realloc(void *p, size_t n) {
  if (TP__FAULT(TP__FAULT_ALLOC)) {
    errno = ENOMEM;
    return NULL;
  }
  return realloc(p, n);
}

#endif /* TIDEPOOL_FAULT_INTERNAL_H */
