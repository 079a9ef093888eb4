/*
 * rcutorture-style stress of epochs and tp_pool_retire (issue 4).
 *
 * Readers (6) traverse a hash table of tp_pool nodes inside tp_epoch
 * sections, hold on to what they found across yields, and check every node
 * they touch; writers (2) replace nodes and retire the old ones. More
 * threads than cores (2), so readers are preempted inside sections.
 *
 * How a premature free is caught. Every node carries a state word:
 *  - retired with tp_epoch_retire(node, kill_cb): the callback stores DEAD
 *    and then puts the node back to the pool (DEAD just before the pool);
 *  - retired with tp_pool_retire: the pool gets it back after the grace
 *    period; the next tp_pool_get of it stores DEAD first thing, before the
 *    node is rebuilt and marked LIVE again.
 * Either way, a node's state is LIVE from before it is published until a
 * grace period after it was unlinked; a reader that ever sees a state other
 * than LIVE, or a node whose key/value/check do not agree, or misses a key
 * (every key is always present), fails the test. Under ASan the pool also
 * poisons put objects, so any read of a freed node is reported.
 *
 * Two tables: a bucket array of tp_publish/tp_deref lists (writers lock a
 * bucket), and liburcu's cds_lfht (urcu_memb flavour, no auto-resize).
 * Seeded (TP_TEST_SEED), time-bounded (TP_TEST_SECONDS_SCALE).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <tidepool/epoch.h>
#include <tidepool/pool.h>

#include <urcu/urcu-memb.h> /* the flavour, before rculfhash.h */
#include <urcu/rculfhash.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include "tests/test_util.h"

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
/* cds_lfht publishes and looks up inside uninstrumented liburcu-cds: name
 * the edge it creates from a writer's add to a reader's lookup. */
#define LFHT_RELEASE(p) __tsan_release(p)
#define LFHT_ACQUIRE(p) __tsan_acquire(p)
#else
#define LFHT_RELEASE(p) ((void)(p))
#define LFHT_ACQUIRE(p) ((void)(p))
#endif

#define NREADERS 6
#define NWRITERS 2
#define NKEYS 512
#define NBUCKETS 64

#define LIVE 0x11feu
#define DEAD 0xdeadu

struct node {
  unsigned state; /* atomic: LIVE or DEAD */
  uint64_t key, value, check;
  struct node *next; /* list table */
  struct cds_lfht_node lfht;
};

static uint64_t mix(uint64_t key, uint64_t value) {
  uint64_t x = key * 0x9e3779b97f4a7c15ull ^ value;
  x ^= x >> 29;
  return x * 0xbf58476d1ce4e5b9ull;
}

static tp_pool *pool;
static int stop;
static tt_failures failures;

static void fail_once(const char *what, const struct node *n, unsigned state) {
  tt_fail_once(&failures, "%s (node %p state %#x)", what, (const void *)n, state);
}

/* A node out of the pool: DEAD first (it may be a node some reader still
 * holds if a grace period was cut short), then rebuilt, then LIVE. */
static struct node *node_new(uint64_t key, uint64_t value) {
  struct node *n = tp_pool_get(pool);
  if (!n) return NULL;
  __atomic_store_n(&n->state, DEAD, __ATOMIC_RELAXED);
  n->key = key;
  n->value = value;
  n->check = mix(key, value);
  n->next = NULL;
  cds_lfht_node_init(&n->lfht);
  __atomic_store_n(&n->state, LIVE, __ATOMIC_RELAXED);
  return n;
}

static void kill_cb(void *obj, void *arg) {
  struct node *n = obj;
  __atomic_store_n(&n->state, DEAD, __ATOMIC_RELAXED);
  tp_pool_put(arg, n);
}

static uint64_t n_epoch_retires, n_pool_retires, n_replaces;
static uint64_t n_reads; /* readers add theirs every READS_BATCH reads, and at the end */
#define READS_BATCH 256

/* What a run must have done for its checks to mean something: both retire
 * kinds, many replaces, reads and grace periods. It runs until it has (and
 * its time is up). */
#define MIN_REPLACES 1000
#define MIN_RETIRES_EACH 100
#define MIN_READS 10000
#define MIN_GRACE_PERIODS 10

static void count_read(uint64_t *reads) {
  if (++*reads % READS_BATCH == 0) __atomic_fetch_add(&n_reads, READS_BATCH, __ATOMIC_RELAXED);
}

static void count_reads_left(uint64_t reads) {
  __atomic_fetch_add(&n_reads, reads % READS_BATCH, __ATOMIC_RELAXED);
}

