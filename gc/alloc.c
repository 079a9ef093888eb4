/*
 * Allocation: the bump allocators of a thread's record, holes and
 * regions, large objects, and tp_heap_alloc / tp_heap_alloc_array. The
 * layout of regions and objects is described in gc/heap_internal.h.
 *
 * Each thread has a record per heap (tp__mut) holding a bump
 * allocator over a "hole": a run of free lines in a region that the thread
 * owns alone. The fast path is: the thread-local record is for this heap,
 * the type is the one last validated, no collection is waiting, the object
 * fits the hole; then it stores the header word, sets
 * the start bit (the region belongs to this thread, so a plain
 * read-modify-write is race-free) and moves the cursor. Nothing is shared,
 * so nothing is atomic. Holes are zeroed when the thread takes them (a
 * fresh region straight from mmap is known to be zero and is not), so the
 * fast path needs no memset. When the hole is exhausted the slow path
 * accounts what was allocated to the heap's counters (relaxed atomics),
 * checks the pacer, and takes the next hole of its region, a recyclable
 * region (one with free lines after the last sweep), or a fresh region
 * from the pool. Objects over a line that do not fit the current hole go
 * to a second "overflow" allocator over empty regions (Immix's medium
 * objects), so a large-ish object never wastes a run of small holes.
 *
 * Why a stopped thread's allocations are visible to the collector: the
 * collector only runs while every attached thread is PARKED or BLOCKING.
 * A thread parks (or enters BLOCKING) under h->sp_lock after its last
 * store, and the collector reads the heap after waiting on that lock, so
 * each store happens-before the collector's reads. A thread only parks in
 * the slow path, never between writing a header and setting its start
 * bit, so every object the collector can find is complete.
 */
#define _GNU_SOURCE
#include "gc/heap_internal.h"

#include "core/list_internal.h"
#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/os_internal.h"
#include "pool/pool_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- allocation ---------------------------------------------------------------- */

/* 0 if t can be allocated, else -EINVAL. */
static int check_type(const tp_type *t) {
  if (!t || ((uintptr_t)t & 7) || ((uintptr_t)t >> TP__USER_ADDR_BITS)) return -EINVAL;
  if (t->size == 0 || (t->flags & ~(TP_TYPE_LEAF | TP_TYPE_CONSERVATIVE))) return -EINVAL;
  int kinds = (t->trace != NULL) + (t->ptr_offsets != NULL || t->n_ptr_offsets != 0) +
              !!(t->flags & TP_TYPE_LEAF) + !!(t->flags & TP_TYPE_CONSERVATIVE);
  if (kinds != 1) return -EINVAL;
  if (t->ptr_offsets || t->n_ptr_offsets) {
    if (!t->ptr_offsets || !t->n_ptr_offsets || (t->size & 7)) return -EINVAL;
    for (size_t i = 0; i < t->n_ptr_offsets; i++)
      if ((t->ptr_offsets[i] & 7) || t->ptr_offsets[i] > t->size - 8) return -EINVAL;
  }
  return 0;
}

/* Objects allocated in [from, to) of one buffer: their start bits. (The
 * fast path counts nothing; a buffer's hole held no start bit before.) A
 * slot starting at c (= 8 mod 16) has its start bit in granule (c - r)/16
 * or the next one, so the granules [from/16, to/16) hold exactly the
 * slots of [from, to). */
static uint64_t count_starts(const tp_heap *h, const char *from, const char *to) {
  if (!from || to <= from) return 0;
  uintptr_t r = (uintptr_t)from & h->region_mask;
  size_t g0 = ((uintptr_t)from - r) >> TP__GRAN_SHIFT, g1 = ((uintptr_t)to - r) >> TP__GRAN_SHIFT;
  const struct tp__bitpair *bits = tp__region_bits(h, (struct tp__region *)r);
  uint64_t n = 0;
  for (size_t w = g0 >> 6, wl = (g1 - 1) >> 6; w <= wl; w++) {
    uint64_t word = bits[w].start;
    if (w == g0 >> 6) word &= ~(uint64_t)0 << (g0 & 63);
    if (w == wl) word &= (((uint64_t)2) << ((g1 - 1) & 63)) - 1; /* 63: all (wraps to 0 - 1) */
    n += (uint64_t)__builtin_popcountll(word);
  }
  return n;
}

