/*
 * store.c — tpcache's items, index, LRU and memory limit (see store.h).
 *
 * Memory. Every item lives in the tidepool pool of its size class (classes
 * grow by `factor`, 16-byte steps, up to 1 MiB, the pool's largest object);
 * an item larger than that (only with -I over 1m) gets a mapping of its
 * own. An item that leaves the index (replaced, deleted, evicted, expired,
 * flushed) is handed to tp_pool_retire: it goes back to its pool after a
 * grace period, so a reader that found it a moment before still reads
 * valid memory. Pools return idle slabs to the OS through the sweeper.
 *
 * Index. A fixed array of bucket heads (sized from -m, like memcached's
 * hash power; pages untouched until used), each a singly linked chain.
 * Readers walk it inside an epoch section with acquire loads and take no
 * lock. Writers serialize per stripe (a bucket's stripe is its index modulo
 * NSTRIPES, so one chain has one lock) and change a chain with single
 * release stores: an insert publishes a fully built item at the head; a
 * replace builds new->hnext = old->hnext, then swings the link to new; an
 * unlink swings the link past the item. Each store leaves a chain a reader
 * may walk at any moment: it sees the old or the new version, never a
 * half-built item (the release store orders the item's initialization
 * before its publication, the reader's acquire load orders it after).
 *
 * LRU. One list per size class, each under its own mutex, holding the
 * linked items of that class, newest at the head. Reads never touch it:
 * they store the access time in the item (CLOCK-style). Eviction walks
 * from the tail; an item accessed since it was put at the head gets a
 * second chance (moved back to the head), like memcached's bump-once-a-
 * minute approximation. Lock order: stripe, then LRU. Eviction holds an
 * LRU lock and only trylocks stripes, skipping items whose stripe is busy.
 *
 * Limit. mem_used counts the pool strides of linked and in-flight items;
 * an allocation that would pass -m first evicts from its own class (the
 * freed object is what the pool hands out next), or from the class with
 * the oldest tail when its own is empty.
 */
#define _GNU_SOURCE
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <tidepool/tidepool.h>

#define NSTRIPES 4096u
#define MAX_CLASSES 200
#define POOL_OBJ_MAX (1u << 20)
/* memcached counts an item as its header (48 bytes with the cas) plus the
 * key, a NUL and the value: -I compares against that, so the largest value
 * accepted matches memcached's. */
#define MEMCACHED_ITEM_HEADER 56

typedef struct lru {
  pthread_mutex_t lock;
  item *head, *tail;
  uint64_t count;
} lru;

typedef struct size_class {
  tp_pool *pool;
  size_t size;   /* largest item */
  size_t stride; /* what one item costs in its slab */
  lru lru;
} size_class;

static struct {
  store_config cfg;
  size_class cls[MAX_CLASSES];
  lru large_lru;
  unsigned ncls;
  uint8_t *cls_of; /* (item size + 15) / 16 -> class */
  item **buckets;
  size_t nbuckets, buckets_bytes;
  pthread_mutex_t stripes[NSTRIPES];
  uint64_t next_cas;
  uint64_t mem_used;
  uint64_t curr_items, total_items, bytes, evictions, reclaimed, expired_unfetched,
      evicted_unfetched, large_items;
  uint32_t oldest_live;
  /* Sticky, __atomic: some item was given an expiry (set or touch). Until
   * then, and with no flush_all in force, no item can be dead, and the
   * maintenance crawl has nothing to find: it skips its pass. */
  uint32_t some_expiry;
  uint64_t oldest_cas;
  uint64_t flush_gen; /* flush_all calls, ever */
  size_t crawl_pos;
  struct timespec mono_start;
  uint64_t started;
} S;

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define ADD(x, v) __atomic_fetch_add(&(x), (v), __ATOMIC_RELAXED)
#define SUB(x, v) __atomic_fetch_sub(&(x), (v), __ATOMIC_RELAXED)

