/*
 * proto.c — the memcached text protocol over one connection's buffers.
 *
 * Memory. A connection's read buffer comes from a pool of 16 KiB buffers
 * (a 256 KiB one from a second pool only while a multiget line is longer
 * than that), and goes back to the pool whenever it is empty, so an idle
 * connection holds none. Everything a request needs while it is parsed and
 * answered — the token array, response lines, copies of values, the iovec
 * array — is bump-allocated in the connection's arena; the arena is reset
 * when the last byte of the responses is written. A storage command's data
 * block is copied straight into the item it will become (allocated from
 * its size class when the command line is parsed).
 *
 * Behaviour follows memcached 1.6.18 as observed on the wire (the
 * differential test compares the two byte for byte): tokens split on
 * spaces, a line ends at "\n" (a "\r" before it is dropped) or at a NUL,
 * 24 tokens at most except for the keys of get-type commands, errors as
 * memcached's, `noreply` suppressing what memcached suppresses.
 */
#define _GNU_SOURCE
#include "proto.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

server_info g_server;

static tp_pool *rbuf_pool, *rbuf_big_pool;

#define MAX_TOKENS 24
#define MFLAG_MAX_OPT_LENGTH 20
#define MFLAG_MAX_OPAQUE_LENGTH 32
#define OUT_BLOCK 4000 /* output text block: fits an 8 KiB arena chunk twice */
#define VERSION_STRING "1.6.18"

typedef struct token {
  char *value;
  size_t length;
} token;

int proto_init(void) {
  tp_pool_config rc = {.name = "conn-rbuf", .obj_size = RBUF_SIZE};
  tp_pool_config bc = {.name = "conn-rbuf-big", .obj_size = RBUF_BIG_SIZE};
  if (!(rbuf_pool = tp_pool_create(&rc))) return -errno;
  if (!(rbuf_big_pool = tp_pool_create(&bc))) return -errno;
  return 0;
}

void proto_shutdown(void) {
  tp_pool_destroy(rbuf_pool);
  tp_pool_destroy(rbuf_big_pool);
}

void proto_pool_stats(tp_pool_stats *rb, tp_pool_stats *big) {
  tp_pool_read_stats(rbuf_pool, rb);
  tp_pool_read_stats(rbuf_big_pool, big);
}

int proto_conn_init(conn *c, int fd, thread_stats *ts) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
  c->ts = ts;
  /* 8 KiB chunks: a connection's first chunk is its standing cost. */
  tp_arena_config ac = {.chunk_size = 8192, .keep_bytes = 8192};
  c->arena = tp_arena_create(&ac);
  return c->arena ? 0 : -ENOMEM;
}

static void rbuf_drop(conn *c) {
  if (!c->rbuf) return;
  tp_pool_put(c->rbuf_big ? rbuf_big_pool : rbuf_pool, c->rbuf);
  c->rbuf = NULL;
  c->rbuf_big = false;
  c->rcap = c->rpos = c->rlen = 0;
}

void proto_conn_release(conn *c) {
  if (c->nread_it) store_free_unlinked(c->nread_it);
  c->nread_it = NULL;
  rbuf_drop(c);
  tp_arena_destroy(c->arena);
  c->arena = NULL;
}

void proto_conn_idle(conn *c) {
  if (c->rbuf && c->rpos == c->rlen) rbuf_drop(c);
}

char *proto_read_space(conn *c, size_t *room) {
  if (!c->rbuf) {
    c->rbuf = tp_pool_get(rbuf_pool);
    if (!c->rbuf) {
      *room = 0;
      return NULL;
    }
    c->rcap = RBUF_SIZE;
    c->rpos = c->rlen = 0;
  }
  if (c->rpos == c->rlen) {
    c->rpos = c->rlen = 0;
  } else if (c->rpos > 0 && c->rcap - c->rlen < 4096) {
    memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
    c->rlen -= c->rpos;
    c->rpos = 0;
  }
  *room = c->rcap - c->rlen;
  return c->rbuf + c->rlen;
}

/* ---- output ---- */

static bool out_block(conn *c, size_t n) {
  if (c->iovcnt == c->iovcap) {
    uint32_t cap = c->iovcap ? c->iovcap * 2 : 16;
    struct iovec *v = tp_arena_alloc(c->arena, cap * sizeof *v);
    if (!v) goto fail;
    if (c->iovcnt) memcpy(v, c->iov, c->iovcnt * sizeof *v);
    c->iov = v;
    c->iovcap = cap;
  }
  size_t sz = n > OUT_BLOCK ? n : OUT_BLOCK;
  char *b = tp_arena_alloc(c->arena, sz);
  if (!b) goto fail;
  c->iov[c->iovcnt].iov_base = b;
  c->iov[c->iovcnt].iov_len = 0;
  c->iovcnt++;
  c->ocur = b;
  c->ofree = sz;
  return true;
fail:
  c->close_now = true;
  return false;
}

/* Room for n contiguous bytes; commit what was used with out_commit. */
static char *out_reserve(conn *c, size_t n) {
  if (n > c->ofree && !out_block(c, n)) return NULL;
  return c->ocur;
}

static void out_commit(conn *c, size_t n) {
  c->iov[c->iovcnt - 1].iov_len += n;
  c->ocur += n;
  c->ofree -= n;
  c->out_pending += n;
}

static void out_put(conn *c, const void *p, size_t n) {
  char *d = out_reserve(c, n);
  if (!d) return;
  memcpy(d, p, n);
  out_commit(c, n);
}

static void out_line(conn *c, const char *s) {
  size_t n = strlen(s);
  char *d = out_reserve(c, n + 2);
  if (!d) return;
  memcpy(d, s, n);
  memcpy(d + n, "\r\n", 2);
  out_commit(c, n + 2);
}

bool proto_output_written(conn *c, size_t n) {
  c->out_pending -= n;
  TS_ADD(c->ts, bytes_written, n);
  while (n > 0 && c->iov_done < c->iovcnt) {
    struct iovec *v = &c->iov[c->iov_done];
    if (n >= v->iov_len) {
      n -= v->iov_len;
      v->iov_len = 0;
      c->iov_done++;
    } else {
      v->iov_base = (char *)v->iov_base + n;
      v->iov_len -= n;
      n = 0;
    }
  }
  while (c->iov_done < c->iovcnt && c->iov[c->iov_done].iov_len == 0 &&
         c->iov_done + 1 < c->iovcnt)
    c->iov_done++;
  if (c->out_pending == 0) {
    /* Everything written: the request memory goes, the first chunk stays. */
    tp_arena_reset(c->arena);
    c->arena_dirty = false;
    c->iov = NULL;
    c->iovcnt = c->iovcap = c->iov_done = 0;
    c->ocur = NULL;
    c->ofree = 0;
    return true;
  }
  return false;
}

static char *u64_to(char *p, uint64_t v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *p++ = tmp[--n];
  return p;
}

/* ---- numbers as memcached parses them ---- */

static bool is_space(char ch) { return ch == ' ' || (ch >= '\t' && ch <= '\r'); }

