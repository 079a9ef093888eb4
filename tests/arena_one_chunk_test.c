/*
 * Issue 14, fault 10: a TP_ARENA_CONCURRENT arena with max_bytes equal to
 * its chunk size was accepted but could never allocate (every allocation
 * wanted a second chunk; the first only held the arena). It must allocate
 * from the first chunk's rest as a plain arena does, then fail with ENOMEM,
 * and again after a reset. Several threads share it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <tidepool/tidepool.h>

#define CHUNK ((size_t)64 << 10)

/* Allocates 512-byte blocks until ENOMEM; returns the bytes got. */
static size_t fill(tp_arena *a) {
  size_t got = 0;
  for (;;) {
    errno = 0;
    char *p = tp_arena_alloc(a, 512);
    if (!p) {
      assert_int_equal(errno, ENOMEM);
      return got;
    }
    memset(p, 0x33, 512);
    got += 512;
    assert_true(got <= CHUNK);
  }
}

static void one_chunk_limit_allocates(void **s) {
  (void)s;
  for (unsigned flags = 0; flags <= TP_ARENA_CONCURRENT; flags += TP_ARENA_CONCURRENT) {
    tp_arena *a = tp_arena_create(
        &(tp_arena_config){.chunk_size = CHUNK, .max_bytes = CHUNK, .flags = flags});
    assert_non_null(a);
    size_t got = fill(a);
    printf("flags %u: %zu bytes from a one-chunk arena\n", flags, got);
    assert_true(got >= CHUNK / 2);
    tp_arena_stats st;
    assert_int_equal(tp_arena_read_stats(a, &st), 0);
    assert_int_equal(st.allocated, got);
    tp_arena_reset(a);
    assert_true(fill(a) >= CHUNK / 2);
    tp_arena_destroy(a);
  }
}

struct work {
  size_t got;
  tp_arena *a;
};

static void *worker(void *arg) {
  struct work *w = arg;
  for (char *p; (p = tp_arena_alloc(w->a, 256)); w->got += 256) memset(p, 1, 256);
  return NULL;
}

static void one_chunk_limit_shared_by_threads(void **s) {
  (void)s;
  tp_arena *a = tp_arena_create(&(tp_arena_config){
      .chunk_size = CHUNK, .max_bytes = CHUNK, .flags = TP_ARENA_CONCURRENT});
  assert_non_null(a);
  struct work w[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    w[i].got = 0;
    w[i].a = a;
    assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
  }
  size_t total = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    total += w[i].got;
  }
  assert_true(total >= CHUNK / 2 && total <= CHUNK);
  tp_arena_destroy(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(one_chunk_limit_allocates),
      cmocka_unit_test(one_chunk_limit_shared_by_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
