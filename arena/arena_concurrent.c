/*
 * Region arenas: concurrent arenas, with per-CPU bump regions, and the
 * registry of concurrent arenas that fork holds.
 *
 * Concurrent arenas. Each CPU has a bump region {ptr, end} on its own pair
 * of cache lines. An allocation is one rseq sequence, inline in arena.h
 * (tp__arena_region_bump): read the CPU's region, check
 * ptr + n <= end, commit with one store of ptr (no atomic; see
 * <tidepool/percpu.h> for why a sequence that commits had the region to
 * itself). A CPU whose region is exhausted installs a fresh chunk with a
 * sequence of three stores — end = 0, ptr, then end (the commit) — so that
 * if it is aborted part-way the region is left with end == 0, which refuses
 * every allocation (never a region that spans two chunks). Chunks are
 * taken from the pool and linked into the arena under the arena's mutex.
 * Without rseq, a region is taken with a CAS on its `busy` word (acquire)
 * and given back with a release store; its ptr and end are accessed with
 * relaxed atomics (read_stats reads them from other threads). A busy
 * region sends the allocation to the arena's mutex-protected shared region
 * (no spinning), and so does a thread that rseq left unregistered (its
 * cpu_id is negative: the sentinel regions must stay empty). A refill holds
 * the region's busy word, then the arena's mutex: nobody waits for busy.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <errno.h>
#include "arena/arena_state_internal.h"
#include "core/trylock_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- fork: every concurrent arena's lock -------------------------------- */

/* A concurrent arena's lock is taken by refills and large allocations from
 * any thread; a fork while another thread holds it would leave the child's
 * copy locked forever. The registry (core/registry.c) lists the concurrent
 * arenas, and the observed ones (arena_ranges.c: a collector takes their
 * locks), so that fork's prepare handler (rank TP__FORK_RANK_ARENAS, below
 * the pools' locks that a refill takes under a->lock) holds every one of
 * them across fork. */
static void arena_fork_lock(struct tp__reg_link *l) {
  struct tp_arena *a = TP__REG_OBJ(l, struct tp_arena, reg);
  pthread_mutex_lock(&a->lock);
}
static void arena_fork_unlock(struct tp__reg_link *l) {
  struct tp_arena *a = TP__REG_OBJ(l, struct tp_arena, reg);
  pthread_mutex_unlock(&a->lock);
}
static const struct tp__registry_ops arena_fork_ops = {arena_fork_lock, arena_fork_unlock, NULL};
static struct tp__registry arenas =
    TP__REGISTRY_INIT(TP__FORK_RANK_ARENAS, "arena registry lock", &arena_fork_ops);

void tp__arena_arenas_init(void) { tp__registry_init(&arenas); }
void tp__arena_arenas_link(struct tp_arena *a) { tp__registry_link(&arenas, &a->reg); }
void tp__arena_arenas_unlink(struct tp_arena *a) { tp__registry_unlink(&arenas, &a->reg); }

/* ---- concurrent arenas: per-CPU bump regions --------------------------------- */

/*
 * Installs chunk data [from, to) as the calling CPU's region and allocates n
 * bytes from it, in one sequence; returns the allocation. old_ptr and old_end
 * receive what the region held (its unused tail is counted as waste). The
 * old chunk (old_end - cs, when old_end is not 0) gets its used bytes
 * recorded first, before end is zeroed, so a range walk
 * (arena_ranges.c) finds them whichever store it sees; a restart stores the
 * same value again.
 */
