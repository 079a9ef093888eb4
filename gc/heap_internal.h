/*
 * Internal: the tracing collector's structures and the functions its
 * files share (gc/heap.c, map.c, mutators.c, alloc.c, roots.c, mark.c,
 * mark_parallel.c, weak.c, sweep.c, pacing.c, collect.c, arena_roots.c,
 * metrics.c;
 * docs/ARCHITECTURE.md lists what
 * each holds). The markers' state is in gc/markwork_internal.h.
 *
 * Memory layout
 * -------------
 * Region: region_size bytes (a power of two) from the heap's private
 * tp_pool, aligned to its size, so the header is found by masking:
 *
 *   [struct tp__region | bitpairs | pend bitmap | line marks | pad] [data lines ...]
 *    ^ region base                                                  ^ data_off
 *
 *   granule   16 bytes; granule g covers [base + 16g, base + 16g + 16).
 *   bitpairs  one {start, mark} word pair per 64 granules (interleaved so a
 *             pointer test and its mark touch one cache line):
 *               start bit g: an allocated object's header word is at
 *                            base + 16g + 8 (and it is not known dead);
 *               mark bit g:  that object was reached in this collection.
 *   pend      mark bit set but the object could not be pushed (gray stack
 *             overflow): it is scanned when the overflow is drained.
 *             Reused as the checkmark traversal's visited bits.
 *   lines     one byte per 128-byte line: 0 = free; otherwise the epoch of
 *             the collection that last found a live object on it.
 *
 * Object: a header word at H (H = 8 mod 16), the payload at H + 8 (16-byte
 * aligned). Arrays carry their element count in the word at H - 8.
 *
 *   header word  bits 0..2   HDR_ARRAY, HDR_LARGE
 *                bits 3..47  the tp_type pointer (8-aligned, user space)
 *                bits 48..63 k: the object ends at H + 16k (small objects)
 *
 *   plain   [hdr][payload ........ pad]           extent [H, H + 16k)
 *   array   [n][hdr][payload ..... pad]           extent [H - 8, H + 16k)
 *
 * A bump allocator keeps its cursor = 8 mod 16, so plain objects start at
 * the cursor and arrays skip one word first. Either way the start bit is
 * the granule of H - 8, and a pointer p belongs to the object whose start
 * granule is the last one set at or before granule (p - 8) / 16, if p is
 * below that object's end. Objects never exceed a quarter region, so that
 * backward search reads at most region_size / 4096 + 1 bitmap words.
 *
 * Large object (more than a quarter region): its own mapping from
 * tp__os_map, aligned to region_size, starting with struct tp__large
 * whose last two words are the element count and the header word; the
 * payload follows. Every
 * region-sized granule of address space it overlaps maps to it.
 *
 * The address map: a two-level radix table, address >> region_shift ->
 * region header or (large header | 1). All regions are region-aligned, and
 * large mappings start region-aligned, so no granule is ever claimed twice.
 * It answers "which object of this heap contains p?" in O(1) for any word,
 * which is what conservative scanning needs, and rejects foreign pointers
 * in precise fields without touching their memory.
 *
 * Locks (see the invariants on the fields):
 *   h->lock     region lists, large list, the map, roots, weak list,
 *               finalizer lists. Held by the collector for a whole
 *               collection (after the world is stopped). Never held while
 *               calling into a tp_pool (fork rank: heaps 40 > pools 30).
 *   h->sp_lock  the safepoint handshake: h->stw, mutator states, the
 *               mutator list. Order: h->lock before h->sp_lock.
 */
#ifndef TIDEPOOL_HEAP_INTERNAL_H
#define TIDEPOOL_HEAP_INTERNAL_H

#include <tidepool/gc.h>
#include <tidepool/pool.h>

#include "arena/arena_roots_internal.h"
#include "core/list_internal.h"
#include "core/os_internal.h"
#include "core/ptrset_internal.h"
#include "core/registry_internal.h"
#include "gc/markwork_internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TP__GRAN_SHIFT 4
#define TP__GRAN ((size_t)1 << TP__GRAN_SHIFT)
#define TP__LINE_SHIFT 7
#define TP__LINE ((size_t)1 << TP__LINE_SHIFT)

