// bench/driver.cc — //bench: runs every worker's cases in interleaved
// rounds, one fresh process per case, and prints the medians, the
// tidepool-vs-peer ratios and the targets of issues 3-7.
//
//   bazel run //bench [-- --rounds N --filter REGEX --quick ...]   (--help)
//
// Scheduling: round r runs every selected case once; cases of the same
// workload run back to back, allocator order rotating each round, so the
// allocators of one workload are measured close together in time. Each case
// runs in its own process (`bench_<worker> --benchmark_filter=^NAME$`), so
// no case inherits another's heap, threads or RSS; a worker that crashes or
// hangs loses that one case of that round, which is reported.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/cli.h"
#include "bench/median.h"

#ifndef BENCH_WORKERS
#error "BENCH_WORKERS (colon-separated worker names) is set by bench/BUILD"
#endif
#define BENCH_STR_(x) #x
#define BENCH_STR(x) BENCH_STR_(x)

namespace {

// ---------------------------------------------------------------------------
// Options

struct Options {
  int rounds = 3;
  std::string filter;
  bool quick = false;
  double min_time = 0.25;
  bool min_time_set = false;
  double timeout_s = 180;
  std::vector<std::string> workers;
  bool list = false;
  std::string keep_logs;  // directory to keep worker logs in
  std::string plots;      // directory for the plots ("" = the default)
  bool no_plots = false;
};

void Usage(FILE* f) {
  std::fprintf(f,
               "usage: bench [options]\n"
               "  --rounds N       interleaved rounds; medians are taken across them (default 3)\n"
               "  --filter REGEX   only cases whose name (BM_<workload>/<impl>) matches\n"
               "  --quick          short runs (min_time 0.05 s, shorter fixed-duration cases)\n"
               "  --min-time S     Google Benchmark min time per case and round (default 0.25)\n"
               "  --workers A,B    only these workers (default: %s)\n"
               "  --timeout S      kill a case's process after S seconds (default 180)\n"
               "  --keep-logs DIR  keep every worker's output and JSON in DIR\n"
               "  --plots DIR      write the plots (PNG) and their data into DIR (default:\n"
               "                   bazel-bin/bench/plots under `bazel run`, else\n"
               "                   $TMPDIR/tidepool-bench-plots)\n"
               "  --no-plots       tables only\n"
               "  --list           list the cases and exit\n",
               BENCH_STR(BENCH_WORKERS));
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep))
    if (!cur.empty()) out.push_back(cur);
  return out;
}

bool ParseOptions(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&](const char* name) { return OptionValue(argc, argv, &i, name); };
    const char* v;
    if (a == "--help" || a == "-h") {
      Usage(stdout);
      std::exit(0);
    } else if (a == "--quick") {
      o->quick = true;
    } else if (a == "--list") {
      o->list = true;
    } else if ((v = value("--rounds"))) {
      o->rounds = std::atoi(v);
      if (o->rounds < 1) return false;
    } else if ((v = value("--filter"))) {
      o->filter = v;
    } else if ((v = value("--min-time"))) {
      o->min_time = std::atof(v);
      o->min_time_set = true;
    } else if ((v = value("--timeout"))) {
      o->timeout_s = std::atof(v);
    } else if ((v = value("--workers"))) {
      o->workers = Split(v, ',');
    } else if ((v = value("--keep-logs"))) {
      o->keep_logs = v;
    } else if ((v = value("--plots"))) {
      o->plots = v;
    } else if (a == "--no-plots") {
      o->no_plots = true;
    } else {
      std::fprintf(stderr, "bench: unknown option %s\n", a.c_str());
      return false;
    }
  }
  if (o->quick && !o->min_time_set) o->min_time = 0.05;
  if (o->workers.empty()) o->workers = Split(BENCH_STR(BENCH_WORKERS), ':');
  return true;
}

// ---------------------------------------------------------------------------
// A small JSON reader, for Google Benchmark's --benchmark_out.

struct Json {
  enum Kind { kNull, kBool, kNum, kStr, kArr, kObj } kind = kNull;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;

  const Json* Get(const std::string& key) const {
    for (const auto& kv : obj)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}
  bool Parse(Json* out) {
    if (!Value(out)) return false;
    Ws();
    return p_ == s_.size();
  }

 private:
  void Ws() {
    while (p_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[p_]))) p_++;
  }
  bool Lit(const char* w) {
    size_t n = std::strlen(w);
    if (s_.compare(p_, n, w) != 0) return false;
    p_ += n;
    return true;
  }
  bool Str(std::string* out) {
    if (s_[p_] != '"') return false;
    p_++;
    while (p_ < s_.size() && s_[p_] != '"') {
      char c = s_[p_++];
      if (c == '\\' && p_ < s_.size()) {
        char e = s_[p_++];
        switch (e) {
          case 'n': c = '\n'; break;
          case 't': c = '\t'; break;
          case 'r': c = '\r'; break;
          case 'b': c = '\b'; break;
          case 'f': c = '\f'; break;
          case 'u':  // keep ASCII, replace the rest
            c = '?';
            if (p_ + 4 <= s_.size()) {
              unsigned v = static_cast<unsigned>(std::strtoul(s_.substr(p_, 4).c_str(), nullptr, 16));
              if (v < 128) c = static_cast<char>(v);
              p_ += 4;
            }
            break;
          default: c = e;
        }
      }
      out->push_back(c);
    }
    if (p_ >= s_.size()) return false;
    p_++;
    return true;
  }
  bool Value(Json* v) {
    Ws();
    if (p_ >= s_.size()) return false;
    char c = s_[p_];
    if (c == '{') {
      v->kind = Json::kObj;
      p_++;
      Ws();
      if (p_ < s_.size() && s_[p_] == '}') return ++p_, true;
      for (;;) {
        Ws();
        std::string k;
        if (p_ >= s_.size() || !Str(&k)) return false;
        Ws();
        if (p_ >= s_.size() || s_[p_++] != ':') return false;
        Json item;
        if (!Value(&item)) return false;
        v->obj.emplace_back(std::move(k), std::move(item));
        Ws();
        if (p_ >= s_.size()) return false;
        if (s_[p_] == ',') { p_++; continue; }
        if (s_[p_] == '}') return ++p_, true;
        return false;
      }
    }
    if (c == '[') {
      v->kind = Json::kArr;
      p_++;
      Ws();
      if (p_ < s_.size() && s_[p_] == ']') return ++p_, true;
      for (;;) {
        Json item;
        if (!Value(&item)) return false;
        v->arr.push_back(std::move(item));
        Ws();
        if (p_ >= s_.size()) return false;
        if (s_[p_] == ',') { p_++; continue; }
        if (s_[p_] == ']') return ++p_, true;
        return false;
      }
    }
    if (c == '"') {
      v->kind = Json::kStr;
      return Str(&v->str);
    }
    if (Lit("true")) { v->kind = Json::kBool; v->b = true; return true; }
    if (Lit("false")) { v->kind = Json::kBool; return true; }
    if (Lit("null")) return true;
    char* end = nullptr;
    v->num = std::strtod(s_.c_str() + p_, &end);
    if (end == s_.c_str() + p_) {
      // Google Benchmark writes non-finite counters as bare nan/inf.
      if (Lit("nan") || Lit("-nan")) { v->kind = Json::kNum; v->num = NAN; return true; }
      if (Lit("inf")) { v->kind = Json::kNum; v->num = INFINITY; return true; }
      if (Lit("-inf")) { v->kind = Json::kNum; v->num = -INFINITY; return true; }
      return false;
    }
    v->kind = Json::kNum;
    p_ = static_cast<size_t>(end - s_.c_str());
    return true;
  }

  const std::string& s_;
  size_t p_ = 0;
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// ---------------------------------------------------------------------------
// Workers and their processes

