/*
 * The sweeper: start/stop, decay, the burst (RSS back down on its own),
 * thread churn (RSS flat), epoch safety of retired slabs, arena chunks,
 * fork with the sweeper running, accounting against the process RSS.
 *
 * RSS figures are only checked without sanitizers (their shadow memory and
 * quarantines are part of the RSS); under sanitizers the same workloads
 * run smaller and the library's own counters are checked instead.
 */
#include <tidepool/tidepool.h>

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "tests/test_util.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

static void start_stop(void **state) {
  (void)state;
  tp_sweeper_config bad = TP_SWEEPER_CONFIG_DEFAULT;
  bad.interval_ms = 60001;
  errno = 0;
  assert_int_equal(tp_sweeper_start(&bad), -EINVAL);
  assert_int_equal(errno, EINVAL);
  bad = (tp_sweeper_config)TP_SWEEPER_CONFIG_DEFAULT;
  bad.decay_ms = 3600001;
  assert_int_equal(tp_sweeper_start(&bad), -EINVAL);
  assert_int_equal(tp_sweeper_running(), 0);
  tp_pool_config c = {.obj_size = 64};
  tp_pool *p = tp_pool_create(&c);
  for (int i = 0; i < 50; i++) {
    tp_sweeper_config cfg = {.interval_ms = 1 + (unsigned)i % 3, .decay_ms = 5, .retain_bytes = 0};
    assert_int_equal(tp_sweeper_start(&cfg), 0);
    assert_int_equal(tp_sweeper_start(&cfg), 0); /* idempotent */
    assert_int_equal(tp_sweeper_running(), 1);
    void *v[100];
    for (int k = 0; k < 100; k++) v[k] = tp_pool_get(p);
    for (int k = 0; k < 100; k++) tp_pool_put(p, v[k]);
    usleep(2000);
    tp_sweeper_stop();
    assert_int_equal(tp_sweeper_running(), 0);
  }
  tp_sweeper_stop(); /* no-op */
  tp_stats st;
  assert_int_equal(tp_read_stats(&st), 0);
  assert_true(st.sweeps > 0);
  assert_int_equal(tp_read_stats(NULL), -EINVAL);
  /* Nothing lost across stops: every object still comes back. */
  tp_pool_stats ps;
  tp_pool_read_stats(p, &ps);
  assert_int_equal(ps.in_use, 0);
  assert_int_equal(ps.gets, ps.puts);
  tp_pool_destroy(p);
}

/* Memory used within decay_ms stays; what is older goes. */
static void decay_not_cliff(void **state) {
  (void)state;
  tp_sweeper_stop();
  tp_pool_config c = {.obj_size = 256};
  tp_pool *p = tp_pool_create(&c);
  static void *v[20000];
  for (int i = 0; i < 20000; i++) v[i] = tp_pool_get(p);
  for (int i = 0; i < 20000; i++) tp_pool_put(p, v[i]);
  tp_pool_stats before, after;
  tp_pool_read_stats(p, &before);
  assert_true(before.slabs > 10);
  /* Just used: a 60 s decay keeps all of it (other pools of the process
   * may give memory back in this pass; this one may not). tp_sweep_now
   * uses the configuration the sweeper last had. */
  tp_sweeper_config keep = {.interval_ms = 1000, .decay_ms = 60000, .retain_bytes = 0};
  assert_int_equal(tp_sweeper_start(&keep), 0);
  tp_sweeper_stop();
  tp_sweep_now();
  tp_pool_read_stats(p, &after);
  assert_int_equal(after.slabs, before.slabs);
  /* Everything now: back to the OS, objects keep working. */
  assert_true(tp_sweep_all() > 0);
  tp_pool_read_stats(p, &after);
  assert_true(after.slabs < before.slabs);
  assert_true(after.slabs_freed > 0);
  assert_true(after.bytes_mapped < before.bytes_mapped);
  assert_int_equal(tp_sweeper_start(NULL), 0); /* defaults again */
  tp_sweeper_stop();
  for (int i = 0; i < 20000; i++) {
    v[i] = tp_pool_get(p);
    memset(v[i], 1, 256);
  }
  for (int i = 0; i < 20000; i++) tp_pool_put(p, v[i]);
  tp_pool_destroy(p);
}