#define TP__REGION_MIN ((size_t)32 << 10)
#define TP__REGION_MAX ((size_t)1 << 20)
#define TP__REGION_DEFAULT ((size_t)256 << 10)
#define TP__MIN_HEAP_DEFAULT ((size_t)4 << 20)
#define TP__GRAY_DEFAULT ((size_t)64 << 10)
#define TP__MARKER_STACK ((size_t)1 << 20)
/* The pacer (gc/pacing.c): marks whose allocation-per-marked-byte ratio
 * the trigger takes the largest of, and the bounds of one assist. */
#define TP__PACE_HISTORY 4
#define TP__ASSIST_MAX_NS ((uint64_t)1000000) /* per allocation slow path */
#define TP__STORE_ASSIST_MAX_NS ((uint64_t)1000000) /* per SATB chunk (gc/barrier.c) */
#define TP__ASSIST_MIN_NS ((uint64_t)50000)   /* shorter debts wait for more */

#define TP__HDR_ARRAY ((uintptr_t)1)
#define TP__HDR_LARGE ((uintptr_t)2)
#define TP__HDR_TYPE_MASK ((uintptr_t)0x0000fffffffffff8ull)
#define TP__HDR_K_SHIFT 48

#define TP__REGION_MAGIC 0x74706772u /* "tpgr" */
#define TP__HEAP_MAGIC 0x74706768u   /* "tpgh" */

/* Radix map: second-level tables of 2^16 entries. */
#define TP__MAP_L2_BITS 16
#define TP__USER_ADDR_BITS 47

enum { TP__MS_RUNNING = 0, TP__MS_PARKED = 1, TP__MS_BLOCKING = 2, TP__MS_DETACHED = 3 };
/* Who frees a thread record (see gc/mutators.c). */
enum { TP__OWNER_ALIVE = 0, TP__OWNER_THREAD_GONE = 1, TP__OWNER_HEAP_GONE = 2 };

struct tp__bitpair {
  uint64_t start;
  uint64_t mark;
};

/*
 * Region header. A region held by the heap is in exactly one of three roles
 * (changed under h->lock, or by the collector while the world is stopped):
 *  - a mutator's allocation region (m->region, or the one its overflow
 *    buffer ocursor..olimit lies in): that allocator alone writes start
 *    bits and object memory in it, and it is not on the recyclable stack;
 *  - recyclable: on h->recyclable, with at least one free line;
 *  - full: neither; it becomes recyclable or is released at a sweep.
 * Outside a collection, mark and pend bits are all zero, and every line
 * mark is 0 (free) or the live epoch; a free line holds no start bit.
 * While a concurrent mark runs (gc/mark.c), regions created by the
 * allocators are born with every mark bit set and every line at the
 * mark's epoch ("allocate black"); between its end and the end of its
 * sweep, the regions not yet swept are on h->sweep_regions, not
 * h->regions.
 */
struct tp__region {
  uint32_t magic;
  uint8_t overflow; /* pend bits set (collector only) */
  uint8_t pad0[3];
  struct tp__region *prev, *next; /* h->regions: every region held */
  struct tp__region *rnext;       /* recyclable stack / release list */
};

/*
 * Large object header, at the start of its mapping. The payload follows
 * immediately; `hdr` is its header word (H = payload - 8) and `n` the
 * element count at H - 8, where every array keeps it.
 */
struct tp__large {
  uint8_t marked;
  uint8_t overflow; /* pending (collector); checkmark's visited flag */
  uint8_t pad0[6];
  struct tp__large *prev, *next; /* h->large */
  size_t map_bytes;              /* length of the mapping */
  size_t bytes;                  /* accounted size: header + payload */
  size_t payload;                /* payload bytes (as asked, 8-rounded) */
  size_t n;                      /* elements (1 unless an array) */
  uintptr_t hdr;
};
_Static_assert(sizeof(struct tp__large) % 16 == 0, "payload 16-aligned");
_Static_assert(offsetof(struct tp__large, hdr) + 8 == sizeof(struct tp__large) &&
                   offsetof(struct tp__large, n) + 8 == offsetof(struct tp__large, hdr),
               "count, header word, payload: as in small arrays");

/*
 * A thread's record for one heap.
 *  - Allocation fields: written only by the owning thread, and by the
 *    collector while the thread is stopped (PARKED, BLOCKING) or detached.
 *  - state, scan_lo, spill, nspill, blocking depth: under h->sp_lock
 *    (the owner also reads its own state without it).
 *  - prev/next (h->muts, every record of the heap, any state): changed
 *    only with both h->lock and h->sp_lock held, so either lock suffices
 *    to walk the list; frozen while TP__F_STW is set.
 *  - heap: set at creation; pointed at a marker that is no heap when the
 *    heap is destroyed while the thread lives ("orphaned").
 *  - owner: TP__OWNER_*, changed once by CAS (see gc/mutators.c).
 */
