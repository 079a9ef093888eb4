/*
 * The collection: stop the world, mark, verify, sweep, pace.
 *
 * Stopping. The collecting thread sets h->stw under h->sp_lock and waits
 * on cv_parked until every attached thread other than itself is PARKED
 * (stopped at a safepoint, waiting on cv_resume) or BLOCKING (inside
 * tp_heap_blocking_enter/_leave, promising not to touch the heap). Both
 * transitions happen under sp_lock after the thread recorded where its
 * stack ends and spilled its callee-saved registers into a frame above
 * that point (__builtin_unwind_init in a noinline wrapper), so the
 * collector sees every heap pointer the thread holds: caller-saved
 * registers are dead across the call by the ABI, callee-saved ones are in
 * the scanned frames (or, for BLOCKING, copied into the record). Attach,
 * detach and blocking_leave wait while h->stw is set, so the set of
 * running threads cannot grow during a collection.
 *
 * Marking (tri-color). White: mark bit clear. Gray: mark bit set and the
 * object is on the gray stack (or flagged pending after an overflow).
 * Black: mark bit set and scanned. Roots are precise slots, conservative
 * ranges, the stopped threads' stacks and registers, and objects queued
 * for or running their finalizer. Marking an object sets its bit (in the
 * region's side bitmap; large objects have a flag) and pushes it; popping
 * it scans its fields, marking what they point to. The gray stack has a
 * fixed capacity: an object that does not fit keeps its mark bit and gets
 * a pend bit (its region an overflow flag); when the stack is empty, the
 * pending objects are scanned, region by region, until no overflow
 * happened. No recursion anywhere. Invariant: no black object points to a
 * white one (the world is stopped, so mutators cannot break it); at the
 * end there is no gray object, so every white object is unreachable.
 *
 * Lines are marked when an object is scanned: every line it overlaps gets
 * the collection's epoch. Sweeping then needs no object walk: a region's
 * start bits become start & mark (dead objects vanish from the conservative
 * lookup, so a stale pointer can never reach a freed object), its free
 * lines are those without the epoch, a region with no live line goes back
 * to the pool (O(1): one tp_pool_put), one with some goes on the recyclable
 * stack for the allocators' holes.
 *
 * Weak references are cleared after the roots are marked, before
 * finalizable objects are resurrected: a weak reference reads NULL from
 * the collection that finds its target unreachable on. Then every object
 * with a finalizer that is still white is moved to the finalizer queue
 * and marked from (it and what it reaches survive until the finalizer has
 * run; the queue is a root). Finalizers run after the world restarts, on
 * the collecting thread, outside every heap lock (gc/heap.c).
 *
 * Verification (TIDEPOOL_GC_CHECKMARK=1, like Go's gccheckmark): after marking,
 * a second traversal from the same roots with its own visited bits and an
 * unbounded malloc'd stack (so it shares neither the bounded stack nor its
 * overflow path with the real marking) aborts if it reaches an object
 * whose mark bit is clear. Its visited bits are the pend bitmaps and the
 * large objects' overflow flags: marking ends with all of them clear (the
 * last drain_overflow round found none set), and the check never
 * overflows; it clears them again when done.
 */
#define _GNU_SOURCE
#include <tidepool/epoch.h>

#include "gc/heap_internal.h"

#include "core/list_internal.h"
#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/os_internal.h"
#include "pool/pool_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

struct marker {
  tp_heap *h;
  uintptr_t lo, span; /* [h->lo, h->hi): nothing of the heap is outside */
  uintptr_t *st;      /* the gray stack (payload addresses) */
  size_t top, cap;
  bool check;         /* checkmark traversal (growable stack) */
  bool overflowed;    /* pend bits set since the last drain_overflow round */
  bool any_overflow;  /* ... ever in this collection */
  uint8_t epoch;
  uint64_t bytes, objs;
};

struct tp_tracer {
  struct marker *mk;
};

/* ---- finding objects ------------------------------------------------------- */

/* The longest backward search for a small object's start bit: one bitmap word
 * covers 64 granules (1 KiB), and a small object spans at most small_max bytes. */
static inline size_t max_back_words(const tp_heap *h) {
  return h->small_max / (64 * TP__GRAN) + 1;
}

/* The object containing address a: returns its payload and sets *rp and
 * *gp (start granule) for a small object, *lp for a large one; 0 if a is
 * in no object of h. O(1): one map lookup, then a backward search over at
 * most max_back_words(h) bitmap words. */
