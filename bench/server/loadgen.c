/* bench/server/loadgen.c — a closed-loop load generator for servers that
 * speak the memcached text protocol (memcached, //examples/cache:tpcache).
 *
 *   loadgen -s 127.0.0.1:11211 -c 50 -d 10 -g 0.9 -k 32 -v 100 -n 100000 --prefill
 *   loadgen --help
 *
 * One thread, one epoll set, `-c` connections, each keeping `-D` requests
 * in flight (closed loop: a response sends the next request). Operations:
 *   run     (default) for `-d` seconds, gets with probability `-g`, sets
 *           otherwise, on uniformly drawn keys of `-n`;
 *   fill    set every key once;   delete  delete every key once (each must
 *           be there: DELETED, or NOT_FOUND only with --allow-miss);
 *   flush   one flush_all;        stats   print `stats` (and `stats ARG`).
 *
 * Every response is checked. Each key has a version: a set of key i writes
 * version v+1, a value that carries i and the version in its first bytes
 * and, after them, bytes drawn from a generator seeded by (seed, i, version),
 * with flags = i mod 65536. Sets to one key never overlap (a set whose key
 * has one in flight picks the next free key), so for a server that applies
 * each command atomically a get must return a version in [acked, issued] —
 * `acked` the last version acknowledged when the get was sent, `issued` the
 * last version sent when its response arrives (a set sent on another
 * connection after the get may be applied before it) — with exactly that
 * version's bytes and flags, and may miss only if
 * no set of the key was acknowledged before (or with --allow-miss, for a
 * server that evicts). Anything else — a wrong, torn, stale or foreign value,
 * a wrong key, a line the protocol does not allow — is an error: the first
 * ones are printed, all are counted, and the exit status is 1.
 *
 * Latencies (send of the request to the end of its response) go into a
 * log-linear histogram (bench/server/llhist.h, 1.6 % buckets); throughput is
 * the responses completed inside the `-d` window divided by its length.
 * Requests still in flight at the end are drained and checked, not counted.
 *
 * Only loopback servers: any address outside 127.0.0.0/8 and ::1 (or a
 * name other than localhost) is refused with exit status 2. Every wait is
 * bounded: a server that sends nothing for `--timeout` seconds while
 * requests are in flight ends the run with exit status 3.
 *
 * Output (stdout): a line describing the run, then one `result` line of
 * key=value pairs (ops, ops_per_s, gets, hits, misses, sets, deletes, errors,
 * p50_us, p99_us, p999_us, max_us, mean_us) that the //bench:server driver
 * parses. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench/server/llhist.h"

enum { OP_RUN, OP_FILL, OP_DELETE, OP_FLUSH, OP_STATS };
enum { REQ_GET, REQ_SET, REQ_DELETE, REQ_FLUSH, REQ_STATS };

#define VALUE_HEADER 18 /* "%08x:%08x:" — key index, version */
#define MAX_DEPTH 64
#define MAX_ERRORS_SHOWN 10

typedef struct options {
  const char *server;
  int conns, depth, op;
  double duration, get_ratio, timeout;
  unsigned key_size, value_size;
  uint32_t keys;
  uint64_t seed;
  bool prefill, allow_miss, seed_set;
  const char *stats_arg;
} options;

typedef struct key_state {
  uint32_t acked;  /* last version whose set was acknowledged; 0: none */
  uint32_t issued; /* last version sent; > acked while a set is in flight */
} key_state;

typedef struct request {
  uint8_t type;
  bool must_hit;
  uint32_t key;
  uint32_t lo, hi; /* a get's acceptable versions (hi: set on the response) */
  uint64_t t0;
} request;

typedef struct conn {
  int fd, id;
  char *wbuf;
  size_t wlen, woff, wcap;
  char *rbuf;
  size_t rlen, rcap;
  request q[MAX_DEPTH]; /* in flight, oldest first, ring */
  unsigned qhead, qn;
  uint64_t rng;
  bool want_out;
} conn;

static options opt = {
    .server = NULL,
    .conns = 50,
    .depth = 1,
    .op = OP_RUN,
    .duration = 10,
    .get_ratio = 0.9,
    .timeout = 5,
    .key_size = 32,
    .value_size = 100,
    .keys = 100000,
};