typedef struct tp__mut {
  tp_heap *heap;
  char *cursor, *limit;  /* current hole: cursor = 8 mod 16 */
  const tp_type *last_type; /* fast-path type cache (validated, small, */
  uintptr_t last_hdr;       /*  no finalizer): header word and slot */
  size_t last_slot;
  char *acct;            /* cursor position accounted to h so far */
  struct tp__region *region; /* where holes come from */
  uint32_t next_line;    /* the hole search resumes here */
  char *ocursor, *olimit, *oacct; /* overflow allocator (medium objects) */
  /* Safepoints. */
  int state;               /* TP__MS_* */
  uint32_t owner;          /* TP__OWNER_* (atomic) */
  unsigned attach_depth;   /* 0: detached */
  unsigned blocking_depth;
  char *scan_lo;           /* stopped: scan [scan_lo, stack_hi) */
  char *stack_hi;
  struct tp__satb *satb;   /* SATB log (the owner; the collector when it
                              is stopped; gc/barrier.c) */
  uint64_t assist_gc;      /* assists (gc/pacing.c, the owner only): num_gc */
  uint64_t assist_t;       /*  when the clock started, and since when this
                              thread has run without yielding (ns) */
  size_t nspill;           /* BLOCKING: words of the enter frame copied */
  uintptr_t spill[64];
  pthread_t tid;
  struct tp__mut *prev, *next; /* h->muts */
  struct tp__mut *tnext;       /* the owning thread's records */
} tp__mut;

/* A finalizer being run: linked on h->running while it runs (a root). */
struct tp__finrun {
  void *obj;
  pthread_t tid;
  struct tp__finrun *next;
};

struct tp__range {
  uintptr_t start, len;
};

/* A chunk of the SATB log: values overwritten by tp_heap_write while a
 * mark runs (gc/barrier.c). */
#define TP__SATB_N 254
struct tp__satb {
  struct tp__satb *next;
  size_t n;
  uintptr_t v[TP__SATB_N];
};

/* h->flags: what makes the allocation fast path and the write barrier
 * leave their fast paths. TP__F_MARK is the public TP__HEAP_MARKING. */
#define TP__F_STW 1u  /* a collection wants the threads stopped */
#define TP__F_MARK TP__HEAP_MARKING /* a concurrent mark runs: barrier on */

/* h->phase: the collector's phase, the one word the cycle's control flow
 * tests (tp__gc_trigger, fork_child) and tp_heap_read_stats reports, so
 * its values are the public TP_GC_PHASE_* (gc.h). MARK from pause 1 to
 * pause 2 (and the stop-the-world fallback's mark), MARK_TERM while
 * pause 2 (or the fallback) finishes the mark: SATB leftovers, weak
 * references, finalizers, checkmark; SWEEP until the sweep is done. */
enum {
  TP__PH_IDLE = TP_GC_PHASE_IDLE,
  TP__PH_MARK = TP_GC_PHASE_MARK,
  TP__PH_MARK_TERM = TP_GC_PHASE_MARK_TERMINATION,
  TP__PH_SWEEP = TP_GC_PHASE_SWEEP,
};

struct tp_heap {
  /* ---- read on every allocation; immutable after create except flags ---- */
  uint32_t magic;        /* first two words: struct tp__heap_head (gc.h) */
  uint32_t flags;        /* TP__F_STW | TP__F_MARK (written under sp_lock;
                            read relaxed by the fast paths and the
                            barrier, which then take their slow paths) */
  uintptr_t region_mask; /* ~(region_size - 1) */
  size_t region_size;
  unsigned region_shift;
  uint32_t nlines, first_line, nwords, first_word;
  size_t bits_off, pend_off, lines_off, data_off;
  size_t small_max;      /* largest slot allocated in regions */
  tp_pool *pool;         /* the regions */

  /* ---- configuration ---- */
  unsigned trigger_percent;
  size_t min_heap, memory_limit, gray_cap;
  bool checkmark;
  bool nobarrier;        /* TIDEPOOL_GC_NOBARRIER (debug) */
  unsigned markers;      /* markers of a full mark (config; >= 1) */

