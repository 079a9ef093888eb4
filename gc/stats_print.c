/*
 * tp_stats_print: every figure of the process in one report, as a table or
 * as JSON (<tidepool/stats.h>).
 *
 * It reads every layer, so it sits at the top of the library. Figures are
 * gathered first, each with the read function of its layer (the pool
 * registry walk, tp_pool_read_stats, tp_epoch_read_stats, the heap
 * registry walk with tp_heap_read_stats, the sweeper's configuration), and
 * written afterwards with `out` locked: no internal lock is ever held while
 * writing to a FILE that may block (a full pipe). None of those reads
 * stops a thread or waits for a collection or a grace period.
 */
#define _GNU_SOURCE
#include <tidepool/stats.h>
#include <tidepool/arena.h>
#include <tidepool/epoch.h>
#include <tidepool/gc.h>
#include <tidepool/percpu.h>
#include <tidepool/pool.h>

#include "arena/chunk_pools_internal.h"
#include "core/array_internal.h"
#include "gc/heap_internal.h"
#include "pool/sweeper_internal.h"
#include "pool/pool_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CHUNK_POOLS 16

/* Everything one report shows, gathered before anything is written. */
struct report {
  tp_stats proc;
  tp_epoch_stats epoch;
  tp_sweeper_config sweeper;
  int sweeper_running;
  tp_pool_stats *pools;
  size_t npools, pools_cap, pools_omitted;
  tp_pool_stats chunk[MAX_CHUNK_POOLS];
  size_t chunk_size[MAX_CHUNK_POOLS], nchunk;
  tp_heap_stats *heaps;
  size_t nheaps, heaps_cap, heaps_omitted;
};

/* Under the pools' pass lock: no pool is destroyed meanwhile. */
static void add_pool(tp_pool *p, void *arg) {
  struct report *r = arg;
  if (TP__ARRAY_RESERVE(r->pools, r->pools_cap, r->npools + 1, 16)) {
    r->pools_omitted++;
    return;
  }
  if (tp_pool_read_stats(p, &r->pools[r->npools]) == 0) r->npools++;
}

/* Under the heap registry lock: relaxed loads only (tp_heap_read_stats). */
static void add_heap(const tp_heap *h, void *arg) {
  struct report *r = arg;
  if (TP__ARRAY_RESERVE(r->heaps, r->heaps_cap, r->nheaps + 1, 16)) {
    r->heaps_omitted++;
    return;
  }
  if (tp_heap_read_stats(h, &r->heaps[r->nheaps]) == 0) r->nheaps++;
}

static void gather(struct report *r) {
  tp__pool_foreach(add_pool, r);
  tp_pool *cp[MAX_CHUNK_POOLS];
  size_t n = tp__arena_chunk_pools(cp, r->chunk_size, MAX_CHUNK_POOLS);
  if (n > MAX_CHUNK_POOLS) n = MAX_CHUNK_POOLS;
  for (size_t i = 0; i < n; i++)
    if (tp_pool_read_stats(cp[i], &r->chunk[r->nchunk]) == 0)
      r->chunk_size[r->nchunk] = r->chunk_size[i], r->nchunk++;
  tp_epoch_read_stats(&r->epoch);
  r->sweeper_running = tp__sweeper_read_config(&r->sweeper);
  tp__heap_foreach(add_heap, r);
  /* Last: the process totals then cover at least what the lists show. */
  tp_read_stats(&r->proc);
}

/* ---- the table ---------------------------------------------------------------- */

/* "123 B", "4.0 KiB", "12.5 MiB", "1.2 GiB". */
static const char *bytes(char *buf, size_t n, uint64_t v) {
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  if (v < 1024) {
    snprintf(buf, n, "%" PRIu64 " B", v);
    return buf;
  }
  double d = (double)v;
  int u = 0;
  while (d >= 1024 && u < 4) d /= 1024, u++;
  snprintf(buf, n, "%.1f %s", d, unit[u]);
  return buf;
}

/* A pacer figure as bytes, "manual" when the heap collects only on
 * demand (UINT64_MAX). */
static const char *pacer_bytes(char *buf, size_t n, uint64_t v) {
  if (v != UINT64_MAX) return bytes(buf, n, v);
  snprintf(buf, n, "manual");
  return buf;
}

/* Nanoseconds as "850 ns", "12.3 us", "4.5 ms", "1.20 s". */
static const char *nanos(char *buf, size_t n, uint64_t v) {
  if (v < 1000) snprintf(buf, n, "%" PRIu64 " ns", v);
  else if (v < 1000000) snprintf(buf, n, "%.1f us", (double)v / 1e3);
  else if (v < 1000000000) snprintf(buf, n, "%.1f ms", (double)v / 1e6);
  else snprintf(buf, n, "%.2f s", (double)v / 1e9);
  return buf;
}