rel_time_t store_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  /* Starts at 2 so that "already expired" (1) is in the past. */
  return (rel_time_t)(ts.tv_sec - S.mono_start.tv_sec + 2);
}

uint64_t store_started(void) { return S.started; }

rel_time_t store_realtime(int64_t exptime) {
  if (exptime == 0) return 0;
  if (exptime < 0) return 1; /* immediately expired */
  if (exptime > REALTIME_MAXDELTA) {
    if ((uint64_t)exptime <= S.started) return 1;
    uint64_t r = (uint64_t)exptime - S.started;
    return r > UINT32_MAX ? UINT32_MAX : (rel_time_t)r;
  }
  return (rel_time_t)exptime + store_now();
}

uint32_t store_hash(const char *k, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xc2b2ae3d27d4eb4full);
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, k, 8);
    h = (h ^ v) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
    k += 8;
    n -= 8;
  }
  uint64_t v = 0;
  memcpy(&v, k, n);
  h = (h ^ v) * 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 29;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 32;
  return (uint32_t)h;
}

static size_t item_total(size_t nkey, size_t nbytes) { return sizeof(item) + nkey + nbytes; }

static size_t large_map_size(size_t total) { return (total + 4095) & ~(size_t)4095; }

static size_t item_cost(const item *it) {
  if (it->cls == CLS_LARGE) return large_map_size(item_total(it->nkey, it->nbytes));
  return S.cls[it->cls].stride;
}

static bool item_live(const item *it, rel_time_t now) {
  uint32_t exp = LOAD(((item *)it)->exptime);
  if (exp != 0 && exp <= now) return false;
  uint32_t ol = LOAD(S.oldest_live);
  if (ol != 0 && ol <= now) {
    if (it->time <= ol) return false;
    uint64_t oc = LOAD(S.oldest_cas);
    if (oc != 0 && it->cas < oc) return false;
  }
  return true;
}

