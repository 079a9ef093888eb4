/*
 * store_test.c — the store's epoch guarantees, directly:
 *  1. an item found inside an epoch section keeps its bytes while another
 *     thread replaces and deletes that key many times (replaced items are
 *     retired, not reused, until the reader's section ends);
 *  2. a replace is one pointer store: a reader looping over a key that a
 *     writer keeps replacing never misses it (time-bounded; seeded
 *     sizes, the seed printed).
 * Plus the -m limit: filling far past it evicts and keeps mem_used <= -m.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tidepool/tidepool.h>

#include "examples/cache/store.h"

void server_wake_maintenance(void) {}

#define CHECK(c)                                                          \
  do {                                                                    \
    if (!(c)) {                                                           \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
      exit(1);                                                            \
    }                                                                     \
  } while (0)

static void set_value(const char *key, char fill, size_t n) {
  item *it = store_alloc(key, strlen(key), 0, 0, n + 2);
  CHECK(it);
  memset(item_value(it), fill, n);
  memcpy(item_value(it) + n, "\r\n", 2);
  CHECK(store_item(it, MODE_SET, 0, NULL) == ST_STORED);
}

static volatile int phase;
static uint64_t seed;

static void *writer(void *arg) {
  (void)arg;
  while (__atomic_load_n(&phase, __ATOMIC_ACQUIRE) == 0) {
  }
  for (int i = 0; i < 2000; i++) {
    set_value("k", (char)('B' + i % 20), 1000);
    if (i % 10 == 0) store_delete("k", 1, 0);
  }
  __atomic_store_n(&phase, 2, __ATOMIC_RELEASE);
  return NULL;
}

static void *replacer(void *arg) {
  uint64_t s = seed;
  (void)arg;
  while (__atomic_load_n(&phase, __ATOMIC_ACQUIRE) != 3) {
    s = s * 6364136223846793005ull + 1;
    set_value("r", 'x', 10 + (size_t)(s >> 40) % 3000);
  }
  return NULL;
}

int main(void) {
  seed = (uint64_t)time(NULL);
  printf("store_test seed %llu\n", (unsigned long long)seed);
  store_config sc = {.mem_limit = 64u << 20, .item_size_max = 1u << 20, .factor = 1.08};
  CHECK(store_init(&sc) == 0);

  /* 1 */
  set_value("k", 'A', 1000);
  pthread_t w;
  pthread_create(&w, NULL, writer, NULL);
  tp_epoch_enter();
  item *p = store_find("k", 1, true);
  CHECK(p && p->nbytes == 1002);
  __atomic_store_n(&phase, 1, __ATOMIC_RELEASE);
  while (__atomic_load_n(&phase, __ATOMIC_ACQUIRE) != 2) {
  }
  for (int i = 0; i < 1000; i++) CHECK(item_value(p)[i] == 'A'); /* not reused */
  tp_epoch_leave();
  pthread_join(w, NULL);
  printf("1. an item read inside a section survived 2000 replaces and 200 deletes\n");

  /* 2 */
  set_value("r", 'x', 10);
  phase = 0;
  pthread_t r;
  pthread_create(&r, NULL, replacer, NULL);
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint64_t reads = 0;
  do {
    for (int i = 0; i < 1000; i++, reads++) {
      tp_epoch_enter();
      item *q = store_find("r", 1, false);
      CHECK(q != NULL);
      CHECK(item_value(q)[0] == 'x');
      tp_epoch_leave();
    }
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while (t.tv_sec - t0.tv_sec < 2);
  __atomic_store_n(&phase, 3, __ATOMIC_RELEASE);
  pthread_join(r, NULL);
  printf("2. %llu reads during replaces, none missed\n", (unsigned long long)reads);

  /* 3 */
  for (int i = 0; i < 20000; i++) {
    char key[32];
    snprintf(key, sizeof key, "m%d", i);
    set_value(key, 'm', 10000); /* 200 MB into -m 64 */
  }
  store_stats ss;
  store_read_stats(&ss);
  printf("3. evictions %llu, mem_used %llu of %llu\n", (unsigned long long)ss.evictions,
         (unsigned long long)ss.mem_used, (unsigned long long)ss.mem_limit);
  CHECK(ss.evictions > 0 && ss.mem_used <= ss.mem_limit);
  store_shutdown();
  printf("PASS\n");
  return 0;
}
