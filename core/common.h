/*
 * <tidepool/common.h> — definitions every tidepool header shares.
 *
 * Error convention (library-wide): a function that can fail returns NULL or
 * a negative errno value and also sets errno (EINVAL: bad argument, ENOMEM:
 * out of memory or over a configured cap, EDEADLK: the call would wait for
 * itself). No public function crashes on a NULL or out-of-range argument.
 * Misuse that cannot be reported as an error (a double put, a pointer that
 * is not from the pool it is put into) aborts with a message naming the
 * function and the pointer: always where the check is cheap, and in every
 * case in builds with TP_DEBUG (bazel --config=debug).
 *
 * Names: `tp_` is public API. `tp__` (two underscores) marks internals that
 * headers must expose for inline fast paths; they are not API and change
 * without notice.
 */
#ifndef TIDEPOOL_COMMON_H
#define TIDEPOOL_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define TP_VERSION_MAJOR 0
#define TP_VERSION_MINOR 1
#define TP_VERSION_PATCH 0
#define TP_VERSION_STRING "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define TP_LIKELY(x) __builtin_expect(!!(x), 1)
#define TP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TP_API __attribute__((visibility("default")))
#define TP_INLINE static inline __attribute__((always_inline))
#define TP_NOINLINE __attribute__((noinline))
#define TP_COLD __attribute__((cold, noinline))
#else
#error "tidepool needs GCC or Clang"
#endif

#if !defined(__x86_64__)
/* The per-CPU fast paths are x86-64 assembly; other targets would take the
 * fallback everywhere, which is not built or tested yet. */
#error "tidepool currently supports x86-64 only"
#endif

/* 1 when the includer is compiled with ThreadSanitizer (gcc defines
 * __SANITIZE_THREAD__; clang reports it through __has_feature). Here so
 * that public headers (epoch.h) and the library's internals test one
 * definition. */
#if defined(__SANITIZE_THREAD__)
#define TP__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TP__TSAN 1
#endif
#endif
#ifndef TP__TSAN
#define TP__TSAN 0
#endif

/* Size of the cache lines that per-CPU data is padded to. */
#define TP_CACHELINE 64

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version string, e.g. "0.1.0". Safe to call concurrently. */
TP_API const char *tp_version(void);

#ifdef __cplusplus
}
#endif

#endif /* TIDEPOOL_COMMON_H */
