/*
 * Unit tests of tp_pool: configuration, alignment, ctor/dtor, max_bytes,
 * bulk operations, stats, ZERO, bad arguments.
 */
#include <tidepool/pool.h>
#include <tidepool/sweeper.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/test_util.h"

static tp_pool *make(size_t size, size_t align) {
  tp_pool_config c = {.name = "t", .obj_size = size, .align = align};
  return tp_pool_create(&c);
}

static void config_validation(void **state) {
  (void)state;
  errno = 0;
  assert_null(tp_pool_create(NULL));
  assert_int_equal(errno, EINVAL);
  size_t bad_sizes[] = {0, ((size_t)1 << 20) + 1, SIZE_MAX};
  for (size_t i = 0; i < sizeof bad_sizes / sizeof *bad_sizes; i++) {
    errno = 0;
    assert_null(make(bad_sizes[i], 0));
    assert_int_equal(errno, EINVAL);
  }
  size_t bad_align[] = {3, 24, 8192, 1u << 20};
  for (size_t i = 0; i < sizeof bad_align / sizeof *bad_align; i++) {
    errno = 0;
    assert_null(make(64, bad_align[i]));
    assert_int_equal(errno, EINVAL);
  }
  tp_pool_config c = {.obj_size = 64, .flags = 0x80};
  errno = 0;
  assert_null(tp_pool_create(&c));
  assert_int_equal(errno, EINVAL);
  c.flags = TP_POOL_ZERO;
  c.ctor = (int (*)(void *, void *))1; /* never called */
  errno = 0;
  assert_null(tp_pool_create(&c));
  assert_int_equal(errno, EINVAL);
  /* max_bytes too small for one object. */
  tp_pool_config small = {.obj_size = 64 * 1024, .max_bytes = 4096};
  errno = 0;
  assert_null(tp_pool_create(&small));
  assert_int_equal(errno, EINVAL);
  /* The largest size works. */
  tp_pool *p = make((size_t)1 << 20, 0);
  assert_non_null(p);
  void *o = tp_pool_get(p);
  assert_non_null(o);
  memset(o, 0xab, (size_t)1 << 20);
  tp_pool_put(p, o);
  tp_pool_destroy(p);
}

static void alignment(void **state) {
  (void)state;
  for (size_t align = 1; align <= 4096; align *= 2) {
    size_t sizes[] = {1, 24, align, align + 1};
    for (size_t k = 0; k < 4; k++) {
      tp_pool *p = make(sizes[k], align);
      assert_non_null(p);
      void *v[300];
      for (int i = 0; i < 300; i++) {
        v[i] = tp_pool_get(p);
        assert_non_null(v[i]);
        assert_int_equal((uintptr_t)v[i] % align, 0);
        memset(v[i], i, sizes[k]);
      }
      for (int i = 0; i < 300; i++) tp_pool_put(p, v[i]);
      tp_pool_destroy(p);
    }
  }
  /* Defaults: 16, or the next power of two for sizes under 16. */
  struct {
    size_t size, align;
  } def[] = {{1, 1}, {2, 2}, {3, 4}, {5, 8}, {12, 16}, {24, 16}, {100, 16}};
  for (size_t k = 0; k < sizeof def / sizeof *def; k++) {
    tp_pool *p = make(def[k].size, 0);
    for (int i = 0; i < 50; i++) {
      void *o = tp_pool_get(p);
      assert_int_equal((uintptr_t)o % def[k].align, 0);
    }
    tp_pool_stats s;
    assert_int_equal(tp_pool_read_stats(p, &s), 0);
    assert_int_equal(s.in_use, 50);
    tp_pool_destroy(p);
  }
}

/* ctor/dtor bookkeeping: every constructed object is destroyed exactly once. */
#define TRACK_MAX 200000
static struct {
  void *obj[TRACK_MAX];
  int state[TRACK_MAX]; /* 1 constructed, 2 destroyed */
  int n, ctor_calls, dtor_calls, fail_every, fail_always;
} tr;