/* ---- the burst ----------------------------------------------------------- */

#define BURST_THREADS 4
static tp_pool *burst_pool;
static size_t burst_per_thread;
static void **burst_objs;
static tt_failures burst_failures;

static void *burst_get(void *arg) {
  size_t t = (size_t)(uintptr_t)arg;
  for (size_t i = 0; i < burst_per_thread; i++) {
    void *o = tp_pool_get(burst_pool);
    if (!o) {
      tt_fail_once(&burst_failures, "thread %zu: get %zu returned NULL", t, i);
      break;
    }
    memset(o, (int)i, 64);
    burst_objs[t * burst_per_thread + i] = o;
  }
  return NULL;
}

static void *burst_put(void *arg) {
  size_t t = (size_t)(uintptr_t)arg;
  /* Put back objects another thread got (cross-thread puts). */
  size_t from = ((t + 1) % BURST_THREADS) * burst_per_thread;
  for (size_t i = 0; i < burst_per_thread; i++) tp_pool_put(burst_pool, burst_objs[from + i]);
  return NULL;
}

/* Runs fn on every burst thread; asserts (here) on what they recorded. */
static void run_threads(void *(*fn)(void *)) {
  pthread_t th[BURST_THREADS];
  for (size_t t = 0; t < BURST_THREADS; t++)
    assert_int_equal(pthread_create(&th[t], NULL, fn, (void *)(uintptr_t)t), 0);
  for (size_t t = 0; t < BURST_THREADS; t++) pthread_join(th[t], NULL);
  tt_assert_no_failures(&burst_failures);
}

static void burst(void **state) {
  (void)state;
  tp_sweeper_stop();
  size_t total = SANITIZED ? ((size_t)1 << 19) : ((size_t)4 << 20); /* 4 M x 64 B */
  burst_per_thread = total / BURST_THREADS;
  burst_objs = calloc(total, sizeof *burst_objs);
  assert_non_null(burst_objs);
  memset(burst_objs, 0, total * sizeof *burst_objs); /* resident before the baseline */
  tp_pool_config c = {.name = "burst", .obj_size = 64};
  burst_pool = tp_pool_create(&c);
  assert_int_equal(tp_sweeper_start(NULL), 0); /* defaults: decay 1000 ms */
  tp_stats s0, s1, s2;
  tp_read_stats(&s0);
  size_t rss0 = tt_rss();

  run_threads(burst_get);
  size_t rss_peak = tt_rss();
  tp_read_stats(&s1);
  run_threads(burst_put);
  uint64_t t_put = tt_now_ns(); /* (for the printout) */

  /* Accounting: the library's resident bytes follow the RSS. */
  double d_lib = (double)(s1.bytes_resident - s0.bytes_resident);
  double d_rss = (double)rss_peak - (double)rss0;
  printf("burst: %zu objects, RSS %.1f -> %.1f MiB, bytes_resident +%.1f MiB\n", total,
         rss0 / 1048576.0, rss_peak / 1048576.0, d_lib / 1048576.0);
  assert_true(s1.bytes_in_use >= total * 64);
  if (!SANITIZED) assert_true(d_lib > 0.9 * d_rss && d_lib < 1.1 * d_rss);

  /* Back down on its own: the sweeper thread gives the memory back, with
   * no call from here. The library's own count must fall to its baseline
   * plus 10 % of the burst; sanitizer builds, which run a smaller burst,
   * also allow the 4 MiB the default retain_bytes keeps (1.6 % of the
   * full-size burst, but more than 10 % of the smaller one). How soon (decay_ms + 500 ms is the target) is
   * measured by //bench's burst, not here: this only waits long enough
   * to tell "never" from "late" (TT_HANG_MS). */
  size_t limit = rss0 + (rss_peak - rss0) / 10;
  uint64_t lib_delta = s1.bytes_resident - s0.bytes_resident;
  uint64_t lib_limit = s0.bytes_resident + lib_delta / 10 + (SANITIZED ? (uint64_t)4 << 20 : 0);
  size_t rss;
  uint64_t deadline = tt_hang_deadline();
  for (;;) {
    rss = tt_rss();
    tp_read_stats(&s2);
    if ((SANITIZED || rss <= limit) && s2.bytes_resident <= lib_limit) break;
    if (tt_now_ns() >= deadline) break;
    usleep(20000);
  }
  double after_ms = (double)(tt_now_ns() - t_put) / 1e6;
  printf("burst: %.0f ms after the puts: RSS %.1f MiB (limit %.1f), bytes_resident %.1f MiB, "
         "%llu slabs freed, %llu caches drained\n",
         after_ms, rss / 1048576.0, limit / 1048576.0, s2.bytes_resident / 1048576.0,
         (unsigned long long)s2.slabs_freed, (unsigned long long)s2.caches_drained);
  if (!SANITIZED) assert_true(rss <= limit);
  assert_true(s2.bytes_resident <= lib_limit);
  tp_pool_stats ps;
  tp_pool_read_stats(burst_pool, &ps);
  assert_int_equal(ps.in_use, 0);
  /* And it comes back for the next burst. */
  run_threads(burst_get);
  run_threads(burst_put);
  tp_sweeper_stop();
  tp_pool_destroy(burst_pool);
  free(burst_objs);
}