static inline uintptr_t find_obj(const tp_heap *h, uintptr_t a, struct tp__region **rp,
                                 struct tp__large **lp, size_t *gp) {
  void *e = tp__map_get(h, a);
  if (!e) return 0;
  if ((uintptr_t)e & 1) {
    struct tp__large *l = (struct tp__large *)((uintptr_t)e & ~(uintptr_t)1);
    uintptr_t p = (uintptr_t)(l + 1);
    if (a < p || a >= p + l->payload) return 0;
    *lp = l;
    *rp = NULL;
    return p;
  }
  struct tp__region *r = e;
  uintptr_t base = (uintptr_t)r;
  if (a < base + h->data_off + 8) return 0;
  size_t g = (size_t)(a - 8 - base) >> TP__GRAN_SHIFT;
  size_t w = g >> 6;
  const struct tp__bitpair *bits = tp__region_bits(h, r);
  uint64_t sw = bits[w].start;
  if (((sw >> (g & 63)) & 1) && a == base + (g << TP__GRAN_SHIFT) + 16) {
    /* A pointer to the payload start of an object (the precise case):
     * inside it whatever its size, so its header is not read here. */
    *rp = r;
    *lp = NULL;
    *gp = g;
    return a;
  }
  /* Bits at or below g (g & 63 == 63: all of them; the shift wraps to 0). */
  uint64_t word = sw & ((((uint64_t)2) << (g & 63)) - 1);
  if (!word) {
    size_t back = max_back_words(h);
    size_t wmin = w > back ? w - back : 0;
    if (wmin < h->first_word) wmin = h->first_word;
    do {
      if (w <= wmin) return 0;
      word = bits[--w].start;
    } while (!word);
  }
  size_t gs = (w << 6) + 63 - (size_t)__builtin_clzll(word);
  uintptr_t hp = base + (gs << TP__GRAN_SHIFT) + 8;
  uintptr_t hdr = *(const uintptr_t *)hp;
  if (a >= hp + ((hdr >> TP__HDR_K_SHIFT) << TP__GRAN_SHIFT)) return 0;
  *rp = r;
  *lp = NULL;
  *gp = gs;
  return hp + 8;
}

uintptr_t tp__gc_find(const tp_heap *h, uintptr_t a) {
  struct tp__region *r;
  struct tp__large *l;
  size_t g;
  return find_obj(h, a, &r, &l, &g);
}

/* Whether the object with payload p (an object of h) is marked. */
static bool is_marked(const tp_heap *h, uintptr_t p) {
  void *e = tp__map_get(h, p);
  if (!e) return false;
  if ((uintptr_t)e & 1) return ((struct tp__large *)((uintptr_t)e & ~(uintptr_t)1))->marked;
  struct tp__region *r = e;
  size_t g = (size_t)(p - 8 - (uintptr_t)r) >> TP__GRAN_SHIFT;
  return (tp__region_bits(h, r)[g >> 6].mark >> (g & 63)) & 1;
}

/* ---- marking ------------------------------------------------------------------ */

static void push_overflow(struct marker *mk, struct tp__region *r, struct tp__large *l,
                          size_t g) {
  mk->overflowed = true;
  mk->any_overflow = true;
  if (r) {
    tp__region_pend(mk->h, r)[g >> 6] |= (uint64_t)1 << (g & 63);
    r->overflow = 1;
  } else {
    l->overflow = 1;
  }
}

static TP_NOINLINE void check_push_slow(struct marker *mk, uintptr_t p) {
  size_t cap = mk->cap * 2;
  uintptr_t *st = tp__realloc(mk->st, cap * sizeof *st);
  if (!st) tp__fatal("tp_heap_collect", NULL, "checkmark: out of memory");
  mk->st = st;
  mk->cap = cap;
  mk->st[mk->top++] = p;
}

/* Marks the object containing address a (if any) gray. */
static inline void mark_addr(struct marker *mk, uintptr_t a) {
  if (a - mk->lo >= mk->span) return;
  struct tp__region *r;
  struct tp__large *l;
  size_t g = 0;
  uintptr_t p = find_obj(mk->h, a, &r, &l, &g);
  if (!p) return;
  if (r) {
    struct tp__bitpair *bp = tp__region_bits(mk->h, r) + (g >> 6);
    uint64_t bit = (uint64_t)1 << (g & 63);
    if (bp->mark & bit) return;
    bp->mark |= bit;
  } else {
    if (l->marked) return;
    l->marked = 1;
  }
  if (TP_LIKELY(mk->top < mk->cap))
    mk->st[mk->top++] = p;
  else
    push_overflow(mk, r, l, g);
}