  /* ---- under lock ---- */
  pthread_mutex_t lock __attribute__((aligned(TP_CACHELINE)));
  struct tp__region *regions;    /* all held */
  struct tp__region *recyclable; /* stack */
  struct tp__large *large;
  void ***map_l1;                /* radix map */
  size_t map_l1_n, map_l1_bytes;
  uintptr_t lo, hi;              /* bounds of everything in the map */
  struct tp__ptrset roots;       /* precise root slots (void **) */
  struct tp__range *ranges;
  size_t nranges, ranges_cap;
  tp_weak *weaks;
  void **fin_objs;               /* allocated objects with a finalizer */
  size_t nfin, fin_cap;
  void **finq;                   /* queued for their finalizer */
  size_t finq_head, finq_n, finq_cap;
  struct tp__finrun *running;
  void **gray;                   /* the gray stack (mapped at first use) */
  uint8_t mark_epoch;            /* line mark of the current/last mark */
  bool destroying;
  struct tp__region *sweep_regions; /* not yet swept (the marker thread) */
  struct tp__large *sweep_large;
  uint8_t sweep_epoch;

  /* ---- the concurrent cycle (gc/collect.c) ---- */
  struct tp__marker mk;          /* the marker thread's, pause 1 .. pause 2 */
  uintptr_t gray_fallback[64];   /* its gray stack if none could be mapped */
  uint64_t black_from;           /* total_alloc at pause 1 */
  void *marker_stack;            /* its stack (TP__MARKER_STACK bytes) */
  pthread_t marker_tid;          /* the marker thread (sp_lock): */
  bool marker_running, marker_stop;
  int phase;                     /* TP__PH_*: written with every attached thread
                                    stopped (and h->lock or sp_lock held); read relaxed */
  uint64_t cycles_req, cycles_started, cycles_done; /* sp_lock */
  uint64_t cycles_explicit;      /* the last cycle tp_heap_collect asked for (sp_lock) */
  pthread_cond_t cv_marker;      /* the marker waits for work */
  pthread_cond_t cv_cycle;       /* cycles_done advanced */

  /* ---- parallel marking (gc/mark_parallel.c) ---- */
  struct tp__markwork mw;

  /* ---- the SATB log (gc/barrier.c) ---- */
  struct tp__satb *satb_full;    /* Treiber stack: full chunks for the
                                    marker (lock-free push, exchange pop) */
  pthread_mutex_t satb_lock;     /* satb_free, satb_shared */
  struct tp__satb *satb_free;    /* chunks the marker gave back */
  struct tp__satb *satb_shared;  /* the log of unattached writers */
  pthread_cond_t cv_satb;        /* store assists wait here (satb_lock) */
  uint64_t satb_takes;           /* lists the marker took while throttled
                                    (written under satb_lock, read relaxed) */
  unsigned satb_waiters;         /* threads in a store assist (satb_lock) */
  bool satb_throttle;            /* store assists on: the collector sets it
                                    when a round's log did not shrink, clears
                                    it in pause 2 (relaxed atomic) */

  /* ---- the safepoint handshake (sp_lock) ---- */
  pthread_mutex_t sp_lock __attribute__((aligned(TP_CACHELINE)));
  pthread_cond_t cv_parked; /* the collector waits for threads here */
  pthread_cond_t cv_resume; /* stopped threads wait here */
  uint64_t stw_epoch;       /* bumped when the world restarts */
  tp__mut *muts;            /* every record of the heap, any state */

  /* ---- statistics: relaxed atomics ---- */
  uint64_t alloc_since __attribute__((aligned(TP_CACHELINE)));
  uint64_t live_bytes, live_objs, objs_alloc, total_alloc, objs_freed;
  uint64_t num_gc, pause_total, pause_max, last_pause, mark_ns, sweep_ns;
  uint64_t next_gc, overflows, nregions, nlarge, large_map_bytes;
  uint64_t regions_released, nthreads, meta_bytes;
  uint64_t fin_run, fin_pending;
  /* gc/metrics.c (runtime/metrics): written by the collector */
  uint64_t pause_hist[TP_HEAP_PAUSE_BUCKETS], pauses;
  uint64_t mark_bg_cpu_ns; /* the marker thread's and its helpers' CPU time
                             between the pauses */
  /* gc/pacing.c: the pacer's figures (written by the collector in its
   * pauses and after its sweep, read relaxed by the allocation slow path)
   * and what the allocators did past the goal (relaxed counters). */
  uint64_t gc_trigger;     /* heap_alloc at which the next cycle is asked for */
  uint64_t hard_limit;     /* heap_alloc past which an allocator waits for the mark */
  uint64_t cons_mark[TP__PACE_HISTORY]; /* bytes allocated per byte marked
                              (Q16) in the last concurrent marks (collector) */
  unsigned cons_mark_i;    /* the next slot of cons_mark (collector) */
  uint64_t mark_assist_ns, assists, assist_max_ns; /* bounded assists */
  uint64_t store_assists, store_assist_ns;          /* gc/barrier.c */
  uint64_t mark_term_satb_max; /* the most logged values a pause 2 marked */
  uint64_t stop_total, stop_max; /* time to stop, of the pauses (gc/metrics.c) */
  uint64_t limit_waits, limit_wait_ns;            /* waits at hard_limit */