int store_init(const store_config *cfg) {
  memset(&S, 0, sizeof S);
  S.cfg = *cfg;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &S.mono_start);
  S.started = (uint64_t)time(NULL) - 2;
  S.next_cas = 1;
  for (unsigned i = 0; i < NSTRIPES; i++) pthread_mutex_init(&S.stripes[i], NULL);
  pthread_mutex_init(&S.large_lru.lock, NULL);

  double f = cfg->factor > 1.01 ? cfg->factor : 1.08;
  size_t size = (sizeof(item) + 1 + 2 + 15) & ~(size_t)15;
  while (S.ncls < MAX_CLASSES) {
    if (size > POOL_OBJ_MAX || S.ncls == MAX_CLASSES - 1) size = POOL_OBJ_MAX;
    char name[32];
    snprintf(name, sizeof name, "item-%zu", size);
    tp_pool_config pc = {.name = name, .obj_size = size};
    size_class *c = &S.cls[S.ncls];
    if (!(c->pool = tp_pool_create(&pc))) return -errno;
    tp_pool_stats ps;
    tp_pool_read_stats(c->pool, &ps);
    c->size = size;
    c->stride = ps.stride;
    pthread_mutex_init(&c->lru.lock, NULL);
    S.ncls++;
    if (size == POOL_OBJ_MAX) break;
    size_t next = ((size_t)((double)size * f) + 15) & ~(size_t)15;
    size = next > size ? next : size + 16;
  }
  /* One get/put before any other thread runs: it sets up the library's
   * magazine space now. (Works around a race in libtidepool, reported by
   * TSan: the sweeper reads that space's base pointer unsynchronized while
   * the first refill initializes it under pthread_once.) */
  tp_pool_put(S.cls[0].pool, tp_pool_get(S.cls[0].pool));
  S.cls_of = malloc(POOL_OBJ_MAX / 16 + 1);
  if (!S.cls_of) return -ENOMEM;
  unsigned c = 0;
  for (size_t i = 0; i <= POOL_OBJ_MAX / 16; i++) {
    while (S.cls[c].size < i * 16) c++;
    S.cls_of[i] = (uint8_t)c;
  }

  /* One bucket per KiB of -m (at least 64 Ki): memcached's default table
   * of 64 Ki buckets grows to about this for 1 KiB items. Untouched pages of
   * the mapping cost nothing. */
  size_t nb = 1u << 16;
  while (nb < cfg->mem_limit / 1024 && nb < (1u << 30)) nb <<= 1;
  S.nbuckets = nb;
  S.buckets_bytes = nb * sizeof(item *);
  void *b = mmap(NULL, S.buckets_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (b == MAP_FAILED) return -errno;
  /* Every lookup starts with a load from a random bucket: with -m 1024
   * the array is 8 MiB, 2048 small pages, and that load was the worker's
   * costliest user-space instruction (a TLB miss, then a cache miss).
   * Transparent huge pages (when the system allows them on request) cover
   * it with four TLB entries. The array is never given back, so the huge
   * pages cost only the rounding of a small table up to 2 MiB: skip them
   * below that. */
  if (S.buckets_bytes >= ((size_t)2 << 20)) (void)madvise(b, S.buckets_bytes, MADV_HUGEPAGE);
  S.buckets = b;

  /* Items retired and not yet freed are memory past -m: cap them at 1/16
   * of it (2..64 MiB). A retire past the cap waits for a grace period on
   * the retiring thread (readers' sections are a lookup and a copy, so
   * that wait is short), which keeps RSS near -m under eviction storms.
   * The reclaimer's timer: 10 ms instead of the library's 1 ms. A set that
   * replaces an item retires the old one, so under a steady set load the
   * reclaimer wakes on every tick (its 1024-retire kick comes first past
   * 100 k sets/s): at 1 ms its own CPU time was 3..4 % of a -t 1 server's
   * under set-only load (0.7 % at 10 ms), besides a preemption of the
   * worker per tick, to return items 9 ms sooner: at 100 k sets/s of 100 B
   * values, about 20 KiB of memory per ms. */
  size_t cap = cfg->mem_limit / 16;
  if (cap < ((size_t)2 << 20)) cap = (size_t)2 << 20;
  if (cap > ((size_t)64 << 20)) cap = (size_t)64 << 20;
  tp_epoch_config ec = {.retire_cap = cap, .interval_ms = 10};
  tp_epoch_configure(&ec);
  return 0;
}

void store_shutdown(void) {
  /* Give everything back: the pools are destroyed after the index. */
  for (size_t i = 0; i < S.nbuckets; i++) {
    for (item *it = S.buckets[i], *next; it; it = next) {
      next = it->hnext;
      if (it->cls == CLS_LARGE)
        munmap(it, large_map_size(item_total(it->nkey, it->nbytes)));
      else
        tp_pool_put(S.cls[it->cls].pool, it);
    }
  }
  munmap(S.buckets, S.buckets_bytes);
  tp_epoch_barrier();
  for (unsigned i = 0; i < S.ncls; i++) tp_pool_destroy(S.cls[i].pool);
  free(S.cls_of);
}

bool store_size_ok(size_t nkey, size_t nbytes) {
  return MEMCACHED_ITEM_HEADER + nkey + 1 + nbytes <= S.cfg.item_size_max;
}

/* ---- LRU ---- */

static lru *lru_of(const item *it) {
  return it->cls == CLS_LARGE ? &S.large_lru : &S.cls[it->cls].lru;
}

static void lru_unlink_locked(lru *l, item *it) {
  if (it->lru_prev) it->lru_prev->lru_next = it->lru_next; else l->head = it->lru_next;
  if (it->lru_next) it->lru_next->lru_prev = it->lru_prev; else l->tail = it->lru_prev;
  it->lru_prev = it->lru_next = NULL;
  STORE(l->count, l->count - 1); /* read unlocked by evict_one */
}

static void lru_push_locked(lru *l, item *it, rel_time_t now) {
  it->lru_prev = NULL;
  it->lru_next = l->head;
  if (l->head) l->head->lru_prev = it; else l->tail = it;
  l->head = it;
  it->lru_time = now;
  STORE(l->count, l->count + 1);
}