std::string SelfPath(const char* argv0) {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) return std::string(buf, static_cast<size_t>(n));
  return argv0;
}

std::string Dirname(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? "." : p.substr(0, s);
}

bool IsExecutable(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(p.c_str(), X_OK) == 0;
}

// The worker binary: in the runfiles (bazel run), or beside the driver.
std::string FindWorker(const std::string& self, const char* argv0, const std::string& name) {
  std::string file = "bench_" + name;
  std::vector<std::string> tries;
  if (const char* rd = std::getenv("RUNFILES_DIR")) tries.push_back(std::string(rd) + "/tidepool/bench/" + file);
  tries.push_back(std::string(argv0) + ".runfiles/tidepool/bench/" + file);
  tries.push_back(self + ".runfiles/tidepool/bench/" + file);
  tries.push_back("bench/" + file);  // bazel run: the cwd is the runfiles root
  tries.push_back(Dirname(self) + "/" + file);
  tries.push_back(Dirname(argv0) + "/" + file);
  for (const auto& t : tries)
    if (IsExecutable(t)) return t;
  return "";
}

volatile sig_atomic_t g_child = 0;
volatile sig_atomic_t g_interrupted = 0;

void OnSignal(int sig) {
  g_interrupted = sig;
  if (g_child > 0) kill(-g_child, SIGKILL);
}

struct ProcResult {
  bool ok = false;
  std::string what;  // why not ok: "exit status 1", "killed by signal 11", "timed out"
  double seconds = 0;
};