/* Checkmark: visits the object containing a; aborts if it is unmarked. */
static void check_addr(struct marker *mk, uintptr_t a) {
  if (a - mk->lo >= mk->span) return;
  struct tp__region *r;
  struct tp__large *l;
  size_t g = 0;
  uintptr_t p = find_obj(mk->h, a, &r, &l, &g);
  if (!p) return;
  if (r) {
    uint64_t *seen = tp__region_pend(mk->h, r) + (g >> 6); /* see checkmark() */
    uint64_t bit = (uint64_t)1 << (g & 63);
    if (*seen & bit) return;
    *seen |= bit;
    if (!(tp__region_bits(mk->h, r)[g >> 6].mark & bit))
      tp__fatal("tp_heap_collect", (void *)p,
                "checkmark: a reachable object was not marked (collector bug)");
  } else {
    if (l->overflow) return;
    l->overflow = 1;
    if (!l->marked)
      tp__fatal("tp_heap_collect", (void *)p,
                "checkmark: a reachable large object was not marked (collector bug)");
  }
  if (mk->top < mk->cap)
    mk->st[mk->top++] = p;
  else
    check_push_slow(mk, p);
}

/* check: mk->check, or a constant where the caller knows it. */
static inline void visit_as(struct marker *mk, uintptr_t a, bool check) {
  if (check)
    check_addr(mk, a);
  else
    mark_addr(mk, a);
}

void tp_trace(tp_tracer *t, void *ptr) {
  if (t && ptr) visit_as(t->mk, (uintptr_t)ptr, t->mk->check);
}

/* Every aligned word of [lo, hi) as a possible pointer. Stacks of other
 * threads and user ranges may hold redzones or be written by a BLOCKING
 * thread's own frame (values it may not use as heap pointers): not
 * instrumented. */
__attribute__((no_sanitize_address, no_sanitize_thread)) static void
scan_words(struct marker *mk, const char *lo, const char *hi) {
  const uintptr_t *p = (const uintptr_t *)tp__round_up((uintptr_t)lo, sizeof(uintptr_t));
  const uintptr_t *end = (const uintptr_t *)((uintptr_t)hi & ~(uintptr_t)(sizeof(uintptr_t) - 1));
  const bool check = mk->check;
  for (; p < end; p++) visit_as(mk, *p, check);
}

/* Gives the lines a small object overlaps the epoch: from that of its
 * start granule (H - 8, payload p - 16) to that of its last byte (its span
 * is 16k bytes from H). base: its region. */
static inline void mark_lines(uint8_t *lines, uintptr_t base, uintptr_t p, size_t span,
                              uint8_t epoch) {
  size_t l0 = (p - 16 - base) >> TP__LINE_SHIFT, l1 = (p - 9 + span - base) >> TP__LINE_SHIFT;
  lines[l0] = epoch;
  for (size_t i = l0 + 1; i <= l1; i++) lines[i] = epoch;
}

/* Scans the object with payload p: marks its lines and accounts it (real
 * marking only), then visits its references. */
static inline void scan(struct marker *mk, uintptr_t p, bool check) {
  tp_heap *h = mk->h;
  uintptr_t hdr = *(const uintptr_t *)(p - 8);
  const tp_type *t = tp__hdr_type(hdr);
  size_t n = (hdr & TP__HDR_ARRAY) ? *(const size_t *)(p - 16) : 1; /* small or large */
  size_t payload;
  if (TP_UNLIKELY(hdr & TP__HDR_LARGE)) {
    struct tp__large *l = (struct tp__large *)(p & h->region_mask);
    payload = l->payload;
    if (!check) {
      mk->bytes += l->bytes;
      mk->objs++;
    }
  } else {
    size_t span = (size_t)(hdr >> TP__HDR_K_SHIFT) << TP__GRAN_SHIFT;
    payload = span - 8;
    if (!check) {
      uintptr_t base = p & h->region_mask;
      mark_lines(tp__region_lines(h, (struct tp__region *)base), base, p, span, mk->epoch);
      mk->bytes += span + ((hdr & TP__HDR_ARRAY) ? 16 : 0);
      mk->objs++;
    }
  }
  unsigned flags = t->flags;
  if (flags & TP_TYPE_LEAF) return;
  if (flags & TP_TYPE_CONSERVATIVE) {
    /* Last word first, for the same reason as below. */
    const uintptr_t *w = (const uintptr_t *)p, *end = (const uintptr_t *)(p + (payload & ~(size_t)7));
    while (end > w) visit_as(mk, *--end, check);
    return;
  }
  size_t esz = t->size;
  if (t->ptr_offsets) {
    /* Last field first: the gray stack is LIFO, so the first field's
     * target is scanned next. Structures built recursively are laid out
     * in allocation (pre)order, and this walks them in the same order,
     * which is what the hardware prefetcher follows. */
    const size_t *off = t->ptr_offsets;
    size_t k = t->n_ptr_offsets;
    for (uintptr_t e = p + (n - 1) * esz; n; n--, e -= esz)
      for (size_t j = k; j-- > 0;) {
        uintptr_t v = *(const uintptr_t *)(e + off[j]);
        if (v) visit_as(mk, v, check);
      }
    return;
  }
  struct tp_tracer tr = {mk};
  for (size_t i = 0; i < n; i++, p += esz) t->trace((void *)p, &tr);
}