/* ---- the index (writers hold the stripe lock) ---- */

static pthread_mutex_t *stripe_of(uint32_t h) { return &S.stripes[h & (NSTRIPES - 1)]; }
static item **bucket_of(uint32_t h) { return &S.buckets[h & (S.nbuckets - 1)]; }

/* The link that points at the item for key (NULL if absent). */
static item **find_link(uint32_t h, const char *key, size_t nkey) {
  item **link = bucket_of(h);
  for (item *it; (it = *link) != NULL; link = &it->hnext)
    if (it->hash == h && it->nkey == nkey && memcmp(it->data, key, nkey) == 0) return link;
  return NULL;
}

static void item_release(item *it) {
  if (it->cls == CLS_LARGE) {
    SUB(S.large_items, 1);
    munmap(it, large_map_size(item_total(it->nkey, it->nbytes)));
  } else {
    tp_pool_put(S.cls[it->cls].pool, it);
  }
}

static void large_retire_cb(void *obj, void *arg) {
  (void)arg;
  item_release(obj);
}

/* After a grace period: readers may still hold it. */
static void item_retire(item *it) {
  int rc;
  if (it->cls == CLS_LARGE)
    rc = tp_epoch_retire_sized(it, item_cost(it), large_retire_cb, NULL);
  else
    rc = tp_pool_retire(S.cls[it->cls].pool, it);
  if (rc != 0) { /* ENOMEM/EDEADLK: wait for readers ourselves */
    tp_epoch_synchronize();
    item_release(it);
  }
}

/* Takes a linked item out of the index and its LRU; the caller holds the
 * stripe lock, `link` points at it; retire it after unlocking. */
static void unaccount_locked(item *it, bool lru_locked) {
  lru *l = lru_of(it);
  if (!lru_locked) pthread_mutex_lock(&l->lock);
  lru_unlink_locked(l, it);
  if (!lru_locked) pthread_mutex_unlock(&l->lock);
  it->linked = 0;
  SUB(S.curr_items, 1);
  SUB(S.bytes, item_total(it->nkey, it->nbytes));
  SUB(S.mem_used, item_cost(it));
}

static void unlink_locked(item **link, item *it, bool lru_locked) {
  /* Readers that already passed the link keep a valid it->hnext: the item
   * is only retired, never changed. */
  __atomic_store_n(link, it->hnext, __ATOMIC_RELEASE); /* orders nothing
      new, but keeps the publication chain visible to TSan */
  unaccount_locked(it, lru_locked);
}

/* Puts `it` where `link` points (replacing *link when `old` is it) or at
 * the bucket head, and at its LRU head. */
static void link_locked(item **link, item *old, item *it, rel_time_t now) {
  lru *l = lru_of(it);
  /* A replacement of the same size class leaves and joins one LRU: one
   * lock for both (the old item, still on the LRU until then, cannot be
   * evicted meanwhile: evictors only trylock the stripe we hold). */
  bool same_lru = old && lru_of(old) == l;
  if (old) {
    /* Replace in one store: a reader sees old or it, never neither. */
    it->hnext = old->hnext;
    if (!same_lru) unaccount_locked(old, false);
  } else {
    link = bucket_of(it->hash);
    it->hnext = *link;
  }
  it->linked = 1;
  it->time = now;
  STORE(it->atime, now);
  it->cas = ADD(S.next_cas, 1);
  /* Release: the item's fields above and its data are visible to any
   * reader that loads this link. */
  __atomic_store_n(link, it, __ATOMIC_RELEASE);
  pthread_mutex_lock(&l->lock);
  if (same_lru) unaccount_locked(old, true);
  lru_push_locked(l, it, now);
  pthread_mutex_unlock(&l->lock);
  ADD(S.curr_items, 1);
  ADD(S.total_items, 1);
  ADD(S.bytes, item_total(it->nkey, it->nbytes));
}

/* ---- eviction ---- */

