/*
 * Marking: the gray stack, scanning objects (precise, conservative, trace
 * callbacks; large objects in chunks), the overflow pass, line marks,
 * tp_trace, the SATB log's consumer, and the checkmark verification; and
 * why a concurrent mark, and a mark on several markers, is correct.
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
 * no flag is left. A large object is scanned TP__SCAN_CHUNK bytes per
 * gray entry (the rest is a tagged entry of its own), and what a chunk
 * points to is pended on purpose: a big pointer table is scanned in
 * address order of its targets, never floods the stack, and its chunks
 * go to whichever marker is idle. No recursion anywhere. Lines are marked
 * when an object is scanned: every line it overlaps gets the mark's
 * epoch, which is what the sweep (gc/sweep.c) reads.
 *
 * Several markers (gc/mark_parallel.c: the session, the shared list,
 * termination). Each has its own gray stack; the mark bits, pend bits
 * and flags are shared.
 *  - Each reachable object is marked: the induction below ("once A is
 *    marked, the marker scans A") holds for whichever marker scans A,
 *    because a gray object is on one marker's stack, in a shared block
 *    or pending, and the mark ends only when none is (termination).
 *  - Each is scanned exactly once: a marker
 *    reads a mark bit (relaxed) and, if it looked clear, sets it with an
 *    atomic fetch_or (a large object: exchange of its flag); the one
 *    whose RMW found it clear owns the object: it pushes it (or pends
 *    it), and only entries are scanned. An entry moves between markers
 *    only through the shared list (under its lock) or as a pend bit
 *    claimed by one marker (an exchange of the flag, then of each word),
 *    so it is scanned once. The relaxed RMW orders nothing: no data
 *    passes through a mark bit (the object's fields are read as in a
 *    one-marker mark, see below).
 *  - No pend bit is lost: a setter sets the pend bit, then reads the
 *    region's flag; a claimer clears the flag, then takes the words (all
 *    seq_cst). If the setter read the flag set, that read precedes the
 *    clearing in the single order, so the claimer's later exchange of
 *    the word sees the bit; if it read it clear, it raises ovf_pending
 *    and sets the flag: the region is claimed again.
 *  - Termination: every marker idle, the shared list empty and
 *    ovf_pending 0 (no flag set); work is only made by markers that are
 *    not idle, so none is left (gc/mark_parallel.c has the argument).
 *  - Line bytes: every marker that scans an object on a line stores the
 *    same epoch: idempotent relaxed byte stores.
 *  - Counts: each marker counts the bytes and objects it scanned; the
 *    leader adds the helpers' when they leave (under the lock).
 * One marker (the default background mark on 2 CPUs, markers = 1, the
 * pauses' small drains) runs the same code with plain bit operations.
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
 *    is an ordinary running thread. An allocation's wait for h->lock is
 *    one (tp__mut_lock_heap): when it gets the lock during a stop it hands
 *    it back untouched, and it reads the mark flag only once it holds
 *    the lock, so a pause it slept through leaves it nothing stale.
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
 *    written only by markers while the mutators run (mutators log, they
 *    never shade): plain with one marker, atomic with several (above);
 *    regions born black are written before they are published in the map
 *    (release) and never written by a marker. Helpers run only inside a
 *    session the marker thread (or a pause) opens, and every statement
 *    below about "the marker" holds for each of them.
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

/* An object just marked that the fast path could not push: the stack is
 * full (compacted if entries were shared from its bottom, else the object
 * is deferred: an overflow), or mk->defer asks for the overflow pass. */
