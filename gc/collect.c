/*
 * The collection cycle: stop the world (gc/mutators.c's handshake), mark
 * from the roots (gc/roots.c, gc/mark.c), clear weak references and
 * resurrect finalizable objects (gc/weak.c), verify (checkmark), sweep
 * (gc/sweep.c), restart the world, give memory back and pace the next
 * cycle (gc/pacing.c); and tp_heap_collect.
 *
 * Weak references are cleared after the roots are marked, before
 * finalizable objects are resurrected: a weak reference reads NULL from
 * the collection that finds its target unreachable on. Then every object
 * with a finalizer that is still white is moved to the finalizer queue
 * and marked from (it and what it reaches survive until the finalizer has
 * run; the queue is a root). Finalizers run after the world restarts, on
 * the collecting thread, outside every heap lock (gc/weak.c).
 */
#define _GNU_SOURCE
#include <tidepool/epoch.h>

#include "gc/mark_internal.h"

#include "core/debug_internal.h"
#include "core/os_internal.h"

#include <errno.h>
#include <time.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

static void mark_and_sweep(tp_heap *h, struct tp__release *rel) {
  uint64_t t0 = tp__now_ns();
  tp__gc_set_phase(h, TP_GC_PHASE_MARK);
  for (tp__mut *m = h->muts; m; m = m->next)
    if (m->state != TP__MS_DETACHED) tp__gc_retire_tlab(h, m);
  tp__mut_reap(h);

  /* The gray stack: mapped at the first collection; a small one on this
   * stack if that fails (overflow handling keeps marking correct). */
  uintptr_t fallback[64];
  size_t gbytes = tp__round_up(h->gray_cap * sizeof(void *), tp__os_page_size());
  if (!h->gray && (h->gray = tp__os_map(gbytes, 0)))
    tp__counter_add(&h->meta_bytes, (int64_t)gbytes);
  h->mark_epoch = (uint8_t)(h->mark_epoch % 255 + 1);
  struct tp__marker mk = {.h = h, .lo = h->lo, .span = h->hi - h->lo, .epoch = h->mark_epoch};
  if (h->gray) {
    mk.st = (uintptr_t *)h->gray;
    mk.cap = h->gray_cap;
  } else {
    mk.st = fallback;
    mk.cap = sizeof fallback / sizeof fallback[0];
  }

  tp__mark_roots(&mk);
  tp__mark_drain_all(&mk);

  tp__gc_clear_weaks(h);
  tp__gc_queue_finalizers(h, &mk);
  tp__mark_drain_all(&mk);
  if (mk.any_overflow) tp__counter_add(&h->overflows, 1);

  uint64_t t1 = tp__now_ns();
  if (h->checkmark) tp__gc_checkmark(h);
  uint64_t t2 = tp__now_ns();
  tp__gc_set_phase(h, TP_GC_PHASE_SWEEP);
  tp__gc_sweep(h, mk.epoch, rel);
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
      tp__mut_park_locked(h, self, sp);
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
  tp__gc_wait_all_stopped(h, self);
  pthread_mutex_unlock(&h->sp_lock);

  struct tp__release rel = {NULL, NULL};
  tp__heap_arenas_hold(h); /* registered arenas: see gc/arena_roots.c */
  pthread_mutex_lock(&h->lock);
  mark_and_sweep(h, &rel);
  pthread_mutex_unlock(&h->lock);
  tp__heap_arenas_release(h);

  pthread_mutex_lock(&h->sp_lock);
  __atomic_store_n(&h->stw, 0, __ATOMIC_RELAXED);
  h->stw_epoch++;
  pthread_cond_broadcast(&h->cv_resume);
  pthread_mutex_unlock(&h->sp_lock);

  tp__gc_note_pause(h, tp__now_ns() - t0); /* gc/metrics.c */
  tp__counter_add(&h->num_gc, 1);

  tp__gc_release(h, &rel);
  if (h->memory_limit && tp__gc_heap_sys(h) > h->memory_limit) {
    tp__gc_trim(h);
    tp__gc_pace(h);
  }
  tp__gc_set_phase(h, TP_GC_PHASE_IDLE);
  return true;
}

TP_NOINLINE bool tp__gc_collect(tp_heap *h, tp__mut *self) {
  bool r;
  TP__WITH_REGS_SPILLED(r = collect_inner(h, self));
  return r;
}

/* ---- collection entry points ---------------------------------------------------------- */

void tp_heap_collect(tp_heap *h) {
  if (!h || h->magic != TP__HEAP_MAGIC) {
    errno = EINVAL;
    return;
  }
  tp__mut *m = tp__find_mut(h);
  tp__gc_collect(h, m && m->attach_depth && m->state == TP__MS_RUNNING ? m : NULL);
  tp__gc_after_collection(h);
}

