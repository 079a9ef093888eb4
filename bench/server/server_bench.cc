// bench/server/server_bench.cc — //bench:server: tidepool's cache
// (//examples/cache:tpcache) side by side with memcached, in one run.
//
//   ./bazelw run //bench:server [-- --quick --reps N --out DIR ...]   (--help)
//
// Both servers get the same flags (-t 1 -U 0 -l 127.0.0.1 -m MB) and the same
// CPU: each is pinned to CPU 0 (sched_setaffinity in the child, as `taskset
// -c 0` would), every client to CPU 1. Ports are free loopback ports picked
// by binding port 0; every server this program starts is stopped by its PID
// (SIGTERM, then SIGKILL after 5 s), also when it is interrupted; every
// client process and wait is bounded in time.
//
// Repetition r (of --reps, default 5) runs, servers in an order that
// alternates with r:
//   1. throughput: a 90/10 get/set mix and set-only, 50 connections, 32 B
//      keys, 100 B values, 100 000 keys, --duration s each, once with
//      bench/server:loadgen (prefilled, every response checked, latency
//      percentiles) and once with memcaslap (libmemcached-tools), on two
//      long-lived servers;
//   2. memory: for `delete` and then `flush_all`, a fresh server of each kind
//      (-m 2048) is loaded with --mem-items x 1000 B values (1 M: about
//      1 GiB), its RSS read (VmRSS of /proc/PID/status), everything deleted
//      (each key must answer DELETED) or flushed, and its RSS sampled every
//      100 ms for --mem-seconds (default 12) from the start of the delete.
// Besides ops/s it records, per throughput case, the server's CPU time per
// request (/proc/PID/stat before and after; the loadgen's prefill counted
// in) and the client's CPU time over its wall time (wait4): on a shared
// machine these hold up better than ops/s, and a client near 100 % says the
// client, not the server, set the pace.
// It prints medians over the repetitions with min..max, the tpcache /
// memcached ratios (median of the per-repetition ratios: each pair ran close
// together in time), the targets of issue 13 with MET / MISSED, and writes
// rss.csv, rss.png (through /usr/bin/python3 + matplotlib, when present),
// table.txt and every process's log into the output directory it names at
// the end.
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/cli.h"
#include "bench/median.h"

namespace {

// ---------------------------------------------------------------------------
// Options

struct Options {
  int reps = 5;
  double duration = 10;      // seconds per throughput case
  long mem_items = 1000000;  // memory test: items of 1000 B
  double mem_seconds = 12;   // RSS sampled this long after the delete starts
  int conns = 50;
  long keys = 100000;
  bool quick = false;
  bool memcaslap = true;
  bool memory = true;
  bool throughput = true;
  int server_cpu = 0, client_cpu = 1;
  std::string out;
  std::string tpcache, memcached = "/usr/bin/memcached", memcaslap_bin = "/usr/bin/memcaslap";
  std::string loadgen;
};

void Usage(FILE* f) {
  std::fprintf(f,
               "usage: server [options]   (./bazelw run //bench:server -- [options])\n"
               "  --quick           a short run: 3 repetitions of 3 s, memory test of 200000 items over 7 s\n"
               "  --reps N          interleaved repetitions (default 5)\n"
               "  --duration S      seconds per throughput case (default 10)\n"
               "  --mem-items N     memory test: items of 1000 B (default 1000000, about 1 GiB)\n"
               "  --mem-seconds S   memory test: RSS sampled this long after the delete (default 12)\n"
               "  --no-memcaslap    loadgen only;  --no-memory / --no-throughput: skip that part\n"
               "  --out DIR         where rss.csv, rss.png, table.txt and the logs go\n"
               "                    (default /tmp/tidepool-server-bench-<time>)\n"
               "  --tpcache PATH / --memcached PATH / --memcaslap PATH / --loadgen PATH\n"
               "                    the binaries (default: runfiles, /usr/bin)\n");
}

bool ParseOptions(int argc, char** argv, Options* o) {
  bool dur_set = false, items_set = false, secs_set = false, reps_set = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&](const char* name) { return OptionValue(argc, argv, &i, name); };
    const char* v;
    if (a == "--help" || a == "-h") {
      Usage(stdout);
      std::exit(0);
    } else if (a == "--quick") {
      o->quick = true;
    } else if (a == "--no-memcaslap") {
      o->memcaslap = false;
    } else if (a == "--no-memory") {
      o->memory = false;
    } else if (a == "--no-throughput") {
      o->throughput = false;
    } else if ((v = value("--reps"))) {
      o->reps = std::atoi(v), reps_set = true;
      if (o->reps < 1 || o->reps > 100) return false;
    } else if ((v = value("--duration"))) {
      o->duration = std::atof(v), dur_set = true;
      if (!(o->duration >= 0.5 && o->duration <= 600)) return false;
    } else if ((v = value("--mem-items"))) {
      o->mem_items = std::atol(v), items_set = true;
      if (o->mem_items < 1000 || o->mem_items > 4000000) return false;
    } else if ((v = value("--mem-seconds"))) {
      o->mem_seconds = std::atof(v), secs_set = true;
      if (!(o->mem_seconds >= 1 && o->mem_seconds <= 600)) return false;
    } else if ((v = value("--out"))) {
      o->out = v;
    } else if ((v = value("--tpcache"))) {
      o->tpcache = v;
    } else if ((v = value("--memcached"))) {
      o->memcached = v;
    } else if ((v = value("--memcaslap"))) {
      o->memcaslap_bin = v;
    } else if ((v = value("--loadgen"))) {
      o->loadgen = v;
    } else {
      std::fprintf(stderr, "server: unknown or incomplete option %s\n", a.c_str());
      return false;
    }
  }
  if (o->quick) {
    if (!reps_set) o->reps = 3;
    if (!dur_set) o->duration = 3;
    if (!items_set) o->mem_items = 200000;
    if (!secs_set) o->mem_seconds = 7;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Files, clocks, binaries

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool IsExecutable(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(p.c_str(), X_OK) == 0;
}

// A file of the runfiles (bazel run), or beside the workspace's bazel-bin.
std::string FindRunfile(const std::string& self, const char* argv0, const std::string& rel) {
  std::vector<std::string> tries;
  if (const char* rd = std::getenv("RUNFILES_DIR")) tries.push_back(std::string(rd) + "/tidepool/" + rel);
  tries.push_back(std::string(argv0) + ".runfiles/tidepool/" + rel);
  tries.push_back(self + ".runfiles/tidepool/" + rel);
  tries.push_back(rel);  // bazel run: the cwd is the runfiles root
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) tries.push_back(std::string(ws) + "/bazel-bin/" + rel);
  for (const auto& t : tries)
    if (IsExecutable(t) || (rel.size() > 3 && rel.compare(rel.size() - 3, 3, ".py") == 0 && access(t.c_str(), R_OK) == 0))
      return t;
  return "";
}