/* Evicts (or reclaims, if dead) one item from l. false if none could go. */
static bool evict_from(lru *l) {
  rel_time_t now = store_now();
  item *victim = NULL;
  pthread_mutex_lock(&l->lock);
  item *it = l->tail;
  for (int tries = 0; it && tries < 50; tries++) {
    item *prev = it->lru_prev;
    bool live = item_live(it, now);
    if (live && LOAD(it->atime) > it->lru_time && tries < 40 && l->head != it) {
      /* Accessed since it went to the head: second chance. */
      lru_unlink_locked(l, it);
      lru_push_locked(l, it, now);
    } else if (pthread_mutex_trylock(stripe_of(it->hash)) == 0) {
      item **link = bucket_of(it->hash);
      while (*link != it) link = &(*link)->hnext;
      unlink_locked(link, it, true);
      pthread_mutex_unlock(stripe_of(it->hash));
      if (live) {
        ADD(S.evictions, 1);
        if (!LOAD(it->fetched)) ADD(S.evicted_unfetched, 1);
      } else {
        ADD(S.reclaimed, 1);
        if (!LOAD(it->fetched)) ADD(S.expired_unfetched, 1);
      }
      victim = it;
      break;
    }
    it = prev;
  }
  pthread_mutex_unlock(&l->lock);
  if (victim) item_retire(victim);
  return victim != NULL;
}

static bool evict_one(lru *own) {
  if (LOAD(own->count) > 0 && evict_from(own)) return true;
  /* Own class empty (or busy): the class whose tail is oldest. */
  lru *best = NULL;
  uint32_t best_time = UINT32_MAX;
  for (unsigned i = 0; i <= S.ncls; i++) {
    lru *l = i < S.ncls ? &S.cls[i].lru : &S.large_lru;
    if (l == own || LOAD(l->count) == 0) continue;
    pthread_mutex_lock(&l->lock);
    if (l->tail && l->tail->lru_time < best_time) {
      best_time = l->tail->lru_time;
      best = l;
    }
    pthread_mutex_unlock(&l->lock);
  }
  return best && evict_from(best);
}