static char *region_install_rseq(char *base, char *from, char *to, size_t n, size_t cs,
                                 char **old_ptr, char **old_end) {
  char *optr, *oend;
  __asm__ volatile(TP__RSEQ_CS_DESCRIPTOR TP__RSEQ_ENTER TP__RSEQ_BLOCK_AT(REGION_SHIFT)
                   "movq (%%rax), %[optr]\n\t"
                   "movq 8(%%rax), %[oend]\n\t"
                   "testq %[oend], %[oend]\n\t"
                   "jz 6f\n\t"                     /* no chunk yet (or end 0) */
                   "movq %[oend], %%rcx\n\t"
                   "subq %[cs], %%rcx\n\t"         /* the old chunk */
                   "movq %[optr], %%rdx\n\t"
                   "subq %%rcx, %%rdx\n\t"
                   "subq $16, %%rdx\n\t"           /* - CHUNK_HDR */
                   "movq %%rdx, 8(%%rcx)\n\t"      /* old->used */
                   "6:\n\t"
                   "movq $0, 8(%%rax)\n\t"          /* end = 0: refuse all */
                   "leaq (%[from],%[n]), %%rcx\n\t"
                   "movq %%rcx, (%%rax)\n\t"        /* ptr = from + n */
                   "movq %[to], 8(%%rax)\n\t"       /* commit: end = to */
                   "2:\n\t" TP__RSEQ_ABORT_HANDLER
                   : [optr] "=&r"(optr), [oend] "=&r"(oend)
                   : [rseq] "r"(__rseq_offset), [base] "r"(base), [from] "r"(from),
                     [to] "r"(to), [n] "r"(n), [cs] "r"(cs)
                   : "rax", "rcx", "rdx", "memory", "cc");
  *old_ptr = optr;
  *old_end = oend;
  return from;
}

/* The region's busy word (core/trylock_internal.h): one try, no spinning;
 * acquire makes the previous holder's ptr/end stores visible. */
static bool region_lock(struct tp__arena_region *r) {
  uint64_t seen;
  return tp__busy_try(&r->busy, 1, 1, &seen);
}
static void region_unlock(struct tp__arena_region *r) { tp__busy_give(&r->busy, 0); }

/* A fresh chunk for a concurrent arena, linked at the head of the list as
 * in a plain arena (cur is off the allocation's read-only line). Caller
 * holds a->lock. NULL + errno from chunk_take (the pthread calls around it
 * return their errors and leave errno alone). */
static struct tp__arena_chunk *concurrent_chunk_locked(tp_arena *a) {
  struct tp__arena_chunk *c = tp__arena_chunk_take(a);
  if (c) {
    c->next = a->cur;
    a->cur = c;
  }
  return c;
}

/*
 * Takes n bytes from a bump range {*pp, *pe} the caller owns (the shared
 * region under a->lock, or a fallback region under its busy word), moving
 * the range to a fresh chunk when it has no room (the old tail counts as
 * waste). `locked`: the caller holds a->lock, else the refill takes it.
 * Relaxed atomics: ownership (the mutex, or busy's acquire/release) orders
 * the owners; the range is atomic only because read_stats reads fallback
 * regions it does not own, and wasted is a statistic. NULL + errno, the
 * range unchanged, without a chunk.
 */
static char *range_alloc(tp_arena *a, char **pp, char **pe, size_t n, bool locked) {
  char *p = __atomic_load_n(pp, __ATOMIC_RELAXED);
  char *e = __atomic_load_n(pe, __ATOMIC_RELAXED);
  if (!p || n > (size_t)(e - p)) {
    if (!locked) pthread_mutex_lock(&a->lock);
    struct tp__arena_chunk *c = concurrent_chunk_locked(a);
    if (c && p && e) {
      /* The old chunk's use, for range walks (arena_ranges.c), under the
       * lock they hold. */
      struct tp__arena_chunk *old = (struct tp__arena_chunk *)(e - a->chunk_size);
      __atomic_store_n(&old->used, (size_t)(p - tp__arena_alloc_start(a, old)), __ATOMIC_RELEASE);
    }
    if (!locked) pthread_mutex_unlock(&a->lock);
    if (!c) return NULL;
    if (p && e > p) atomic_fetch_add_explicit(&a->wasted, (size_t)(e - p), memory_order_relaxed);
    p = tp__arena_chunk_data(c);
    __atomic_store_n(pe, tp__arena_chunk_end(a, c), __ATOMIC_RELAXED);
  }
  __atomic_store_n(pp, p + n, __ATOMIC_RELAXED);
  TP_UNPOISON(p, n);
  return p;
}