static const char *phase_name(uint32_t phase) {
  switch (phase) {
    case TP_GC_PHASE_IDLE: return "idle";
    case TP_GC_PHASE_MARK: return "mark";
    case TP_GC_PHASE_MARK_TERMINATION: return "mark termination";
    case TP_GC_PHASE_SWEEP: return "sweep";
    default: return "?";
  }
}

static void print_pool_row(FILE *f, const char *name, const tp_pool_stats *s) {
  char m[16], rs[16];
  uint64_t ops = s->cache_hits + s->cache_misses;
  double hit = ops ? 100.0 * (double)s->cache_hits / (double)ops : 0;
  fprintf(f, "%-20.31s %8zu %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %8" PRIu64
             " %6" PRIu64 " %10s %10s %12" PRIu64 " %12" PRIu64 " %6.1f %8" PRIu64 " %6" PRIu64 "\n",
          name, s->obj_size, s->in_use, s->cached_cpu, s->cached_depot, s->slabs, s->slabs_freed,
          bytes(m, sizeof m, s->bytes_mapped), bytes(rs, sizeof rs, s->bytes_resident), s->gets,
          s->puts, hit, s->cache_misses, s->depot_exchanges);
}

static void print_pool_header(FILE *f, const char *first) {
  fprintf(f, "%-20s %8s %10s %10s %10s %8s %6s %10s %10s %12s %12s %6s %8s %6s\n", first, "size",
          "in_use", "cpu_cache", "depot", "slabs", "freed", "mapped", "resident", "gets", "puts",
          "hit%", "misses", "exch");
}