  /* ---- registered arenas (gc/arena_roots.c) ---- */
  struct tp__arena_link *arena_links; /* arena_roots_lock */
  uint64_t narenas;                   /* written under it, read relaxed */
  bool arenas_held;                   /* the collector holds them (collector only) */

  /* ---- in the process-wide registry of heaps (gc/heap.c) ---- */
  struct tp__reg_link reg;
};

struct tp_weak {
  tp_heap *heap;   /* NULL once the heap is destroyed (under h->lock) */
  void *target;    /* atomic: the object, NULL once it died */
  tp_weak *prev, *next;
};

/* ---- small helpers ------------------------------------------------------- */

static inline struct tp__bitpair *tp__region_bits(const tp_heap *h, struct tp__region *r) {
  return (struct tp__bitpair *)((char *)r + h->bits_off);
}
static inline uint64_t *tp__region_pend(const tp_heap *h, struct tp__region *r) {
  return (uint64_t *)((char *)r + h->pend_off);
}
static inline uint8_t *tp__region_lines(const tp_heap *h, struct tp__region *r) {
  return (uint8_t *)((char *)r + h->lines_off);
}
static inline const tp_type *tp__hdr_type(uintptr_t hdr) {
  return (const tp_type *)(hdr & TP__HDR_TYPE_MASK);
}

/* heap_alloc (the stats' and the pacer's): live after the last collection
 * plus what was allocated since. Relaxed loads of two counters: not a
 * snapshot while a collection may end between them. */
static inline uint64_t tp__heap_alloc_now(const tp_heap *h) {
  return tp__counter_get(&h->live_bytes) + tp__counter_get(&h->alloc_since);
}

/* The map entry for address a (NULL if none). Caller holds h->lock or is
 * the collector. */
static inline void *tp__map_get(const tp_heap *h, uintptr_t a) {
  if (a >> TP__USER_ADDR_BITS) return NULL;
  uintptr_t key = a >> h->region_shift;
  /* acquire (both): pairs with tp__map_set_range's release stores, so a
   * concurrent marker that finds a region created after its mark began
   * also sees the region's header and bitmaps as initialized. */
  void **l2 = __atomic_load_n(&h->map_l1[key >> TP__MAP_L2_BITS], __ATOMIC_ACQUIRE);
  return l2 ? __atomic_load_n(&l2[key & (((uintptr_t)1 << TP__MAP_L2_BITS) - 1)],
                              __ATOMIC_ACQUIRE)
            : NULL;
}

/* A region's start bit word w: loaded with acquire, because allocators
 * set start bits while a concurrent mark runs (in regions born black) and
 * publish them with release after writing the object's header. */
static inline uint64_t tp__start_word(const struct tp__bitpair *bp) {
  return __atomic_load_n(&bp->start, __ATOMIC_ACQUIRE);
}

/* Whether a collection wants the threads stopped (relaxed: a hint; the
 * slow paths re-check under sp_lock). */
static inline bool tp__stw_wanted(const tp_heap *h) {
  return __atomic_load_n(&h->flags, __ATOMIC_RELAXED) & TP__F_STW;
}

/* The longest backward search for a small object's start bit: one bitmap word
 * covers 64 granules (1 KiB), and a small object spans at most small_max bytes. */
static inline size_t tp__max_back_words(const tp_heap *h) {
  return h->small_max / (64 * TP__GRAN) + 1;
}

/* The object containing address a: returns its payload and sets *rp and
 * *gp (start granule) for a small object, *lp for a large one; 0 if a is
 * in no object of h. O(1): one map lookup, then a backward search over at
 * most tp__max_back_words(h) bitmap words. */