/* The common case of the three below, without strtol's locale and sign
 * handling: 1..9 plain digits followed by the end of the token (what they
 * accept there too); anything else (signs, leading spaces, longer numbers)
 * takes their strto* path. 9 digits fit every type below. A set's flags,
 * exptime and length came to about 400 instructions through strto*. */
static bool small_decimal(const char *s, uint32_t *out) {
  uint32_t v = 0;
  unsigned n = 0;
  for (; s[n] >= '0' && s[n] <= '9'; n++) {
    if (n == 9) return false;
    v = v * 10 + (uint32_t)(s[n] - '0');
  }
  if (n == 0 || !(s[n] == '\0' || is_space(s[n]))) return false;
  *out = v;
  return true;
}

static bool safe_strtoull(const char *s, uint64_t *out) {
  uint32_t small;
  if (small_decimal(s, &small)) {
    *out = (uint64_t)small;
    return true;
  }
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno == ERANGE || end == s) return false;
  if (is_space(*end) || *end == '\0') {
    if ((long long)v < 0 && memchr(s, '-', (size_t)(end - s))) return false;
    *out = v;
    return true;
  }
  return false;
}

/* memcached 1.6.18 keeps the low 32 bits of a larger number (flags
 * 4294967296 are stored as 0): so do we. */
static bool safe_strtoul32(const char *s, uint32_t *out) {
  uint32_t small;
  if (small_decimal(s, &small)) {
    *out = small;
    return true;
  }
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno == ERANGE || end == s) return false;
  if (is_space(*end) || *end == '\0') {
    if ((long)v < 0 && memchr(s, '-', (size_t)(end - s))) return false;
    *out = (uint32_t)v;
    return true;
  }
  return false;
}

static bool safe_strtol32(const char *s, int32_t *out) {
  uint32_t small;
  if (small_decimal(s, &small)) {
    *out = (int32_t)small;
    return true;
  }
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno == ERANGE || end == s) return false;
  if (is_space(*end) || *end == '\0') {
    *out = (int32_t)(uint32_t)(unsigned long)v; /* memcached: low 32 bits */
    return true;
  }
  return false;
}

static rel_time_t exptime_of(int32_t e) {
  return store_realtime(e < 0 ? (int64_t)REALTIME_MAXDELTA + 1 : (int64_t)e);
}

/* ---- tokens ---- */

/* memcached's tokenizer: splits on ' ' only; the last token slot is the
 * terminal one (value NULL at the end of the line, else the rest). */
static size_t tokenize(char *s, size_t len, token *t, size_t max) {
  size_t n = 0;
  char *start = s, *e = s, *end = s + len;
  for (; e < end; e++) {
    if (*e == ' ') {
      if (start != e) {
        t[n].value = start;
        t[n].length = (size_t)(e - start);
        n++;
        *e = '\0';
        if (n == max - 1) {
          e++;
          start = e;
          break;
        }
      }
      start = e + 1;
    }
  }
  if (start != e) {
    t[n].value = start;
    t[n].length = (size_t)(e - start);
    n++;
  }
  t[n].value = e < end ? e : NULL;
  t[n].length = 0;
  n++;
  return n;
}

static bool noreply_maybe(conn *c, token *t, size_t nt, bool *noreply) {
  (void)c;
  if (nt >= 2 && t[nt - 2].value && strcmp(t[nt - 2].value, "noreply") == 0) {
    *noreply = true;
    return true;
  }
  return false;
}

/* out_string with memcached's noreply: suppressed once. */
static void reply(conn *c, bool *noreply, const char *s) {
  if (*noreply) {
    *noreply = false;
    return;
  }
  out_line(c, s);
}

/* ---- retrieval ---- */

static void put_value(conn *c, item *it, bool with_cas, const char *key, size_t nkey) {
  size_t vl = it->nbytes;
  char *p = out_reserve(c, 6 + nkey + 12 + 12 + 24 + 2 + vl);
  if (!p) return;
  char *s = p;
  memcpy(p, "VALUE ", 6);
  p += 6;
  memcpy(p, key, nkey);
  p += nkey;
  *p++ = ' ';
  p = u64_to(p, it->flags);
  *p++ = ' ';
  p = u64_to(p, vl - 2);
  if (with_cas) {
    *p++ = ' ';
    p = u64_to(p, it->cas);
  }
  *p++ = '\r';
  *p++ = '\n';
  memcpy(p, item_value(it), vl);
  p += vl;
  out_commit(c, (size_t)(p - s));
}

/* get/gets/gat/gats: the keys are everything after the command (or the
 * exptime), any number of them. */
static void process_get(conn *c, char *args, size_t len, bool with_cas, bool touch) {
  char *p = args, *end = args + len;
  rel_time_t exptime = 0;
  if (touch) {
    while (p < end && *p == ' ') p++;
    char *e = p;
    while (e < end && *e != ' ') e++;
    char save = *e;
    *e = '\0';
    int32_t ex;
    bool ok = safe_strtol32(p, &ex);
    *e = save;
    if (!ok) {
      out_line(c, "CLIENT_ERROR invalid exptime argument");
      return;
    }
    exptime = exptime_of(ex);
    p = e;
  }
  /* Validate the key lengths first: memcached answers a too-long key with
   * an error and nothing else. */
  size_t nkeys = 0;
  for (char *q = p; q < end;) {
    while (q < end && *q == ' ') q++;
    char *k = q;
    while (q < end && *q != ' ') q++;
    if (q > k) {
      if ((size_t)(q - k) > KEY_MAX_LENGTH) {
        out_line(c, "CLIENT_ERROR bad command line format");
        return;
      }
      nkeys++;
    }
  }
  if (nkeys == 0 && !touch) {
    out_line(c, "ERROR");
    return;
  }
  thread_stats *ts = c->ts;
  while (p < end) {
    while (p < end && *p == ' ') p++;
    char *k = p;
    while (p < end && *p != ' ') p++;
    size_t nk = (size_t)(p - k);
    if (!nk) continue;
    tp_epoch_enter();
    item *it = store_find(k, nk, true);
    TS_INC(ts, cmd_get);
    if (it) {
      TS_INC(ts, get_hits);
      put_value(c, it, with_cas, k, nk);
    } else {
      TS_INC(ts, get_misses);
    }
    tp_epoch_leave();
    if (touch) { /* memcached returns the value, then applies the new expiry */
      TS_INC(ts, cmd_touch);
      if (it && store_touch(k, nk, exptime) == ST_STORED) TS_INC(ts, touch_hits);
      else TS_INC(ts, touch_misses);
    }
  }
  out_put(c, "END\r\n", 5);
}

/* ---- storage ---- */

static void start_nread(conn *c, item *it, enum store_mode mode, uint64_t cas, bool noreply,
                        bool meta) {
  c->nread_it = it;
  c->nread_left = it->nbytes;
  c->nread_mode = (uint8_t)mode;
  c->nread_cas = cas;
  c->nread_noreply = noreply;
  c->nread_meta = meta;
  c->state = CONN_NREAD;
}