static key_state *keys;
static int epfd = -1;
static llhist hist;
static uint64_t n_ops, n_gets, n_hits, n_misses, n_sets, n_deletes, n_errors;
static uint64_t t_start, t_end; /* the measured window */
static bool counting;
static uint64_t inflight; /* requests sent and not yet answered, all conns */
static uint32_t next_key; /* fill / delete: the next key to send */
static uint64_t last_progress;
static volatile sig_atomic_t interrupted;

/* ---------------------------------------------------------------------- */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void fatal(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "loadgen: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(status);
}

static void report_error(const conn *c, const char *fmt, ...) {
  n_errors++;
  if (n_errors > MAX_ERRORS_SHOWN) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "loadgen: error (conn %d): ", c->id);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---------------------------------------------------------------------- */
/* Keys and values */

/* "k" then the index, zero-padded to key_size bytes. */
static void make_key(char *out, uint32_t i) {
  snprintf(out, opt.key_size + 1, "k%0*" PRIu32, (int)opt.key_size - 1, i);
}

/* The value of key i at version v: header, then seeded bytes in [!-~]. */
static void make_value(char *out, uint32_t i, uint32_t v) {
  char h[VALUE_HEADER + 1];
  snprintf(h, sizeof h, "%08" PRIx32 ":%08" PRIx32 ":", i, v);
  memcpy(out, h, VALUE_HEADER);
  uint64_t s = opt.seed ^ ((uint64_t)i << 32 | v) * 0x9e3779b97f4a7c15ull;
  uint64_t r = 0;
  for (unsigned b = VALUE_HEADER; b < opt.value_size; b++) {
    if ((b - VALUE_HEADER) % 8 == 0) r = splitmix64(&s);
    out[b] = (char)('!' + (r & 0xff) % 94);
    r >>= 8;
  }
}

/* Checks a returned value of key i: its version (through *ver) and bytes. */
static bool value_ok(const char *p, size_t len, uint32_t i, uint32_t *ver, char *scratch) {
  if (len != opt.value_size) return false;
  char h[VALUE_HEADER + 1];
  memcpy(h, p, VALUE_HEADER);
  h[VALUE_HEADER] = 0;
  unsigned ki, v;
  char tail;
  if (sscanf(h, "%8x:%8x%c", &ki, &v, &tail) != 3 || tail != ':' || ki != i) return false;
  *ver = v;
  make_value(scratch, i, v);
  return memcmp(scratch, p, len) == 0;
}

/* ---------------------------------------------------------------------- */
/* Requests */

static void wreserve(conn *c, size_t more) {
  if (c->wlen + more <= c->wcap) return;
  size_t cap = c->wcap ? c->wcap : 4096;
  while (cap < c->wlen + more) cap *= 2;
  char *n = realloc(c->wbuf, cap);
  if (!n) fatal(3, "out of memory");
  c->wbuf = n;
  c->wcap = cap;
}

static void wappend(conn *c, const void *p, size_t n) {
  wreserve(c, n);
  memcpy(c->wbuf + c->wlen, p, n);
  c->wlen += n;
}

static request *push(conn *c, int type, uint32_t key) {
  request *r = &c->q[(c->qhead + c->qn++) % MAX_DEPTH];
  memset(r, 0, sizeof *r);
  r->type = (uint8_t)type;
  r->key = key;
  r->t0 = now_ns();
  inflight++;
  return r;
}

static void send_set(conn *c, uint32_t i) {
  key_state *k = &keys[i];
  uint32_t v = k->issued + 1;
  k->issued = v;
  char key[256], line[320];
  make_key(key, i);
  int n = snprintf(line, sizeof line, "set %s %u 0 %u\r\n", key, (unsigned)(i & 0xffff), opt.value_size);
  wappend(c, line, (size_t)n);
  wreserve(c, opt.value_size + 2);
  make_value(c->wbuf + c->wlen, i, v);
  c->wlen += opt.value_size;
  wappend(c, "\r\n", 2);
  push(c, REQ_SET, i);
}

static void send_get(conn *c, uint32_t i) {
  char key[256], line[320];
  make_key(key, i);
  int n = snprintf(line, sizeof line, "get %s\r\n", key);
  wappend(c, line, (size_t)n);
  request *r = push(c, REQ_GET, i);
  r->lo = keys[i].acked;
  r->hi = keys[i].issued;
  r->must_hit = keys[i].acked > 0 && !opt.allow_miss;
}