/* Half the retires each way, chosen at random. */
static void retire_node(struct node *old, uint64_t *rng) {
  int rc;
  if (tt_rand(rng) & 1) {
    rc = tp_epoch_retire(old, kill_cb, pool);
    __atomic_fetch_add(&n_epoch_retires, 1, __ATOMIC_RELAXED);
  } else {
    rc = tp_pool_retire(pool, old);
    __atomic_fetch_add(&n_pool_retires, 1, __ATOMIC_RELAXED);
  }
  if (rc != 0) fail_once("retire failed", old, (unsigned)-rc);
}

/* Checks a node a reader reached; returns 0 if it is sound. */
static int check_node(const struct node *n) {
  unsigned s = __atomic_load_n(&n->state, __ATOMIC_RELAXED);
  if (s != LIVE) {
    fail_once(s == DEAD ? "reader saw a DEAD node" : "reader saw a garbage state", n, s);
    return -1;
  }
  if (n->check != mix(n->key, n->value)) {
    fail_once("reader saw an inconsistent node (key/value/check)", n, s);
    return -1;
  }
  return 0;
}

/* Inside a section: sometimes yield (preemption while holding nodes). */
static void dawdle(uint64_t *rng) {
  uint64_t r = tt_rand(rng) & 63;
  if (r == 0) sched_yield();
  else if (r == 1) {
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
  }
}

#define RUN_SECONDS 2.5 /* per table, scaled by TP_TEST_SECONDS_SCALE */
static uint64_t seed;

/* ---- table 1: bucket array of RCU lists ---------------------------------- */

static struct node *buckets[NBUCKETS];
static pthread_mutex_t bucket_lock[NBUCKETS];

static void *list_reader(void *arg) {
  uint64_t rng = seed ^ (uintptr_t)arg * 0x1234567ull, reads = 0;
  while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
    uint64_t key = tt_rand(&rng) % NKEYS;
    tp_epoch_enter();
    if (tt_rand(&rng) % 4 == 0) tp_epoch_enter(); /* nested, left below */
    const struct node *found = NULL;
    for (struct node *n = tp_deref(buckets[key % NBUCKETS]); n; n = tp_deref(n->next)) {
      if (check_node(n)) break;
      if (n->key == key) {
        found = n;
        break;
      }
      dawdle(&rng);
    }
    if (!found && !__atomic_load_n(&stop, __ATOMIC_RELAXED)) fail_once("key missing", NULL, 0);
    /* Hold on to it across a delay: still LIVE, same contents. */
    if (found) {
      uint64_t v = found->value;
      dawdle(&rng);
      check_node(found);
      if (found->key != key || found->value != v) fail_once("node changed under a reader", found, 0);
    }
    while (tp_epoch_in_section()) tp_epoch_leave();
    count_read(&reads);
  }
  count_reads_left(reads);
  return NULL;
}

static void *list_writer(void *arg) {
  uint64_t rng = seed ^ (uintptr_t)arg * 0xabcdefull;
  while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
    uint64_t key = tt_rand(&rng) % NKEYS;
    unsigned b = key % NBUCKETS;
    struct node *fresh = node_new(key, tt_rand(&rng));
    if (!fresh) {
      fail_once("tp_pool_get failed", NULL, 0);
      break;
    }
    pthread_mutex_lock(&bucket_lock[b]);
    struct node **prev = &buckets[b], *old = *prev;
    while (old && old->key != key) prev = &old->next, old = *prev;
    if (!old) {
      pthread_mutex_unlock(&bucket_lock[b]);
      fail_once("writer: key missing", NULL, 0);
      break;
    }
    fresh->next = old->next;
    tp_publish(*prev, fresh);
    pthread_mutex_unlock(&bucket_lock[b]);
    retire_node(old, &rng);
    __atomic_fetch_add(&n_replaces, 1, __ATOMIC_RELAXED);
    uint64_t r = tt_rand(&rng) % 4096;
    if (r == 0) {
      if (tp_epoch_synchronize() != 0) fail_once("synchronize failed", NULL, 0);
    } else if (r == 1) {
      if (tp_epoch_barrier() != 0) fail_once("barrier failed", NULL, 0);
    }
  }
  return NULL;
}

/* Every 20 ms while the threads run: samples the retire backlog; 1 once
 * the run did enough. */
