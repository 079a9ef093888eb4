/*
 * The collector's metrics after Go's runtime/metrics: the pause histogram
 * (/gc/pauses:seconds), cumulative pause time, mark assist and background
 * mark CPU time, the time spent stopping the threads
 * (/sched/pauses/stopping/gc), the phase in progress (written by the collector), and
 * the pacer's trigger and hard limit, assists and waits (written by the
 * pacer and the allocators, gc/pacing.c). Read by tp_heap_read_stats from
 * any thread at any time.
 *
 * Every figure is one relaxed atomic word: a reader takes no lock and
 * waits for nobody, so reading costs a few dozen loads (docs/gc.md has the
 * measured figure). Words are exact one by one, the set is not a snapshot:
 * a read racing the end of a pause may see the bucket counted and `pauses`
 * not yet (or num_gc, counted after both). Pauses are recorded by one
 * thread at a time (the collector, under the heap's collection), so a
 * load-compare-store suffices for the maximum.
 */
#define _GNU_SOURCE
#include "gc/heap_internal.h"

/* The pause_hist bucket of a pause of ns nanoseconds (gc.h). */
static unsigned pause_bucket(uint64_t ns) {
  if (ns < ((uint64_t)1 << 10)) return 0;
  unsigned i = 64u - (unsigned)__builtin_clzll(ns) - 10u;
  return i < TP_HEAP_PAUSE_BUCKETS ? i : TP_HEAP_PAUSE_BUCKETS - 1;
}

void tp__gc_note_pause(tp_heap *h, uint64_t ns, uint64_t stop_ns) {
  tp__counter_add(&h->stop_total, (int64_t)stop_ns);
  tp__counter_max(&h->stop_max, stop_ns);
  tp__counter_add(&h->pause_total, (int64_t)ns);
  __atomic_store_n(&h->last_pause, ns, __ATOMIC_RELAXED);
  tp__counter_max(&h->pause_max, ns);
  tp__counter_add(&h->pause_hist[pause_bucket(ns)], 1);
  tp__counter_add(&h->pauses, 1);
}

void tp__gc_read_metrics(const tp_heap *h, tp_heap_stats *out) {
  for (unsigned i = 0; i < TP_HEAP_PAUSE_BUCKETS; i++)
    out->pause_hist[i] = tp__counter_get(&h->pause_hist[i]);
  out->pauses = tp__counter_get(&h->pauses);
  out->mark_assist_ns = tp__counter_get(&h->mark_assist_ns);
  out->mark_bg_cpu_ns = tp__counter_get(&h->mark_bg_cpu_ns);
  out->phase = (uint32_t)__atomic_load_n(&h->phase, __ATOMIC_RELAXED); /* TP__PH_* = TP_GC_PHASE_* */
  out->arenas = (uint32_t)__atomic_load_n(&h->narenas, __ATOMIC_RELAXED);
  out->gc_trigger = tp__counter_get(&h->gc_trigger);
  out->gc_hard_limit = tp__counter_get(&h->hard_limit);
  out->assists = tp__counter_get(&h->assists);
  out->assist_max_ns = tp__counter_get(&h->assist_max_ns);
  out->limit_waits = tp__counter_get(&h->limit_waits);
  out->limit_wait_ns = tp__counter_get(&h->limit_wait_ns);
  out->store_assists = tp__counter_get(&h->store_assists);
  out->store_assist_ns = tp__counter_get(&h->store_assist_ns);
  out->mark_term_satb_max = tp__counter_get(&h->mark_term_satb_max);
  out->stop_total_ns = tp__counter_get(&h->stop_total);
  out->stop_max_ns = tp__counter_get(&h->stop_max);
}