static int find(void *o) {
  for (int i = 0; i < tr.n; i++)
    if (tr.obj[i] == o) return i;
  return -1;
}
static int ctor(void *o, void *arg) {
  assert_ptr_equal(arg, &tr);
  tr.ctor_calls++;
  if (tr.fail_always || (tr.fail_every && tr.ctor_calls % tr.fail_every == 0)) return ENOSPC;
  int i = find(o);
  if (i < 0) {
    assert_true(tr.n < TRACK_MAX);
    i = tr.n++;
    tr.obj[i] = o;
  } else {
    assert_int_equal(tr.state[i], 2); /* reconstructed only after a dtor */
  }
  tr.state[i] = 1;
  memcpy(o, "ctor-ok", 8);
  return 0;
}
static void dtor(void *o, void *arg) {
  assert_ptr_equal(arg, &tr);
  tr.dtor_calls++;
  int i = find(o);
  assert_true(i >= 0);
  assert_int_equal(tr.state[i], 1);
  assert_memory_equal(o, "ctor-ok", 8);
  tr.state[i] = 2;
}

static void ctor_dtor(void **state) {
  (void)state;
  memset(&tr, 0, sizeof tr);
  tp_pool_config c = {.obj_size = 256, .ctor = ctor, .dtor = dtor, .arg = &tr};
  tp_pool *p = tp_pool_create(&c);
  assert_non_null(p);
  void *v[3000];
  for (int i = 0; i < 3000; i++) {
    v[i] = tp_pool_get(p);
    assert_non_null(v[i]);
    assert_memory_equal(v[i], "ctor-ok", 8); /* constructed */
    ((char *)v[i])[100] = (char)i;         /* application state */
  }
  for (int i = 0; i < 3000; i++) tp_pool_put(p, v[i]);
  int ctors = tr.ctor_calls;
  /* Objects come back constructed and untouched: no ctor runs again. */
  for (int i = 0; i < 3000; i++) {
    v[i] = tp_pool_get(p);
    assert_memory_equal(v[i], "ctor-ok", 8);
  }
  assert_int_equal(tr.ctor_calls, ctors);
  for (int i = 0; i < 3000; i++) tp_pool_put(p, v[i]);
  tp_pool_destroy(p);
  assert_int_equal(tr.dtor_calls, tr.n);
  for (int i = 0; i < tr.n; i++) assert_int_equal(tr.state[i], 2);
}

static void ctor_failure(void **state) {
  (void)state;
  memset(&tr, 0, sizeof tr);
  tr.fail_always = 1;
  tp_pool_config c = {.obj_size = 64, .ctor = ctor, .dtor = dtor, .arg = &tr};
  tp_pool *p = tp_pool_create(&c);
  errno = 0;
  assert_null(tp_pool_get(p));
  assert_int_equal(errno, ENOSPC); /* the ctor's error */
  void *b[8];
  assert_int_equal(tp_pool_get_bulk(p, b, 8), 0);
  tp_pool_stats s;
  tp_pool_read_stats(p, &s);
  assert_int_equal(s.in_use, 0);
  assert_int_equal(s.cached, 0);
  /* Recovery: gets succeed again; a ctor that fails now and then cuts a
   * refill short (or fails a get when it hits the first object of one)
   * and leaks nothing. */
  tr.fail_always = 0;
  tr.fail_every = 7;
  int got = 0, nulls = 0;
  void *v[500];
  while (got < 500) {
    void *o = tp_pool_get(p);
    if (!o) {
      assert_int_equal(errno, ENOSPC);
      nulls++;
      continue;
    }
    v[got++] = o;
  }
  assert_true(tr.ctor_calls >= 500 + 500 / 7);
  assert_true(nulls <= tr.ctor_calls / 7);
  for (int i = 0; i < 500; i++) tp_pool_put(p, v[i]);
  tp_pool_read_stats(p, &s);
  assert_int_equal(s.in_use, 0);
  tp_pool_destroy(p);
  assert_int_equal(tr.dtor_calls, tr.n); /* exactly the constructed ones */
}

