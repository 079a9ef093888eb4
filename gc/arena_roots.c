/*
 * Arenas as roots: tp_heap_add_arena / tp_heap_remove_arena, and the scan
 * of registered arenas in a collection's root phase.
 *
 * What is scanned. The allocated bytes of every arena registered with the
 * heap (chunks up to their bump pointers, large allocations; for a
 * TP_ARENA_CONCURRENT arena every per-CPU region and the shared region),
 * conservatively, every aligned word, like tp_root_add_range. The arena
 * layer walks them (tp__arena_foreach_range, arena/arena_ranges.c): the
 * collector never reads a chunk's unallocated tail or memory a reset gave
 * up.
 *
 * Registrations. One record per (heap, arena) pair, on two lists: the
 * heap's (h->arena_links, doubly linked) and the arena's (singly linked,
 * its head in the arena's observer word). An arena may be registered with
 * several heaps, each once. Both lists change only under arena_roots_lock,
 * a process-wide mutex (rank TP__FORK_RANK_HEAP_ARENAS, before the arena
 * locks and the heap locks).
 *
 * Why a scan never reads freed memory. Every scan of h's arenas holds
 * arena_roots_lock and the lock of every arena registered with h, taken
 * with the world stopped and before h->lock (tp__heap_arenas_hold/_release,
 * gc/collect.c): in a concurrent cycle from pause 1's start to the end of
 * its root shading, and in pause 2 around the checkmark only (when it is
 * on); in the stop-the-world fallback until its mark and checkmark are
 * done. The concurrent mark between the pauses reads no arena.
 *  - tp_arena_destroy (and so tp_arena_retire's deferred destroy) of an
 *    observed arena first calls arena_destroyed, which takes
 *    arena_roots_lock and drops every registration of the arena: it waits
 *    for a scan in progress, and no later scan sees the arena.
 *  - tp_arena_reset and tp_arena_rewind of an observed arena drop memory
 *    holding the arena's lock (arena layer), so not during a scan.
 *  - tp_heap_destroy drops the heap's registrations under the lock, leaving
 *    no arena with an observer word pointing at freed records.
 *
 * Why a stop-the-world scan sees every heap pointer stored in an arena.
 * The threads that may store heap pointers into arena memory are the
 * attached ones (rule 4 of docs/gc.md: an unattached thread holds no heap
 * pointer across a point where a collection may run); they are stopped, at
 * safepoints or in blocking sections, before the collector takes the locks,
 * and their stores happen-before its reads (the handshake lock). An
 * unattached thread may go on allocating from a concurrent arena while it
 * is scanned; what it writes holds no heap pointer the collection must
 * keep.
 *
 * Reset, rewind, destroy while a mark runs (the concurrent marker's rule).
 * Dropping arena memory is a bulk deletion of every pointer in it. Under
 * snapshot-at-the-beginning marking, the registered arenas are scanned with
 * the other roots in the initial pause, so every object they reached then
 * is already gray or black: a later deletion, one pointer at a time or the
 * whole arena at once, cannot hide an object from that mark. So reset,
 * rewind, destroy and remove need no barrier, before or during a mark. A
 * heap pointer stored into arena memory after the snapshot is a root store
 * (no barrier either): the object was reachable from the storing thread's
 * stack or a heap field when it was loaded, and SATB keeps it through that
 * path (the stack is scanned at the handshake, heap fields are protected by
 * tp_heap_write's deletion barrier). An arena added after pause 1 is a root
 * from the next cycle's pause 1 on. Because arena words change after the
 * snapshot, pause 2's checkmark reads them leniently, like stack words
 * (gc/roots.c, gc/mark.c).
 *
 * Fork: the prepare handler holds arena_roots_lock (rank
 * TP__FORK_RANK_HEAP_ARENAS); observed arenas are in the arena layer's
 * registry, whose handler holds their locks.
 */
#define _GNU_SOURCE
#include "gc/heap_internal.h"

#include "arena/arena_roots_internal.h"
#include "core/fault_internal.h"
#include "core/fork_internal.h"
#include "core/list_internal.h"

#include <errno.h>
#include <stdlib.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* One registration: arena a is a root of heap h. */
struct tp__arena_link {
  tp_heap *h;
  tp_arena *a;
  struct tp__arena_link *hprev, *hnext; /* h->arena_links */
  struct tp__arena_link *anext;         /* the arena's registrations */
};

static pthread_mutex_t arena_roots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t arena_roots_once = PTHREAD_ONCE_INIT;

static void roots_fork_prepare(void) { pthread_mutex_lock(&arena_roots_lock); }
static void roots_fork_release(void) { pthread_mutex_unlock(&arena_roots_lock); }

/* Unlinks l from its arena's list (lock held); clears the arena's observer
 * word when it was the last. */
