/*
 * Weak references and finalizers: tp_weak_new/get/free, the registration
 * of objects with a finalizer, the finalizer queue, and running the
 * finalizers (tp_heap_run_finalizers, and after a collection on the thread
 * that ran it).
 *
 * A weak reference is cleared by the collection that finds its target
 * unreachable from the roots, before finalizable objects are resurrected
 * (gc/collect.c), so it reads NULL from then on even if a finalizer
 * revives the object. Every object with a finalizer is on h->fin_objs
 * until a collection finds it white; then it moves to the finalizer queue
 * (a ring, itself a root) and it and what it reaches stay alive until its
 * finalizer has run. Finalizers run outside every heap lock; one being
 * run is linked on h->running (a root) meanwhile, so each runs once, on
 * one thread.
 */
#define _GNU_SOURCE
#include "gc/mark_internal.h"

#include "core/array_internal.h"
#include "core/list_internal.h"
#include "core/debug_internal.h"
#include "core/fault_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

__thread int tp__tls_in_finalizers;

/* ---- weak references ---------------------------------------------------------------- */

tp_weak *tp_weak_new(tp_heap *h, void *obj) {
  if (!h || !obj || h->magic != TP__HEAP_MAGIC) {
    errno = EINVAL;
    return NULL;
  }
  tp_weak *w = tp__malloc(sizeof *w);
  if (!w) {
    errno = ENOMEM;
    return NULL;
  }
  pthread_mutex_lock(&h->lock);
  if (tp__gc_find(h, (uintptr_t)obj) != (uintptr_t)obj) {
    pthread_mutex_unlock(&h->lock);
    free(w);
    errno = EINVAL;
    return NULL;
  }
  w->heap = h;
  w->target = obj;
  TP__LIST_PUSH(h->weaks, w, prev, next);
  pthread_mutex_unlock(&h->lock);
  return w;
}

void *tp_weak_get(tp_weak *w) {
  if (!w) {
    errno = EINVAL;
    return NULL;
  }
  /* acquire: pairs with the collector's release store of NULL (and with
   * the creation's unlock) — a non-NULL result is an object that was
   * reachable when this thread last passed a safepoint. */
  void *t = __atomic_load_n(&w->target, __ATOMIC_ACQUIRE);
  if (t) {
    /* While a mark runs, the referent is logged like a value the barrier
     * overwrites: the caller now holds a pointer the snapshot may not have
     * reached (gc/mark.c). relaxed: see gc/barrier.c. */
    tp_heap *h = __atomic_load_n(&w->heap, __ATOMIC_RELAXED);
    if (h && TP_UNLIKELY(__atomic_load_n(&h->flags, __ATOMIC_RELAXED) & TP__F_MARK))
      tp__satb_log(h, (uintptr_t)t);
  }
  return t;
}

void tp_weak_free(tp_weak *w) {
  if (!w) return;
  tp_heap *h = __atomic_load_n(&w->heap, __ATOMIC_RELAXED);
  if (h) {
    pthread_mutex_lock(&h->lock);
    TP__LIST_UNLINK(h->weaks, w, prev, next);
    pthread_mutex_unlock(&h->lock);
  }
  free(w);
}

/* ---- finalizers ------------------------------------------------------------------------ */

size_t tp_heap_run_finalizers(tp_heap *h) {
  if (!h) {
    errno = EINVAL;
    return 0;
  }
  if (tp__tls_in_finalizers) return 0;
  tp__tls_in_finalizers = 1;
  size_t ran = 0;
  struct tp__finrun node;
  for (;;) {
    pthread_mutex_lock(&h->lock);
    if (!h->finq_n) {
      pthread_mutex_unlock(&h->lock);
      break;
    }
    node.obj = h->finq[h->finq_head];
    h->finq_head = (h->finq_head + 1) % h->finq_cap;
    h->finq_n--;
    node.tid = pthread_self();
    node.next = h->running; /* a root while it runs */
    h->running = &node;
    tp__counter_add(&h->fin_pending, -1);
    pthread_mutex_unlock(&h->lock);

    const tp_type *t = tp__hdr_type(*(uintptr_t *)((char *)node.obj - 8));
    t->finalize(node.obj);

    pthread_mutex_lock(&h->lock);
    for (struct tp__finrun **pp = &h->running; *pp; pp = &(*pp)->next)
      if (*pp == &node) {
        *pp = node.next;
        break;
      }
    pthread_mutex_unlock(&h->lock);
    tp__counter_add(&h->fin_run, 1);
    ran++;
  }
  tp__tls_in_finalizers = 0;
  return ran;
}

/* Registers obj for finalization. false + ENOMEM. */
bool tp__fin_register(tp_heap *h, void *obj) {
  pthread_mutex_lock(&h->lock);
  if (TP__ARRAY_RESERVE(h->fin_objs, h->fin_cap, h->nfin + 1, 64)) {
    pthread_mutex_unlock(&h->lock);
    errno = ENOMEM;
    return false;
  }
  h->fin_objs[h->nfin++] = obj;
  pthread_mutex_unlock(&h->lock);
  return true;
}

/* Appends obj to the finalizer queue (a ring). false on ENOMEM. */
bool tp__finq_push(tp_heap *h, void *obj) {
  if (h->finq_n == h->finq_cap) {
    size_t old = h->finq_cap;
    if (TP__ARRAY_RESERVE(h->finq, h->finq_cap, old + 1, 64)) return false;
    /* The ring's wrapped part [0, head + n - old) moves past the old end,
     * so the n entries run on from head again (the capacity at least
     * doubled: there is room). */
    if (h->finq_head + h->finq_n > old)
      memcpy(h->finq + old, h->finq, (h->finq_head + h->finq_n - old) * sizeof *h->finq);
  }
  h->finq[(h->finq_head + h->finq_n) % h->finq_cap] = obj;
  h->finq_n++;
  return true;
}

/* Runs the finalizers a collection of ours queued, unless this thread is
 * already running finalizers (then the outer loop picks them up). */
void tp__gc_after_collection(tp_heap *h) {
  if (!tp__tls_in_finalizers && tp__counter_get(&h->fin_pending)) tp_heap_run_finalizers(h);
}

/* ---- at the end of a mark ------------------------------------------------------------ */

void tp__gc_clear_weaks(tp_heap *h) {
  /* Weak references die with their target's reachability from the roots. */
  for (tp_weak *w = h->weaks; w; w = w->next) {
    void *t = __atomic_load_n(&w->target, __ATOMIC_RELAXED);
    /* release: a later tp_weak_get that reads NULL also sees the sweep. */
    if (t && !tp__gc_is_marked(h, (uintptr_t)t)) __atomic_store_n(&w->target, NULL, __ATOMIC_RELEASE);
  }

}

void tp__gc_queue_finalizers(tp_heap *h, struct tp__marker *mk) {
  /* Unreachable objects with a finalizer: queue them, keep them and what
   * they reach alive until the finalizer has run. */
  size_t keep = 0;
  uint64_t queued = 0;
  for (size_t i = 0; i < h->nfin; i++) {
    void *obj = h->fin_objs[i];
    if (tp__gc_is_marked(h, (uintptr_t)obj)) {
      h->fin_objs[keep++] = obj;
      continue;
    }
    if (tp__finq_push(h, obj))
      queued++;
    else
      h->fin_objs[keep++] = obj; /* no memory for the queue: next time */
    tp__mark_visit(mk, (uintptr_t)obj);
  }
  h->nfin = keep;
  tp__counter_add(&h->fin_pending, (int64_t)queued);
}