/* Empties the gray stack. Small objects of ptr_offsets and leaf types --
 * the bulk of most heaps -- are scanned here with the loop's state in
 * registers and a one-entry cache of the last map lookup (neighbours
 * usually share a region); pointers to payload starts are marked without
 * reading the target's memory (its start bit says it is an object). Other
 * objects and interior pointers take the general path (scan, mark_addr). */
static void drain(struct marker *mk) {
  tp_heap *h = mk->h;
  const uintptr_t lo = mk->lo, span = mk->span, mask = h->region_mask;
  const size_t bits_off = h->bits_off, lines_off = h->lines_off, data_off = h->data_off;
  const uint8_t epoch = mk->epoch;
  uintptr_t *const st = mk->st;
  const size_t cap = mk->cap;
  size_t top = mk->top;
  uint64_t bytes = 0, objs = 0;
  uintptr_t cbase = 1; /* no region starts at 1 */
  void *centry = NULL;
  while (top) {
    uintptr_t p = st[--top];
    uintptr_t hdr = *(const uintptr_t *)(p - 8);
    const tp_type *t = tp__hdr_type(hdr);
    if (TP_UNLIKELY((hdr & TP__HDR_LARGE) || t->trace || (t->flags & TP_TYPE_CONSERVATIVE))) {
      mk->top = top;
      scan(mk, p, false);
      top = mk->top;
      continue;
    }
    size_t sb = (size_t)(hdr >> TP__HDR_K_SHIFT) << TP__GRAN_SHIFT;
    uintptr_t base = p & mask;
    mark_lines((uint8_t *)(base + lines_off), base, p, sb, epoch);
    size_t n = 1;
    if (hdr & TP__HDR_ARRAY) {
      n = *(const size_t *)(p - 16);
      sb += 16;
    }
    bytes += sb;
    objs++;
    if (t->flags & TP_TYPE_LEAF) continue;
    /* Last field first: the gray stack is LIFO, so the first field's
     * target is scanned next. Structures built recursively are laid out
     * in allocation (pre)order, and this walks them in that order, which
     * is what the hardware prefetcher follows. */
    const size_t *off = t->ptr_offsets, k = t->n_ptr_offsets, esz = t->size;
    for (uintptr_t e = p + (n - 1) * esz; n; n--, e -= esz) {
      for (size_t j = k; j-- > 0;) {
        uintptr_t v = *(const uintptr_t *)(e + off[j]);
        if (v - lo >= span) continue; /* NULL, or outside the heap */
        uintptr_t vb = v & mask;
        if (vb != cbase) {
          cbase = vb;
          centry = tp__map_get(h, v);
        }
        if (!centry) continue;
        size_t g = (size_t)(v - 8 - vb) >> TP__GRAN_SHIFT;
        uint64_t bit = (uint64_t)1 << (g & 63);
        struct tp__bitpair *bp = NULL;
        if (TP_UNLIKELY(((uintptr_t)centry & 1) || (v & 15) || v < vb + data_off + 16 ||
                        !((bp = (struct tp__bitpair *)(vb + bits_off) + (g >> 6))->start & bit))) {
          /* Large object or interior pointer: the general lookup. */
          mk->top = top;
          mark_addr(mk, v);
          top = mk->top;
          continue;
        }
        if (bp->mark & bit) continue;
        bp->mark |= bit;
        if (TP_LIKELY(top < cap)) {
          st[top++] = v;
        } else {
          mk->top = top;
          push_overflow(mk, (struct tp__region *)vb, NULL, g);
        }
      }
    }
  }
  mk->top = top;
  mk->bytes += bytes;
  mk->objs += objs;
}

