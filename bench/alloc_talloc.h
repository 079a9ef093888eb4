/* bench/alloc_talloc.h — talloc: children of one context, freed together. */
#include <stdio.h>
#include <talloc.h>

#define BENCH_HAVE_ARENA 1

static inline void *talloc_b_create(void) { return talloc_new(NULL); }
static inline void talloc_b_destroy(void *ctx) { talloc_free(ctx); }
static inline void *talloc_b_alloc(void *ctx, size_t n) { return talloc_size(ctx, n); }
static inline void talloc_b_reset(void *ctx) { talloc_free_children(ctx); }

BENCH_IMPL bench_arena_ops bench_arena_impl = {
    .name = "talloc",
    .create = talloc_b_create,
    .destroy = talloc_b_destroy,
    .alloc = talloc_b_alloc,
    .reset = talloc_b_reset,
};

static inline void bench_impl_describe(void) {
  char v[32];
  snprintf(v, sizeof v, "%d.%d", talloc_version_major(), talloc_version_minor());
  bench_info("talloc", v);
}
