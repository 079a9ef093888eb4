/* bench/alloc_tcmalloc.h — gperftools tcmalloc (minimal) through tc_malloc/tc_free. */
#include <gperftools/tcmalloc.h>

#define BENCH_HAVE_POOL 1

BENCH_MALLOC_POOL("tcmalloc", tc_malloc, tc_free)

static inline void bench_impl_describe(void) {
  int major, minor;
  const char *patch;
  bench_info("tcmalloc", tc_version(&major, &minor, &patch));
}