static void drain_check(struct marker *mk) {
  while (mk->top) scan(mk, mk->st[--mk->top], true);
}

/* Scans pending (overflowed) objects until no overflow is left. Each goes
 * through the gray stack, which drain left empty, so there is room. */
static void drain_overflow(struct marker *mk) {
  tp_heap *h = mk->h;
  drain(mk);
  while (mk->overflowed) {
    mk->overflowed = false;
    for (struct tp__region *r = h->regions; r; r = r->next) {
      if (!r->overflow) continue;
      r->overflow = 0;
      uint64_t *pend = tp__region_pend(h, r);
      for (size_t w = h->first_word; w < h->nwords; w++) {
        while (pend[w]) {
          uint64_t bits = pend[w];
          pend[w] = 0;
          while (bits) {
            size_t g = (w << 6) + (size_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            mk->st[mk->top++] = (uintptr_t)r + (g << TP__GRAN_SHIFT) + 16;
            drain(mk);
          }
        }
      }
    }
    for (struct tp__large *l = h->large; l; l = l->next) {
      if (!l->overflow) continue;
      l->overflow = 0;
      mk->st[mk->top++] = (uintptr_t)(l + 1);
      drain(mk);
    }
  }
}

/* Visits every root: precise slots, ranges, stopped threads' stacks and
 * registers, the finalizer queue and running finalizers. */
static void visit_roots(struct marker *mk) {
  tp_heap *h = mk->h;
  for (size_t i = 0; i < h->roots_cap; i++) {
    void **s = h->roots[i];
    if (s && s != TP__ROOT_TOMB && *s) visit_as(mk, (uintptr_t)*s, mk->check);
  }
  for (size_t i = 0; i < h->nranges; i++)
    scan_words(mk, (const char *)h->ranges[i].start,
               (const char *)(h->ranges[i].start + h->ranges[i].len));
  for (tp__mut *m = h->muts; m; m = m->next) {
    if (m->state == TP__MS_DETACHED) continue;
    scan_words(mk, m->scan_lo, m->stack_hi);
    if (m->state == TP__MS_BLOCKING)
      scan_words(mk, (const char *)m->spill, (const char *)(m->spill + m->nspill));
  }
  for (size_t i = 0; i < h->finq_n; i++)
    visit_as(mk, (uintptr_t)h->finq[(h->finq_head + i) % h->finq_cap], mk->check);
  for (struct tp__finrun *f = h->running; f; f = f->next)
    visit_as(mk, (uintptr_t)f->obj, mk->check);
}

/* Appends obj to the finalizer queue (a ring). false on ENOMEM. */
static bool finq_push(tp_heap *h, void *obj) {
  if (h->finq_n == h->finq_cap) {
    size_t cap = h->finq_cap ? h->finq_cap * 2 : 64;
    void **v = tp__malloc(cap * sizeof *v);
    if (!v) return false;
    for (size_t i = 0; i < h->finq_n; i++) v[i] = h->finq[(h->finq_head + i) % h->finq_cap];
    free(h->finq);
    h->finq = v;
    h->finq_cap = cap;
    h->finq_head = 0;
  }
  h->finq[(h->finq_head + h->finq_n) % h->finq_cap] = obj;
  h->finq_n++;
  return true;
}

/* ---- verification -------------------------------------------------------------- */

/* The check traversal. Its visited bits (the pend bitmaps and large
 * objects' overflow flags) are clear on entry: see the file comment. */
static void checkmark(tp_heap *h) {
  struct marker mk = {.h = h, .lo = h->lo, .span = h->hi - h->lo, .check = true};
  mk.cap = 4096;
  mk.st = tp__malloc(mk.cap * sizeof *mk.st);
  if (!mk.st) {
    fprintf(stderr, "tidepool: tp_heap_collect: checkmark skipped (out of memory)\n");
    return;
  }
  visit_roots(&mk);
  drain_check(&mk);
  free(mk.st);
  for (struct tp__region *r = h->regions; r; r = r->next)
    memset(tp__region_pend(h, r), 0, (size_t)h->nwords * sizeof(uint64_t));
  for (struct tp__large *l = h->large; l; l = l->next) l->overflow = 0;
}

/* ---- sweeping -------------------------------------------------------------------- */

struct release {
  struct tp__region *regions;
  struct tp__large *large;
};

static void sweep(tp_heap *h, uint8_t epoch, struct release *rel) {
  uint64_t freed = 0, released = 0;
  const uint32_t data_lines = h->nlines - h->first_line;
  h->recyclable = NULL;
  for (struct tp__region *r = h->regions, *next; r; r = next) {
    next = r->next;
    struct tp__bitpair *bits = tp__region_bits(h, r);
    for (size_t w = h->first_word; w < h->nwords; w++) {
      uint64_t s = bits[w].start, mk = bits[w].mark;
      freed += (uint64_t)__builtin_popcountll(s & ~mk);
      bits[w].start = s & mk;
      bits[w].mark = 0;
    }
    uint8_t *lines = tp__region_lines(h, r);
    uint32_t nfree = 0;
    for (uint32_t i = h->first_line; i < h->nlines; i++) {
      if (lines[i] == epoch) continue;
      lines[i] = 0;
      nfree++;
      TP_POISON((char *)r + ((size_t)i << TP__LINE_SHIFT), TP__LINE); /* ASan only */
    }
    if (nfree == data_lines) {
      /* No live line: the whole region goes back to the pool. */
      TP__LIST_UNLINK(h->regions, r, prev, next);
      tp__map_clear_range(h, (uintptr_t)r, h->region_size);
      r->rnext = rel->regions;
      rel->regions = r;
      released++;
    } else if (nfree) {
      r->rnext = h->recyclable;
      h->recyclable = r;
    }
  }
  for (struct tp__large *l = h->large, *next; l; l = next) {
    next = l->next;
    if (l->marked) {
      l->marked = 0;
      continue;
    }
    TP__LIST_UNLINK(h->large, l, prev, next);
    tp__map_clear_range(h, (uintptr_t)l, l->map_bytes);
    tp__counter_add(&h->nlarge, -1);
    tp__counter_add(&h->large_map_bytes, -(int64_t)l->map_bytes);
    l->next = rel->large;
    rel->large = l;
    freed++;
  }
  tp__counter_add(&h->objs_freed, (int64_t)freed);
  tp__counter_add(&h->nregions, -(int64_t)released);
  tp__counter_add(&h->regions_released, (int64_t)released);
}

/* ---- pacing ----------------------------------------------------------------------- */

static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

void tp__gc_pace(tp_heap *h) {
  uint64_t live = tp__counter_get(&h->live_bytes);
  uint64_t goal = UINT64_MAX;
  if (h->trigger_percent) {
    /* live * percent / 100 without overflow for any live below 2^57. */
    uint64_t grow = live / 100 * h->trigger_percent + live % 100 * h->trigger_percent / 100;
    goal = sat_add(live, grow);
  }
  if (h->memory_limit) {
    /* Like GOMEMLIMIT: leave room for what is mapped but not in objects
     * (fragmentation, cached regions, metadata), but never closer to the
     * live heap than 1/16 of it or four regions (a soft limit: over it
     * the heap collects often, it does not fail). */
    uint64_t sys = tp__gc_heap_sys(h);
    uint64_t alloc = tp__heap_alloc_now(h);
    uint64_t overhead = sys > alloc ? sys - alloc : 0;
    uint64_t lgoal = h->memory_limit > overhead ? h->memory_limit - overhead : 0;
    uint64_t floor = live + (live / 16 > 4 * h->region_size ? live / 16 : 4 * h->region_size);
    if (lgoal < floor) lgoal = floor;
    if (lgoal < goal) goal = lgoal;
  }
  if (goal != UINT64_MAX) {
    if (goal < h->min_heap) goal = h->min_heap;
    /* At least a region above live: a goal at live (live * percent / 100
     * rounds to 0, min_heap <= live) would make every allocation after a
     * collection collect again, forever. A region is also the pacer's
     * resolution (heap_alloc lags by a buffer per thread). */
    uint64_t least = sat_add(live, h->region_size);
    if (goal < least) goal = least;
  }
  __atomic_store_n(&h->next_gc, goal, __ATOMIC_RELAXED);
}

/* Gives empty pool memory back to the OS now (memory_limit). Call with no
 * lock held. */
static void trim(tp_heap *h) {
  size_t retain = 0;
  pthread_mutex_lock(&tp__pool_pass_lock);
  tp__pool_scavenge(h->pool);
  tp__pool_release_empty(h->pool, tp__now_ms_coarse(), 0, &retain);
  pthread_mutex_unlock(&tp__pool_pass_lock);
}

/* ---- stopping the world -------------------------------------------------------------- */

static bool all_stopped(const tp_heap *h, const tp__mut *self) {
  for (const tp__mut *m = h->muts; m; m = m->next)
    if (m != self && m->state == TP__MS_RUNNING) return false;
  return true;
}

static void wait_all_stopped(tp_heap *h, tp__mut *self) {
  bool warned = false;
  while (!all_stopped(h, self)) {
    struct timespec ts = tp__deadline_ms(10000);
    if (pthread_cond_timedwait(&h->cv_parked, &h->sp_lock, &ts) == ETIMEDOUT && !warned) {
      unsigned n = 0;
      for (const tp__mut *m = h->muts; m; m = m->next)
        if (m != self && m->state == TP__MS_RUNNING) n++;
      fprintf(stderr,
              "tidepool: tp_heap_collect: waited 10 s for %u attached thread(s) to reach a "
              "safepoint (a thread that blocks must use tp_heap_blocking_enter/_leave; see "
              "docs/gc.md)\n",
              n);
      warned = true;
    }
  }
}

/* Parks running mutator m (stack scanned from sp down) until the collection
 * in progress has ended. Also stays if the next collection started before
 * it woke: that collector already counted it as stopped. Caller holds
 * sp_lock, a collection is in progress. */
static void park_locked(tp_heap *h, tp__mut *m, char *sp) {
  uint64_t epoch = h->stw_epoch;
  m->scan_lo = sp;
  m->state = TP__MS_PARKED;
  tp__lo_wait(TP__LO_WAIT_COLLECTION, &h->sp_lock, tp_epoch_in_section());
  pthread_cond_broadcast(&h->cv_parked);
  while (h->stw_epoch == epoch || __atomic_load_n(&h->stw, __ATOMIC_RELAXED))
    pthread_cond_wait(&h->cv_resume, &h->sp_lock);
  m->state = TP__MS_RUNNING;
}

/* Never reached by the collecting thread while its collection runs: trace
 * callbacks may not call into the heap, and finalizers run after the
 * restart. */
TP_NOINLINE static void park_inner(tp_heap *h, tp__mut *m) {
  char *sp = tp__current_sp();
  pthread_mutex_lock(&h->sp_lock);
  if (__atomic_load_n(&h->stw, __ATOMIC_RELAXED) && m->state == TP__MS_RUNNING)
    park_locked(h, m, sp);
  pthread_mutex_unlock(&h->sp_lock);
}

TP_NOINLINE void tp__gc_park(tp_heap *h, tp__mut *m) {
  TP__WITH_REGS_SPILLED(park_inner(h, m));
}

/* ---- the collection ------------------------------------------------------------------ */

/* Frees the records of threads that exited (h->lock held, world stopped). */
static void reap_records(tp_heap *h) {
  pthread_mutex_lock(&h->sp_lock);
  for (tp__mut *m = h->muts, *next; m; m = next) {
    next = m->next;
    /* acquire: pairs with the exiting thread's CAS; its writes are done. */
    if (__atomic_load_n(&m->owner, __ATOMIC_ACQUIRE) != TP__OWNER_THREAD_GONE) continue;
    tp__mut_unlink(h, m);
    free(m);
  }
  pthread_mutex_unlock(&h->sp_lock);
}

static void mark_and_sweep(tp_heap *h, struct release *rel) {
  uint64_t t0 = tp__now_ns();
  for (tp__mut *m = h->muts; m; m = m->next)
    if (m->state != TP__MS_DETACHED) tp__gc_retire_tlab(h, m);
  reap_records(h);

  /* The gray stack: mapped at the first collection; a small one on this
   * stack if that fails (overflow handling keeps marking correct). */
  uintptr_t fallback[64];
  size_t gbytes = tp__round_up(h->gray_cap * sizeof(void *), tp__os_page_size());
  if (!h->gray && (h->gray = tp__os_map(gbytes, 0)))
    tp__counter_add(&h->meta_bytes, (int64_t)gbytes);
  h->mark_epoch = (uint8_t)(h->mark_epoch % 255 + 1);
  struct marker mk = {.h = h, .lo = h->lo, .span = h->hi - h->lo, .epoch = h->mark_epoch};
  if (h->gray) {
    mk.st = (uintptr_t *)h->gray;
    mk.cap = h->gray_cap;
  } else {
    mk.st = fallback;
    mk.cap = sizeof fallback / sizeof fallback[0];
  }

  visit_roots(&mk);
  drain_overflow(&mk);

  /* Weak references die with their target's reachability from the roots. */
  for (tp_weak *w = h->weaks; w; w = w->next) {
    void *t = __atomic_load_n(&w->target, __ATOMIC_RELAXED);
    /* release: a later tp_weak_get that reads NULL also sees the sweep. */
    if (t && !is_marked(h, (uintptr_t)t)) __atomic_store_n(&w->target, NULL, __ATOMIC_RELEASE);
  }

  /* Unreachable objects with a finalizer: queue them, keep them and what
   * they reach alive until the finalizer has run. */
  size_t keep = 0;
  uint64_t queued = 0;
  for (size_t i = 0; i < h->nfin; i++) {
    void *obj = h->fin_objs[i];
    if (is_marked(h, (uintptr_t)obj)) {
      h->fin_objs[keep++] = obj;
      continue;
    }
    if (finq_push(h, obj))
      queued++;
    else
      h->fin_objs[keep++] = obj; /* no memory for the queue: next time */
    mark_addr(&mk, (uintptr_t)obj);
  }
  h->nfin = keep;
  tp__counter_add(&h->fin_pending, (int64_t)queued);
  drain_overflow(&mk);
  if (mk.any_overflow) tp__counter_add(&h->overflows, 1);

  uint64_t t1 = tp__now_ns();
  if (h->checkmark) checkmark(h);
  uint64_t t2 = tp__now_ns();
  sweep(h, mk.epoch, rel);
  uint64_t t3 = tp__now_ns();

  __atomic_store_n(&h->live_bytes, mk.bytes, __ATOMIC_RELAXED);
  __atomic_store_n(&h->live_objs, mk.objs, __ATOMIC_RELAXED);
  __atomic_store_n(&h->alloc_since, 0, __ATOMIC_RELAXED);
  tp__counter_add(&h->mark_ns, (int64_t)(t1 - t0));
  tp__counter_add(&h->sweep_ns, (int64_t)(t3 - t2));
  tp__gc_pace(h);
}

/* The collection proper, called with the caller's registers spilled into
 * tp__gc_collect's frame (above this frame's stack pointer). */
TP_NOINLINE static bool collect_inner(tp_heap *h, tp__mut *self) {
  char *sp = tp__current_sp();
  uint64_t t0 = tp__now_ns();
  pthread_mutex_lock(&h->sp_lock);
  if (__atomic_load_n(&h->stw, __ATOMIC_RELAXED)) {
    /* Another thread is collecting: stop for it (or, unattached, wait). */
    if (self && self->state == TP__MS_RUNNING) {
      park_locked(h, self, sp);
    } else {
      uint64_t epoch = h->stw_epoch;
      while (h->stw_epoch == epoch) pthread_cond_wait(&h->cv_resume, &h->sp_lock);
    }
    pthread_mutex_unlock(&h->sp_lock);
    return false;
  }
  /* relaxed: the fast paths only need to see it eventually; everything
   * else reads it under sp_lock. */
  __atomic_store_n(&h->stw, 1, __ATOMIC_RELAXED);
  if (self) self->scan_lo = sp;
  wait_all_stopped(h, self);
  pthread_mutex_unlock(&h->sp_lock);

  struct release rel = {NULL, NULL};
  pthread_mutex_lock(&h->lock);
  mark_and_sweep(h, &rel);
  pthread_mutex_unlock(&h->lock);

  pthread_mutex_lock(&h->sp_lock);
  __atomic_store_n(&h->stw, 0, __ATOMIC_RELAXED);
  h->stw_epoch++;
  pthread_cond_broadcast(&h->cv_resume);
  pthread_mutex_unlock(&h->sp_lock);

  uint64_t pause = tp__now_ns() - t0;
  tp__counter_add(&h->pause_total, (int64_t)pause);
  __atomic_store_n(&h->last_pause, pause, __ATOMIC_RELAXED);
  if (pause > tp__counter_get(&h->pause_max)) __atomic_store_n(&h->pause_max, pause, __ATOMIC_RELAXED);
  tp__counter_add(&h->num_gc, 1);

  /* Give memory back outside every heap lock (the pool's locks rank
   * below the heap's) and after the world restarted. */
  for (struct tp__region *r = rel.regions, *next; r; r = next) {
    next = r->rnext;
    TP_UNPOISON(r, h->region_size);
    tp_pool_put(h->pool, r);
  }
  for (struct tp__large *l = rel.large, *next; l; l = next) {
    next = l->next;
    tp__os_unmap(l, l->map_bytes);
  }
  if (h->memory_limit && tp__gc_heap_sys(h) > h->memory_limit) {
    trim(h);
    tp__gc_pace(h);
  }
  return true;
}

TP_NOINLINE bool tp__gc_collect(tp_heap *h, tp__mut *self) {
  bool r;
  TP__WITH_REGS_SPILLED(r = collect_inner(h, self));
  return r;
}