static int sample_progress(void *arg) {
  uint64_t *max_pending = arg;
  tp_epoch_stats s;
  tp_epoch_read_stats(&s);
  if (s.pending > *max_pending) *max_pending = s.pending;
  return __atomic_load_n(&n_replaces, __ATOMIC_RELAXED) > MIN_REPLACES &&
         __atomic_load_n(&n_epoch_retires, __ATOMIC_RELAXED) > MIN_RETIRES_EACH &&
         __atomic_load_n(&n_pool_retires, __ATOMIC_RELAXED) > MIN_RETIRES_EACH &&
         __atomic_load_n(&n_reads, __ATOMIC_RELAXED) > MIN_READS &&
         s.grace_periods > MIN_GRACE_PERIODS;
}

/* Runs readers and writers for the run time, and until they did enough;
 * returns when joined. */
static void run_threads(void *(*reader)(void *), void *(*writer)(void *)) {
  pthread_t r[NREADERS], w[NWRITERS];
  __atomic_store_n(&stop, 0, __ATOMIC_RELAXED);
  for (uintptr_t i = 0; i < NREADERS; i++)
    assert_int_equal(pthread_create(&r[i], NULL, reader, (void *)(i + 1)), 0);
  for (uintptr_t i = 0; i < NWRITERS; i++)
    assert_int_equal(pthread_create(&w[i], NULL, writer, (void *)(i + 101)), 0);
  uint64_t max_pending = 0;
  tt_run_until(tt_deadline(RUN_SECONDS), &failures, sample_progress, &max_pending, &stop);
  for (int i = 0; i < NREADERS; i++) pthread_join(r[i], NULL);
  for (int i = 0; i < NWRITERS; i++) pthread_join(w[i], NULL);
  printf("  max pending retires seen: %llu\n", (unsigned long long)max_pending);
}

static void check_end_state(uint64_t live_nodes) {
  assert_int_equal(tp_epoch_barrier(), 0);
  tp_epoch_stats s;
  assert_int_equal(tp_epoch_read_stats(&s), 0);
  printf("  reads %llu, replaces %llu (epoch retires %llu, pool retires %llu), grace periods "
         "%llu, cap waits %llu\n",
         (unsigned long long)n_reads, (unsigned long long)n_replaces,
         (unsigned long long)n_epoch_retires, (unsigned long long)n_pool_retires,
         (unsigned long long)s.grace_periods, (unsigned long long)s.cap_waits);
  tt_assert_no_failures(&failures);
  assert_int_equal(s.pending, 0);
  assert_int_equal(s.retired, s.freed);
  tp_pool_stats ps;
  assert_int_equal(tp_pool_read_stats(pool, &ps), 0);
  assert_int_equal(ps.in_use, live_nodes);
  /* The test did something (sample_progress waited for it). */
  assert_true(n_replaces > MIN_REPLACES);
  assert_true(n_epoch_retires > MIN_RETIRES_EACH && n_pool_retires > MIN_RETIRES_EACH);
  assert_true(n_reads > MIN_READS);
  assert_true(s.grace_periods > MIN_GRACE_PERIODS);
}

static void reset_counters(void) {
  tt_failures_reset(&failures);
  n_reads = n_replaces = n_epoch_retires = n_pool_retires = 0;
}

static void test_list_torture(void **state) {
  (void)state;
  reset_counters();
  for (int b = 0; b < NBUCKETS; b++) pthread_mutex_init(&bucket_lock[b], NULL);
  for (uint64_t k = 0; k < NKEYS; k++) {
    struct node *n = node_new(k, k);
    assert_non_null(n);
    n->next = buckets[k % NBUCKETS];
    tp_publish(buckets[k % NBUCKETS], n);
  }
  run_threads(list_reader, list_writer);
  check_end_state(NKEYS);
  for (int b = 0; b < NBUCKETS; b++) {
    struct node *n = buckets[b];
    tp_publish(buckets[b], NULL);
    while (n) {
      struct node *next = n->next;
      assert_int_equal(tp_pool_retire(pool, n), 0);
      n = next;
    }
  }
  assert_int_equal(tp_epoch_barrier(), 0);
  tp_pool_stats ps;
  assert_int_equal(tp_pool_read_stats(pool, &ps), 0);
  assert_int_equal(ps.in_use, 0);
}

/* ---- table 2: cds_lfht ---------------------------------------------------------- */

static struct cds_lfht *ht;

static int match_key(struct cds_lfht_node *ln, const void *key) {
  struct node *n = caa_container_of(ln, struct node, lfht);
  LFHT_ACQUIRE(n);
  return n->key == *(const uint64_t *)key;
}

static unsigned long hash_key(uint64_t key) { return (unsigned long)mix(key, 0x5eed); }