static void send_delete(conn *c, uint32_t i) {
  char key[256], line[320];
  make_key(key, i);
  int n = snprintf(line, sizeof line, "delete %s\r\n", key);
  wappend(c, line, (size_t)n);
  request *r = push(c, REQ_DELETE, i);
  r->must_hit = !opt.allow_miss; /* `delete` follows a `fill`: every key is there */
}

/* A run's next request: a get, or a set of a key with no set in flight. */
static void send_next_run(conn *c) {
  uint64_t r = splitmix64(&c->rng);
  uint32_t i = (uint32_t)((r >> 11) % opt.keys);
  bool get = (double)(r & 0x7ff) / 2048.0 < opt.get_ratio;
  if (get) {
    send_get(c, i);
    return;
  }
  for (uint32_t tries = 0; keys[i].issued != keys[i].acked; tries++) {
    if (tries == opt.keys) { /* every key busy (tiny key count): read instead */
      send_get(c, i);
      return;
    }
    i = i + 1 == opt.keys ? 0 : i + 1;
  }
  send_set(c, i);
}

/* Keeps c's pipeline full while there is work; false when it has none. */
static bool refill(conn *c, uint64_t now) {
  while (c->qn < (unsigned)opt.depth) {
    switch (opt.op) {
      case OP_RUN:
        if (now >= t_end) return c->qn > 0;
        send_next_run(c);
        break;
      case OP_FILL:
      case OP_DELETE:
        if (next_key >= opt.keys) return c->qn > 0;
        if (opt.op == OP_FILL)
          send_set(c, next_key++);
        else
          send_delete(c, next_key++);
        break;
      default:
        return c->qn > 0; /* flush / stats: one request, sent at start */
    }
  }
  return true;
}

/* ---------------------------------------------------------------------- */
/* Responses */

/* The end of the line starting at p (the '\r' of "\r\n"), or NULL. */
static const char *line_end(const char *p, const char *end) {
  for (const char *q = p; q + 1 < end; q++)
    if (q[0] == '\r' && q[1] == '\n') return q;
  return NULL;
}

static bool line_is(const char *p, const char *e, const char *word) {
  size_t n = strlen(word);
  return (size_t)(e - p) == n && memcmp(p, word, n) == 0;
}

static void complete(conn *c, request *r, uint64_t now) {
  if (counting && now <= t_end) {
    n_ops++;
    llhist_add(&hist, now - r->t0);
  }
  last_progress = now;
  inflight--;
  c->qhead = (c->qhead + 1) % MAX_DEPTH;
  c->qn--;
}

static void show_line(char *out, size_t cap, const char *p, const char *e) {
  size_t n = (size_t)(e - p) < cap - 1 ? (size_t)(e - p) : cap - 1;
  for (size_t j = 0; j < n; j++) out[j] = (p[j] >= 32 && p[j] < 127) ? p[j] : '?';
  out[n] = 0;
}

/* Consumes one response from c->rbuf[*off..]: the number of bytes, 0 when it
 * is incomplete. Returns (size_t)-1 on a line the protocol does not allow
 * here (the connection's stream can no longer be followed). */
