/* bench/alloc_jemalloc.h — jemalloc.
 *
 * Through malloc/free, which in this worker ARE jemalloc's (linking it
 * replaces malloc; the "malloc from" line of the bench header shows it).
 * Not mallocx/dallocx: in jemalloc 5.3 they skip the allocator's fast
 * paths and cost 2-3x more per 64 B pair here (8.5-12.3 ns against
 * 3.8-4.6 ns for malloc/free, measured on this machine), which would
 * flatter tidepool. */
#include <jemalloc/jemalloc.h>
#include <stdlib.h>

#define BENCH_HAVE_POOL 1

BENCH_MALLOC_POOL("jemalloc", malloc, free)

static inline void bench_impl_describe(void) {
  const char *v = "?";
  size_t len = sizeof v;
  mallctl("version", (void *)&v, &len, NULL, 0);
  bench_info("jemalloc", v);
}