static void print_table(FILE *f, const struct report *r) {
  char a[16], b[16], c[16], d[16], e[16];
  fprintf(f, "tidepool %s statistics (pid %ld): percpu %s, epoch %s\n", tp_version(),
          (long)getpid(), tp_percpu_mode(), tp_epoch_mode());
  const tp_stats *p = &r->proc;
  fprintf(f, "process: mapped %s, resident %s, in use %s, cached %s, returned %s (ever); %" PRIu64
             " pools\n",
          bytes(a, sizeof a, p->bytes_mapped), bytes(b, sizeof b, p->bytes_resident),
          bytes(c, sizeof c, p->bytes_in_use), bytes(d, sizeof d, p->bytes_cached),
          bytes(e, sizeof e, p->bytes_returned), p->pools);

  fprintf(f, "\npools (objects; gets, puts, hit%%, misses and exchanges since creation):\n");
  print_pool_header(f, "pool");
  for (size_t i = 0; i < r->npools; i++)
    print_pool_row(f, r->pools[i].name[0] ? r->pools[i].name : "(unnamed)", &r->pools[i]);
  if (r->pools_omitted) fprintf(f, "(%zu pools omitted: out of memory)\n", r->pools_omitted);

  fprintf(f, "\narena chunk pools (chunks):\n");
  print_pool_header(f, "chunk size");
  for (size_t i = 0; i < r->nchunk; i++) print_pool_row(f, bytes(a, sizeof a, r->chunk_size[i]), &r->chunk[i]);
  if (!r->nchunk) fprintf(f, "(none: no arena created yet)\n");

  const tp_epoch_stats *ep = &r->epoch;
  fprintf(f, "\nepoch: retired %" PRIu64 ", freed %" PRIu64 ", pending %" PRIu64 " (%s of cap %s); "
             "grace periods %" PRIu64 ", cap waits %" PRIu64 ", cap failures %" PRIu64
             ", stalls %" PRIu64 ", readers %" PRIu64 "\n",
          ep->retired, ep->freed, ep->pending, bytes(a, sizeof a, ep->pending_bytes),
          bytes(b, sizeof b, ep->retire_cap), ep->grace_periods, ep->cap_waits, ep->cap_failures,
          ep->stalls, ep->readers);

  fprintf(f, "sweeper: %s, interval %u ms, decay %u ms, retain %s; sweeps %" PRIu64
             ", caches drained %" PRIu64 ", slabs freed %" PRIu64 "\n",
          r->sweeper_running ? "running" : "not running", r->sweeper.interval_ms,
          r->sweeper.decay_ms, bytes(a, sizeof a, r->sweeper.retain_bytes), p->sweeps,
          p->caches_drained, p->slabs_freed);

  fprintf(f, "\nheaps (tracing collector): %zu\n", r->nheaps);
  for (size_t i = 0; i < r->nheaps; i++) {
    const tp_heap_stats *h = &r->heaps[i];
    fprintf(f, "heap %zu: alloc %s, live %s, sys %s, inuse %s; regions %" PRIu64 " of %s, large %" PRIu64
               "; threads %" PRIu64 "%s\n",
            i, bytes(a, sizeof a, h->heap_alloc), bytes(b, sizeof b, h->heap_live),
            bytes(c, sizeof c, h->heap_sys), bytes(d, sizeof d, h->heap_inuse), h->regions,
            bytes(e, sizeof e, h->region_size), h->large_objects, h->threads,
            h->checkmark ? "; checkmark on" : "");
    char next[24], trig[24], hard[24];
    pacer_bytes(next, sizeof next, h->next_gc);
    pacer_bytes(trig, sizeof trig, h->gc_trigger);
    pacer_bytes(hard, sizeof hard, h->gc_hard_limit);
    fprintf(f, "  collections %" PRIu64 ", next at %s (goal %s, hard limit %s); pauses total %s, "
               "max %s, last %s; mark %s, sweep %s; gray overflows %" PRIu64 "\n",
            h->num_gc, trig, next, hard, nanos(a, sizeof a, h->pause_total_ns),
            nanos(b, sizeof b, h->pause_max_ns), nanos(c, sizeof c, h->last_pause_ns),
            nanos(d, sizeof d, h->mark_ns), nanos(e, sizeof e, h->sweep_ns), h->gray_overflows);
    fprintf(f, "  objects live %" PRIu64 ", allocated %" PRIu64 ", freed %" PRIu64 "; bytes allocated %s; "
               "regions released %" PRIu64 "; finalizers run %" PRIu64 ", pending %" PRIu64 "\n",
            h->objects_live, h->objects_alloc, h->objects_freed, bytes(a, sizeof a, h->total_alloc),
            h->regions_released, h->finalizers_run, h->finalizers_pending);
    fprintf(f, "  phase %s; arenas as roots %" PRIu32 "; mark assists %" PRIu64 " (%s, max %s), "
               "hard-limit waits %" PRIu64 " (%s); background mark CPU %s\n",
            phase_name(h->phase), h->arenas, h->assists, nanos(a, sizeof a, h->mark_assist_ns),
            nanos(b, sizeof b, h->assist_max_ns), h->limit_waits, nanos(c, sizeof c, h->limit_wait_ns),
            nanos(d, sizeof d, h->mark_bg_cpu_ns));
    fprintf(f, "  store assists %" PRIu64 " (%s); most logged values marked in one pause 2 %" PRIu64
               "; stopping the threads %s of the pauses (max %s)\n",
            h->store_assists, nanos(a, sizeof a, h->store_assist_ns), h->mark_term_satb_max,
            nanos(b, sizeof b, h->stop_total_ns), nanos(c, sizeof c, h->stop_max_ns));
    /* The non-empty buckets of the pause histogram, as [low, high). */
    fprintf(f, "  pauses %" PRIu64 ":", h->pauses);
    for (unsigned k = 0; k < TP_HEAP_PAUSE_BUCKETS; k++) {
      if (!h->pause_hist[k]) continue;
      if (k + 1 < TP_HEAP_PAUSE_BUCKETS)
        fprintf(f, " [%s, %s) %" PRIu64, nanos(a, sizeof a, tp_heap_pause_bucket_ns(k)),
                nanos(b, sizeof b, tp_heap_pause_bucket_ns(k + 1)), h->pause_hist[k]);
      else
        fprintf(f, " [%s, ...) %" PRIu64, nanos(a, sizeof a, tp_heap_pause_bucket_ns(k)),
                h->pause_hist[k]);
    }
    fputc('\n', f);
  }
  if (r->heaps_omitted) fprintf(f, "(%zu heaps omitted: out of memory)\n", r->heaps_omitted);
}

/* ---- JSON --------------------------------------------------------------------- */

/* A JSON string: quotes, backslashes and every byte outside printable
 * ASCII escaped (\u00XX: bytes read as Latin-1), so any pool name gives
 * valid UTF-8 JSON. */