static size_t parse_one(conn *c, const char *p, const char *end, uint64_t now, char *scratch) {
  request *r = &c->q[c->qhead];
  const char *e = line_end(p, end);
  if (!e) return 0;
  size_t linelen = (size_t)(e - p) + 2;
  char shown[96];
  switch (r->type) {
    case REQ_SET:
      n_sets++;
      if (!line_is(p, e, "STORED")) {
        show_line(shown, sizeof shown, p, e);
        report_error(c, "set of key %" PRIu32 ": \"%s\", expected STORED", r->key, shown);
      } else if (keys[r->key].issued > keys[r->key].acked) {
        keys[r->key].acked++;
      }
      complete(c, r, now);
      return linelen;
    case REQ_DELETE:
      n_deletes++;
      if (line_is(p, e, "DELETED")) {
        keys[r->key].acked = keys[r->key].issued = 0;
      } else if (line_is(p, e, "NOT_FOUND")) {
        if (r->must_hit) report_error(c, "delete of stored key %" PRIu32 ": NOT_FOUND", r->key);
      } else {
        show_line(shown, sizeof shown, p, e);
        report_error(c, "delete of key %" PRIu32 ": \"%s\"", r->key, shown);
      }
      complete(c, r, now);
      return linelen;
    case REQ_FLUSH:
      if (!line_is(p, e, "OK")) {
        show_line(shown, sizeof shown, p, e);
        report_error(c, "flush_all: \"%s\", expected OK", shown);
      }
      complete(c, r, now);
      return linelen;
    case REQ_STATS:
      if (line_is(p, e, "END")) {
        complete(c, r, now);
      } else if ((size_t)(e - p) >= 5 && memcmp(p, "STAT ", 5) == 0) {
        printf("%.*s\n", (int)(e - p), p);
      } else {
        show_line(shown, sizeof shown, p, e);
        report_error(c, "stats: \"%s\"", shown);
        complete(c, r, now);
        return (size_t)-1;
      }
      return linelen;
    case REQ_GET:
      break;
  }
  /* get: "END" or "VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n" */
  if (line_is(p, e, "END")) {
    n_gets++;
    n_misses++;
    if (r->must_hit) report_error(c, "get of stored key %" PRIu32 " (version %" PRIu32 "..%" PRIu32 "): miss", r->key, r->lo, r->hi);
    complete(c, r, now);
    return linelen;
  }
  char want[256];
  make_key(want, r->key);
  char got[260];
  unsigned flags;
  unsigned long long bytes;
  int n = 0;
  show_line(shown, sizeof shown, p, e);
  if ((size_t)(e - p) > 300 || sscanf(shown, "VALUE %259s %u %llu%n", got, &flags, &bytes, &n) != 3 ||
      (size_t)n != (size_t)(e - p)) {
    report_error(c, "get of key %" PRIu32 ": \"%s\", expected VALUE or END", r->key, shown);
    complete(c, r, now);
    return (size_t)-1;
  }
  if (bytes > (1u << 30)) {
    report_error(c, "get of key %" PRIu32 ": %llu bytes announced", r->key, bytes);
    complete(c, r, now);
    return (size_t)-1;
  }
  size_t need = linelen + (size_t)bytes + 2 + 5;
  if ((size_t)(end - p) < need) return 0;
  const char *data = p + linelen;
  n_gets++;
  n_hits++;
  uint32_t ver = 0;
  if (strcmp(got, want) != 0) {
    report_error(c, "get of key %s returned key %s", want, got);
  } else if (memcmp(data + bytes, "\r\nEND\r\n", 7) != 0) {
    report_error(c, "get of key %" PRIu32 ": data not followed by \\r\\nEND\\r\\n", r->key);
    complete(c, r, now);
    return (size_t)-1;
  } else if (!value_ok(data, (size_t)bytes, r->key, &ver, scratch)) {
    report_error(c, "get of key %" PRIu32 ": wrong value (%llu bytes, \"%.24s...\"), expected version %" PRIu32 "..%" PRIu32,
                 r->key, bytes, data, r->lo, r->hi);
  } else if ((r->hi = keys[r->key].issued, ver < r->lo || ver > r->hi)) {
    report_error(c, "get of key %" PRIu32 ": version %" PRIu32 ", expected %" PRIu32 "..%" PRIu32, r->key, ver, r->lo, r->hi);
  } else if (flags != (r->key & 0xffff)) {
    report_error(c, "get of key %" PRIu32 ": flags %u, expected %u", r->key, flags, r->key & 0xffff);
  } else if (ver == 0) {
    report_error(c, "get of key %" PRIu32 ": version 0 was never set", r->key);
  }
  complete(c, r, now);
  return need;
}

/* ---------------------------------------------------------------------- */
/* Connections */

static void update_events(conn *c) {
  bool want = c->woff < c->wlen;
  if (want == c->want_out) return;
  struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) fatal(3, "epoll_ctl: %s", strerror(errno));
  c->want_out = want;
}

static void flush_out(conn *c) {
  while (c->woff < c->wlen) {
    ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      fatal(3, "conn %d: send: %s", c->id, strerror(errno));
    }
    c->woff += (size_t)n;
  }
  if (c->woff == c->wlen) c->woff = c->wlen = 0;
  update_events(c);
}

