/*
 * bench/gc_pauses.h — the world-stopped pauses of one run of a collector
 * workload, taken the same way by the gc group (bench/gc_workloads.c) and
 * the gcserver group (bench/gcserver_workloads.c).
 *
 * A collector with an exact log of its stops (bench_gc_ops.stw_log:
 * Boehm's collection events) gives those. Otherwise (tp) ops->pauses is
 * polled: a pause is what the world-stopped total grew by since the last
 * poll, so every stop counts, also when a collection stops the world more
 * than once (tp's concurrent cycle: pause 1 and pause 2); stops between
 * two polls merge into one (n says how many were seen). Mean, max and
 * quantiles all come from this one log.
 */
#ifndef TP_BENCH_GC_PAUSES_H
#define TP_BENCH_GC_PAUSES_H

#include "bench/alloc.h"

#include <stdlib.h>

#define BENCH_PAUSE_MAX 16384

typedef struct bench_pauses {
  uint64_t n0, tot0;   /* pauses() at the start */
  size_t log0;         /* stw_log length at the start */
  uint64_t polled_tot; /* polling: the pause total last seen */
  size_t n;
  uint64_t ns[BENCH_PAUSE_MAX];
  double ms[BENCH_PAUSE_MAX]; /* ns in ms, sorted (bench_pauses_end) */
} bench_pauses;

static inline void bench_pauses_start(bench_pauses *p, const bench_gc_ops *g) {
  uint64_t last;
  g->pauses(&p->n0, &p->tot0, &last);
  p->polled_tot = p->tot0;
  p->n = 0;
  p->log0 = g->stw_log ? g->stw_log(NULL, 0) : 0;
}

/* Polling (collectors without stw_log): two loads and a compare while
 * nothing changed. */
static inline void bench_pauses_poll(bench_pauses *p, const bench_gc_ops *g) {
  if (g->stw_log) return;
  uint64_t n, tot, last;
  g->pauses(&n, &tot, &last);
  if (tot == p->polled_tot) return;
  if (p->n < BENCH_PAUSE_MAX) p->ns[p->n++] = tot - p->polled_tot;
  p->polled_tot = tot;
}

/* qsort's comparison of uint64_t values (also bench/gc_workloads.c's). */
static inline int bench_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Ends the log: sorts the pauses (ns and ms). *gcs: collections since the
 * start (pauses()); *total_ns: the stopped time, from the log when the
 * collector keeps one (its pauses() times whole collections), else from
 * pauses(). */
static inline void bench_pauses_end(bench_pauses *p, const bench_gc_ops *g, uint64_t *gcs,
                                    uint64_t *total_ns) {
  uint64_t n, tot, last;
  g->pauses(&n, &tot, &last);
  *gcs = n - p->n0;
  *total_ns = tot - p->tot0;
  if (g->stw_log) {
    static uint64_t all[BENCH_PAUSE_MAX];
    size_t k = g->stw_log(all, BENCH_PAUSE_MAX);
    if (k > BENCH_PAUSE_MAX) k = BENCH_PAUSE_MAX;
    p->n = 0;
    for (size_t i = p->log0; i < k; i++) p->ns[p->n++] = all[i];
    uint64_t sum = 0;
    for (size_t i = 0; i < p->n; i++) sum += p->ns[i];
    *total_ns = sum;
  }
  qsort(p->ns, p->n, sizeof p->ns[0], bench_cmp_u64);
  for (size_t i = 0; i < p->n; i++) p->ms[i] = (double)p->ns[i] / 1e6;
}

/* After bench_pauses_end: the sorted pauses in ms (bench_sorted_quantile_fn),
 * their sum and the longest. */
static inline bench_sorted bench_pauses_ms(const bench_pauses *p) {
  return (bench_sorted){p->ms, p->n};
}
static inline uint64_t bench_pauses_sum_ns(const bench_pauses *p) {
  uint64_t s = 0;
  for (size_t i = 0; i < p->n; i++) s += p->ns[i];
  return s;
}
static inline uint64_t bench_pauses_max_ns(const bench_pauses *p) {
  return p->n ? p->ns[p->n - 1] : 0;
}

#endif /* TP_BENCH_GC_PAUSES_H */
