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
static uint32_t mag_fresh;  /* next never-used index (starts at 1) */
static tp__mag_stack mag_empty;
static pthread_once_t mag_once = PTHREAD_ONCE_INIT;

_Static_assert(sizeof(tp__mag) == 4096, "a magazine is one page");

static void mag_init(void) {
  void *b = mmap(NULL, (size_t)MAG_MAX * sizeof(tp__mag), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  void *l = mmap(NULL, (size_t)MAG_MAX * sizeof(uint32_t), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (b == MAP_FAILED || l == MAP_FAILED)
    tp__fatal("tp__mag_init", NULL, "cannot reserve magazine space");
  mag_base = b;
  mag_link = l;
  __atomic_store_n(&mag_fresh, 1, __ATOMIC_RELAXED);
}

static inline tp__mag *mag_at(uint32_t i) {
  return (tp__mag *)(mag_base + (size_t)i * sizeof(tp__mag));
}

void tp__mag_push(tp__mag_stack *s, tp__mag *m) {
  uint64_t h = __atomic_load_n(&s->head, __ATOMIC_RELAXED);
  for (;;) {
    __atomic_store_n(&mag_link[m->idx], (uint32_t)h, __ATOMIC_RELAXED);
    uint64_t nh = ((h >> 32) + 1) << 32 | m->idx;
    /* release: publishes m's contents and link with the new head. */
    if (__atomic_compare_exchange_n(&s->head, &h, nh, true, __ATOMIC_RELEASE,
                                    __ATOMIC_RELAXED))
      return;
  }
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
  uint32_t i = __atomic_load_n(&mag_link[m->idx], __ATOMIC_RELAXED);
  return i ? mag_at(i) : NULL;
}

tp__mag *tp__mag_new(void) {
  pthread_once(&mag_once, mag_init);
  tp__mag *m = tp__mag_pop(&mag_empty);
  if (m) return m;
  uint32_t i = __atomic_fetch_add(&mag_fresh, 1, __ATOMIC_RELAXED);
  if (i >= MAG_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  m = mag_at(i);
  m->idx = i;
  tp__counter_add(&tp__os.mapped, (int64_t)sizeof(tp__mag));
  tp__counter_add(&tp__os.resident, (int64_t)sizeof(tp__mag));
  return m;
}

void tp__mag_free(tp__mag *m) {
  m->count = 0;
  tp__mag_push(&mag_empty, m);
}

uint64_t tp__mag_bytes(void) {
  uint32_t f = __atomic_load_n(&mag_fresh, __ATOMIC_RELAXED);
  return f > 1 ? (uint64_t)(f - 1) * sizeof(tp__mag) : 0;
}
