// bench/shim.cc — the thin Google Benchmark layer of every worker: registers
// the C cases (bench/workloads.h) as BM_<workload>/<impl> and runs them.
//
// Each case times its own work (manual time), so the benchmark loop costs
// nothing per operation. Reported counters: ns_per_op (median over the
// iterations), Mops (1000 / ns_per_op), mean_ns_per_op, and the case's own
// counters (medians over the iterations).
//
//   bench_<worker> --bench_list     cases and info lines, tab-separated
//   bench_<worker> [--benchmark_*]  Google Benchmark as usual
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bench/median.h"
#include "bench/workloads.h"

namespace {

std::string CaseName(const bench_case* c) {
  return std::string("BM_") + c->workload + "/" + c->impl;
}

// Reports medians over the run's iterations: a shared, noisy machine
// stalls a few iterations now and then; the median ignores those stalls
// (each iteration is many operations, so the allocator's own periodic
// slow paths are spread over every iteration). mean_ns_per_op is kept too.
void RunCase(benchmark::State& st, const bench_case* c) {
  void* state = c->setup ? c->setup(c) : nullptr;
  double ns = 0, ops = 0;
  std::vector<double> per_op;
  std::map<std::string, std::vector<double>> extra;
  std::string error;
  for (auto _ : st) {
    bench_out out;
    std::memset(&out, 0, sizeof out);
    c->run(c, state, &out);
    if (out.error[0]) {
      error = out.error;
      st.SkipWithError(error.c_str());
      break;
    }
    st.SetIterationTime(out.ns > 0 ? out.ns * 1e-9 : 1e-9);
    ns += out.ns;
    ops += out.ops;
    if (out.ops > 0) per_op.push_back(out.ns / out.ops);
    for (unsigned i = 0; i < out.ncounters; i++) extra[out.counter[i].name].push_back(out.counter[i].value);
  }
  if (c->teardown) c->teardown(c, state);
  if (!error.empty() || per_op.empty() || ns <= 0) return;
  double med = Median(per_op);
  st.counters["ns_per_op"] = med;
  st.counters["Mops"] = 1e3 / med;
  st.counters["mean_ns_per_op"] = ns / ops;
  for (const auto& e : extra) st.counters[e.first] = Median(e.second);
  st.SetLabel(c->unit);
}

void List() {
  for (size_t i = 0; i < bench_info_count(); i++)
    std::printf("info\t%s\t%s\n", bench_info_key(i), bench_info_value(i));
  for (size_t i = 0; i < bench_case_count(); i++) {
    const bench_case* c = bench_case_at(i);
    std::printf("case\t%s\t%s\t%s\t%s\t%s\t%d\n", CaseName(c).c_str(), c->workload, c->impl,
                c->group, c->unit, c->throughput);
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; i++)
    if (std::strcmp(argv[i], "--bench_list") == 0) {
      List();
      return 0;
    }
  for (size_t i = 0; i < bench_case_count(); i++) {
    const bench_case* c = bench_case_at(i);
    auto* b = benchmark::RegisterBenchmark(CaseName(c).c_str(),
                                           [c](benchmark::State& st) { RunCase(st, c); });
    b->UseManualTime()->Unit(benchmark::kMicrosecond);
    if (c->iterations) b->Iterations(static_cast<benchmark::IterationCount>(c->iterations));
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
