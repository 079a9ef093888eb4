/*
 * bench/epoch_inline_workloads.c — the opt-in inline epoch read side
 * (tidepool worker only): this file defines _LGPL_SOURCE before including
 * <tidepool/...>, so tp_epoch_enter/leave are liburcu's inline code behind
 * tidepool's registration test (epoch.h, "Inline read side").
 *
 *   read_pair_inline  enter+leave of an empty read section, one thread:
 *                     ns/op is tidepool's inline pair; counter urcu_ns is
 *                     liburcu memb's own inline pair, measured in the same
 *                     process in interleaved slices (so drift cancels)
 */
#define _LGPL_SOURCE 1
#include "bench/alloc.h"

#if BENCH_HAVE_EPOCH

#include <urcu/urcu-memb.h>

#define SLICES 10

static void *inline_setup(const bench_case *c) {
  (void)c;
  tp_epoch_register_thread();
  return NULL;
}

__attribute__((noinline)) static uint64_t tp_inline_loop(uint64_t n) {
  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    tp_epoch_enter();
    tp_epoch_leave();
  }
  return bench_now_ns() - t0;
}

__attribute__((noinline)) static uint64_t urcu_loop(uint64_t n) {
  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < n; i++) {
    urcu_memb_read_lock();
    urcu_memb_read_unlock();
  }
  return bench_now_ns() - t0;
}

static void run_read_pair_inline(const bench_case *c, void *state, bench_out *out) {
  (void)state;
  uint64_t slice = c->ops / SLICES, tp_ns = 0, urcu_ns = 0;
  for (int i = 0; i < SLICES; i++) {
    tp_ns += tp_inline_loop(slice);
    urcu_ns += urcu_loop(slice);
  }
  out->ns = (double)tp_ns;
  out->ops = (double)(slice * SLICES);
  bench_counter(out, "urcu_ns", (double)urcu_ns / (double)(slice * SLICES));
}

BENCH_CASE(read_pair_inline_tp, .workload = "read_pair_inline", .impl = "tp", .group = "epoch",
           .unit = "read section enter+leave (inline opt-in)", .ops = 1000000,
           .setup = inline_setup, .run = run_read_pair_inline)

#endif /* BENCH_HAVE_EPOCH */