// /proc/PID/status VmRSS in MiB; NaN when unreadable.
double RssMib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return NAN;
}

// CPU time (user + system) a process has used, in seconds; NaN when
// unreadable. Fields 14 and 15 of /proc/PID/stat, after the command's ")".
double ProcCpuSec(pid_t pid) {
  std::string st = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t rp = st.rfind(')');
  if (rp == std::string::npos) return NAN;
  std::istringstream in(st.substr(rp + 2));
  std::string f;
  double ut = NAN, stime = NAN;
  for (int i = 3; in >> f; i++) {
    if (i == 14) ut = std::atof(f.c_str());
    if (i == 15) {
      stime = std::atof(f.c_str());
      break;
    }
  }
  return (ut + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// A loopback port nobody listens on now (a server that loses the race to
// another process exits, and StartServer tries another).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

bool CanConnect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

// ---------------------------------------------------------------------------
// Processes: every child's PID is kept until it is reaped, so a signal to
// this program stops them all.

std::set<pid_t> g_children;
volatile sig_atomic_t g_interrupted = 0;

void OnSignal(int sig) { g_interrupted = sig; }

void KillAllChildren() {
  for (pid_t p : g_children) kill(p, SIGKILL);
  for (pid_t p : g_children) waitpid(p, nullptr, 0);
  g_children.clear();
}

[[noreturn]] void Die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "server: ");
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  KillAllChildren();
  std::exit(1);
}

void CheckInterrupted() {
  if (g_interrupted) Die("interrupted by signal %d; stopped every process it started", static_cast<int>(g_interrupted));
}

// Starts argv pinned to `cpu`, stdout and stderr to `log`.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log, int cpu) {
  pid_t pid = fork();
  if (pid < 0) Die("fork: %s", std::strerror(errno));
  if (pid == 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      std::fprintf(stderr, "sched_setaffinity(cpu %d): %s\n", cpu, std::strerror(errno));
      _exit(126);
    }
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
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
  g_children.insert(pid);
  return pid;
}