/* Accounts what m allocated since the last call to the heap's counters. */
static void account(tp_heap *h, tp__mut *m) {
  uint64_t b = (uint64_t)(m->cursor - m->acct) + (uint64_t)(m->ocursor - m->oacct);
  uint64_t objs = count_starts(h, m->acct, m->cursor) + count_starts(h, m->oacct, m->ocursor);
  m->acct = m->cursor;
  m->oacct = m->ocursor;
  if (b) {
    tp__counter_add(&h->alloc_since, (int64_t)b);
    tp__counter_add(&h->total_alloc, (int64_t)b);
  }
  if (objs) tp__counter_add(&h->objs_alloc, (int64_t)objs);
}

void tp__gc_retire_tlab(tp_heap *h, tp__mut *m) {
  account(h, m);
  m->region = NULL; /* it and the overflow region become full regions */
  m->cursor = m->limit = m->acct = NULL;
  m->ocursor = m->olimit = m->oacct = NULL;
}

/* Zeroes [a, b) a page at a time, testing before each page whether a
 * collection wants the threads stopped; returns where it stopped (b when
 * done). Zeroing memory the OS has not backed yet (a hole whose pages the
 * pool gave back, a region cached for reuse) costs a page fault per page:
 * on the VMs we measure on one 256 KiB hole took 3 ms (perf: the memset's
 * time all in clear_page_erms under the fault), and a stop of the world
 * waited for all of it. Between pages the wait for this thread is one
 * page's fault. */
#define ZERO_STEP ((uintptr_t)4096) /* a page: what one fault backs */
static char *zero_polling(const tp_heap *h, char *a, char *b) {
  while (a < b) {
    if (TP_UNLIKELY(tp__stw_wanted(h))) return a;
    char *e = (char *)(((uintptr_t)a + ZERO_STEP) & ~(ZERO_STEP - 1));
    if (e > b) e = b;
    memset(a, 0, (size_t)(e - a));
    a = e;
  }
  return b;
}

/* The first cursor of a buffer that starts at a (line-aligned): headers
 * sit at 8 mod 16. */
static char *first_cursor(char *a) { return a + 8; }

/* next_hole's results. */
enum { HOLE_NONE, HOLE_OPEN, HOLE_STOPPED };

/* Takes the next hole of m->region, zeroed: HOLE_OPEN. HOLE_NONE if it has
 * none left. HOLE_STOPPED if a collection asked the threads to stop while
 * the hole was being zeroed (zero_polling): the hole is left free (its
 * lines untouched, part of it zeroed, which free memory may be) and
 * m->next_line at its start, and the caller returns to the allocation
 * loop, which parks; after the pause the search starts again, with the
 * mark state the pause left. While a mark runs (TP__F_MARK, stable while
 * this thread runs: it changes only with every thread stopped) the hole
 * is shrunk to whole bitmap words (8 lines, 1 KiB) and born black like a
 * new region (see new_region): its mark bits set, its lines at the epoch,
 * once it is zeroed. Whole words, because the marker writes the mark words of the
 * region's old objects without atomics (gc/mark.c): a word it may write
 * must not hold a bit of ours; a word inside a hole holds no old object,
 * and the marker reads one only after seeing a start bit we set (release)
 * after the mark bits. The line bytes are read with relaxed atomics: the
 * marker writes those of the old objects. */
static int next_hole(tp_heap *h, tp__mut *m) {
  bool black = __atomic_load_n(&h->flags, __ATOMIC_RELAXED) & TP__F_MARK;
  struct tp__region *r = m->region;
  uint8_t *lines = tp__region_lines(h, r);
  uint32_t i = m->next_line, n = h->nlines, j;
  for (;;) {
    while (i < n && __atomic_load_n(&lines[i], __ATOMIC_RELAXED)) i++;
    if (i >= n) {
      m->next_line = n;
      return HOLE_NONE;
    }
    j = i;
    while (j < n && !__atomic_load_n(&lines[j], __ATOMIC_RELAXED)) j++;
    if (!black) break;
    uint32_t a = (i + 7) & ~(uint32_t)7, b = j & ~(uint32_t)7;
    if (a < b) {
      i = a;
      j = b;
      break;
    }
    i = j;
  }
  char *lo = (char *)r + ((size_t)i << TP__LINE_SHIFT), *hi = (char *)r + ((size_t)j << TP__LINE_SHIFT);
  TP_UNPOISON(lo, (size_t)(hi - lo));
  if (zero_polling(h, lo, hi) != hi) {
    TP_POISON(lo, (size_t)(hi - lo));
    m->next_line = i;
    return HOLE_STOPPED;
  }
  if (black) {
    struct tp__bitpair *bits = tp__region_bits(h, r);
    for (uint32_t w = i / 8; w < j / 8; w++) bits[w].mark = ~(uint64_t)0;
    for (uint32_t k = i; k < j; k++) __atomic_store_n(&lines[k], h->mark_epoch, __ATOMIC_RELAXED);
  }
  m->next_line = j;
  m->cursor = m->acct = first_cursor(lo);
  m->limit = hi;
  return HOLE_OPEN;
}