static inline uintptr_t tp__find_obj(const tp_heap *h, uintptr_t a, struct tp__region **rp,
                                     struct tp__large **lp, size_t *gp) {
  void *e = tp__map_get(h, a);
  if (!e) return 0;
  if ((uintptr_t)e & 1) {
    struct tp__large *l = (struct tp__large *)((uintptr_t)e & ~(uintptr_t)1);
    uintptr_t p = (uintptr_t)(l + 1);
    if (a < p || a >= p + l->payload) return 0;
    *lp = l;
    *rp = NULL;
    return p;
  }
  struct tp__region *r = e;
  uintptr_t base = (uintptr_t)r;
  if (a < base + h->data_off + 8) return 0;
  size_t g = (size_t)(a - 8 - base) >> TP__GRAN_SHIFT;
  size_t w = g >> 6;
  const struct tp__bitpair *bits = tp__region_bits(h, r);
  uint64_t sw = tp__start_word(&bits[w]);
  if (((sw >> (g & 63)) & 1) && a == base + (g << TP__GRAN_SHIFT) + 16) {
    /* A pointer to the payload start of an object (the precise case):
     * inside it whatever its size, so its header is not read here. */
    *rp = r;
    *lp = NULL;
    *gp = g;
    return a;
  }
  /* Bits at or below g (g & 63 == 63: all of them; the shift wraps to 0). */
  uint64_t word = sw & ((((uint64_t)2) << (g & 63)) - 1);
  if (!word) {
    size_t back = tp__max_back_words(h);
    size_t wmin = w > back ? w - back : 0;
    if (wmin < h->first_word) wmin = h->first_word;
    do {
      if (w <= wmin) return 0;
      word = tp__start_word(&bits[--w]);
    } while (!word);
  }
  size_t gs = (w << 6) + 63 - (size_t)__builtin_clzll(word);
  uintptr_t hp = base + (gs << TP__GRAN_SHIFT) + 8;
  uintptr_t hdr = *(const uintptr_t *)hp;
  if (a >= hp + ((hdr >> TP__HDR_K_SHIFT) << TP__GRAN_SHIFT)) return 0;
  *rp = r;
  *lp = NULL;
  *gp = gs;
  return hp + 8;
}

/* Takes m off h->muts (caller holds what the list's writers hold: h->lock
 * and sp_lock, or is the only thread, after fork). */
static inline void tp__mut_unlink(tp_heap *h, tp__mut *m) {
  TP__LIST_UNLINK(h->muts, m, prev, next);
}

/* ---- spilling registers for the conservative stack scan ------------------ */

/* The stack pointer where this is expanded (x86-64). */
static inline char *tp__current_sp(void) {
  char *sp;
  __asm__ volatile("movq %%rsp, %0" : "=r"(sp));
  return sp;
}

/* Evaluates `call` (a call of a TP_NOINLINE function, possibly assigned)
 * with the callee-saved registers spilled into the frame of the function
 * expanding this, which must be TP_NOINLINE too; the empty asm after it
 * keeps `call` from becoming a tail call, so that frame, above the
 * callee's stack pointer, stays while the callee runs. */
#define TP__WITH_REGS_SPILLED(call)                                                  \
  do {                                                                               \
    __builtin_unwind_init();                                                         \
    call;                                                                            \
    __asm__ volatile("" ::: "memory");                                               \
  } while (0)

/* ---- between the gc/ files --------------------------------------------- */

/* The calling thread's record used last (the allocation fast path's cache;
 * gc/mutators.c), and whether it is running finalizers (gc/weak.c). Only
 * the thread itself touches them. */
extern __thread tp__mut *tp__tls_mut;
extern __thread int tp__tls_in_finalizers;

/* gc/mutators.c: thread records, attach/detach, safepoints, blocking
 * sections and stopping the world. */

/* Once per process (from tp_heap_create): the thread-exit key and the
 * blocking hooks of the other layers. */
void tp__mut_init_once(void);

/* The calling thread's record for h, or NULL. Frees orphans it passes. */
tp__mut *tp__find_mut(tp_heap *h);

/* Creates the calling thread's record for h (detached). NULL + ENOMEM. */
tp__mut *tp__mut_create(tp_heap *h);

/* Detached -> attached (depth 1). */
void tp__mut_attach(tp_heap *h, tp__mut *m);

/* Frees a record and its SATB chunk. */
void tp__mut_free(tp__mut *m);

/* Unlinks m (a record of the calling thread) from its list and frees it. */
void tp__mut_free_own(tp__mut *m);

