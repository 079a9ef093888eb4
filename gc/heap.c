/*
 * The tracing collector's mutator side: heap creation, allocation, thread
 * records and safepoints, roots, weak references, finalizer running,
 * statistics, fork(). The collection itself is in gc/collect.c; the
 * layout of regions and objects is described in gc/heap_internal.h.
 *
 * Allocation. Each thread has a record per heap (tp__mut) holding a bump
 * allocator over a "hole": a run of free lines in a region that the thread
 * owns alone. The fast path is: the thread-local record is for this heap,
 * the type is the one last validated, no collection is waiting, the object
 * fits the hole; then it stores the header word, sets
 * the start bit (the region belongs to this thread, so a plain
 * read-modify-write is race-free) and moves the cursor. Nothing is shared,
 * so nothing is atomic. Holes are zeroed when the thread takes them (a
 * fresh region straight from mmap is known to be zero and is not), so the
 * fast path needs no memset. When the hole is exhausted the slow path
 * accounts what was allocated to the heap's counters (relaxed atomics),
 * checks the pacer, and takes the next hole of its region, a recyclable
 * region (one with free lines after the last sweep), or a fresh region
 * from the pool. Objects over a line that do not fit the current hole go
 * to a second "overflow" allocator over empty regions (Immix's medium
 * objects), so a large-ish object never wastes a run of small holes.
 *
 * Why a stopped thread's allocations are visible to the collector: the
 * collector only runs while every attached thread is PARKED or BLOCKING.
 * A thread parks (or enters BLOCKING) under h->sp_lock after its last
 * store, and the collector reads the heap after waiting on that lock, so
 * each store happens-before the collector's reads. A thread only parks in
 * the slow path, never between writing a header and setting its start
 * bit, so every object the collector can find is complete.
 *
 * Threads. The mutator list h->muts holds every record of the heap (any
 * state); it is modified only with both h->lock and h->sp_lock held, so
 * either lock suffices to walk it, and it is frozen while h->stw is set
 * (attach, detach and blocking_leave wait for the world to restart).
 * Ownership of a record at the end: the thread that exits CASes `owner`
 * ALIVE -> THREAD_GONE (then the heap frees it at its next collection or
 * destroy); tp_heap_destroy CASes ALIVE -> HEAP_GONE (then the thread
 * frees it). Exactly one side wins, so a record is freed exactly once and
 * never while the other side may still touch it.
 */
#define _GNU_SOURCE
#include <tidepool/epoch.h>

#include "gc/heap_internal.h"

#include "core/list_internal.h"
#include "core/blocking_internal.h"
#include "core/debug_internal.h"
#include "core/fault_internal.h"
#include "core/fork_internal.h"
#include "core/options_internal.h"
#include "core/os_internal.h"
#include "pool/pool_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */


/* What an orphaned record's heap field points at: never a real heap, and
 * never NULL (so a NULL heap argument cannot match an orphan). */
static char orphan_marker;
#define ORPHAN_HEAP ((tp_heap *)(void *)&orphan_marker)

/* The calling thread's records: the one used last (the fast path's cache)
 * and all of them. Only the thread itself touches these. */
static __thread tp__mut *tls_mut;
static __thread tp__mut *tls_list;
static __thread int tls_in_finalizers;
static __thread int tls_key_set;

static pthread_once_t gc_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static tp_heap *registry;


static void thread_exit(void *arg);
static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);
static void other_layer_wait_enter(void);
static void other_layer_wait_leave(void);

static void gc_init_once(void) {
  pthread_key_create(&exit_key, thread_exit);
  tp__fork_register(TP__FORK_RANK_HEAPS, fork_prepare, fork_parent, fork_child);
  tp__blocking_hooks_set(other_layer_wait_enter, other_layer_wait_leave);
}

static void init_conds(tp_heap *h) {
  tp__cond_init_monotonic(&h->cv_parked);
  tp__cond_init_monotonic(&h->cv_resume);
}

/* ---- the address map ------------------------------------------------------ */

int tp__map_set_range(tp_heap *h, uintptr_t start, size_t len, void *entry) {
  uintptr_t k0 = start >> h->region_shift, k1 = (start + len - 1) >> h->region_shift;
  const uintptr_t l2mask = ((uintptr_t)1 << TP__MAP_L2_BITS) - 1;
  const size_t l2bytes = sizeof(void *) << TP__MAP_L2_BITS;
  if ((start + len - 1) >> TP__USER_ADDR_BITS) return -ENOMEM;
  /* Make every second-level table exist first, so failure changes nothing. */
  for (uintptr_t k = k0; k <= k1; k = (k | l2mask) + 1) {
    if (!h->map_l1[k >> TP__MAP_L2_BITS]) {
      void **l2 = tp__os_map(l2bytes, 0);
      if (!l2) return -ENOMEM;
      h->map_l1[k >> TP__MAP_L2_BITS] = l2;
      tp__counter_add(&h->meta_bytes, (int64_t)l2bytes);
    }
  }
  for (uintptr_t k = k0; k <= k1; k++) h->map_l1[k >> TP__MAP_L2_BITS][k & l2mask] = entry;
  if (!h->lo || start < h->lo) h->lo = start;
  if (start + len > h->hi) h->hi = start + len;
  return 0;
}

