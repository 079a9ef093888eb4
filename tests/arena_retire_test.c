/*
 * Retire-with-readers stress for arenas (issue 5): the configuration-
 * snapshot pattern. A writer builds each new configuration in a fresh
 * arena (small chunks, so it spans several chunks and a large mapping),
 * tp_publish()es it and tp_arena_retire()s the arena of the old one, while
 * 6 readers inside tp_epoch sections read the current configuration,
 * verify its contents, hold it across yields and verify it again. More
 * threads than cores. Under ASan a read of a destroyed configuration is
 * reported (its chunks are poisoned once back in the chunk pool, its large
 * mapping is unmapped). Seeded, time-bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <tidepool/arena.h>
#include <tidepool/epoch.h>

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include "tests/test_util.h"

#define NREADERS 6

struct entry {
  uint64_t key, value;
  char *name;
};

struct config {
  uint64_t version;
  tp_arena *arena;
  size_t n;
  struct entry **entries; /* each in the arena */
  uint64_t *big;          /* > a quarter chunk: its own mapping */
  size_t nbig;
  uint64_t sum; /* of every value and big[] word */
};

static struct config *current;
static int stop;
static uint64_t seed, reads, versions; /* reads and versions: atomic, kept current */
static tt_failures failures;

/* What a run must have done for its checks to mean something; it runs
 * until it has (and its time is up). */
#define MIN_VERSIONS 100
#define MIN_READS 1000
#define READS_BATCH 64 /* readers add theirs in batches, and at the end */

static void fail_once(const char *what, uint64_t version) {
  tt_fail_once(&failures, "%s (version %llu)", what, (unsigned long long)version);
}

static uint64_t value_of(uint64_t version, uint64_t key) {
  return (version * 0x9e3779b97f4a7c15ull) ^ (key * 0xbf58476d1ce4e5b9ull);
}

static struct config *build(uint64_t version, uint64_t *rng, unsigned flags) {
  tp_arena_config ac = {.chunk_size = 8192, .flags = flags};
  tp_arena *a = tp_arena_create(&ac);
  if (!a) return NULL;
  struct config *c = tp_arena_alloc(a, sizeof *c);
  if (!c) return NULL;
  c->version = version;
  c->arena = a;
  c->n = 50 + tt_rand(rng) % 100;
  c->entries = tp_arena_calloc(a, c->n, sizeof *c->entries);
  if (!c->entries) return NULL;
  c->sum = 0;
  for (size_t i = 0; i < c->n; i++) {
    struct entry *e = tp_arena_alloc(a, sizeof *e);
    if (!e) return NULL;
    e->key = i;
    e->value = value_of(version, i);
    char name[32];
    snprintf(name, sizeof name, "v%llu-e%zu", (unsigned long long)version, i);
    e->name = tp_arena_strdup(a, name);
    c->entries[i] = e;
    c->sum += e->value;
  }
  c->nbig = 512 + tt_rand(rng) % 512;
  c->big = tp_arena_alloc(a, c->nbig * sizeof *c->big);
  if (!c->big) return NULL;
  for (size_t i = 0; i < c->nbig; i++) c->sum += c->big[i] = value_of(version, 1000 + i);
  return c;
}

static int verify(const struct config *c) {
  uint64_t sum = 0;
  for (size_t i = 0; i < c->n; i++) {
    const struct entry *e = c->entries[i];
    if (e->key != i || e->value != value_of(c->version, i)) return -1;
    char name[32];
    snprintf(name, sizeof name, "v%llu-e%zu", (unsigned long long)c->version, i);
    if (strcmp(e->name, name)) return -2;
    sum += e->value;
  }
  for (size_t i = 0; i < c->nbig; i++) sum += c->big[i];
  return sum == c->sum ? 0 : -3;
}

static void *reader(void *arg) {
  uint64_t rng = seed ^ (uintptr_t)arg * 0x51ed27ull, n = 0, last = 0;
  while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
    tp_epoch_enter();
    const struct config *c = tp_deref(current);
    if (c->version < last) fail_once("version went backwards", c->version);
    last = c->version;
    if (verify(c)) fail_once("config contents wrong", c->version);
    /* Hold it: the writer publishes and retires meanwhile. */
    if (tt_rand(&rng) % 8 == 0) sched_yield();
    if (tt_rand(&rng) % 64 == 0) {
      struct timespec ts = {0, 200000};
      nanosleep(&ts, NULL);
    }
    if (verify(c)) fail_once("config changed under a reader", c->version);
    tp_epoch_leave();
    if (++n % READS_BATCH == 0) __atomic_fetch_add(&reads, READS_BATCH, __ATOMIC_RELAXED);
  }
  __atomic_fetch_add(&reads, n % READS_BATCH, __ATOMIC_RELAXED);
  return NULL;
}

static void *writer(void *arg) {
  (void)arg;
  uint64_t rng = seed, v = 1;
  while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
    /* Every fourth configuration in a concurrent arena. */
    v++;
    struct config *fresh = build(v, &rng, v % 4 == 0 ? TP_ARENA_CONCURRENT : 0);
    if (!fresh) {
      fail_once("build failed", v);
      break;
    }
    struct config *old = current;
    tp_publish(current, fresh);
    if (tp_arena_retire(old->arena) != 0) fail_once("tp_arena_retire failed", old->version);
    __atomic_store_n(&versions, v, __ATOMIC_RELAXED);
    if (tt_rand(&rng) % 256 == 0) tp_epoch_barrier();
  }
  return NULL;
}

static int did_enough(void *arg) {
  (void)arg;
  return __atomic_load_n(&versions, __ATOMIC_RELAXED) > MIN_VERSIONS &&
         __atomic_load_n(&reads, __ATOMIC_RELAXED) > MIN_READS;
}

static void test_retire_under_readers(void **state) {
  (void)state;
  seed = tt_seed("arena_retire_test");
  uint64_t rng = seed;
  current = build(1, &rng, 0);
  assert_non_null(current);
  pthread_t r[NREADERS], w;
  for (uintptr_t i = 0; i < NREADERS; i++)
    assert_int_equal(pthread_create(&r[i], NULL, reader, (void *)(i + 1)), 0);
  assert_int_equal(pthread_create(&w, NULL, writer, NULL), 0);
  tt_run_until(tt_deadline(2.5), &failures, did_enough, NULL, &stop);
  for (int i = 0; i < NREADERS; i++) pthread_join(r[i], NULL);
  pthread_join(w, NULL);
  printf("  %llu configurations published, %llu reads\n", (unsigned long long)versions,
         (unsigned long long)reads);
  tt_assert_no_failures(&failures);
  assert_true(versions > MIN_VERSIONS);
  assert_true(reads > MIN_READS);
  assert_int_equal(tp_epoch_barrier(), 0);
  tp_epoch_stats s;
  assert_int_equal(tp_epoch_read_stats(&s), 0);
  assert_int_equal(s.pending, 0);
  tp_arena_destroy(current->arena);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_retire_under_readers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