// Waits up to `timeout` s for pid; -1 (and SIGKILL) when it did not end,
// else its wait status.
int WaitFor(pid_t pid, double timeout, double* cpu_s = nullptr) {
  double t0 = Now();
  int status = 0;
  for (;;) {
    struct rusage ru {};
    pid_t w = wait4(pid, &status, WNOHANG, &ru);
    if (w == pid && cpu_s)
      *cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    if (w == pid) {
      g_children.erase(pid);
      return status;
    }
    if (w < 0 && errno != EINTR) {
      g_children.erase(pid);
      return -1;
    }
    if (Now() - t0 > timeout) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      g_children.erase(pid);
      return -1;
    }
    CheckInterrupted();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string Describe(int status) {
  if (status == -1) return "timed out";
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  return "?";
}

struct Run {
  bool ok = false;
  double wall_s = 0, cpu_s = NAN;  // the client's wall time and CPU time (user + system)
  std::string out;  // the log's text
  std::string what;
};

Run RunClient(const Options& o, const std::vector<std::string>& args, const std::string& log, double timeout) {
  unlink(log.c_str());
  double t0 = Now();
  pid_t pid = Spawn(args, log, o.client_cpu);
  Run r;
  int st = WaitFor(pid, timeout, &r.cpu_s);
  r.wall_s = Now() - t0;
  r.out = ReadFile(log);
  r.ok = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
  r.what = Describe(st);
  return r;
}

// ---------------------------------------------------------------------------
// Servers

struct Server {
  std::string kind;  // "memcached" or "tpcache"
  pid_t pid = -1;
  int port = -1;
  std::string log;
};

Server StartServer(const Options& o, const std::string& kind, int mem_mb, const std::string& dir) {
  Server s;
  s.kind = kind;
  s.log = dir + "/" + kind + ".log";
  for (int attempt = 0; attempt < 5; attempt++) {
    s.port = FreePort();
    if (s.port < 0) Die("no free loopback port: %s", std::strerror(errno));
    std::vector<std::string> args = {kind == "memcached" ? o.memcached : o.tpcache};
    if (kind == "memcached" && geteuid() == 0) args.insert(args.end(), {"-u", "root"});
    args.insert(args.end(), {"-U", "0", "-p", std::to_string(s.port), "-l", "127.0.0.1", "-t", "1", "-m",
                             std::to_string(mem_mb), "-c", "4096"});
    s.pid = Spawn(args, s.log, o.server_cpu);
    double t0 = Now();
    while (Now() - t0 < 10) {
      CheckInterrupted();
      int st;
      if (waitpid(s.pid, &st, WNOHANG) == s.pid) {
        g_children.erase(s.pid);
        s.pid = -1;
        break;
      }
      if (CanConnect(s.port)) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (s.pid > 0) {
      kill(s.pid, SIGKILL);
      WaitFor(s.pid, 5);
    }
  }
  Die("%s did not start (see %s):\n%s", kind.c_str(), s.log.c_str(), ReadFile(s.log).c_str());
}

void StopServer(Server* s) {
  if (s->pid <= 0) return;
  kill(s->pid, SIGTERM);
  if (WaitFor(s->pid, 5) == -1) std::fprintf(stderr, "server: %s (pid %d) ignored SIGTERM for 5 s: killed\n", s->kind.c_str(), s->pid);
  s->pid = -1;
}

// ---------------------------------------------------------------------------
// Results

// key=value pairs of loadgen's `result` line.
std::map<std::string, double> ResultLine(const std::string& out) {
  std::map<std::string, double> m;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("result ", 0) != 0) continue;
    std::istringstream f(line.substr(7));
    std::string kv;
    while (f >> kv) {
      size_t eq = kv.find('=');
      if (eq != std::string::npos) m[kv.substr(0, eq)] = std::atof(kv.c_str() + eq + 1);
    }
  }
  return m;
}

double MemcaslapTps(const std::string& out) {
  size_t p = out.rfind("TPS: ");
  return p == std::string::npos ? NAN : std::atof(out.c_str() + p + 5);
}

std::vector<std::string> Kinds() { return {"memcached", "tpcache"}; }

// samples[kind][metric] over repetitions
using Samples = std::map<std::string, std::map<std::string, std::vector<double>>>;

struct Curve {
  std::string kind, variant;
  int rep;
  double delete_end;  // seconds after the start of the delete
  std::vector<std::pair<double, double>> pts;  // (s, MiB)
};