void tp__map_clear_range(tp_heap *h, uintptr_t start, size_t len) {
  uintptr_t k0 = start >> h->region_shift, k1 = (start + len - 1) >> h->region_shift;
  const uintptr_t l2mask = ((uintptr_t)1 << TP__MAP_L2_BITS) - 1;
  for (uintptr_t k = k0; k <= k1; k++) h->map_l1[k >> TP__MAP_L2_BITS][k & l2mask] = NULL;
}

/* ---- create / destroy ------------------------------------------------------- */

tp_heap *tp_heap_create(const tp_heap_config *cfg) {
  pthread_once(&gc_once, gc_init_once);
  tp_heap_config c = cfg ? *cfg : (tp_heap_config){.trigger_percent = 100};
  size_t rs = c.region_size ? c.region_size : TP__REGION_DEFAULT;
  if (!tp__is_pow2(rs) || rs < TP__REGION_MIN || rs > TP__REGION_MAX ||
      c.gray_stack_entries > ((size_t)1 << 30)) {
    errno = EINVAL;
    return NULL;
  }
  tp_heap *h = aligned_alloc(TP_CACHELINE, tp__round_up(sizeof *h, TP_CACHELINE));
  if (!h) {
    errno = ENOMEM;
    return NULL;
  }
  memset(h, 0, sizeof *h);
  h->region_size = rs;
  h->region_mask = ~(uintptr_t)(rs - 1);
  h->region_shift = (unsigned)__builtin_ctzll(rs);
  h->nwords = (uint32_t)(rs >> (TP__GRAN_SHIFT + 6));
  h->nlines = (uint32_t)(rs >> TP__LINE_SHIFT);
  h->bits_off = tp__round_up(sizeof(struct tp__region), 16);
  h->pend_off = h->bits_off + (size_t)h->nwords * sizeof(struct tp__bitpair);
  h->lines_off = h->pend_off + (size_t)h->nwords * sizeof(uint64_t);
  h->data_off = tp__round_up(h->lines_off + h->nlines, TP__LINE);
  h->first_line = (uint32_t)(h->data_off >> TP__LINE_SHIFT);
  h->first_word = (uint32_t)(h->data_off >> (TP__GRAN_SHIFT + 6));
  h->small_max = rs / 4;
  h->trigger_percent = c.trigger_percent;
  h->min_heap = c.min_heap_bytes ? c.min_heap_bytes : TP__MIN_HEAP_DEFAULT;
  h->memory_limit = c.memory_limit;
  h->gray_cap = c.gray_stack_entries ? c.gray_stack_entries : TP__GRAY_DEFAULT;
  h->checkmark = tp__options()->gc_checkmark; /* TIDEPOOL_GC_CHECKMARK */
  h->mark_epoch = 1;

  tp_pool_config pc = {.name = "gc-regions", .obj_size = rs, .align = rs};
  h->pool = tp__pool_create(&pc, rs, 0);
  unsigned l1bits = TP__USER_ADDR_BITS - h->region_shift - TP__MAP_L2_BITS;
  h->map_l1_n = (size_t)1 << l1bits;
  h->map_l1_bytes = tp__round_up(h->map_l1_n * sizeof(void *), tp__os_page_size());
  h->map_l1 = h->pool ? tp__os_map(h->map_l1_bytes, 0) : NULL;
  if (!h->pool || !h->map_l1) {
    if (h->pool) tp_pool_destroy(h->pool);
    free(h);
    errno = ENOMEM;
    return NULL;
  }
  tp__counter_add(&h->meta_bytes, (int64_t)h->map_l1_bytes);
  pthread_mutex_init(&h->lock, NULL);
  pthread_mutex_init(&h->sp_lock, NULL);
  init_conds(h);
  tp__gc_pace(h);
  h->magic = TP__HEAP_MAGIC;

  pthread_mutex_lock(&registry_lock);
  TP__LIST_PUSH(registry, h, reg_prev, reg_next);
  pthread_mutex_unlock(&registry_lock);
  return h;
}

static void free_thread_record(tp__mut *m);