static void on_readable(conn *c, char *scratch) {
  for (;;) {
    if (c->rcap - c->rlen < 65536) {
      size_t cap = c->rcap ? c->rcap * 2 : 131072;
      char *n = realloc(c->rbuf, cap);
      if (!n) fatal(3, "out of memory");
      c->rbuf = n;
      c->rcap = cap;
    }
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (n == 0) fatal(3, "conn %d: the server closed the connection (%u requests in flight)", c->id, c->qn);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      fatal(3, "conn %d: recv: %s", c->id, strerror(errno));
    }
    size_t room = c->rcap - c->rlen;
    c->rlen += (size_t)n;
    if ((size_t)n < room) break; /* a short read: the socket is drained */
  }
  uint64_t now = now_ns();
  size_t off = 0;
  while (off < c->rlen) {
    if (c->qn == 0) {
      char shown[96];
      const char *e = line_end(c->rbuf + off, c->rbuf + c->rlen);
      show_line(shown, sizeof shown, c->rbuf + off, e ? e : c->rbuf + c->rlen);
      report_error(c, "unsolicited bytes from the server: \"%s\"", shown);
      fatal(1, "conn %d: cannot follow the response stream any more (%" PRIu64 " errors)", c->id, n_errors);
    }
    size_t used = parse_one(c, c->rbuf + off, c->rbuf + c->rlen, now, scratch);
    if (used == (size_t)-1)
      fatal(1, "conn %d: cannot follow the response stream any more (%" PRIu64 " errors)", c->id, n_errors);
    if (used == 0) break;
    off += used;
  }
  memmove(c->rbuf, c->rbuf + off, c->rlen - off);
  c->rlen -= off;
  if (refill(c, now)) flush_out(c);
}

/* ---------------------------------------------------------------------- */
/* Addresses: loopback only */

static bool is_loopback(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}

/* "127.0.0.1:11211", "[::1]:11211", "localhost:11211". Numeric addresses
 * only (and localhost): a name would need a resolver this tool should not
 * consult. */
static socklen_t parse_server(const char *s, struct sockaddr_storage *ss) {
  char host[128];
  const char *colon;
  memset(ss, 0, sizeof *ss);
  if (s[0] == '[') {
    const char *rb = strchr(s, ']');
    if (!rb || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof host) fatal(2, "bad server address \"%s\" (want [ADDR]:PORT)", s);
    memcpy(host, s + 1, (size_t)(rb - s - 1));
    host[rb - s - 1] = 0;
    colon = rb + 1;
  } else {
    colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) fatal(2, "bad server address \"%s\" (want ADDR:PORT)", s);
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
  }
  char *endp;
  errno = 0;
  long port = strtol(colon + 1, &endp, 10);
  if (errno || *endp || port < 1 || port > 65535) fatal(2, "bad port in \"%s\"", s);
  if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  socklen_t len;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    len = sizeof *a4;
  } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    len = sizeof *a6;
  } else {
    fatal(2, "refusing \"%s\": not a numeric address or localhost; only loopback servers (127.0.0.0/8, ::1) are allowed", host);
  }
  if (!is_loopback(ss)) fatal(2, "refusing %s: only loopback servers (127.0.0.0/8, ::1) are allowed", host);
  return len;
}

static void connect_all(conn *cs, const struct sockaddr_storage *ss, socklen_t len) {
  for (int i = 0; i < opt.conns; i++) {
    conn *c = &cs[i];
    c->id = i;
    c->rng = opt.seed + 0x632be59bd9b4e019ull * (uint64_t)(i + 1);
    c->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) fatal(3, "socket: %s", strerror(errno));
    /* Loopback connect completes or fails at once; bound it anyway. */
    struct timeval tv = {.tv_sec = (time_t)opt.timeout, .tv_usec = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(c->fd, (const struct sockaddr *)ss, len) != 0) fatal(3, "connect to %s: %s", opt.server, strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) != 0) fatal(3, "fcntl: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) fatal(3, "epoll_ctl: %s", strerror(errno));
  }
}

/* ---------------------------------------------------------------------- */
/* Phases */

static void on_signal(int sig) { interrupted = sig; }

/* Runs one phase (fill, delete, run, or one flush / stats request) until it
 * has no work and nothing in flight. Bounded: `run` by its deadline, the
 * others by the key count; a silent server by --timeout. */
