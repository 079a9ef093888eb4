/*
 * stress_test.c — a seeded concurrency stress of tpcache, in-process (so
 * ASan and TSan see the server): 3 worker threads, a small -m (evictions
 * run all the time), and 8 client threads (more than the cores) doing
 * set, add, replace, append-free overwrites, delete, gets+cas, get and
 * multiget on 256 overlapping keys with values of 40 B .. 24 KiB (many size
 * classes), plus a rare flush_all.
 *
 * Every value carries its key, the writer's thread and sequence number and
 * its length, and its body is generated from them: a get that returns a
 * value is checked to be exactly a value some set wrote for that key —
 * never torn, mixed with another, or freed memory. Time-bounded
 * (TP_TEST_SECONDS_SCALE scales it); the seed is printed
 * (TPCACHE_STRESS_SEED repeats a run).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <tidepool/tidepool.h>

#include "examples/cache/proto.h"
#include "examples/cache/server.h"
#include "examples/cache/store.h"

#define NCLIENTS 8
#define NKEYS 256
#define VMAX (24 * 1024)

static int port;
static volatile int stop_flag;
static uint64_t seed;
static uint64_t total_ops[NCLIENTS], total_hits[NCLIENTS];

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

#define FAIL(...)                                  \
  do {                                             \
    fprintf(stderr, "FAIL (seed %llu): ", (unsigned long long)seed); \
    fprintf(stderr, __VA_ARGS__);                  \
    fprintf(stderr, "\n");                         \
    exit(1);                                       \
  } while (0)

typedef struct client {
  int fd, id;
  char buf[VMAX + 4096];
  size_t have, pos;
} client;

static void c_send(client *c, const void *p, size_t n) {
  const char *s = p;
  while (n) {
    ssize_t r = send(c->fd, s, n, MSG_NOSIGNAL);
    if (r <= 0) FAIL("client %d: send: %s", c->id, strerror(errno));
    s += r;
    n -= (size_t)r;
  }
}

static void c_fill(client *c) {
  if (c->pos > 0) {
    memmove(c->buf, c->buf + c->pos, c->have - c->pos);
    c->have -= c->pos;
    c->pos = 0;
  }
  if (c->have == sizeof c->buf) FAIL("client %d: response too long", c->id);
  ssize_t r = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);
  if (r <= 0) FAIL("client %d: recv: %s", c->id, r == 0 ? "closed" : strerror(errno));
  c->have += (size_t)r;
}

/* One line (without "\r\n") into out. */
static void c_line(client *c, char *out, size_t cap) {
  for (;;) {
    char *nl = memchr(c->buf + c->pos, '\n', c->have - c->pos);
    if (nl) {
      size_t n = (size_t)(nl - (c->buf + c->pos));
      if (n == 0 || nl[-1] != '\r' || n - 1 >= cap) FAIL("client %d: bad line", c->id);
      memcpy(out, c->buf + c->pos, n - 1);
      out[n - 1] = '\0';
      c->pos += n + 1;
      return;
    }
    c_fill(c);
  }
}

static void c_bytes(client *c, char *out, size_t n) {
  while (c->have - c->pos < n) c_fill(c);
  memcpy(out, c->buf + c->pos, n);
  c->pos += n;
}

/* The value writer `w` wrote as its `seq`-th for key k. */
static size_t make_value(char *v, int k, unsigned w, uint64_t seq, size_t len) {
  int h = snprintf(v, 64, "k%d:w%u:s%llu:n%zu|", k, w, (unsigned long long)seq, len);
  if ((size_t)h > len) abort(); /* len >= 40 > any header */
  uint64_t x = ((uint64_t)k << 48) ^ ((uint64_t)w << 40) ^ seq ^ 0x9e3779b97f4a7c15ull;
  for (size_t i = (size_t)h; i < len; i++) {
    if ((i & 7) == 0) x = x * 6364136223846793005ull + 1442695040888963407ull;
    char ch = (char)(x >> ((i & 7) * 8));
    v[i] = ch;
  }
  return len;
}