item *store_alloc(const char *key, size_t nkey, uint32_t flags, rel_time_t exptime,
                  size_t nbytes) {
  if (!store_size_ok(nkey, nbytes) || nkey > KEY_MAX_LENGTH) {
    errno = E2BIG;
    return NULL;
  }
  size_t total = item_total(nkey, nbytes), cost;
  unsigned cls;
  if (total <= POOL_OBJ_MAX) {
    cls = S.cls_of[(total + 15) / 16];
    cost = S.cls[cls].stride;
  } else {
    cls = CLS_LARGE;
    cost = large_map_size(total);
  }
  lru *own = cls == CLS_LARGE ? &S.large_lru : &S.cls[cls].lru;
  for (int tries = 0; LOAD(S.mem_used) + cost > S.cfg.mem_limit; tries++) {
    if (tries >= 64 || !evict_one(own)) {
      errno = ENOMEM;
      return NULL;
    }
  }
  item *it;
  if (cls == CLS_LARGE) {
    it = mmap(NULL, cost, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (it == MAP_FAILED) it = NULL; else ADD(S.large_items, 1);
  } else {
    it = tp_pool_get(S.cls[cls].pool);
  }
  if (!it) {
    errno = ENOMEM;
    return NULL;
  }
  ADD(S.mem_used, cost);
  if (exptime != 0 && !LOAD(S.some_expiry)) STORE(S.some_expiry, 1);
  memset(it, 0, sizeof *it);
  it->exptime = exptime;
  it->flags = flags;
  it->nbytes = (uint32_t)nbytes;
  it->nkey = (uint8_t)nkey;
  it->cls = (uint8_t)cls;
  it->hash = store_hash(key, nkey);
  memcpy(it->data, key, nkey);
  return it;
}

void store_free_unlinked(item *it) {
  if (!it) return;
  SUB(S.mem_used, item_cost(it));
  item_release(it);
}

item *store_find(const char *key, size_t nkey, bool bump) {
  uint32_t h = store_hash(key, nkey);
  item *it = __atomic_load_n(bucket_of(h), __ATOMIC_ACQUIRE);
  while (it && !(it->hash == h && it->nkey == nkey && memcmp(it->data, key, nkey) == 0))
    it = __atomic_load_n(&it->hnext, __ATOMIC_ACQUIRE);
  if (!it) return NULL;
  rel_time_t now = store_now();
  if (!item_live(it, now)) return NULL;
  if (bump) {
    if (LOAD(it->atime) != now) STORE(it->atime, now);
    if (!LOAD(it->fetched)) STORE(it->fetched, 1);
  }
  return it;
}

/* Under the stripe lock: the link of the live item for key, or NULL; a
 * dead one is unlinked into *dead (retire it after unlocking). */
static item **find_live_locked(uint32_t h, const char *key, size_t nkey, rel_time_t now,
                               item **dead) {
  item **link = find_link(h, key, nkey);
  if (link && !item_live(*link, now)) {
    item *it = *link;
    unlink_locked(link, it, false);
    ADD(S.reclaimed, 1);
    if (!LOAD(it->fetched)) ADD(S.expired_unfetched, 1);
    *dead = it;
    return NULL;
  }
  return link;
}

enum store_result store_item(item *it, enum store_mode mode, uint64_t cas_in,
                             uint64_t *cas_out) {
  rel_time_t now = store_now();
  item *dead = NULL, *old = NULL, *fresh = it, *unused = NULL;
  enum store_result r = ST_STORED;
  pthread_mutex_t *lk = stripe_of(it->hash);
  pthread_mutex_lock(lk);
  item **link = find_live_locked(it->hash, it->data, it->nkey, now, &dead);
  old = link ? *link : NULL;
  switch (mode) {
    case MODE_SET: break;
    case MODE_ADD:
      if (old) r = ST_NOT_STORED;
      break;
    case MODE_REPLACE:
      if (!old) r = ST_NOT_STORED;
      break;
    case MODE_CAS:
      if (!old) r = ST_NOT_FOUND;
      else if (old->cas != cas_in) r = ST_EXISTS;
      break;
    case MODE_APPEND:
    case MODE_PREPEND:
      if (!old) {
        r = ST_NOT_STORED;
      } else if (cas_in != 0 && old->cas != cas_in) {
        r = ST_EXISTS;
      } else {
        size_t nb = old->nbytes + it->nbytes - 2;
        fresh = store_alloc(it->data, it->nkey, old->flags, LOAD(old->exptime), nb);
        if (!fresh) {
          r = ST_NOT_STORED;
          fresh = it;
          break;
        }
        char *d = item_value(fresh);
        if (mode == MODE_APPEND) {
          memcpy(d, item_value(old), old->nbytes - 2);
          memcpy(d + old->nbytes - 2, item_value(it), it->nbytes);
        } else {
          memcpy(d, item_value(it), it->nbytes - 2);
          memcpy(d + it->nbytes - 2, item_value(old), old->nbytes);
        }
        unused = it;
      }
      break;
  }
  if (r == ST_STORED) {
    link_locked(link, old, fresh, now);
    if (cas_out) *cas_out = fresh->cas;
  } else {
    unused = it;
  }
  pthread_mutex_unlock(lk);
  if (old && r == ST_STORED) item_retire(old);
  if (dead) item_retire(dead);
  if (unused) store_free_unlinked(unused);
  return r;
}

enum store_result store_delete(const char *key, size_t nkey, uint64_t cas_in) {
  uint32_t h = store_hash(key, nkey);
  rel_time_t now = store_now();
  item *dead = NULL, *gone = NULL;
  enum store_result r;
  pthread_mutex_t *lk = stripe_of(h);
  pthread_mutex_lock(lk);
  item **link = find_live_locked(h, key, nkey, now, &dead);
  if (!link) {
    r = ST_NOT_FOUND;
  } else if (cas_in != 0 && (*link)->cas != cas_in) {
    r = ST_EXISTS;
  } else {
    gone = *link;
    unlink_locked(link, gone, false);
    r = ST_STORED;
  }
  pthread_mutex_unlock(lk);
  if (gone) item_retire(gone);
  if (dead) item_retire(dead);
  return r;
}

enum store_result store_touch(const char *key, size_t nkey, rel_time_t exptime) {
  uint32_t h = store_hash(key, nkey);
  rel_time_t now = store_now();
  item *dead = NULL;
  pthread_mutex_t *lk = stripe_of(h);
  pthread_mutex_lock(lk);
  item **link = find_live_locked(h, key, nkey, now, &dead);
  if (link) {
    if (exptime != 0 && !LOAD(S.some_expiry)) STORE(S.some_expiry, 1);
    STORE((*link)->exptime, exptime);
    STORE((*link)->atime, now);
    STORE((*link)->fetched, 1);
  }
  pthread_mutex_unlock(lk);
  if (dead) item_retire(dead);
  return link ? ST_STORED : ST_NOT_FOUND;
}

enum store_result store_arith(const char *key, size_t nkey, bool incr, uint64_t delta,
                              uint64_t cas_in, bool vivify, uint64_t initial,
                              rel_time_t vivify_exptime, const rel_time_t *new_exptime,
                              uint64_t *out, uint64_t *cas_out, rel_time_t *exp_out) {
  uint32_t h = store_hash(key, nkey);
  rel_time_t now = store_now();
  item *dead = NULL, *old = NULL, *fresh = NULL;
  enum store_result r = ST_STORED;
  char buf[24];
  pthread_mutex_t *lk = stripe_of(h);
  pthread_mutex_lock(lk);
  item **link = find_live_locked(h, key, nkey, now, &dead);
  if (!link) {
    if (!vivify) {
      r = ST_NOT_FOUND;
      goto out;
    }
    int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)initial);
    fresh = store_alloc(key, nkey, 0, vivify_exptime, (size_t)n + 2);
    if (!fresh) {
      r = ST_NO_MEMORY;
      goto out;
    }
    memcpy(item_value(fresh), buf, (size_t)n);
    memcpy(item_value(fresh) + n, "\r\n", 2);
    *out = initial;
    link_locked(NULL, NULL, fresh, now);
    goto stored;
  }
  old = *link;
  if (cas_in != 0 && old->cas != cas_in) {
    r = ST_EXISTS;
    old = NULL;
    goto out;
  }
  /* memcached's safe_strtoull: a number (after optional spaces) followed
   * by a space or the "\r\n"; no sign. */
  const char *v = item_value(old);
  char *end;
  errno = 0;
  unsigned long long val = strtoull(v, &end, 10);
  if (old->nbytes <= 2 || errno == ERANGE || (end == v && *end != ' ') ||
      !(*end == ' ' || *end == '\r' || *end == '\n' || *end == '\t') ||
      memchr(v, '-', (size_t)(end - v)) != NULL) {
    r = ST_NOT_STORED;
    old = NULL;
    goto out;
  }
  if (incr) val += delta;
  else val = delta > val ? 0 : val - delta;
  int n = snprintf(buf, sizeof buf, "%llu", val);
  /* memcached rewrites in place when the number gets no longer, padding
   * with spaces: the value keeps its length. */
  size_t nb = (size_t)n + 2 <= old->nbytes ? old->nbytes : (size_t)n + 2;
  rel_time_t exp = new_exptime ? *new_exptime : LOAD(old->exptime);
  fresh = store_alloc(key, nkey, old->flags, exp, nb);
  if (!fresh) {
    r = ST_NO_MEMORY;
    old = NULL;
    goto out;
  }
  memcpy(item_value(fresh), buf, (size_t)n);
  memset(item_value(fresh) + n, ' ', nb - 2 - (size_t)n);
  memcpy(item_value(fresh) + nb - 2, "\r\n", 2);
  *out = val;
  link_locked(link, old, fresh, now);
