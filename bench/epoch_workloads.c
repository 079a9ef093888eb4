/*
 * bench/epoch_workloads.c — epoch workloads (issue 4), tidepool worker only.
 * The "implementations" compared here are synchronization schemes:
 *   tp      tp_epoch_enter/leave as users get them by default (calls into
 *           libtidepool), tp_pool_retire / tp_epoch_retire
 *   urcu    liburcu memb used directly: its inline read lock/unlock (the
 *           static header), urcu_memb_call_rcu
 * The opt-in inline read side (_LGPL_SOURCE) is measured against liburcu
 * in bench/epoch_inline_workloads.c (read_pair_inline).
 *   rwlock  pthread_rwlock_t (readers rdlock; writers wrlock and free at once)
 *
 *   read_pair        enter+leave of an empty read section, one thread
 *   retire           one retire of a 64 B pool object (tp_pool_retire, or
 *                    call_rcu whose callback puts it back)
 *   retire_latency   retires paced at 1 M/s for 1 s (0.3 s with --quick);
 *                    each object stamped at retire, the latency recorded
 *                    when its callback runs: p50/p99/p999/max_us
 *   lookup_tN        N threads (1, 2, 8) on a liburcu cds_lfht of 4096
 *                    keys: 99 % lookups (value read), 1 % replace of the
 *                    node + reclamation of the old one; aggregate rate
 *
 * One thread must not register with liburcu twice, and tidepool's epochs
 * are liburcu memb: the "urcu" cases register through
 * tp_epoch_register_thread(), which is urcu_memb_register_thread() plus
 * tidepool's bookkeeping; what is measured is liburcu's own code.
 */
#include "bench/alloc.h"

#if BENCH_HAVE_EPOCH

#include <pthread.h>
#include <urcu/static/urcu-memb.h> /* liburcu's inline read side */
#include <urcu/urcu-memb.h>
#include <urcu/rculfhash.h>

#define LAT_OBJ_SIZE 64
#define PACE_NS 1000 /* one retire per us: 1 M/s */
#define LOOKUP_KEYS 4096u
#define RETIRE_CHUNK 1000

/* ---- read sections ------------------------------------------------------ */

typedef struct sync_ops {
  void (*read_lock)(void);
  void (*read_unlock)(void);
} sync_ops;

static pthread_rwlock_t rwlock = PTHREAD_RWLOCK_INITIALIZER;

static inline void tp_rl(void) { tp_epoch_enter(); }
static inline void tp_ru(void) { tp_epoch_leave(); }
static inline void urcu_rl(void) { _urcu_memb_read_lock(); }
static inline void urcu_ru(void) { _urcu_memb_read_unlock(); }
static inline void rw_rl(void) { pthread_rwlock_rdlock(&rwlock); }
static inline void rw_ru(void) { pthread_rwlock_unlock(&rwlock); }

static const sync_ops SYNC_TP = {tp_rl, tp_ru};
static const sync_ops SYNC_URCU = {urcu_rl, urcu_ru};
static const sync_ops SYNC_RWLOCK = {rw_rl, rw_ru};

BENCH_INLINE uint64_t read_pair_loop(const sync_ops *S, uint64_t n) {
  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    S->read_lock();
    S->read_unlock();
  }
  return bench_now_ns() - t0;
}

static void *register_setup(const bench_case *c) {
  (void)c;
  tp_epoch_register_thread();
  return NULL;
}

static void run_read_pair(const bench_case *c, void *state, bench_out *out) {
  (void)state;
  uint64_t ns = c->param == 0   ? read_pair_loop(&SYNC_TP, c->ops)
                : c->param == 1 ? read_pair_loop(&SYNC_URCU, c->ops)
                                : read_pair_loop(&SYNC_RWLOCK, c->ops);
  out->ns = (double)ns;
  out->ops = (double)c->ops;
}

#define READ_PAIR_CASE(id, name, index)                                                   \
  BENCH_CASE(read_pair_##id, .workload = "read_pair", .impl = name, .group = "epoch",     \
             .unit = "read section enter+leave", .ops = 1000000, .param = index,          \
             .setup = register_setup, .run = run_read_pair)
READ_PAIR_CASE(tp, "tp", 0)
READ_PAIR_CASE(urcu, "urcu", 1)
READ_PAIR_CASE(rwlock, "rwlock", 2)

/* ---- retire: throughput and retire-to-free latency ---------------------------- */

typedef struct retire_node {
  struct rcu_head rcu; /* call_rcu */
  uint64_t stamp;      /* ns, at retire */
  struct retire_state *st;
} retire_node;

