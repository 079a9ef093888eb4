/* bench/alloc_apr.h — APR memory pools (apr_palloc, apr_pool_clear). */
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_version.h>

#define BENCH_HAVE_ARENA 1

static inline void *apr_b_create(void) {
  static int initialized; /* apr_initialize is reference-counted: harmless twice */
  if (!initialized) initialized = apr_initialize() == APR_SUCCESS;
  apr_pool_t *p = NULL;
  return apr_pool_create(&p, NULL) == APR_SUCCESS ? p : NULL;
}
static inline void apr_b_destroy(void *p) { apr_pool_destroy(p); }
static inline void *apr_b_alloc(void *p, size_t n) { return apr_palloc(p, n); }
static inline void apr_b_reset(void *p) { apr_pool_clear(p); }

BENCH_IMPL bench_arena_ops bench_arena_impl = {
    .name = "apr",
    .create = apr_b_create,
    .destroy = apr_b_destroy,
    .alloc = apr_b_alloc,
    .reset = apr_b_reset,
};

static inline void bench_impl_describe(void) {
  bench_info("apr", apr_version_string());
}