stored:
  if (cas_out) *cas_out = fresh->cas;
  if (exp_out) *exp_out = LOAD(fresh->exptime);
out:
  pthread_mutex_unlock(lk);
  if (old) item_retire(old);
  if (dead) item_retire(dead);
  return r;
}

void store_flush(int64_t delay) {
  rel_time_t now = store_now();
  rel_time_t new_oldest = delay > 0 ? store_realtime(delay) : now;
  STORE(S.oldest_live, new_oldest - 1);
  if (new_oldest - 1 <= now) STORE(S.oldest_cas, ADD(S.next_cas, 1));
  else STORE(S.oldest_cas, 0);
  ADD(S.flush_gen, 1);
}

size_t store_crawl(bool whole) {
  /* Without either no item is dead: a pass would only read the index and
   * take its locks (3 % of a -t 1 server's CPU under memcaslap's sets,
   * which carry no expiry). */
  if (!whole && !LOAD(S.some_expiry) && LOAD(S.oldest_live) == 0) return 0;
  rel_time_t now = store_now();
  size_t n = whole ? S.nbuckets : (S.nbuckets / 64 ? S.nbuckets / 64 : 1), freed = 0;
  size_t pos = whole ? 0 : S.crawl_pos;
  item *batch[64];
  for (size_t i = 0; i < n; i++, pos++) {
    pos &= S.nbuckets - 1;
    item **bucket = &S.buckets[pos];
    if (__atomic_load_n(bucket, __ATOMIC_RELAXED) == NULL) continue;
    pthread_mutex_t *lk = stripe_of((uint32_t)pos);
    int nb = 0;
    pthread_mutex_lock(lk);
    for (item **link = bucket, *it; (it = *link) != NULL && nb < 64;) {
      if (!item_live(it, now)) {
        unlink_locked(link, it, false);
        ADD(S.reclaimed, 1);
        if (!LOAD(it->fetched)) ADD(S.expired_unfetched, 1);
        batch[nb++] = it;
      } else {
        link = &it->hnext;
      }
    }
    pthread_mutex_unlock(lk);
    for (int j = 0; j < nb; j++) item_retire(batch[j]);
    freed += (size_t)nb;
  }
  if (!whole) S.crawl_pos = pos & (S.nbuckets - 1);
  return freed;
}

