/*
 * Marking: the gray stack, scanning objects (precise, conservative, trace
 * callbacks), the overflow pass, line marks, tp_trace, the SATB log's
 * consumer, and the checkmark verification; and why a concurrent mark is
 * correct.
 *
 * Tri-color. White: mark bit clear. Gray: mark bit set and the object is
 * on the gray stack (or flagged pending after an overflow). Black: mark
 * bit set and scanned, or born marked. Marking an object sets its bit (in
 * the region's side bitmap; large objects have a flag) and pushes it;
 * popping it scans its fields, marking what they point to. The gray stack
 * has a fixed capacity: an object that does not fit keeps its mark bit and
 * gets a pend bit (its region an overflow flag); when the stack is empty,
 * the pending objects are scanned, region by region in address order
 * (the order that keeps marking a scattered heap cache-friendly), until
 * no overflow happened. No recursion anywhere. Lines are marked when an
 * object is scanned: every line it overlaps gets the mark's epoch, which
 * is what the sweep (gc/sweep.c) reads.
 *
 * The concurrent mark (gc/collect.c runs it: pause 1, mark, pause 2)
 * -----------------------------------------------------------------
 * Snapshot S: the heap graph at pause 1. Invariant: at the end of pause 2
 * every object reachable in S, every object allocated since pause 1, and
 * every object tp_weak_get returned during the mark is marked. Then every
 * object reachable at pause 2 is marked too, because a pointer a thread
 * holds or stores after pause 1 can only have come from those sets (the
 * library gives out no other pointer: it allocates, reads fields and roots
 * of reachable objects, and returns weak referents), so the sweep frees
 * only objects unreachable at pause 2.
 *
 * Why S is marked (Yuasa's deletion barrier): pause 1 shades every root
 * of S with the world stopped. An object X reachable in S has a path of
 * heap edges A.f -> X' from a shaded root; induction along the path: once
 * A is marked, the marker scans A (it is gray until then) and reads A.f;
 * if A.f still holds its S value X' it marks X'; if a mutator overwrote
 * A.f first, the store went through tp_heap_write, whose barrier logged
 * the value it overwrote. The first store to A.f
 * after pause 1 overwrites exactly the S value: the barrier's load comes
 * after pause 1 (a running thread's tp_heap_write has no safepoint inside,
 * and it resumed from pause 1 through sp_lock) and before the store (read-
 * write coherence on one location), so it reads the S value or a later
 * one, and the first store's predecessor is the S value. Logged values are
 * marked by the marker (pushed chunks) or in pause 2 (chunks not pushed),
 * so X' is marked, and by induction along the path, X.
 *
 * Every way a pointer moves keeps that:
 *  - heap store: tp_heap_write logs the old value (above). A store into a
 *    field of an object allocated since pause 1 needs no log: that object
 *    was not in S, so its fields are not S edges.
 *  - root slot store, conservative range store: roots and ranges are
 *    shaded in pause 1 (their S values), later stores need nothing: the
 *    value stored is reachable in S (marked by the argument above) or
 *    allocated since (black); deleting a root's S value is harmless
 *    because it was shaded.
 *  - stacks and registers: scanned in pause 1, every attached thread
 *    stopped at a safepoint with its callee-saved registers spilled
 *    (gc/mutators.c); afterwards the same argument as root slots. A thread
 *    that attaches during the mark holds only pointers it got after
 *    pause 1. Pure Yuasa with per-thread stack scans at different times
 *    (no global pause 1) would not be sound: a thread A not yet scanned
 *    may hold X only in a local, store X into a field of an object the
 *    marker already scanned (the barrier logs that field's old value, not
 *    X), then drop its local before its own scan: X is reachable and
 *    never marked. Go's hybrid barrier shades the new value too while any
 *    stack is unscanned for exactly this. So pause 1 stops every thread
 *    once; it does no tracing, only shading, so it stays short
 *    (O(threads + stack bytes + roots)).
 *  - a thread's blocking section: its stack as of tp_heap_blocking_enter
 *    and its copied registers are scanned in pause 1 like a stopped
 *    thread's; it touches no heap object until leave, and after leave it
 *    is an ordinary running thread.
 *  - allocation: while TP__F_MARK is set every allocation buffer is in a
 *    region born black (all mark bits set, lines at the epoch: gc/alloc.c)
 *    and every large object is born marked; pause 1 retired the buffers
 *    that predate it. The marker finds those bits set and never scans such
 *    an object, so it never reads memory a mutator is initializing.
 *  - weak reference read during a mark: tp_weak_get logs the referent it
 *    returns (the caller may store it anywhere without a barrier, and it
 *    need not be in S). Weak references are cleared in pause 2, after the
 *    drain: a referent unmarked then was neither in S nor returned.
 *  - finalizer revival: in pause 2, with the world stopped, unmarked
 *    finalizable objects are queued and marked from (drained in the
 *    pause), as in a stop-the-world collection; the queue and running
 *    finalizers are roots, shaded in pause 1.
 *  - arenas registered as roots (issue 12 item 5): shaded in pause 1 from
 *    tp__mark_roots like ranges, so a store of a heap pointer into arena
 *    memory needs no barrier (same argument as root slots), and
 *    tp_arena_reset / _rewind of a registered arena during a mark need
 *    nothing: dropping memory deletes pointers whose S values were shaded.
 *
 * Races, and why each is benign or ordered:
 *  - mark bits, pend bits, overflow flags, line bytes of existing objects:
 *    written only by the marker while the mutators run (mutators log, they
 *    never shade), so plain; regions born black are written before they
 *    are published in the map (release) and never written by the marker.
 *  - start bits: an allocator sets them in its own buffer's region with a
 *    release store after writing the header; the marker reads them with
 *    acquire (tp__start_word), so a header it reads through a start bit is
 *    complete. The map's entries likewise (release/acquire, heap_internal.h).
 *  - fields: tp_heap_write's store is atomic (release), the marker's field
 *    loads relaxed atomics: a stale value is fine by the argument above.
 *    Trace callbacks should read fields the same way (tp_trace_field).
 *    Words of TP_TYPE_CONSERVATIVE objects are read without
 *    instrumentation (scan_conservative).
 *
 * Verification (TIDEPOOL_GC_CHECKMARK=1, like Go's gccheckmark): after
 * marking (in pause 2 for a concurrent mark), a second traversal from the
 * roots with its own visited bits and an unbounded malloc'd stack (so it
 * shares neither the bounded stack nor its overflow path with the real
 * marking) aborts if it reaches an object whose mark bit is clear. Its
 * visited bits are the pend bitmaps and the large objects' overflow
 * flags: marking ends with all of them clear (the last overflow round
 * found none set), and the check never overflows; it clears them again
 * when done. After a concurrent mark, a stack word that reaches an
 * unmarked object is skipped, not fatal: stack slots below the stack
 * pointer at pause 1 were not scanned then, can hold stale pointers to
 * objects already garbage at pause 1, and may be inside a frame by
 * pause 2 (an uninitialized local); the program cannot use them. Words of
 * registered arenas are skipped the same way, for the same reason: arena
 * memory changes after pause 1 without a barrier, and a chunk re-used
 * after a reset or rewind holds stale words from before it, pointing to
 * objects garbage at pause 1 (gc/roots.c says more). Roots, ranges and
 * fields stay strict.
 */
