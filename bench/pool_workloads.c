/*
 * bench/pool_workloads.c — fixed-size object workloads (issue 3), written
 * once against bench_pool_ops and compiled into every worker whose
 * implementation has a pool interface (tp_pool, glibc, jemalloc, mimalloc,
 * tcmalloc).
 *
 *   pair        get, touch, put; one thread                 ns per get+put
 *   batch       1000 gets (touched), then the 1000 puts     ns per call
 *   bulk32      32 objects by bulk get, touched, bulk put   ns per object
 *   prodcons    one thread gets, another puts, through an   ns per object
 *               SPSC ring (the same ring for everyone)
 *   oversub_tN  N threads (2, 8) get/put at random, each    ns per call
 *               holding up to 64 objects; aggregate rate
 */
#include "bench/alloc.h"

#if BENCH_HAVE_POOL

#include <string.h>

#define OBJ_SIZE 64
#define BATCH 1000
#define BULK 32
#define OVERSUB_SLOTS 64

static const bench_pool_ops *const P = &bench_pool_impl;

#define RING_SIZE 1024u

/* Lamport SPSC ring with cached indices (prodcons): each side re-reads the
 * other's index only when its cached copy says full/empty. */
typedef struct spsc_ring {
  _Alignas(64) uint64_t head; /* next slot to consume (consumer writes) */
  _Alignas(64) uint64_t tail; /* next slot to fill (producer writes) */
  _Alignas(64) void *slot[RING_SIZE];
} spsc_ring;

/* The state of every workload here: the allocator's context and scratch. */
typedef struct pool_state {
  spsc_ring ring;
  void *ctx;
  void *objs[BATCH];
  uint64_t per_thread; /* objects per thread (multi-threaded workloads) */
  int failed;          /* a thread saw get return NULL */
  uint64_t sink;
} pool_state;

static void *pool_setup(const bench_case *c) {
  (void)c;
  pool_state *s = bench_map(sizeof *s);
  if (s) s->ctx = P->create(OBJ_SIZE);
  return s;
}

static void pool_teardown(const bench_case *c, void *state) {
  (void)c;
  pool_state *s = state;
  if (!s) return;
  P->destroy(s->ctx);
  bench_unmap(s, sizeof *s);
}

/* ---- pair --------------------------------------------------------------- */

static void run_pair(const bench_case *c, void *state, bench_out *out) {
  pool_state *s = state;
  BENCH_NEED_STATE(s, out);
  out->ns = (double)bench_pair_loop(s->ctx, c->ops, out);
  out->ops = (double)c->ops;
}

BENCH_CASE(pair, .workload = "pair", .impl = bench_pool_impl.name, .group = "pool",
           .unit = "get+touch+put pair, 64 B", .ops = 200000, .setup = pool_setup,
           .run = run_pair, .teardown = pool_teardown)

/* ---- batch -------------------------------------------------------------- */

static void run_batch(const bench_case *c, void *state, bench_out *out) {
  pool_state *s = state;
  BENCH_NEED_STATE(s, out);
  void *ctx = s->ctx;
  uint64_t rounds = c->ops / (2 * BATCH);
  uint64_t t0 = bench_now_ns();
  for (uint64_t r = 0; r < rounds; r++) {
    for (unsigned i = 0; i < BATCH; i++) {
      void *o = P->get(ctx);
      if (BENCH_UNLIKELY(!o)) {
        bench_fail(out, "get returned NULL");
        return;
      }
      bench_touch(o, i);
      s->objs[i] = o;
    }
    for (unsigned i = 0; i < BATCH; i++) P->put(ctx, s->objs[i]);
  }
  out->ns = (double)(bench_now_ns() - t0);
  out->ops = (double)(rounds * 2 * BATCH);
}

BENCH_CASE(batch, .workload = "batch", .impl = bench_pool_impl.name, .group = "pool",
           .unit = "call (1000 gets, then 1000 puts)", .ops = 200 * BATCH,
           .setup = pool_setup, .run = run_batch, .teardown = pool_teardown)

/* ---- bulk of 32 ----------------------------------------------------------- */

BENCH_INLINE size_t get_32(void *ctx, void **v) {
  if (P->get_bulk) return P->get_bulk(ctx, v, BULK);
  for (unsigned i = 0; i < BULK; i++)
    if (BENCH_UNLIKELY(!(v[i] = P->get(ctx)))) return i;
  return BULK;
}

BENCH_INLINE void put_32(void *ctx, void *const *v) {
  if (P->put_bulk) {
    P->put_bulk(ctx, v, BULK);
    return;
  }
  for (unsigned i = 0; i < BULK; i++) P->put(ctx, v[i]);
}

static void run_bulk32(const bench_case *c, void *state, bench_out *out) {
  pool_state *s = state;
  BENCH_NEED_STATE(s, out);
  void *ctx = s->ctx;
  uint64_t rounds = c->ops / BULK;
  uint64_t t0 = bench_now_ns();
  for (uint64_t r = 0; r < rounds; r++) {
    if (BENCH_UNLIKELY(get_32(ctx, s->objs) != BULK)) {
      bench_fail(out, "bulk get came short");
      return;
    }
    for (unsigned i = 0; i < BULK; i++) bench_touch(s->objs[i], r);
    put_32(ctx, s->objs);
  }
  out->ns = (double)(bench_now_ns() - t0);
  out->ops = (double)(rounds * BULK);
}