static void phase(conn *cs, int op) {
  char *scratch = malloc(opt.value_size + 1);
  if (!scratch) fatal(3, "out of memory");
  int saved = opt.op;
  opt.op = op;
  next_key = 0;
  uint64_t now = now_ns();
  last_progress = now;
  if (op == OP_FLUSH || op == OP_STATS) {
    conn *c = &cs[0];
    char line[300];
    int n = op == OP_FLUSH ? snprintf(line, sizeof line, "flush_all\r\n")
                           : snprintf(line, sizeof line, "stats%s%s\r\n", opt.stats_arg ? " " : "",
                                      opt.stats_arg ? opt.stats_arg : "");
    wappend(c, line, (size_t)n);
    push(c, op == OP_FLUSH ? REQ_FLUSH : REQ_STATS, 0);
    flush_out(c);
  } else {
    for (int i = 0; i < opt.conns; i++)
      if (refill(&cs[i], now)) flush_out(&cs[i]);
  }
  struct epoll_event evs[64];
  while (inflight > 0) {
    if (interrupted) fatal(3, "interrupted by signal %d", (int)interrupted);
    int n = epoll_wait(epfd, evs, 64, 100);
    if (n < 0 && errno != EINTR) fatal(3, "epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (evs[i].events & EPOLLOUT) flush_out(c);
      if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c, scratch);
    }
    now = now_ns();
    if (inflight > 0 && now - last_progress > (uint64_t)(opt.timeout * 1e9))
      fatal(3, "no response for %.1f s with %" PRIu64 " requests in flight: the server stalled", opt.timeout, inflight);
  }
  opt.op = saved;
  free(scratch);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: loadgen -s ADDR:PORT [options]   (loopback servers only)\n"
          "  -s, --server ADDR:PORT  127.0.0.0/8, [::1] or localhost\n"
          "  -o, --op OP             run (default), fill, delete, flush, stats\n"
          "  -c, --conns N           connections (default 50)\n"
          "  -D, --depth N           requests in flight per connection, 1..%d (default 1)\n"
          "  -d, --duration S        run: seconds measured (default 10)\n"
          "  -g, --get-ratio F       run: share of gets, the rest sets (default 0.9)\n"
          "  -k, --key-size B        key bytes, 12..250 (default 32)\n"
          "  -v, --value-size B      value bytes, %d..%d (default 100)\n"
          "  -n, --keys N            key count (default 100000)\n"
          "  -p, --prefill           run: set every key once before the measured run\n"
          "  -m, --allow-miss        a stored key may miss (a server that evicts)\n"
          "  -S, --seed N            seed of keys, operations and values (default: from the clock)\n"
          "  -t, --timeout S         give up when the server is silent this long (default 5)\n"
          "  -a, --stats-arg WORD    stats: `stats WORD` (e.g. tidepool, slabs)\n"
          "Exit status: 0 all responses right, 1 a wrong response, 2 bad usage or a\n"
          "refused address, 3 a connection failure or a stalled server.\n",
          MAX_DEPTH, VALUE_HEADER, 1 << 20);
}

static double parse_num(const char *s, const char *what, double lo, double hi) {
  char *e;
  errno = 0;
  double v = strtod(s, &e);
  if (errno || e == s || *e || !(v >= lo && v <= hi)) fatal(2, "%s: \"%s\" is not a number in [%g, %g]", what, s, lo, hi);
  return v;
}

static void parse_options(int argc, char **argv) {
  static const struct option longopts[] = {
      {"server", 1, 0, 's'},    {"op", 1, 0, 'o'},         {"conns", 1, 0, 'c'},      {"depth", 1, 0, 'D'},
      {"duration", 1, 0, 'd'},  {"get-ratio", 1, 0, 'g'},  {"key-size", 1, 0, 'k'},   {"value-size", 1, 0, 'v'},
      {"keys", 1, 0, 'n'},      {"prefill", 0, 0, 'p'},    {"allow-miss", 0, 0, 'm'}, {"seed", 1, 0, 'S'},
      {"timeout", 1, 0, 't'},   {"stats-arg", 1, 0, 'a'},  {"help", 0, 0, 'h'},       {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "s:o:c:D:d:g:k:v:n:pmS:t:a:h", longopts, NULL)) != -1) {
    switch (ch) {
      case 's': opt.server = optarg; break;
      case 'o':
        if (!strcmp(optarg, "run")) opt.op = OP_RUN;
        else if (!strcmp(optarg, "fill")) opt.op = OP_FILL;
        else if (!strcmp(optarg, "delete")) opt.op = OP_DELETE;
        else if (!strcmp(optarg, "flush")) opt.op = OP_FLUSH;
        else if (!strcmp(optarg, "stats")) opt.op = OP_STATS;
        else fatal(2, "unknown --op \"%s\" (run, fill, delete, flush, stats)", optarg);
        break;
      case 'c': opt.conns = (int)parse_num(optarg, "--conns", 1, 10000); break;
      case 'D': opt.depth = (int)parse_num(optarg, "--depth", 1, MAX_DEPTH); break;
      case 'd': opt.duration = parse_num(optarg, "--duration", 0.01, 86400); break;
      case 'g': opt.get_ratio = parse_num(optarg, "--get-ratio", 0, 1); break;
      case 'k': opt.key_size = (unsigned)parse_num(optarg, "--key-size", 12, 250); break;
      case 'v': opt.value_size = (unsigned)parse_num(optarg, "--value-size", VALUE_HEADER, 1 << 20); break;
      case 'n': opt.keys = (uint32_t)parse_num(optarg, "--keys", 1, 1e9); break;
      case 'p': opt.prefill = true; break;
      case 'm': opt.allow_miss = true; break;
      case 'S': opt.seed = (uint64_t)parse_num(optarg, "--seed", 0, 9.007199254740992e15); opt.seed_set = true; break;
      case 't': opt.timeout = parse_num(optarg, "--timeout", 0.1, 3600); break;
      case 'a': opt.stats_arg = optarg; break;
      case 'h': usage(stdout); exit(0);
      default: usage(stderr); exit(2);
    }
  }
  if (optind < argc) fatal(2, "unexpected argument \"%s\" (see --help)", argv[optind]);
  if (!opt.server) {
    usage(stderr);
    exit(2);
  }
  if (opt.stats_arg && (strlen(opt.stats_arg) > 64 || strpbrk(opt.stats_arg, " \r\n")))
    fatal(2, "--stats-arg: one word of at most 64 bytes");
  if (!opt.seed_set) opt.seed = now_ns() % 1000000007u;
  if (opt.op == OP_FLUSH || opt.op == OP_STATS) opt.conns = 1;
}