static void *lfht_reader(void *arg) {
  uint64_t rng = seed ^ (uintptr_t)arg * 0x7654321ull, reads = 0;
  while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
    uint64_t key = tt_rand(&rng) % NKEYS;
    struct cds_lfht_iter it;
    tp_epoch_enter();
    cds_lfht_lookup(ht, hash_key(key), match_key, &key, &it);
    struct cds_lfht_node *ln = cds_lfht_iter_get_node(&it);
    if (!ln) {
      /* add_replace is atomic: a lookup never misses a key. */
      fail_once("lfht: key missing", NULL, 0);
    } else {
      struct node *n = caa_container_of(ln, struct node, lfht);
      LFHT_ACQUIRE(n);
      if (check_node(n) == 0) {
        uint64_t v = n->value;
        dawdle(&rng);
        check_node(n);
        if (n->key != key || n->value != v) fail_once("lfht: node changed under a reader", n, 0);
      }
    }
    /* Sometimes walk part of the table, holding every node. */
    if (tt_rand(&rng) % 64 == 0) {
      unsigned seen = 0;
      /* (Not cds_lfht_for_each_entry: its container_of of NULL at the end
       * is undefined behaviour, and UBSan says so.) */
      for (cds_lfht_first(ht, &it); (ln = cds_lfht_iter_get_node(&it)); cds_lfht_next(ht, &it)) {
        struct node *n = caa_container_of(ln, struct node, lfht);
        LFHT_ACQUIRE(n);
        if (check_node(n) || ++seen == 64) break;
        dawdle(&rng);
      }
    }
    tp_epoch_leave();
    count_read(&reads);
  }
  count_reads_left(reads);
  return NULL;
}

static void *lfht_writer(void *arg) {
  uint64_t rng = seed ^ (uintptr_t)arg * 0xfeedull;
  while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
    uint64_t key = tt_rand(&rng) % NKEYS;
    struct node *fresh = node_new(key, tt_rand(&rng));
    if (!fresh) {
      fail_once("tp_pool_get failed", NULL, 0);
      break;
    }
    LFHT_RELEASE(fresh);
    /* Updates traverse the table: they run inside a read section. */
    tp_epoch_enter();
    struct cds_lfht_node *ol = cds_lfht_add_replace(ht, hash_key(key), match_key, &key, &fresh->lfht);
    tp_epoch_leave();
    if (!ol) {
      fail_once("lfht writer: key missing", NULL, 0);
      break;
    }
    retire_node(caa_container_of(ol, struct node, lfht), &rng);
    __atomic_fetch_add(&n_replaces, 1, __ATOMIC_RELAXED);
    if (tt_rand(&rng) % 4096 == 0 && tp_epoch_synchronize() != 0)
      fail_once("synchronize failed", NULL, 0);
  }
  return NULL;
}

static void test_lfht_torture(void **state) {
  (void)state;
  reset_counters();
  ht = cds_lfht_new_flavor(64, 64, 0, 0, &urcu_memb_flavor, NULL);
  assert_non_null(ht);
  tp_epoch_enter();
  for (uint64_t k = 0; k < NKEYS; k++) {
    struct node *n = node_new(k, k);
    assert_non_null(n);
    LFHT_RELEASE(n);
    assert_null(cds_lfht_add_replace(ht, hash_key(k), match_key, &k, &n->lfht));
  }
  tp_epoch_leave();
  run_threads(lfht_reader, lfht_writer);
  check_end_state(NKEYS);
  /* Empty the table (retiring every node), then destroy it. */
  struct cds_lfht_iter it;
  struct cds_lfht_node *ln;
  tp_epoch_enter();
  for (cds_lfht_first(ht, &it); (ln = cds_lfht_iter_get_node(&it)); cds_lfht_next(ht, &it)) {
    struct node *n = caa_container_of(ln, struct node, lfht);
    assert_int_equal(cds_lfht_del(ht, &n->lfht), 0);
    assert_int_equal(tp_pool_retire(pool, n), 0);
  }
  tp_epoch_leave();
  assert_int_equal(cds_lfht_destroy(ht, NULL), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  tp_pool_stats ps;
  assert_int_equal(tp_pool_read_stats(pool, &ps), 0);
  assert_int_equal(ps.in_use, 0);
}

static int setup(void **state) {
  (void)state;
  tp_pool_config pc = {.name = "torture-nodes", .obj_size = sizeof(struct node)};
  pool = tp_pool_create(&pc);
  return pool ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  tp_pool_destroy(pool);
  return 0;
}

int main(void) {
  seed = tt_seed("epoch_torture_test");
  printf("%d readers, %d writers, %.1f s per table, epoch mode %s\n", NREADERS, NWRITERS,
         tt_seconds(RUN_SECONDS), tp_epoch_mode());
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_list_torture),
      cmocka_unit_test(test_lfht_torture),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
