/* bench/alloc_tidepool.h — tidepool: tp_pool, tp_arena, epochs, the sweeper. */
#include <tidepool/tidepool.h>

#include <stdio.h>

#define BENCH_HAVE_POOL 1
#define BENCH_HAVE_ARENA 1
#define BENCH_HAVE_EPOCH 1

static inline void *tp_b_create(size_t size) {
  tp_pool_config cfg = {.name = "bench", .obj_size = size};
  return tp_pool_create(&cfg);
}
static inline void tp_b_destroy(void *p) { tp_pool_destroy(p); }
static inline void *tp_b_get(void *p) { return tp_pool_get(p); }
static inline void tp_b_put(void *p, void *o) { tp_pool_put(p, o); }
static inline size_t tp_b_get_bulk(void *p, void **v, size_t n) { return tp_pool_get_bulk(p, v, n); }
static inline void tp_b_put_bulk(void *p, void *const *v, size_t n) { tp_pool_put_bulk(p, v, n); }

static inline int tp_b_sweeper_start(unsigned interval_ms) {
  if (interval_ms == 0) return tp_sweeper_start(NULL);
  tp_sweeper_config cfg = {.interval_ms = interval_ms};
  return tp_sweeper_start(&cfg);
}
static inline void tp_b_sweeper_stop(void) { tp_sweeper_stop(); }

BENCH_IMPL bench_pool_ops bench_pool_impl = {
    .name = "tp",
    .create = tp_b_create,
    .destroy = tp_b_destroy,
    .get = tp_b_get,
    .put = tp_b_put,
    .get_bulk = tp_b_get_bulk,
    .put_bulk = tp_b_put_bulk,
    .reclaimer_start = tp_b_sweeper_start,
    .reclaimer_stop = tp_b_sweeper_stop,
};

static inline void *tp_b_arena_create(void) { return tp_arena_create(NULL); }
static inline void *tp_b_arena_create_concurrent(void) {
  tp_arena_config cfg = {.flags = TP_ARENA_CONCURRENT};
  return tp_arena_create(&cfg);
}
static inline void tp_b_arena_destroy(void *a) { tp_arena_destroy(a); }
static inline void *tp_b_arena_alloc(void *a, size_t n) { return tp_arena_alloc(a, n); }
static inline void tp_b_arena_reset(void *a) { tp_arena_reset(a); }

BENCH_IMPL bench_arena_ops bench_arena_impl = {
    .name = "tp",
    .create = tp_b_arena_create,
    .destroy = tp_b_arena_destroy,
    .alloc = tp_b_arena_alloc,
    .reset = tp_b_arena_reset,
    .create_concurrent = tp_b_arena_create_concurrent,
};

static inline void bench_impl_describe(void) {
  bench_info("tidepool", tp_version());
  bench_info("percpu_mode", tp_percpu_mode());
  bench_info("epoch_mode", tp_epoch_mode());
}
