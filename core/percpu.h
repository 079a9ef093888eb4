/*
 * <tidepool/percpu.h> — which per-CPU mechanism the library uses.
 *
 * The pools' and arenas' per-CPU caches run on Linux restartable sequences
 * (rseq, registered for every thread by glibc 2.35+). When glibc has not
 * registered rseq (__rseq_size == 0: valgrind, the tunable
 * glibc.pthread.rseq=0, old kernels) or the library is built with
 * TP_FORCE_NORSEQ, they fall back to "percpu-cas": the same per-CPU blocks,
 * chosen with sched_getcpu() and updated under a per-block busy bit taken
 * with compare-and-swap (core/percpu.c). The algorithm and why it is correct
 * are at the head of <tidepool/detail/rseq.h>, the inline fast paths.
 */
#ifndef TIDEPOOL_PERCPU_H
#define TIDEPOOL_PERCPU_H

#include <tidepool/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The per-CPU mechanism in use: "rseq", or "percpu-cas" (the fallback, see
 * above), chosen once when the library starts. Safe to call concurrently.
 */
TP_API const char *tp_percpu_mode(void);

#ifdef __cplusplus
}
#endif

#endif /* TIDEPOOL_PERCPU_H */