int main(int argc, char **argv) {
  parse_options(argc, argv);
  struct sockaddr_storage ss;
  socklen_t len = parse_server(opt.server, &ss); /* refuses non-loopback */
  static const char *const names[] = {"run", "fill", "delete", "flush", "stats"};
  printf("loadgen: server %s op %s conns %d depth %d duration %.2f s get-ratio %.2f key %u B value %u B keys %" PRIu32
         " prefill %d allow-miss %d seed %" PRIu64 "\n",
         opt.server, names[opt.op], opt.conns, opt.depth, opt.duration, opt.get_ratio, opt.key_size, opt.value_size,
         opt.keys, opt.prefill, opt.allow_miss, opt.seed);
  fflush(stdout);

  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  keys = calloc(opt.keys, sizeof *keys);
  conn *cs = calloc((size_t)opt.conns, sizeof *cs);
  if (!keys || !cs) fatal(3, "out of memory");
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) fatal(3, "epoll_create1: %s", strerror(errno));
  connect_all(cs, &ss, len);

  if (opt.op == OP_RUN && opt.prefill) phase(cs, OP_FILL);
  uint64_t pre_errors = n_errors;
  n_sets = n_deletes = 0;
  counting = true;
  t_start = now_ns();
  t_end = opt.op == OP_RUN ? t_start + (uint64_t)(opt.duration * 1e9) : UINT64_MAX;
  phase(cs, opt.op);
  uint64_t t_stop = now_ns();
  double secs = (double)((opt.op == OP_RUN ? t_end : t_stop) - t_start) / 1e9;

  printf("result op=%s ops=%" PRIu64 " seconds=%.3f ops_per_s=%.0f gets=%" PRIu64 " hits=%" PRIu64 " misses=%" PRIu64
         " sets=%" PRIu64 " deletes=%" PRIu64 " errors=%" PRIu64 " prefill_errors=%" PRIu64
         " p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f\n",
         names[opt.op], n_ops, secs, secs > 0 ? (double)n_ops / secs : 0.0, n_gets, n_hits, n_misses, n_sets, n_deletes,
         n_errors, pre_errors, llhist_quantile(&hist, 0.50) / 1e3, llhist_quantile(&hist, 0.99) / 1e3,
         llhist_quantile(&hist, 0.999) / 1e3, hist.max / 1e3, hist.count ? (double)hist.sum / (double)hist.count / 1e3 : 0.0);
  for (int i = 0; i < opt.conns; i++) {
    close(cs[i].fd);
    free(cs[i].wbuf);
    free(cs[i].rbuf);
  }
  close(epfd);
  free(cs);
  free(keys);
  if (n_errors) {
    fprintf(stderr, "loadgen: %" PRIu64 " wrong responses\n", n_errors);
    return 1;
  }
  return 0;
}