static TP_NOINLINE void push_slow(struct tp__marker *mk, uintptr_t p, struct tp__region *r,
                                  struct tp__large *l, size_t g, bool par) {
  if (!mk->defer) {
    if (mk->bot) {
      size_t n = mk->top - mk->bot;
      memmove(mk->st, mk->st + mk->bot, n * sizeof *mk->st);
      mk->top = n;
      mk->bot = 0;
      if (n < mk->cap) {
        mk->st[mk->top++] = p;
        return;
      }
    }
    mk->any_overflow = true;
  }
  tp__mark_pend(mk, r, l, g, par);
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

/* Sets a mark bit; true if this marker set it. With other markers (par)
 * a relaxed test first, then an atomic RMW only when the bit looked
 * clear: of markers racing for one object exactly one sees the bit clear
 * in its RMW's result, and only that one pushes (and scans) it. */
TP_INLINE bool set_mark(uint64_t *word, uint64_t bit, bool par) {
  if (par) {
    if (__atomic_load_n(word, __ATOMIC_RELAXED) & bit) return false;
    return !(__atomic_fetch_or(word, bit, __ATOMIC_RELAXED) & bit);
  }
  if (*word & bit) return false;
  *word |= bit;
  return true;
}

TP_INLINE bool set_large_mark(struct tp__large *l, bool par) {
  if (par)
    return !__atomic_load_n(&l->marked, __ATOMIC_RELAXED) &&
           !__atomic_exchange_n(&l->marked, 1, __ATOMIC_RELAXED);
  if (l->marked) return false;
  l->marked = 1;
  return true;
}

/* Marks the object containing address a (if any) gray. */
TP_INLINE void mark_addr_as(struct tp__marker *mk, uintptr_t a, bool par) {
  struct tp__region *r;
  struct tp__large *l;
  size_t g;
  uintptr_t p = obj_at(mk, a, &r, &l, &g);
  if (!p) return;
  if (r) {
    if (!set_mark(&tp__region_bits(mk->h, r)[g >> 6].mark, (uint64_t)1 << (g & 63), par)) return;
  } else if (!set_large_mark(l, par)) {
    return;
  }
  if (TP_LIKELY(mk->top < mk->cap && !mk->defer))
    mk->st[mk->top++] = p;
  else
    push_slow(mk, p, r, l, g, par);
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
    mark_addr_as(mk, a, mk->par);
}

void tp__mark_visit(struct tp__marker *mk, uintptr_t a) { visit_as(mk, a, mk->check); }

size_t tp__mark_satb_list(struct tp__marker *mk, struct tp__satb *list) {
  size_t n = 0;
  for (struct tp__satb *c = list; c; c = c->next) {
    for (size_t i = 0; i < c->n; i++) mark_addr_as(mk, c->v[i], mk->par);
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
   * this region reads the line bytes meanwhile (gc/alloc.c, next_hole);
   * markers that scan neighbours store the same epoch (idempotent). */
  __atomic_store_n(&lines[l0], epoch, __ATOMIC_RELAXED);
  for (size_t i = l0 + 1; i <= l1; i++) __atomic_store_n(&lines[i], epoch, __ATOMIC_RELAXED);
}

/* Every word of [w, end) of a conservative object, last word first (for
 * the same reason as the precise fields below). Its non-pointer words are
 * plain data that mutators write without the barrier while a concurrent
 * mark reads them: a benign race (an aligned word is read whole on
 * x86-64, and a stale or torn-free value that happens to look like a
 * pointer only keeps an object one more cycle), so not instrumented. */
__attribute__((no_sanitize_thread)) static void scan_conservative(struct tp__marker *mk,
                                                                  const uintptr_t *w,
                                                                  const uintptr_t *end,
                                                                  bool check) {
  while (end > w) visit_as(mk, *--end, check);
}

/* Visits the references of n elements of type t from e0 (bytes: their
 * extent, what a conservative type scans). */
static void visit_fields(struct tp__marker *mk, const tp_type *t, uintptr_t e0, size_t n,
                         size_t bytes, bool check) {
  unsigned flags = t->flags;
  if (flags & TP_TYPE_LEAF) return;
  if (flags & TP_TYPE_CONSERVATIVE) {
    scan_conservative(mk, (const uintptr_t *)e0, (const uintptr_t *)(e0 + (bytes & ~(size_t)7)),
                      check);
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
    for (uintptr_t e = e0 + (n - 1) * esz; n; n--, e -= esz)
      for (size_t j = k; j-- > 0;) {
        uintptr_t v = __atomic_load_n((const uintptr_t *)(e + off[j]), __ATOMIC_RELAXED);
        if (v) visit_as(mk, v, check);
      }
    return;
  }
  struct tp_tracer tr = {mk};
  for (size_t i = 0; i < n; i++, e0 += esz) t->trace((void *)e0, &tr);
}

/* The rest of a large object from `from` (an element, or a word of a
 * conservative one) becomes a gray entry of its own (tagged: from | 1),
 * for an idle peer if one waits, else on this marker's stack; false if
 * there is no room (the caller scans on). */
static bool push_rest(struct tp__marker *mk, uintptr_t from) {
  uintptr_t e = from | 1;
  if (mk->par && tp__markwork_hungry(mk->ws) && tp__markwork_share(mk->ws, &e, 1)) return true;
  if (mk->top == mk->cap) return false;
  mk->st[mk->top++] = e;
  return true;
}

/* Scans the large object l from payload address `from` (its start: it is
 * accounted then). Real marking scans at most TP__SCAN_CHUNK bytes per
 * gray entry, the rest pushed back as another entry (push_rest), and what
 * the chunk points to goes to the overflow pass (mk->defer), in address
 * order like everything pending: a big pointer table neither floods the
 * gray stack nor ties one marker up, and its targets are scanned in the
 * order that keeps a scattered heap cache-friendly. The checkmark scans
 * it whole. */
static void scan_large(struct tp__marker *mk, struct tp__large *l, uintptr_t from, bool check) {
  uintptr_t p = (uintptr_t)(l + 1);
  const tp_type *t = tp__hdr_type(l->hdr);
  if (!check && from == p) {
    mk->bytes += l->bytes;
    mk->objs++;
  }
  if (t->flags & TP_TYPE_LEAF) return;
  bool cons = t->flags & TP_TYPE_CONSERVATIVE;
  size_t esz = cons ? sizeof(uintptr_t) : t->size;
  uintptr_t end = cons ? p + (l->payload & ~(size_t)7) : p + l->n * esz;
  if (check || (!cons && l->n == 1)) { /* whole (one element: not divisible) */
    mk->defer = !check;
    visit_fields(mk, t, from, (end - from) / esz, end - from, check);
    mk->defer = false;
    return;
  }
  size_t per = TP__SCAN_CHUNK / esz ? TP__SCAN_CHUNK / esz : 1;
  for (uintptr_t lim = end; from < lim;) {
    uintptr_t stop = (end - from) / esz > per ? from + per * esz : end;
    if (stop < lim && push_rest(mk, stop)) lim = stop;
    mk->defer = true;
    visit_fields(mk, t, from, (stop - from) / esz, stop - from, false);
    mk->defer = false;
    from = stop;
  }
}

/* A tagged gray entry: the rest of a large object from e. */
static void scan_rest(struct tp__marker *mk, uintptr_t e) {
  void *entry = tp__map_get(mk->h, e);
  scan_large(mk, (struct tp__large *)((uintptr_t)entry & ~(uintptr_t)1), e, false);
}

/* Scans the object with payload p: marks its lines and accounts it (real
 * marking only), then visits its references. */
static inline void scan(struct tp__marker *mk, uintptr_t p, bool check) {
  tp_heap *h = mk->h;
  uintptr_t hdr = *(const uintptr_t *)(p - 8);
  if (TP_UNLIKELY(hdr & TP__HDR_LARGE)) {
    scan_large(mk, (struct tp__large *)(p & h->region_mask), p, check);
    return;
  }
  size_t n = (hdr & TP__HDR_ARRAY) ? *(const size_t *)(p - 16) : 1;
  size_t span = (size_t)(hdr >> TP__HDR_K_SHIFT) << TP__GRAN_SHIFT;
  if (!check) {
    uintptr_t base = p & h->region_mask;
    mark_lines(tp__region_lines(h, (struct tp__region *)base), base, p, span, mk->epoch);
    mk->bytes += span + ((hdr & TP__HDR_ARRAY) ? 16 : 0);
    mk->objs++;
  }
  visit_fields(mk, tp__hdr_type(hdr), p, n, span - 8, check);
}

/* Empties the gray stack (entries [bot, top)). Small objects of
 * ptr_offsets and leaf types -- the bulk of most heaps -- are scanned here
 * with the loop's state in registers and a one-entry cache of the last
 * map lookup (neighbours usually share a region); pointers to payload
 * starts are marked without reading the target's memory (its start bit
 * says it is an object). Other objects, tagged entries (the rest of a
 * large object) and interior pointers take the general path (scan,
 * scan_rest, mark_addr_as). par: other markers run (atomic mark bits; every
 * 32 entries, the stack's bottom -- the oldest entries, the biggest
 * subtrees of a depth-first walk -- goes to the shared list if a peer is
 * idle and the list is empty: tp__markwork_share_stack). */
/* The bottom of mk's stack below which entries were shared. It moves only
 * when peers share work (par): one marker keeps it 0, so its loop is
 * `while (top)` with no reload. */
TP_INLINE size_t bot_of(const struct tp__marker *mk, bool par) { return par ? mk->bot : 0; }

TP_INLINE void drain_as(struct tp__marker *mk, bool par) {
  tp_heap *h = mk->h;
  const uintptr_t lo = mk->lo, span = mk->span, mask = h->region_mask;
  const size_t bits_off = h->bits_off, lines_off = h->lines_off, data_off = h->data_off;
  const uint8_t epoch = mk->epoch;
  uintptr_t *const st = mk->st;
  const size_t cap = mk->cap;
  size_t top = mk->top, bot = bot_of(mk, par);
  uint64_t bytes = 0, objs = 0;
  unsigned tick = 0;
  uintptr_t cbase = 1; /* no region starts at 1 */
  void *centry = NULL;
  while (top > bot) {
    if (par && TP_UNLIKELY((++tick & 31) == 0) && top - bot >= 2 &&
        tp__markwork_hungry(mk->ws)) {
      mk->top = top;
      tp__markwork_share_stack(mk);
      bot = bot_of(mk, par);
    }
    uintptr_t p = st[--top];
    if (TP_UNLIKELY(p & 1)) {
      mk->top = top;
      scan_rest(mk, p - 1);
      top = mk->top;
      bot = bot_of(mk, par);
      continue;
    }
    uintptr_t hdr = *(const uintptr_t *)(p - 8);
    const tp_type *t = tp__hdr_type(hdr);
    if (TP_UNLIKELY((hdr & TP__HDR_LARGE) || t->trace || (t->flags & TP_TYPE_CONSERVATIVE))) {
      mk->top = top;
      scan(mk, p, false);
      top = mk->top;
      bot = bot_of(mk, par);
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
          mark_addr_as(mk, v, par);
          top = mk->top;
          bot = bot_of(mk, par);
          continue;
        }
        if (!set_mark(&bp->mark, bit, par)) continue;
        if (TP_LIKELY(top < cap)) {
          st[top++] = v;
        } else {
          mk->top = top;
          push_slow(mk, v, (struct tp__region *)vb, NULL, g, par);
          top = mk->top;
          bot = bot_of(mk, par);
        }
      }
    }
  }
  mk->top = mk->bot = 0;
  mk->bytes += bytes;
  mk->objs += objs;
}

static TP_NOINLINE void drain_seq(struct tp__marker *mk) { drain_as(mk, false); }
static TP_NOINLINE void drain_par(struct tp__marker *mk) { drain_as(mk, true); }

void tp__mark_drain_stack(struct tp__marker *mk, bool par) { par ? drain_par(mk) : drain_seq(mk); }

static void drain_check(struct tp__marker *mk) {
  while (mk->top) scan(mk, mk->st[--mk->top], true);
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

