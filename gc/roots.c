/*
 * Roots: the registered precise root slots (a set of slot addresses,
 * core/ptrset_internal.h) and conservative root ranges, and
 * the enumeration of every root of a collection for the marker: those,
 * the stopped threads' stacks and registers (and a blocking thread's
 * copied frame), the registered arenas (gc/arena_roots.c), the finalizer
 * queue and the finalizers being run.
 */
#define _GNU_SOURCE
#include "gc/mark_internal.h"

#include "core/array_internal.h"
#include "core/debug_internal.h"

#include <errno.h>
#include <stdlib.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- roots --------------------------------------------------------------------- */

int tp_root_add(tp_heap *h, void **slot) {
  if (!h || !slot) {
    errno = EINVAL;
    return -EINVAL;
  }
  pthread_mutex_lock(&h->lock);
  int rc = tp__ptrset_add(&h->roots, slot);
  pthread_mutex_unlock(&h->lock);
  if (rc) errno = -rc;
  return rc;
}

int tp_root_remove(tp_heap *h, void **slot) {
  if (!h || !slot) {
    errno = EINVAL;
    return -EINVAL;
  }
  pthread_mutex_lock(&h->lock);
  int rc = tp__ptrset_remove(&h->roots, slot) ? -EINVAL : 0;
  pthread_mutex_unlock(&h->lock);
  if (rc) errno = -rc;
  return rc;
}

int tp_root_add_range(tp_heap *h, void *start, size_t len) {
  if (!h || !start || !len || (uintptr_t)start + len < (uintptr_t)start) {
    errno = EINVAL;
    return -EINVAL;
  }
  pthread_mutex_lock(&h->lock);
  int rc = 0;
  for (size_t i = 0; i < h->nranges; i++)
    if (h->ranges[i].start == (uintptr_t)start) rc = -EEXIST;
  if (!rc) rc = TP__ARRAY_RESERVE(h->ranges, h->ranges_cap, h->nranges + 1, 8);
  if (!rc) h->ranges[h->nranges++] = (struct tp__range){(uintptr_t)start, len};
  pthread_mutex_unlock(&h->lock);
  if (rc) errno = -rc;
  return rc;
}

int tp_root_remove_range(tp_heap *h, void *start) {
  if (!h || !start) {
    errno = EINVAL;
    return -EINVAL;
  }
  pthread_mutex_lock(&h->lock);
  int rc = -EINVAL;
  for (size_t i = 0; i < h->nranges; i++)
    if (h->ranges[i].start == (uintptr_t)start) {
      h->ranges[i] = h->ranges[--h->nranges];
      rc = 0;
      break;
    }
  pthread_mutex_unlock(&h->lock);
  if (rc) errno = -rc;
  return rc;
}

/* ---- the roots of a collection --------------------------------------------------- */

/* tp__mark_words as the arena layer's range callback (registered arenas). */
static void mark_range(void *mk, const char *lo, const char *hi) { tp__mark_words(mk, lo, hi); }

void tp__mark_roots(struct tp__marker *mk) {
  tp_heap *h = mk->h;
  void **s;
  for (size_t i = 0; (s = tp__ptrset_next(&h->roots, &i));) {
    if (*s) tp__mark_visit(mk, (uintptr_t)*s);
  }
  for (size_t i = 0; i < h->nranges; i++)
    tp__mark_words(mk, (const char *)h->ranges[i].start,
               (const char *)(h->ranges[i].start + h->ranges[i].len));
  for (tp__mut *m = h->muts; m; m = m->next) {
    if (m->state == TP__MS_DETACHED) continue;
    mk->lenient = mk->check && mk->concurrent;
    tp__mark_words(mk, m->scan_lo, m->stack_hi);
    if (m->state == TP__MS_BLOCKING)
      tp__mark_words(mk, (const char *)m->spill, (const char *)(m->spill + m->nspill));
    mk->lenient = false;
  }
  /* Registered arenas (gc/arena_roots.c; nothing unless the collector
   * holds them). The checkmark after a concurrent mark reads their words
   * leniently, like stack words: arena memory changes between pause 1 and
   * pause 2 without a barrier (stores, resets, rewinds), a chunk re-used
   * after a reset or rewind can hold stale words left from before it
   * (pointers to objects already unreachable at pause 1, freed by this
   * sweep), and an arena added during the mark was not a root at pause 1
   * (what only it held then was garbage by the rules, as it would be for
   * a stop-the-world collection run just before the add). A stale word is
   * memory the program did not write since and cannot use; every pointer
   * it stored there since pause 1 is marked by the argument in gc/mark.c.
   * Objects found marked are traced strictly. */
  mk->lenient = mk->check && mk->concurrent;
  tp__heap_scan_arenas(h, mark_range, mk);
  mk->lenient = false;
  for (size_t i = 0; i < h->finq_n; i++)
    tp__mark_visit(mk, (uintptr_t)h->finq[(h->finq_head + i) % h->finq_cap]);
  for (struct tp__finrun *f = h->running; f; f = f->next)
    tp__mark_visit(mk, (uintptr_t)f->obj);
}

