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
#include "core/os_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/mman.h>

#define MAG_MAX (1u << 20) /* 4 GiB of address space, touched on demand */

static char *mag_base;      /* magazine i at mag_base + i * 4096 */
static uint32_t *mag_link;  /* link[i]: index below i on its stack */
static uint8_t *mag_cold;   /* cold[i]: pages given back by tp__mag_trim */
static uint32_t mag_fresh;  /* next never-used index (starts at 1) */
static tp__mag_stack mag_empty;
static pthread_once_t mag_once = PTHREAD_ONCE_INIT;

_Static_assert(sizeof(tp__mag) == 4096, "a magazine is one page");

static void mag_init(void) {
  void *b = mmap(NULL, (size_t)MAG_MAX * sizeof(tp__mag), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  void *l = mmap(NULL, (size_t)MAG_MAX * sizeof(uint32_t), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  void *k = mmap(NULL, MAG_MAX, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (b == MAP_FAILED || l == MAP_FAILED || k == MAP_FAILED)
    tp__fatal("tp__mag_init", NULL, "cannot reserve magazine space");
  mag_link = l;
  mag_cold = k;
  __atomic_store_n(&mag_fresh, 1, __ATOMIC_RELAXED);
  /* release: tp__mag_trim, which does not run the once, reads mag_base
   * (acquire) and then the arrays written above. */
  __atomic_store_n(&mag_base, (char *)b, __ATOMIC_RELEASE);
}

static inline tp__mag *mag_at(uint32_t i) {
  return (tp__mag *)(mag_base + (size_t)i * sizeof(tp__mag));
}
/* A magazine's index comes from its address (nothing is stored in it, so
 * its page may be given back while it is empty). */
static inline uint32_t mag_idx(const tp__mag *m) {
  return (uint32_t)(((const char *)m - mag_base) / sizeof(tp__mag));
}

void tp__mag_push_chain(tp__mag_stack *s, const tp__mag_chain *c) {
  if (!c->top) return;
  uint32_t top = mag_idx(c->top), bottom = mag_idx(c->bottom);
  uint64_t h = __atomic_load_n(&s->head, __ATOMIC_RELAXED);
  for (;;) {
    __atomic_store_n(&mag_link[bottom], (uint32_t)h, __ATOMIC_RELAXED);
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
  if (c->top) __atomic_store_n(&mag_link[mag_idx(c->bottom)], mag_idx(m), __ATOMIC_RELAXED);
  else c->top = m;
  c->bottom = m;
}

tp__mag *tp__mag_pop(tp__mag_stack *s) {
  /* acquire: see the link and contents the pusher published. */
  uint64_t h = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
  for (;;) {
    uint32_t i = (uint32_t)h;
    if (i == 0) return NULL;
    uint32_t below = __atomic_load_n(&mag_link[i], __ATOMIC_RELAXED);
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
  uint32_t i = __atomic_load_n(&mag_link[mag_idx(m)], __ATOMIC_RELAXED);
  return i ? mag_at(i) : NULL;
}

tp__mag *tp__mag_new(void) {
  pthread_once(&mag_once, mag_init);
  tp__mag *m = tp__mag_pop(&mag_empty);
  if (m) {
    uint32_t i = mag_idx(m);
    if (mag_cold[i]) { /* we own it: its pages fault in again */
      mag_cold[i] = 0;
      tp__counter_add(&tp__os.resident, (int64_t)sizeof(tp__mag));
    }
    return m;
  }
  uint32_t i = __atomic_fetch_add(&mag_fresh, 1, __ATOMIC_RELAXED);
  if (i >= MAG_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  m = mag_at(i);
  tp__counter_add(&tp__os.mapped, (int64_t)sizeof(tp__mag));
  tp__counter_add(&tp__os.resident, (int64_t)sizeof(tp__mag));
  return m;
}

size_t tp__mag_trim(unsigned keep) {
  /* acquire: pairs with mag_init's release; no magazine exists before. */
  if (!__atomic_load_n(&mag_base, __ATOMIC_ACQUIRE)) return 0;
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
    uint32_t i = mag_idx(m);
    if (!mag_cold[i] && tp__os_decommit(m, sizeof *m) == 0) {
      mag_cold[i] = 1;
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