std::string Fmt(double v, int prec = 1) {
  if (std::isnan(v)) return "-";
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

std::string Range(const std::vector<double>& v, int prec = 1) {
  std::vector<double> w;
  for (double x : v)
    if (!std::isnan(x)) w.push_back(x);
  if (w.empty()) return "-";
  auto mm = std::minmax_element(w.begin(), w.end());
  return Fmt(*mm.first, prec) + ".." + Fmt(*mm.second, prec);
}

std::vector<double> Ratios(const std::vector<double>& tp, const std::vector<double>& mc) {
  std::vector<double> r;
  for (size_t i = 0; i < std::min(tp.size(), mc.size()); i++) r.push_back(tp[i] / mc[i]);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseOptions(argc, argv, &o)) {
    Usage(stderr);
    return 2;
  }
  char selfbuf[4096];
  ssize_t sn = readlink("/proc/self/exe", selfbuf, sizeof selfbuf - 1);
  std::string self = sn > 0 ? std::string(selfbuf, static_cast<size_t>(sn)) : argv[0];
  if (o.loadgen.empty()) o.loadgen = FindRunfile(self, argv[0], "bench/server/loadgen");
  if (o.tpcache.empty()) o.tpcache = FindRunfile(self, argv[0], "examples/cache/tpcache");
  std::string plot = FindRunfile(self, argv[0], "bench/server/plot_rss.py");
  if (o.loadgen.empty() || !IsExecutable(o.loadgen)) Die("loadgen not found (give --loadgen PATH)");
  if (o.tpcache.empty() || !IsExecutable(o.tpcache)) Die("tpcache not found (give --tpcache PATH)");
  if (!IsExecutable(o.memcached)) Die("%s not found: ./bazelw installs Debian's memcached", o.memcached.c_str());
  if (o.memcaslap && !IsExecutable(o.memcaslap_bin)) {
    std::fprintf(stderr, "server: %s not found (libmemcached-tools): loadgen only\n", o.memcaslap_bin.c_str());
    o.memcaslap = false;
  }
  // Two CPUs of our affinity set: the server's and the client's.
  cpu_set_t avail;
  CPU_ZERO(&avail);
  sched_getaffinity(0, sizeof avail, &avail);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &avail)) cpus.push_back(c);
  if (cpus.empty()) Die("no CPU in the affinity set");
  o.server_cpu = cpus[0];
  o.client_cpu = cpus.size() > 1 ? cpus[1] : cpus[0];

  if (o.out.empty()) {
    char b[64];
    time_t t = time(nullptr);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(b, sizeof b, "%Y%m%d-%H%M%S", &tm);
    const char* tmpdir = std::getenv("TMPDIR");
    o.out = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/tidepool-server-bench-" + b;
  }
  if (mkdir(o.out.c_str(), 0755) != 0 && errno != EEXIST) Die("mkdir %s: %s", o.out.c_str(), std::strerror(errno));
  std::string logs = o.out + "/logs";
  mkdir(logs.c_str(), 0755);

  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);

  // memcaslap's workloads: cmd 0 = set, 1 = get.
  std::string cfg90 = o.out + "/memcaslap_90_10.cfg", cfgset = o.out + "/memcaslap_set.cfg";
  std::ofstream(cfg90) << "key\n32 32 1\nvalue\n100 100 1\ncmd\n0 0.1\n1 0.9\n";
  std::ofstream(cfgset) << "key\n32 32 1\nvalue\n100 100 1\ncmd\n0 1\n";

  Run ver = RunClient(o, {o.memcached, "-V"}, logs + "/memcached_version.log", 10);
  std::string mc_version = ver.out.substr(0, ver.out.find('\n'));
  std::fprintf(stderr,
               "server: %d repetitions; servers on CPU %d (-t 1), clients on CPU %d; %s%s\n"
               "        throughput: %.0f s per case, %d connections, 32 B keys, 100 B values, %ld keys\n"
               "        memory: %ld x 1000 B items, RSS every 100 ms for %.0f s\n"
               "        output: %s\n",
               o.reps, o.server_cpu, o.client_cpu, o.quick ? "--quick; " : "",
               o.client_cpu == o.server_cpu ? "ONE CPU ONLY: client and server share it; " : "", o.duration, o.conns,
               o.keys, o.mem_items, o.mem_seconds, o.out.c_str());

  Samples thr;  // thr[kind]["90_10/loadgen"], ... ["90_10/p99"], ...
  Samples mem;  // mem[kind]["delete/base"], ...
  std::vector<Curve> curves;
  std::vector<std::string> failures;
  const char* kWorkloads[] = {"90_10", "set"};

  Server live[2];
  if (o.throughput) {
    for (int k = 0; k < 2; k++) live[k] = StartServer(o, Kinds()[k], 1024, logs);
    std::fprintf(stderr, "server: memcached pid %d port %d, tpcache pid %d port %d\n", live[0].pid, live[0].port,
                 live[1].pid, live[1].port);
  }
  double dur = o.duration;
  for (int r = 0; r < o.reps; r++) {
    std::vector<int> order = r % 2 ? std::vector<int>{1, 0} : std::vector<int>{0, 1};
    if (o.throughput) {
      for (const char* wl : kWorkloads) {
        bool set_only = std::string(wl) == "set";
        for (int tool = 0; tool < (o.memcaslap ? 2 : 1); tool++) {
          for (int k : order) {
            CheckInterrupted();
            Server& s = live[k];
            std::string addr = "127.0.0.1:" + std::to_string(s.port);
            std::string log = logs + "/" + s.kind + "_" + wl + (tool ? "_memcaslap" : "_loadgen") + "_r" + std::to_string(r) + ".log";
            double ops = NAN, requests = NAN, cpu0 = ProcCpuSec(s.pid);
            Run run;
            if (tool == 0) {
              run = RunClient(o,
                                  {o.loadgen, "-s", addr, "-c", std::to_string(o.conns), "-d", Fmt(dur, 2), "-g",
                                   set_only ? "0" : "0.9", "-k", "32", "-v", "100", "-n", std::to_string(o.keys), "-p",
                                   "-S", std::to_string(1000 + r)},
                                  log, dur + 120);
              auto m = ResultLine(run.out);
              if (!run.ok || !m.count("ops_per_s")) {
                failures.push_back(s.kind + " " + wl + " loadgen rep " + std::to_string(r) + ": " + run.what + " (" + log + ")");
              } else {
                ops = m["ops_per_s"];
                requests = static_cast<double>(o.keys) + m["gets"] + m["sets"];  // prefill, run, drain
                for (const char* q : {"p50_us", "p99_us", "p999_us", "max_us"})
                  thr[s.kind][std::string(wl) + "/" + q].push_back(m[q]);
              }
              thr[s.kind][std::string(wl) + "/loadgen"].push_back(ops / 1e3);
            } else {
              run = RunClient(o,
                                  {o.memcaslap_bin, "-s", addr, "-F", set_only ? cfgset : cfg90, "-T", "1", "-c",
                                   std::to_string(o.conns), "-t", std::to_string(static_cast<int>(std::lround(dur))) + "s"},
                                  log, dur + 60);
              ops = MemcaslapTps(run.out);
              if (!run.ok || std::isnan(ops)) {
                failures.push_back(s.kind + " " + wl + " memcaslap rep " + std::to_string(r) + ": " + run.what + " (" + log + ")");
                ops = NAN;
              }
              thr[s.kind][std::string(wl) + "/memcaslap"].push_back(ops / 1e3);
              size_t g = run.out.find("cmd_get: "), st = run.out.find("cmd_set: ");
              if (!std::isnan(ops) && g != std::string::npos && st != std::string::npos)
                requests = std::atof(run.out.c_str() + g + 9) + std::atof(run.out.c_str() + st + 9);
            }
            // CPU time per request the server spent (prefill included), and
            // how busy the client kept its CPU: near 100 % the client, not
            // the server, set the pace. Both hold up under a noisy machine
            // better than ops/s.
            std::string tn = std::string(wl) + (tool ? "/memcaslap" : "/loadgen");
            thr[s.kind][tn + "_srv_us"].push_back((ProcCpuSec(s.pid) - cpu0) * 1e6 / requests);
            thr[s.kind][tn + "_cli_pct"].push_back(100 * run.cpu_s / run.wall_s);
            std::fprintf(stderr, "  rep %d %-6s %-9s %-9s %8.1f k ops/s\n", r, wl, tool ? "memcaslap" : "loadgen",
                         s.kind.c_str(), ops / 1e3);
          }
        }
      }
    }
    if (o.memory) {
      for (const char* variant : {"delete", "flush"}) {
        for (int k : order) {
          CheckInterrupted();
          std::string kind = Kinds()[k];
          std::string tag = kind + "_mem_" + variant + "_r" + std::to_string(r);
          Server s = StartServer(o, kind, 2048, logs);
          std::string addr = "127.0.0.1:" + std::to_string(s.port);
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
          double base = RssMib(s.pid);
          Run fill = RunClient(o,
                               {o.loadgen, "-s", addr, "-o", "fill", "-c", std::to_string(o.conns), "-D", "8", "-k", "32",
                                "-v", "1000", "-n", std::to_string(o.mem_items), "-S", std::to_string(2000 + r)},
                               logs + "/" + tag + "_fill.log", 300);
          if (!fill.ok) {
            failures.push_back(tag + " fill: " + fill.what);
            StopServer(&s);
            continue;
          }
          Run st = RunClient(o, {o.loadgen, "-s", addr, "-o", "stats"}, logs + "/" + tag + "_stats.log", 30);
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
          double full = RssMib(s.pid);
          if (st.out.find("STAT evictions 0\r") == std::string::npos && st.out.find("STAT evictions 0\n") == std::string::npos)
            failures.push_back(tag + ": evictions during the fill (-m 2048): the full RSS is not that of every item");
          // Delete (or flush) while sampling RSS every 100 ms.
          Curve c{kind, variant, r, NAN, {}};
          std::string log = logs + "/" + tag + "_" + variant + ".log";
          std::vector<std::string> args = {o.loadgen, "-s", addr, "-o", variant, "-c", std::to_string(o.conns), "-D", "8",
                                           "-k", "32", "-v", "1000", "-n", std::to_string(o.mem_items)};
          double t0 = Now();
          pid_t del = Spawn(args, log, o.client_cpu);
          bool del_done = false;
          int del_status = 0;
          for (int i = 0;; i++) {
            double target = t0 + 0.1 * i;
            double now = Now();
            if (target > now) std::this_thread::sleep_for(std::chrono::duration<double>(target - now));
            if (!del_done) {
              pid_t w = waitpid(del, &del_status, WNOHANG);
              if (w == del) {
                del_done = true;
                g_children.erase(del);
                c.delete_end = Now() - t0;
              }
            }
            c.pts.emplace_back(Now() - t0, RssMib(s.pid));
            CheckInterrupted();
            // At least --mem-seconds from the start, and 5.5 s past the end
            // of the delete (the target's window); bounded either way.
            double el = Now() - t0;
            if (el >= o.mem_seconds && del_done && el >= c.delete_end + 5.5) break;
            if (el > o.mem_seconds + 300) break;
          }
          if (!del_done) {
            del_status = WaitFor(del, 0);
            failures.push_back(tag + " " + variant + ": did not finish in " + Fmt(o.mem_seconds + 300, 0) + " s");
          } else if (!WIFEXITED(del_status) || WEXITSTATUS(del_status) != 0) {
            failures.push_back(tag + " " + variant + ": " + Describe(del_status) + " (" + log + ")");
          }
          StopServer(&s);
          // Figures: from the end of the delete.
          double thresh = base + 0.10 * full, back = NAN, at5 = NAN, end = c.pts.back().second;
          if (del_done) {
            for (const auto& p : c.pts)
              if (p.first >= c.delete_end && p.second <= thresh) {
                back = p.first - c.delete_end;
                break;
              }
            for (const auto& p : c.pts)
              if (p.first >= c.delete_end + 5) {
                at5 = p.second;
                break;
              }
          }
          std::string v = variant;
          mem[kind][v + "/base"].push_back(base);
          mem[kind][v + "/full"].push_back(full);
          mem[kind][v + "/op_s"].push_back(c.delete_end);
          mem[kind][v + "/at5"].push_back(at5);
          mem[kind][v + "/end"].push_back(end);
          mem[kind][v + "/back_s"].push_back(back);
          curves.push_back(c);
          std::fprintf(stderr,
                       "  rep %d memory %-6s %-9s base %6.1f MiB full %7.1f MiB, %s took %.2f s, +5 s %7.1f MiB, "
                       "+%.0f s %7.1f MiB, under base+10%% of full after %s s\n",
                       r, variant, kind.c_str(), base, full, variant, c.delete_end, at5, c.pts.back().first, end,
                       Fmt(back, 2).c_str());
        }
      }
    }
  }
  for (auto& s : live) StopServer(&s);

  // ---- tables ----
  std::ostringstream t;
  char line[512];
  t << "\n## tpcache vs " << mc_version << ": " << o.reps << " interleaved repetitions (medians, min..max over them)\n";
  t << "server on CPU " << o.server_cpu << " with -t 1, clients on CPU " << o.client_cpu
    << "; ratio = median of the per-repetition tpcache/memcached ratios\n\n";
  auto row = [&](const std::string& label, const std::vector<double>& mc, const std::vector<double>& tp, int prec) {
    std::vector<double> ra = Ratios(tp, mc);
    std::snprintf(line, sizeof line, "%-34s %9s %-17s %9s %-17s %6s %-11s\n", label.c_str(), Fmt(Median(mc), prec).c_str(),
                  ("[" + Range(mc, prec) + "]").c_str(), Fmt(Median(tp), prec).c_str(), ("[" + Range(tp, prec) + "]").c_str(),
                  Fmt(Median(ra), 2).c_str(), ("[" + Range(ra, 2) + "]").c_str());
    t << line;
  };
  auto& MC = thr["memcached"];
  auto& TP = thr["tpcache"];
  if (o.throughput) {
    std::snprintf(line, sizeof line, "%-34s %27s %27s %18s\n", "throughput, k ops/s", "memcached", "tpcache", "tp/mc");
    t << line;
    for (const char* wl : kWorkloads) {
      std::string w = wl, name = w == "set" ? "set-only" : "90/10 get/set";
      row(name + ", loadgen", MC[w + "/loadgen"], TP[w + "/loadgen"], 1);
      if (o.memcaslap) row(name + ", memcaslap", MC[w + "/memcaslap"], TP[w + "/memcaslap"], 1);
    }
    std::snprintf(line, sizeof line, "\n%-34s %27s %27s %18s\n", "server CPU per request, us", "memcached", "tpcache", "tp/mc");
    t << line;
    for (const char* wl : kWorkloads) {
      std::string w = wl, name = w == "set" ? "set-only" : "90/10 get/set";
      for (int tool = 0; tool < (o.memcaslap ? 2 : 1); tool++) {
        std::string tn = w + (tool ? "/memcaslap" : "/loadgen");
        row(name + (tool ? ", memcaslap" : ", loadgen"), MC[tn + "_srv_us"], TP[tn + "_srv_us"], 2);
      }
    }
    std::snprintf(line, sizeof line, "\n%-34s %27s %27s %18s\n", "client CPU busy, % of its run", "memcached", "tpcache", "tp/mc");
    t << line;
    for (const char* wl : kWorkloads) {
      std::string w = wl, name = w == "set" ? "set-only" : "90/10 get/set";
      for (int tool = 0; tool < (o.memcaslap ? 2 : 1); tool++) {
        std::string tn = w + (tool ? "/memcaslap" : "/loadgen");
        row(name + (tool ? ", memcaslap" : ", loadgen"), MC[tn + "_cli_pct"], TP[tn + "_cli_pct"], 0);
      }
    }
    std::snprintf(line, sizeof line, "\n%-34s %27s %27s %18s\n", "latency (loadgen), us", "memcached", "tpcache", "tp/mc");
    t << line;
    for (const char* wl : kWorkloads) {
      std::string w = wl, name = w == "set" ? "set-only" : "90/10";
      for (const char* q : {"p50", "p99", "p999", "max"})
        row(name + " " + (std::string(q) == "p999" ? "p99.9" : q), MC[w + "/" + q + "_us"], TP[w + "/" + q + "_us"], 0);
    }
  }
  auto& MM = mem["memcached"];
  auto& TM = mem["tpcache"];
  if (o.memory) {
    std::snprintf(line, sizeof line, "\n%-34s %27s %27s %18s\n",
                  ("memory, " + std::to_string(o.mem_items) + " x 1000 B").c_str(), "memcached", "tpcache", "tp/mc");
    t << line;
    for (const char* variant : {"delete", "flush"}) {
      std::string v = variant, op = v == "delete" ? "delete" : "flush_all";
      row(op + ": RSS at start, MiB", MM[v + "/base"], TM[v + "/base"], 1);
      row(op + ": RSS full, MiB", MM[v + "/full"], TM[v + "/full"], 1);
      row(op + ": took, s", MM[v + "/op_s"], TM[v + "/op_s"], 2);
      row(op + ": RSS 5 s after, MiB", MM[v + "/at5"], TM[v + "/at5"], 1);
      row(op + ": RSS at +" + Fmt(o.mem_seconds, 0) + " s, MiB", MM[v + "/end"], TM[v + "/end"], 1);
      row(op + ": s to base+10% of full", MM[v + "/back_s"], TM[v + "/back_s"], 2);
    }
  }

  // ---- targets (issue 13) ----
  t << "\n## targets (issue 13)\n";
  int met = 0, missed = 0;
  auto target = [&](const std::string& what, double value, const std::string& shown, bool ok, bool have) {
    const char* verdict = !have ? "n/a" : ok ? "MET" : "MISSED";
    if (have) (ok ? met : missed)++;
    std::snprintf(line, sizeof line, "  %-62s %-24s %s\n", what.c_str(), shown.c_str(), verdict);
    t << line;
    (void)value;
  };
  if (o.throughput) {
    double r90 = Median(Ratios(TP["90_10/loadgen"], MC["90_10/loadgen"]));
    double rset = Median(Ratios(TP["set/loadgen"], MC["set/loadgen"]));
    target("throughput 90/10 >= memcached's (loadgen)", r90, Fmt(r90, 2) + "x", r90 >= 1.0, !std::isnan(r90));
    target("throughput set-only >= 1.2x memcached's (loadgen)", rset, Fmt(rset, 2) + "x", rset >= 1.2, !std::isnan(rset));
    if (o.memcaslap) {
      double m90 = Median(Ratios(TP["90_10/memcaslap"], MC["90_10/memcaslap"]));
      double mset = Median(Ratios(TP["set/memcaslap"], MC["set/memcaslap"]));
      target("throughput 90/10 >= memcached's (memcaslap)", m90, Fmt(m90, 2) + "x", m90 >= 1.0, !std::isnan(m90));
      target("throughput set-only >= 1.2x memcached's (memcaslap)", mset, Fmt(mset, 2) + "x", mset >= 1.2, !std::isnan(mset));
      double a90 = std::fabs(r90 / m90 - 1), aset = std::fabs(rset / mset - 1);
      target("loadgen and memcaslap ratios agree within 15 %, 90/10", a90,
             Fmt(r90, 2) + " vs " + Fmt(m90, 2) + " (" + Fmt(100 * a90, 0) + " %)", a90 <= 0.15, !std::isnan(a90));
      target("loadgen and memcaslap ratios agree within 15 %, set-only", aset,
             Fmt(rset, 2) + " vs " + Fmt(mset, 2) + " (" + Fmt(100 * aset, 0) + " %)", aset <= 0.15, !std::isnan(aset));
    }
    for (const char* wl : kWorkloads) {
      std::string w = wl;
      double mc99 = Median(MC[w + "/p99_us"]), tp99 = Median(TP[w + "/p99_us"]);
      target("p99 <= memcached's, " + std::string(w == "set" ? "set-only" : "90/10"), tp99,
             Fmt(tp99, 0) + " vs " + Fmt(mc99, 0) + " us", tp99 <= mc99, !std::isnan(tp99) && !std::isnan(mc99));
    }
  }
  if (o.memory) {
    for (const char* variant : {"delete", "flush"}) {
      std::string v = variant, op = v == "delete" ? "delete" : "flush_all";
      double back = Median(TM[v + "/back_s"]);
      // A repetition that never got back counts as +inf in the median.
      std::vector<double> backs = TM[v + "/back_s"];
      for (double& b : backs)
        if (std::isnan(b)) b = INFINITY;
      back = Median(backs);
      target("RSS back to base + 10 % of full within 5 s of " + op, back,
             std::isinf(back) ? "not within " + Fmt(o.mem_seconds, 0) + " s" : Fmt(back, 2) + " s", back <= 5.0,
             !TM[v + "/back_s"].empty());
    }
    std::vector<double> fulls = TM["delete/full"], mfull = MM["delete/full"];
    fulls.insert(fulls.end(), TM["flush/full"].begin(), TM["flush/full"].end());
    mfull.insert(mfull.end(), MM["flush/full"].begin(), MM["flush/full"].end());
    double rf = Median(Ratios(fulls, mfull));
    target("RSS full <= 1.1x memcached's", rf, Fmt(rf, 2) + "x", rf <= 1.1, !std::isnan(rf));
  }
  t << "  " << met << " MET, " << missed << " MISSED\n";
  if (!failures.empty()) {
    t << "\n## failures\n";
    for (const auto& f : failures) t << "  " << f << "\n";
  }
  std::fputs(t.str().c_str(), stdout);
  std::ofstream(o.out + "/table.txt") << t.str();

  // ---- RSS curves: CSV, then the plot ----
  {
    std::ofstream csv(o.out + "/rss.csv");
    csv << "server,variant,rep,delete_end_s,t_s,rss_mib\n";
    for (const auto& c : curves)
      for (const auto& p : c.pts)
        csv << c.kind << "," << c.variant << "," << c.rep << "," << Fmt(c.delete_end, 3) << "," << Fmt(p.first, 3) << ","
            << Fmt(p.second, 1) << "\n";
  }
  std::string png = o.out + "/rss.png";
  if (!curves.empty()) {
    if (plot.empty() || !IsExecutable("/usr/bin/python3")) {
      std::printf("\nno plot: /usr/bin/python3 or plot_rss.py missing; the curves are in %s/rss.csv\n", o.out.c_str());
    } else {
      Run pr = RunClient(o, {"/usr/bin/python3", plot, o.out + "/rss.csv", png, std::to_string(o.mem_items)},
                         logs + "/plot.log", 120);
      if (!pr.ok)
        std::printf("\nno plot (%s): %s", pr.what.c_str(), pr.out.c_str());
      else
        std::printf("\nplot: %s\n", png.c_str());
    }
  }
  std::printf("output: %s (table.txt, rss.csv, rss.png, logs/)\n", o.out.c_str());
  return failures.empty() ? 0 : 1;
}