// Runs argv with stdout and stderr to `log`; kills its process group after
// timeout_s.
ProcResult RunProcess(const std::vector<std::string>& args, const std::string& log, double timeout_s) {
  ProcResult r;
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid < 0) {
    r.what = std::string("fork: ") + std::strerror(errno);
    return r;
  }
  if (pid == 0) {
    setpgid(0, 0);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    std::vector<char*> av;
    for (const auto& a : args) av.push_back(const_cast<char*>(a.c_str()));
    av.push_back(nullptr);
    execv(av[0], av.data());
    std::fprintf(stderr, "exec %s: %s\n", av[0], std::strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  g_child = pid;
  int status = 0;
  bool timed_out = false;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (el > timeout_s && !timed_out) {
      timed_out = true;
      kill(-pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  g_child = 0;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (timed_out) {
    char b[64];
    std::snprintf(b, sizeof b, "timed out after %.0f s", timeout_s);
    r.what = b;
  } else if (WIFSIGNALED(status)) {
    r.what = std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
             strsignal(WTERMSIG(status)) + ")";
  } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    r.what = "exit status " + std::to_string(WEXITSTATUS(status));
  } else {
    r.ok = true;
  }
  return r;
}

std::string Tail(const std::string& path, int lines) {
  std::string s = ReadFile(path);
  std::vector<std::string> all = Split(s, '\n');
  std::string out;
  for (size_t i = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0; i < all.size(); i++)
    if (all[i].find("Library was built as DEBUG") == std::string::npos) out += "      | " + all[i] + "\n";
  return out;
}

struct CaseInfo {
  std::string name, workload, impl, group, unit, worker, path;
  bool throughput = false;
};

struct Worker {
  std::string name, path;
  std::map<std::string, std::string> info;
  std::vector<CaseInfo> cases;
};

// ---------------------------------------------------------------------------
// Results

struct Sample {
  double ns = NAN;                        // ns per op
  std::map<std::string, double> counters;  // the case's own counters
};

struct Results {
  // name -> round -> sample
  std::map<std::string, std::map<int, Sample>> by_case;
  std::vector<std::string> failures;

  double Ns(const std::string& name) const {
    auto it = by_case.find(name);
    if (it == by_case.end()) return NAN;
    std::vector<double> v;
    for (const auto& r : it->second) v.push_back(r.second.ns);
    return Median(v);
  }
  double Counter(const std::string& name, const std::string& counter) const {
    auto it = by_case.find(name);
    if (it == by_case.end()) return NAN;
    std::vector<double> v;
    for (const auto& r : it->second) {
      auto c = r.second.counters.find(counter);
      if (c != r.second.counters.end()) v.push_back(c->second);
    }
    return Median(v);
  }
  void Spread(const std::string& name, double* lo, double* hi, int* n) const {
    *lo = NAN, *hi = NAN, *n = 0;
    auto it = by_case.find(name);
    if (it == by_case.end()) return;
    for (const auto& r : it->second) {
      double x = r.second.ns;
      if (std::isnan(x)) continue;
      if (!(*n)++) *lo = *hi = x;
      *lo = std::min(*lo, x);
      *hi = std::max(*hi, x);
    }
  }
  // Median over rounds of f(round's sample of a, round's sample of b).
  template <typename F>
  double PerRound(const std::string& a, const std::string& b, F f) const {
    auto ia = by_case.find(a), ib = by_case.find(b);
    if (ia == by_case.end() || ib == by_case.end()) return NAN;
    std::vector<double> v;
    for (const auto& r : ia->second) {
      auto s = ib->second.find(r.first);
      if (s != ib->second.end()) v.push_back(f(r.second, s->second));
    }
    return Median(v);
  }
};

bool ParseResult(const std::string& json_path, const std::string& name, Sample* out, std::string* err) {
  std::string text = ReadFile(json_path);
  if (text.empty()) {
    *err = "no JSON output";
    return false;
  }
  Json root;
  if (!JsonParser(text).Parse(&root)) {
    *err = "unreadable JSON output";
    return false;
  }
  const Json* list = root.Get("benchmarks");
  if (!list) {
    *err = "no benchmarks in the JSON output";
    return false;
  }
  for (const auto& b : list->arr) {
    const Json* n = b.Get("name");
    if (!n || n->str.rfind(name + "/", 0) != 0) continue;  // ".../manual_time", ".../iterations:N"
    const Json* e = b.Get("error_occurred");
    if (e && e->b) {
      const Json* m = b.Get("error_message");
      *err = "error: " + (m ? m->str : std::string("?"));
      return false;
    }
    static const std::set<std::string> kFixed = {
        "family_index", "per_family_instance_index", "repetitions", "repetition_index",
        "threads", "iterations", "real_time", "cpu_time", "Mops"};
    for (const auto& kv : b.obj) {
      if (kv.second.kind != Json::kNum || kFixed.count(kv.first)) continue;
      if (kv.first == "ns_per_op") out->ns = kv.second.num;
      else out->counters[kv.first] = kv.second.num;
    }
    if (std::isnan(out->ns)) {
      *err = "no ns_per_op in the result";
      return false;
    }
    return true;
  }
  *err = "the case did not run (not in the JSON output)";
  return false;
}

// ---------------------------------------------------------------------------
// Targets (issues 3-7)

enum class Check {
  kTpMaxNs,          // tp's ns/op <= value
  kBestPeerMin,      // (best peer's ns/op) / (tp's ns/op) >= value
  kCounterMax,       // tp's counter <= value (negative = never reached: missed)
  kCounterMin,       // tp's counter >= value; n/a if control_<counter> < value and tp kept up
  kThroughputRatio,  // tp's Mops(workload) / Mops(other) >= value, per round
  kOnOffMax,         // tp's ns/op / counter (same run) <= value, per round
  kPeerRatioMin,     // (peer's ns/op) / (tp's ns/op) >= value, one named peer
  kCounterVsPeerMax, // tp's counter <= value * the named peer's counter
  kTpMinMops,        // tp's Mops/s (1000 / ns/op) >= value
};

struct Target {
  const char* workload;
  Check check;
  double value;
  const char* text;
  const char* other;           // counter or second workload
  const char* peer = nullptr;  // kPeerRatioMin, kCounterVsPeerMax
};

const Target kTargets[] = {
    {"pair", Check::kTpMaxNs, 2.0, "<= 2 ns per pair", nullptr},
    {"pair", Check::kBestPeerMin, 2.0, ">= 2x faster than the best peer", nullptr},
    {"batch", Check::kTpMaxNs, 1.5, "<= 1.5 ns per call", nullptr},
    {"prodcons", Check::kBestPeerMin, 1.5, ">= 1.5x the best peer's throughput", nullptr},
    {"oversub_t8", Check::kThroughputRatio, 0.75, "8 threads keep >= 75% of 2 threads' throughput",
     "oversub_t2"},
    {"read_pair", Check::kTpMaxNs, 2.5, "<= 2.5 ns per enter+leave (calls into libtidepool)",
     nullptr},
    {"read_pair_inline", Check::kOnOffMax, 1.10,
     "opt-in inline enter+leave within 10% of liburcu memb's", "urcu_ns"},
    {"retire", Check::kTpMaxNs, 30.0, "<= 30 ns per tp_pool_retire", nullptr},
    {"retire_latency", Check::kCounterMax, 2000.0, "retire-to-free p99 <= 2 ms at 1 M/s", "p99_us"},
    {"arena32", Check::kTpMaxNs, 1.0, "<= 1 ns per 32 B bump allocation", nullptr},
    {"arena_conc_scaling", Check::kCounterMin, 1.8, "concurrent arena scales >= 1.8x, 1 -> 2 threads",
     "ratio"},
    {"arena_reset", Check::kTpMaxNs, 100.0, "<= 100 ns per reset (4 chunks)", nullptr},
    {"burst", Check::kCounterMax, 1500.0, "RSS <= base + 10% of peak within decay + 500 ms", "back_ms"},
    {"pair_sweep1ms", Check::kOnOffMax, 1.10, "pair within 10% with the sweeper waking every 1 ms",
     "off_ns"},
    {"gc_alloc", Check::kTpMaxNs, 5.0, "<= 5 ns per tp_heap_alloc", nullptr},
    {"gc_tree_1g", Check::kBestPeerMin, 1.5, "1 GiB tree collected >= 1.5x faster than Boehm",
     nullptr},
    // Issue 12 (group gcserver; Go from the Go worker).
    {"gcserver_256m", Check::kCounterMax, 1.0, "STW pause max <= 1 ms (256 MiB live)", "stw_max_ms"},
    {"gcserver_256m", Check::kCounterMax, 0.5, "STW pause p99 <= 0.5 ms (256 MiB live)", "stw_p99_ms"},
    {"gcserver_1g", Check::kCounterMax, 1.0, "STW pause max <= 1 ms (1 GiB live)", "stw_max_ms"},
    {"gcserver_1g", Check::kCounterMax, 0.5, "STW pause p99 <= 0.5 ms (1 GiB live)", "stw_p99_ms"},
    {"gcserver_256m", Check::kCounterVsPeerMax, 0.5, "longest mutator stall <= 1/2 of Go's (256 MiB)",
     "stall_max_ms", "go"},
    {"gcserver_1g", Check::kCounterVsPeerMax, 0.5, "longest mutator stall <= 1/2 of Go's (1 GiB)",
     "stall_max_ms", "go"},
    {"gcserver_256m", Check::kCounterMin, 0.5, "MMU(100 ms) >= 0.5 (256 MiB live)", "mmu_0100ms"},
    {"gcserver_1g", Check::kCounterMin, 0.5, "MMU(100 ms) >= 0.5 (1 GiB live)", "mmu_0100ms"},
    {"gcserver_256m", Check::kPeerRatioMin, 1.5, "ops/s >= 1.5x Boehm's (256 MiB live)", nullptr,
     "boehm"},
    {"gcserver_256m", Check::kPeerRatioMin, 1.5, "ops/s >= 1.5x Go's (256 MiB live)", nullptr, "go"},
    {"gcserver_1g", Check::kPeerRatioMin, 1.5, "ops/s >= 1.5x Boehm's (1 GiB live)", nullptr, "boehm"},
    {"gcserver_1g", Check::kPeerRatioMin, 1.5, "ops/s >= 1.5x Go's (1 GiB live)", nullptr, "go"},
    // 90 % of the stop-the-world tp_heap's 2.09 M ops/s (gc-facts.md, quiet
    // machine, 256 MiB): a reference from another run, not this one.
    {"gcserver_256m", Check::kTpMinMops, 0.9 * 2.09,
     "ops/s >= 90% of stop-the-world tp (2.09 M/s, gc-facts; not this run)", nullptr},
    {"gcserver_tree_m2", Check::kPeerRatioMin, 1.5, "1 GiB tree, 2 markers: >= 1.5x Boehm's (2 markers)",
     nullptr, "boehm"},
    {"gcserver_write", Check::kTpMaxNs, 1.0, "tp_heap_write <= 1 ns while no mark runs", nullptr},
};

struct Verdict {
  std::string status;  // MET, MISSED, n/a
  std::string measured;
};

std::string Fmt(const char* fmt, double v) {
  char b[64];
  std::snprintf(b, sizeof b, fmt, v);
  return b;
}

// Per-round ratios (Results::PerRound).
// Throughput of a over b: ns/op is time per op of the aggregate, so
// Mops(a) / Mops(b) = ns(b) / ns(a).
double ThroughputRatio(const Sample& a, const Sample& b) { return b.ns / a.ns; }

// A run's ns/op over its own counter `counter` (on/off within one run).
double OnOffRatio(const Sample& a, const std::string& counter) {
  auto c = a.counters.find(counter);
  return c == a.counters.end() ? NAN : a.ns / c->second;
}

// The peer cases of a workload: every impl other than tp.
std::vector<std::string> Peers(const std::vector<CaseInfo>& cases, const std::string& workload) {
  std::vector<std::string> out;
  for (const auto& c : cases)
    if (c.workload == workload && c.impl != "tp") out.push_back(c.impl);
  return out;
}

std::string Name(const std::string& workload, const std::string& impl) {
  return "BM_" + workload + "/" + impl;
}

Verdict Evaluate(const Target& t, const Results& res, const std::vector<CaseInfo>& cases) {
  Verdict v{"n/a", "-"};
  std::string tp = Name(t.workload, "tp");
  double x = NAN;
  bool ok = false;
  switch (t.check) {
    case Check::kTpMaxNs:
      x = res.Ns(tp);
      ok = x <= t.value;
      v.measured = Fmt("%.2f ns", x);
      break;
    case Check::kBestPeerMin: {
      double tpns = res.Ns(tp), best = NAN;
      std::string who;
      for (const auto& p : Peers(cases, t.workload)) {
        double pn = res.Ns(Name(t.workload, p));
        if (!std::isnan(pn) && (std::isnan(best) || pn < best)) best = pn, who = p;
      }
      x = best / tpns;
      ok = x >= t.value;
      v.measured = Fmt("%.2fx", x) + " vs " + who;
      break;
    }
    case Check::kCounterMax:
      x = res.Counter(tp, t.other);
      ok = x >= 0 && x <= t.value;
      v.measured = x < 0 ? std::string("never") : Fmt(x >= 100 ? "%.0f" : "%.3g", x) + " (" + t.other + ")";
      break;
    case Check::kPeerRatioMin:
      x = res.Ns(Name(t.workload, t.peer)) / res.Ns(tp);
      ok = x >= t.value;
      v.measured = Fmt("%.2fx", x) + " vs " + t.peer;
      if (std::isnan(res.Ns(tp)) && !std::isnan(res.Ns(Name(t.workload, t.peer))))
        return Verdict{"n/a", "no tp case"};
      break;
    case Check::kTpMinMops:
      x = 1e3 / res.Ns(tp);
      ok = x >= t.value;
      v.measured = Fmt("%.2f M/s", x);
      break;
    case Check::kCounterVsPeerMax: {
      double p = res.Counter(Name(t.workload, t.peer), t.other);
      x = res.Counter(tp, t.other) / p;
      ok = x <= t.value;
      double q = res.Counter(tp, t.other);
      v.measured = Fmt(q >= 100 ? "%.0f" : "%.3g", q) + " vs " + Fmt(p >= 100 ? "%.0f" : "%.3g", p) + " (" +
                   t.other + ")";
      break;
    }
    case Check::kCounterMin: {
      x = res.Counter(tp, t.other);
      ok = x >= t.value;
      v.measured = Fmt(std::string(t.other).rfind("mmu_", 0) == 0 ? "%.2f" : "%.2fx", x);
      double c = res.Counter(tp, std::string("control_") + t.other);
      if (!std::isnan(c)) {
        v.measured += Fmt(" (control %.2fx)", c);
        // The control runs the same loop with no allocator: when it falls
        // short of the target too and tp kept up with it (vs_control, the
        // per-group ratio of the two, >= 0.95), the run measured the machine
        // (a shared VM's two vCPUs are not always two cores), not the
        // allocator. A tp that lags its control is MISSED either way.
        double vs = res.Counter(tp, "vs_control");
        bool kept_up = std::isnan(vs) ? x >= 0.95 * c : vs >= 0.95;
        if (!ok && c < t.value && kept_up)
          return Verdict{"n/a", v.measured + ", machine below target"};
      }
      break;
    }
    case Check::kThroughputRatio:
      x = res.PerRound(tp, Name(t.other, "tp"), ThroughputRatio);
      ok = x >= t.value;
      v.measured = Fmt("%.2fx", x);
      break;
    case Check::kOnOffMax:
      x = res.PerRound(tp, tp,
                       [&](const Sample& a, const Sample&) { return OnOffRatio(a, t.other); });
      ok = x <= t.value;
      v.measured = Fmt("%.3fx", x);
      break;
  }
  if (std::isnan(x)) return Verdict{"n/a", "-"};
  v.status = ok ? "MET" : "MISSED";
  return v;
}

// Workloads whose tp-vs-peer ratio compares a counter rather than ns/op.
const std::map<std::string, std::string> kRatioCounter = {
    {"retire_latency", "p99_us"},
    {"burst", "rss_1500_MiB"},
};

// ---------------------------------------------------------------------------
// Printing

const char* GroupTitle(const std::string& g) {
  if (g == "pool") return "Pool: 64-byte objects (issue 3)";
  if (g == "epoch") return "Epochs: read sections, retire, read-mostly lookups (issue 4)";
  if (g == "arena") return "Arenas (issue 5)";
  if (g == "sweeper") return "Sweeper (issue 6)";
  if (g == "gc") return "Tracing collector: tp_heap vs Boehm (issue 7)";
  if (g == "gcserver") return "Collectors side by side: tp_heap, Boehm, Go (issue 12)";
  return nullptr;
}

std::string Num(double x, int width, int prec = 2) {
  char b[64];
  if (std::isnan(x)) std::snprintf(b, sizeof b, "%*s", width, "-");
  else if (std::fabs(x) >= 100000) std::snprintf(b, sizeof b, "%*.0f", width, x);
  else std::snprintf(b, sizeof b, "%*.*f", width, prec, x);
  return b;
}


void PrintRule(size_t n) { std::printf("%s\n", std::string(n, '-').c_str()); }

// What the tp-vs-peer ratio of workload w compares: ns/op, or the counter
// of kRatioCounter (the ratio is peer / tp: > 1, tidepool is better).
double RatioMetric(const Results& res, const std::string& w, const std::string& impl) {
  auto rc = kRatioCounter.find(w);
  return rc == kRatioCounter.end() ? res.Ns(Name(w, impl)) : res.Counter(Name(w, impl), rc->second);
}

// ---------------------------------------------------------------------------
// Issue 12: the collectors side by side (group gcserver: tp, boehm, go)

std::string LoadAvg() {
  std::string s = ReadFile("/proc/loadavg");
  std::vector<std::string> f = Split(s, ' ');
  return f.size() >= 3 ? f[0] + " " + f[1] + " " + f[2] : std::string("?");
}

// A value with a precision that suits it ("-" for a missing one).
std::string Val(double x, int width) {
  char b[64];
  if (std::isnan(x)) std::snprintf(b, sizeof b, "%*s", width, "-");
  else if (std::fabs(x) >= 100) std::snprintf(b, sizeof b, "%*.0f", width, x);
  else if (std::fabs(x) >= 10) std::snprintf(b, sizeof b, "%*.1f", width, x);
  else if (std::fabs(x) >= 1) std::snprintf(b, sizeof b, "%*.2f", width, x);
  else std::snprintf(b, sizeof b, "%*.3f", width, x);
  return b;
}

std::string Ratio(double a, double b, int width) {
  char r[64];
  if (std::isnan(a) || std::isnan(b) || b == 0) std::snprintf(r, sizeof r, "%*s", width, "-");
  else std::snprintf(r, sizeof r, a / b >= 1000 ? "%*.0fx" : "%*.3gx", width - 1, a / b);
  return r;
}

const char* const kCollectors[] = {"tp", "boehm", "go"};

void PrintGcServer(const Results& res, std::map<std::string, std::vector<CaseInfo>>& by_workload,
                   const std::vector<CaseInfo>& all, const Options& opt, const std::string& load0) {
  bool any = false;
  for (const auto& kv : by_workload) any |= kv.first.rfind("gcserver", 0) == 0;
  if (!any) return;
  std::printf("\n== Issue 12: tp_heap, Boehm (2 markers) and Go side by side, medians of %d round(s) ==\n",
              opt.rounds);
  std::printf("machine: load average %s at the start of the run, %s now (a shared machine: other "
              "work on the 2 CPUs stretches pauses and stalls; compare within the run)\n",
              load0.c_str(), LoadAvg().c_str());
  std::printf("pauses: tp from tp_heap_read_stats (polled every 16 ops), Boehm from its collection "
              "events (every stop), Go from runtime/metrics /gc/pauses (bucket upper bound, <= +6.25%%); "
              "stalls: gaps > 100 us between clock reads every 16 ops of one mutator; MMU: the worst "
              "mutator's\n");
  struct Col {
    const char* head;
    const char* counter;  // nullptr: Mops/s from ns/op
  };
  const Col cols[] = {{"GCs", "gcs"},          {"STW p50", "stw_p50_ms"}, {"STW p99", "stw_p99_ms"},
                      {"STW max", "stw_max_ms"}, {"stall max", "stall_max_ms"},
                      {"MMU 10ms", "mmu_0010ms"}, {"MMU 100ms", "mmu_0100ms"}, {"Mops/s", nullptr},
                      {"RSS MiB", "rss_peak_MiB"}};
  auto value = [&](const std::string& name, const Col& c) {
    return c.counter ? res.Counter(name, c.counter) : 1e3 / res.Ns(name);
  };
  for (const char* w : {"gcserver_256m", "gcserver_1g"}) {
    if (!by_workload.count(w)) continue;
    std::printf("\n-- %s: %s; times in ms\n", w, by_workload[w][0].unit.c_str());
    std::printf("%-10s", "");
    for (const auto& c : cols) std::printf(" %10s", c.head);
    std::printf("\n");
    PrintRule(10 + 11 * (sizeof cols / sizeof cols[0]));
    for (const char* impl : kCollectors) {
      std::string n = Name(w, impl);
      std::printf("%-10s", impl);
      for (const auto& c : cols) {
        double x = value(n, c);
        // Counts: whole numbers (a median of two rounds may end in .5).
        std::printf(" %10s", c.counter && !std::strcmp(c.counter, "gcs") && !std::isnan(x)
                                 ? Fmt(x == std::floor(x) ? "%10.0f" : "%10.1f", x).c_str()
                                 : Val(x, 10).c_str());
      }
      if (!res.by_case.count(n)) std::printf("   (n/a: no result)");
      std::printf("\n");
    }
    for (const char* peer : {"boehm", "go"}) {
      std::printf("%-10s", (std::string("tp/") + peer).c_str());
      for (const auto& c : cols)
        std::printf(" %10s", Ratio(value(Name(w, "tp"), c), value(Name(w, peer), c), 10).c_str());
      std::printf("\n");
    }
  }
  // The tree, 1 and 2 markers.
  if (by_workload.count("gcserver_tree_m1") || by_workload.count("gcserver_tree_m2")) {
    std::string unit = by_workload.count("gcserver_tree_m1") ? by_workload["gcserver_tree_m1"][0].unit : "";
    std::printf("\n-- gcserver_tree: %s / 2 markers (Boehm GC_set_markers_count, Go GOMAXPROCS); "
                "seconds\n", unit.c_str());
    std::printf("%-10s %12s %12s %14s\n", "", "1 marker", "2 markers", "2 vs 1 marker");
    PrintRule(52);
    for (const char* impl : kCollectors) {
      double a = res.Ns(Name("gcserver_tree_m1", impl)) / 1e9, b = res.Ns(Name("gcserver_tree_m2", impl)) / 1e9;
      std::printf("%-10s %12s %12s %14s", impl, Val(a, 12).c_str(), Val(b, 12).c_str(),
                  Ratio(a, b, 14).c_str());
      std::printf("\n");
    }
    for (const char* peer : {"boehm", "go"})
      std::printf("%-10s %12s %12s   (> 1: tp is faster)\n", (std::string(peer) + "/tp").c_str(),
                  Ratio(res.Ns(Name("gcserver_tree_m1", peer)), res.Ns(Name("gcserver_tree_m1", "tp")), 12).c_str(),
                  Ratio(res.Ns(Name("gcserver_tree_m2", peer)), res.Ns(Name("gcserver_tree_m2", "tp")), 12).c_str());
  }
  if (by_workload.count("gcserver_gcbench")) {
    const char* w = "gcserver_gcbench";
    std::printf("\n-- %s: %s; times in ms\n", w, by_workload[w][0].unit.c_str());
    std::printf("%-10s %10s %10s %10s %10s %10s %10s\n", "", "total", "GCs", "STW p50", "STW max", "STW sum",
                "RSS MiB");
    PrintRule(76);
    auto row = [&](const std::string& label, auto f) {
      std::printf("%-10s", label.c_str());
      const char* ctr[] = {nullptr, "gcs", "stw_p50_ms", "stw_max_ms", "stw_total_ms", "rss_peak_MiB"};
      for (const char* c : ctr) std::printf(" %10s", f(c).c_str());
      std::printf("\n");
    };
    auto get = [&](const char* impl, const char* c) {
      return c ? res.Counter(Name(w, impl), c) : res.Ns(Name(w, impl)) / 1e6;
    };
    for (const char* impl : kCollectors) row(impl, [&](const char* c) { return Val(get(impl, c), 10); });
    for (const char* peer : {"boehm", "go"})
      row(std::string("tp/") + peer, [&](const char* c) { return Ratio(get("tp", c), get(peer, c), 10); });
  }
  // Issue 12's targets, one verdict line each.
  std::printf("\nissue 12 targets (tp_heap in this run):\n");
  for (const auto& t : kTargets) {
    if (std::string(t.workload).rfind("gcserver", 0) != 0 || !by_workload.count(t.workload)) continue;
    Verdict v = Evaluate(t, res, all);
    std::printf("  %s: %s (%s)\n", t.text, v.status.c_str(), v.measured.c_str());
  }
}

// ---------------------------------------------------------------------------
// Plots: the medians go to DIR/bench_data.json; bench/plots.py (Debian's
// /usr/bin/python3 with python3-matplotlib) draws them into DIR.

std::string JsonNum(double x) {
  if (!std::isfinite(x)) return "null";
  char b[64];
  std::snprintf(b, sizeof b, "%.6g", x);
  return b;
}

std::string JsonStr(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) o += ' ';
    else o += c;
  }
  return o + "\"";
}

