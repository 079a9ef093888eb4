/*
 * Arena unit tests (issue 5): alignment, calloc overflow, strdup,
 * save/rewind, cleanups, max_bytes, large allocations, size 0, NULL
 * arguments, reset and keep_bytes, stats, retire. Under ASan, also that
 * memory given up by reset/rewind and the unallocated rest of a chunk are
 * poisoned.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <tidepool/arena.h>
#include <tidepool/epoch.h>

#include <errno.h>
#include <string.h>

#include "tests/test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISONED(p) __asan_address_is_poisoned(p)
#define HAVE_POISON 1
#else
#define POISONED(p) ((void)(p), 0)
#define HAVE_POISON 0
#endif

#define KiB ((size_t)1024)

static size_t r16(size_t n) { return n ? (n + 15) & ~(size_t)15 : 16; }

static tp_arena_stats stats(tp_arena *a) {
  tp_arena_stats s;
  assert_int_equal(tp_arena_read_stats(a, &s), 0);
  return s;
}

static tp_arena *make(size_t chunk, size_t max, size_t keep, unsigned flags) {
  tp_arena_config c = {.chunk_size = chunk, .max_bytes = max, .keep_bytes = keep, .flags = flags};
  tp_arena *a = tp_arena_create(&c);
  assert_non_null(a);
  return a;
}

/* ---- alignment ------------------------------------------------------------ */

static void check_alignment(unsigned flags) {
  tp_arena *a = make(0, 0, 0, flags);
  static const size_t sizes[] = {0, 1, 15, 16, 17, 100, 1000, 3000, 20000};
  for (size_t align = 1; align <= 4096; align *= 2) {
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
      char *p = tp_arena_alloc_aligned(a, sizes[i], align);
      assert_non_null(p);
      size_t want = align < 16 ? 16 : align;
      if ((uintptr_t)p % want) fail_msg("align %zu size %zu: %p", align, sizes[i], (void *)p);
      memset(p, 0xa5, sizes[i]); /* writable (ASan: unpoisoned) */
    }
  }
  for (size_t n = 0; n < 100; n++) {
    void *p = tp_arena_alloc(a, n);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
  }
  static const size_t bad[] = {0, 3, 24, 48, 8192, 65536, SIZE_MAX, ((size_t)1 << 63)};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    errno = 0;
    assert_null(tp_arena_alloc_aligned(a, 16, bad[i]));
    assert_int_equal(errno, EINVAL);
  }
  tp_arena_destroy(a);
}

static void test_alignment(void **state) {
  (void)state;
  check_alignment(0);
  check_alignment(TP_ARENA_CONCURRENT);
}

/* ---- calloc ---------------------------------------------------------------- */

static void check_calloc(unsigned flags) {
  tp_arena *a = make(16 * KiB, 0, 0, flags);
  /* Dirty memory, then reset: calloc must zero what it hands out. */
  for (int i = 0; i < 20; i++) memset(tp_arena_alloc(a, 1000), 0xff, 1000);
  tp_arena_reset(a);
  for (int i = 0; i < 20; i++) {
    unsigned char *z = tp_arena_calloc(a, 10, 100);
    assert_non_null(z);
    for (int k = 0; k < 1000; k++) assert_int_equal(z[k], 0);
  }
  tp_arena_stats s0 = stats(a);
  static const size_t ov[][2] = {{SIZE_MAX, 2}, {SIZE_MAX / 2 + 1, 2}, {(size_t)1 << 32, (size_t)1 << 32},
                                 {2, SIZE_MAX}};
  for (int i = 0; i < 4; i++) {
    errno = 0;
    assert_null(tp_arena_calloc(a, ov[i][0], ov[i][1]));
    assert_int_equal(errno, ENOMEM);
  }
  /* Huge but not overflowing: ENOMEM too, nothing changed. */
  errno = 0;
  assert_null(tp_arena_calloc(a, SIZE_MAX / 8, 1));
  assert_int_equal(errno, ENOMEM);
  tp_arena_stats s1 = stats(a);
  assert_int_equal(s1.allocated, s0.allocated);
  assert_int_equal(s1.bytes_held, s0.bytes_held);
  /* Still usable. */
  int *v = tp_arena_calloc(a, 100, sizeof(int));
  assert_non_null(v);
  for (int i = 0; i < 100; i++) assert_int_equal(v[i], 0);
  void *z0 = tp_arena_calloc(a, 0, 8), *z1 = tp_arena_calloc(a, 8, 0);
  assert_non_null(z0);
  assert_non_null(z1);
  assert_ptr_not_equal(z0, z1);
  tp_arena_destroy(a);
}