BENCH_CASE(bulk32, .workload = "bulk32", .impl = bench_pool_impl.name, .group = "pool",
           .unit = "object (bulk get 32, touch, bulk put 32)", .ops = 6250 * BULK,
           .setup = pool_setup, .run = run_bulk32, .teardown = pool_teardown)

/* ---- producer/consumer through an SPSC ring ---------------------------------- */

static void prodcons_body(void *arg, int idx) {
  pool_state *s = arg;
  spsc_ring *r = &s->ring;
  void *ctx = s->ctx;
  uint64_t n = s->per_thread;
  if (idx == 0) { /* producer */
    uint64_t tail = 0, head_seen = 0;
    for (uint64_t i = 0; i < n; i++) {
      void *o = P->get(ctx);
      if (BENCH_UNLIKELY(!o)) {
        __atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
        o = r; /* keep the protocol going; the consumer will not free it */
      } else {
        bench_touch(o, i);
      }
      unsigned spins = 0;
      while (tail - head_seen == RING_SIZE) {
        head_seen = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
        if (tail - head_seen == RING_SIZE) bench_spin_wait(&spins);
      }
      r->slot[tail & (RING_SIZE - 1)] = o;
      __atomic_store_n(&r->tail, ++tail, __ATOMIC_RELEASE);
    }
  } else { /* consumer */
    uint64_t head = 0, tail_seen = 0, sum = 0;
    for (uint64_t i = 0; i < n; i++) {
      unsigned spins = 0;
      while (head == tail_seen) {
        tail_seen = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
        if (head == tail_seen) bench_spin_wait(&spins);
      }
      void *o = r->slot[head & (RING_SIZE - 1)];
      __atomic_store_n(&r->head, ++head, __ATOMIC_RELEASE);
      if (BENCH_UNLIKELY(o == (void *)r)) continue;
      sum += bench_peek(o);
      P->put(ctx, o);
    }
    s->sink = sum;
  }
}

static void run_prodcons(const bench_case *c, void *state, bench_out *out) {
  pool_state *s = state;
  BENCH_NEED_STATE(s, out);
  s->ring.head = s->ring.tail = 0;
  s->per_thread = c->ops;
  s->failed = 0;
  out->ns = bench_run_threads(2, NULL, prodcons_body, s, out);
  out->ops = (double)c->ops;
  bench_keep(s->sink);
  if (s->failed) bench_fail(out, "get returned NULL");
}

BENCH_CASE(prodcons, .workload = "prodcons", .impl = bench_pool_impl.name, .group = "pool",
           .unit = "object passed producer->consumer", .throughput = 1, .ops = 1000000,
           .setup = pool_setup, .run = run_prodcons, .teardown = pool_teardown)

/* ---- oversubscribed: N threads on the machine's cores ----------------------- */

static void oversub_body(void *arg, int idx) {
  pool_state *s = arg;
  void *ctx = s->ctx;
  void *slot[OVERSUB_SLOTS] = {0};
  uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(idx + 1);
  for (uint64_t i = 0; i < s->per_thread; i++) {
    uint64_t r = bench_rand(&seed);
    unsigned k = (unsigned)(r >> 58); /* 0..63 */
    if (slot[k]) {
      P->put(ctx, slot[k]);
      slot[k] = NULL;
    } else {
      void *o = P->get(ctx);
      if (BENCH_UNLIKELY(!o)) {
        __atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
        break;
      }
      bench_touch(o, r);
      slot[k] = o;
    }
  }
  for (unsigned k = 0; k < OVERSUB_SLOTS; k++)
    if (slot[k]) P->put(ctx, slot[k]);
}

static void run_oversub(const bench_case *c, void *state, bench_out *out) {
  pool_state *s = state;
  BENCH_NEED_STATE(s, out);
  s->per_thread = c->ops / (uint64_t)c->param;
  s->failed = 0;
  out->ns = bench_run_threads((int)c->param, NULL, oversub_body, s, out);
  out->ops = (double)(s->per_thread * (uint64_t)c->param);
  if (s->failed) bench_fail(out, "get returned NULL");
}

BENCH_CASE(oversub_t2, .workload = "oversub_t2", .impl = bench_pool_impl.name, .group = "pool",
           .unit = "random get or put, 2 threads, aggregate", .throughput = 1, .ops = 2000000,
           .param = 2, .setup = pool_setup, .run = run_oversub, .teardown = pool_teardown)
BENCH_CASE(oversub_t8, .workload = "oversub_t8", .impl = bench_pool_impl.name, .group = "pool",
           .unit = "random get or put, 8 threads, aggregate", .throughput = 1, .ops = 2000000,
           .param = 8, .setup = pool_setup, .run = run_oversub, .teardown = pool_teardown)

#endif /* BENCH_HAVE_POOL */
