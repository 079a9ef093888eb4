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
 * Store assists. A thread that only stores (no allocation, so the
 * pacer's assists never slow it) can log values faster than the marker
 * looks them up: each round's log is then bigger than the last, and
 * whatever the concurrent mark leaves, pause 2 marks with the world
 * stopped (1.8-5.4 s under bench gc_mark_cpu_swap before assists). So when a
 * round's log does not shrink, the collector turns h->satb_throttle on
 * (tp__satb_throttle; off again in pause 2): from then on a writer that
 * fills its chunk pushes it and waits, as a blocking section, until the
 * marker has taken a list after the push (satb_takes moved; cv_satb) or
 * 1 ms has passed, whichever is first. Then it re-reads the field and the
 * mark flag and logs again (tp__heap_write_slow's loop): the wait was a
 * blocking section, so a pause 2 or a whole new cycle may have run, and
 * the value its store replaces must be logged in the mark that is running
 * when it stores. The throttle also goes on when the concurrent mark
 * ends, for the tail between the marker's last (empty) take and the stop
 * of the world, which can take milliseconds. Termination: while throttled
 * a writer pushes at most
 * one chunk per list the marker takes, plus one per millisecond, so a
 * round's log is bounded by the writers and no longer by their speed; the
 * collector still ends the concurrent mark at the first throttled round
 * whose log does not shrink (gc/collect.c), and pause 2 then marks the
 * chunks pushed since the last take and the ones not yet full: a few per
 * writer (tests/gc_store_assist_test bounds it). Weak-reference reads
 * (tp_weak_get) log without assisting: they have no field to re-read.
 * Counted in store_assists and store_assist_ns.
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

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
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

/* A store assist (the header): m has just pushed its full chunk; waits,
 * as a blocking section, until the marker takes a list or 1 ms passes,
 * the throttle goes off or the mark ends. */
TP_NOINLINE static void store_assist(tp_heap *h, uint64_t takes) {
  uint64_t t0 = tp__now_ns();
  tp_heap_blocking_enter(h);
  struct timespec ts = tp__deadline_ns(TP__STORE_ASSIST_MAX_NS);
  pthread_mutex_lock(&h->satb_lock);
  h->satb_waiters++;
  while (__atomic_load_n(&h->satb_takes, __ATOMIC_RELAXED) == takes &&
         __atomic_load_n(&h->satb_throttle, __ATOMIC_RELAXED) &&
         (__atomic_load_n(&h->flags, __ATOMIC_RELAXED) & TP__F_MARK))
    if (pthread_cond_timedwait(&h->cv_satb, &h->satb_lock, &ts) == ETIMEDOUT) break;
  h->satb_waiters--;
  pthread_mutex_unlock(&h->satb_lock);
  tp_heap_blocking_leave(h);
  tp__counter_add(&h->store_assist_ns, (int64_t)(tp__now_ns() - t0));
  tp__counter_add(&h->store_assists, 1);
}

/* Logs v; false if it did not because it assisted instead (the caller
 * re-reads its field and the mark flag and calls again). */
static bool log_value(tp_heap *h, uintptr_t v, bool may_assist) {
  if (TP_UNLIKELY(h->nobarrier)) return true; /* TIDEPOOL_GC_NOBARRIER: debug */
  tp__mut *m = tp__tls_mut;
  if (!m || m->heap != h) m = tp__find_mut(h);
  if (m && m->attach_depth && m->state == TP__MS_RUNNING) {
    struct tp__satb *c = m->satb;
    if (TP_UNLIKELY(!c || c->n == TP__SATB_N)) {
      if (c && may_assist && __atomic_load_n(&h->satb_throttle, __ATOMIC_RELAXED)) {
        /* relaxed, read before the push: a take between the two ends the
         * wait early, which costs nothing but a shorter assist. */
        uint64_t takes = __atomic_load_n(&h->satb_takes, __ATOMIC_RELAXED);
        push_full(h, c);
        m->satb = NULL;
        store_assist(h, takes);
        return false;
      }
      if (!next_chunk(h, m)) return true;
      c = m->satb;
    }
    c->v[c->n++] = v;
    return true;
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
  return true;
}

void tp__satb_log(tp_heap *h, uintptr_t v) { (void)log_value(h, v, false); }

TP_API TP_NOINLINE void tp__heap_write_slow(tp_heap *h, void **field) {
  /* relaxed: coherence alone makes this read the value the store below
   * replaces, or one stored after the mark began (see gc/mark.c). */
  for (void *old; (old = __atomic_load_n(field, __ATOMIC_RELAXED));) {
    if (log_value(h, (uintptr_t)old, true)) return;
    /* It assisted (a blocking section): the mark may have ended. */
    if (!(__atomic_load_n(&h->flags, __ATOMIC_RELAXED) & TP__F_MARK)) return;
  }
}

void tp__satb_throttle(tp_heap *h, bool on) {
  pthread_mutex_lock(&h->satb_lock);
  __atomic_store_n(&h->satb_throttle, on, __ATOMIC_RELAXED);
  if (h->satb_waiters) pthread_cond_broadcast(&h->cv_satb);
  pthread_mutex_unlock(&h->satb_lock);
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
  struct tp__satb *list = __atomic_exchange_n(&h->satb_full, NULL, __ATOMIC_ACQUIRE);
  if (list && __atomic_load_n(&h->satb_throttle, __ATOMIC_RELAXED)) {
    /* Wakes the store assists waiting for a take (the header). */
    pthread_mutex_lock(&h->satb_lock);
    __atomic_store_n(&h->satb_takes, h->satb_takes + 1, __ATOMIC_RELAXED);
    if (h->satb_waiters) pthread_cond_broadcast(&h->cv_satb);
    pthread_mutex_unlock(&h->satb_lock);
  }
  return list;
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