static void test_calloc_overflow(void **state) {
  (void)state;
  check_calloc(0);
  check_calloc(TP_ARENA_CONCURRENT);
}

/* ---- strdup ----------------------------------------------------------------- */

static void test_strdup(void **state) {
  (void)state;
  for (unsigned f = 0; f <= TP_ARENA_CONCURRENT; f++) {
    tp_arena *a = make(0, 0, 0, f);
    const char *src = "tidepool arena strdup";
    char *d = tp_arena_strdup(a, src);
    assert_non_null(d);
    assert_ptr_not_equal(d, src);
    assert_string_equal(d, src);
    char *e = tp_arena_strdup(a, "");
    assert_non_null(e);
    assert_string_equal(e, "");
    char big[30000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    char *b = tp_arena_strdup(a, big); /* large: own mapping */
    assert_non_null(b);
    assert_string_equal(b, big);
    errno = 0;
    assert_null(tp_arena_strdup(a, NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(tp_arena_strdup(NULL, src));
    assert_int_equal(errno, EINVAL);
    assert_string_equal(d, src); /* untouched by the rest */
    tp_arena_destroy(a);
  }
}

/* ---- cleanups ------------------------------------------------------------------ */

static int order[64], norder;
static void record(void *arg) { order[norder++] = (int)(intptr_t)arg; }

static void test_cleanups(void **state) {
  (void)state;
  for (unsigned f = 0; f <= TP_ARENA_CONCURRENT; f++) {
    tp_arena *a = make(8 * KiB, 0, 0, f);
    norder = 0;
    for (intptr_t i = 1; i <= 10; i++) {
      assert_int_equal(tp_arena_on_reset(a, record, (void *)i), 0);
      for (int k = 0; k < 10; k++) assert_non_null(tp_arena_alloc(a, 300)); /* spread over chunks */
    }
    assert_int_equal(norder, 0);
    tp_arena_reset(a);
    assert_int_equal(norder, 10);
    for (int i = 0; i < 10; i++) assert_int_equal(order[i], 10 - i); /* LIFO */
    tp_arena_reset(a); /* ran once only */
    assert_int_equal(norder, 10);
    norder = 0;
    for (intptr_t i = 1; i <= 5; i++) assert_int_equal(tp_arena_on_reset(a, record, (void *)i), 0);
    tp_arena_destroy(a);
    assert_int_equal(norder, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(order[i], 5 - i);
  }
}

/* ---- save / rewind ---------------------------------------------------------------- */

static void test_rewind(void **state) {
  (void)state;
  tp_arena *a = make(8 * KiB, 0, 0, 0);
  norder = 0;
  assert_int_equal(tp_arena_on_reset(a, record, (void *)1), 0);
  char *base = tp_arena_alloc(a, 64);
  memset(base, 1, 64);
  tp_arena_stats s_m1 = stats(a);
  tp_arena_mark m1 = tp_arena_save(a);
  char *first_after_m1 = tp_arena_alloc(a, 100);
  assert_int_equal(tp_arena_on_reset(a, record, (void *)2), 0);
  for (int i = 0; i < 30; i++) assert_non_null(tp_arena_alloc(a, 200)); /* new chunks */
  assert_non_null(tp_arena_alloc(a, 10000));                         /* large */
  tp_arena_stats s_m2 = stats(a);
  tp_arena_mark m2 = tp_arena_save(a);
  char *first_after_m2 = tp_arena_alloc(a, 48);
  assert_int_equal(tp_arena_on_reset(a, record, (void *)3), 0);
  assert_int_equal(tp_arena_on_reset(a, record, (void *)4), 0);
  for (int i = 0; i < 30; i++) assert_non_null(tp_arena_alloc(a, 300));
  assert_non_null(tp_arena_alloc(a, 12000)); /* large */
  assert_true(stats(a).large == 2);

  /* Inner rewind: cleanups 4, 3 run; memory and stats back to m2. */
  tp_arena_rewind(a, m2);
  assert_int_equal(norder, 2);
  assert_int_equal(order[0], 4);
  assert_int_equal(order[1], 3);
  tp_arena_stats s = stats(a);
  assert_int_equal(s.allocated, s_m2.allocated);
  assert_int_equal(s.large, 1);
  assert_int_equal(s.wasted, s_m2.wasted);
  if (HAVE_POISON) assert_true(POISONED(first_after_m2));
  assert_ptr_equal(tp_arena_alloc(a, 48), first_after_m2); /* reused */
  /* The same mark again (valid: not rewound past it). */
  tp_arena_rewind(a, m2);
  assert_int_equal(stats(a).allocated, s_m2.allocated);
  assert_int_equal(norder, 2);

  /* Outer rewind: cleanup 2 runs, back to m1. */
  tp_arena_rewind(a, m1);
  assert_int_equal(norder, 3);
  assert_int_equal(order[2], 2);
  s = stats(a);
  assert_int_equal(s.allocated, s_m1.allocated);
  assert_int_equal(s.large, 0);
  assert_int_equal(s.wasted, s_m1.wasted);
  assert_true(s.chunks >= s_m2.chunks); /* chunks kept as spares */
  if (HAVE_POISON) {
    assert_true(POISONED(first_after_m1));
    assert_false(POISONED(base));
  }
  for (int i = 0; i < 64; i++) assert_int_equal(base[i], 1);

  size_t before;
#ifndef TP_DEBUG /* debug builds abort on invalid marks (epoch_death_test) */
  /* m2 now lies beyond the arena's end: ignored. */
  tp_arena_rewind(a, m2);
  assert_int_equal(stats(a).allocated, s_m1.allocated);
  assert_int_equal(norder, 3);
  /* Zero mark, another arena's mark: ignored. */
  tp_arena_mark zero = {0};
  tp_arena_rewind(a, zero);
  tp_arena *b = make(8 * KiB, 0, 0, 0);
  assert_non_null(tp_arena_alloc(b, 10));
  tp_arena_mark mb = tp_arena_save(b);
  assert_non_null(tp_arena_alloc(a, 10));
  before = stats(a).allocated;
  tp_arena_rewind(a, mb);
  assert_int_equal(stats(a).allocated, before);
  tp_arena_destroy(b);
  /* A mark from before a reset: ignored. */
  tp_arena_mark old = tp_arena_save(a);
  tp_arena_reset(a);
  assert_int_equal(norder, 4); /* cleanup 1 */
  assert_non_null(tp_arena_alloc(a, 500));
  before = stats(a).allocated;
  tp_arena_rewind(a, old);
  assert_int_equal(stats(a).allocated, before);
#else
  tp_arena_reset(a);
  assert_int_equal(norder, 4); /* cleanup 1 */
#endif
  /* NULL arena, concurrent arena: no-ops. */
  tp_arena_rewind(NULL, m1);
  tp_arena_mark nm = tp_arena_save(NULL);
  assert_null(nm.chunk);
  tp_arena *c = make(0, 0, 0, TP_ARENA_CONCURRENT);
  assert_non_null(tp_arena_alloc(c, 100));
  tp_arena_mark cm = tp_arena_save(c);
  assert_null(cm.chunk);
  assert_non_null(tp_arena_alloc(c, 100));
  before = stats(c).allocated;
  tp_arena_rewind(c, cm);
  assert_int_equal(stats(c).allocated, before);
  tp_arena_destroy(c);
  tp_arena_destroy(a);
}

/* ---- max_bytes ------------------------------------------------------------------- */

static void check_max_bytes(unsigned flags) {
  const size_t chunk = 16 * KiB, max = 4 * chunk;
  tp_arena *a = make(chunk, max, 0, flags);
  size_t n = 0;
  void *p;
  errno = 0;
  while ((p = tp_arena_alloc(a, 1000)) != NULL) {
    memset(p, 3, 1000);
    assert_true(stats(a).bytes_held <= max);
    assert_true(++n < 1000);
  }
  assert_int_equal(errno, ENOMEM);
  tp_arena_stats s = stats(a);
  assert_true(s.bytes_held <= max);
  assert_true(s.high_water <= max);
  assert_true(n * 1000 >= max - 2 * chunk); /* it did use most of it */
  /* Large past the cap: ENOMEM; small that fits still works (plain). */
  errno = 0;
  assert_null(tp_arena_alloc(a, 3 * chunk));
  assert_int_equal(errno, ENOMEM);
  if (!flags) {
    errno = 0;
    assert_non_null(tp_arena_alloc(a, 16)); /* the rest of the current chunk */
  }
  /* Reset: fully usable again. */
  tp_arena_reset(a);
  for (size_t i = 0; i < n / 2; i++) assert_non_null(tp_arena_alloc(a, 1000));
  tp_arena_reset(a);
  assert_non_null(tp_arena_alloc(a, chunk)); /* a large one fits now */
  tp_arena_destroy(a);
}

static void test_max_bytes(void **state) {
  (void)state;
  check_max_bytes(0);
  check_max_bytes(TP_ARENA_CONCURRENT);
}

/* ---- large allocations ------------------------------------------------------------- */

static void test_large(void **state) {
  (void)state;
  const size_t chunk = 64 * KiB;
  /* Over a quarter chunk but fitting the current chunk: served from it, in
   * every build (with the inline fast path or without it, as under ASan). */
  tp_arena *f = make(chunk, 0, 0, 0);
  char *f1 = tp_arena_alloc(f, 32);
  char *f2 = tp_arena_alloc(f, 20 * KiB);
  assert_ptr_equal(f2, f1 + 32);
  assert_int_equal(stats(f).large, 0);
  assert_int_equal(stats(f).bytes_held, chunk);
  tp_arena_destroy(f);

  tp_arena *a = make(chunk, 0, 0, 0);
  char *prev = NULL;
  /* Fill most of the first chunk with quarter-chunk pieces. */
  for (int i = 0; i < 3; i++) prev = tp_arena_alloc(a, 16 * KiB - 16);
  char *small = tp_arena_alloc(a, 32);
  assert_ptr_equal(small, prev + 16 * KiB - 16);
  tp_arena_stats s0 = stats(a);
  assert_int_equal(s0.chunks, 1);
  /* Over a quarter chunk and more than the rest of the chunk. */
  size_t big = 20 * KiB;
  char *l = tp_arena_alloc(a, big);
  assert_non_null(l);
  memset(l, 7, big);
  tp_arena_stats s1 = stats(a);
  assert_int_equal(s1.large, 1);
  assert_int_equal(s1.chunks, 1);   /* no new chunk... */
  assert_int_equal(s1.wasted, 0);   /* ...and the current one not abandoned */
  size_t mapped = s1.bytes_held - s0.bytes_held;
  assert_true(mapped >= big && mapped <= 2 * big);
  assert_int_equal(s1.allocated, s0.allocated + big);
  /* The next small allocation continues the current chunk. */
  assert_ptr_equal(tp_arena_alloc(a, 32), small + 32);
  /* Aligned large. */
  char *al = tp_arena_alloc_aligned(a, 40 * KiB, 4096);
  assert_non_null(al);
  assert_int_equal((uintptr_t)al % 4096, 0);
  memset(al, 8, 40 * KiB);
  /* Huge. */
  size_t huge = (size_t)8 << 20;
  char *h = tp_arena_alloc(a, huge);
  assert_non_null(h);
  h[0] = 1;
  h[huge - 1] = 2;
  tp_arena_stats s2 = stats(a);
  assert_int_equal(s2.large, 3);
  assert_true(s2.bytes_held >= s1.bytes_held + huge + 40 * KiB);
  assert_true(s2.high_water >= s2.bytes_held);
  for (size_t i = 0; i < big; i++) assert_int_equal(l[i], 7);
  tp_arena_reset(a);
  tp_arena_stats s3 = stats(a);
  assert_int_equal(s3.large, 0);
  assert_int_equal(s3.bytes_held, chunk);
  assert_int_equal(s3.high_water, s2.high_water);
  assert_int_equal(s3.allocated, 0);
  tp_arena_destroy(a);

  /* A concurrent arena: large ones are mapped too. */
  tp_arena *c = make(chunk, 0, 0, TP_ARENA_CONCURRENT);
  l = tp_arena_alloc(c, big);
  assert_non_null(l);
  memset(l, 9, big);
  assert_int_equal(stats(c).large, 1);
  assert_int_equal(stats(c).allocated, big);
  tp_arena_destroy(c);
}

/* ---- size 0 ------------------------------------------------------------------------- */

static void test_size_zero(void **state) {
  (void)state;
  for (unsigned f = 0; f <= TP_ARENA_CONCURRENT; f++) {
    tp_arena *a = make(0, 0, 0, f);
    void *p[100];
    for (int i = 0; i < 100; i++) {
      p[i] = tp_arena_alloc(a, 0);
      assert_non_null(p[i]);
      assert_int_equal((uintptr_t)p[i] % 16, 0);
      for (int k = 0; k < i; k++) assert_ptr_not_equal(p[i], p[k]);
    }
    assert_int_equal(stats(a).allocated, 100 * 16);
    tp_arena_destroy(a);
  }
}

/* ---- NULL arguments and bad configurations ------------------------------------------- */

static void nop(void *arg) { (void)arg; }

static void test_null_args(void **state) {
  (void)state;
  errno = 0;
  assert_null(tp_arena_alloc(NULL, 16));
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_null(tp_arena_alloc_aligned(NULL, 16, 64));
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_null(tp_arena_calloc(NULL, 1, 16));
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_int_equal(tp_arena_on_reset(NULL, nop, NULL), -EINVAL);
  assert_int_equal(errno, EINVAL);
  tp_arena *a = make(0, 0, 0, 0);
  errno = 0;
  assert_int_equal(tp_arena_on_reset(a, NULL, NULL), -EINVAL);
  assert_int_equal(errno, EINVAL);
  tp_arena_stats s;
  errno = 0;
  assert_int_equal(tp_arena_read_stats(NULL, &s), -EINVAL);
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_int_equal(tp_arena_read_stats(a, NULL), -EINVAL);
  assert_int_equal(errno, EINVAL);
  errno = 0;
  assert_int_equal(tp_arena_retire(NULL), -EINVAL);
  assert_int_equal(errno, EINVAL);
  tp_arena_reset(NULL);
  tp_arena_destroy(NULL);
  tp_arena_destroy(a);

  static const tp_arena_config bad[] = {
      {.chunk_size = 1024},
      {.chunk_size = 4096},      /* under 8 KiB */
      {.chunk_size = 8191 - 63}, /* rounds to 8128 < 8 KiB */
      {.chunk_size = ((size_t)1 << 20) + 1},
      {.chunk_size = SIZE_MAX},
      {.flags = 0x80},
      {.chunk_size = 64 * KiB, .max_bytes = 32 * KiB},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    errno = 0;
    assert_null(tp_arena_create(&bad[i]));
    assert_int_equal(errno, EINVAL);
  }
  tp_arena *d = tp_arena_create(NULL);
  assert_non_null(d);
  assert_int_equal(stats(d).bytes_held, 64 * KiB); /* default chunk */
  tp_arena_destroy(d);
  tp_arena_config odd = {.chunk_size = 9000}; /* rounded up to 64 B */
  d = tp_arena_create(&odd);
  assert_non_null(d);
  assert_int_equal(stats(d).bytes_held, 9024);
  tp_arena_destroy(d);
}

/* ---- reset, keep_bytes, stats ----------------------------------------------------------- */

static void check_keep(size_t keep_chunks, unsigned flags) {
  const size_t chunk = 16 * KiB;
  tp_arena *a = make(chunk, 0, keep_chunks * chunk, flags);
  for (int i = 0; i < 150; i++) assert_non_null(tp_arena_alloc(a, 1000)); /* ~10 chunks */
  tp_arena_stats s = stats(a);
  assert_true(s.chunks >= 9);
  size_t hw = s.high_water;
  if (HAVE_POISON && !flags) {
    char *p = tp_arena_alloc(a, 64);
    tp_arena_reset(a);
    assert_true(POISONED(p));
  } else {
    tp_arena_reset(a);
  }
  s = stats(a);
  assert_int_equal(s.chunks, 1 + keep_chunks);
  assert_int_equal(s.bytes_held, (1 + keep_chunks) * chunk);
  assert_int_equal(s.allocated, 0);
  assert_int_equal(s.wasted, 0);
  assert_int_equal(s.resets, 1);
  assert_int_equal(s.high_water, hw);
  /* The kept chunks are used before new ones. */
  for (int i = 0; i < 30; i++) assert_non_null(tp_arena_alloc(a, 1000));
  s = stats(a);
  assert_true(s.chunks <= 1 + (keep_chunks > 2 ? keep_chunks : 2) + 1);
  tp_arena_reset(a);
  assert_int_equal(stats(a).resets, 2);
  tp_arena_destroy(a);
}

static void test_reset_keep(void **state) {
  (void)state;
  check_keep(0, 0);
  check_keep(2, 0);
  check_keep(5, 0);
  check_keep(0, TP_ARENA_CONCURRENT);
  check_keep(3, TP_ARENA_CONCURRENT);
}

static void test_stats(void **state) {
  (void)state;
  uint64_t rng = tt_seed("arena_unit_test/stats");
  const size_t chunk = 8 * KiB;
  tp_arena *a = make(chunk, 0, 0, 0);
  size_t want = 0, large_bytes = 0, nlarge = 0, hw = stats(a).high_water;
  for (int i = 0; i < 2000; i++) {
    size_t n = tt_rand(&rng) % 700;
    if (tt_rand(&rng) % 50 == 0) n = chunk / 4 + tt_rand(&rng) % (3 * chunk);
    tp_arena_stats b = stats(a);
    char *p = tp_arena_alloc(a, n);
    assert_non_null(p);
    memset(p, 1, n);
    tp_arena_stats s = stats(a);
    if (s.large > b.large) {
      want += n;
      large_bytes += s.bytes_held - b.bytes_held;
      nlarge++;
    } else {
      want += r16(n);
    }
    assert_int_equal(s.allocated, want);
    assert_int_equal(s.large, nlarge);
    assert_int_equal(s.bytes_held, s.chunks * chunk + large_bytes);
    assert_true(s.high_water >= hw && s.high_water >= s.bytes_held);
    hw = s.high_water;
    /* A skipped tail is shorter than what did not fit (<= a quarter chunk). */
    assert_true(s.wasted <= (s.chunks - 1) * (chunk / 4 + 16));
  }
  assert_true(nlarge > 10);
  tp_arena_destroy(a);
}

/* ---- ASan: the unallocated rest of a chunk is poisoned ----------------------------------- */

static void test_poison(void **state) {
  (void)state;
  if (!HAVE_POISON) skip(); /* only ASan builds poison */
  tp_arena *a = make(8 * KiB, 0, 0, 0);
  char *p = tp_arena_alloc(a, 40);
  assert_false(POISONED(p));
  assert_false(POISONED(p + 39));
  assert_true(POISONED(p + 48)); /* the next one is not allocated yet */
  char *q = tp_arena_alloc(a, 40);
  assert_ptr_equal(q, p + 48);
  assert_false(POISONED(q));
  tp_arena_mark m = tp_arena_save(a);
  char *r = tp_arena_alloc(a, 100);
  tp_arena_rewind(a, m);
  assert_true(POISONED(r));
  assert_false(POISONED(q));
  tp_arena_reset(a);
  assert_true(POISONED(p));
  tp_arena_destroy(a);
}

/* ---- retire ------------------------------------------------------------------------------- */

static int retired_cleanups;
static void count_cleanup(void *arg) {
  (void)arg;
  __atomic_fetch_add(&retired_cleanups, 1, __ATOMIC_RELAXED);
}

static void test_retire(void **state) {
  (void)state;
  tp_arena *a = make(0, 0, 0, 0);
  assert_int_equal(tp_arena_on_reset(a, count_cleanup, NULL), 0);
  assert_non_null(tp_arena_alloc(a, 100 * KiB));
  assert_int_equal(tp_arena_retire(a), 0);
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(retired_cleanups, 1); /* destroyed */

#ifndef TP_DEBUG /* debug builds abort instead (epoch_death_test) */
  /* Over the retire cap inside a section: -EDEADLK, still ours. */
  tp_epoch_config c = {.retire_cap = 256 * KiB};
  assert_int_equal(tp_epoch_configure(&c), 0);
  a = make(0, 0, 0, 0);
  assert_int_equal(tp_arena_on_reset(a, count_cleanup, NULL), 0);
  assert_non_null(tp_arena_alloc(a, 300 * KiB)); /* held > cap */
  tp_epoch_enter();
  errno = 0;
  assert_int_equal(tp_arena_retire(a), -EDEADLK);
  assert_int_equal(errno, EDEADLK);
  assert_non_null(tp_arena_alloc(a, 10)); /* still usable */
  tp_epoch_leave();
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(retired_cleanups, 1);
  assert_int_equal(tp_arena_retire(a), 0); /* outside: waits, then fine */
  assert_int_equal(tp_epoch_barrier(), 0);
  assert_int_equal(retired_cleanups, 2);
  assert_int_equal(tp_epoch_configure(NULL), 0);
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_alignment),  cmocka_unit_test(test_calloc_overflow),
      cmocka_unit_test(test_strdup),     cmocka_unit_test(test_cleanups),
      cmocka_unit_test(test_rewind),     cmocka_unit_test(test_max_bytes),
      cmocka_unit_test(test_large),      cmocka_unit_test(test_size_zero),
      cmocka_unit_test(test_null_args),  cmocka_unit_test(test_reset_keep),
      cmocka_unit_test(test_stats),      cmocka_unit_test(test_poison),
      cmocka_unit_test(test_retire),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
