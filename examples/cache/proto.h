/*
 * proto.h — the memcached text protocol (classic and meta commands) over a
 * connection's buffers: parse what is in the read buffer, run the
 * commands against the store, assemble the responses as iovecs in the
 * connection's arena. No sockets here: the event loop (server.c) reads and
 * writes, the fuzz target feeds bytes directly.
 *
 * Thread safety: a connection is used by one thread at a time (its
 * worker's); the counters that `stats` sums are per thread.
 */
#ifndef TPCACHE_PROTO_H
#define TPCACHE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <tidepool/tidepool.h>

#include "store.h"

#define RBUF_SIZE (16 * 1024)       /* a connection's read buffer */
#define RBUF_BIG_SIZE (256 * 1024)  /* for a multiget line longer than that */
#define OUT_HIGH (1024 * 1024)      /* stop parsing while this much is unsent */
#define LINE_MAX_NO_NL 2048         /* memcached: longer without "\n" and not a get: close */

/* Per-thread counters (one writer: the worker; `stats` reads them). */
typedef struct thread_stats {
  uint64_t cmd_get, get_hits, get_misses, get_expired, cmd_set, cmd_touch, touch_hits,
      touch_misses, delete_hits, delete_misses, incr_hits, incr_misses, decr_hits,
      decr_misses, cas_hits, cas_misses, cas_badval, cmd_flush, bytes_read, bytes_written,
      meta_cmds, conn_yields;
} thread_stats;

#define TS_ADD(ts, field, n) \
  __atomic_store_n(&(ts)->field, __atomic_load_n(&(ts)->field, __ATOMIC_RELAXED) + (n), \
                   __ATOMIC_RELAXED)
#define TS_INC(ts, field) TS_ADD(ts, field, 1)

/* Server-wide settings and connection counters. */
typedef struct server_info {
  int port, threads, verbose;
  unsigned maxconns;
  size_t item_size_max, mem_limit;
  uint64_t curr_conns, total_conns, rejected_conns; /* __atomic */
  thread_stats *thread_stats[256];
  unsigned nthreads_registered;
  const char *listen_addr;
} server_info;

extern server_info g_server;

enum conn_state { CONN_CMD, CONN_NREAD, CONN_SWALLOW };

/* What an ms reply needs once its data block is in. */
typedef struct meta_set {
  char opaque[33]; /* the O token, as given (memcached caps it at 32) */
  size_t nopaque;
  char order[8]; /* the O/k/c flags in request order */
  bool quiet;
} meta_set;

typedef struct conn {
  int fd;
  void *owner; /* the worker */
  tp_arena *arena;
  thread_stats *ts;
  /* input */
  char *rbuf;
  uint32_t rcap, rpos, rlen;
  bool rbuf_big;
  enum conn_state state;
  bool close_after; /* close once the output is written (quit, errors) */
  bool close_now;   /* close without writing more */
  /* a storage command waiting for its data block */
  item *nread_it;
  uint32_t nread_left;
  uint8_t nread_mode;
  bool nread_noreply;
  bool nread_meta;
  uint64_t nread_cas;
  meta_set *nread_ms;
  meta_set ms;
  uint64_t swallow_left;
  /* output: iovecs in the arena; reset when all is written */
  struct iovec *iov;
  uint32_t iovcnt, iovcap, iov_done;
  char *ocur;
  size_t ofree;
  size_t out_pending;
  bool arena_dirty; /* allocated in since the last reset */
  /* server bookkeeping */
  struct conn *next;
  uint32_t events;
} conn;

/* One-time setup of the connection memory (pools). 0 or -errno. */
int proto_init(void);
void proto_shutdown(void);

/* A connection's buffers: 0, or -ENOMEM. conn_release gives back what
 * proto_conn_init took (and an item waiting for data). */
int proto_conn_init(conn *c, int fd, thread_stats *ts);
void proto_conn_release(conn *c);

/* Makes room to read into: returns where and how much (0: the buffer is
 * full of an unfinished line; proto_process has already decided what to do
 * about it). */
char *proto_read_space(conn *c, size_t *room);
/* Runs every complete request in the read buffer, in order, appending
 * responses; stops early while OUT_HIGH bytes are unsent. */
void proto_process(conn *c);
/* After the server wrote `n` bytes of the output. When everything is
 * written, the arena is reset (true returned). */
bool proto_output_written(conn *c, size_t n);
/* Drops the read buffer when it is empty (idle connections hold none). */
void proto_conn_idle(conn *c);

#endif /* TPCACHE_PROTO_H */
