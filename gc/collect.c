/*
 * The collection cycle and tp_heap_collect.
 *
 * A cycle is run by the heap's marker thread (started at the first
 * collection the heap asks for, stopped by tp_heap_destroy, gone in a
 * fork child, which starts another when it needs one, except in a TSan
 * build's child of a multi-threaded fork: core/fork_internal.h):
 *
 *   pause 1 (world stopped): retire every allocation buffer, shade the
 *     roots (gc/roots.c: root slots, ranges, every attached thread's stack
 *     and registers, blocking threads' saved frames, registered arenas
 *     (gc/arena_roots.c), the finalizer queue and running finalizers) --
 *     mark and push, no tracing -- then set TP__F_MARK (barrier on, new
 *     regions born black) and restart.
 *   concurrent mark: drain the gray stack and its address-ordered overflow
 *     pass, and the SATB chunks the mutators push, until all are empty --
 *     with the helper markers (gc/mark_parallel.c) for a cycle
 *     tp_heap_collect asked for, on a quarter of the markers (the marker
 *     thread alone on 2 CPUs) for one the pacer started.
 *   pause 2 (world stopped): the SATB chunks not yet pushed (every record's
 *     and the shared one), drain to empty, retire the allocation buffers,
 *     clear weak references, resurrect finalizable objects and mark from
 *     them, checkmark (TIDEPOOL_GC_CHECKMARK), move every region to the
 *     sweep list, pace the next cycle, clear TP__F_MARK and restart.
 *   concurrent sweep (gc/sweep.c), a few regions per h->lock hold; then
 *     the cycle is done (cycles_done, num_gc).
 *
 * h->phase (the public TP_GC_PHASE_* values, read by tp_heap_read_stats):
 * MARK from pause 1, MARK_TERMINATION in pause 2, SWEEP from the end of
 * pause 2, IDLE when the sweep is done. Each pause, and the fallback's one,
 * is recorded by tp__gc_note_pause (gc/metrics.c: total, last, max,
 * histogram, and the part of it spent stopping): two per concurrent cycle,
 * each from the stop request until the world is let go (gc/mutators.c,
 * tp__gc_wake_stopped, says how the end is timed).
 *
 * The argument that this marks everything reachable is at the top of
 * gc/mark.c. What the pauses hold: pause 1 is O(threads + stack bytes +
 * roots + ranges + finalizer queue), pause 2 O(threads + unpushed SATB
 * values and what they lead to that the concurrent mark had not reached +
 * weak references + finalizable objects (+ the checkmark traversal, a
 * debugging mode)); neither grows with the heap, neither sweeps.
 *
 * Who waits for the marker: tp_heap_collect waits (as a blocking section)
 * for a cycle that starts after it was called, like runtime.GC(). An
 * allocation that finds the pacer's trigger reached asks for a cycle and
 * goes on (tp__gc_trigger); past the goal while the cycle runs it yields
 * in bounded assists, past the hard limit it waits for the mark to end
 * (gc/pacing.c has the model). Without a marker thread (it could not be
 * created) collections are stop-the-world as before: mark_and_sweep
 * below, under one pause.
 *
 * Weak references are cleared after the mark, before finalizable objects
 * are resurrected: a weak reference reads NULL from the collection that
 * finds its target unreachable on. Then every object with a finalizer
 * that is still white is moved to the finalizer queue and marked from (it
 * and what it reaches survive until the finalizer has run; the queue is a
 * root). Finalizers run on mutators outside every heap lock: the caller of
 * tp_heap_collect, and allocating threads at their next refill
 * (gc/weak.c).
 *
 * Locks: the marker takes h->sp_lock to stop and restart the world and to
 * wait for work, h->lock during the pauses and per sweep batch, satb_lock
 * briefly to give chunks back; never two of them except h->lock then
 * satb_lock (pause 2), in rank order. With registered arenas, once the
 * world is stopped and before h->lock, it takes the arena-roots lock and
 * the arenas' locks (ranks 22, 25 < 40): in pause 1 until the roots are
 * shaded, in pause 2 only around the checkmark. It holds none while it
 * marks concurrently.
 */
