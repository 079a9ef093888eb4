/*
 * The write barrier's slow path and the SATB log.
 *
 * tp_heap_write (inline, <tidepool/gc.h>) tests h->flags & TP__F_MARK and,
 * while a concurrent mark runs, calls tp__heap_write_slow before its
 * store. That logs the value being overwritten (Yuasa's deletion barrier:
 * snapshot-at-the-beginning; the argument is at the top of gc/mark.c).
 * tp_weak_get logs the referent it returns the same way.
 *
 * The log. Each attached thread appends to a chunk of its own
 * (m->satb, TP__SATB_N values): no lock, no atomic. A full chunk is pushed
 * on h->satb_full, a Treiber stack with one consumer, the marker, which
 * takes the whole stack with one exchange (so no ABA: nothing is popped
 * one by one), marks the values and gives the chunks back on h->satb_free
 * (satb_lock). The thread's next chunk comes from there or from malloc;
 * if neither has one it waits for the marker to give one back, parking
 * if a pause wants it (the pushed chunk is on the stack, so the marker
 * has work to return; the wait is bounded by one drain of the stack).
 * Chunks that are not full are read by the collector in pause 2, when
 * their threads are stopped, and by detach (which pushes the thread's
 * chunk before the record can go). Threads that are not attached (they
 * should not hold heap pointers, but must not break the heap) append to
 * h->satb_shared under satb_lock.
 *
 * Orderings. The push is a release CAS, the marker's exchange acquire:
 * the marker reads the values written before the push. The flag test in
 * tp_heap_write is relaxed: TP__F_MARK changes only while every attached
 * thread is stopped (pause 1 sets it, pause 2 clears it, under sp_lock,
 * which the thread takes to resume), and tp_heap_write has no safepoint
 * inside, so a running thread's whole store is before or after a pause.
 */
#define _GNU_SOURCE
#include "gc/mark_internal.h"

#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/os_internal.h"

#include <sched.h>
#include <stdlib.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

static void push_full(tp_heap *h, struct tp__satb *c) {
  struct tp__satb *head = __atomic_load_n(&h->satb_full, __ATOMIC_RELAXED);
  do {
    c->next = head;
    /* release: the marker's acquire exchange sees c->v and c->n. */
  } while (!__atomic_compare_exchange_n(&h->satb_full, &head, c, true, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED));
}

/* An empty chunk: a given-back one, else a new one; NULL if neither. */
static struct tp__satb *get_chunk(tp_heap *h) {
  pthread_mutex_lock(&h->satb_lock);
  struct tp__satb *c = h->satb_free;
  if (c) h->satb_free = c->next;
  pthread_mutex_unlock(&h->satb_lock);
  if (!c) c = tp__malloc(sizeof *c);
  if (c) c->n = 0;
  return c;
}

/* m's chunk is full or missing: pushes it and gets an empty one. false if
 * the mark ended while waiting for one (then nothing needs logging). */
TP_NOINLINE static bool next_chunk(tp_heap *h, tp__mut *m) {
  if (m->satb) {
    push_full(h, m->satb);
    m->satb = NULL;
  }
  for (;;) {
    if ((m->satb = get_chunk(h))) return true;
    /* Out of memory: wait for the marker to give a chunk back. */
    if (tp__stw_wanted(h)) tp__gc_park(h, m);
    if (!(__atomic_load_n(&h->flags, __ATOMIC_RELAXED) & TP__F_MARK)) return false;
    sched_yield();
  }
}

void tp__satb_log(tp_heap *h, uintptr_t v) {
  if (TP_UNLIKELY(h->nobarrier)) return; /* TIDEPOOL_GC_NOBARRIER: debug */
  tp__mut *m = tp__tls_mut;
  if (!m || m->heap != h) m = tp__find_mut(h);
  if (m && m->attach_depth && m->state == TP__MS_RUNNING) {
    struct tp__satb *c = m->satb;
    if (TP_UNLIKELY(!c || c->n == TP__SATB_N)) {
      if (!next_chunk(h, m)) return;
      c = m->satb;
    }
    c->v[c->n++] = v;
    return;
  }
  /* Not attached: the shared log. On ENOMEM the value is dropped: such a
   * thread holds no heap pointer the collector promised to keep. */
  pthread_mutex_lock(&h->satb_lock);
  struct tp__satb *c = h->satb_shared;
  if (c && c->n == TP__SATB_N) {
    push_full(h, c);
    c = h->satb_shared = NULL;
  }
  if (!c && (c = h->satb_free)) {
    h->satb_free = c->next;
    c->n = 0;
  }
  if (!c && (c = tp__malloc(sizeof *c))) c->n = 0;
  if (c) {
    c->v[c->n++] = v;
    h->satb_shared = c;
  }
  pthread_mutex_unlock(&h->satb_lock);
}

TP_API TP_NOINLINE void tp__heap_write_slow(tp_heap *h, void **field) {
  /* relaxed: coherence alone makes this read the value the store below
   * replaces, or one stored after the mark began (see gc/mark.c). */
  void *old = __atomic_load_n(field, __ATOMIC_RELAXED);
  if (old) tp__satb_log(h, (uintptr_t)old);
}

void tp__satb_flush_mut(tp_heap *h, tp__mut *m) {
  struct tp__satb *c = m->satb;
  m->satb = NULL;
  if (!c) return;
  if (c->n) {
    push_full(h, c);
  } else {
    pthread_mutex_lock(&h->satb_lock);
    c->next = h->satb_free;
    h->satb_free = c;
    pthread_mutex_unlock(&h->satb_lock);
  }
}

struct tp__satb *tp__satb_take(tp_heap *h) {
  /* acquire: pairs with push_full's release. */
  return __atomic_exchange_n(&h->satb_full, NULL, __ATOMIC_ACQUIRE);
}

void tp__satb_give_back(tp_heap *h, struct tp__satb *list) {
  if (!list) return;
  struct tp__satb *last = list;
  while (last->next) last = last->next;
  pthread_mutex_lock(&h->satb_lock);
  last->next = h->satb_free;
  h->satb_free = list;
  pthread_mutex_unlock(&h->satb_lock);
}

void tp__satb_free_all(tp_heap *h) {
  struct tp__satb *lists[2] = {tp__satb_take(h), h->satb_free};
  free(h->satb_shared); /* its next is not a link */
  h->satb_free = h->satb_shared = NULL;
  for (int i = 0; i < 2; i++)
    for (struct tp__satb *c = lists[i], *next; c; c = next) {
      next = c->next;
      free(c);
    }
}
