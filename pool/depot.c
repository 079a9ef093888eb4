/*
 * Magazines and tagged lock-free stacks (see depot_internal.h).
 *
 * Why the stacks are correct. A pop reads head h = (tag, i), then link[i],
 * then CASes head from h to (tag + 1, link[i]). If any push or pop completed
 * in between, the head's tag changed and the CAS fails, even when the same
 * index is back on top (the ABA case that breaks untagged stacks). The tag
 * is 32 bits: a failure needs 2^32 successful operations on one stack while
 * a pop is suspended between its two reads. link[i] may be rewritten
 * concurrently by the thread that owns magazine i now; the read is an atomic
 * relaxed load and its value is only used if the CAS proves it was current.
 *
 * Memory orders. push: the magazine's contents and link are written before
 * the release CAS that publishes it. pop: the acquire load/CAS of the head
 * makes them visible before the popper reads them.
 */
#define _GNU_SOURCE
#include "pool/depot_internal.h"
#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/os_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/mman.h>

/*
 * Where magazines live. The index space (1 .. MAG_MAX - 1; 0 means "none")
 * is cut into segments of SEG_MAGS magazines. A segment is a SEG_BYTES
 * span, aligned to its size and reserved (MAP_NORESERVE) only when the
 * first of its indices is handed out: its first page is the segment's
 * header (its first index, then link[] and cold[] of its magazines), the
 * magazine pages follow. Nothing is reserved up front, so a process under
 * RLIMIT_AS (or strict overcommit) pays 2 MiB of address space per 511
 * magazines in use; when a segment cannot be mapped, tp__mag_new fails
 * with ENOMEM and a later call tries again. Segments are never unmapped
 * (type-stable: see depot_internal.h); a magazine's index is found from
 * its address through the header of the segment that holds it.
 */
#define MAG_MAX (1u << 20)
#define SEG_MAGS 511u
#define SEG_BYTES ((size_t)(SEG_MAGS + 1) * sizeof(tp__mag))
#define NSEGS ((MAG_MAX + SEG_MAGS - 1) / SEG_MAGS)

struct seg_hdr {
  uint32_t first;           /* index of the segment's magazine 0 */
  uint32_t link[SEG_MAGS];  /* link[k]: index below magazine k on its stack */
  uint8_t cold[SEG_MAGS];   /* cold[k]: pages given back by tp__mag_trim */
};
_Static_assert(sizeof(struct seg_hdr) <= sizeof(tp__mag), "a segment header is one page");
_Static_assert(sizeof(tp__mag) == 4096, "a magazine is one page");

/* segs[s]: segment s, or NULL until it is mapped (CAS from NULL, release:
 * its header is written first). Read with acquire: an index reaches a
 * thread through mag_fresh or a stack, both after the segment's store. */
static struct seg_hdr *segs[NSEGS];
static uint32_t mag_fresh = 1; /* next never-used index (0 is "none") */
static tp__mag_stack mag_empty;

static inline struct seg_hdr *seg_of_idx(uint32_t i) {
  return __atomic_load_n(&segs[i / SEG_MAGS], __ATOMIC_ACQUIRE);
}
static inline tp__mag *mag_at(uint32_t i) {
  return (tp__mag *)((char *)seg_of_idx(i) + (size_t)(1 + i % SEG_MAGS) * sizeof(tp__mag));
}
static inline struct seg_hdr *seg_of_mag(const tp__mag *m) {
  return (struct seg_hdr *)((uintptr_t)m & ~(uintptr_t)(SEG_BYTES - 1));
}
static inline uint32_t mag_slot(const tp__mag *m) {
  return (uint32_t)(((const char *)m - (const char *)seg_of_mag(m)) / sizeof(tp__mag)) - 1;
}
/* A magazine's index comes from its address (nothing is stored in it, so
 * its page may be given back while it is empty). */
static inline uint32_t mag_idx(const tp__mag *m) { return seg_of_mag(m)->first + mag_slot(m); }
static inline uint32_t *link_of(uint32_t i) { return &seg_of_idx(i)->link[i % SEG_MAGS]; }

/* Maps segment s unless it is there: 0, or -ENOMEM leaving it unmapped.
 * Racing callers both map; the loser of the CAS unmaps its copy. */
static int seg_map(uint32_t s) {
  if (__atomic_load_n(&segs[s], __ATOMIC_ACQUIRE)) return 0;
  struct seg_hdr *h = tp__os_reserve(SEG_BYTES, SEG_BYTES);
  if (!h) return -ENOMEM;
  h->first = s * SEG_MAGS;
  struct seg_hdr *expect = NULL;
  /* release: the header is written before anyone can find the segment. */
  if (!__atomic_compare_exchange_n(&segs[s], &expect, h, false, __ATOMIC_RELEASE,
                                   __ATOMIC_ACQUIRE)) {
    tp__os_unreserve(h, SEG_BYTES);
    return 0;
  }
  tp__counter_add(&tp__os.mapped, (int64_t)sizeof(tp__mag)); /* the header page */
  tp__counter_add(&tp__os.resident, (int64_t)sizeof(tp__mag));
  return 0;
}

