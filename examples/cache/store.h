/*
 * store.h — tpcache's item store: size-classed items in tidepool pools, a
 * hash index read without locks inside epoch sections, per-class
 * approximate LRU lists, the -m memory limit, expiry and flush_all.
 *
 * Thread safety: every function is safe to call from any worker thread.
 * store_find and the item it returns are valid only inside the caller's
 * tp_epoch_enter()/tp_epoch_leave() section: an item unlinked by another
 * thread is retired (tp_pool_retire) and freed after a grace period, never
 * while a section that could have seen it is open. Items are immutable
 * once stored (key, value, flags, cas); only exptime, atime and the
 * fetched mark change, through atomics.
 */
#ifndef TPCACHE_STORE_H
#define TPCACHE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEY_MAX_LENGTH 250
/* Expiry times above this many seconds are absolute unix times. */
#define REALTIME_MAXDELTA (60 * 60 * 24 * 30)

typedef uint32_t rel_time_t;

typedef struct item {
  struct item *hnext;               /* hash chain; __atomic (readers) */
  struct item *lru_prev, *lru_next; /* class LRU list; under its lock */
  uint64_t cas;
  uint32_t exptime;  /* rel_time_t; 0 = never; __atomic (touch) */
  uint32_t atime;    /* last access; __atomic */
  uint32_t time;     /* when stored (flush_all) */
  uint32_t lru_time; /* when put at the LRU head; under its lock */
  uint32_t flags;    /* the client's flags */
  uint32_t nbytes;   /* value length including the trailing "\r\n" */
  uint32_t hash;
  uint8_t nkey;
  uint8_t cls;     /* size class; CLS_LARGE: a mapping of its own */
  uint8_t linked;  /* in the index and its LRU; under the stripe lock */
  uint8_t fetched; /* read since stored; __atomic */
  char data[];     /* key, then the value and "\r\n" */
} item;

#define CLS_LARGE 255

static inline char *item_key(item *it) { return it->data; }
static inline char *item_value(item *it) { return it->data + it->nkey; }

typedef struct store_config {
  size_t mem_limit;     /* -m, bytes; items are evicted past it */
  size_t item_size_max; /* -I, bytes */
  double factor;        /* size-class growth factor */
} store_config;

/* The memcached results of a store. */
enum store_result { ST_STORED, ST_NOT_STORED, ST_EXISTS, ST_NOT_FOUND, ST_NO_MEMORY };
enum store_mode { MODE_SET, MODE_ADD, MODE_REPLACE, MODE_APPEND, MODE_PREPEND, MODE_CAS };

typedef struct store_stats {
  uint64_t curr_items, total_items, bytes, evictions, reclaimed, expired_unfetched,
      evicted_unfetched, mem_used, mem_limit, hash_buckets, classes, large_items;
} store_stats;

int store_init(const store_config *cfg);
void store_shutdown(void);

/* Current time in the server's relative seconds, and the conversion of a
 * protocol expiry time (0 never, negative = already expired, > 30 days =
 * unix time). */
rel_time_t store_now(void);
rel_time_t store_realtime(int64_t exptime);
uint64_t store_started(void); /* process start, unix time */

uint32_t store_hash(const char *key, size_t nkey);

/* true when a value of nbytes (with "\r\n") and this key fits -I. */
bool store_size_ok(size_t nkey, size_t nbytes);
/* A fresh, unlinked item (evicts past -m). NULL + errno E2BIG (over -I)
 * or ENOMEM (nothing to evict). The caller fills the value, then stores it
 * or frees it. */
item *store_alloc(const char *key, size_t nkey, uint32_t flags, rel_time_t exptime,
                  size_t nbytes);
void store_free_unlinked(item *it);

/* Inside an epoch section: the live item for key, or NULL. `bump` marks it
 * accessed (LRU, fetched). */
item *store_find(const char *key, size_t nkey, bool bump);

/* Links `it` (the store takes it whatever the result). For MODE_CAS,
 * cas_in is the client's unique. *cas_out gets the stored item's cas.
 * Append/prepend keep the old flags and expiry. */
enum store_result store_item(item *it, enum store_mode mode, uint64_t cas_in,
                             uint64_t *cas_out);

/* Unlinks key (if cas_in != 0, only when it matches: ST_EXISTS). */
enum store_result store_delete(const char *key, size_t nkey, uint64_t cas_in);

/* Sets the expiry. ST_STORED (touched) or ST_NOT_FOUND. */
enum store_result store_touch(const char *key, size_t nkey, rel_time_t exptime);

/* incr/decr. ST_STORED with the new value in *out; ST_NOT_FOUND;
 * ST_NOT_STORED (value not a number); ST_EXISTS (cas_in mismatch);
 * ST_NO_MEMORY. When `vivify`, a missing key is created with `initial`
 * and vivify_exptime. `new_exptime` (when not NULL) is set on success. */
enum store_result store_arith(const char *key, size_t nkey, bool incr, uint64_t delta,
                              uint64_t cas_in, bool vivify, uint64_t initial,
                              rel_time_t vivify_exptime, const rel_time_t *new_exptime,
                              uint64_t *out, uint64_t *cas_out, rel_time_t *exp_out);

/* flush_all: items stored before now (delay 0) or before the delay ends
 * become invisible; the maintenance thread unlinks them. */
void store_flush(int64_t delay);

void store_read_stats(store_stats *out);
/* The flush_all cutoff in force (0: none) and how many flush_all calls
 * there were (*gen), for the maintenance thread. */
rel_time_t store_oldest_live(uint64_t *gen);

/* One pass of the maintenance work (unlink expired and flushed items in
 * part of the index); the maintenance thread calls it, tests may too.
 * Returns the items unlinked. */
size_t store_crawl(bool whole_table);

#endif /* TPCACHE_STORE_H */