static void process_update(conn *c, token *t, size_t nt, enum store_mode mode) {
  bool noreply = false;
  noreply_maybe(c, t, nt, &noreply);
  if (t[1].length > KEY_MAX_LENGTH) {
    reply(c, &noreply, "CLIENT_ERROR bad command line format");
    return;
  }
  uint32_t flags;
  int32_t exptime, vlen;
  uint64_t cas = 0;
  if (!(safe_strtoul32(t[2].value, &flags) && safe_strtol32(t[3].value, &exptime) &&
        safe_strtol32(t[4].value, &vlen))) {
    reply(c, &noreply, "CLIENT_ERROR bad command line format");
    return;
  }
  if (mode == MODE_CAS && !safe_strtoull(t[5].value, &cas)) {
    reply(c, &noreply, "CLIENT_ERROR bad command line format");
    return;
  }
  if (vlen < 0 || vlen > INT_MAX - 2) {
    reply(c, &noreply, "CLIENT_ERROR bad command line format");
    return;
  }
  size_t nbytes = (size_t)vlen + 2;
  TS_INC(c->ts, cmd_set);
  item *it = store_alloc(t[1].value, t[1].length, flags, exptime_of(exptime), nbytes);
  if (!it) {
    if (errno == E2BIG) {
      reply(c, &noreply, "SERVER_ERROR object too large for cache");
    } else {
      out_line(c, "SERVER_ERROR out of memory storing object");
    }
    c->swallow_left = nbytes;
    c->state = CONN_SWALLOW;
    /* memcached: a failed set must not leave the old value readable. */
    if (mode == MODE_SET) store_delete(t[1].value, t[1].length, 0);
    return;
  }
  start_nread(c, it, mode, cas, noreply, false);
}

static const char *store_reply(enum store_result r) {
  switch (r) {
    case ST_STORED: return "STORED";
    case ST_EXISTS: return "EXISTS";
    case ST_NOT_FOUND: return "NOT_FOUND";
    case ST_NOT_STORED: return "NOT_STORED";
    default: return "SERVER_ERROR out of memory storing object";
  }
}

static void meta_ret_flags(conn *c, const meta_set *ms, const char *key, size_t nkey,
                           uint64_t cas);

static void complete_nread(conn *c) {
  item *it = c->nread_it;
  c->nread_it = NULL;
  c->state = CONN_CMD;
  bool noreply = c->nread_noreply;
  if (memcmp(item_value(it) + it->nbytes - 2, "\r\n", 2) != 0) {
    store_free_unlinked(it);
    if (c->nread_meta) noreply = false;
    reply(c, &noreply, "CLIENT_ERROR bad data chunk");
    return;
  }
  enum store_mode mode = (enum store_mode)c->nread_mode;
  char key[KEY_MAX_LENGTH];
  size_t nkey = it->nkey;
  memcpy(key, item_key(it), nkey);
  uint64_t cas = 0;
  enum store_result r = store_item(it, mode, c->nread_cas, &cas);
  thread_stats *ts = c->ts;
  if (mode == MODE_CAS || (c->nread_meta && c->nread_cas)) {
    if (r == ST_STORED) TS_INC(ts, cas_hits);
    else if (r == ST_EXISTS) TS_INC(ts, cas_badval);
    else if (r == ST_NOT_FOUND) TS_INC(ts, cas_misses);
  }
  if (!c->nread_meta) {
    reply(c, &noreply, store_reply(r));
    return;
  }
  meta_set *ms = c->nread_ms;
  if (r == ST_STORED && ms->quiet) return;
  const char *code = r == ST_STORED ? "HD" : r == ST_EXISTS ? "EX" : r == ST_NOT_FOUND ? "NF"
                                                                                        : "NS";
  out_put(c, code, 2);
  meta_ret_flags(c, ms, key, nkey, r == ST_STORED ? cas : 0);
  out_put(c, "\r\n", 2);
}

/* ---- other classic commands ---- */

static void process_delete(conn *c, token *t, size_t nt) {
  bool noreply = false;
  if (nt > 3) {
    bool hold_is_zero = strcmp(t[2].value, "0") == 0;
    bool sets_noreply = noreply_maybe(c, t, nt, &noreply);
    bool valid = (nt == 4 && (hold_is_zero || sets_noreply)) ||
                 (nt == 5 && hold_is_zero && sets_noreply);
    if (!valid) {
      out_line(c, "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]");
      return;
    }
  }
  if (t[1].length > KEY_MAX_LENGTH) {
    reply(c, &noreply, "CLIENT_ERROR bad command line format");
    return;
  }
  if (store_delete(t[1].value, t[1].length, 0) == ST_STORED) {
    TS_INC(c->ts, delete_hits);
    reply(c, &noreply, "DELETED");
  } else {
    TS_INC(c->ts, delete_misses);
    reply(c, &noreply, "NOT_FOUND");
  }
}

static void process_arith(conn *c, token *t, size_t nt, bool incr) {
  bool noreply = false;
  noreply_maybe(c, t, nt, &noreply);
  if (t[1].length > KEY_MAX_LENGTH) {
    reply(c, &noreply, "CLIENT_ERROR bad command line format");
    return;
  }
  uint64_t delta, val;
  if (!safe_strtoull(t[2].value, &delta)) {
    reply(c, &noreply, "CLIENT_ERROR invalid numeric delta argument");
    return;
  }
  enum store_result r =
      store_arith(t[1].value, t[1].length, incr, delta, 0, false, 0, 0, NULL, &val, NULL, NULL);
  thread_stats *ts = c->ts;
  switch (r) {
    case ST_STORED: {
      if (incr) TS_INC(ts, incr_hits); else TS_INC(ts, decr_hits);
      char buf[24];
      *u64_to(buf, val) = '\0';
      reply(c, &noreply, buf);
      break;
    }
    case ST_NOT_FOUND:
      if (incr) TS_INC(ts, incr_misses); else TS_INC(ts, decr_misses);
      reply(c, &noreply, "NOT_FOUND");
      break;
    case ST_NOT_STORED:
      reply(c, &noreply, "CLIENT_ERROR cannot increment or decrement non-numeric value");
      break;
    default:
      out_line(c, "SERVER_ERROR out of memory");
      break;
  }
}

static void process_touch(conn *c, token *t, size_t nt) {
  bool noreply = false;
  noreply_maybe(c, t, nt, &noreply);
  if (t[1].length > KEY_MAX_LENGTH) {
    reply(c, &noreply, "CLIENT_ERROR bad command line format");
    return;
  }
  int32_t ex;
  if (!safe_strtol32(t[2].value, &ex)) {
    reply(c, &noreply, "CLIENT_ERROR invalid exptime argument");
    return;
  }
  TS_INC(c->ts, cmd_touch);
  if (store_touch(t[1].value, t[1].length, exptime_of(ex)) == ST_STORED) {
    TS_INC(c->ts, touch_hits);
    reply(c, &noreply, "TOUCHED");
  } else {
    TS_INC(c->ts, touch_misses);
    reply(c, &noreply, "NOT_FOUND");
  }
}

void server_wake_maintenance(void);