typedef struct retire_state {
  tp_pool *pool;
  bench_hist *hist;
  void *objs[RETIRE_CHUNK];
} retire_state;

static void *retire_setup(const bench_case *c) {
  (void)c;
  tp_epoch_register_thread();
  retire_state *s = bench_map(sizeof *s);
  if (!s) return NULL;
  tp_pool_config cfg = {.name = "retire", .obj_size = LAT_OBJ_SIZE};
  s->pool = tp_pool_create(&cfg);
  s->hist = bench_hist_new();
  return s;
}

static void retire_teardown(const bench_case *c, void *state) {
  retire_state *s = state;
  if (!s) return;
  if (c->param % 2 == 0) tp_epoch_barrier(); /* even params: tidepool */
  else urcu_memb_barrier();
  tp_pool_destroy(s->pool);
  bench_hist_free(s->hist);
  bench_unmap(s, sizeof *s);
}

static void put_cb_urcu(struct rcu_head *h) {
  retire_node *n = caa_container_of(h, retire_node, rcu);
  tp_pool_put(n->st->pool, n);
}

static void lat_record(retire_node *n) {
  bench_hist_add(n->st->hist, bench_now_ns() - n->stamp);
  tp_pool_put(n->st->pool, n);
}
static void lat_cb_tp(void *obj, void *arg) {
  (void)arg;
  lat_record(obj);
}
static void lat_cb_urcu(struct rcu_head *h) { lat_record(caa_container_of(h, retire_node, rcu)); }

/* Retires one node the way `impl` does (0 tp pool retire, 1 call_rcu put,
 * 2 tp latency, 3 call_rcu latency). 0 or -errno. */
BENCH_INLINE int retire_one(retire_state *s, retire_node *n, int impl) {
  switch (impl) {
    case 0:
      return tp_pool_retire(s->pool, n);
    case 1:
      n->st = s;
      urcu_memb_call_rcu(&n->rcu, put_cb_urcu);
      return 0;
    case 2:
      n->st = s;
      return tp_epoch_retire(n, lat_cb_tp, NULL);
    default:
      n->st = s;
      urcu_memb_call_rcu(&n->rcu, lat_cb_urcu);
      return 0;
  }
}

/* Retires RETIRE_CHUNK objects fetched beforehand; returns the ns taken,
 * 0 on failure. `impl` is a constant at every call site. */
BENCH_INLINE uint64_t retire_chunk(retire_state *s, const int impl) {
  for (unsigned i = 0; i < RETIRE_CHUNK; i++)
    if (!(s->objs[i] = tp_pool_get(s->pool))) return 0;
  uint64_t t0 = bench_now_ns();
  for (unsigned i = 0; i < RETIRE_CHUNK; i++)
    if (BENCH_UNLIKELY(retire_one(s, s->objs[i], impl) != 0)) return 0;
  return bench_now_ns() - t0;
}

static void run_retire(const bench_case *c, void *state, bench_out *out) {
  retire_state *s = state;
  if (!s || !s->pool) {
    bench_fail(out, "setup failed");
    return;
  }
  uint64_t ns = 0, done = 0;
  while (done < c->ops) {
    uint64_t t = c->param == 0 ? retire_chunk(s, 0) : retire_chunk(s, 1);
    if (!t) {
      bench_fail(out, "get or retire failed");
      return;
    }
    ns += t;
    done += RETIRE_CHUNK;
  }
  out->ns = (double)ns;
  out->ops = (double)done;
}

BENCH_CASE(retire_tp, .workload = "retire", .impl = "tp", .group = "epoch",
           .unit = "retire of a 64 B pool object (tp_pool_retire)", .ops = 100000, .param = 0,
           .setup = retire_setup, .run = run_retire, .teardown = retire_teardown)
BENCH_CASE(retire_urcu, .workload = "retire", .impl = "urcu", .group = "epoch",
           .unit = "retire of a 64 B pool object (call_rcu)", .ops = 100000, .param = 1,
           .setup = retire_setup, .run = run_retire, .teardown = retire_teardown)

