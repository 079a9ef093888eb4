/*
 * The collector's threads: a mutator's record per heap (tp__mut), attach
 * and detach, thread exit, safepoints, blocking sections (and the other
 * layers' waits, and an allocation's wait for the heap lock, as blocking
 * sections), and the handshake by which a
 * collection stops the attached threads and lets them go.
 *
 * Threads. The mutator list h->muts holds every record of the heap (any
 * state); it is modified only with both h->lock and h->sp_lock held, so
 * either lock suffices to walk it, and it is frozen while TP__F_STW is set
 * (attach, detach and blocking_leave wait for the world to restart).
 * Ownership of a record at the end: the thread that exits CASes `owner`
 * ALIVE -> THREAD_GONE (then the heap frees it at its next collection or
 * destroy); tp_heap_destroy CASes ALIVE -> HEAP_GONE (then the thread
 * frees it). Exactly one side wins, so a record is freed exactly once and
 * never while the other side may still touch it.
 *
 * Stopping. The collecting thread sets TP__F_STW in h->flags under h->sp_lock and waits
 * on cv_parked until every attached thread other than itself is PARKED
 * (stopped at a safepoint, waiting on cv_resume) or BLOCKING (inside
 * tp_heap_blocking_enter/_leave, promising not to touch the heap). Both
 * transitions happen under sp_lock after the thread recorded where its
 * stack ends and spilled its callee-saved registers into a frame above
 * that point (__builtin_unwind_init in a noinline wrapper), so the
 * collector sees every heap pointer the thread holds: caller-saved
 * registers are dead across the call by the ABI, callee-saved ones are in
 * the scanned frames (or, for BLOCKING, copied into the record). Attach,
 * detach and blocking_leave wait while TP__F_STW is set, so the set of
 * running threads cannot grow during a collection. An allocating thread's
 * wait for h->lock is BLOCKING too (tp__mut_lock_heap); one that gets the
 * lock while a stop is wanted gives it back before it touches anything.
 */
#define _GNU_SOURCE
#include <tidepool/epoch.h>

#include "gc/heap_internal.h"

#include "core/list_internal.h"
#include "core/blocking_internal.h"
#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/os_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* The calling thread's records: the one used last (the fast path's cache)
 * and all of them. Only the thread itself touches these. */
__thread tp__mut *tp__tls_mut;
static __thread tp__mut *tls_list;
static __thread int tls_key_set;

static pthread_key_t exit_key;

static void thread_exit(void *arg);
static void other_layer_wait_enter(void);
static void other_layer_wait_leave(void);

void tp__mut_free(tp__mut *m) {
  if (m) free(m->satb);
  free(m);
}

void tp__mut_init_once(void) {
  pthread_key_create(&exit_key, thread_exit);
  tp__blocking_hooks_set(other_layer_wait_enter, other_layer_wait_leave);
}

/* ---- thread records ---------------------------------------------------------- */

/* Unlinks m from the calling thread's list and frees it. A record freed
 * while attached (its heap destroyed under it) also stops counting as a
 * held "lock" in debug builds' lock order: the thread is no mutator of a
 * heap that is gone. */
void tp__mut_free_own(tp__mut *m) {
  for (tp__mut **pp = &tls_list; *pp; pp = &(*pp)->tnext)
    if (*pp == m) {
      *pp = m->tnext;
      break;
    }
  if (tp__tls_mut == m) tp__tls_mut = NULL;
  tp__lo_drop(m);
  tp__mut_free(m);
}

/* The calling thread's record for h, or NULL. Frees orphans it passes. */
tp__mut *tp__find_mut(tp_heap *h) {
  tp__mut *m = tp__tls_mut;
  if (m && __atomic_load_n(&m->heap, __ATOMIC_RELAXED) == h) return m;
  for (tp__mut **pp = &tls_list; (m = *pp);) {
    /* acquire: pairs with destroy's CAS; after it the record is ours. */
    if (__atomic_load_n(&m->owner, __ATOMIC_ACQUIRE) == TP__OWNER_HEAP_GONE) {
      tp__mut_free_own(m); /* unlinks it: *pp is its successor now */
      continue;
    }
    if (__atomic_load_n(&m->heap, __ATOMIC_RELAXED) == h) {
      tp__tls_mut = m;
      return m;
    }
    pp = &m->tnext;
  }
  return NULL;
}