std::string PlotData(const Results& res, const std::vector<std::string>& ordered,
                     std::map<std::string, std::vector<CaseInfo>>& by_workload,
                     std::map<std::string, std::string>& group_of, const Options& opt,
                     const std::string& machine) {
  std::string j = "{\"quick\": " + std::string(opt.quick ? "true" : "false") +
                  ", \"rounds\": " + std::to_string(opt.rounds) + ", \"machine\": " + JsonStr(machine) +
                  ",\n \"cases\": [";
  bool first = true;
  for (const auto& w : ordered)
    for (const auto& c : by_workload[w]) {
      std::set<std::string> names;
      auto it = res.by_case.find(c.name);
      if (it == res.by_case.end()) continue;
      for (const auto& r : it->second)
        for (const auto& kv : r.second.counters) names.insert(kv.first);
      j += std::string(first ? "" : ",") + "\n  {\"workload\": " + JsonStr(w) + ", \"group\": " +
           JsonStr(group_of[w]) + ", \"impl\": " + JsonStr(c.impl) + ", \"unit\": " + JsonStr(c.unit) +
           ", \"ns\": " + JsonNum(res.Ns(c.name)) + ", \"counters\": {";
      bool f2 = true;
      for (const auto& n : names) {
        j += std::string(f2 ? "" : ", ") + JsonStr(n) + ": " + JsonNum(res.Counter(c.name, n));
        f2 = false;
      }
      j += "}}";
      first = false;
    }
  j += "],\n \"ratios\": [";
  first = true;
  for (const auto& w : ordered) {
    double tpv = RatioMetric(res, w, "tp");
    if (std::isnan(tpv)) continue;
    auto rc = kRatioCounter.find(w);
    std::string peers;
    for (const auto& c : by_workload[w]) {
      if (c.impl == "tp") continue;
      double pv = RatioMetric(res, w, c.impl);
      if (std::isnan(pv)) continue;
      peers += std::string(peers.empty() ? "" : ", ") + JsonStr(c.impl) + ": " + JsonNum(pv / tpv);
    }
    if (peers.empty()) continue;
    j += std::string(first ? "" : ",") + "\n  {\"workload\": " + JsonStr(w) + ", \"group\": " +
         JsonStr(group_of[w]) + ", \"metric\": " +
         JsonStr(rc == kRatioCounter.end() ? "ns/op" : rc->second) + ", \"peers\": {" + peers + "}}";
    first = false;
  }
  return j + "]}\n";
}