#define _GNU_SOURCE
#include <tidepool/epoch.h>

#include "gc/mark_internal.h"

#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/fork_internal.h"
#include "core/os_internal.h"

#include <errno.h>
#include <time.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* Retires every attached thread's allocation buffers (world stopped,
 * h->lock held): from here on what they allocate starts in new holes. */
static void retire_all(tp_heap *h) {
  for (tp__mut *m = h->muts; m; m = m->next)
    if (m->state != TP__MS_DETACHED) tp__gc_retire_tlab(h, m);
}

/* Starts a mark in *mk (world stopped, h->lock held): the gray stack,
 * mapped at the first collection (the heap's small fallback array if that
 * fails: overflow handling keeps marking correct), a new epoch, and the
 * regions and large objects that exist now. */
static void mark_begin(tp_heap *h, struct tp__marker *mk) {
  size_t gbytes = tp__round_up(h->gray_cap * sizeof(void *), tp__os_page_size());
  if (!h->gray && (h->gray = tp__os_map(gbytes, 0)))
    tp__counter_add(&h->meta_bytes, (int64_t)gbytes);
  h->mark_epoch = (uint8_t)(h->mark_epoch % 255 + 1);
  *mk = (struct tp__marker){.h = h, .lo = h->lo, .span = h->hi - h->lo, .epoch = h->mark_epoch,
                            .regions = h->regions, .large = h->large, .ws = &h->mw};
  if (h->gray) {
    mk->st = (uintptr_t *)h->gray;
    mk->cap = h->gray_cap;
  } else {
    mk->st = h->gray_fallback;
    mk->cap = sizeof h->gray_fallback / sizeof h->gray_fallback[0];
  }
  tp__markwork_begin(&h->mw, mk);
}

/* Markers for a mark the world waits for (pause 2, the fallback): all of
 * them when work is left that is worth waking helpers for. */
static unsigned stopped_want(const tp_heap *h, const struct tp__marker *mk) {
  return mk->top > 1024 || __atomic_load_n(&h->mw.ovf_pending, __ATOMIC_RELAXED) ? h->markers : 1;
}

/* Sweeps what a concurrent cycle left unswept (a fork child's heap). */
static void finish_sweep(tp_heap *h, struct tp__release *rel) {
  while (!tp__gc_sweep_some(h, SIZE_MAX, rel)) {
  }
}

/* ---- stop-the-world: the fallback without a marker thread -------------------- */

static void mark_and_sweep(tp_heap *h, struct tp__release *rel) {
  uint64_t t0 = tp__now_ns();
  __atomic_store_n(&h->phase, TP__PH_MARK, __ATOMIC_RELAXED);
  retire_all(h);
  tp__mut_reap(h);
  finish_sweep(h, rel);
  struct tp__marker mk;
  mark_begin(h, &mk);

  tp__mark_roots(&mk);
  tp__mark_drain(&mk, stopped_want(h, &mk));

  __atomic_store_n(&h->phase, TP__PH_MARK_TERM, __ATOMIC_RELAXED);
  tp__gc_clear_weaks(h);
  tp__gc_queue_finalizers(h, &mk);
  tp__mark_drain(&mk, stopped_want(h, &mk));
  if (mk.any_overflow) tp__counter_add(&h->overflows, 1);

  uint64_t t1 = tp__now_ns();
  if (h->checkmark) tp__gc_checkmark(h, false);
  tp__heap_arenas_release(h); /* the scans are done: the caller held them */
  uint64_t t2 = tp__now_ns();
  __atomic_store_n(&h->phase, TP__PH_SWEEP, __ATOMIC_RELAXED);
  tp__gc_sweep(h, mk.epoch, rel);
  uint64_t t3 = tp__now_ns();

  __atomic_store_n(&h->live_bytes, mk.bytes, __ATOMIC_RELAXED);
  __atomic_store_n(&h->live_objs, mk.objs, __ATOMIC_RELAXED);
  __atomic_store_n(&h->alloc_since, 0, __ATOMIC_RELAXED);
  tp__counter_add(&h->mark_ns, (int64_t)(t1 - t0));
  tp__counter_add(&h->sweep_ns, (int64_t)(t3 - t2));
  tp__gc_pace(h);
  /* Idle again before h->lock goes: a fork child (its prepare handler
   * takes h->lock) never sees this collection's phases. */
  __atomic_store_n(&h->phase, TP__PH_IDLE, __ATOMIC_RELAXED);
}