static void run_retire_latency(const bench_case *c, void *state, bench_out *out) {
  retire_state *s = state;
  if (!s || !s->pool || !s->hist) {
    bench_fail(out, "setup failed");
    return;
  }
  uint64_t duration = bench_quick() ? 300000000u : 1000000000u;
  uint64_t t0 = bench_now_ns(), now = t0, done = 0;
  while ((now = bench_now_ns()) - t0 < duration) {
    if (done * PACE_NS > now - t0) {
      bench_pause();
      continue;
    }
    retire_node *n = tp_pool_get(s->pool);
    if (!n) {
      bench_fail(out, "get returned NULL");
      return;
    }
    n->stamp = now;
    if (BENCH_UNLIKELY(retire_one(s, n, (int)c->param) != 0)) {
      bench_fail(out, "retire failed");
      return;
    }
    done++;
  }
  out->ns = (double)(now - t0);
  out->ops = (double)done;
  /* Every callback has run once the barrier returns. */
  if (c->param % 2 == 0) tp_epoch_barrier();
  else urcu_memb_barrier();
  const bench_hist *h = s->hist;
  bench_counter(out, "p50_us", bench_hist_quantile_us(h, 0.50));
  bench_counter(out, "p99_us", bench_hist_quantile_us(h, 0.99));
  bench_counter(out, "p999_us", bench_hist_quantile_us(h, 0.999));
  bench_counter_cdf(out, "cdf", "_us", bench_hist_quantile_fn, h); /* the plot's curve */
  bench_counter(out, "max_us", (double)h->max_ns / 1000.0);
  bench_counter(out, "freed", (double)h->count);
}

BENCH_CASE(retire_latency_tp, .workload = "retire_latency", .impl = "tp", .group = "epoch",
           .unit = "retire at 1 M/s (time per retire; latency in counters)", .iterations = 1,
           .param = 2, .setup = retire_setup, .run = run_retire_latency,
           .teardown = retire_teardown)
BENCH_CASE(retire_latency_urcu, .workload = "retire_latency", .impl = "urcu", .group = "epoch",
           .unit = "retire at 1 M/s (time per retire; latency in counters)", .iterations = 1,
           .param = 3, .setup = retire_setup, .run = run_retire_latency,
           .teardown = retire_teardown)

/* ---- read-mostly lookups on a cds_lfht ------------------------------------------- */

typedef struct lookup_node {
  struct cds_lfht_node node;
  uint64_t key;
  uint64_t value;
} lookup_node;

typedef struct lookup_state {
  struct cds_lfht *ht;
  tp_pool *nodes;
  pthread_rwlock_t lock;
  uint64_t per_thread;
  int failed;
  struct {
    _Alignas(64) uint64_t sum;
  } sink[8];
} lookup_state;

static inline unsigned long key_hash(uint64_t key) {
  return (unsigned long)((key + 1) * 0x9E3779B97F4A7C15ull);
}

static int key_match(struct cds_lfht_node *node, const void *key) {
  return caa_container_of(node, lookup_node, node)->key == *(const uint64_t *)key;
}

/* One replace of `key`'s node; the old node goes to *old (NULL if a
 * concurrent replace won). Call inside the scheme's write-side protection. */
BENCH_INLINE void replace_key(lookup_state *s, uint64_t key, lookup_node *fresh,
                              lookup_node **old) {
  struct cds_lfht_iter it;
  unsigned long hash = key_hash(key);
  cds_lfht_lookup(s->ht, hash, key_match, &key, &it);
  struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
  *old = NULL;
  if (n && cds_lfht_replace(s->ht, &it, hash, key_match, &key, &fresh->node) == 0)
    *old = caa_container_of(n, lookup_node, node);
}

BENCH_INLINE uint64_t lookup_value(lookup_state *s, uint64_t key) {
  struct cds_lfht_iter it;
  cds_lfht_lookup(s->ht, key_hash(key), key_match, &key, &it);
  struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
  return n ? CMM_LOAD_SHARED(caa_container_of(n, lookup_node, node)->value) : 0;
}

/* mode 0: tidepool epochs + tp_pool_retire; 1: rwlock, free at once. */
BENCH_INLINE void lookup_body(lookup_state *s, int idx, const int mode) {
  uint64_t seed = 0xD1B54A32D192ED03ull * (uint64_t)(idx + 1), sum = 0;
  for (uint64_t i = 0; i < s->per_thread; i++) {
    uint64_t r = bench_rand(&seed);
    uint64_t key = (r >> 16) % LOOKUP_KEYS;
    if ((r & 0xffff) >= 655) { /* 99 % */
      if (mode == 0) tp_epoch_enter();
      else pthread_rwlock_rdlock(&s->lock);
      sum += lookup_value(s, key);
      if (mode == 0) tp_epoch_leave();
      else pthread_rwlock_unlock(&s->lock);
      continue;
    }
    lookup_node *fresh = tp_pool_get(s->nodes), *old;
    if (BENCH_UNLIKELY(!fresh)) {
      __atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
      return;
    }
    fresh->key = key;
    fresh->value = r;
    if (mode == 0) {
      tp_epoch_enter();
      replace_key(s, key, fresh, &old);
      tp_epoch_leave();
      if (old && tp_pool_retire(s->nodes, old) != 0)
        __atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
    } else {
      pthread_rwlock_wrlock(&s->lock);
      replace_key(s, key, fresh, &old);
      pthread_rwlock_unlock(&s->lock);
      if (old) tp_pool_put(s->nodes, old); /* no reader can hold it */
    }
    if (!old) tp_pool_put(s->nodes, fresh); /* never published */
  }
  s->sink[idx & 7].sum += sum;
}