/* A region off the recyclable stack (it has a free line), or NULL. */
static struct tp__region *take_recyclable(tp_heap *h, tp__mut *m) {
  tp__mut_lock_heap(h, m);
  struct tp__region *r = h->recyclable;
  if (r) {
    h->recyclable = r->rnext;
    r->rnext = NULL;
  }
  pthread_mutex_unlock(&h->lock);
  return r;
}

/* A new region from the pool for m: its whole data area is free and
 * zero (and, as the pool gives it, not poisoned: the caller makes it one
 * buffer). NULL + ENOMEM. */
static struct tp__region *new_region(tp_heap *h, tp__mut *m) {
  struct tp__region *r = tp_pool_get(h->pool);
  if (!r) {
    errno = ENOMEM;
    return NULL;
  }
  /* The pool never writes into a region it holds; we always leave a
   * nonzero magic in one we give back, and debug builds poison it. So a
   * zero magic means the memory came straight from mmap, already zero.
   * One from the pool's cache is zeroed here, while no one else can see
   * it, so this thread may stop for a collection halfway (zero_polling). */
  if (r->magic != 0) {
    memset(r, 0, h->data_off);
    char *a = (char *)r + h->data_off, *e = (char *)r + h->region_size;
    while ((a = zero_polling(h, a, e)) != e) tp__gc_park(h, m);
  }
  r->magic = TP__REGION_MAGIC;
  tp__mut_lock_heap(h, m);
  /* Allocate black: while a mark runs, a new region is born with every
   * mark bit set and every line at the mark's epoch, so what is allocated
   * in it survives the sweep and the marker, which finds those bits set,
   * never scans it (gc/mark.c). Written before the region is published in
   * the map (release). TP__F_MARK and the epoch change only while every
   * attached thread is stopped, and tp__mut_lock_heap returns this one
   * running with no stop wanted, so what it reads here holds until its
   * next safepoint. */
  if (__atomic_load_n(&h->flags, __ATOMIC_RELAXED) & TP__F_MARK) {
    struct tp__bitpair *bits = tp__region_bits(h, r);
    for (size_t w = h->first_word; w < h->nwords; w++) bits[w].mark = ~(uint64_t)0;
    memset(tp__region_lines(h, r) + h->first_line, h->mark_epoch, h->nlines - h->first_line);
  }
  int rc = tp__map_set_range(h, (uintptr_t)r, h->region_size, r);
  if (rc == 0) {
    TP__LIST_PUSH(h->regions, r, prev, next);
    tp__counter_add(&h->nregions, 1);
  }
  pthread_mutex_unlock(&h->lock);
  if (rc) {
    TP_UNPOISON(r, h->region_size);
    tp_pool_put(h->pool, r);
    errno = ENOMEM;
    return NULL;
  }
  return r;
}

/* heap_alloc (with `extra` more) has reached the pacer's trigger
 * (gc/pacing.c): ask for a cycle, and past the goal assist. */
static inline bool should_collect(const tp_heap *h, uint64_t extra) {
  return tp__heap_alloc_now(h) + extra >= tp__counter_get(&h->gc_trigger);
}

/* Gives m room for an object of `adv` bytes. false + errno on failure. */
static bool refill(tp_heap *h, tp__mut *m, size_t adv) {
  account(h, m);
  if (TP_UNLIKELY(tp__counter_get(&h->fin_pending)) && !tp__tls_in_finalizers) {
    /* Finalizers a cycle of the marker thread queued run on mutators. */
    tp__gc_after_collection(h);
    return true; /* the caller retries: they may have used the buffers */
  }
  if (should_collect(h, 0) && tp__gc_trigger(h, m)) {
    tp__gc_after_collection(h);
    return true; /* the caller retries: buffers were retired */
  }
  /* While a mark runs, holes are born black (next_hole, new_region: each
   * reads the mark flag itself, after any wait for h->lock). */
  if (adv > TP__LINE) {
    /* Medium object: a new overflow region (the previous one becomes a
     * full region). */
    struct tp__region *r = new_region(h, m);
    if (!r) return false;
    m->olimit = (char *)r + h->region_size;
    m->ocursor = m->oacct = first_cursor((char *)r + h->data_off);
    return true;
  }
  /* HOLE_OPEN, or HOLE_STOPPED: the caller's loop parks, then retries. */
  if (m->region && next_hole(h, m) != HOLE_NONE) return true;
  /* The next region; the previous one becomes a full region. */
  struct tp__region *r;
  while ((r = take_recyclable(h, m))) {
    m->region = r;
    m->next_line = h->first_line;
    if (next_hole(h, m) != HOLE_NONE) return true;
    /* Marking and no whole-word hole: it stays a full region until the
     * sweep. */
  }
  if (!(r = new_region(h, m))) return false;
  m->region = r;
  m->next_line = h->nlines; /* its one hole, the whole data area, is taken */
  m->limit = (char *)r + h->region_size;
  m->cursor = m->acct = first_cursor((char *)r + h->data_off);
  return true;
}