/* Frees the records of threads that exited (h->lock held, world stopped). */
void tp__mut_reap(tp_heap *h);

/* Parks running mutator m (stack scanned from sp down) until the
 * collection in progress has ended (sp_lock held). */
void tp__mut_park_locked(tp_heap *h, tp__mut *m, char *sp);

/* Waits (sp_lock held) until every attached thread but self is stopped;
 * returns when that was (tp__now_ns). */
uint64_t tp__gc_wait_all_stopped(tp_heap *h, tp__mut *self);

/* Wakes the threads stopped for a pause (cv_resume); returns the pause's
 * end, timed as the top of gc/mutators.c says. */
uint64_t tp__gc_wake_stopped(tp_heap *h);

/* Stops the calling (attached, running) thread at a safepoint if a
 * collection wants it; registers spilled. Call with no lock held. */
void tp__gc_park(tp_heap *h, tp__mut *m);

/* Takes h->lock for the attached, running thread m (an allocation's slow
 * path), which counts as stopped while it waits for the lock. The world
 * may have been stopped and restarted meanwhile (its allocation buffers
 * retired, the mark flag changed): read such state after the call. It
 * returns m running with no stop wanted, so what it reads then holds until
 * its next safepoint. Call with no lock held. */
void tp__mut_lock_heap(tp_heap *h, tp__mut *m);

/* gc/collect.c */

/* Runs a collection with the calling thread's registers spilled onto its
 * stack (self: its record if attached, else NULL). Returns true if this
 * thread collected, false if it waited for another thread's collection.
 * Takes and releases every lock itself; call with none held. */
bool tp__gc_collect(tp_heap *h, tp__mut *self);

/* Stops the marker thread (tp_heap_destroy; no lock held). */
void tp__gc_stop_marker(tp_heap *h);

/* The pacer says collect (an allocation slow path of attached, running m
 * found heap_alloc >= gc_trigger): asks for a concurrent cycle if none is
 * asked for, then past the goal assists or past the hard limit waits
 * (tp__gc_pace_alloc), or collects stop-the-world if there is no marker
 * thread. true if m's buffers may have been retired and the caller must
 * retry; false: go on (they may have been retired all the same, during an
 * assist: the caller's refill copes with either). Call with no lock held. */
bool tp__gc_trigger(tp_heap *h, tp__mut *m);

/* gc/alloc.c */

/* Ends m's allocation buffers: accounts what was allocated in them to h
 * (relaxed atomics) and drops their regions (full until the next sweep).
 * Touches only m's own fields and regions: the owner thread while no
 * collection runs (it saw !h->stw under h->sp_lock), or the collector
 * while the owner is stopped, or fork's child. */
void tp__gc_retire_tlab(tp_heap *h, tp__mut *m);

/* gc/barrier.c: the SATB log. */

/* Logs v (a heap pointer being overwritten, or a weak reference's target
 * returned) while a mark runs. */
void tp__satb_log(tp_heap *h, uintptr_t v);

/* The collector: turns store assists on (the log outgrows the marker) or
 * off (pause 2, an abandoned mark), and counts a list taken. */
void tp__satb_throttle(tp_heap *h, bool on);

/* Pushes m's chunk for the marker (m detaching), or frees it if empty. */
void tp__satb_flush_mut(tp_heap *h, tp__mut *m);

/* The marker: takes every full chunk pushed so far / gives chunks back. */
struct tp__satb *tp__satb_take(tp_heap *h);
void tp__satb_give_back(tp_heap *h, struct tp__satb *list);

/* tp_heap_destroy: frees every chunk not in a record. */
void tp__satb_free_all(tp_heap *h);

/* gc/weak.c */

/* Registers obj for finalization. false + ENOMEM. */
bool tp__fin_register(tp_heap *h, void *obj);

/* Appends obj to the finalizer queue (a ring; h->lock held or the
 * collector). false on ENOMEM. */
bool tp__finq_push(tp_heap *h, void *obj);

/* Runs the finalizers a collection of ours queued, unless this thread is
 * already running finalizers (then the outer loop picks them up). */
void tp__gc_after_collection(tp_heap *h);

/* gc/sweep.c */

/* What a sweep takes from the heap, given back by tp__gc_release. */
struct tp__release {
  struct tp__region *regions;
  struct tp__large *large;
};

/* Sweeps every region and large object after a mark of epoch `epoch`
 * (h->lock held, world stopped): what is dead goes on *rel. */