static void process_flush(conn *c, token *t, size_t nt) {
  bool noreply = false;
  noreply_maybe(c, t, nt, &noreply);
  int32_t delay = 0;
  if (nt != (noreply ? 3u : 2u)) {
    if (!safe_strtol32(t[1].value, &delay)) {
      reply(c, &noreply, "CLIENT_ERROR invalid exptime argument");
      return;
    }
  }
  TS_INC(c->ts, cmd_flush);
  store_flush(delay);
  server_wake_maintenance();
  reply(c, &noreply, "OK");
}

/* ---- stats ---- */

static void stat_u64(conn *c, const char *name, uint64_t v) {
  char *p = out_reserve(c, 5 + strlen(name) + 1 + 22 + 2);
  if (!p) return;
  int n = sprintf(p, "STAT %s %llu\r\n", name, (unsigned long long)v);
  out_commit(c, (size_t)n);
}

static void stat_str(conn *c, const char *name, const char *v) {
  char *p = out_reserve(c, 5 + strlen(name) + 1 + strlen(v) + 2);
  if (!p) return;
  int n = sprintf(p, "STAT %s %s\r\n", name, v);
  out_commit(c, (size_t)n);
}

static void sum_thread_stats(thread_stats *s) {
  memset(s, 0, sizeof *s);
  unsigned n = __atomic_load_n(&g_server.nthreads_registered, __ATOMIC_ACQUIRE);
  for (unsigned i = 0; i < n; i++) {
    const uint64_t *src = (const uint64_t *)g_server.thread_stats[i];
    uint64_t *dst = (uint64_t *)s;
    for (size_t f = 0; f < sizeof *s / sizeof(uint64_t); f++)
      dst[f] += __atomic_load_n(&src[f], __ATOMIC_RELAXED);
  }
}

static void reset_thread_stats(void) {
  unsigned n = __atomic_load_n(&g_server.nthreads_registered, __ATOMIC_ACQUIRE);
  for (unsigned i = 0; i < n; i++) {
    uint64_t *dst = (uint64_t *)g_server.thread_stats[i];
    for (size_t f = 0; f < sizeof(thread_stats) / sizeof(uint64_t); f++)
      __atomic_store_n(&dst[f], 0, __ATOMIC_RELAXED);
  }
}