/* Bumps adv bytes from [*cur, lim) and writes the header; the payload or
 * NULL. */
static inline void *bump(tp_heap *h, char **cur, char *lim, size_t adv, uintptr_t hdr,
                         bool array) {
  char *c = *cur;
  if ((size_t)(lim - c) < adv) return NULL;
  *cur = c + adv;
  char *hp = array ? c + 16 : c;
  *(uintptr_t *)hp = hdr;
  char *r = (char *)((uintptr_t)c & h->region_mask);
  size_t g = (size_t)(hp - 8 - r) >> TP__GRAN_SHIFT;
  struct tp__bitpair *bp = tp__region_bits(h, (struct tp__region *)r) + (g >> 6);
  /* release: a concurrent marker that sees the bit (acquire,
   * tp__start_word) sees the header. Only this thread writes start bits of
   * its buffer's region, so load-or-store loses nothing. */
  __atomic_store_n(&bp->start, __atomic_load_n(&bp->start, __ATOMIC_RELAXED) | (uint64_t)1 << (g & 63),
                   __ATOMIC_RELEASE);
  return hp + 8;
}

static void *alloc_large(tp_heap *h, tp__mut *m, const tp_type *t, size_t n, size_t payload,
                         bool array) {
  size_t pay8 = tp__round_up(payload, 8);
  size_t bytes = sizeof(struct tp__large) + pay8;
  size_t map = tp__round_up(bytes, tp__os_page_size());
  if (should_collect(h, bytes) && tp__gc_trigger(h, m))
    tp__gc_after_collection(h); /* it retired (and accounted) m's buffers */
  struct tp__large *l = tp__os_map(map, h->region_size);
  if (!l) {
    errno = ENOMEM;
    return NULL;
  }
  l->map_bytes = map;
  l->bytes = tp__round_up(bytes, 16);
  l->payload = pay8;
  l->n = n;
  l->hdr = (uintptr_t)t | TP__HDR_LARGE | (array ? TP__HDR_ARRAY : 0);
  tp__mut_lock_heap(h, m); /* then the mark flag: see new_region */
  /* Allocate black (see new_region). */
  l->marked = (__atomic_load_n(&h->flags, __ATOMIC_RELAXED) & TP__F_MARK) ? 1 : 0;
  int rc = tp__map_set_range(h, (uintptr_t)l, map, (void *)((uintptr_t)l | 1));
  if (rc == 0) {
    TP__LIST_PUSH(h->large, l, prev, next);
    tp__counter_add(&h->nlarge, 1);
    tp__counter_add(&h->large_map_bytes, (int64_t)map);
  }
  pthread_mutex_unlock(&h->lock);
  if (rc) {
    tp__os_unmap(l, map);
    errno = ENOMEM;
    return NULL;
  }
  tp__counter_add(&h->alloc_since, (int64_t)l->bytes);
  tp__counter_add(&h->total_alloc, (int64_t)l->bytes);
  tp__counter_add(&h->objs_alloc, 1);
  return l + 1;
}

/* Registers obj for finalization. false + ENOMEM. */