void tp__gc_sweep(tp_heap *h, uint8_t epoch, struct tp__release *rel);

/* The concurrent sweep. begin (pause 2, h->lock held): moves every region
 * and large object onto the lists to sweep. some (h->lock held): sweeps
 * up to `budget` of them; true when none is left. */
void tp__gc_sweep_begin(tp_heap *h, uint8_t epoch);
bool tp__gc_sweep_some(tp_heap *h, size_t budget, struct tp__release *rel);

/* Gives *rel's memory back (no heap lock held). */
void tp__gc_release(tp_heap *h, struct tp__release *rel);

/* gc/check.c */

/* What is wrong with region r (h->lock held, or the collector), or NULL.
 * epoch < 0: what holds at any time (and, outside a mark, no mark or
 * pend bit). epoch >= 0: r was just swept after the mark of that epoch
 * and no allocator holds it: also its line marks and its objects. */
const char *tp__heap_region_invalid(const tp_heap *h, struct tp__region *r, int epoch);

/* gc/pacing.c */

/* heap_sys as reported in the stats. */
uint64_t tp__gc_heap_sys(const tp_heap *h);

/* Recomputes next_gc, gc_trigger and hard_limit from the last
 * collection's results (the collector, or a caller that just collected). */
void tp__gc_pace(tp_heap *h);

/* Pause 2 (h->lock held): the mark allocated `allocated` bytes while it
 * marked `marked` bytes; the trigger's estimate learns from it. */
void tp__gc_pace_mark_done(tp_heap *h, uint64_t allocated, uint64_t marked);

/* An allocation slow path of attached, running m while a cycle is asked
 * for or runs: nothing below the goal, an assist of at most
 * TP__ASSIST_MAX_NS below the hard limit, a wait for the mark's end past
 * it. true if it waited at the hard limit (the caller retries). No lock
 * held. */
bool tp__gc_pace_alloc(tp_heap *h, tp__mut *m);

/* Gives empty pool memory back to the OS now (memory_limit). Call with no
 * lock held. */
void tp__gc_trim(tp_heap *h);

/* gc/map.c */

/* The object (payload) containing address a, or 0 (h->lock held or the
 * collector). */
uintptr_t tp__gc_find(const tp_heap *h, uintptr_t a);

/* ---- metrics (gc/metrics.c) ----------------------------------------------- */

/* Records a stop-the-world pause of ns nanoseconds, of which stop_ns went
 * to stopping the threads: total, last, max, histogram, pauses, stopping.
 * Every pause: pause 1 and pause 2 of a concurrent cycle (two per
 * collection) and the stop-the-world fallback's one. */
void tp__gc_note_pause(tp_heap *h, uint64_t ns, uint64_t stop_ns);


/* The runtime/metrics part of tp_heap_read_stats. */
void tp__gc_read_metrics(const tp_heap *h, tp_heap_stats *out);

/* ---- registered arenas (gc/arena_roots.c) -------------------------------- */

/* The collector, after the world is stopped and before it takes h->lock:
 * holds the arena-roots lock and every arena registered with h, so none is
 * unregistered, destroyed, reset or rewound while the roots are scanned.
 * release: after the scan (pause 1's root shading; pause 2's checkmark;
 * the fallback's mark and checkmark), any lock of h held or not. A heap
 * with no arena takes no lock. */
void tp__heap_arenas_hold(tp_heap *h);
void tp__heap_arenas_release(tp_heap *h);

/* The root phase: fn(arg, lo, hi) for every allocated range of every arena
 * registered with h (between hold and release; nothing otherwise).
 * Returns the bytes visited. */
size_t tp__heap_scan_arenas(tp_heap *h, tp__arena_range_fn *fn, void *arg);

/* tp_heap_destroy: drops every registration of h (no lock of h held). */
void tp__heap_arenas_destroy(tp_heap *h);

/* Region map maintenance (h->lock held). */
int tp__map_set_range(tp_heap *h, uintptr_t start, size_t len, void *entry);
void tp__map_clear_range(tp_heap *h, uintptr_t start, size_t len);

/* gc/heap.c */

/* Calls fn(h, arg) for every heap, under the heap registry lock (no heap
 * is created or destroyed meanwhile): fn must not block, take a heap's
 * lock, or call back into the registry. Returns how many it visited.
 * For tp_stats_print. */
size_t tp__heap_foreach(void (*fn)(const tp_heap *h, void *arg), void *arg);

#endif /* TIDEPOOL_HEAP_INTERNAL_H */