void tp_heap_destroy(tp_heap *h) {
  if (!h || h->magic != TP__HEAP_MAGIC) return;
  /* 1. Finalizers: the queued ones, then those of every object still
   *    allocated, each exactly once. */
  int was_in = tls_in_finalizers;
  tls_in_finalizers = 0;
  tp_heap_run_finalizers(h);
  tls_in_finalizers = was_in;
  h->destroying = true;
  pthread_mutex_lock(&h->lock);
  void **fin = h->fin_objs;
  size_t nfin = h->nfin;
  h->fin_objs = NULL;
  h->nfin = h->fin_cap = 0;
  pthread_mutex_unlock(&h->lock);
  for (size_t i = 0; i < nfin; i++) {
    const tp_type *t = tp__hdr_type(*(uintptr_t *)((char *)fin[i] - 8));
    t->finalize(fin[i]);
    tp__counter_add(&h->fin_run, 1);
  }
  free(fin);

  pthread_mutex_lock(&registry_lock);
  TP__LIST_UNLINK(registry, h, reg_prev, reg_next);
  pthread_mutex_unlock(&registry_lock);

  /* 2. Weak references read NULL from now on. */
  pthread_mutex_lock(&h->lock);
  for (tp_weak *w = h->weaks, *next; w; w = next) {
    next = w->next;
    __atomic_store_n(&w->target, NULL, __ATOMIC_RELEASE);
    __atomic_store_n(&w->heap, NULL, __ATOMIC_RELAXED);
    w->prev = w->next = NULL;
  }
  h->weaks = NULL;

  /* 3. Thread records: ours are freed, other threads' are orphaned (or
   *    freed if their thread is gone). */
  pthread_mutex_lock(&h->sp_lock);
  tp__mut *mine = NULL;
  for (tp__mut *m = h->muts, *next; m; m = next) {
    next = m->next;
    if (pthread_equal(m->tid, pthread_self())) {
      m->next = mine;
      mine = m;
      continue;
    }
    uint32_t expect = TP__OWNER_ALIVE;
    /* acq_rel: on success the owner thread reads our stores after seeing
     * HEAP_GONE; on failure we free what the exiting thread wrote. */
    if (__atomic_compare_exchange_n(&m->owner, &expect, TP__OWNER_HEAP_GONE, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      __atomic_store_n(&m->heap, ORPHAN_HEAP, __ATOMIC_RELAXED);
    } else {
      free(m);
    }
  }
  h->muts = NULL;
  pthread_mutex_unlock(&h->sp_lock);

  /* 4. Memory. Regions go back to the pool (outside h->lock: the pool's
   *    locks rank below the heap's), then the pool goes. */
  struct tp__region *regions = h->regions;
  h->regions = h->recyclable = NULL;
  struct tp__large *large = h->large;
  h->large = NULL;
  pthread_mutex_unlock(&h->lock);
  for (tp__mut *m = mine, *next; m; m = next) {
    next = m->next;
    free_thread_record(m);
  }
  for (struct tp__region *r = regions, *next; r; r = next) {
    next = r->next;
    TP_UNPOISON(r, h->region_size);
    tp_pool_put(h->pool, r);
  }
  tp_pool_destroy(h->pool);
  for (struct tp__large *l = large, *next; l; l = next) {
    next = l->next;
    tp__os_unmap(l, l->map_bytes);
  }
  const size_t l2bytes = sizeof(void *) << TP__MAP_L2_BITS;
  for (size_t i = 0; i < h->map_l1_n; i++)
    if (h->map_l1[i]) tp__os_unmap(h->map_l1[i], l2bytes);
  tp__os_unmap(h->map_l1, h->map_l1_bytes);
  if (h->gray) tp__os_unmap(h->gray, tp__round_up(h->gray_cap * sizeof(void *), tp__os_page_size()));
  free(h->roots);
  free(h->ranges);
  free(h->finq);
  pthread_mutex_destroy(&h->lock);
  pthread_mutex_destroy(&h->sp_lock);
  pthread_cond_destroy(&h->cv_parked);
  pthread_cond_destroy(&h->cv_resume);
  h->magic = 0;
  free(h);
}

/* ---- thread records ---------------------------------------------------------- */

/* Unlinks m from the calling thread's list and frees it. */
static void free_thread_record(tp__mut *m) {
  for (tp__mut **pp = &tls_list; *pp; pp = &(*pp)->tnext)
    if (*pp == m) {
      *pp = m->tnext;
      break;
    }
  if (tls_mut == m) tls_mut = NULL;
  free(m);
}

/* The calling thread's record for h, or NULL. Frees orphans it passes. */
static tp__mut *find_mut(tp_heap *h) {
  tp__mut *m = tls_mut;
  if (m && __atomic_load_n(&m->heap, __ATOMIC_RELAXED) == h) return m;
  for (tp__mut **pp = &tls_list; (m = *pp);) {
    /* acquire: pairs with destroy's CAS; after it the record is ours. */
    if (__atomic_load_n(&m->owner, __ATOMIC_ACQUIRE) == TP__OWNER_HEAP_GONE) {
      *pp = m->tnext;
      if (tls_mut == m) tls_mut = NULL;
      free(m);
      continue;
    }
    if (__atomic_load_n(&m->heap, __ATOMIC_RELAXED) == h) {
      tls_mut = m;
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
static tp__mut *create_mut(tp_heap *h) {
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
  tls_mut = m;
  return m;
}

/* Waits until no collection is running (sp_lock held; releases nothing). */
static void wait_world_locked(tp_heap *h) {
  tp__lo_wait(TP__LO_WAIT_COLLECTION, &h->sp_lock, tp_epoch_in_section());
  while (__atomic_load_n(&h->stw, __ATOMIC_RELAXED))
    pthread_cond_wait(&h->cv_resume, &h->sp_lock);
}

/* Detached -> attached (depth 1). */
static void attach_record(tp_heap *h, tp__mut *m) {
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
 * alone suffices: seeing !stw under it means no collection runs, and none
 * starts before we release it (the collector sets stw under sp_lock before
 * it takes h->lock), so the buffers are ours alone. The fast path needs no
 * reset: with cursor == limit == NULL every bump fails into alloc_slow,
 * which attaches again. */
static void detach_record(tp_heap *h, tp__mut *m) {
  for (;;) {
    pthread_mutex_lock(&h->sp_lock);
    if (!__atomic_load_n(&h->stw, __ATOMIC_RELAXED)) {
      tp__gc_retire_tlab(h, m);
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
      free(m); /* the heap is gone: the record is ours */
  }
  tls_list = NULL;
  tls_mut = NULL;
  tls_key_set = 0; /* a later destructor that allocates registers again */
}

int tp_heap_attach(tp_heap *h) {
  if (!h) {
    errno = EINVAL;
    return -EINVAL;
  }
  tp__mut *m = find_mut(h);
  if (!m && !(m = create_mut(h))) return -ENOMEM;
  if (m->attach_depth) {
    m->attach_depth++;
    return 0;
  }
  attach_record(h, m);
  return 0;
}

void tp_heap_detach(tp_heap *h) {
  if (!h) return;
  tp__mut *m = find_mut(h);
  if (!m || !m->attach_depth) return;
  if (--m->attach_depth) return;
  m->attach_depth = 1; /* detach_record sets it to 0 when done */
  detach_record(h, m);
}

void tp_heap_safepoint(tp_heap *h) {
  if (!h) return;
  /* relaxed: only a hint; tp__gc_park re-checks under sp_lock. */
  if (TP_LIKELY(!__atomic_load_n(&h->stw, __ATOMIC_RELAXED))) return;
  tp__mut *m = find_mut(h);
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
  tp__mut *m = find_mut(h);
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
  tp__mut *m = find_mut(h);
  if (!m || !m->attach_depth || !m->blocking_depth) return;
  blocking_leave_mut(h, m);
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
    if (__atomic_load_n(&m->owner, __ATOMIC_ACQUIRE) != TP__OWNER_ALIVE || !m->attach_depth)
      continue;
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

/* ---- allocation ---------------------------------------------------------------- */

/* 0 if t can be allocated, else -EINVAL. */
static int check_type(const tp_type *t) {
  if (!t || ((uintptr_t)t & 7) || ((uintptr_t)t >> TP__USER_ADDR_BITS)) return -EINVAL;
  if (t->size == 0 || (t->flags & ~(TP_TYPE_LEAF | TP_TYPE_CONSERVATIVE))) return -EINVAL;
  int kinds = (t->trace != NULL) + (t->ptr_offsets != NULL || t->n_ptr_offsets != 0) +
              !!(t->flags & TP_TYPE_LEAF) + !!(t->flags & TP_TYPE_CONSERVATIVE);
  if (kinds != 1) return -EINVAL;
  if (t->ptr_offsets || t->n_ptr_offsets) {
    if (!t->ptr_offsets || !t->n_ptr_offsets || (t->size & 7)) return -EINVAL;
    for (size_t i = 0; i < t->n_ptr_offsets; i++)
      if ((t->ptr_offsets[i] & 7) || t->ptr_offsets[i] > t->size - 8) return -EINVAL;
  }
  return 0;
}

/* Objects allocated in [from, to) of one buffer: their start bits. (The
 * fast path counts nothing; a buffer's hole held no start bit before.) A
 * slot starting at c (= 8 mod 16) has its start bit in granule (c - r)/16
 * or the next one, so the granules [from/16, to/16) hold exactly the
 * slots of [from, to). */
static uint64_t count_starts(const tp_heap *h, const char *from, const char *to) {
  if (!from || to <= from) return 0;
  uintptr_t r = (uintptr_t)from & h->region_mask;
  size_t g0 = ((uintptr_t)from - r) >> TP__GRAN_SHIFT, g1 = ((uintptr_t)to - r) >> TP__GRAN_SHIFT;
  const struct tp__bitpair *bits = tp__region_bits(h, (struct tp__region *)r);
  uint64_t n = 0;
  for (size_t w = g0 >> 6, wl = (g1 - 1) >> 6; w <= wl; w++) {
    uint64_t word = bits[w].start;
    if (w == g0 >> 6) word &= ~(uint64_t)0 << (g0 & 63);
    if (w == wl) word &= (((uint64_t)2) << ((g1 - 1) & 63)) - 1; /* 63: all (wraps to 0 - 1) */
    n += (uint64_t)__builtin_popcountll(word);
  }
  return n;
}

/* Accounts what m allocated since the last call to the heap's counters. */
static void account(tp_heap *h, tp__mut *m) {
  uint64_t b = (uint64_t)(m->cursor - m->acct) + (uint64_t)(m->ocursor - m->oacct);
  uint64_t objs = count_starts(h, m->acct, m->cursor) + count_starts(h, m->oacct, m->ocursor);
  m->acct = m->cursor;
  m->oacct = m->ocursor;
  if (b) {
    tp__counter_add(&h->alloc_since, (int64_t)b);
    tp__counter_add(&h->total_alloc, (int64_t)b);
  }
  if (objs) tp__counter_add(&h->objs_alloc, (int64_t)objs);
}

void tp__gc_retire_tlab(tp_heap *h, tp__mut *m) {
  account(h, m);
  m->region = NULL; /* it and the overflow region become full regions */
  m->cursor = m->limit = m->acct = NULL;
  m->ocursor = m->olimit = m->oacct = NULL;
}

/* Opens [a, b) as an allocation buffer: unpoisoned, zeroed unless it is
 * known to be zero. Returns its first cursor (8 mod 16). */
static char *open_buffer(char *a, char *b, bool zero) {
  TP_UNPOISON(a, (size_t)(b - a));
  if (!zero) memset(a, 0, (size_t)(b - a));
  return a + 8;
}

/* Takes the next hole of m->region, zeroed. false if it has none left. */
static bool next_hole(tp_heap *h, tp__mut *m) {
  struct tp__region *r = m->region;
  const uint8_t *lines = tp__region_lines(h, r);
  uint32_t i = m->next_line, n = h->nlines;
  while (i < n && lines[i]) i++;
  if (i >= n) return false;
  uint32_t j = i;
  while (j < n && !lines[j]) j++;
  m->next_line = j;
  char *b = (char *)r + ((size_t)j << TP__LINE_SHIFT);
  m->cursor = m->acct = open_buffer((char *)r + ((size_t)i << TP__LINE_SHIFT), b, false);
  m->limit = b;
  return true;
}

/* A region off the recyclable stack (it has a free line), or NULL. */
static struct tp__region *take_recyclable(tp_heap *h) {
  pthread_mutex_lock(&h->lock);
  struct tp__region *r = h->recyclable;
  if (r) {
    h->recyclable = r->rnext;
    r->rnext = NULL;
  }
  pthread_mutex_unlock(&h->lock);
  return r;
}

/* A new region from the pool: its whole data area is free (and poisoned);
 * *zero tells whether that area is all zero. NULL + ENOMEM. */
static struct tp__region *new_region(tp_heap *h, bool *zero) {
  struct tp__region *r = tp_pool_get(h->pool);
  if (!r) {
    errno = ENOMEM;
    return NULL;
  }
  /* The pool never writes into a region it holds; we always leave a
   * nonzero magic in one we give back, and debug builds poison it. So a
   * zero magic means the memory came straight from mmap. */
  *zero = r->magic == 0;
  if (!*zero) memset(r, 0, h->data_off); /* fresh from mmap: already zero */
  r->magic = TP__REGION_MAGIC;
  TP_POISON((char *)r + h->data_off, h->region_size - h->data_off);
  pthread_mutex_lock(&h->lock);
  int rc = tp__map_set_range(h, (uintptr_t)r, h->region_size, r);
  if (rc == 0) {
    TP__LIST_PUSH(h->regions, r, prev, next);
    tp__counter_add(&h->nregions, 1);
  }
  pthread_mutex_unlock(&h->lock);
  if (rc) {
    TP_UNPOISON(r, h->region_size);
    tp_pool_put(h->pool, r);
    errno = ENOMEM;
    return NULL;
  }
  return r;
}

/* Runs the finalizers a collection of ours queued, unless this thread is
 * already running finalizers (then the outer loop picks them up). */
static void after_collection(tp_heap *h) {
  if (!tls_in_finalizers && tp__counter_get(&h->fin_pending)) tp_heap_run_finalizers(h);
}

static inline bool should_collect(const tp_heap *h, uint64_t extra) {
  return tp__heap_alloc_now(h) + extra >= tp__counter_get(&h->next_gc);
}

/* Gives m room for an object of `adv` bytes. false + errno on failure. */
static bool refill(tp_heap *h, tp__mut *m, size_t adv) {
  account(h, m);
  if (should_collect(h, 0)) {
    tp__gc_collect(h, m);
    after_collection(h);
    return true; /* the caller retries: buffers were retired */
  }
  bool zero;
  if (adv > TP__LINE) {
    /* Medium object: a new overflow region (the previous one becomes a
     * full region). */
    struct tp__region *r = new_region(h, &zero);
    if (!r) return false;
    m->olimit = (char *)r + h->region_size;
    m->ocursor = m->oacct = open_buffer((char *)r + h->data_off, m->olimit, zero);
    return true;
  }
  if (m->region && next_hole(h, m)) return true;
  /* The next region; the previous one becomes a full region. */
  struct tp__region *r = take_recyclable(h);
  m->region = r;
  m->next_line = h->first_line;
  if (r && next_hole(h, m)) return true;
  if (!(r = new_region(h, &zero))) return false;
  m->region = r;
  m->next_line = h->nlines; /* its one hole, the whole data area, is taken */
  m->limit = (char *)r + h->region_size;
  m->cursor = m->acct = open_buffer((char *)r + h->data_off, m->limit, zero);
  return true;
}

/* Bumps adv bytes from [*cur, lim) and writes the header; the payload or
 * NULL. */
static inline void *bump(tp_heap *h, char **cur, char *lim, size_t adv, uintptr_t hdr,
                         bool array) {
  char *c = *cur;
  if ((size_t)(lim - c) < adv) return NULL;
  *cur = c + adv;
  char *hp = array ? c + 16 : c;
  *(uintptr_t *)hp = hdr;
  char *r = (char *)((uintptr_t)c & h->region_mask);
  size_t g = (size_t)(hp - 8 - r) >> TP__GRAN_SHIFT;
  struct tp__bitpair *bp = tp__region_bits(h, (struct tp__region *)r) + (g >> 6);
  bp->start |= (uint64_t)1 << (g & 63);
  return hp + 8;
}

static void *alloc_large(tp_heap *h, tp__mut *m, const tp_type *t, size_t n, size_t payload,
                         bool array) {
  size_t pay8 = tp__round_up(payload, 8);
  size_t bytes = sizeof(struct tp__large) + pay8;
  size_t map = tp__round_up(bytes, tp__os_page_size());
  if (should_collect(h, bytes)) {
    tp__gc_collect(h, m); /* it retires (and accounts) m's buffers */
    after_collection(h);
  }
  struct tp__large *l = tp__os_map(map, h->region_size);
  if (!l) {
    errno = ENOMEM;
    return NULL;
  }
  l->map_bytes = map;
  l->bytes = tp__round_up(bytes, 16);
  l->payload = pay8;
  l->n = n;
  l->hdr = (uintptr_t)t | TP__HDR_LARGE | (array ? TP__HDR_ARRAY : 0);
  pthread_mutex_lock(&h->lock);
  int rc = tp__map_set_range(h, (uintptr_t)l, map, (void *)((uintptr_t)l | 1));
  if (rc == 0) {
    TP__LIST_PUSH(h->large, l, prev, next);
    tp__counter_add(&h->nlarge, 1);
    tp__counter_add(&h->large_map_bytes, (int64_t)map);
  }
  pthread_mutex_unlock(&h->lock);
  if (rc) {
    tp__os_unmap(l, map);
    errno = ENOMEM;
    return NULL;
  }
  tp__counter_add(&h->alloc_since, (int64_t)l->bytes);
  tp__counter_add(&h->total_alloc, (int64_t)l->bytes);
  tp__counter_add(&h->objs_alloc, 1);
  return l + 1;
}

/* Registers obj for finalization. false + ENOMEM. */
static bool register_finalizer(tp_heap *h, void *obj) {
  pthread_mutex_lock(&h->lock);
  if (h->nfin == h->fin_cap) {
    size_t cap = h->fin_cap ? h->fin_cap * 2 : 64;
    void **v = tp__realloc(h->fin_objs, cap * sizeof *v);
    if (!v) {
      pthread_mutex_unlock(&h->lock);
      errno = ENOMEM;
      return false;
    }
    h->fin_objs = v;
    h->fin_cap = cap;
  }
  h->fin_objs[h->nfin++] = obj;
  pthread_mutex_unlock(&h->lock);
  return true;
}

TP_NOINLINE static void *alloc_slow(tp_heap *h, const tp_type *t, size_t n, bool array) {
  if (!h || h->magic != TP__HEAP_MAGIC || h->destroying || !t) {
    errno = EINVAL;
    return NULL;
  }
  tp__mut *m = find_mut(h);
  /* The fast paths' cached type was checked when it was cached: a refill
   * (or an array of it) need not walk its pointer offsets again. */
  if (!(m && m->last_type == t) && check_type(t)) {
    errno = EINVAL;
    return NULL;
  }
  size_t payload = t->size;
  if (array && __builtin_mul_overflow(n, t->size, &payload)) {
    errno = ENOMEM;
    return NULL;
  }
  if (payload > ((size_t)1 << 46)) {
    errno = ENOMEM;
    return NULL;
  }
  if (!m && !(m = create_mut(h))) return NULL;
  if (!m->attach_depth) attach_record(h, m);
  if (m->state == TP__MS_BLOCKING)
    tp__fatal("tp_heap_alloc", h, "allocation between tp_heap_blocking_enter and _leave");
  size_t k = (payload + 8 + TP__GRAN - 1) >> TP__GRAN_SHIFT;
  size_t adv = (k << TP__GRAN_SHIFT) + (array ? 16 : 0);
  if (adv > h->small_max) {
    if (__atomic_load_n(&h->stw, __ATOMIC_RELAXED)) tp__gc_park(h, m);
    void *p = alloc_large(h, m, t, n, payload, array);
    if (p && t->finalize && !register_finalizer(h, p)) return NULL;
    return p;
  }
  uintptr_t hdr = (uintptr_t)t | (array ? TP__HDR_ARRAY : 0) | ((uintptr_t)k << TP__HDR_K_SHIFT);
  void *p;
  for (;;) {
    /* relaxed: a hint; tp__gc_park re-checks under sp_lock. */
    if (__atomic_load_n(&h->stw, __ATOMIC_RELAXED)) tp__gc_park(h, m);
    p = bump(h, &m->cursor, m->limit, adv, hdr, array);
    if (!p && adv > TP__LINE) p = bump(h, &m->ocursor, m->olimit, adv, hdr, array);
    if (p) break;
    if (!refill(h, m, adv)) return NULL;
  }
  if (array) *(size_t *)((char *)p - 16) = n;
  if (t->finalize) {
    if (!register_finalizer(h, p)) return NULL; /* the object is garbage */
  } else {
    /* The cache of both fast paths: t is valid and has no finalizer, and
     * one object of it is small (always, unless this was an array of none). */
    size_t k1 = (t->size + 8 + TP__GRAN - 1) >> TP__GRAN_SHIFT;
    if ((k1 << TP__GRAN_SHIFT) <= h->small_max) {
      m->last_type = t;
      m->last_hdr = (uintptr_t)t | ((uintptr_t)k1 << TP__HDR_K_SHIFT);
      m->last_slot = k1 << TP__GRAN_SHIFT;
    }
  }
  return p;
}

void *tp_heap_alloc(tp_heap *h, const tp_type *t) {
  tp__mut *m = tls_mut;
  /* The record is this heap's, the type was validated by the slow path
   * (and has no finalizer), and no collection is waiting (relaxed: a
   * late-seen request only delays this thread's stop to its next slow
   * path; the collector waits for it). */
  if (TP_LIKELY(m != NULL) && TP_LIKELY(m->heap == h) && TP_LIKELY(m->last_type == t) &&
      TP_LIKELY(!__atomic_load_n(&h->stw, __ATOMIC_RELAXED))) {
    void *p = bump(h, &m->cursor, m->limit, m->last_slot, m->last_hdr, false);
    if (TP_LIKELY(p != NULL)) return p;
  }
  return alloc_slow(h, t, 1, false);
}

void *tp_heap_alloc_array(tp_heap *h, const tp_type *t, size_t n) {
  tp__mut *m = tls_mut;
  size_t payload;
  /* As tp_heap_alloc's, and the array is small: alloc_slow's slot is
   * adv = 16 * ceil((payload + 8) / 16) + 16, small when adv <= small_max.
   * small_max (a quarter of a power of two >= 32 KiB) is a multiple of 16,
   * so that holds exactly when payload + 8 <= small_max - 16. */
  if (TP_LIKELY(m != NULL) && TP_LIKELY(m->heap == h) && TP_LIKELY(m->last_type == t) &&
      TP_LIKELY(!__atomic_load_n(&h->stw, __ATOMIC_RELAXED)) &&
      TP_LIKELY(!__builtin_mul_overflow(n, t->size, &payload)) &&
      TP_LIKELY(payload <= h->small_max - 24)) {
    size_t k = (payload + 8 + TP__GRAN - 1) >> TP__GRAN_SHIFT;
    void *p = bump(h, &m->cursor, m->limit, (k << TP__GRAN_SHIFT) + 16,
                   (uintptr_t)t | TP__HDR_ARRAY | ((uintptr_t)k << TP__HDR_K_SHIFT), true);
    if (TP_LIKELY(p != NULL)) {
      *(size_t *)((char *)p - 16) = n;
      return p;
    }
  }
  return alloc_slow(h, t, n, true);
}

/* ---- roots --------------------------------------------------------------------- */

static size_t root_hash(void **slot, size_t cap) {
  return (size_t)(((uintptr_t)slot * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

/* Rebuilds the root table with capacity cap. false on ENOMEM. */
static bool roots_rehash(tp_heap *h, size_t cap) {
  void ***t = tp__calloc(cap, sizeof *t);
  if (!t) return false;
  for (size_t i = 0; i < h->roots_cap; i++) {
    void **s = h->roots[i];
    if (!s || s == TP__ROOT_TOMB) continue;
    size_t j = root_hash(s, cap);
    while (t[j]) j = (j + 1) & (cap - 1);
    t[j] = s;
  }
  free(h->roots);
  h->roots = t;
  h->roots_cap = cap;
  h->roots_used = h->roots_n;
  return true;
}

int tp_root_add(tp_heap *h, void **slot) {
  if (!h || !slot) {
    errno = EINVAL;
    return -EINVAL;
  }
  pthread_mutex_lock(&h->lock);
  int rc = 0;
  if ((h->roots_used + 1) * 2 > h->roots_cap &&
      !roots_rehash(h, h->roots_n * 4 > h->roots_cap ? (h->roots_cap ? h->roots_cap * 2 : 16)
                                                     : (h->roots_cap ? h->roots_cap : 16))) {
    rc = -ENOMEM;
  } else {
    size_t j = root_hash(slot, h->roots_cap), tomb = SIZE_MAX;
    for (; h->roots[j]; j = (j + 1) & (h->roots_cap - 1)) {
      if (h->roots[j] == slot) {
        rc = -EEXIST;
        break;
      }
      if (h->roots[j] == TP__ROOT_TOMB && tomb == SIZE_MAX) tomb = j;
    }
    if (!rc) {
      if (tomb != SIZE_MAX) {
        j = tomb;
      } else {
        h->roots_used++;
      }
      h->roots[j] = slot;
      h->roots_n++;
    }
  }
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
  int rc = -EINVAL;
  if (h->roots_cap) {
    for (size_t j = root_hash(slot, h->roots_cap); h->roots[j]; j = (j + 1) & (h->roots_cap - 1))
      if (h->roots[j] == slot) {
        h->roots[j] = TP__ROOT_TOMB;
        h->roots_n--;
        rc = 0;
        break;
      }
  }
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
  if (!rc && h->nranges == h->ranges_cap) {
    size_t cap = h->ranges_cap ? h->ranges_cap * 2 : 8;
    struct tp__range *v = tp__realloc(h->ranges, cap * sizeof *v);
    if (!v) {
      rc = -ENOMEM;
    } else {
      h->ranges = v;
      h->ranges_cap = cap;
    }
  }
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
  return __atomic_load_n(&w->target, __ATOMIC_ACQUIRE);
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
  if (tls_in_finalizers) return 0;
  tls_in_finalizers = 1;
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
  tls_in_finalizers = 0;
  return ran;
}

/* ---- collection entry points ---------------------------------------------------------- */

void tp_heap_collect(tp_heap *h) {
  if (!h || h->magic != TP__HEAP_MAGIC) {
    errno = EINVAL;
    return;
  }
  tp__mut *m = find_mut(h);
  tp__gc_collect(h, m && m->attach_depth && m->state == TP__MS_RUNNING ? m : NULL);
  after_collection(h);
}

/* ---- stats -------------------------------------------------------------------------------- */

/* No pool lock: the pacer calls this under the heap lock (rank 40), above
 * the pools' (30). */
uint64_t tp__gc_heap_sys(const tp_heap *h) {
  return tp__pool_bytes_mapped(h->pool) + tp__counter_get(&h->large_map_bytes) +
         tp__counter_get(&h->meta_bytes);
}

int tp_heap_read_stats(const tp_heap *h, tp_heap_stats *out) {
  if (!h || !out || h->magic != TP__HEAP_MAGIC) {
    errno = EINVAL;
    return -EINVAL;
  }
  memset(out, 0, sizeof *out);
  out->heap_live = tp__counter_get(&h->live_bytes);
  out->heap_alloc = tp__heap_alloc_now(h);
  out->heap_sys = tp__gc_heap_sys(h);
  out->regions = tp__counter_get(&h->nregions);
  out->large_objects = tp__counter_get(&h->nlarge);
  out->heap_inuse = out->regions * h->region_size + tp__counter_get(&h->large_map_bytes);
  out->num_gc = tp__counter_get(&h->num_gc);
  out->pause_total_ns = tp__counter_get(&h->pause_total);
  out->pause_max_ns = tp__counter_get(&h->pause_max);
  out->last_pause_ns = tp__counter_get(&h->last_pause);
  out->objects_live = tp__counter_get(&h->live_objs);
  out->objects_alloc = tp__counter_get(&h->objs_alloc);
  out->objects_freed = tp__counter_get(&h->objs_freed);
  out->total_alloc = tp__counter_get(&h->total_alloc);
  out->finalizers_run = tp__counter_get(&h->fin_run);
  out->finalizers_pending = tp__counter_get(&h->fin_pending);
  out->mark_ns = tp__counter_get(&h->mark_ns);
  out->sweep_ns = tp__counter_get(&h->sweep_ns);
  out->next_gc = tp__counter_get(&h->next_gc);
  out->gray_overflows = tp__counter_get(&h->overflows);
  out->regions_released = tp__counter_get(&h->regions_released);
  out->threads = tp__counter_get(&h->nthreads);
  out->checkmark = h->checkmark;
  out->region_size = (uint32_t)h->region_size;
  return 0;
}

/* ---- fork ----------------------------------------------------------------------------------- */

static void fork_prepare(void) {
  pthread_mutex_lock(&registry_lock);
  for (tp_heap *h = registry; h; h = h->reg_next) {
    pthread_mutex_lock(&h->lock);
    pthread_mutex_lock(&h->sp_lock);
  }
}

static void fork_parent(void) {
  for (tp_heap *h = registry; h; h = h->reg_next) {
    pthread_mutex_unlock(&h->sp_lock);
    pthread_mutex_unlock(&h->lock);
  }
  pthread_mutex_unlock(&registry_lock);
}

/* The child has one thread: records of the others go (their allocation
 * buffers are retired first), no collection is in progress, and
 * finalizers other threads were running count as run. */
static void fork_child(void) {
  pthread_t self = pthread_self();
  for (tp_heap *h = registry; h; h = h->reg_next) {
    for (tp__mut *m = h->muts, *next; m; m = next) {
      next = m->next;
      if (pthread_equal(m->tid, self)) continue;
      if (m->attach_depth) tp__counter_add(&h->nthreads, -1);
      tp__gc_retire_tlab(h, m);
      tp__mut_unlink(h, m);
      free(m);
    }
    for (struct tp__finrun **pp = &h->running; *pp;) {
      if (!pthread_equal((*pp)->tid, self)) {
        *pp = (*pp)->next;
        tp__counter_add(&h->fin_run, 1);
      } else {
        pp = &(*pp)->next;
      }
    }
    __atomic_store_n(&h->stw, 0, __ATOMIC_RELAXED);
    init_conds(h);
    pthread_mutex_unlock(&h->sp_lock);
    pthread_mutex_unlock(&h->lock);
  }
  pthread_mutex_unlock(&registry_lock);
}

/* ---- stats ------------------------------------------------------------------ */

size_t tp__heap_foreach(void (*fn)(const tp_heap *, void *), void *arg) {
  size_t n = 0;
  pthread_mutex_lock(&registry_lock);
  for (tp_heap *h = registry; h; h = h->reg_next, n++) fn(h, arg);
  pthread_mutex_unlock(&registry_lock);
  return n;
}
