/* bench/harness.c — the case registry and the helpers of harness.h. */
#include "bench/harness.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- registry ------------------------------------------------------------ */

#define MAX_CASES 256
#define MAX_INFO 16

static bench_case cases[MAX_CASES];
static size_t ncases;
static struct {
  char key[32];
  char value[160];
} infos[MAX_INFO];
static size_t ninfos;

void bench_register(const bench_case *c) {
  if (ncases == MAX_CASES) {
    fprintf(stderr, "bench: too many cases (raise MAX_CASES)\n");
    abort();
  }
  cases[ncases++] = *c;
}

size_t bench_case_count(void) { return ncases; }
const bench_case *bench_case_at(size_t i) { return i < ncases ? &cases[i] : NULL; }

void bench_info(const char *key, const char *value) {
  if (ninfos == MAX_INFO) return;
  snprintf(infos[ninfos].key, sizeof infos[ninfos].key, "%s", key);
  snprintf(infos[ninfos].value, sizeof infos[ninfos].value, "%s", value);
  ninfos++;
}
size_t bench_info_count(void) { return ninfos; }
const char *bench_info_key(size_t i) { return infos[i].key; }
const char *bench_info_value(size_t i) { return infos[i].value; }

void bench_counter(bench_out *out, const char *name, double value) {
  if (out->ncounters == BENCH_MAX_COUNTERS) return;
  snprintf(out->counter[out->ncounters].name, BENCH_COUNTER_NAME, "%s", name);
  out->counter[out->ncounters].value = value;
  out->ncounters++;
}

void bench_fail(bench_out *out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out->error, sizeof out->error, fmt, ap);
  va_end(ap);
  if (!out->error[0]) snprintf(out->error, sizeof out->error, "failed");
}

int bench_quick(void) {
  const char *q = getenv("TP_BENCH_QUICK");
  return q && *q && *q != '0';
}

/* ---- threads ---------------------------------------------------------------- */

struct thread_slot {
  pthread_t tid;
  int index;
  struct run *run;
  uint64_t start, end;
};

struct run {
  void (*init)(void *, int);
  void (*body)(void *, int);
  void *arg;
  pthread_barrier_t go;
  bench_spin_barrier running;
};

static void *thread_main(void *p) {
  struct thread_slot *s = p;
  struct run *r = s->run;
  if (r->init) r->init(r->arg, s->index);
  pthread_barrier_wait(&r->go);
  /* The futex barrier wakes sleepers one by one, and on a VM a wake-up can
   * lag by tens of microseconds: meet once more, spinning, so the clock
   * starts when every thread is running (not while one runs alone). */
  bench_spin_barrier_wait(&r->running);
  s->start = bench_now_ns();
  r->body(r->arg, s->index);
  s->end = bench_now_ns();
  return NULL;
}

double bench_run_threads(int n, void (*init)(void *, int), void (*body)(void *, int), void *arg,
                         bench_out *err) {
  struct run r = {init, body, arg, {{0}}, {.n = (unsigned)n}};
  struct thread_slot *slot = calloc((size_t)n, sizeof *slot);
  if (!slot) {
    bench_fail(err, "out of memory");
    return 0;
  }
  pthread_barrier_init(&r.go, NULL, (unsigned)n);
  int started = 0;
  for (; started < n; started++) {
    slot[started].index = started;
    slot[started].run = &r;
    int rc = pthread_create(&slot[started].tid, NULL, thread_main, &slot[started]);
    if (rc) {
      /* The barrier would never open: this is fatal for the worker. */
      fprintf(stderr, "bench: pthread_create: %s\n", strerror(rc));
      abort();
    }
  }
  uint64_t first = UINT64_MAX, last = 0;
  for (int i = 0; i < n; i++) {
    pthread_join(slot[i].tid, NULL);
    if (slot[i].start < first) first = slot[i].start;
    if (slot[i].end > last) last = slot[i].end;
  }
  pthread_barrier_destroy(&r.go);
  free(slot);
  return (double)(last - first);
}

void bench_spin_barrier_wait(bench_spin_barrier *b) {
  unsigned gen = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
  if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL) == b->n) {
    __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&b->generation, gen + 1, __ATOMIC_RELEASE);
    return;
  }
  unsigned spins = 0;
  while (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) == gen) bench_spin_wait(&spins);
}

/* ---- memory ------------------------------------------------------------------ */

size_t bench_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, resident = 0;
  if (!f) return 0;
  if (fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
  fclose(f);
  return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

void bench_sleep_until_ns(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

void *bench_map(size_t bytes) {
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

void bench_unmap(void *p, size_t bytes) {
  if (p) munmap(p, bytes);
}

/* ---- latency histogram ----------------------------------------------------------- */

bench_hist *bench_hist_new(void) { return bench_map(sizeof(bench_hist)); }
void bench_hist_free(bench_hist *h) { bench_unmap(h, sizeof *h); }

void bench_hist_add(bench_hist *h, uint64_t ns) {
  uint64_t us = ns / 1000;
  if (us > BENCH_HIST_US) us = BENCH_HIST_US;
  __atomic_fetch_add(&h->bucket[us], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
  uint64_t m = __atomic_load_n(&h->max_ns, __ATOMIC_RELAXED);
  while (ns > m && !__atomic_compare_exchange_n(&h->max_ns, &m, ns, 1, __ATOMIC_RELAXED,
                                                __ATOMIC_RELAXED)) {
  }
}

double bench_hist_quantile_us(const bench_hist *h, double q) {
  if (!h->count) return 0;
  uint64_t rank = (uint64_t)(q * (double)h->count), seen = 0;
  for (size_t i = 0; i <= BENCH_HIST_US; i++) {
    seen += h->bucket[i];
    if (seen > rank) return i == BENCH_HIST_US ? (double)h->max_ns / 1000.0 : (double)(i + 1);
  }
  return (double)h->max_ns / 1000.0;
}

const unsigned bench_cdf_permille[BENCH_CDF_POINTS] = {10,  50,  100, 200, 300, 400, 500,
                                                       600, 700, 800, 900, 950, 990, 999};

void bench_counter_cdf(bench_out *out, const char *prefix, const char *suffix,
                       double (*quantile)(double q, const void *arg), const void *arg) {
  for (size_t i = 0; i < BENCH_CDF_POINTS; i++) {
    char name[BENCH_COUNTER_NAME];
    snprintf(name, sizeof name, "%s_%04u%s", prefix, bench_cdf_permille[i], suffix);
    bench_counter(out, name, quantile(bench_cdf_permille[i] / 1000.0, arg));
  }
}

double bench_hist_quantile_fn(double q, const void *hist) {
  return bench_hist_quantile_us((const bench_hist *)hist, q);
}

double bench_sorted_quantile_fn(double q, const void *sorted) {
  const bench_sorted *s = sorted;
  if (!s->n) return 0;
  size_t i = (size_t)(q * (double)s->n);
  return s->v[i < s->n ? i : s->n - 1];
}
