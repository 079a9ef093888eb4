/* bench/alloc_mimalloc.h — mimalloc through its own entry points. */
#include <mimalloc.h>
#include <stdio.h>

#define BENCH_HAVE_POOL 1

BENCH_MALLOC_POOL("mimalloc", mi_malloc, mi_free)

static inline void bench_impl_describe(void) {
  char v[32];
  int n = mi_version();
  snprintf(v, sizeof v, "%d.%d.%d", n / 100, n / 10 % 10, n % 10);
  bench_info("mimalloc", v);
}