/* The shared region, under the arena's mutex. */
static void *shared_alloc(tp_arena *a, size_t n) {
  pthread_mutex_lock(&a->lock);
  char *p = range_alloc(a, &a->sptr, &a->send, n, true);
  pthread_mutex_unlock(&a->lock);
  return p;
}

/* The common case of a concurrent arena's allocation of n bytes (a multiple
 * of 16) in rseq mode: one bump. NULL when it does not fit. */
static inline char *concurrent_bump(tp_arena *a, size_t n) {
  char *p = tp__arena_region_bump(a->head.regions, n);
  if (TP_LIKELY(p != NULL)) TP_UNPOISON(p, n);
  return p;
}

/* rseq mode, after the bump missed: a fresh chunk, linked into the arena
 * under its lock, then installed as the region of whatever CPU the
 * sequence runs on (a thread rseq left unregistered uses the shared
 * region: the sentinel regions must stay empty). */
TP_NOINLINE void *tp__arena_rseq_refill(tp_arena *a, size_t n) {
  if (tp__rseq_cpu_id() < 0) return shared_alloc(a, n);
  pthread_mutex_lock(&a->lock);
  struct tp__arena_chunk *c = concurrent_chunk_locked(a);
  pthread_mutex_unlock(&a->lock);
  /* No chunk (max_bytes, or the pool is out of memory): what is left of
   * the shared region (the first chunk's tail, at first) may still fit. */
  if (!c) return shared_alloc(a, n);
  char *optr, *oend;
  char *p = region_install_rseq(a->head.regions, tp__arena_chunk_data(c), tp__arena_chunk_end(a, c), n,
                                a->chunk_size, &optr, &oend);
  /* relaxed: a statistic; no second trip through the lock per refill. */
  if (optr && oend > optr) atomic_fetch_add_explicit(&a->wasted, (size_t)(oend - optr), memory_order_relaxed);
  TP_UNPOISON(p, n);
  return p;
}

/* percpu-cas mode: the CPU's region under its busy word, refilled in place;
 * a busy region sends the allocation to the shared one (no spinning). */
static TP_NOINLINE void *cas_alloc(tp_arena *a, size_t n) {
  struct tp__arena_region *r = tp__arena_region_of(a, tp__current_cpu());
  if (!region_lock(r)) return shared_alloc(a, n);
  char *p = range_alloc(a, &r->ptr, &r->end, n, false); /* a refill keeps r */
  region_unlock(r);
  /* No chunk for the region: the shared region may still have room. */
  return p ? p : shared_alloc(a, n);
}

void *tp__arena_concurrent_alloc(tp_arena *a, size_t n) {
  if (!a->rseq) return cas_alloc(a, n);
  char *p = concurrent_bump(a, n);
  return p ? p : tp__arena_rseq_refill(a, n);
}

/* Any size and alignment alloc_impl accepts: large sizes get their own
 * mapping (under the lock), the rest come from the regions. */
void *tp__arena_concurrent_alloc_impl(tp_arena *a, size_t size, size_t align) {
  if (size > a->small_max) {
    pthread_mutex_lock(&a->lock);
    void *p = tp__arena_large_alloc(a, size);
    pthread_mutex_unlock(&a->lock); /* leaves errno alone */
    return p;
  }
  size_t n = tp__round_up(size ? size : 1, 16);
  if (align <= 16) return tp__arena_concurrent_alloc(a, n);
  /* Over-allocate, then align inside (rare; alignment > 16). */
  char *p = tp__arena_concurrent_alloc(a, n + align);
  return p ? (void *)tp__round_up((uintptr_t)p, align) : NULL;
}