#define _GNU_SOURCE
#include "gc/mark_internal.h"

#include "core/debug_internal.h"
#include "core/fault_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tp_tracer {
  struct tp__marker *mk;
};

bool tp__gc_is_marked(const tp_heap *h, uintptr_t p) {
  void *e = tp__map_get(h, p);
  if (!e) return false;
  if ((uintptr_t)e & 1) return ((struct tp__large *)((uintptr_t)e & ~(uintptr_t)1))->marked;
  struct tp__region *r = e;
  size_t g = (size_t)(p - 8 - (uintptr_t)r) >> TP__GRAN_SHIFT;
  return (tp__region_bits(h, r)[g >> 6].mark >> (g & 63)) & 1;
}

/* ---- marking ------------------------------------------------------------------ */

static void push_overflow(struct tp__marker *mk, struct tp__region *r, struct tp__large *l,
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

static TP_NOINLINE void check_push_slow(struct tp__marker *mk, uintptr_t p) {
  size_t cap = mk->cap * 2;
  uintptr_t *st = tp__realloc(mk->st, cap * sizeof *st);
  if (!st) tp__fatal("tp_heap_collect", NULL, "checkmark: out of memory");
  mk->st = st;
  mk->cap = cap;
  mk->st[mk->top++] = p;
}

/* The object containing address a (0 if none): its payload address, and
 * its region and granule (*r), or its large record (*l). One range test
 * first: nothing of the heap lies outside [lo, lo + span). */
static inline uintptr_t obj_at(struct tp__marker *mk, uintptr_t a, struct tp__region **r,
                               struct tp__large **l, size_t *g) {
  if (a - mk->lo >= mk->span) return 0;
  *g = 0;
  return tp__find_obj(mk->h, a, r, l, g);
}

/* Marks the object containing address a (if any) gray. */
static inline void mark_addr(struct tp__marker *mk, uintptr_t a) {
  struct tp__region *r;
  struct tp__large *l;
  size_t g;
  uintptr_t p = obj_at(mk, a, &r, &l, &g);
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
static void check_addr(struct tp__marker *mk, uintptr_t a) {
  struct tp__region *r;
  struct tp__large *l;
  size_t g;
  uintptr_t p = obj_at(mk, a, &r, &l, &g);
  if (!p) return;
  if (r) {
    uint64_t *seen = tp__region_pend(mk->h, r) + (g >> 6); /* see tp__gc_checkmark */
    uint64_t bit = (uint64_t)1 << (g & 63);
    if (*seen & bit) return;
    bool marked = tp__region_bits(mk->h, r)[g >> 6].mark & bit;
    if (!marked && mk->lenient) return; /* a stale stack or arena word: see the top */
    *seen |= bit;
    if (!marked)
      tp__fatal("tp_heap_collect", (void *)p,
                "checkmark: a reachable object was not marked (collector bug)");
  } else {
    if (l->overflow || (!l->marked && mk->lenient)) return;
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
static inline void visit_as(struct tp__marker *mk, uintptr_t a, bool check) {
  if (check)
    check_addr(mk, a);
  else
    mark_addr(mk, a);
}

void tp__mark_visit(struct tp__marker *mk, uintptr_t a) { visit_as(mk, a, mk->check); }

size_t tp__mark_satb_list(struct tp__marker *mk, struct tp__satb *list) {
  size_t n = 0;
  for (struct tp__satb *c = list; c; c = c->next) {
    for (size_t i = 0; i < c->n; i++) mark_addr(mk, c->v[i]);
    n += c->n;
  }
  tp__satb_give_back(mk->h, list);
  return n;
}

void tp_trace(tp_tracer *t, void *ptr) {
  if (t && ptr) visit_as(t->mk, (uintptr_t)ptr, t->mk->check);
}

/* Every aligned word of [lo, hi) as a possible pointer. Stacks of other
 * threads and user ranges may hold redzones or be written by a BLOCKING
 * thread's own frame (values it may not use as heap pointers): not
 * instrumented. */
__attribute__((no_sanitize_address, no_sanitize_thread)) void
tp__mark_words(struct tp__marker *mk, const char *lo, const char *hi) {
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
  /* relaxed atomic (a plain byte store): an allocator taking a hole of
   * this region reads the line bytes meanwhile (gc/alloc.c, next_hole). */
  __atomic_store_n(&lines[l0], epoch, __ATOMIC_RELAXED);
  for (size_t i = l0 + 1; i <= l1; i++) __atomic_store_n(&lines[i], epoch, __ATOMIC_RELAXED);
}

/* Every word of a conservative object's payload, last word first (for the
 * same reason as the precise fields below). Its non-pointer words are
 * plain data that mutators write without the barrier while a concurrent
 * mark reads them: a benign race (an aligned word is read whole on
 * x86-64, and a stale or torn-free value that happens to look like a
 * pointer only keeps an object one more cycle), so not instrumented. */
__attribute__((no_sanitize_thread)) static void scan_conservative(struct tp__marker *mk,
                                                                  uintptr_t p, size_t payload,
                                                                  bool check) {
  const uintptr_t *w = (const uintptr_t *)p, *end = (const uintptr_t *)(p + (payload & ~(size_t)7));
  while (end > w) visit_as(mk, *--end, check);
}

/* Scans the object with payload p: marks its lines and accounts it (real
 * marking only), then visits its references. */
static inline void scan(struct tp__marker *mk, uintptr_t p, bool check) {
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
    scan_conservative(mk, p, payload, check);
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
        uintptr_t v = __atomic_load_n((const uintptr_t *)(e + off[j]), __ATOMIC_RELAXED);
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
static void drain(struct tp__marker *mk) {
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
        /* relaxed: mutators store fields through tp_heap_write (release)
         * while a concurrent mark runs; see the argument above. */
        uintptr_t v = __atomic_load_n((const uintptr_t *)(e + off[j]), __ATOMIC_RELAXED);
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
                        !(tp__start_word(bp = (struct tp__bitpair *)(vb + bits_off) + (g >> 6)) & bit))) {
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

static void drain_check(struct tp__marker *mk) {
  while (mk->top) scan(mk, mk->st[--mk->top], true);
}

/* Scans pending (overflowed) objects until no overflow is left. Each goes
 * through the gray stack, which drain left empty, so there is room. */
void tp__mark_drain_all(struct tp__marker *mk) {
  tp_heap *h = mk->h;
  drain(mk);
  while (mk->overflowed) {
    mk->overflowed = false;
    for (struct tp__region *r = mk->regions; r; r = r->next) {
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
    for (struct tp__large *l = mk->large; l; l = l->next) {
      if (!l->overflow) continue;
      l->overflow = 0;
      mk->st[mk->top++] = (uintptr_t)(l + 1);
      drain(mk);
    }
  }
}

/* ---- verification -------------------------------------------------------------- */

/* The check traversal. Its visited bits (the pend bitmaps and large
 * objects' overflow flags) are clear on entry: see the file comment. */
void tp__gc_checkmark(tp_heap *h, bool concurrent) {
  struct tp__marker mk = {.h = h, .lo = h->lo, .span = h->hi - h->lo, .check = true,
                          .concurrent = concurrent};
  mk.cap = 4096;
  mk.st = tp__malloc(mk.cap * sizeof *mk.st);
  if (!mk.st) {
    fprintf(stderr, "tidepool: tp_heap_collect: checkmark skipped (out of memory)\n");
    return;
  }
  tp__mark_roots(&mk);
  drain_check(&mk);
  free(mk.st);
  for (struct tp__region *r = h->regions; r; r = r->next)
    memset(tp__region_pend(h, r), 0, (size_t)h->nwords * sizeof(uint64_t));
  for (struct tp__large *l = h->large; l; l = l->next) l->overflow = 0;
}