static void stats_general(conn *c) {
  thread_stats s;
  sum_thread_stats(&s);
  store_stats ss;
  store_read_stats(&ss);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  char buf[64];
  rel_time_t now = store_now();
  stat_u64(c, "pid", (uint64_t)getpid());
  stat_u64(c, "uptime", now - 2);
  stat_u64(c, "time", store_started() + now);
  stat_str(c, "version", VERSION_STRING);
  stat_str(c, "libevent", "none (epoch: tidepool)");
  stat_u64(c, "pointer_size", 64);
  snprintf(buf, sizeof buf, "%ld.%06ld", (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec);
  stat_str(c, "rusage_user", buf);
  snprintf(buf, sizeof buf, "%ld.%06ld", (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
  stat_str(c, "rusage_system", buf);
  stat_u64(c, "max_connections", g_server.maxconns);
  stat_u64(c, "curr_connections", __atomic_load_n(&g_server.curr_conns, __ATOMIC_RELAXED));
  stat_u64(c, "total_connections", __atomic_load_n(&g_server.total_conns, __ATOMIC_RELAXED));
  stat_u64(c, "rejected_connections",
           __atomic_load_n(&g_server.rejected_conns, __ATOMIC_RELAXED));
  stat_u64(c, "cmd_get", s.cmd_get);
  stat_u64(c, "cmd_set", s.cmd_set);
  stat_u64(c, "cmd_flush", s.cmd_flush);
  stat_u64(c, "cmd_touch", s.cmd_touch);
  stat_u64(c, "cmd_meta", s.meta_cmds);
  stat_u64(c, "get_hits", s.get_hits);
  stat_u64(c, "get_misses", s.get_misses);
  stat_u64(c, "get_expired", s.get_expired);
  stat_u64(c, "delete_misses", s.delete_misses);
  stat_u64(c, "delete_hits", s.delete_hits);
  stat_u64(c, "incr_misses", s.incr_misses);
  stat_u64(c, "incr_hits", s.incr_hits);
  stat_u64(c, "decr_misses", s.decr_misses);
  stat_u64(c, "decr_hits", s.decr_hits);
  stat_u64(c, "cas_misses", s.cas_misses);
  stat_u64(c, "cas_hits", s.cas_hits);
  stat_u64(c, "cas_badval", s.cas_badval);
  stat_u64(c, "touch_hits", s.touch_hits);
  stat_u64(c, "touch_misses", s.touch_misses);
  stat_u64(c, "bytes_read", s.bytes_read);
  stat_u64(c, "bytes_written", s.bytes_written);
  stat_u64(c, "limit_maxbytes", g_server.mem_limit);
  stat_u64(c, "threads", (uint64_t)g_server.threads);
  stat_u64(c, "conn_yields", s.conn_yields);
  stat_u64(c, "hash_bytes", ss.hash_buckets * sizeof(void *));
  stat_u64(c, "bytes", ss.bytes);
  stat_u64(c, "curr_items", ss.curr_items);
  stat_u64(c, "total_items", ss.total_items);
  stat_u64(c, "expired_unfetched", ss.expired_unfetched);
  stat_u64(c, "evicted_unfetched", ss.evicted_unfetched);
  stat_u64(c, "evictions", ss.evictions);
  stat_u64(c, "reclaimed", ss.reclaimed);
  out_put(c, "END\r\n", 5);
}

void store_pool_totals(tp_pool_stats *sum, unsigned *npools);

static void stats_tidepool(conn *c) {
  tp_stats g;
  tp_read_stats(&g);
  stat_u64(c, "tp_bytes_mapped", g.bytes_mapped);
  stat_u64(c, "tp_bytes_resident", g.bytes_resident);
  stat_u64(c, "tp_bytes_in_use", g.bytes_in_use);
  stat_u64(c, "tp_bytes_cached", g.bytes_cached);
  stat_u64(c, "tp_bytes_returned", g.bytes_returned);
  stat_u64(c, "tp_pools", g.pools);
  stat_u64(c, "sweeper_running", (uint64_t)tp_sweeper_running());
  stat_u64(c, "sweeper_sweeps", g.sweeps);
  stat_u64(c, "sweeper_slabs_freed", g.slabs_freed);
  stat_u64(c, "sweeper_caches_drained", g.caches_drained);
  tp_pool_stats it;
  unsigned npools;
  store_pool_totals(&it, &npools);
  stat_u64(c, "item_pools", npools);
  stat_u64(c, "item_pool_in_use", it.in_use);
  stat_u64(c, "item_pool_cached", it.cached);
  stat_u64(c, "item_pool_slabs", it.slabs);
  stat_u64(c, "item_pool_bytes_mapped", it.bytes_mapped);
  stat_u64(c, "item_pool_bytes_resident", it.bytes_resident);
  stat_u64(c, "item_pool_gets", it.gets);
  stat_u64(c, "item_pool_puts", it.puts);
  stat_u64(c, "item_pool_cache_hits", it.cache_hits);
  stat_u64(c, "item_pool_cache_misses", it.cache_misses);
  stat_u64(c, "item_pool_slabs_freed", it.slabs_freed);
  tp_pool_stats rb, big;
  proto_pool_stats(&rb, &big);
  stat_u64(c, "rbuf_pool_in_use", rb.in_use);
  stat_u64(c, "rbuf_pool_bytes_resident", rb.bytes_resident);
  stat_u64(c, "rbuf_big_pool_in_use", big.in_use);
  tp_arena_stats as;
  tp_arena_read_stats(c->arena, &as);
  stat_u64(c, "conn_arena_chunks", as.chunks);
  stat_u64(c, "conn_arena_bytes_held", as.bytes_held);
  stat_u64(c, "conn_arena_high_water", as.high_water);
  stat_u64(c, "conn_arena_resets", as.resets);
  tp_epoch_stats es;
  tp_epoch_read_stats(&es);
  stat_str(c, "epoch_mode", tp_epoch_mode());
  /* 1 when built with TP_DEBUG (--config=debug): the library's checks and
   * poisoning, and a little more memory (protocol_test's RSS bound). */
#if defined(TP_DEBUG) && TP_DEBUG
  stat_u64(c, "tidepool_debug", 1);
#else
  stat_u64(c, "tidepool_debug", 0);
#endif
  stat_u64(c, "epoch_retired", es.retired);
  stat_u64(c, "epoch_freed", es.freed);
  stat_u64(c, "epoch_pending", es.pending);
  stat_u64(c, "epoch_pending_bytes", es.pending_bytes);
  stat_u64(c, "epoch_grace_periods", es.grace_periods);
  stat_u64(c, "epoch_cap_waits", es.cap_waits);
  stat_u64(c, "epoch_readers", es.readers);
  store_stats ss;
  store_read_stats(&ss);
  stat_u64(c, "store_mem_used", ss.mem_used);
  stat_u64(c, "store_mem_limit", ss.mem_limit);
  stat_u64(c, "store_hash_buckets", ss.hash_buckets);
  stat_u64(c, "store_large_items", ss.large_items);
  out_put(c, "END\r\n", 5);
}

static void stats_settings(conn *c) {
  stat_u64(c, "maxbytes", g_server.mem_limit);
  stat_u64(c, "maxconns", g_server.maxconns);
  stat_u64(c, "tcpport", (uint64_t)g_server.port);
  stat_u64(c, "udpport", 0);
  stat_str(c, "inter", g_server.listen_addr ? g_server.listen_addr : "NULL");
  stat_u64(c, "verbosity", (uint64_t)g_server.verbose);
  stat_u64(c, "num_threads", (uint64_t)g_server.threads);
  stat_str(c, "cas_enabled", "yes");
  stat_u64(c, "item_size_max", g_server.item_size_max);
  stat_str(c, "binding_protocol", "ascii");
  out_put(c, "END\r\n", 5);
}

static void process_stats(conn *c, token *t, size_t nt) {
  if (nt == 2) {
    stats_general(c);
  } else if (strcmp(t[1].value, "reset") == 0) {
    reset_thread_stats();
    out_line(c, "RESET");
  } else if (strcmp(t[1].value, "tidepool") == 0) {
    stats_tidepool(c);
  } else if (strcmp(t[1].value, "settings") == 0) {
    stats_settings(c);
  } else if (strcmp(t[1].value, "items") == 0 || strcmp(t[1].value, "slabs") == 0 ||
             strcmp(t[1].value, "sizes") == 0 || strcmp(t[1].value, "conns") == 0) {
    out_put(c, "END\r\n", 5); /* per-class figures: see `stats tidepool` */
  } else {
    out_line(c, "ERROR");
  }
}

/* ---- meta commands ---- */

typedef struct meta_flags {
  bool value, quiet, no_update, vivify, has_cas, new_ttl, has_delta, invalidate, base64;
  char mode;
  rel_time_t exptime, autoviv_exptime;
  uint32_t client_flags;
  uint64_t cas, delta, initial;
} meta_flags;

static int meta_preparse(token *t, size_t start, meta_flags *of, const char **err) {
  uint8_t seen[128] = {0};
  bool has_error = false;
  memset(of, 0, sizeof *of);
  of->delta = 1;
  for (size_t i = start; t[i].length != 0; i++) {
    uint8_t o = (uint8_t)t[i].value[0];
    if (o >= 127 || seen[o]) {
      *err = "CLIENT_ERROR duplicate flag";
      return -1;
    }
    seen[o] = 1;
    const char *arg = t[i].value + 1;
    int32_t tmp;
    switch (o) {
      case 'b': of->base64 = true; break;
      case 'N':
        of->vivify = true;
        if (!safe_strtol32(arg, &tmp)) {
          *err = "CLIENT_ERROR bad token in command line format";
          has_error = true;
        } else {
          of->autoviv_exptime = exptime_of(tmp);
        }
        break;
      case 'T':
        if (!safe_strtol32(arg, &tmp)) {
          *err = "CLIENT_ERROR bad token in command line format";
          has_error = true;
        } else {
          of->exptime = exptime_of(tmp);
          of->new_ttl = true;
        }
        break;
      case 'R':
        if (!safe_strtol32(arg, &tmp)) {
          *err = "CLIENT_ERROR bad token in command line format";
          has_error = true;
        }
        break;
      case 'l': case 'O': case 'P': case 'L': case 'k': case 's': case 't': case 'c':
      case 'f': case 'h': case 'S': break;
      case 'v': of->value = true; break;
      case 'u': of->no_update = true; break;
      case 'q': of->quiet = true; break;
      case 'F':
        if (!safe_strtoul32(arg, &of->client_flags)) has_error = true;
        break;
      case 'C':
        if (!safe_strtoull(arg, &of->cas)) {
          *err = "CLIENT_ERROR bad token in command line format";
          has_error = true;
        } else {
          of->has_cas = true;
        }
        break;
      case 'M':
        if (t[i].length != 2) {
          *err = "CLIENT_ERROR incorrect length for M token";
          has_error = true;
        } else {
          of->mode = t[i].value[1];
        }
        break;
      case 'J':
        if (!safe_strtoull(arg, &of->initial)) {
          *err = "CLIENT_ERROR invalid numeric initial value";
          has_error = true;
        }
        break;
      case 'D':
        if (!safe_strtoull(arg, &of->delta)) {
          *err = "CLIENT_ERROR invalid numeric delta value";
          has_error = true;
        }
        break;
      case 'I': of->invalidate = true; break;
      default:
        *err = "CLIENT_ERROR invalid flag";
        return -1;
    }
  }
  return has_error ? -1 : 0;
}

static void meta_space_put(conn *c, char flag, const char *s, size_t n) {
  char *p = out_reserve(c, n + 2);
  if (!p) return;
  p[0] = ' ';
  p[1] = flag;
  memcpy(p + 2, s, n);
  out_commit(c, n + 2);
}

static void meta_num(conn *c, char flag, uint64_t v) {
  char buf[24];
  size_t n = (size_t)(u64_to(buf, v) - buf);
  meta_space_put(c, flag, buf, n);
}

/* The O and k flags every meta reply echoes (and c where asked). */
static void meta_ret_flags(conn *c, const meta_set *ms, const char *key, size_t nkey,
                           uint64_t cas) {
  for (const char *f = ms->order; *f; f++) {
    if (*f == 'O') {
      char *p = out_reserve(c, ms->nopaque + 1);
      if (!p) return;
      *p = ' ';
      memcpy(p + 1, ms->opaque, ms->nopaque);
      out_commit(c, ms->nopaque + 1);
    } else if (*f == 'k') {
      meta_space_put(c, 'k', key, nkey);
    } else if (*f == 'c') {
      meta_num(c, 'c', cas);
    }
  }
}

/* Records the order of the O/k/c flags and the opaque for a reply. */
static bool meta_collect(conn *c, token *t, size_t start, meta_set *ms, bool with_cas) {
  memset(ms, 0, sizeof *ms);
  size_t n = 0;
  for (size_t i = start; t[i].length != 0 && n < sizeof ms->order - 1; i++) {
    char f = t[i].value[0];
    if (f == 'O') {
      if (t[i].length > MFLAG_MAX_OPAQUE_LENGTH) {
        out_line(c, "CLIENT_ERROR opaque token too long");
        return false;
      }
      memcpy(ms->opaque, t[i].value, t[i].length);
      ms->nopaque = t[i].length;
      ms->order[n++] = 'O';
    } else if (f == 'k' || (f == 'c' && with_cas)) {
      ms->order[n++] = f;
    }
  }
  return true;
}

/* The common start of mg, md and ma (KEY then flags from token 2): the
 * key and option-count limits, the flags, their return set. Answers the
 * error and returns false when the command stops here. flag_err: the line
 * for bad flags (NULL: the parser's own, as mg answers). */
static bool meta_begin(conn *c, token *t, size_t nt, meta_flags *of, meta_set *ms,
                       const char *flag_err) {
  const char *err = "CLIENT_ERROR bad command line format";
  if (nt < 3 || t[1].length > KEY_MAX_LENGTH) {
    out_line(c, err);
    return false;
  }
  if (nt > MFLAG_MAX_OPT_LENGTH) {
    out_line(c, "CLIENT_ERROR options flags are too long");
    return false;
  }
  if (meta_preparse(t, 2, of, &err) != 0) {
    out_line(c, flag_err ? flag_err : err);
    return false;
  }
  return meta_collect(c, t, 2, ms, false);
}

static void process_mg(conn *c, token *t, size_t nt) {
  meta_flags of;
  meta_set ms;
  if (!meta_begin(c, t, nt, &of, &ms, NULL)) return;
  const char *key = t[1].value;
  size_t nkey = t[1].length;
  thread_stats *ts = c->ts;
  TS_INC(ts, meta_cmds);
  TS_INC(ts, cmd_get);
  if (of.new_ttl) {
    TS_INC(ts, cmd_touch);
    if (store_touch(key, nkey, of.exptime) == ST_STORED) TS_INC(ts, touch_hits);
    else TS_INC(ts, touch_misses);
  }
  tp_epoch_enter();
  item *it = store_find(key, nkey, false);
  if (!it) {
    tp_epoch_leave();
    TS_INC(ts, get_misses);
    if (of.quiet) return;
    out_put(c, "EN", 2);
    meta_ret_flags(c, &ms, key, nkey, 0);
    out_put(c, "\r\n", 2);
    return;
  }
  TS_INC(ts, get_hits);
  rel_time_t now = store_now();
  if (of.value) {
    out_put(c, "VA", 2);
    char buf[24];
    size_t n = (size_t)(u64_to(buf, it->nbytes - 2) - buf);
    char *p = out_reserve(c, n + 1);
    if (p) {
      *p = ' ';
      memcpy(p + 1, buf, n);
      out_commit(c, n + 1);
    }
  } else {
    out_put(c, "HD", 2);
  }
  for (size_t i = 2; t[i].length != 0; i++) {
    switch (t[i].value[0]) {
      case 's': meta_num(c, 's', it->nbytes - 2); break;
      case 't': {
        uint32_t e = __atomic_load_n(&it->exptime, __ATOMIC_RELAXED);
        if (e == 0) meta_space_put(c, 't', "-1", 2);
        else meta_num(c, 't', e > now ? e - now : 0);
        break;
      }
      case 'c': meta_num(c, 'c', it->cas); break;
      case 'f': meta_num(c, 'f', it->flags); break;
      case 'l': {
        uint32_t a = __atomic_load_n(&it->atime, __ATOMIC_RELAXED);
        meta_num(c, 'l', now > a ? now - a : 0);
        break;
      }
      case 'h':
        meta_space_put(c, 'h', __atomic_load_n(&it->fetched, __ATOMIC_RELAXED) ? "1" : "0", 1);
        break;
      case 'O':
        meta_space_put(c, 'O', t[i].value + 1, t[i].length - 1);
        break;
      case 'k': meta_space_put(c, 'k', key, nkey); break;
      default: break;
    }
  }
  out_put(c, "\r\n", 2);
  if (of.value) {
    char *p = out_reserve(c, it->nbytes);
    if (p) {
      memcpy(p, item_value(it), it->nbytes);
      out_commit(c, it->nbytes);
    }
  }
  if (!of.no_update) {
    if (__atomic_load_n(&it->atime, __ATOMIC_RELAXED) != now)
      __atomic_store_n(&it->atime, now, __ATOMIC_RELAXED);
    if (!__atomic_load_n(&it->fetched, __ATOMIC_RELAXED))
      __atomic_store_n(&it->fetched, 1, __ATOMIC_RELAXED);
  }
  tp_epoch_leave();
}

static void process_ms(conn *c, token *t, size_t nt) {
  const char *err = "CLIENT_ERROR bad command line format";
  if (nt < 4 || t[1].length > KEY_MAX_LENGTH) {
    out_line(c, err);
    return;
  }
  if (nt > MFLAG_MAX_OPT_LENGTH) {
    out_line(c, "CLIENT_ERROR options flags are too long");
    return;
  }
  int32_t vlen;
  if (!safe_strtol32(t[2].value, &vlen) || vlen < 0 || vlen > INT_MAX - 2) {
    out_line(c, err);
    return;
  }
  size_t nbytes = (size_t)vlen + 2;
  meta_flags of;
  enum store_mode mode = MODE_SET;
  meta_set *ms = &c->ms;
  item *it = NULL;
  TS_INC(c->ts, meta_cmds);
  if (meta_preparse(t, 3, &of, &err) != 0) goto swallow;
  if (!meta_collect(c, t, 3, ms, true)) {
    err = NULL;
    goto swallow;
  }
  ms->quiet = of.quiet;
  switch (of.mode) {
    case 0: case 'S': case 's': mode = MODE_SET; break;
    case 'E': case 'e': mode = MODE_ADD; break;
    case 'A': case 'a': mode = MODE_APPEND; break;
    case 'P': case 'p': mode = MODE_PREPEND; break;
    case 'R': case 'r': mode = MODE_REPLACE; break;
    default:
      err = "CLIENT_ERROR invalid mode for ms M token";
      goto swallow;
  }
  if (of.has_cas && mode == MODE_SET) mode = MODE_CAS;
  TS_INC(c->ts, cmd_set);
  it = store_alloc(t[1].value, t[1].length, of.client_flags, of.exptime, nbytes);
  if (!it) {
    err = errno == E2BIG ? "SERVER_ERROR object too large for cache"
                         : "SERVER_ERROR out of memory storing object";
    if (mode == MODE_SET) store_delete(t[1].value, t[1].length, 0);
    goto swallow;
  }
  c->nread_ms = ms;
  start_nread(c, it, mode, of.has_cas ? of.cas : 0, of.quiet, true);
  return;
swallow:
  c->swallow_left = nbytes;
  c->state = CONN_SWALLOW;
  if (err) out_line(c, err);
}

static void process_md(conn *c, token *t, size_t nt) {
  meta_flags of;
  meta_set ms;
  if (!meta_begin(c, t, nt, &of, &ms, "CLIENT_ERROR invalid or duplicate flag")) return;
  TS_INC(c->ts, meta_cmds);
  enum store_result r = store_delete(t[1].value, t[1].length, of.has_cas ? of.cas : 0);
  if (r == ST_STORED) {
    TS_INC(c->ts, delete_hits);
    if (of.quiet) return;
    out_put(c, "HD", 2);
  } else if (r == ST_EXISTS) {
    out_put(c, "EX", 2);
  } else {
    TS_INC(c->ts, delete_misses);
    out_put(c, "NF", 2);
  }
  meta_ret_flags(c, &ms, t[1].value, t[1].length, 0);
  out_put(c, "\r\n", 2);
}

static void process_ma(conn *c, token *t, size_t nt) {
  meta_flags of;
  meta_set ms;
  if (!meta_begin(c, t, nt, &of, &ms, "CLIENT_ERROR invalid or duplicate flag")) return;
  bool incr;
  switch (of.mode) {
    case 0: case 'I': case 'i': case '+': incr = true; break;
    case 'D': case 'd': case '-': incr = false; break;
    default:
      out_line(c, "CLIENT_ERROR invalid mode for ma M token");
      return;
  }
  TS_INC(c->ts, meta_cmds);
  uint64_t val = 0, cas = 0;
  rel_time_t exp = 0;
  const char *key = t[1].value;
  size_t nkey = t[1].length;
  enum store_result r =
      store_arith(key, nkey, incr, of.delta, of.has_cas ? of.cas : 0, of.vivify, of.initial,
                  of.autoviv_exptime, of.new_ttl ? &of.exptime : NULL, &val, &cas, &exp);
  thread_stats *ts = c->ts;
  switch (r) {
    case ST_STORED: {
      if (incr) TS_INC(ts, incr_hits); else TS_INC(ts, decr_hits);
      if (of.quiet) return;
      char num[24];
      size_t nn = (size_t)(u64_to(num, val) - num);
      if (of.value) {
        char lb[32] = "VA ";
        size_t ln = (size_t)(u64_to(lb + 3, nn) - lb);
        out_put(c, lb, ln);
      } else {
        out_put(c, "HD", 2);
      }
      rel_time_t now = store_now();
      for (size_t i = 2; t[i].length != 0; i++) {
        switch (t[i].value[0]) {
          case 'c': meta_num(c, 'c', cas); break;
          case 't':
            if (exp == 0) meta_space_put(c, 't', "-1", 2);
            else meta_num(c, 't', exp > now ? exp - now : 0);
            break;
          case 'O': meta_space_put(c, 'O', t[i].value + 1, t[i].length - 1); break;
          case 'k': meta_space_put(c, 'k', key, nkey); break;
          default: break;
        }
      }
      out_put(c, "\r\n", 2);
      if (of.value) {
        out_put(c, num, nn);
        out_put(c, "\r\n", 2);
      }
      return;
    }
    case ST_NOT_FOUND:
      if (incr) TS_INC(ts, incr_misses); else TS_INC(ts, decr_misses);
      out_put(c, "NF", 2);
      break;
    case ST_EXISTS: out_put(c, "EX", 2); break;
    case ST_NOT_STORED:
      out_line(c, "CLIENT_ERROR cannot increment or decrement non-numeric value");
      return;
    default:
      out_line(c, "SERVER_ERROR out of memory");
      return;
  }
  meta_ret_flags(c, &ms, key, nkey, 0);
  out_put(c, "\r\n", 2);
}

static void process_me(conn *c, token *t, size_t nt) {
  if (nt < 3 || t[1].length > KEY_MAX_LENGTH) {
    out_line(c, "CLIENT_ERROR bad command line format");
    return;
  }
  tp_epoch_enter();
  item *it = store_find(t[1].value, t[1].length, false);
  if (!it) {
    tp_epoch_leave();
    out_line(c, "EN");
    return;
  }
  rel_time_t now = store_now();
  uint32_t e = __atomic_load_n(&it->exptime, __ATOMIC_RELAXED);
  char *p = out_reserve(c, 3 + t[1].length + 160);
  if (p) {
    int n = sprintf(p, "ME %.*s exp=%ld la=%u cas=%llu fetch=%s cls=%u size=%u\r\n",
                    (int)t[1].length, t[1].value, e == 0 ? -1L : (long)e - (long)now,
                    now - __atomic_load_n(&it->atime, __ATOMIC_RELAXED),
                    (unsigned long long)it->cas,
                    __atomic_load_n(&it->fetched, __ATOMIC_RELAXED) ? "yes" : "no",
                    (unsigned)it->cls + 1,
                    (unsigned)(sizeof(item) + it->nkey + it->nbytes));
    out_commit(c, (size_t)n);
  }
  tp_epoch_leave();
}

/* ---- dispatch ---- */

static void process_command(conn *c, char *line, size_t len) {
  /* Nothing of earlier requests is waiting to be written (noreply, or all
   * sent): their parsing memory goes now, not at the next write. */
  if (c->out_pending == 0 && c->iovcnt == 0 && c->arena_dirty) {
    tp_arena_reset(c->arena);
    c->arena_dirty = false;
  }
  c->arena_dirty = true;
  /* memcached stops a command at a NUL (it is a C string there). */
  char *nul = memchr(line, '\0', len);
  if (nul) len = (size_t)(nul - line);
  line[len] = '\0';
  token *t = tp_arena_alloc(c->arena, sizeof(token) * MAX_TOKENS);
  if (!t) {
    c->close_now = true;
    return;
  }
  /* get-type commands take any number of keys: tokenize only the command
   * word, the rest is scanned by process_get. */
  char *p = line;
  while (*p == ' ') p++;
  if (*p == 'g') {
    char *e = p;
    while (*e && *e != ' ') e++;
    size_t cl = (size_t)(e - p);
    bool has_arg = false;
    for (char *q = e; *q; q++)
      if (*q != ' ') {
        has_arg = true;
        break;
      }
    int which = -1;
    if (cl == 3 && memcmp(p, "get", 3) == 0) which = 0;
    else if (cl == 4 && memcmp(p, "gets", 4) == 0) which = 1;
    else if (cl == 3 && memcmp(p, "gat", 3) == 0) which = 2;
    else if (cl == 4 && memcmp(p, "gats", 4) == 0) which = 3;
    if (which < 0 || !has_arg) {
      out_line(c, "ERROR");
      return;
    }
    process_get(c, e, (size_t)(line + len - e), which & 1, which >= 2);
    return;
  }
  size_t nt = tokenize(line, len, t, MAX_TOKENS);
  if (nt < 2 || t[0].length < 2) {
    out_line(c, "ERROR");
    return;
  }
  const char *cmd = t[0].value;
  char first = cmd[0];
#define WANT(cond)          \
  do {                      \
    if (!(cond)) {          \
      out_line(c, "ERROR"); \
      return;               \
    }                       \
  } while (0)
  if (first == 'm' && t[0].length == 2) {
    if (nt < 3 && cmd[1] != 'n' && cmd[1] != 'e') {
      out_line(c, "ERROR");
      return;
    }
    switch (cmd[1]) {
      case 'g': process_mg(c, t, nt); return;
      case 's': process_ms(c, t, nt); return;
      case 'd': process_md(c, t, nt); return;
      case 'a': process_ma(c, t, nt); return;
      case 'e': process_me(c, t, nt); return;
      case 'n': out_put(c, "MN\r\n", 4); return;
      default: out_line(c, "ERROR"); return;
    }
  }
  if (strcmp(cmd, "set") == 0) {
    WANT(nt == 6 || nt == 7);
    process_update(c, t, nt, MODE_SET);
  } else if (strcmp(cmd, "add") == 0) {
    WANT(nt == 6 || nt == 7);
    process_update(c, t, nt, MODE_ADD);
  } else if (strcmp(cmd, "replace") == 0) {
    WANT(nt == 6 || nt == 7);
    process_update(c, t, nt, MODE_REPLACE);
  } else if (strcmp(cmd, "append") == 0) {
    WANT(nt == 6 || nt == 7);
    process_update(c, t, nt, MODE_APPEND);
  } else if (strcmp(cmd, "prepend") == 0) {
    WANT(nt == 6 || nt == 7);
    process_update(c, t, nt, MODE_PREPEND);
  } else if (strcmp(cmd, "cas") == 0) {
    WANT(nt == 7 || nt == 8);
    process_update(c, t, nt, MODE_CAS);
  } else if (strcmp(cmd, "delete") == 0) {
    WANT(nt >= 3 && nt <= 5);
    process_delete(c, t, nt);
  } else if (strcmp(cmd, "incr") == 0) {
    WANT(nt == 4 || nt == 5);
    process_arith(c, t, nt, true);
  } else if (strcmp(cmd, "decr") == 0) {
    WANT(nt == 4 || nt == 5);
    process_arith(c, t, nt, false);
  } else if (strcmp(cmd, "touch") == 0) {
    WANT(nt == 4 || nt == 5);
    process_touch(c, t, nt);
  } else if (strcmp(cmd, "stats") == 0) {
    process_stats(c, t, nt);
  } else if (strcmp(cmd, "flush_all") == 0) {
    WANT(nt >= 2 && nt <= 4);
    process_flush(c, t, nt);
  } else if (strcmp(cmd, "version") == 0) {
    out_line(c, "VERSION " VERSION_STRING);
  } else if (strcmp(cmd, "quit") == 0) {
    c->close_after = true;
  } else if (strcmp(cmd, "verbosity") == 0) {
    WANT(nt == 3 || nt == 4);
    bool noreply = false;
    noreply_maybe(c, t, nt, &noreply);
    g_server.verbose = (int)strtoul(t[1].value, NULL, 10);
    reply(c, &noreply, "OK");
  } else if (nt >= 2 && t[nt - 2].value && strncmp(t[nt - 2].value, "HTTP/", 5) == 0) {
    c->close_now = true;
  } else {
    out_line(c, "ERROR");
  }
#undef WANT
}

static bool starts_like_get(const char *p, size_t n) {
  size_t i = 0;
  while (i < n && p[i] == ' ') i++;
  if (i > 100) return false;
  p += i;
  n -= i;
  return (n >= 4 && (memcmp(p, "get ", 4) == 0 || memcmp(p, "gat ", 4) == 0)) ||
         (n >= 5 && (memcmp(p, "gets ", 5) == 0 || memcmp(p, "gats ", 5) == 0));
}

/* A multiget line longer than the read buffer: move it to a big one. */
static bool rbuf_grow(conn *c) {
  char *big = tp_pool_get(rbuf_big_pool);
  if (!big) return false;
  size_t n = c->rlen - c->rpos;
  memcpy(big, c->rbuf + c->rpos, n);
  tp_pool_put(rbuf_pool, c->rbuf);
  c->rbuf = big;
  c->rbuf_big = true;
  c->rcap = RBUF_BIG_SIZE;
  c->rpos = 0;
  c->rlen = (uint32_t)n;
  return true;
}

void proto_process(conn *c) {
  while (!c->close_now && !c->close_after && c->out_pending < OUT_HIGH) {
    size_t avail = c->rlen - c->rpos;
    if (avail == 0) break;
    char *start = c->rbuf + c->rpos;
    if (c->state == CONN_NREAD) {
      size_t n = avail < c->nread_left ? avail : c->nread_left;
      item *it = c->nread_it;
      memcpy(item_value(it) + (it->nbytes - c->nread_left), start, n);
      c->rpos += (uint32_t)n;
      c->nread_left -= (uint32_t)n;
      if (c->nread_left == 0) complete_nread(c);
      continue;
    }
    if (c->state == CONN_SWALLOW) {
      size_t n = avail < c->swallow_left ? avail : (size_t)c->swallow_left;
      c->rpos += (uint32_t)n;
      c->swallow_left -= n;
      if (c->swallow_left == 0) c->state = CONN_CMD;
      continue;
    }
    char *nl = memchr(start, '\n', avail);
    if (!nl) {
      if (avail > LINE_MAX_NO_NL) {
        if (!starts_like_get(start, avail)) {
          c->close_now = true; /* memcached closes: not a command */
        } else if (avail >= c->rcap / 2) {
          if (c->rbuf_big || !rbuf_grow(c)) {
            out_line(c, "SERVER_ERROR multiget line too long");
            c->close_after = true;
          }
        }
      }
      break;
    }
    size_t linelen = (size_t)(nl - start);
    c->rpos += (uint32_t)linelen + 1;
    if (linelen > 0 && start[linelen - 1] == '\r') linelen--;
    process_command(c, start, linelen);
  }
  if (c->rbuf_big && c->rpos == c->rlen) {
    /* The long line is done: back to a normal buffer. */
    tp_pool_put(rbuf_big_pool, c->rbuf);
    c->rbuf = NULL;
    c->rbuf_big = false;
    c->rcap = c->rpos = c->rlen = 0;
  }
}