rel_time_t store_oldest_live(uint64_t *gen) {
  *gen = LOAD(S.flush_gen);
  return LOAD(S.oldest_live);
}

void store_read_stats(store_stats *o) {
  o->curr_items = LOAD(S.curr_items);
  o->total_items = LOAD(S.total_items);
  o->bytes = LOAD(S.bytes);
  o->evictions = LOAD(S.evictions);
  o->reclaimed = LOAD(S.reclaimed);
  o->expired_unfetched = LOAD(S.expired_unfetched);
  o->evicted_unfetched = LOAD(S.evicted_unfetched);
  o->mem_used = LOAD(S.mem_used);
  o->mem_limit = S.cfg.mem_limit;
  o->hash_buckets = S.nbuckets;
  o->classes = S.ncls;
  o->large_items = LOAD(S.large_items);
}

/* For `stats tidepool`: the item pools, summed. */
void store_pool_totals(tp_pool_stats *sum, unsigned *npools) {
  memset(sum, 0, sizeof *sum);
  for (unsigned i = 0; i < S.ncls; i++) {
    tp_pool_stats ps;
    tp_pool_read_stats(S.cls[i].pool, &ps);
    sum->in_use += ps.in_use;
    sum->cached += ps.cached;
    sum->slabs += ps.slabs;
    sum->bytes_mapped += ps.bytes_mapped;
    sum->bytes_resident += ps.bytes_resident;
    sum->gets += ps.gets;
    sum->puts += ps.puts;
    sum->cache_hits += ps.cache_hits;
    sum->cache_misses += ps.cache_misses;
    sum->slabs_freed += ps.slabs_freed;
  }
  *npools = S.ncls;
}