/* ---- thread churn -------------------------------------------------------- */

static tp_pool *churn_pool;

static void *churn_one(void *arg) {
  (void)arg;
  void *v[64];
  for (int r = 0; r < 4; r++) {
    for (int i = 0; i < 64; i++) v[i] = tp_pool_get(churn_pool);
    tp_epoch_enter();
    for (int i = 0; i < 64; i++) memset(v[i], r, 128);
    tp_epoch_leave();
    for (int i = 0; i < 63; i++) tp_pool_put(churn_pool, v[i]);
    tp_pool_retire(churn_pool, v[63]);
  }
  return NULL;
}

static size_t settled_rss(void) {
  /* Retires run, everything idle given back, the slabs it retired unmapped:
   * what remains is what the run keeps. */
  tp_epoch_barrier();
  tp_sweep_all();
  tp_epoch_barrier();
  return tt_rss();
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The median of n values (n odd); sorts v. */
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

/* 10 000 threads get, put and retire, enter and leave sections, and exit.
 * RSS is sampled (settled) at every tenth of the run from 10 % on: ten
 * samples, nine intervals of 1000 threads each.
 *
 * What a leak looks like: anything a thread leaves behind on the heap is
 * at least one malloc chunk (32 bytes in glibc), and anything mapped at
 * least a page (4 KiB), per thread; it grows the RSS in every interval by
 * about the same amount (at 32 bytes a thread, a page every 128 threads).
 * What the RSS does by itself: it moves in one-time steps as the process's
 * heap, the thread-stack cache and the library's caches settle (a clean
 * run under norseq: 3624 3628 3664 3664 3664 3676 3676 3748 3748 3748 KiB,
 * one step of 72 KiB at the seventh tenth), and single samples move by a
 * page or two as slabs and magazines come and go.
 *
 * So the trend is the Theil-Sen slope: the median of the slopes between
 * every two of the ten samples (45 of them). A leak raises all of them; a
 * step raises only the pairs it lies between, and one sample a few pages
 * off moves only its own nine. (The median of the nine consecutive
 * differences, used before, failed a clean norseq run in CI: samples
 * 3760 3828 3768 3816 3816 4112 4320 3776 3920 3776 KiB zigzag, so most
 * differences are large with either sign and their median was +49 bytes
 * per thread; the Theil-Sen slope of the same samples is +4.) It may be
 * at most 16 bytes per thread: half the smallest leak. A leak that comes in steps of its own (a cache that grows
 * by whole blocks now and then) may miss the median: the growth over the
 * whole run may be at most 64 bytes per thread (563 KiB, several times
 * the largest settling seen), whatever its shape. */
#define CHURN_SAMPLES 10
#define CHURN_TREND_BOUND 16 /* bytes per thread, Theil-Sen slope */
#define CHURN_TOTAL_BOUND 64 /* bytes per thread, first to last sample */
static void thread_churn(void **state) {
  (void)state;
  tp_sweeper_config cfg = {.interval_ms = 10, .decay_ms = 100, .retain_bytes = 0};
  assert_int_equal(tp_sweeper_start(&cfg), 0);
  tp_pool_config c = {.name = "churn", .obj_size = 128};
  churn_pool = tp_pool_create(&c);
  const int total = SANITIZED ? 2000 : 10000, per = total / CHURN_SAMPLES;
  size_t samples[CHURN_SAMPLES];
  int ns = 0;
  for (int i = 0; i < total; i += 4) {
    pthread_t th[4];
    for (int k = 0; k < 4; k++) pthread_create(&th[k], NULL, churn_one, NULL);
    for (int k = 0; k < 4; k++) pthread_join(th[k], NULL);
    if ((i + 4) % per == 0 && ns < CHURN_SAMPLES) samples[ns++] = settled_rss();
  }
  assert_int_equal(ns, CHURN_SAMPLES);
  double slopes[CHURN_SAMPLES * (CHURN_SAMPLES - 1) / 2];
  int npairs = 0;
  for (int a = 0; a < CHURN_SAMPLES; a++)
    for (int b = a + 1; b < CHURN_SAMPLES; b++)
      slopes[npairs++] = ((double)samples[b] - (double)samples[a]) / (b - a);
  double trend = median(slopes, npairs) / per; /* bytes per thread */
  double between = (double)(CHURN_SAMPLES - 1) * per;
  double growth = ((double)samples[CHURN_SAMPLES - 1] - (double)samples[0]) / between;
  tp_pool_stats ps;
  tp_pool_read_stats(churn_pool, &ps);
  tp_epoch_stats es;
  tp_epoch_read_stats(&es);
  printf("churn: %d threads, RSS at each tenth (KiB):", total);
  for (int k = 0; k < ns; k++) printf(" %zu", samples[k] / 1024);
  printf("; trend %+.1f bytes per thread (Theil-Sen over the %d samples, bound %d), growth "
         "%+.1f bytes per thread over %.0f threads (bound %d)%s; in_use %llu, pending "
         "retires %llu\n",
         trend, CHURN_SAMPLES, CHURN_TREND_BOUND, growth, between, CHURN_TOTAL_BOUND,
         SANITIZED ? ", not checked: the sanitizer's memory is in the RSS" : "",
         (unsigned long long)ps.in_use, (unsigned long long)es.pending);
  assert_int_equal(ps.in_use, 0);
  assert_int_equal(ps.gets, ps.puts);
  assert_int_equal(es.pending, 0);
  if (!SANITIZED) {
    assert_true(trend <= CHURN_TREND_BOUND);
    assert_true(growth <= CHURN_TOTAL_BOUND);
  }
  tp_sweeper_stop();
  tp_pool_destroy(churn_pool);
}

/* ---- epoch safety --------------------------------------------------------- */

static _Atomic int reader_state; /* 1 inside, 2 told to leave, 3 left */
static volatile char *reader_target;

static void *reader(void *arg) {
  (void)arg;
  tp_epoch_enter();
  atomic_store(&reader_state, 1);
  while (atomic_load(&reader_state) != 2) {
    (void)reader_target[0]; /* stays readable while we are inside */
    usleep(1000);
  }
  (void)reader_target[0];
  tp_epoch_leave();
  atomic_store(&reader_state, 3);
  return NULL;
}

static void epoch_safe_unmap(void **state) {
  (void)state;
  tp_sweeper_stop();
  tp_pool_config c = {.name = "epochy", .obj_size = 1024};
  tp_pool *p = tp_pool_create(&c);
  static void *v[4000];
  for (int i = 0; i < 4000; i++) v[i] = tp_pool_get(p);
  /* The reader holds a pointer to an object that we then retire. */
  reader_target = v[0];
  atomic_store(&reader_state, 0);
  pthread_t th;
  pthread_create(&th, NULL, reader, NULL);
  while (atomic_load(&reader_state) != 1) usleep(100);
  for (int i = 0; i < 4000; i++) assert_int_equal(tp_pool_retire(p, v[i]), 0);
  tp_pool_stats before, mid, after;
  tp_pool_read_stats(p, &before);
  /* Retired objects are not back: their slabs stay (only slabs that held
   * nothing but cached objects may go). Every retired object is still
   * readable: a read of unmapped memory would crash the test. */
  tp_sweep_all();
  tp_pool_read_stats(p, &mid);
  assert_true(mid.slabs_freed <= 2);
  unsigned sum = 0;
  for (int i = 0; i < 4000; i++) sum += ((volatile unsigned char *)v[i])[0];
  (void)sum;
  atomic_store(&reader_state, 2);
  while (atomic_load(&reader_state) != 3) usleep(100);
  pthread_join(th, NULL);
  /* After the grace period the objects are back; sweeping retires the
   * slabs, which are unmapped one more grace period later. */
  assert_int_equal(tp_epoch_barrier(), 0);
  tp_sweep_all();
  assert_int_equal(tp_epoch_barrier(), 0);
  tp_pool_read_stats(p, &after);
  printf("epoch pool: %llu slabs, %llu freed after the readers left\n",
         (unsigned long long)before.slabs, (unsigned long long)after.slabs_freed);
  assert_true(after.slabs_freed > 0);
  assert_true(after.bytes_mapped < before.bytes_mapped);
  assert_int_equal(after.in_use, 0);
  tp_pool_destroy(p);
}

/* ---- arena chunks ------------------------------------------------------------ */

static void arena_chunks_return(void **state) {
  (void)state;
  tp_sweeper_stop();
  tp_stats s0, s1, s2;
  tp_read_stats(&s0);
  tp_arena *a[8];
  for (int i = 0; i < 8; i++) {
    a[i] = tp_arena_create(NULL);
    assert_non_null(a[i]);
    for (int k = 0; k < 3000; k++) memset(tp_arena_alloc(a[i], 1000), k, 1000);
  }
  tp_read_stats(&s1);
  for (int i = 0; i < 8; i++) tp_arena_destroy(a[i]);
  size_t back = tp_sweep_all();
  tp_read_stats(&s2);
  printf("arenas: mapped %.1f -> %.1f -> %.1f MiB, %zu bytes given back\n",
         s0.bytes_mapped / 1048576.0, s1.bytes_mapped / 1048576.0, s2.bytes_mapped / 1048576.0,
         back);
  assert_true(s1.bytes_mapped > s0.bytes_mapped + 16 * 1024 * 1024);
  assert_true(back >= 16 * 1024 * 1024);
  assert_true(s2.bytes_mapped < s1.bytes_mapped - 16 * 1024 * 1024);
}

/* ---- fork ---------------------------------------------------------------------- */

static void fork_with_sweeper(void **state) {
  (void)state;
  tp_sweeper_config cfg = {.interval_ms = 1, .decay_ms = 1, .retain_bytes = 0};
  assert_int_equal(tp_sweeper_start(&cfg), 0);
  tp_pool_config c = {.obj_size = 64};
  tp_pool *p = tp_pool_create(&c);
  for (int round = 0; round < 20; round++) {
    void *v[500];
    for (int i = 0; i < 500; i++) v[i] = tp_pool_get(p);
    pid_t pid = fork();
    if (pid == 0) {
      alarm(20); /* a hang in the child fails the test instead of stalling it */
      /* The child: no sweeper thread; pools, sweeps and a new sweeper work. */
      int bad = tp_sweeper_running() != 0;
      for (int i = 0; i < 500; i++) tp_pool_put(p, v[i]);
      for (int i = 0; i < 500; i++) bad |= (v[i] = tp_pool_get(p)) == NULL;
      for (int i = 0; i < 500; i++) tp_pool_put(p, v[i]);
      tp_sweep_all();
#if !defined(__SANITIZE_THREAD__) /* TSan cannot start threads after a multi-threaded fork */
      bad |= tp_sweeper_start(&cfg) != 0;
      bad |= tp_sweeper_running() != 1;
      usleep(5000);
      tp_sweeper_stop();
#endif
      tp_pool_stats s;
      tp_pool_read_stats(p, &s);
      bad |= s.in_use != 0;
      _exit(bad ? 1 : 0);
    }
    assert_true(pid > 0);
    for (int i = 0; i < 500; i++) tp_pool_put(p, v[i]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status)) printf("child %d: status %d\n", round, status);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
  assert_int_equal(tp_sweeper_running(), 1);
  tp_sweeper_stop();
  tp_pool_destroy(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_stop),       cmocka_unit_test(decay_not_cliff),
      cmocka_unit_test(burst),            cmocka_unit_test(thread_churn),
      cmocka_unit_test(epoch_safe_unmap), cmocka_unit_test(arena_chunks_return),
      cmocka_unit_test(fork_with_sweeper),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