/* The top (highest address) of the calling thread's stack, or NULL.
 *
 * The main thread's comes from __libc_stack_end (ld.so's record of where
 * the initial stack ended when main's caller started: every frame of the
 * thread lies below it), because pthread_getattr_np finds the main
 * thread's stack by reading /proc/self/maps, which fails when the process
 * is out of file descriptors. Other threads' stacks are known to glibc
 * without opening anything. */
extern void *__libc_stack_end;

static char *stack_top(void) {
  if (getpid() == (pid_t)syscall(SYS_gettid) && __libc_stack_end)
    return (char *)tp__round_up((uintptr_t)__libc_stack_end, sizeof(void *));
  pthread_attr_t a;
  void *addr = NULL;
  size_t size = 0;
  if (tp__pthread_getattr_np(pthread_self(), &a) == 0) {
    pthread_attr_getstack(&a, &addr, &size);
    pthread_attr_destroy(&a);
  }
  return addr ? (char *)addr + size : NULL;
}

/* Creates the calling thread's record for h (detached). NULL + ENOMEM. */
tp__mut *tp__mut_create(tp_heap *h) {
  char *hi = stack_top();
  tp__mut *m = hi ? tp__calloc(1, sizeof *m) : NULL;
  if (!m) {
    errno = ENOMEM; /* no memory, or the stack could not be found */
    return NULL;
  }
  m->heap = h;
  m->tid = pthread_self();
  m->stack_hi = hi;
  m->state = TP__MS_DETACHED;
  if (!tls_key_set) {
    pthread_setspecific(exit_key, (void *)1);
    tls_key_set = 1;
  }
  pthread_mutex_lock(&h->lock);
  pthread_mutex_lock(&h->sp_lock);
  TP__LIST_PUSH(h->muts, m, prev, next);
  pthread_mutex_unlock(&h->sp_lock);
  pthread_mutex_unlock(&h->lock);
  m->tnext = tls_list;
  tls_list = m;
  tp__tls_mut = m;
  return m;
}

/* Waits until no collection is running (sp_lock held; releases nothing). */
static void wait_world_locked(tp_heap *h) {
  tp__lo_wait(TP__LO_WAIT_COLLECTION, &h->sp_lock, tp_epoch_in_section());
  while (tp__stw_wanted(h))
    pthread_cond_wait(&h->cv_resume, &h->sp_lock);
}

/* Detached -> attached (depth 1). */
void tp__mut_attach(tp_heap *h, tp__mut *m) {
  pthread_mutex_lock(&h->sp_lock);
  wait_world_locked(h);
  m->state = TP__MS_RUNNING;
  tp__lo_hold(m);
  m->attach_depth = 1;
  m->blocking_depth = 0;
  tp__counter_add(&h->nthreads, 1);
  pthread_mutex_unlock(&h->sp_lock);
}

/* Attached -> detached: retires the allocation buffers first. sp_lock
 * alone suffices: seeing no TP__F_STW under it means no collection runs, and none
 * starts before we release it (the collector sets it under sp_lock before
 * it takes h->lock), so the buffers are ours alone. The fast path needs no
 * reset: with cursor == limit == NULL every bump fails into alloc_slow,
 * which attaches again. */
static void detach_record(tp_heap *h, tp__mut *m) {
  for (;;) {
    pthread_mutex_lock(&h->sp_lock);
    if (!tp__stw_wanted(h)) {
      tp__gc_retire_tlab(h, m);
      tp__satb_flush_mut(h, m); /* pause 2 reads only attached records' logs */
      m->state = TP__MS_DETACHED;
      tp__lo_drop(m);
      m->attach_depth = 0;
      m->blocking_depth = 0;
      tp__counter_add(&h->nthreads, -1);
      pthread_mutex_unlock(&h->sp_lock);
      return;
    }
    if (m->state == TP__MS_RUNNING) {
      pthread_mutex_unlock(&h->sp_lock);
      tp__gc_park(h, m);
    } else {
      wait_world_locked(h);
      pthread_mutex_unlock(&h->sp_lock);
    }
  }
}