static void max_bytes(void **state) {
  (void)state;
  tp_pool_config c = {.obj_size = 64, .max_bytes = 256 * 1024};
  tp_pool *p = tp_pool_create(&c);
  assert_non_null(p);
  static void *v[100000];
  int n = 0;
  for (;;) {
    errno = 0;
    void *o = tp_pool_get(p);
    if (!o) {
      assert_int_equal(errno, ENOMEM);
      break;
    }
    assert_true(n < 100000);
    v[n++] = o;
  }
  tp_pool_stats s;
  tp_pool_read_stats(p, &s);
  assert_true(s.bytes_mapped >= (uint64_t)n * 64);
  assert_true(s.slabs * 64 * 1024 <= 256 * 1024);
  /* Every object the cap allows was handed out: none stuck in caches. */
  assert_int_equal(s.in_use, (uint64_t)n);
  assert_true(n > 256 * 1024 / 64 * 9 / 10);
  /* Puts make gets succeed again, also from another CPU's cache. */
  tp_pool_put(p, v[--n]);
  void *o = tp_pool_get(p);
  assert_non_null(o);
  v[n++] = o;
  assert_null(tp_pool_get(p));
  for (int i = 0; i < n; i++) tp_pool_put(p, v[i]);
  for (int i = 0; i < n; i++) assert_non_null(v[i] = tp_pool_get(p));
  for (int i = 0; i < n; i++) tp_pool_put(p, v[i]);
  tp_pool_destroy(p);
}

static void bulk(void **state) {
  (void)state;
  tp_pool *p = make(48, 0);
  static void *v[5000], *sorted[5000];
  assert_int_equal(tp_pool_get_bulk(p, v, 5000), 5000);
  memcpy(sorted, v, sizeof v);
  qsort(sorted, 5000, sizeof *sorted, tt_cmp_ptr);
  for (int i = 1; i < 5000; i++) assert_true((char *)sorted[i] - (char *)sorted[i - 1] >= 48);
  for (int i = 0; i < 5000; i++) memset(v[i], 7, 48);
  tp_pool_stats s;
  tp_pool_read_stats(p, &s);
  assert_int_equal(s.in_use, 5000);
  /* put_bulk skips NULLs. */
  v[10] = NULL;
  tp_pool_put_bulk(p, v, 5000);
  tp_pool_read_stats(p, &s);
  assert_int_equal(s.in_use, 1); /* the one we NULLed out */
  assert_int_equal(tp_pool_get_bulk(p, v, 0), 0);
  errno = 0;
  assert_int_equal(tp_pool_get_bulk(NULL, v, 3), 0);
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_int_equal(tp_pool_get_bulk(p, NULL, 3), 0);
  assert_int_equal(errno, EINVAL);
  tp_pool_put_bulk(NULL, v, 3); /* no crash */
  tp_pool_put_bulk(p, NULL, 0);
  /* Mixed: bulk in, single out, and back. */
  for (int round = 0; round < 20; round++) {
    size_t k = tp_pool_get_bulk(p, v, 32 + (size_t)round * 40);
    assert_int_equal(k, 32 + (size_t)round * 40);
    for (size_t i = 0; i < k; i++) tp_pool_put(p, v[i]);
  }
  tp_pool_read_stats(p, &s);
  assert_int_equal(s.in_use, 1);
  assert_int_equal(s.in_use, s.gets - s.puts);
  tp_pool_destroy(p);
}

static void stats_consistency(void **state) {
  (void)state;
  uint64_t seed = tt_seed("stats_consistency");
  tp_pool *p = make(64, 0);
  static void *held[20000];
  int n = 0;
  uint64_t gets = 0, puts = 0;
  for (int step = 0; step < 200000; step++) {
    uint64_t r = tt_rand(&seed);
    switch (r % 4) {
      case 0:
      case 1:
        if (n < 20000) {
          held[n++] = tp_pool_get(p);
          gets++;
        }
        break;
      case 2:
        if (n) {
          size_t i = (r >> 8) % (size_t)n;
          tp_pool_put(p, held[i]);
          held[i] = held[--n];
          puts++;
        }
        break;
      case 3: {
        size_t want = (r >> 8) % 100;
        if (n + (int)want > 20000) break;
        size_t k = tp_pool_get_bulk(p, held + n, want);
        assert_int_equal(k, want);
        n += (int)k;
        gets += k;
        size_t back = (r >> 20) % ((size_t)n + 1);
        tp_pool_put_bulk(p, held + n - back, back);
        n -= (int)back;
        puts += back;
        break;
      }
    }
  }
  tp_pool_stats s;
  assert_int_equal(tp_pool_read_stats(p, &s), 0);
  assert_int_equal(s.gets, gets);
  assert_int_equal(s.puts, puts);
  assert_int_equal(s.in_use, (uint64_t)n); /* from the slabs' counts */
  assert_int_equal(s.in_use, s.gets - s.puts);
  assert_true(s.cache_hits > 0 && s.cache_hits <= s.gets + s.puts);
  assert_true(s.cache_misses > 0);
  assert_true(s.cached_cpu <= (uint64_t)s.cpu_cache_cap * s.ncpu);
  assert_true(s.cached_depot <= (uint64_t)s.depot_cap * s.batch);
  assert_true(s.bytes_resident <= s.bytes_mapped);
  assert_string_equal(s.name, "t");
  for (int i = 0; i < n; i++) tp_pool_put(p, held[i]);
  tp_pool_read_stats(p, &s);
  assert_int_equal(s.in_use, 0);
  tp_pool_destroy(p);
}