// bench/plots.py: in the runfiles (bazel run), or beside the driver's source.
std::string FindPlotScript(const std::string& self, const char* argv0) {
  std::vector<std::string> tries;
  if (const char* rd = std::getenv("RUNFILES_DIR")) tries.push_back(std::string(rd) + "/tidepool/bench/plots.py");
  tries.push_back(std::string(argv0) + ".runfiles/tidepool/bench/plots.py");
  tries.push_back(self + ".runfiles/tidepool/bench/plots.py");
  tries.push_back("bench/plots.py");
  struct stat st;
  for (const auto& t : tries)
    if (stat(t.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return t;
  return "";
}

// The plots' directory: --plots DIR (relative to where `bazel run` was
// started), else bazel-bin/bench/plots of the workspace under `bazel run`,
// else $TMPDIR/tidepool-bench-plots.
std::string PlotDir(const Options& opt) {
  if (!opt.plots.empty()) {
    const char* wd = std::getenv("BUILD_WORKING_DIRECTORY");
    return opt.plots[0] == '/' || !wd ? opt.plots : std::string(wd) + "/" + opt.plots;
  }
  struct stat st;
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"))
    if (stat((std::string(ws) + "/bazel-bin").c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      return std::string(ws) + "/bazel-bin/bench/plots";
  const char* t = std::getenv("TMPDIR");
  return std::string(t && *t ? t : "/tmp") + "/tidepool-bench-plots";
}

// Writes the data and draws the plots; prints where they are, or why not.
// Never fails the run: the tables are printed already.
void WritePlots(const std::string& data, const std::string& self, const char* argv0,
                const Options& opt, const std::string& tmp) {
  std::string dir = PlotDir(opt);
  std::string cmd = "mkdir -p '" + dir + "'";
  if (std::system(cmd.c_str()) != 0) {
    std::printf("\nplots: not written: cannot create %s\n", dir.c_str());
    return;
  }
  std::string data_path = dir + "/bench_data.json";
  {
    std::ofstream f(data_path);
    f << data;
    if (!f) {
      std::printf("\nplots: not written: cannot write %s\n", data_path.c_str());
      return;
    }
  }
  const std::string py = "/usr/bin/python3";
  std::string script = FindPlotScript(self, argv0);
  if (!IsExecutable(py) || script.empty()) {
    std::printf("\nplots: not drawn (%s); the data is in %s\n",
                script.empty() ? "bench/plots.py not found" : "no /usr/bin/python3", data_path.c_str());
    return;
  }
  std::string log = tmp + "/plots.log";
  ProcResult pr = RunProcess({py, script, data_path, dir}, log, 120);
  std::string text = ReadFile(log);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (!pr.ok) {
    std::printf("\nplots: not drawn (%s: %s); the data is in %s\n", script.c_str(),
                text.empty() ? pr.what.c_str() : text.c_str(), data_path.c_str());
    return;
  }
  std::printf("\n%s\n", text.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!ParseOptions(argc, argv, &opt)) {
    Usage(stderr);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  auto start = std::chrono::steady_clock::now();
  std::string self = SelfPath(argv[0]);
  std::string load0 = LoadAvg();

  char tmpl[] = "/tmp/tp-bench.XXXXXX";
  std::string tmp = opt.keep_logs;
  if (tmp.empty()) {
    if (!mkdtemp(tmpl)) {
      std::perror("bench: mkdtemp");
      return 1;
    }
    tmp = tmpl;
  } else {
    mkdir(tmp.c_str(), 0755);
  }
  if (opt.quick) setenv("TP_BENCH_QUICK", "1", 1);

  std::unique_ptr<std::regex> filter;
  if (!opt.filter.empty()) {
    try {
      filter.reset(new std::regex(opt.filter, std::regex::extended));
    } catch (const std::regex_error& e) {
      std::fprintf(stderr, "bench: bad --filter: %s\n", e.what());
      return 2;
    }
  }

  // Ask every worker what it has.
  Results res;
  std::vector<Worker> workers;
  for (const auto& w : opt.workers) {
    Worker wk;
    wk.name = w;
    wk.path = FindWorker(self, argv[0], w);
    if (wk.path.empty()) {
      res.failures.push_back("worker " + w + ": bench_" + w + " not found (is it in //bench's data?)");
      continue;
    }
    std::string log = tmp + "/list_" + w + ".txt";
    ProcResult pr = RunProcess({wk.path, "--bench_list"}, log, 60);
    if (!pr.ok) {
      res.failures.push_back("worker " + w + ": --bench_list " + pr.what + "\n" + Tail(log, 8));
      continue;
    }
    for (const auto& line : Split(ReadFile(log), '\n')) {
      std::vector<std::string> f;
      std::string cur;
      std::istringstream in(line);
      while (std::getline(in, cur, '\t')) f.push_back(cur);
      if (f.size() == 3 && f[0] == "info") wk.info[f[1]] = f[2];
      if (f.size() == 7 && f[0] == "case") {
        CaseInfo c{f[1], f[2], f[3], f[4], f[5], w, wk.path, f[6] == "1"};
        if (!filter || std::regex_search(c.name, *filter)) wk.cases.push_back(c);
      }
    }
    workers.push_back(wk);
  }

  // Cases by group (issue order first) and workload (first seen).
  std::vector<std::string> groups = {"pool", "epoch", "arena", "sweeper", "gc", "gcserver"};
  std::vector<std::string> workloads;
  std::map<std::string, std::vector<CaseInfo>> by_workload;
  std::map<std::string, std::string> group_of;
  for (const auto& w : workers)
    for (const auto& c : w.cases) {
      if (std::find(groups.begin(), groups.end(), c.group) == groups.end()) groups.push_back(c.group);
      if (!by_workload.count(c.workload)) workloads.push_back(c.workload), group_of[c.workload] = c.group;
      by_workload[c.workload].push_back(c);
    }
  std::vector<std::string> ordered;
  for (const auto& g : groups)
    for (const auto& w : workloads)
      if (group_of[w] == g) ordered.push_back(w);
  std::vector<CaseInfo> all;
  for (const auto& w : ordered)
    for (const auto& c : by_workload[w]) all.push_back(c);

  if (opt.list) {
    for (const auto& c : all) std::printf("%-28s %-8s %s\n", c.name.c_str(), c.worker.c_str(), c.unit.c_str());
    return 0;
  }

  // Header: the machine and the implementations.
  std::map<std::string, std::string> info;
  for (const auto& w : workers)
    for (const auto& kv : w.info) info[kv.first] = kv.second;
  std::string cpu_model;
  {
    std::istringstream in(ReadFile("/proc/cpuinfo"));
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("model name", 0) == 0) {
        cpu_model = line.substr(line.find(':') + 2);
        break;
      }
  }
  auto get = [&](const char* k) { return info.count(k) ? info[k] : std::string("?"); };
  std::printf("tidepool //bench: tidepool against the allocators in use today\n");
  std::printf("machine: %ld CPUs online (%s); tp_percpu_mode()=%s, tp_epoch_mode()=%s\n",
              sysconf(_SC_NPROCESSORS_ONLN), cpu_model.c_str(), get("percpu_mode").c_str(),
              get("epoch_mode").c_str());
  std::printf("workers (one process per case):\n");
  for (const auto& w : workers) {
    std::string line;
    for (const auto& kv : w.info)
      if (kv.first != "malloc_from") line += (line.empty() ? "" : ", ") + kv.first + " " + kv.second;
    auto m = w.info.find("malloc_from");
    if (m != w.info.end()) line += (line.empty() ? "" : "; ") + std::string("malloc from ") + m->second;
    std::printf("  bench_%-10s %s\n", w.name.c_str(), line.c_str());
  }
  std::printf("plan: %zu cases x %d rounds, interleaved (each round runs every case once, the "
              "allocators of a workload back to back, order rotating), one process per case; "
              "min_time %.2f s%s%s%s\n",
              all.size(), opt.rounds, opt.min_time, opt.quick ? ", --quick" : "",
              filter ? ", filter " : "", filter ? opt.filter.c_str() : "");
  std::printf("note: Debian's libbenchmark prints \"***WARNING*** Library was built as DEBUG\" about "
              "its own build, not tidepool's (ours: -c opt); the driver keeps worker output in logs.\n\n");

  // Rounds.
  for (int r = 1; r <= opt.rounds && !g_interrupted; r++) {
    for (const auto& w : ordered) {
      if (g_interrupted) break;
      std::vector<CaseInfo> cs = by_workload[w];
      std::rotate(cs.begin(), cs.begin() + static_cast<long>((r - 1) % cs.size()), cs.end());
      std::string line = "[round " + std::to_string(r) + "/" + std::to_string(opt.rounds) + "] " + w + ":";
      for (const auto& c : cs) {
        if (g_interrupted) break;
        std::string base = tmp + "/r" + std::to_string(r) + "_" + c.workload + "_" + c.impl;
        std::vector<std::string> args = {c.path,
                                         "--benchmark_filter=^" + c.name + "(/|$)",
                                         "--benchmark_min_time=" + Fmt("%g", opt.min_time),
                                         "--benchmark_out=" + base + ".json",
                                         "--benchmark_out_format=json"};
        ProcResult pr = RunProcess(args, base + ".log", opt.timeout_s);
        if (g_interrupted) break;  // killed by us: not the case's failure
        Sample s;
        std::string err;
        if (!pr.ok) {
          res.failures.push_back("round " + std::to_string(r) + " " + c.name + " (bench_" + c.worker +
                                 "): " + pr.what + "\n" + Tail(base + ".log", 10));
          line += " " + c.impl + "=FAILED";
        } else if (!ParseResult(base + ".json", c.name, &s, &err)) {
          res.failures.push_back("round " + std::to_string(r) + " " + c.name + " (bench_" + c.worker +
                                 "): " + err + "\n" + Tail(base + ".log", 10));
          line += " " + c.impl + "=FAILED";
        } else {
          res.by_case[c.name][r] = s;
          line += " " + c.impl + "=" + Fmt(s.ns < 10 ? "%.2f" : "%.1f", s.ns);
        }
      }
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  }
  if (g_interrupted) std::printf("\n(interrupted: tables below hold the rounds that finished)\n");

  // ---- per-group tables ----
  const size_t W = 104;
  for (const auto& g : groups) {
    bool any = false;
    for (const auto& c : all) any |= c.group == g;
    if (!any) continue;
    const char* title = GroupTitle(g);
    std::printf("\n== %s ==\n", title ? title : g.c_str());
    std::printf("%-28s %10s %10s %22s %6s\n", "benchmark", "ns/op", "Mops/s", "min..max ns/op", "rounds");
    PrintRule(W);
    for (const auto& w : ordered) {
      if (group_of[w] != g) continue;
      const auto& cs = by_workload[w];
      std::printf("-- %s: ns per %s\n", w.c_str(), cs[0].unit.c_str());
      for (const auto& c : cs) {
        double ns = res.Ns(c.name), lo, hi;
        int n;
        res.Spread(c.name, &lo, &hi, &n);
        std::string spread = n ? Num(lo, 0) + ".." + Num(hi, 0) : "-";
        std::printf("%-28s %10s %10s %22s %6d\n", c.name.c_str(), Num(ns, 10).c_str(),
                    c.throughput ? Num(1e3 / ns, 10).c_str() : "", spread.c_str(), n);
      }
    }
  }

  // ---- retire latency ----
  if (by_workload.count("retire_latency")) {
    std::printf("\n== Retire-to-free latency at 1 M retires/s (medians of rounds, us) ==\n");
    std::printf("%-28s %10s %10s %10s %10s %12s\n", "benchmark", "p50", "p99", "p999", "max", "retires/s");
    PrintRule(W);
    for (const auto& c : by_workload["retire_latency"]) {
      double ns = res.Ns(c.name);
      std::printf("%-28s %10s %10s %10s %10s %12s\n", c.name.c_str(), Num(res.Counter(c.name, "p50_us"), 10, 0).c_str(),
                  Num(res.Counter(c.name, "p99_us"), 10, 0).c_str(),
                  Num(res.Counter(c.name, "p999_us"), 10, 0).c_str(),
                  Num(res.Counter(c.name, "max_us"), 10, 0).c_str(), Num(1e9 / ns, 12, 0).c_str());
    }
  }

  // ---- scaling and overhead ratios, every allocator ----
  struct Pair {
    const char* a;
    const char* b;
    const char* text;
  };
  const Pair kScaling[] = {
      {"oversub_t8", "oversub_t2", "oversubscription: throughput of 8 threads / 2 threads"},
      {"arena_conc_t2", "arena_conc_t1", "concurrent arena: throughput of 2 threads / 1 thread"},
      {"lookup_t2", "lookup_t1", "lookups: throughput of 2 threads / 1 thread"},
      {"lookup_t8", "lookup_t2", "lookups: throughput of 8 threads / 2 threads"},
  };
  bool printed = false;
  for (const auto& p : kScaling) {
    if (!by_workload.count(p.a) || !by_workload.count(p.b)) continue;
    if (!printed) {
      std::printf("\n== Scaling (median over rounds of the per-round ratio) ==\n");
      PrintRule(W);
      printed = true;
    }
    std::string line = std::string(p.text) + ":";
    for (const auto& c : by_workload[p.a]) {
      double x = res.PerRound(c.name, Name(p.b, c.impl), ThroughputRatio);
      line += " " + c.impl + " " + Num(x, 0) + "x;";
    }
    std::printf("%s\n", line.c_str());
  }
  if (by_workload.count("arena_conc_scaling")) {
    if (!printed) PrintRule(W);
    printed = true;
    for (const auto& c : by_workload["arena_conc_scaling"])
      std::printf("concurrent arena, 1 and 2 threads in interleaved slices of one process: %s %sx "
                  "(slices p25..p75 %s..%s; %s ns 1 thread, %s ns 2 threads); the control, no "
                  "allocator: %sx (%s ns, %s ns); %s over the control, per group: %sx\n",
                  c.impl.c_str(), Num(res.Counter(c.name, "ratio"), 0).c_str(),
                  Num(res.Counter(c.name, "ratio_p25"), 0).c_str(),
                  Num(res.Counter(c.name, "ratio_p75"), 0).c_str(),
                  Num(res.Counter(c.name, "t1_ns"), 0).c_str(), Num(res.Ns(c.name), 0).c_str(),
                  Num(res.Counter(c.name, "control_ratio"), 0).c_str(),
                  Num(res.Counter(c.name, "control_t1_ns"), 0).c_str(),
                  Num(res.Counter(c.name, "control_t2_ns"), 0).c_str(), c.impl.c_str(),
                  Num(res.Counter(c.name, "vs_control"), 0).c_str());
  }
  if (by_workload.count("pair_sweep1ms")) {
    if (!printed) PrintRule(W);
    for (const auto& c : by_workload["pair_sweep1ms"]) {
      double x = res.PerRound(c.name, c.name,
                              [](const Sample& a, const Sample&) { return OnOffRatio(a, "off_ns"); });
      std::printf("sweeper every 1 ms: pair time with / without (same run, ABBA slices): %s %sx "
                  "(%s ns vs %s ns)\n",
                  c.impl.c_str(), Num(x, 0, 3).c_str(), Num(res.Ns(c.name), 0).c_str(),
                  Num(res.Counter(c.name, "off_ns"), 0).c_str());
    }
  }

  // ---- burst: RSS curves ----
  if (by_workload.count("burst")) {
    const auto& cs = by_workload["burst"];
    std::printf("\n== Burst: RSS (MiB) after 4 M x 64 B (256 MiB) were taken by 4 threads and put "
                "back; ms since the last put (medians of rounds) ==\n");
    for (int half = 0; half < 2; half++) {
      int from = half ? 1300 : 0, to = half ? 2500 : 1200;
      std::printf("%-10s %6s %6s", "allocator", "base", "peak");
      for (int t = from; t <= to; t += 100) std::printf(" %5d", t);
      std::printf("\n");
      for (const auto& c : cs) {
        std::printf("%-10s %6s %6s", c.impl.c_str(), Num(res.Counter(c.name, "base_MiB"), 6, 0).c_str(),
                    Num(res.Counter(c.name, "peak_MiB"), 6, 0).c_str());
        for (int t = from; t <= to; t += 100) {
          char key[32];
          std::snprintf(key, sizeof key, "rss_%04d_MiB", t);
          std::printf(" %5s", Num(res.Counter(c.name, key), 5, 0).c_str());
        }
        std::printf("\n");
      }
    }
    std::printf("back to base + 10%% of peak at (ms; -1 = not within 2.5 s):");
    for (const auto& c : cs) std::printf(" %s %s;", c.impl.c_str(), Num(res.Counter(c.name, "back_ms"), 0, 0).c_str());
    std::printf("\n");
    for (const auto& t : kTargets)
      if (std::string(t.workload) == "burst") {
        Verdict v = Evaluate(t, res, all);
        std::printf("tidepool (tp_sweeper_start(NULL): decay 1000 ms) back within 1500 ms: %s (%s)\n",
                    v.status.c_str(), v.measured.c_str());
      }
  }

  // ---- collectors: what each measured itself ----
  struct GcCounters {
    const char* workload;
    std::vector<std::string> counters;
  };
  const GcCounters kGcCounters[] = {
      {"gc_tree_1g", {"secs", "mark_MBps", "heap_MiB"}},
      {"gc_pause_256m", {"gcs", "pause_mean_ms", "pause_max_ms", "gc_share", "heap_MiB"}},
      {"gc_cycles", {"gcs", "gc_share", "heap_max_MiB"}},
      {"gc_mark_cpu_idle", {"mark_wall_ms", "mutator_Mops", "live_MiB", "pause_max_ms"}},
      {"gc_mark_cpu_read", {"mark_wall_ms", "mutator_Mops", "live_MiB", "pause_max_ms"}},
      {"gc_mark_cpu_spin", {"mark_wall_ms", "mutator_Mops", "live_MiB", "pause_max_ms"}},
      {"gc_mark_cpu_alloc", {"mark_wall_ms", "mutator_Mops", "live_MiB", "pause_max_ms"}},
      {"gc_mark_cpu_replace", {"mark_wall_ms", "mutator_Mops", "live_MiB", "pause_max_ms"}},
      {"gc_mark_cpu_swap", {"mark_wall_ms", "mutator_Mops", "live_MiB", "pause_max_ms"}},
  };
  printed = false;
  for (const auto& g : kGcCounters) {
    if (!by_workload.count(g.workload)) continue;
    if (!printed) {
      std::printf("\n== Collectors: collections, pauses and heap (medians of rounds) ==\n");
      PrintRule(W);
      printed = true;
    }
    for (const auto& c : by_workload[g.workload]) {
      std::string line;
      for (const auto& k : g.counters) line += " " + k + " " + Num(res.Counter(c.name, k), 0) + ";";
      std::printf("%-28s%s\n", c.name.c_str(), line.c_str());
    }
  }

  PrintGcServer(res, by_workload, all, opt, load0);

  // ---- ratio table: tp vs each peer ----
  std::printf("\n== tidepool vs peers: peer ns/op / tp ns/op (>1: tidepool is faster), medians ==\n");
  for (const auto& g : groups) {
    std::vector<std::string> peers;
    bool any = false;
    for (const auto& w : ordered) {
      if (group_of[w] != g) continue;
      for (const auto& p : Peers(all, w))
        if (std::find(peers.begin(), peers.end(), p) == peers.end()) peers.push_back(p);
      for (const auto& c : by_workload[w]) any |= c.impl == "tp";
    }
    if (!any) continue;
    std::printf("%-22s", g.c_str());
    for (const auto& p : peers) std::printf(" %9s", p.c_str());
    std::printf("   target (issue): measured, status\n");
    PrintRule(W);
    for (const auto& w : ordered) {
      if (group_of[w] != g) continue;
      auto rc = kRatioCounter.find(w);
      auto metric = [&](const std::string& impl) { return RatioMetric(res, w, impl); };
      double tpv = metric("tp");
      bool has_tp = false, has_peer = false, has_target = false;
      for (const auto& c : by_workload[w]) has_tp |= c.impl == "tp", has_peer |= c.impl != "tp";
      for (const auto& t : kTargets) has_target |= w == t.workload;
      if (!has_tp || (!has_peer && !has_target)) continue;
      std::string label = rc == kRatioCounter.end() ? w : w + " (" + rc->second + ")";
      std::printf("%-22s", label.c_str());
      for (const auto& p : peers) {
        double pv = metric(p);
        std::printf(" %9s", std::isnan(pv) ? "" : (Num(pv / tpv, 0) + "x").c_str());
      }
      bool first = true;
      for (const auto& t : kTargets) {
        if (w != t.workload) continue;
        Verdict v = Evaluate(t, res, all);
        std::printf("%s%s: %s, %s", first ? "   " : "; ", t.text, v.measured.c_str(), v.status.c_str());
        first = false;
      }
      std::printf("\n");
    }
    std::printf("\n");
  }

  // ---- targets summary ----
  std::printf("== Targets (issues 3-7, 12) ==\n");
  std::printf("%-16s %-56s %-22s %s\n", "workload", "target", "measured", "status");
  PrintRule(W);
  int met = 0, missed = 0;
  for (const auto& t : kTargets) {
    if (!by_workload.count(t.workload)) continue;
    Verdict v = Evaluate(t, res, all);
    met += v.status == "MET";
    missed += v.status == "MISSED";
    std::printf("%-16s %-56s %-22s %s\n", t.workload, t.text, v.measured.c_str(), v.status.c_str());
  }
  std::printf("targets: %d met, %d missed\n", met, missed);

  // ---- failures ----
  if (!res.failures.empty()) {
    std::printf("\n== Failures (%zu) ==\n", res.failures.size());
    for (const auto& f : res.failures) std::printf("- %s\n", f.c_str());
    std::printf("worker logs: %s\n", tmp.c_str());
  }
  // ---- plots ----
  if (!opt.no_plots && !res.by_case.empty())
    WritePlots(PlotData(res, ordered, by_workload, group_of, opt, cpu_model), self, argv[0], opt, tmp);

  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("\ntotal time: %.0f s (%d rounds)\n", el, opt.rounds);
  if (opt.keep_logs.empty() && res.failures.empty()) {
    std::string cmd = "rm -rf '" + tmp + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "bench: could not remove %s\n", tmp.c_str());
  }
  return g_interrupted ? 130 : 0;
}