static void json_str(FILE *f, const char *s, size_t max) {
  fputc('"', f);
  for (size_t i = 0; i < max && s[i]; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20 || ch >= 0x7f) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

#define JU(f, sep, key, v) fprintf(f, "%s\"%s\": %" PRIu64, sep, key, (uint64_t)(v))

/* A pacer figure: null when the heap collects only on demand (UINT64_MAX). */
static void ju_or_null(FILE *f, const char *key, uint64_t v) {
  if (v == UINT64_MAX) fprintf(f, ", \"%s\": null", key);
  else JU(f, ", ", key, v);
}

static void json_pool(FILE *f, const tp_pool_stats *s) {
  fprintf(f, "{\"name\": ");
  json_str(f, s->name, sizeof s->name);
  JU(f, ", ", "obj_size", s->obj_size);
  JU(f, ", ", "stride", s->stride);
  JU(f, ", ", "in_use", s->in_use);
  JU(f, ", ", "cached", s->cached);
  JU(f, ", ", "cached_cpu", s->cached_cpu);
  JU(f, ", ", "cached_depot", s->cached_depot);
  JU(f, ", ", "slabs", s->slabs);
  JU(f, ", ", "bytes_mapped", s->bytes_mapped);
  JU(f, ", ", "bytes_resident", s->bytes_resident);
  JU(f, ", ", "gets", s->gets);
  JU(f, ", ", "puts", s->puts);
  JU(f, ", ", "cache_hits", s->cache_hits);
  JU(f, ", ", "cache_misses", s->cache_misses);
  JU(f, ", ", "depot_exchanges", s->depot_exchanges);
  JU(f, ", ", "slabs_freed", s->slabs_freed);
  JU(f, ", ", "cpu_cache_cap", s->cpu_cache_cap);
  JU(f, ", ", "batch", s->batch);
  JU(f, ", ", "depot_cap", s->depot_cap);
  JU(f, ", ", "ncpu", s->ncpu);
  fputc('}', f);
}

static void print_json(FILE *f, const struct report *r) {
  fprintf(f, "{\"version\": ");
  json_str(f, tp_version(), 64);
  JU(f, ", ", "pid", getpid());
  fprintf(f, ", \"percpu_mode\": ");
  json_str(f, tp_percpu_mode(), 64);
  fprintf(f, ", \"epoch_mode\": ");
  json_str(f, tp_epoch_mode(), 64);

  const tp_stats *p = &r->proc;
  fprintf(f, ",\n \"process\": {");
  JU(f, "", "bytes_mapped", p->bytes_mapped);
  JU(f, ", ", "bytes_resident", p->bytes_resident);
  JU(f, ", ", "bytes_in_use", p->bytes_in_use);
  JU(f, ", ", "bytes_cached", p->bytes_cached);
  JU(f, ", ", "bytes_returned", p->bytes_returned);
  JU(f, ", ", "pools", p->pools);
  fprintf(f, "}");

  fprintf(f, ",\n \"pools\": [");
  for (size_t i = 0; i < r->npools; i++) {
    fprintf(f, "%s\n  ", i ? "," : "");
    json_pool(f, &r->pools[i]);
  }
  fprintf(f, "]");
  JU(f, ",\n ", "pools_omitted", r->pools_omitted);

  fprintf(f, ",\n \"arena_chunk_pools\": [");
  for (size_t i = 0; i < r->nchunk; i++) {
    fprintf(f, "%s\n  {\"chunk_size\": %zu, \"pool\": ", i ? "," : "", r->chunk_size[i]);
    json_pool(f, &r->chunk[i]);
    fputc('}', f);
  }
  fprintf(f, "]");

  const tp_epoch_stats *ep = &r->epoch;
  fprintf(f, ",\n \"epoch\": {");
  JU(f, "", "retired", ep->retired);
  JU(f, ", ", "freed", ep->freed);
  JU(f, ", ", "pending", ep->pending);
  JU(f, ", ", "pending_bytes", ep->pending_bytes);
  JU(f, ", ", "retire_cap", ep->retire_cap);
  JU(f, ", ", "grace_periods", ep->grace_periods);
  JU(f, ", ", "cap_waits", ep->cap_waits);
  JU(f, ", ", "cap_failures", ep->cap_failures);
  JU(f, ", ", "stalls", ep->stalls);
  JU(f, ", ", "readers", ep->readers);
  fprintf(f, "}");

  fprintf(f, ",\n \"sweeper\": {\"running\": %s", r->sweeper_running ? "true" : "false");
  JU(f, ", ", "interval_ms", r->sweeper.interval_ms);
  JU(f, ", ", "decay_ms", r->sweeper.decay_ms);
  JU(f, ", ", "retain_bytes", r->sweeper.retain_bytes);
  JU(f, ", ", "sweeps", p->sweeps);
  JU(f, ", ", "caches_drained", p->caches_drained);
  JU(f, ", ", "slabs_freed", p->slabs_freed);
  fprintf(f, "}");

  fprintf(f, ",\n \"heaps\": [");
  for (size_t i = 0; i < r->nheaps; i++) {
    const tp_heap_stats *h = &r->heaps[i];
    fprintf(f, "%s\n  {", i ? "," : "");
    JU(f, "", "heap_alloc", h->heap_alloc);
    JU(f, ", ", "heap_live", h->heap_live);
    JU(f, ", ", "heap_sys", h->heap_sys);
    JU(f, ", ", "heap_inuse", h->heap_inuse);
    JU(f, ", ", "regions", h->regions);
    JU(f, ", ", "large_objects", h->large_objects);
    JU(f, ", ", "num_gc", h->num_gc);
    JU(f, ", ", "pause_total_ns", h->pause_total_ns);
    JU(f, ", ", "pause_max_ns", h->pause_max_ns);
    JU(f, ", ", "last_pause_ns", h->last_pause_ns);
    JU(f, ", ", "objects_live", h->objects_live);
    JU(f, ", ", "objects_alloc", h->objects_alloc);
    JU(f, ", ", "objects_freed", h->objects_freed);
    JU(f, ", ", "total_alloc", h->total_alloc);
    JU(f, ", ", "finalizers_run", h->finalizers_run);
    JU(f, ", ", "finalizers_pending", h->finalizers_pending);
    JU(f, ", ", "mark_ns", h->mark_ns);
    JU(f, ", ", "sweep_ns", h->sweep_ns);
    ju_or_null(f, "next_gc", h->next_gc);
    JU(f, ", ", "gray_overflows", h->gray_overflows);
    JU(f, ", ", "regions_released", h->regions_released);
    JU(f, ", ", "threads", h->threads);
    JU(f, ", ", "checkmark", h->checkmark);
    JU(f, ", ", "region_size", h->region_size);
    JU(f, ", ", "pauses", h->pauses);
    /* Like Go's /gc/pauses:seconds: bucket k counts pauses of at least
     * pause_hist_lo_ns[k] and under pause_hist_lo_ns[k + 1] (the last has
     * no upper bound). */
    fprintf(f, ", \"pause_hist_lo_ns\": [");
    for (unsigned k = 0; k < TP_HEAP_PAUSE_BUCKETS; k++)
      fprintf(f, "%s%" PRIu64, k ? ", " : "", tp_heap_pause_bucket_ns(k));
    fprintf(f, "], \"pause_hist\": [");
    for (unsigned k = 0; k < TP_HEAP_PAUSE_BUCKETS; k++)
      fprintf(f, "%s%" PRIu64, k ? ", " : "", h->pause_hist[k]);
    fprintf(f, "]");
    JU(f, ", ", "mark_assist_ns", h->mark_assist_ns);
    JU(f, ", ", "mark_bg_cpu_ns", h->mark_bg_cpu_ns);
    fprintf(f, ", \"phase\": \"%s\"", phase_name(h->phase));
    JU(f, ", ", "arenas", h->arenas);
    ju_or_null(f, "gc_trigger", h->gc_trigger);
    ju_or_null(f, "gc_hard_limit", h->gc_hard_limit);
    JU(f, ", ", "assists", h->assists);
    JU(f, ", ", "assist_max_ns", h->assist_max_ns);
    JU(f, ", ", "limit_waits", h->limit_waits);
    JU(f, ", ", "limit_wait_ns", h->limit_wait_ns);
    JU(f, ", ", "store_assists", h->store_assists);
    JU(f, ", ", "store_assist_ns", h->store_assist_ns);
    JU(f, ", ", "mark_term_satb_max", h->mark_term_satb_max);
    JU(f, ", ", "stop_total_ns", h->stop_total_ns);
    JU(f, ", ", "stop_max_ns", h->stop_max_ns);
    fputc('}', f);
  }
  fprintf(f, "]");
  JU(f, ",\n ", "heaps_omitted", r->heaps_omitted);
  fprintf(f, "}\n");
}

int tp_stats_print(FILE *out, const char *opts) {
  bool json = false;
  if (opts && *opts) {
    if (strcmp(opts, "json") != 0) out = NULL; /* the one word known today */
    json = true;
  }
  if (!out) {
    errno = EINVAL;
    return -EINVAL;
  }
  struct report *r = calloc(1, sizeof *r);
  if (!r) {
    errno = ENOMEM;
    return -ENOMEM;
  }
  gather(r);
  flockfile(out);
  if (json) print_json(out, r);
  else print_table(out, r);
  int bad = fflush(out) != 0 || ferror(out);
  funlockfile(out);
  free(r->pools);
  free(r->heaps);
  free(r);
  if (bad) {
    errno = EIO;
    return -EIO;
  }
  return 0;
}