static void lookup_body_tp(void *arg, int idx) { lookup_body(arg, idx, 0); }
static void lookup_body_rwlock(void *arg, int idx) { lookup_body(arg, idx, 1); }
static void lookup_init_tp(void *arg, int idx) {
  (void)arg;
  (void)idx;
  tp_epoch_register_thread();
}

static void lookup_teardown(const bench_case *c, void *state) {
  (void)c;
  lookup_state *s = state;
  if (!s) return;
  if (s->ht) {
    struct cds_lfht_iter it;
    struct cds_lfht_node *n;
    tp_epoch_enter();
    cds_lfht_for_each(s->ht, &it, n) {
      if (cds_lfht_del(s->ht, n) == 0) tp_pool_retire(s->nodes, caa_container_of(n, lookup_node, node));
    }
    tp_epoch_leave();
    tp_epoch_barrier();
    cds_lfht_destroy(s->ht, NULL);
  }
  if (s->nodes) tp_pool_destroy(s->nodes);
  pthread_rwlock_destroy(&s->lock);
  bench_unmap(s, sizeof *s);
}

static void *lookup_setup(const bench_case *c) {
  (void)c;
  tp_epoch_register_thread();
  lookup_state *s = bench_map(sizeof *s);
  if (!s) return NULL;
  pthread_rwlock_init(&s->lock, NULL);
  tp_pool_config cfg = {.name = "lookup", .obj_size = sizeof(lookup_node)};
  s->nodes = tp_pool_create(&cfg);
  s->ht = cds_lfht_new_flavor(LOOKUP_KEYS, LOOKUP_KEYS, LOOKUP_KEYS, 0, &urcu_memb_flavor, NULL);
  if (!s->nodes || !s->ht) {
    lookup_teardown(c, s);
    return NULL;
  }
  tp_epoch_enter();
  for (uint64_t k = 0; k < LOOKUP_KEYS; k++) {
    lookup_node *n = tp_pool_get(s->nodes);
    if (!n) break;
    n->key = k;
    n->value = k;
    cds_lfht_add(s->ht, key_hash(k), &n->node);
  }
  tp_epoch_leave();
  return s;
}

static void run_lookup(const bench_case *c, void *state, bench_out *out) {
  lookup_state *s = state;
  BENCH_NEED_STATE(s, out);
  int threads = (int)(c->param & 0xff), rw = (int)(c->param >> 8);
  s->per_thread = c->ops / (uint64_t)threads;
  s->failed = 0;
  out->ns = rw ? bench_run_threads(threads, NULL, lookup_body_rwlock, s, out)
               : bench_run_threads(threads, lookup_init_tp, lookup_body_tp, s, out);
  out->ops = (double)(s->per_thread * (uint64_t)threads);
  if (s->failed) bench_fail(out, "get or retire failed");
}

/* param: threads | rwlock << 8 */
#define LOOKUP_CASE(id, name, threads, scheme, rw)                                          \
  BENCH_CASE(lookup_##id, .workload = name, .impl = scheme, .group = "epoch",               \
             .unit = "lookup (99 %) or replace+reclaim (1 %), threads: " #threads,         \
             .throughput = 1, .ops = 400000, .param = (threads) | (rw) << 8,               \
             .setup = lookup_setup, .run = run_lookup, .teardown = lookup_teardown)
LOOKUP_CASE(t1_tp, "lookup_t1", 1, "tp", 0)
LOOKUP_CASE(t1_rw, "lookup_t1", 1, "rwlock", 1)
LOOKUP_CASE(t2_tp, "lookup_t2", 2, "tp", 0)
LOOKUP_CASE(t2_rw, "lookup_t2", 2, "rwlock", 1)
LOOKUP_CASE(t8_tp, "lookup_t8", 8, "tp", 0)
LOOKUP_CASE(t8_rw, "lookup_t8", 8, "rwlock", 1)

#endif /* BENCH_HAVE_EPOCH */