static char *check_value(int k, const char *v, size_t n, char *scratch) {
  int kk;
  unsigned w;
  unsigned long long seq;
  size_t len;
  if (n < 8 || sscanf(v, "k%d:w%u:s%llu:n%zu|", &kk, &w, &seq, &len) != 4) return "no header";
  if (kk != k) return "value of another key";
  if (len != n) return "length differs from the one written";
  make_value(scratch, k, w, seq, len);
  if (memcmp(scratch, v, n) != 0) return "body torn or corrupted";
  return NULL;
}

static void *client_main(void *arg) {
  client *c = calloc(1, sizeof *c);
  c->id = (int)(intptr_t)arg;
  uint64_t s = seed * 7919 + (uint64_t)c->id * 104729 + 1;
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) FAIL("connect: %s", strerror(errno));
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char *v = malloc(VMAX + 64), *scratch = malloc(VMAX + 64), *got = malloc(VMAX + 64);
  char line[512], cmd[512];
  uint64_t seq = 0, ops = 0, hits = 0;
  while (!__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)) {
    int k = (int)(rnd(&s) % NKEYS);
    unsigned op = (unsigned)(rnd(&s) % 100);
    size_t len = 40 + (size_t)(rnd(&s) % ((rnd(&s) & 3) ? 600 : VMAX - 40)); /* > header */
    ops++;
    if (op < 30) { /* set / add / replace */
      const char *verb = op < 20 ? "set" : op < 25 ? "add" : "replace";
      size_t n = make_value(v, k, (unsigned)c->id, ++seq, len);
      int h = snprintf(cmd, sizeof cmd, "%s key%d 0 0 %zu\r\n", verb, k, n);
      c_send(c, cmd, (size_t)h);
      memcpy(v + n, "\r\n", 2);
      c_send(c, v, n + 2);
      c_line(c, line, sizeof line);
      if (strcmp(line, "STORED") && strcmp(line, "NOT_STORED") &&
          strncmp(line, "SERVER_ERROR out of memory", 26))
        FAIL("%s: %s", verb, line);
    } else if (op < 38) { /* delete */
      int h = snprintf(cmd, sizeof cmd, "delete key%d\r\n", k);
      c_send(c, cmd, (size_t)h);
      c_line(c, line, sizeof line);
      if (strcmp(line, "DELETED") && strcmp(line, "NOT_FOUND")) FAIL("delete: %s", line);
    } else if (op < 48) { /* gets, then cas */
      int h = snprintf(cmd, sizeof cmd, "gets key%d\r\n", k);
      c_send(c, cmd, (size_t)h);
      c_line(c, line, sizeof line);
      unsigned long long cas = 0;
      if (strncmp(line, "VALUE ", 6) == 0) {
        char key[300];
        unsigned fl;
        size_t n;
        if (sscanf(line, "VALUE %299s %u %zu %llu", key, &fl, &n, &cas) != 4) FAIL("gets: %s", line);
        c_bytes(c, got, n + 2);
        char *why = check_value(k, got, n, scratch);
        if (why) FAIL("gets key%d: %s", k, why);
        c_line(c, line, sizeof line);
        hits++;
      }
      if (strcmp(line, "END")) FAIL("gets end: %s", line);
      if (cas) {
        size_t n = make_value(v, k, (unsigned)c->id, ++seq, len);
        h = snprintf(cmd, sizeof cmd, "cas key%d 0 0 %zu %llu\r\n", k, n, cas);
        c_send(c, cmd, (size_t)h);
        memcpy(v + n, "\r\n", 2);
        c_send(c, v, n + 2);
        c_line(c, line, sizeof line);
        if (strcmp(line, "STORED") && strcmp(line, "EXISTS") && strcmp(line, "NOT_FOUND") &&
            strncmp(line, "SERVER_ERROR out of memory", 26))
          FAIL("cas: %s", line);
      }
    } else if (op < 99) { /* get, or a multiget of 3 keys */
      int ks[3] = {k, (int)(rnd(&s) % NKEYS), (int)(rnd(&s) % NKEYS)};
      int nk = op < 80 ? 1 : 3;
      int h = nk == 1 ? snprintf(cmd, sizeof cmd, "get key%d\r\n", k)
                      : snprintf(cmd, sizeof cmd, "get key%d key%d key%d\r\n", ks[0], ks[1], ks[2]);
      c_send(c, cmd, (size_t)h);
      for (;;) {
        c_line(c, line, sizeof line);
        if (strcmp(line, "END") == 0) break;
        char key[300];
        unsigned fl;
        size_t n;
        int kk;
        if (sscanf(line, "VALUE %299s %u %zu", key, &fl, &n) != 3 || sscanf(key, "key%d", &kk) != 1)
          FAIL("get: %s", line);
        if (n > VMAX + 64) FAIL("get: length %zu", n);
        c_bytes(c, got, n + 2);
        char *why = check_value(kk, got, n, scratch);
        if (why) FAIL("get %s: %s", key, why);
        if (memcmp(got + n, "\r\n", 2)) FAIL("get: no \\r\\n after the data");
        hits++;
      }
    } else if (c->id == 0 && (rnd(&s) % 50) == 0) {
      c_send(c, "flush_all\r\n", 11);
      c_line(c, line, sizeof line);
      if (strcmp(line, "OK")) FAIL("flush_all: %s", line);
    }
  }
  total_ops[c->id] = ops;
  total_hits[c->id] = hits;
  close(c->fd);
  free(v);
  free(scratch);
  free(got);
  free(c);
  return NULL;
}