static uint64_t restart_world(tp_heap *h, uint32_t flags, int phase);

/* The collection proper, called with the caller's registers spilled into
 * tp__gc_collect's frame (above this frame's stack pointer). */
TP_NOINLINE static bool collect_inner(tp_heap *h, tp__mut *self) {
  char *sp = tp__current_sp();
  uint64_t t0 = tp__now_ns();
  pthread_mutex_lock(&h->sp_lock);
  if (tp__stw_wanted(h)) {
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
  __atomic_fetch_or(&h->flags, TP__F_STW, __ATOMIC_RELAXED);
  if (self) self->scan_lo = sp;
  uint64_t stopped = tp__gc_wait_all_stopped(h, self);
  pthread_mutex_unlock(&h->sp_lock);

  struct tp__release rel = {NULL, NULL};
  /* Registered arenas (gc/arena_roots.c): world stopped, before h->lock
   * (rank order); mark_and_sweep releases them after its checkmark. */
  tp__heap_arenas_hold(h);
  pthread_mutex_lock(&h->lock);
  mark_and_sweep(h, &rel);
  pthread_mutex_unlock(&h->lock);

  /* No marker thread, so no concurrent mark: the flags go back to 0. */
  uint64_t end = restart_world(h, 0, TP__PH_IDLE);
  tp__gc_note_pause(h, end - t0, stopped - t0); /* gc/metrics.c */
  tp__counter_add(&h->num_gc, 1);

  tp__gc_release(h, &rel);
  if (h->memory_limit && tp__gc_heap_sys(h) > h->memory_limit) {
    tp__gc_trim(h);
    tp__gc_pace(h);
  }
  return true;
}

TP_NOINLINE bool tp__gc_collect(tp_heap *h, tp__mut *self) {
  bool r;
  TP__WITH_REGS_SPILLED(r = collect_inner(h, self));
  return r;
}


/* ---- the concurrent cycle ----------------------------------------------------------------- */

static bool stop_requested(tp_heap *h) { return __atomic_load_n(&h->marker_stop, __ATOMIC_RELAXED); }

/* Stops every attached thread (the marker is not one). Another thread's
 * stop-the-world collection in progress is waited out first. Returns when
 * the last thread had stopped (tp__now_ns). */
static uint64_t stop_world(tp_heap *h) {
  pthread_mutex_lock(&h->sp_lock);
  while (tp__stw_wanted(h)) pthread_cond_wait(&h->cv_resume, &h->sp_lock);
  __atomic_fetch_or(&h->flags, TP__F_STW, __ATOMIC_RELAXED);
  uint64_t stopped = tp__gc_wait_all_stopped(h, NULL);
  pthread_mutex_unlock(&h->sp_lock);
  return stopped;
}

/* Restarts the world with flags `flags` (TP__F_MARK or 0) and phase
 * `phase`. Both change while every attached thread is stopped, and each
 * takes sp_lock to resume: the relaxed flag tests of the fast paths and
 * the barrier see the new value from their first step on. Returns the
 * pause's end (tp__gc_wake_stopped). */
static uint64_t restart_world(tp_heap *h, uint32_t flags, int phase) {
  pthread_mutex_lock(&h->sp_lock);
  __atomic_store_n(&h->flags, flags, __ATOMIC_RELAXED);
  __atomic_store_n(&h->phase, phase, __ATOMIC_RELAXED);
  h->stw_epoch++;
  pthread_mutex_unlock(&h->sp_lock);
  /* After the unlock: each woken thread takes sp_lock to resume, and would
   * otherwise wake only to wait for it. The waiters test stw_epoch under
   * sp_lock, so none can miss this broadcast. The clock starts after the
   * unlock: a thread queued on sp_lock (one back from tp__mut_lock_heap's
   * wait) may take the CPU there while the parked ones are still asleep,
   * and that time is pause. */
  return tp__gc_wake_stopped(h);
}

static void pause1(tp_heap *h, struct tp__release *rel) {
  uint64_t t0 = tp__now_ns();
  uint64_t stopped = stop_world(h);
  /* Registered arenas (gc/arena_roots.c): held from here, with the world
   * stopped and before h->lock (ranks 22, 25 < 40), to the end of the
   * root shading. No attached thread can be waiting for one of these
   * locks: every one is stopped at a safepoint or in a blocking section,
   * and neither is reached holding an arena's lock (the arena layer calls
   * no collector); a blocking or unattached thread that takes one (reset,
   * refill) releases it without waiting for this collector. */
  tp__heap_arenas_hold(h);
  pthread_mutex_lock(&h->lock);
  retire_all(h);
  tp__mut_reap(h);
  finish_sweep(h, rel); /* normally done: the previous cycle swept */
  h->black_from = tp__counter_get(&h->total_alloc);
  mark_begin(h, &h->mk);
  /* MARK from here, under h->lock: a fork child (its prepare handler takes
   * h->lock) sees the mark begun and abandons it (gc/heap.c). */
  __atomic_store_n(&h->phase, TP__PH_MARK, __ATOMIC_RELAXED);
  /* Shade the roots: mark and push, no tracing in the pause. */
  /* Registered arenas are roots like ranges and are shaded here too, from
   * tp__mark_roots (gc/roots.c); then the arenas go: resets, rewinds,
   * destroys and removals during the mark need no barrier (gc/mark.c). */
  tp__mark_roots(&h->mk);
  tp__heap_arenas_release(h);
  pthread_mutex_unlock(&h->lock);
  uint64_t end = restart_world(h, TP__F_MARK, TP__PH_MARK);
  tp__gc_note_pause(h, end - t0, stopped - t0); /* gc/metrics.c */
}

/* Drains the gray stack, the overflow pass and the pushed SATB chunks
 * until all are empty, on `want` markers. A mutator that stores pointers
 * faster than the marker looks the logged values up (a write-only load:
 * no allocation, so no allocation assist slows it) fills a bigger log
 * every round; waiting for an empty one never ended (tp_heap_collect did
 * not return under bench gc_mark_cpu_swap). So at the first round whose
 * log is no smaller than the last, store assists go on (gc/barrier.c):
 * from then on a writer pushes at most one chunk per list taken, plus one
 * per millisecond, and the rounds shrink to that; the first throttled
 * round whose log does not shrink ends the concurrent mark, which bounds
 * the rounds, and pause 2 marks what is left: a few chunks per writer.
 * false if tp_heap_destroy asked the marker to stop. */
static bool mark_concurrently(tp_heap *h, unsigned want) {
  size_t last = SIZE_MAX;
  bool throttled = false;
  for (;;) {
    if (stop_requested(h)) return false;
    tp__mark_drain(&h->mk, want);
    struct tp__satb *list = tp__satb_take(h);
    if (!list) {
      /* The tail: from here to the stop, writers are throttled too. Stopping
       * the world can take milliseconds (the marker or a writer descheduled:
       * 7 ms seen, with three writers on two CPUs); unthrottled writers
       * logged 0.14 M values in that time, all for pause 2. */
      if (!throttled) tp__satb_throttle(h, true);
      return true;
    }
    size_t n = tp__mark_satb_list(&h->mk, list);
    if (n >= last) {
      if (!throttled) {
        throttled = true;
        tp__satb_throttle(h, true);
        last = SIZE_MAX; /* the throttled rounds count from here */
        continue;
      }
      tp__mark_drain(&h->mk, want); /* what this log marked, outside the pause */
      return true;
    }
    last = n;
  }
}

/* The values the mutators logged and did not push: each record's chunk
 * (its thread is stopped) and the shared one. */
static size_t mark_unpushed(tp_heap *h) {
  size_t n = 0;
  for (tp__mut *m = h->muts; m; m = m->next) {
    struct tp__satb *c = m->satb;
    if (!c) continue;
    for (size_t i = 0; i < c->n; i++) tp__mark_visit(&h->mk, c->v[i]);
    n += c->n;
    c->n = 0;
  }
  pthread_mutex_lock(&h->satb_lock);
  struct tp__satb *c = h->satb_shared;
  if (c) {
    for (size_t i = 0; i < c->n; i++) tp__mark_visit(&h->mk, c->v[i]);
    n += c->n;
    c->n = 0;
  }
  pthread_mutex_unlock(&h->satb_lock);
  return n;
}

static void pause2(tp_heap *h, uint64_t mark_t0) {
  uint64_t t0 = tp__now_ns();
  uint64_t stopped = stop_world(h);
  /* The checkmark traverses from the roots, registered arenas included
   * (leniently: gc/mark.c): it holds them as pause 1 does, before h->lock
   * (rank order) and until it is done. Without it pause 2 reads no arena. */
  if (h->checkmark) tp__heap_arenas_hold(h);
  pthread_mutex_lock(&h->lock);
  __atomic_store_n(&h->phase, TP__PH_MARK_TERM, __ATOMIC_RELAXED);
  struct tp__marker *mk = &h->mk;
  /* Store assists end with the mark (writers in one are in a blocking
   * section: they wake, find the mark over and store). */
  tp__satb_throttle(h, false);
  size_t logged = mark_unpushed(h);
  for (;;) {
    tp__mark_drain(mk, stopped_want(h, mk));
    struct tp__satb *list = tp__satb_take(h);
    if (!list) break;
    logged += tp__mark_satb_list(mk, list);
  }
  tp__counter_max(&h->mark_term_satb_max, logged);
  retire_all(h);
  /* Everything allocated since pause 1 was born black. */
  uint64_t black = tp__counter_get(&h->total_alloc) - h->black_from;
  tp__gc_clear_weaks(h);
  tp__gc_queue_finalizers(h, mk);
  tp__mark_drain(mk, stopped_want(h, mk));
  if (mk->any_overflow) tp__counter_add(&h->overflows, 1);
  uint64_t t1 = tp__now_ns();
  if (h->checkmark) {
    tp__gc_checkmark(h, true);
    tp__heap_arenas_release(h);
  }

  /* heap_live: what the mark found reachable from the snapshot. What was
   * allocated while it marked (born black, kept by this sweep) counts as
   * allocated since the collection, so heap_alloc stays exact, and the
   * next goal grows from the live heap, not from the garbage allocated
   * during the mark (which would inflate every goal by it). */
  __atomic_store_n(&h->live_bytes, mk->bytes, __ATOMIC_RELAXED);
  __atomic_store_n(&h->live_objs, mk->objs, __ATOMIC_RELAXED);
  __atomic_store_n(&h->alloc_since, black, __ATOMIC_RELAXED);
  tp__counter_add(&h->mark_ns, (int64_t)(t1 - mark_t0));
  tp__counter_add(&h->num_gc, 1); /* with the new goal, while all are stopped */
  tp__gc_sweep_begin(h, mk->epoch);
  tp__gc_pace_mark_done(h, black, mk->bytes);
  tp__gc_pace(h);
  /* SWEEP before h->lock goes (the world is still stopped): a fork child
   * (its prepare handler takes h->lock) sees MARK_TERMINATION never, and
   * once the sweep has begun it sees SWEEP, so it finishes that sweep
   * rather than abandon a mark that is complete. */
  __atomic_store_n(&h->phase, TP__PH_SWEEP, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&h->lock);
  uint64_t end = restart_world(h, 0, TP__PH_SWEEP);
  tp__gc_note_pause(h, end - t0, stopped - t0); /* gc/metrics.c */
}

/* Sweeps 16 regions per h->lock hold, giving memory back between. */
static void sweep_concurrently(tp_heap *h) {
  uint64_t t0 = tp__now_ns();
  for (bool done = false; !done;) {
    struct tp__release rel = {NULL, NULL};
    pthread_mutex_lock(&h->lock);
    done = tp__gc_sweep_some(h, 16, &rel);
    pthread_mutex_unlock(&h->lock);
    tp__gc_release(h, &rel);
    if (stop_requested(h)) return;
  }
  tp__counter_add(&h->sweep_ns, (int64_t)(tp__now_ns() - t0));
  if (h->memory_limit && tp__gc_heap_sys(h) > h->memory_limit) tp__gc_trim(h);
  tp__gc_pace(h);
}

/* A mark that tp_heap_destroy interrupted: the barrier goes off, so its
 * own finalizers run in a heap that is not marking. */
static void abandon_mark(tp_heap *h) {
  tp__satb_throttle(h, false);
  stop_world(h);
  restart_world(h, 0, TP__PH_IDLE);
}

/* explicit: tp_heap_collect asked for this cycle (its mark runs on every
 * marker; one the pacer started, on a quarter: gc/mark_parallel.c). */
static void run_cycle(tp_heap *h, bool explicit) {
  struct tp__release rel = {NULL, NULL};
  pause1(h, &rel);
  tp__gc_release(h, &rel);
  uint64_t t0 = tp__now_ns(), cpu0 = tp__clock_ns(CLOCK_THREAD_CPUTIME_ID);
  uint64_t helpers0 = h->mk.helper_cpu_ns;
  unsigned bg = h->markers / 4 ? h->markers / 4 : 1;
  bool marked = mark_concurrently(h, explicit ? h->markers : bg);
  /* The marker thread's CPU time and its helpers' (summed as they left
   * each session: gc/mark_parallel.c). */
  uint64_t cpu = tp__clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0 + (h->mk.helper_cpu_ns - helpers0);
  tp__counter_add(&h->mark_bg_cpu_ns, (int64_t)cpu);
  if (!marked) {
    abandon_mark(h);
    return;
  }
  pause2(h, t0);
  sweep_concurrently(h);
  pthread_mutex_lock(&h->sp_lock);
  __atomic_store_n(&h->phase, TP__PH_IDLE, __ATOMIC_RELAXED);
  h->cycles_done++;
  pthread_cond_broadcast(&h->cv_cycle);
  pthread_mutex_unlock(&h->sp_lock);
}

static void *marker_main(void *arg) {
  tp_heap *h = arg;
  pthread_mutex_lock(&h->sp_lock);
  for (;;) {
    while (!h->marker_stop && h->cycles_req == h->cycles_started)
      pthread_cond_wait(&h->cv_marker, &h->sp_lock);
    if (h->marker_stop) break;
    h->cycles_started++;
    bool explicit = h->cycles_explicit >= h->cycles_started;
    pthread_mutex_unlock(&h->sp_lock);
    run_cycle(h, explicit);
    pthread_mutex_lock(&h->sp_lock);
  }
  pthread_mutex_unlock(&h->sp_lock);
  return NULL;
}

/* Starts the marker thread if it is not running (sp_lock held). */
static bool ensure_marker(tp_heap *h) {
  if (h->marker_running) return true;
  if (h->marker_stop) return false; /* tp_heap_destroy */
  /* A TSan build starts no thread in the child of a multi-threaded fork
   * (core/fork_internal.h): it collects stop-the-world there. Core knows,
   * not a handler of ours: a parent that never created a heap had none. */
  if (tp__fork_child_threadless()) return false;
  /* Its own stack, mapped here: glibc never gives a stack the program
   * provided to another thread, so in a fork child (where the marker does
   * not exist but its stack would otherwise be reclaimed for reuse) no new
   * thread takes the marker's thread id, which ThreadSanitizer rejects. */
  if (!h->marker_stack && !(h->marker_stack = tp__os_map(TP__MARKER_STACK, 0))) return false;
  /* the marker takes no signal */
  if (tp__thread_create_quiet_on(&h->marker_tid, h->marker_stack, TP__MARKER_STACK, marker_main,
                                 h) != 0)
    return false;
  h->marker_running = true;
  tp__markwork_start_helpers(h);
  return true;
}

void tp__gc_stop_marker(tp_heap *h) {
  pthread_mutex_lock(&h->sp_lock);
  bool running = h->marker_running;
  __atomic_store_n(&h->marker_stop, true, __ATOMIC_RELAXED);
  if (running) pthread_cond_signal(&h->cv_marker);
  pthread_mutex_unlock(&h->sp_lock);
  if (!running) return;
  /* An attached caller waits as a blocking section: the marker may be
   * stopping the world right now and must not wait for it. */
  tp__mut *m = tp__find_mut(h);
  bool blocking = m && m->attach_depth && m->state == TP__MS_RUNNING;
  if (blocking) tp_heap_blocking_enter(h);
  pthread_join(h->marker_tid, NULL);
  tp__markwork_stop_helpers(h); /* idle: only the marker thread opens sessions */
  if (blocking) tp_heap_blocking_leave(h);
  pthread_mutex_lock(&h->sp_lock);
  h->marker_running = false; /* marker_stop stays: no marker again */
  h->cycles_done = h->cycles_req = h->cycles_started;
  pthread_cond_broadcast(&h->cv_cycle);
  pthread_mutex_unlock(&h->sp_lock);
}

/* Waits until cycle `target` is done (sp_lock held). self (attached,
 * running) waits as a blocking section, so the pauses do not wait for it;
 * its buffers may be retired meanwhile. */
static void wait_cycle(tp_heap *h, tp__mut *self, uint64_t target) {
  if (self) {
    pthread_mutex_unlock(&h->sp_lock);
    tp_heap_blocking_enter(h);
    pthread_mutex_lock(&h->sp_lock);
  }
  while (h->cycles_done < target) pthread_cond_wait(&h->cv_cycle, &h->sp_lock);
  if (self) {
    pthread_mutex_unlock(&h->sp_lock);
    tp_heap_blocking_leave(h);
    pthread_mutex_lock(&h->sp_lock);
  }
}

/* A complete cycle that starts after now. false without a marker thread. */
static bool collect_concurrent(tp_heap *h, tp__mut *self) {
  pthread_mutex_lock(&h->sp_lock);
  if (!ensure_marker(h)) {
    pthread_mutex_unlock(&h->sp_lock);
    return false;
  }
  uint64_t target = h->cycles_started + 1;
  if (h->cycles_req < target) h->cycles_req = target;
  if (h->cycles_explicit < target) h->cycles_explicit = target;
  pthread_cond_signal(&h->cv_marker);
  wait_cycle(h, self, target);
  pthread_mutex_unlock(&h->sp_lock);
  return true;
}

bool tp__gc_trigger(tp_heap *h, tp__mut *m) {
  int phase = __atomic_load_n(&h->phase, __ATOMIC_RELAXED);
  if (phase == TP__PH_IDLE || phase == TP__PH_SWEEP) {
    pthread_mutex_lock(&h->sp_lock);
    bool ok = ensure_marker(h);
    /* Ask for a cycle unless one is asked for that has not started: idle
     * with every cycle done (one that is asked for, or started but not yet
     * in pause 1, is still IDLE), or sweeping with no next one asked for
     * (the marker starts it when the sweep ends). sp_lock keeps the phase:
     * it leaves SWEEP under it, and MARK begins with this thread stopped. */
    phase = __atomic_load_n(&h->phase, __ATOMIC_RELAXED);
    if (ok && (phase == TP__PH_IDLE ? h->cycles_req == h->cycles_done
                                    : phase == TP__PH_SWEEP && h->cycles_req == h->cycles_started)) {
      h->cycles_req++;
      pthread_cond_signal(&h->cv_marker);
    }
    pthread_mutex_unlock(&h->sp_lock);
    if (!ok) {
      tp__gc_collect(h, m); /* no marker thread: stop-the-world */
      return true;
    }
  }
  /* A cycle is asked for or runs: past the goal, an assist or the hard
   * limit's wait (gc/pacing.c). */
  return tp__gc_pace_alloc(h, m);
}

/* ---- tp_heap_collect ------------------------------------------------------------------- */

void tp_heap_collect(tp_heap *h) {
  if (!h || h->magic != TP__HEAP_MAGIC) {
    errno = EINVAL;
    return;
  }
  tp__mut *m = tp__find_mut(h);
  tp__mut *self = m && m->attach_depth && m->state == TP__MS_RUNNING ? m : NULL;
  if (!collect_concurrent(h, self)) tp__gc_collect(h, self);
  tp__gc_after_collection(h);
}