static void zero_flag(void **state) {
  (void)state;
  tp_pool_config c = {.obj_size = 100, .flags = TP_POOL_ZERO};
  tp_pool *p = tp_pool_create(&c);
  void *v[2000];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 2000; i++) {
      v[i] = tp_pool_get(p);
      for (int b = 0; b < 100; b++) assert_int_equal(((unsigned char *)v[i])[b], 0);
      memset(v[i], 0xff, 100);
    }
    for (int i = 0; i < 2000; i++) tp_pool_put(p, v[i]);
  }
  assert_int_equal(tp_pool_get_bulk(p, v, 2000), 2000);
  for (int i = 0; i < 2000; i++)
    for (int b = 0; b < 100; b++) assert_int_equal(((unsigned char *)v[i])[b], 0);
  tp_pool_put_bulk(p, v, 2000);
  tp_pool_destroy(p);
}

static void bad_arguments(void **state) {
  (void)state;
  errno = 0;
  assert_null(tp_pool_get(NULL));
  assert_int_equal(errno, EINVAL);
  tp_pool_put(NULL, NULL);
  tp_pool_put(NULL, &errno); /* no crash: nothing to put it into */
  tp_pool *p = make(32, 0);
  tp_pool_put(p, NULL); /* no-op */
  tp_pool_stats s;
  assert_int_equal(tp_pool_read_stats(NULL, &s), -EINVAL);
  assert_int_equal(tp_pool_read_stats(p, NULL), -EINVAL);
  tp_pool_read_stats(p, &s);
  assert_int_equal(s.gets, 0);
  tp_pool_destroy(NULL);
  tp_pool_destroy(p);
  const char *m = tp_percpu_mode();
  assert_true(strcmp(m, "rseq") == 0 || strcmp(m, "percpu-cas") == 0);
  if (getenv("GLIBC_TUNABLES") && strstr(getenv("GLIBC_TUNABLES"), "rseq=0"))
    assert_string_equal(m, "percpu-cas");
}

/* Many pools at once, interleaved, each object checked to belong. */
static void many_pools(void **state) {
  (void)state;
  tp_pool *p[12];
  for (int i = 0; i < 12; i++) p[i] = make((size_t)(8 << (i % 8)) + (size_t)i, 0);
  void *v[12][200];
  for (int r = 0; r < 5; r++) {
    for (int i = 0; i < 12; i++)
      for (int k = 0; k < 200; k++) {
        v[i][k] = tp_pool_get(p[i]);
        memset(v[i][k], i, (size_t)(8 << (i % 8)) + (size_t)i);
      }
    for (int i = 0; i < 12; i++)
      for (int k = 0; k < 200; k++) {
        for (size_t b = 0; b < (size_t)(8 << (i % 8)) + (size_t)i; b++)
          assert_int_equal(((unsigned char *)v[i][k])[b], i);
        tp_pool_put(p[i], v[i][k]);
      }
  }
  tp_stats st;
  assert_int_equal(tp_read_stats(&st), 0);
  assert_true(st.pools >= 12);
  assert_true(st.bytes_mapped >= st.bytes_resident);
  for (int i = 0; i < 12; i++) tp_pool_destroy(p[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(config_validation), cmocka_unit_test(alignment),
      cmocka_unit_test(ctor_dtor),         cmocka_unit_test(ctor_failure),
      cmocka_unit_test(max_bytes),         cmocka_unit_test(bulk),
      cmocka_unit_test(stats_consistency), cmocka_unit_test(zero_flag),
      cmocka_unit_test(bad_arguments),     cmocka_unit_test(many_pools),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