int main(void) {
  const char *se = getenv("TPCACHE_STRESS_SEED");
  seed = se ? strtoull(se, NULL, 10) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
  if (seed == 0) seed = 1;
  double scale = getenv("TP_TEST_SECONDS_SCALE") ? atof(getenv("TP_TEST_SECONDS_SCALE")) : 1.0;
  double seconds = 6.0 * (scale > 0 ? scale : 1.0);
  printf("stress_test seed %llu (TPCACHE_STRESS_SEED), %.1f s\n", (unsigned long long)seed,
         seconds);
  fflush(stdout);
  signal(SIGPIPE, SIG_IGN);

  g_server.threads = 3;
  g_server.maxconns = 100;
  g_server.item_size_max = 1024 * 1024;
  g_server.mem_limit = 512u << 10; /* small: evictions all the time */
  store_config sc = {.mem_limit = g_server.mem_limit, .item_size_max = g_server.item_size_max,
                     .factor = 1.08};
  if (store_init(&sc) || proto_init()) FAIL("init");
  tp_sweeper_config sw = {.interval_ms = 10, .decay_ms = 50, .retain_bytes = 0};
  if (tp_sweeper_start(&sw)) FAIL("sweeper");
  server_config cfg = {.addr = "127.0.0.1", .port = 0, .threads = 3, .maxconns = 100};
  if (server_start(&cfg)) FAIL("server_start");
  port = server_port();

  pthread_t th[NCLIENTS];
  for (int i = 0; i < NCLIENTS; i++) pthread_create(&th[i], NULL, client_main, (void *)(intptr_t)i);
  struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
  nanosleep(&ts, NULL);
  __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
  uint64_t ops = 0, hits = 0;
  for (int i = 0; i < NCLIENTS; i++) {
    pthread_join(th[i], NULL);
    ops += total_ops[i];
    hits += total_hits[i];
  }
  store_stats ss;
  store_read_stats(&ss);
  printf("ops %llu, values checked %llu, evictions %llu\n", (unsigned long long)ops,
         (unsigned long long)hits, (unsigned long long)ss.evictions);
  if (ops < 100 || hits == 0) FAIL("no progress");
  server_stop();
  tp_sweeper_stop();
  store_shutdown();
  proto_shutdown();
  printf("PASS\n");
  return 0;
}