void tp__mag_push_chain(tp__mag_stack *s, const tp__mag_chain *c) {
  if (!c->top) return;
  uint32_t top = mag_idx(c->top), bottom = mag_idx(c->bottom);
  uint64_t h = __atomic_load_n(&s->head, __ATOMIC_RELAXED);
  for (;;) {
    __atomic_store_n(link_of(bottom), (uint32_t)h, __ATOMIC_RELAXED);
    uint64_t nh = ((h >> 32) + 1) << 32 | top;
    /* release: publishes the chain's contents and links with the new head. */
    if (__atomic_compare_exchange_n(&s->head, &h, nh, true, __ATOMIC_RELEASE,
                                    __ATOMIC_RELAXED))
      return;
  }
}

void tp__mag_push(tp__mag_stack *s, tp__mag *m) {
  tp__mag_push_chain(s, &(tp__mag_chain){m, m});
}

void tp__mag_chain_append(tp__mag_chain *c, tp__mag *m) {
  /* relaxed: the chain is the caller's; tp__mag_push_chain publishes it. */
  if (c->top) __atomic_store_n(link_of(mag_idx(c->bottom)), mag_idx(m), __ATOMIC_RELAXED);
  else c->top = m;
  c->bottom = m;
}

tp__mag *tp__mag_pop(tp__mag_stack *s) {
  /* acquire: see the link and contents the pusher published. */
  uint64_t h = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
  for (;;) {
    uint32_t i = (uint32_t)h;
    if (i == 0) return NULL;
    uint32_t below = __atomic_load_n(link_of(i), __ATOMIC_RELAXED);
    uint64_t nh = ((h >> 32) + 1) << 32 | below;
    if (__atomic_compare_exchange_n(&s->head, &h, nh, true, __ATOMIC_ACQUIRE,
                                    __ATOMIC_ACQUIRE))
      return mag_at(i);
  }
}

tp__mag *tp__mag_take_all(tp__mag_stack *s) {
  uint64_t h = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
  for (;;) {
    if ((uint32_t)h == 0) return NULL;
    uint64_t nh = ((h >> 32) + 1) << 32;
    if (__atomic_compare_exchange_n(&s->head, &h, nh, true, __ATOMIC_ACQUIRE,
                                    __ATOMIC_ACQUIRE))
      return mag_at((uint32_t)h);
  }
}

tp__mag *tp__mag_next(const tp__mag *m) {
  uint32_t i = __atomic_load_n(link_of(mag_idx(m)), __ATOMIC_RELAXED);
  return i ? mag_at(i) : NULL;
}

tp__mag *tp__mag_new(void) {
  tp__mag *m = tp__mag_pop(&mag_empty);
  if (m) {
    struct seg_hdr *h = seg_of_mag(m);
    uint32_t k = mag_slot(m);
    if (h->cold[k]) { /* we own it: its pages fault in again */
      h->cold[k] = 0;
      tp__counter_add(&tp__os.resident, (int64_t)sizeof(tp__mag));
    }
    return m;
  }
  /* A never-used index, claimed only once its segment is mapped, so a
   * failed mapping consumes nothing. */
  uint32_t i = __atomic_load_n(&mag_fresh, __ATOMIC_RELAXED);
  for (;;) {
    if (i >= MAG_MAX || seg_map(i / SEG_MAGS) != 0) {
      errno = ENOMEM;
      return NULL;
    }
    if (__atomic_compare_exchange_n(&mag_fresh, &i, i + 1, true, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
      break;
  }
  m = mag_at(i);
  tp__counter_add(&tp__os.mapped, (int64_t)sizeof(tp__mag));
  tp__counter_add(&tp__os.resident, (int64_t)sizeof(tp__mag));
  return m;
}

size_t tp__mag_trim(unsigned keep) {
  /* A magazine is decommitted only while detached (nobody can be filling
   * it). Detach the stack, put the `keep` on top straight back so
   * tp__mag_new still finds warm ones during the system calls, decommit
   * the rest, then slide it back in under whatever is on top by then. */
  tp__mag_chain top = {0}, rest = {0};
  unsigned seen = 0;
  for (tp__mag *m = tp__mag_take_all(&mag_empty), *next; m; m = next) {
    next = tp__mag_next(m);
    tp__mag_chain_append(++seen <= keep ? &top : &rest, m);
  }
  tp__mag_push_chain(&mag_empty, &top);
  if (!rest.top) return 0;
  size_t back = 0;
  for (tp__mag *m = rest.top;; m = tp__mag_next(m)) {
    struct seg_hdr *h = seg_of_mag(m);
    uint32_t k = mag_slot(m);
    if (!h->cold[k] && tp__os_decommit(m, sizeof *m) == 0) {
      h->cold[k] = 1;
      tp__counter_add(&tp__os.resident, -(int64_t)sizeof(tp__mag));
      back += sizeof *m;
    }
    if (m == rest.bottom) break;
  }
  tp__mag_chain now = {0};
  for (tp__mag *m = tp__mag_take_all(&mag_empty), *next; m; m = next) {
    next = tp__mag_next(m);
    tp__mag_chain_append(&now, m);
  }
  tp__mag_push_chain(&mag_empty, &rest);
  tp__mag_push_chain(&mag_empty, &now);
  return back;
}

void tp__mag_free(tp__mag *m) {
  m->count = 0;
  tp__mag_push(&mag_empty, m);
}