/* Thread exit: detach from every heap, then hand each record over. */
static void thread_exit(void *arg) {
  (void)arg;
  for (tp__mut *m = tls_list; m; m = m->tnext) {
    if (__atomic_load_n(&m->owner, __ATOMIC_ACQUIRE) == TP__OWNER_ALIVE && m->attach_depth)
      detach_record(m->heap, m);
  }
  for (tp__mut *m = tls_list, *next; m; m = next) {
    next = m->tnext;
    uint32_t expect = TP__OWNER_ALIVE;
    /* release: the heap frees the record after seeing THREAD_GONE. */
    if (!__atomic_compare_exchange_n(&m->owner, &expect, TP__OWNER_THREAD_GONE, false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      tp__mut_free(m); /* the heap is gone: the record is ours */
  }
  tls_list = NULL;
  tp__tls_mut = NULL;
  tls_key_set = 0; /* a later destructor that allocates registers again */
}

int tp_heap_attach(tp_heap *h) {
  if (!h) {
    errno = EINVAL;
    return -EINVAL;
  }
  tp__mut *m = tp__find_mut(h);
  if (!m && !(m = tp__mut_create(h))) return -ENOMEM;
  if (m->attach_depth) {
    m->attach_depth++;
    return 0;
  }
  tp__mut_attach(h, m);
  return 0;
}

void tp_heap_detach(tp_heap *h) {
  if (!h) return;
  tp__mut *m = tp__find_mut(h);
  if (!m || !m->attach_depth) return;
  if (--m->attach_depth) return;
  m->attach_depth = 1; /* detach_record sets it to 0 when done */
  detach_record(h, m);
}

void tp_heap_safepoint(tp_heap *h) {
  if (!h) return;
  /* relaxed: only a hint; tp__gc_park re-checks under sp_lock. */
  if (TP_LIKELY(!tp__stw_wanted(h))) return;
  tp__mut *m = tp__find_mut(h);
  if (m && m->state == TP__MS_RUNNING) tp__gc_park(h, m);
}

/* Records the caller's stack and callee-saved registers for a BLOCKING
 * section. The registers were spilled into tp_heap_blocking_enter's frame
 * (below caller_sp) by __builtin_unwind_init; that frame is gone once enter
 * returns, so it is copied into the record. */
__attribute__((no_sanitize_address, no_sanitize_thread)) TP_NOINLINE static void
blocking_enter_inner(tp_heap *h, tp__mut *m, char *caller_sp) {
  char *sp = tp__current_sp();
  pthread_mutex_lock(&h->sp_lock);
  if (m->blocking_depth++ == 0) {
    size_t n = (size_t)(caller_sp - sp) / sizeof(uintptr_t);
    if (n > 64) n = 64;
    const uintptr_t *src = (const uintptr_t *)caller_sp - n;
    for (size_t i = 0; i < n; i++) m->spill[i] = src[i];
    m->nspill = n;
    m->scan_lo = caller_sp;
    m->state = TP__MS_BLOCKING;
    tp__lo_drop(m);
    pthread_cond_broadcast(&h->cv_parked);
  }
  pthread_mutex_unlock(&h->sp_lock);
}

TP_NOINLINE void tp_heap_blocking_enter(tp_heap *h) {
  if (!h) return;
  tp__mut *m = tp__find_mut(h);
  if (!m || !m->attach_depth) return;
  if (m->blocking_depth) {
    m->blocking_depth++;
    return;
  }
  TP__WITH_REGS_SPILLED(
      blocking_enter_inner(h, m, (char *)__builtin_frame_address(0) + 2 * sizeof(void *)));
}

static void blocking_leave_mut(tp_heap *h, tp__mut *m) {
  if (m->blocking_depth > 1) {
    m->blocking_depth--;
    return;
  }
  pthread_mutex_lock(&h->sp_lock);
  wait_world_locked(h);
  m->blocking_depth = 0;
  m->state = TP__MS_RUNNING;
  tp__lo_hold(m);
  m->nspill = 0;
  pthread_mutex_unlock(&h->sp_lock);
}

void tp_heap_blocking_leave(tp_heap *h) {
  if (!h) return;
  tp__mut *m = tp__find_mut(h);
  if (!m || !m->attach_depth || !m->blocking_depth) return;
  blocking_leave_mut(h, m);
}

/* tp__mut_lock_heap's wait. The sweeper holds h->lock for a batch of
 * regions at a time, and an allocating thread that needs a region waits
 * for it; stopping the world used to wait for that thread to get the lock,
 * run (a lock handed from thread to thread, each needing a CPU) and reach
 * a safepoint: 4 ms in one gcserver pause, while the thread sat woken on a
 * CPU that had gone idle. So the wait is a blocking section, and the
 * stop does not wait for it (a waiter that gets the lock while the world
 * is stopping hands it back, which can delay the pause's own take of
 * h->lock by one hand-over): the collector never stops the world
 * holding h->lock (it takes h->lock after the world is stopped, and the
 * sweeper releases it between batches), so when the waiter gets the lock
 * it finds, under sp_lock, either no stop wanted (it is RUNNING again, as
 * before it waited) or a stop wanted, then it gives the lock back, waits
 * for the restart and tries again. A pause may go by while it waits: the
 * callers read the mark flag only once they hold the lock (gc/alloc.c).
 * The stack and registers are recorded as tp_heap_blocking_enter records
 * them. */
__attribute__((no_sanitize_address, no_sanitize_thread)) TP_NOINLINE static void
lock_heap_wait(tp_heap *h, tp__mut *m, char *caller_sp) {
  for (;;) {
    blocking_enter_inner(h, m, caller_sp);
    pthread_mutex_lock(&h->lock);
    pthread_mutex_lock(&h->sp_lock);
    bool wanted = tp__stw_wanted(h);
    if (!wanted) {
      m->blocking_depth = 0;
      m->state = TP__MS_RUNNING;
      tp__lo_hold(m);
      m->nspill = 0;
    }
    pthread_mutex_unlock(&h->sp_lock);
    if (!wanted) return;
    pthread_mutex_unlock(&h->lock);
    blocking_leave_mut(h, m); /* until the world restarts */
    if (pthread_mutex_trylock(&h->lock) == 0) return;
  }
}

TP_NOINLINE static void lock_heap_slow(tp_heap *h, tp__mut *m) {
  TP__WITH_REGS_SPILLED(lock_heap_wait(h, m, (char *)__builtin_frame_address(0) + 2 * sizeof(void *)));
}

/* Zeroes 2 KiB of the stack below the caller's frame. The frames of
 * lock_heap_slow and below held the caller's callee-saved registers
 * (spilled for the collector) and what pthread's futex wait left; a later
 * blocking section at that depth copies the slots it does not write
 * (padding) into its record, and a conservative scan would then keep
 * alive what those stale words point to (seen: tests/robust/fault_test,
 * a dropped list kept by one such word). Boehm's GC_clear_stack, for
 * the same reason. */
__attribute__((no_sanitize_address)) TP_NOINLINE static void clear_dead_stack(void) {
  volatile uintptr_t z[256];
  for (size_t i = 0; i < sizeof z / sizeof z[0]; i++) z[i] = 0;
}

void tp__mut_lock_heap(tp_heap *h, tp__mut *m) {
  /* Debug builds always wait the checked way: a trylock skips the
   * lock-order check, and the wait's path gets exercised. */
  if (!TP_DEBUG && pthread_mutex_trylock(&h->lock) == 0) return;
  lock_heap_slow(h, m);
  clear_dead_stack();
}

/* Waits in other layers (epoch grace periods and barriers, through
 * core/blocking_internal.h) are blocking sections of every heap the thread
 * is attached to. Without this an attached thread W waiting for a grace
 * period held up a collection forever when the reader R it waited for was
 * parked by that collection (at a safepoint, or in its heap exit handler
 * while still inside a read section): R waits for the collector, the
 * collector for W, W for R. The records of the calling thread only (its
 * tls_list); a record whose heap is gone is skipped. */
static TP_NOINLINE void other_layer_wait_enter_inner(char *caller_sp) {
  for (tp__mut *m = tls_list; m; m = m->tnext) {
    uint32_t owner = __atomic_load_n(&m->owner, __ATOMIC_ACQUIRE);
    /* A record whose heap was destroyed is no mutator: debug builds stop
     * counting it as held (tp__find_mut frees it later). */
    if (owner == TP__OWNER_HEAP_GONE) tp__lo_drop(m);
    if (owner != TP__OWNER_ALIVE || !m->attach_depth) continue;
    if (m->blocking_depth) m->blocking_depth++;
    else blocking_enter_inner(m->heap, m, caller_sp);
  }
}

static TP_NOINLINE void other_layer_wait_enter(void) {
  TP__WITH_REGS_SPILLED(
      other_layer_wait_enter_inner((char *)__builtin_frame_address(0) + 2 * sizeof(void *)));
}

static void other_layer_wait_leave(void) {
  for (tp__mut *m = tls_list; m; m = m->tnext) {
    if (__atomic_load_n(&m->owner, __ATOMIC_ACQUIRE) != TP__OWNER_ALIVE || !m->attach_depth ||
        !m->blocking_depth)
      continue;
    blocking_leave_mut(m->heap, m);
  }
}

/* ---- stopping the world -------------------------------------------------------------- */

static bool all_stopped(const tp_heap *h, const tp__mut *self) {
  for (const tp__mut *m = h->muts; m; m = m->next)
    if (m != self && m->state == TP__MS_RUNNING) return false;
  return true;
}

uint64_t tp__gc_wait_all_stopped(tp_heap *h, tp__mut *self) {
  bool warned = false;
  while (!all_stopped(h, self)) {
    struct timespec ts = tp__deadline_ms(10000);
    if (pthread_cond_timedwait(&h->cv_parked, &h->sp_lock, &ts) == ETIMEDOUT && !warned) {
      unsigned n = 0;
      for (const tp__mut *m = h->muts; m; m = m->next)
        if (m != self && m->state == TP__MS_RUNNING) n++;
      fprintf(stderr,
              "tidepool: tp_heap_collect: waited 10 s for %u attached thread(s) to reach a "
              "safepoint (a thread that blocks must use tp_heap_blocking_enter/_leave; see "
              "docs/gc.md)\n",
              n);
      warned = true;
    }
  }
  return tp__now_ns();
}

/* A pause runs from the stop request until the stopped threads are woken.
 * The wake-up is a futex call, and with more runnable threads than CPUs
 * the threads it wakes preempt the collecting thread inside it; that
 * thread then waits for a CPU, up to a scheduler tick, while the woken
 * threads run: a clock read after the call made gcserver's pauses
 * 1.8-3.3 ms where everything up to the wake-up took under 0.03 ms. So the
 * wall clock runs up to the wake-up and the wake-up itself counts by the
 * thread's CPU time: its cost is pause, its wait for a CPU once the world
 * runs is not. (Go reads its clock after its wake-ups, in
 * startTheWorldWithSema; it never has more running threads than
 * GOMAXPROCS, so the thread that wakes the others keeps its CPU.) */
uint64_t tp__gc_wake_stopped(tp_heap *h) {
  uint64_t t = tp__now_ns(), cpu = tp__clock_ns(CLOCK_THREAD_CPUTIME_ID);
  pthread_cond_broadcast(&h->cv_resume);
  return t + (tp__clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu);
}

/* Parks running mutator m (stack scanned from sp down) until the collection
 * in progress has ended. Also stays if the next collection started before
 * it woke: that collector already counted it as stopped. Caller holds
 * sp_lock, a collection is in progress. */
void tp__mut_park_locked(tp_heap *h, tp__mut *m, char *sp) {
  uint64_t epoch = h->stw_epoch;
  m->scan_lo = sp;
  m->state = TP__MS_PARKED;
  tp__lo_wait(TP__LO_WAIT_COLLECTION, &h->sp_lock, tp_epoch_in_section());
  pthread_cond_broadcast(&h->cv_parked);
  while (h->stw_epoch == epoch || tp__stw_wanted(h))
    pthread_cond_wait(&h->cv_resume, &h->sp_lock);
  m->state = TP__MS_RUNNING;
}

/* Never reached by the collecting thread while its collection runs: trace
 * callbacks may not call into the heap, and finalizers run after the
 * restart. */
TP_NOINLINE static void park_inner(tp_heap *h, tp__mut *m) {
  char *sp = tp__current_sp();
  pthread_mutex_lock(&h->sp_lock);
  if (tp__stw_wanted(h) && m->state == TP__MS_RUNNING)
    tp__mut_park_locked(h, m, sp);
  pthread_mutex_unlock(&h->sp_lock);
}

TP_NOINLINE void tp__gc_park(tp_heap *h, tp__mut *m) {
  TP__WITH_REGS_SPILLED(park_inner(h, m));
}

/* ---- the collection ------------------------------------------------------------------ */

/* Frees the records of threads that exited (h->lock held, world stopped). */
void tp__mut_reap(tp_heap *h) {
  pthread_mutex_lock(&h->sp_lock);
  for (tp__mut *m = h->muts, *next; m; m = next) {
    next = m->next;
    /* acquire: pairs with the exiting thread's CAS; its writes are done. */
    if (__atomic_load_n(&m->owner, __ATOMIC_ACQUIRE) != TP__OWNER_THREAD_GONE) continue;
    tp__mut_unlink(h, m);
    tp__mut_free(m);
  }
  pthread_mutex_unlock(&h->sp_lock);
}
