/*
 * Internal: assertions, fatal errors, sanitizer and valgrind hooks.
 *
 * TP_DEBUG (bazel --config=debug, or the tidepool_debug library variant)
 * turns on invariant checks and memory poisoning. The sanitizer hooks are
 * compiled in when the library itself is built with ASan or TSan; valgrind's
 * client requests cost a few no-op instructions when not under valgrind and
 * are only issued on slow paths (under valgrind every operation takes the
 * slow path, because valgrind does not support rseq).
 */
#ifndef TIDEPOOL_DEBUG_INTERNAL_H
#define TIDEPOOL_DEBUG_INTERNAL_H

#include <tidepool/common.h>
#include <stddef.h>

#ifndef TP_DEBUG
#define TP_DEBUG 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TP_ASAN 1
#endif
#endif
#ifndef TP_ASAN
#define TP_ASAN 0
#endif

/* The library itself is built with TSan (detected in common.h). */
#define TP_TSAN TP__TSAN

#if TP_ASAN
#include <sanitizer/asan_interface.h>
#define TP_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define TP_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define TP_POISON(p, n) ((void)(p), (void)(n))
#define TP_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#if TP_TSAN
#include <sanitizer/tsan_interface.h>
/* The rseq sequences are assembly TSan cannot see; these name the
 * happens-before edge they create from a put to the get of the same object. */
#define TP_TSAN_RELEASE(p) __tsan_release(p)
#define TP_TSAN_ACQUIRE(p) __tsan_acquire(p)
#else
#define TP_TSAN_RELEASE(p) ((void)(p))
#define TP_TSAN_ACQUIRE(p) ((void)(p))
#endif

#if defined(TP_HAVE_VALGRIND) && TP_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#define TP_VG_RUNNING() RUNNING_ON_VALGRIND
#else
#define TP_VG_RUNNING() 0
#define VALGRIND_CREATE_MEMPOOL(a, b, c) ((void)0)
#define VALGRIND_DESTROY_MEMPOOL(a) ((void)0)
#define VALGRIND_MEMPOOL_ALLOC(a, b, c) ((void)0)
#define VALGRIND_MEMPOOL_FREE(a, b) ((void)0)
#define VALGRIND_MAKE_MEM_NOACCESS(a, b) ((void)0)
#define VALGRIND_MAKE_MEM_DEFINED(a, b) ((void)0)
#define VALGRIND_MAKE_MEM_UNDEFINED(a, b) ((void)0)
#endif

/* Byte written over free objects in debug builds (pools without a ctor). */
#define TP_POISON_BYTE 0xdb

/* Prints "tidepool: FUNC(PTR): MSG" to stderr and aborts. */
TP_COLD __attribute__((noreturn)) void tp__fatal(const char *func,
                                                 const void *ptr,
                                                 const char *msg);

#if TP_DEBUG
#define TP_ASSERT(cond)                                                       \
  do {                                                                        \
    if (TP_UNLIKELY(!(cond))) tp__fatal(__func__, NULL, "assertion failed: " #cond); \
  } while (0)
#else
#define TP_ASSERT(cond) ((void)0)
#endif

#endif /* TIDEPOOL_DEBUG_INTERNAL_H */