static void unlink_from_arena(struct tp__arena_link *l) {
  struct tp__arena_link *head = tp__arena_observer(l->a);
  if (head == l) {
    head = l->anext;
  } else {
    struct tp__arena_link *p = head;
    while (p->anext != l) p = p->anext;
    p->anext = l->anext;
  }
  tp__arena_observer_set(l->a, head);
}

static void unlink_from_heap(struct tp__arena_link *l) {
  tp_heap *h = l->h;
  TP__LIST_UNLINK(h->arena_links, l, hprev, hnext);
  __atomic_store_n(&h->narenas, h->narenas - 1, __ATOMIC_RELAXED);
}

/* The arena layer's observer: a is being destroyed (tp_arena_destroy, or
 * tp_arena_retire's deferred destroy). */
static void arena_destroyed(tp_arena *a) {
  pthread_mutex_lock(&arena_roots_lock);
  struct tp__arena_link *l = tp__arena_observer(a);
  while (l) {
    struct tp__arena_link *next = l->anext;
    unlink_from_heap(l);
    free(l);
    l = next;
  }
  tp__arena_observer_set(a, NULL);
  pthread_mutex_unlock(&arena_roots_lock);
}

static void arena_roots_init(void) {
  tp__fork_register(TP__FORK_RANK_HEAP_ARENAS, roots_fork_prepare, roots_fork_release,
                    roots_fork_release);
  tp__arena_observer_set_fn(arena_destroyed);
}

static struct tp__arena_link *find_link(tp_arena *a, const tp_heap *h) {
  struct tp__arena_link *l = tp__arena_observer(a);
  while (l && l->h != h) l = l->anext;
  return l;
}

int tp_heap_add_arena(tp_heap *h, tp_arena *a) {
  if (!h || !a || h->magic != TP__HEAP_MAGIC) {
    errno = EINVAL;
    return -EINVAL;
  }
  pthread_once(&arena_roots_once, arena_roots_init);
  struct tp__arena_link *l = tp__malloc(sizeof *l);
  if (!l) {
    errno = ENOMEM;
    return -ENOMEM;
  }
  pthread_mutex_lock(&arena_roots_lock);
  if (find_link(a, h)) {
    pthread_mutex_unlock(&arena_roots_lock);
    free(l);
    errno = EEXIST;
    return -EEXIST;
  }
  l->h = h;
  l->a = a;
  l->anext = tp__arena_observer(a);
  tp__arena_observer_set(a, l);
  TP__LIST_PUSH(h->arena_links, l, hprev, hnext);
  __atomic_store_n(&h->narenas, h->narenas + 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&arena_roots_lock);
  return 0;
}

int tp_heap_remove_arena(tp_heap *h, tp_arena *a) {
  if (!h || !a || h->magic != TP__HEAP_MAGIC) {
    errno = EINVAL;
    return -EINVAL;
  }
  pthread_once(&arena_roots_once, arena_roots_init);
  pthread_mutex_lock(&arena_roots_lock);
  struct tp__arena_link *l = find_link(a, h);
  if (l) {
    unlink_from_arena(l);
    unlink_from_heap(l);
  }
  pthread_mutex_unlock(&arena_roots_lock);
  if (!l) {
    errno = ENOENT;
    return -ENOENT;
  }
  free(l);
  return 0;
}

void tp__heap_arenas_destroy(tp_heap *h) {
  if (!__atomic_load_n(&h->narenas, __ATOMIC_RELAXED)) return; /* none: nobody adds now */
  pthread_mutex_lock(&arena_roots_lock);
  while (h->arena_links) {
    struct tp__arena_link *l = h->arena_links;
    unlink_from_arena(l);
    unlink_from_heap(l);
    free(l);
  }
  pthread_mutex_unlock(&arena_roots_lock);
}

void tp__heap_arenas_hold(tp_heap *h) {
  /* relaxed: an add racing this collection comes from a thread that is not
   * stopped, so not attached: it holds no heap pointer (see above) and
   * the arena is scanned from the next collection on. */
  h->arenas_held = __atomic_load_n(&h->narenas, __ATOMIC_RELAXED) != 0;
  if (!h->arenas_held) return;
  pthread_mutex_lock(&arena_roots_lock);
  for (struct tp__arena_link *l = h->arena_links; l; l = l->hnext) tp__arena_ranges_lock(l->a);
}

void tp__heap_arenas_release(tp_heap *h) {
  if (!h->arenas_held) return;
  for (struct tp__arena_link *l = h->arena_links; l; l = l->hnext) tp__arena_ranges_unlock(l->a);
  pthread_mutex_unlock(&arena_roots_lock);
  h->arenas_held = false;
}

size_t tp__heap_scan_arenas(tp_heap *h, tp__arena_range_fn *fn, void *arg) {
  size_t bytes = 0;
  if (!h->arenas_held) return 0;
  for (struct tp__arena_link *l = h->arena_links; l; l = l->hnext)
    bytes += tp__arena_foreach_range(l->a, fn, arg);
  return bytes;
}
