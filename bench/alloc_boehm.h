/* bench/alloc_boehm.h — the Boehm-Demers-Weiser collector (Debian's
 * libgc), the peer of tidepool's tp_heap in bench/gc_workloads.c. It has
 * no pool or arena interface here: GC_MALLOC objects are not freed one by
 * one, so only the "gc" group runs in this worker. */
#define GC_THREADS 1
#include <gc.h>

#include <stdio.h>

#define BENCH_HAVE_BOEHM 1

static inline void bench_impl_describe(void) {
  unsigned v = GC_get_version();
  char s[32];
  snprintf(s, sizeof s, "%u.%u.%u", v >> 16, (v >> 8) & 0xff, v & 0xff);
  bench_info("boehm", s);
}