TP_NOINLINE static void *alloc_slow(tp_heap *h, const tp_type *t, size_t n, bool array) {
  if (!h || h->magic != TP__HEAP_MAGIC || h->destroying || !t) {
    errno = EINVAL;
    return NULL;
  }
  tp__mut *m = tp__find_mut(h);
  /* The fast paths' cached type was checked when it was cached: a refill
   * (or an array of it) need not walk its pointer offsets again. */
  if (!(m && m->last_type == t) && check_type(t)) {
    errno = EINVAL;
    return NULL;
  }
  size_t payload = t->size;
  if (array && __builtin_mul_overflow(n, t->size, &payload)) {
    errno = ENOMEM;
    return NULL;
  }
  if (payload > ((size_t)1 << 46)) {
    errno = ENOMEM;
    return NULL;
  }
  if (!m && !(m = tp__mut_create(h))) return NULL;
  if (!m->attach_depth) tp__mut_attach(h, m);
  if (m->state == TP__MS_BLOCKING)
    tp__fatal("tp_heap_alloc", h, "allocation between tp_heap_blocking_enter and _leave");
  size_t k = (payload + 8 + TP__GRAN - 1) >> TP__GRAN_SHIFT;
  size_t adv = (k << TP__GRAN_SHIFT) + (array ? 16 : 0);
  if (adv > h->small_max) {
    if (tp__stw_wanted(h)) tp__gc_park(h, m);
    void *p = alloc_large(h, m, t, n, payload, array);
    if (p && t->finalize && !tp__fin_register(h, p)) return NULL;
    return p;
  }
  uintptr_t hdr = (uintptr_t)t | (array ? TP__HDR_ARRAY : 0) | ((uintptr_t)k << TP__HDR_K_SHIFT);
  void *p;
  for (;;) {
    /* relaxed: a hint; tp__gc_park re-checks under sp_lock. */
    if (tp__stw_wanted(h)) tp__gc_park(h, m);
    p = bump(h, &m->cursor, m->limit, adv, hdr, array);
    if (!p && adv > TP__LINE) p = bump(h, &m->ocursor, m->olimit, adv, hdr, array);
    if (p) break;
    if (!refill(h, m, adv)) return NULL;
  }
  if (array) *(size_t *)((char *)p - 16) = n;
  if (t->finalize) {
    if (!tp__fin_register(h, p)) return NULL; /* the object is garbage */
  } else {
    /* The cache of both fast paths: t is valid and has no finalizer, and
     * one object of it is small (always, unless this was an array of none). */
    size_t k1 = (t->size + 8 + TP__GRAN - 1) >> TP__GRAN_SHIFT;
    if ((k1 << TP__GRAN_SHIFT) <= h->small_max) {
      m->last_type = t;
      m->last_hdr = (uintptr_t)t | ((uintptr_t)k1 << TP__HDR_K_SHIFT);
      m->last_slot = k1 << TP__GRAN_SHIFT;
    }
  }
  return p;
}

void *tp_heap_alloc(tp_heap *h, const tp_type *t) {
  tp__mut *m = tp__tls_mut;
  /* The record is this heap's, the type was validated by the slow path
   * (and has no finalizer), and no collection is waiting (relaxed: a
   * late-seen request only delays this thread's stop to its next slow
   * path; the collector waits for it). */
  if (TP_LIKELY(m != NULL) && TP_LIKELY(m->heap == h) && TP_LIKELY(m->last_type == t) &&
      TP_LIKELY(!tp__stw_wanted(h))) {
    void *p = bump(h, &m->cursor, m->limit, m->last_slot, m->last_hdr, false);
    if (TP_LIKELY(p != NULL)) return p;
  }
  return alloc_slow(h, t, 1, false);
}

void *tp_heap_alloc_array(tp_heap *h, const tp_type *t, size_t n) {
  tp__mut *m = tp__tls_mut;
  size_t payload;
  /* As tp_heap_alloc's, and the array is small: alloc_slow's slot is
   * adv = 16 * ceil((payload + 8) / 16) + 16, small when adv <= small_max.
   * small_max (a quarter of a power of two >= 32 KiB) is a multiple of 16,
   * so that holds exactly when payload + 8 <= small_max - 16. */
  if (TP_LIKELY(m != NULL) && TP_LIKELY(m->heap == h) && TP_LIKELY(m->last_type == t) &&
      TP_LIKELY(!tp__stw_wanted(h)) &&
      TP_LIKELY(!__builtin_mul_overflow(n, t->size, &payload)) &&
      TP_LIKELY(payload <= h->small_max - 24)) {
    size_t k = (payload + 8 + TP__GRAN - 1) >> TP__GRAN_SHIFT;
    void *p = bump(h, &m->cursor, m->limit, (k << TP__GRAN_SHIFT) + 16,
                   (uintptr_t)t | TP__HDR_ARRAY | ((uintptr_t)k << TP__HDR_K_SHIFT), true);
    if (TP_LIKELY(p != NULL)) {
      *(size_t *)((char *)p - 16) = n;
      return p;
    }
  }
  return alloc_slow(h, t, n, true);
}
