/*
 * bench/workloads.h — the interface between the C workloads and the thin
 * Google Benchmark shim (bench/shim.cc). See bench/README.md.
 *
 * A workload file (bench/<area>_workloads.c) registers cases with
 * BENCH_CASE at load time. Each case becomes the Google Benchmark
 * "BM_<workload>/<impl>". The shim calls setup() once per benchmark run,
 * then run() once per benchmark iteration, then teardown(). run() does many
 * operations, times the part that matters itself (so the loop of the
 * benchmark library costs nothing per operation) and reports the time and
 * the number of operations in *out; the shim reports ns_per_op and Mops.
 */
#ifndef TP_BENCH_WORKLOADS_H
#define TP_BENCH_WORKLOADS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BENCH_MAX_COUNTERS 40
#define BENCH_COUNTER_NAME 24

/* What one run() reports. */
typedef struct bench_out {
  double ns;  /* duration of the measured part, in ns */
  double ops; /* operations done in it (ns / ops is what the tables show) */
  unsigned ncounters;
  struct {
    char name[BENCH_COUNTER_NAME];
    double value;
  } counter[BENCH_MAX_COUNTERS]; /* extra results (averaged over runs) */
  char error[160];               /* non-empty: the case failed */
} bench_out;

typedef struct bench_case bench_case;
struct bench_case {
  const char *workload; /* the name is BM_<workload>/<impl> */
  const char *impl;     /* "tp", "glibc", "jemalloc", "urcu", ... */
  const char *group;    /* the driver prints one table per group */
  const char *unit;     /* what one operation is, e.g. "get+put pair" */
  int throughput;       /* 1: the driver shows Mops/s as well */
  uint64_t ops;         /* operations per run() (workload-specific meaning) */
  uint64_t iterations;  /* 0: as many runs as --benchmark_min_time needs */
  long param;           /* workload parameter: threads, ... */
  void *(*setup)(const bench_case *c);                    /* optional */
  void (*run)(const bench_case *c, void *state, bench_out *out);
  void (*teardown)(const bench_case *c, void *state);     /* optional */
};

/* Adds a case (copied). Called by BENCH_CASE's constructor. */
void bench_register(const bench_case *c);
size_t bench_case_count(void);
const bench_case *bench_case_at(size_t i);

/* One line "key value" printed by `<worker> --bench_list` (versions, modes). */
void bench_info(const char *key, const char *value);
size_t bench_info_count(void);
const char *bench_info_key(size_t i);
const char *bench_info_value(size_t i);

/* Adds an extra result to *out (e.g. "p99_us"). */
void bench_counter(bench_out *out, const char *name, double value);
/* Marks the run as failed with a message (printf format). */
void bench_fail(bench_out *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* 1 when the driver runs with --quick (env TP_BENCH_QUICK=1): workloads
 * with a fixed duration may shorten it. */
int bench_quick(void);

/* Registers a case when the program loads: BENCH_CASE(id, .workload = ...). */
#define BENCH_CASE(id, ...)                                              \
  __attribute__((constructor)) static void bench_register_##id(void) {  \
    bench_register(&(const bench_case){__VA_ARGS__});                    \
  }

#ifdef __cplusplus
}
#endif

#endif /* TP_BENCH_WORKLOADS_H */
