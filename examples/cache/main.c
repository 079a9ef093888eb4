/*
 * tpcache — a memcached-compatible cache (text and meta protocol) whose
 * memory is tidepool's. Started like memcached:
 *
 *   tpcache -p 11211 -l 127.0.0.1 -t 4 -m 64 -c 1024 -I 1m -U 0 -P pidfile -v
 *
 * Design: why each part of tidepool is used where it is.
 *
 *  - Items live in tidepool pools, one per size class (store.c). A cache
 *    is a population of fixed-size-ish objects allocated and freed from
 *    every worker at high rate: exactly the per-CPU pool's case (a get or
 *    put is ~15 instructions, no atomic, no lock), and finer size classes
 *    than memcached's (8 % apart instead of 25 %) waste less per item.
 *
 *  - The index is read without locks inside epoch sections
 *    (tp_epoch_enter/leave around each lookup and the copy of the value
 *    into the response). Writers (set, delete, eviction, expiry) swing one
 *    pointer under a per-stripe lock and hand the old item to
 *    tp_pool_retire: it returns to its pool only after every reader that
 *    could have seen it has left its section. No reference counts, no
 *    read-side atomics: a get is a hash, a chain walk and a memcpy.
 *
 *  - Connections come from a pool (struct conn) and their read buffers
 *    from pools of 16 KiB (and, for a huge multiget line, 256 KiB)
 *    buffers; a buffer goes back to its pool as soon as it is empty, so
 *    thousands of idle connections hold no buffers.
 *
 *  - Each connection has a small arena (8 KiB chunks): the token array,
 *    response lines, value copies and iovecs of the requests being
 *    answered are bump-allocated there, and the arena is reset when the
 *    last byte is written. Response assembly costs no malloc/free, and a
 *    burst of large responses gives its chunks back on reset.
 *
 *  - The sweeper runs (tp_sweeper_start): pools' idle per-CPU caches,
 *    depots and empty slabs go back to the OS after decay_ms. This is what
 *    makes RSS fall after a big delete or flush_all (memcached keeps its
 *    slabs forever): the maintenance thread unlinks flushed and expired
 *    items, retires them, and the sweeper unmaps the slabs they leave
 *    empty.
 *
 *  - -m is a limit on item memory (pool strides of the items held); past
 *    it, an approximate LRU (per class, second chance on access) evicts,
 *    counted in `stats` as memcached's `evictions`.
 *
 * Event loop: server.c (one epoll thread per -t). Protocol: proto.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <tidepool/tidepool.h>

#include "proto.h"
#include "server.h"
#include "store.h"

static void usage(FILE *f) {
  fprintf(f,
          "tpcache: a memcached-compatible cache on tidepool\n"
          "  -p, --port=<num>          TCP port (default: 11211)\n"
          "  -l, --listen=<addr>       interface to listen on (default: all)\n"
          "  -t, --threads=<num>       worker threads (default: 4)\n"
          "  -m, --memory-limit=<mb>   item memory in megabytes (default: 64)\n"
          "  -c, --conn-limit=<num>    max simultaneous connections (default: 1024)\n"
          "  -I, --max-item-size=<n>   item size limit, k/m suffix (default: 1m)\n"
          "  -U, --udp-port=<num>      UDP port: only 0 (off) is supported\n"
          "  -P, --pidfile=<file>      write the pid here\n"
          "  -v, --verbose             messages on stderr\n"
          "  -u, --user=<user>         accepted and ignored (memcached compatibility)\n"
          "  -h, --help\n");
}

static int parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) return -1;
  switch (*end) {
    case 'k': case 'K': v *= 1024; end++; break;
    case 'm': case 'M': v *= 1024 * 1024; end++; break;
    case '\0': break;
    default: return -1;
  }
  if (*end) return -1;
  *out = (size_t)v;
  return 0;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  long port = 11211, threads = 4, mem_mb = 64, maxconns = 1024, udp = 0;
  size_t item_max = 1024 * 1024;
  const char *addr = NULL, *pidfile = NULL;
  int verbose = 0;
  static const struct option opts[] = {
      {"port", required_argument, 0, 'p'},          {"listen", required_argument, 0, 'l'},
      {"threads", required_argument, 0, 't'},       {"memory-limit", required_argument, 0, 'm'},
      {"conn-limit", required_argument, 0, 'c'},    {"max-item-size", required_argument, 0, 'I'},
      {"udp-port", required_argument, 0, 'U'},      {"pidfile", required_argument, 0, 'P'},
      {"verbose", no_argument, 0, 'v'},             {"user", required_argument, 0, 'u'},
      {"help", no_argument, 0, 'h'},                {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "p:l:t:m:c:I:U:P:vu:h", opts, NULL)) != -1) {
    switch (ch) {
      case 'p':
        if (parse_int(optarg, 0, 65535, &port)) goto bad;
        break;
      case 'l': addr = optarg; break;
      case 't':
        if (parse_int(optarg, 1, 256, &threads)) goto bad;
        break;
      case 'm':
        if (parse_int(optarg, 1, 1L << 30, &mem_mb)) goto bad;
        break;
      case 'c':
        if (parse_int(optarg, 1, 1L << 24, &maxconns)) goto bad;
        break;
      case 'I':
        if (parse_size(optarg, &item_max) || item_max < 1024 ||
            item_max > (size_t)1024 * 1024 * 1024) {
          fprintf(stderr, "tpcache: -I must be between 1k and 1024m\n");
          return 64;
        }
        break;
      case 'U':
        if (parse_int(optarg, 0, 65535, &udp)) goto bad;
        if (udp != 0) {
          fprintf(stderr, "tpcache: UDP is not supported; use -U 0\n");
          return 64;
        }
        break;
      case 'P': pidfile = optarg; break;
      case 'v': verbose++; break;
      case 'u': break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 64;
    }
  }
  if (optind != argc) goto bad_args;
  if (item_max > (size_t)mem_mb * 1024 * 1024 / 2 && mem_mb > 0 && item_max > 1024 * 1024) {
    fprintf(stderr, "tpcache: cannot set item size limit higher than 1/2 of memory max\n");
    return 64;
  }

  /* Room for the connections (memcached raises the limit the same way). */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)maxconns + 64) {
    rl.rlim_cur = (rlim_t)maxconns + 64;
    if (rl.rlim_max < rl.rlim_cur) rl.rlim_max = rl.rlim_cur;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      getrlimit(RLIMIT_NOFILE, &rl);
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
  }
  signal(SIGPIPE, SIG_IGN);

  g_server.port = (int)port;
  g_server.threads = (int)threads;
  g_server.verbose = verbose;
  g_server.maxconns = (unsigned)maxconns;
  g_server.item_size_max = item_max;
  g_server.mem_limit = (size_t)mem_mb * 1024 * 1024;
  g_server.listen_addr = addr;

  store_config sc = {.mem_limit = g_server.mem_limit, .item_size_max = item_max, .factor = 1.08};
  int rc;
  if ((rc = store_init(&sc)) != 0 || (rc = proto_init()) != 0) {
    fprintf(stderr, "tpcache: cannot set up memory: %s\n", strerror(-rc));
    return 71;
  }
  /* Idle memory goes back within about a second of going idle. */
  tp_sweeper_config sw = TP_SWEEPER_CONFIG_DEFAULT;
  if ((rc = tp_sweeper_start(&sw)) != 0) {
    fprintf(stderr, "tpcache: cannot start the sweeper: %s\n", strerror(-rc));
    return 71;
  }

  /* SIGTERM/SIGINT are taken by sigwait below: block them before any
   * thread starts, so every thread inherits the mask. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  server_config cfg = {.addr = addr, .port = (int)port, .threads = (int)threads,
                       .maxconns = (unsigned)maxconns, .verbose = verbose};
  if ((rc = server_start(&cfg)) != 0) return 71;
  if (pidfile) {
    FILE *f = fopen(pidfile, "w");
    if (!f) {
      fprintf(stderr, "tpcache: cannot write pidfile %s: %s\n", pidfile, strerror(errno));
      server_stop();
      return 73;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
  }
  if (verbose)
    fprintf(stderr, "tpcache: listening on %s:%ld, %ld threads, -m %ld, -c %ld, -I %zu\n",
            addr ? addr : "*", port, threads, mem_mb, maxconns, item_max);

  int sig = 0;
  sigwait(&stop, &sig);
  if (verbose) fprintf(stderr, "tpcache: signal %d, shutting down\n", sig);
  server_stop();
  tp_sweeper_stop();
  store_shutdown();
  proto_shutdown();
  if (pidfile) unlink(pidfile);
  return 0;

bad:
  fprintf(stderr, "tpcache: bad value for -%c: %s\n", ch, optarg);
  return 64;
bad_args:
  usage(stderr);
  return 64;
}
