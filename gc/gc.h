/*
 * <tidepool/gc.h> — the tracing collector (tp_heap) and the sweeper.
 *
 * A tp_heap is a garbage-collected heap for data whose lifetime nobody
 * owns: shared graphs, caches referenced from many in-flight requests,
 * cyclic structures. Whatever is reachable from the registered roots and
 * from the stacks and registers of the attached threads survives a
 * collection; everything else is reclaimed. The heap is mark-region
 * (Immix): objects are bump-allocated in regions taken from a tidepool
 * chunk pool, regions are divided into lines, a region with no live line
 * goes back whole to the pool and partly live regions hand their free
 * lines to the allocators again. A collection marks concurrently on the
 * heap's marker thread, between two short pauses that stop the attached
 * threads at safepoints (one shades the roots, one ends the mark), with a
 * snapshot-at-the-beginning write barrier (tp_heap_write) and an explicit
 * bounded gray stack, then sweeps the regions concurrently; see
 * docs/gc.md for the model and the rules.
 *
 *   static void node_trace(void *obj, tp_tracer *t) {
 *     struct node *n = obj;
 *     tp_trace(t, n->left);
 *     tp_trace(t, n->right);
 *   }
 *   static const tp_type node_type = {"node", sizeof(struct node), node_trace};
 *
 *   tp_heap *h = tp_heap_create(NULL);          // GOGC-like defaults
 *   struct node *root = NULL;
 *   tp_root_add(h, (void **)&root);             // a precise root
 *   root = tp_heap_alloc(h, &node_type);        // zeroed; attaches the thread
 *   root->left = root;                          // a cycle: no leak
 *   root = NULL;
 *   tp_heap_collect(h);                         // like runtime.GC()
 *   tp_heap_destroy(h);
 *
 * The threading model in one paragraph (docs/gc.md has the full rules): a
 * thread that holds heap pointers in its locals must be attached
 * (tp_heap_attach; the first tp_heap_alloc on a thread attaches it too).
 * An attached thread must reach a safepoint — any allocation, or
 * tp_heap_safepoint — regularly; a collection waits until every attached
 * thread is at one. Before a call that may block for long (I/O, a lock,
 * pthread_join, a condition wait) an attached thread calls
 * tp_heap_blocking_enter and after it tp_heap_blocking_leave, and in
 * between it does not touch heap objects: collections then proceed
 * without it, scanning its stack as it was at enter. Pointers stored in
 * registered roots or in heap objects need nothing more.
 *
 * Errors follow the library convention (<tidepool/common.h>): NULL or a
 * negative errno, with errno set; NULL or bad arguments never crash.
 */
#ifndef TIDEPOOL_GC_H
#define TIDEPOOL_GC_H

#include <tidepool/arena.h>
#include <tidepool/common.h>
#include <tidepool/sweeper.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_heap tp_heap;
typedef struct tp_tracer tp_tracer;
typedef struct tp_weak tp_weak;

/* Type flags. A type is exactly one of: TP_TYPE_LEAF (holds no heap
 * pointers; never scanned), TP_TYPE_CONSERVATIVE (every aligned word is
 * treated as a possible pointer, interior pointers included), a trace
 * callback, or a ptr_offsets table. */
#define TP_TYPE_LEAF 1u
#define TP_TYPE_CONSERVATIVE 2u

/*
 * The layout of objects of one kind. Lives as long as any object of the
 * type (normally a static const); the heap reads it at every collection.
 * Must be 8-byte aligned (any tp_type object is).
 *
 *   size       bytes of one object (> 0); arrays are n elements of size.
 *   trace      precise: calls tp_trace(t, p) for every pointer field of
 *              one element (p may be NULL, or point outside any heap: it is
 *              ignored). Must not allocate, take locks the mutators hold,
 *              or call anything else in this header.
 *   ptr_offsets, n_ptr_offsets
 *              precise without a callback: byte offsets (multiples of 8,
 *              each + 8 <= size) of the pointer fields of one element.
 *   finalize   optional: runs once after the object is found unreachable
 *              (see tp_heap_collect for when and where, docs/gc.md for
 *              what it may not do).
 *   flags      TP_TYPE_LEAF or TP_TYPE_CONSERVATIVE (or 0).
 * A type with none of trace, ptr_offsets and the two flags, or with more
 * than one of them, is rejected (EINVAL): the heap never guesses.
 */
typedef struct tp_type {
  const char *name;
  size_t size;
  void (*trace)(void *obj, tp_tracer *t);
  const size_t *ptr_offsets;
  size_t n_ptr_offsets;
  void (*finalize)(void *obj);
  unsigned flags;
} tp_type;

/* Called by trace callbacks for each reference (NULL and pointers outside
 * the heap are ignored; pointers into an object, not only to its start,
 * keep it alive). Only valid inside a trace callback. */
TP_API void tp_trace(tp_tracer *t, void *ptr);

typedef struct tp_heap_config {
  unsigned trigger_percent; /* like GOGC: collect when the bytes allocated
                               since the last collection reach live *
                               percent / 100 (at least one region);
                               0 = manual only (but see
                               memory_limit); a NULL config means 100 */
  size_t min_heap_bytes;    /* no automatic collection while heap_alloc is
                               below this; 0 = default 4 MiB */
  size_t memory_limit;      /* soft limit like GOMEMLIMIT on heap_sys:
                               collections come earlier as it nears (also
                               with trigger_percent 0), and empty pool
                               memory goes back to the OS after each
                               collection over it; 0 = none */
  size_t region_size;       /* 0 = default 256 KiB; else a power of two,
                               32 KiB .. 1 MiB */
  size_t gray_stack_entries;/* mark stack capacity (entries of 8 bytes);
                               0 = default 64 Ki. Overflow is handled (by
                               rescanning), so tests set it tiny. */
  unsigned markers;         /* threads that mark in parallel, at most 64
                               (more: EINVAL); 0 = default: one per online
                               CPU; 1 = the marker thread alone. A
                               collection tp_heap_collect asks for marks
                               on all of them (the caller waits), and so
                               does a pause's remaining mark; a cycle the
                               pacer starts marks beside the mutators on a
                               quarter of them (at least one). Each marker
                               but the marker thread is a helper thread
                               created with it (1 MiB stack + its own gray
                               stack), idle between marks. */
} tp_heap_config;

/* Buckets of tp_heap_stats.pause_hist. */
#define TP_HEAP_PAUSE_BUCKETS 24

/* The lower bound in ns of pause_hist bucket i (0 for bucket 0); bucket i
 * ends where bucket i + 1 starts; the last has no upper bound. */
TP_INLINE uint64_t tp_heap_pause_bucket_ns(unsigned i) {
  return i == 0 ? 0 : i < TP_HEAP_PAUSE_BUCKETS ? (uint64_t)1 << (9 + i) : UINT64_MAX;
}

/* tp_heap_stats.phase. A concurrent cycle: IDLE until pause 1, MARK from
 * pause 1 while the marker thread marks, MARK_TERMINATION in pause 2 (the
 * mark's end, weak references, finalizers), SWEEP while the sweep runs
 * concurrently, then IDLE. The stop-the-world fallback (no marker thread)
 * goes MARK, MARK_TERMINATION, SWEEP, IDLE inside its one pause. */
enum {
  TP_GC_PHASE_IDLE = 0,
  TP_GC_PHASE_MARK = 1,
  TP_GC_PHASE_MARK_TERMINATION = 2,
  TP_GC_PHASE_SWEEP = 3,
};

/* Statistics after Go's runtime.MemStats. Each field is read with a
 * relaxed atomic load while the mutators run: each is exact on its own at
 * the moment it is read (heap_alloc and objects_alloc lag by at most one
 * allocation buffer per thread), the set is not a snapshot. After
 * tp_heap_collect returns on a quiescent heap all of them agree. */
typedef struct tp_heap_stats {
  uint64_t heap_alloc;      /* bytes in allocated objects: heap_live plus
                               what was allocated since the last collection */
  uint64_t heap_live;       /* bytes in objects marked by the last collection
                               (what it allocated while it marked, born
                               marked, counts in heap_alloc instead) */
  uint64_t heap_sys;        /* bytes mapped for the heap: region pool slabs
                               (including regions cached for reuse), large
                               objects, metadata */
  uint64_t heap_inuse;      /* bytes of regions and large objects held */
  uint64_t regions;         /* regions held */
  uint64_t large_objects;   /* objects over a quarter region (own mapping) */
  uint64_t num_gc;          /* collections completed */
  uint64_t pause_total_ns;  /* time the world was stopped, summed */
  uint64_t pause_max_ns;    /* longest stop */
  uint64_t last_pause_ns;   /* the last stop */
  uint64_t objects_live;    /* objects marked by the last collection */
  uint64_t objects_alloc;   /* objects allocated, ever (Go: Mallocs) */
  uint64_t objects_freed;   /* objects reclaimed, ever (Go: Frees) */
  uint64_t total_alloc;     /* bytes allocated, ever (Go: TotalAlloc) */
  uint64_t finalizers_run;  /* finalizers that have returned, ever */
  uint64_t finalizers_pending; /* queued, not yet run */
  uint64_t mark_ns;         /* time spent marking, summed */
  uint64_t sweep_ns;        /* time spent sweeping, summed */
  uint64_t next_gc;         /* the pacer's goal: heap_alloc the next
                               automatic collection should end its mark
                               by (UINT64_MAX: manual only); it is asked
                               for earlier, at gc_trigger */
  uint64_t gray_overflows;  /* collections whose gray stack overflowed */
  uint64_t regions_released;/* regions given back to the pool, ever */
  uint64_t threads;         /* attached threads */
  uint32_t checkmark;       /* 1 when TIDEPOOL_GC_CHECKMARK=1 verification is on */
  uint32_t region_size;     /* bytes */
  /* ---- after Go's runtime/metrics (fields added at the end) ---- */
  /* Stop-the-world pauses by duration, like Go's /gc/pauses:seconds:
   * pause_hist[0] counts pauses under 2^10 ns (~1 us), pause_hist[i] for
   * 1 <= i <= 22 those in [2^(9+i), 2^(10+i)) ns, pause_hist[23] those of
   * 2^32 ns (~4.3 s) or more (tp_heap_pause_bucket_ns gives the bounds).
   * Every pause is counted once, when it ends: two per concurrent
   * collection (pause 1 and pause 2), one per stop-the-world fallback, so
   * pauses >= num_gc. pause_total_ns, last_pause_ns and pause_max_ns
   * cover the same pauses. */
  uint64_t pause_hist[TP_HEAP_PAUSE_BUCKETS];
  uint64_t pauses;          /* pauses counted in pause_hist, summed */
  uint64_t mark_assist_ns;  /* time allocating threads spent in assists:
                               past next_gc while a cycle runs, an
                               allocation slow path yields its CPU to the
                               marker for at most 1 ms (docs/gc.md,
                               "Pacing"); wall time, summed */
  uint64_t mark_bg_cpu_ns;  /* CPU time of the marker thread and its
                               helpers (tp_heap_config.markers) marking
                               concurrently, between pause 1 and pause 2
                               (the pauses' own time is in pause_total_ns;
                               0 while every collection is the
                               stop-the-world fallback) */
  uint32_t phase;           /* TP_GC_PHASE_*: what the collector is doing now */
  uint32_t arenas;          /* arenas registered as roots (tp_heap_add_arena) */
  /* ---- the pacer (docs/gc.md, "Pacing") ---- */
  uint64_t gc_trigger;      /* heap_alloc at which the next automatic
                               cycle is asked for: early enough, by the last
                               marks' estimate, that its mark ends before
                               next_gc (<= next_gc; UINT64_MAX: manual) */
  uint64_t gc_hard_limit;   /* heap_alloc past which an allocation waits
                               for the running mark to end (next_gc plus
                               twice its growth over heap_live, capped by
                               memory_limit; UINT64_MAX: manual only) */
  uint64_t assists;         /* assists counted in mark_assist_ns */
  uint64_t assist_max_ns;   /* the longest (bounded: 1 ms plus the time to
                               be woken, and a pause it runs into) */
  uint64_t limit_waits;     /* allocations that waited at gc_hard_limit */
  uint64_t limit_wait_ns;   /* their time, summed */
  /* ---- store assists (docs/gc.md, "Concurrent marking") ---- */
  uint64_t store_assists;   /* times a thread that filled its write-barrier
                               log waited for the marker (only while the
                               log outgrows the marker) */
  uint64_t store_assist_ns; /* their time, summed (each at most 1 ms plus
                               the time to be woken, and a pause it runs into) */
  uint64_t mark_term_satb_max; /* the most logged values one pause 2
                               marked: what the concurrent mark left */
  /* ---- stopping (Go's /sched/pauses/stopping/gc) ---- */
  uint64_t stop_total_ns;   /* of pause_total_ns, the time from each stop
                               request until every attached thread had
                               stopped (reached a safepoint or was in a
                               blocking section), summed */
  uint64_t stop_max_ns;     /* the longest such wait */
} tp_heap_stats;

/* Creates a heap (NULL config = defaults). NULL + errno EINVAL (bad
 * config) or ENOMEM. With TIDEPOOL_GC_CHECKMARK=1 (or TP_GC_CHECKMARK=1)
 * in the environment at start-up (docs/options.md), every collection
 * re-marks from scratch with an independent traversal and aborts if a
 * reachable object was left unmarked.
 * Safe to call concurrently. */
TP_API tp_heap *tp_heap_create(const tp_heap_config *cfg);

/* Runs every outstanding finalizer — those queued and those of objects
 * still allocated — then gives all the heap's memory back. Weak
 * references of the heap read NULL afterwards (still tp_weak_free them).
 * NULL is a no-op. Must not run concurrently with any other use of h,
 * including the exit of a thread still attached to it; threads that are
 * attached but idle must not use h afterwards (their records are freed
 * when they exit or next look for another heap). */
TP_API void tp_heap_destroy(tp_heap *h);

/* Allocates one zeroed object of type t (16-byte aligned). NULL + errno:
 * EINVAL (NULL heap or type, invalid type), ENOMEM. Attaches the calling
 * thread if it is not attached. A safepoint: may stop for a collection,
 * and may run one (then it runs the finalizers that collection queued
 * before returning). Fast path: a bump in the thread's own buffer, no lock,
 * no atomic read-modify-write. Safe to call concurrently. */
TP_API void *tp_heap_alloc(tp_heap *h, const tp_type *t);

/* n zeroed elements of type t, n * t->size checked for overflow (ENOMEM).
 * n == 0 gives a valid object with no elements. Otherwise as
 * tp_heap_alloc. Safe to call concurrently. */
TP_API void *tp_heap_alloc_array(tp_heap *h, const tp_type *t, size_t n);

/* Precise roots: the pointer stored in *slot (read at each collection)
 * keeps its object alive. 0, or -errno: EINVAL (NULL), EEXIST (slot
 * already a root), ENOMEM. remove: 0, or -EINVAL (NULL or never added).
 * Safe to call concurrently; they wait for a running collection. */
TP_API int tp_root_add(tp_heap *h, void **slot);
TP_API int tp_root_remove(tp_heap *h, void **slot);

/* Conservative root ranges: every aligned word of [start, start + len) is
 * treated as a possible pointer at each collection (interior pointers
 * count). The memory must stay readable until removed. Ranges are keyed
 * by start. 0, or -errno: EINVAL (NULL heap or start, len 0, start never
 * added), EEXIST (start already added), ENOMEM. Safe to call concurrently. */
TP_API int tp_root_add_range(tp_heap *h, void *start, size_t len);
TP_API int tp_root_remove_range(tp_heap *h, void *start);

/*
 * Arenas as roots: while arena a is registered with h, its allocated bytes
 * — every chunk up to its bump pointer, every large allocation; for a
 * TP_ARENA_CONCURRENT arena every CPU's region and the shared one — are
 * scanned conservatively at each collection, like a tp_root_add_range, so
 * a per-request arena may hold pointers to heap objects. Unallocated chunk
 * tails and memory given up by a reset or rewind are never read.
 *
 *   tp_arena *req = tp_arena_create(NULL);
 *   tp_heap_add_arena(h, req);
 *   struct ctx *c = tp_arena_alloc(req, sizeof *c);
 *   c->user = tp_heap_alloc(h, &user_type);      // kept alive by the arena
 *   ...
 *   tp_arena_destroy(req);                       // unregisters it too
 *
 * An arena may be registered with several heaps (each scans it), once per
 * heap. tp_arena_destroy, and tp_arena_retire's deferred destroy, remove it
 * from every heap; tp_heap_destroy removes every arena registered with it.
 * tp_arena_reset and tp_arena_rewind need nothing: what they drop is no
 * longer a root from the next collection on (dropping arena memory is a
 * bulk deletion; under snapshot-at-the-beginning marking the arena is
 * scanned in the initial pause, so a deletion during a mark needs no
 * barrier either). Stores of heap pointers into arena memory need no
 * barrier.
 *
 * Threads. Who writes heap pointers into a registered arena must be
 * attached to h (as for any heap pointer held outside the heap): a
 * collection scans the arena with the attached threads stopped. A plain
 * (single-threaded) registered arena must therefore only be used by
 * threads attached to h, outside blocking sections, or while no collection
 * of h can run; a concurrent one may be allocated from by any thread at any
 * time (the collection takes the arena's lock, and reads each region's bump
 * pointer atomically). Reset, rewind and destroy of a registered arena wait
 * for a collection scanning it (they drop memory under the arena's lock).
 * Registering a plain arena costs it nothing on its allocation paths; a
 * reset or rewind of a registered arena takes its (uncontended) lock. Cost
 * in the pause (docs/gc.md): ~0.2 ms per MiB of arena scanned while it
 * fits the cache, up to ~1 ms per MiB beyond (memory-bound).
 *
 * add: 0, or -errno: EINVAL (NULL h or a, h not a heap), EEXIST (already
 * registered with h), ENOMEM. remove: 0, or -errno: EINVAL (NULL),
 * ENOENT (not registered with h). Both are safe to call concurrently with
 * anything but the destroy of h or a, and a reset or rewind of a; they wait
 * for a collection of h that is scanning arenas.
 */
TP_API int tp_heap_add_arena(tp_heap *h, tp_arena *a);
TP_API int tp_heap_remove_arena(tp_heap *h, tp_arena *a);

/* Makes the calling thread a mutator of h: from now on its stack (from
 * the frame of its current safepoint up to the stack's base) and its
 * registers are scanned conservatively at every collection, and
 * collections wait for it at safepoints. Nests: each attach needs a
 * detach. 0, or -EINVAL (NULL), -ENOMEM. Detach of a thread that is not
 * attached is a no-op. A thread that exits attached is detached. */
TP_API int tp_heap_attach(tp_heap *h);
TP_API void tp_heap_detach(tp_heap *h);

/* A safepoint: if a collection is waiting for the threads, stops here
 * until it has finished. Cheap (one load) when none is. An attached
 * thread that computes for long without allocating calls this regularly.
 * NULL or an unattached thread: no-op. */
TP_API void tp_heap_safepoint(tp_heap *h);

/* For an attached thread about to block (I/O, locks, joins, waits): after
 * enter, collections run without waiting for it, scanning its stack and
 * registers as they were at enter. Until leave it must not read or write
 * heap objects or call any tp_heap function except leave. leave waits for
 * a running collection to finish. Nests with itself (enter twice, leave
 * twice). Unattached thread or NULL: no-op. */
TP_API void tp_heap_blocking_enter(tp_heap *h);
TP_API void tp_heap_blocking_leave(tp_heap *h);

/* A full collection now, like runtime.GC(): returns after a complete
 * cycle that started after the call (marked concurrently by the heap's
 * marker thread while the other threads run, except in its two short
 * pauses; this thread waits as in a blocking section), then runs on this
 * thread the finalizers found due (unless this thread is already running
 * finalizers). Without a marker thread (it could not be started) the
 * collection is stop-the-world on this thread. NULL: no-op (errno
 * EINVAL). Safe to call concurrently. */
TP_API void tp_heap_collect(tp_heap *h);

/* Runs the finalizers queued so far on the calling thread; returns how
 * many ran. Collections run them anyway; this is for threads that want
 * them run at a known point. Safe to call concurrently (each finalizer
 * runs once, on one thread). */
TP_API size_t tp_heap_run_finalizers(tp_heap *h);

/* Weak references. tp_weak_new: obj must be an object of h (as returned
 * by tp_heap_alloc*); NULL + errno EINVAL otherwise, ENOMEM. tp_weak_get
 * returns the object while it is reachable, and NULL from the collection
 * that finds it unreachable on (before its finalizer runs; a finalizer
 * that revives the object does not revive the reference). The result is
 * a heap pointer like any other: hold it on an attached thread.
 * tp_weak_free: NULL is a no-op. get never blocks; free takes the heap's
 * lock, so it waits out a collection's mark and sweep. get is safe to call
 * concurrently with anything, free with anything but another free or get
 * of the same reference. */
TP_API tp_weak *tp_weak_new(tp_heap *h, void *obj);
TP_API void *tp_weak_get(tp_weak *w);
TP_API void tp_weak_free(tp_weak *w);

/* Fills *out; 0, or -EINVAL (errno). Never stops or waits for mutators or
 * a collection (relaxed atomic loads, no lock, no system call: ~280
 * instructions, ~100 ns; docs/gc.md). Safe to call concurrently, from any thread, attached or
 * not, at any time (during a collection too). */
TP_API int tp_heap_read_stats(const tp_heap *h, tp_heap_stats *out);

/* Checks the heap's structures: its regions (magic, address map, header
 * area; no mark or pend bit outside a mark), the region and recyclable
 * lists, and the large objects (gc/check.c lists what). 0; -EINVAL
 * (errno) for NULL or a destroyed heap, or with a message on stderr
 * naming what is broken. Takes the heap's lock, so it waits out a pause
 * and a sweep step; safe to call concurrently. Debug builds also check
 * every region a sweep keeps (its objects and line marks). */
TP_API int tp_heap_check(tp_heap *h);

/*
 * The write barrier: stores value into the pointer field *field of heap
 * object obj. Every store of a heap pointer into a field of a heap object
 * that other threads may already reach goes through it (stores into
 * roots, stacks, registered ranges, arena memory and objects this thread
 * just allocated and has not published need nothing; see docs/gc.md).
 *
 * While a concurrent mark runs it is a snapshot-at-the-beginning (Yuasa
 * deletion) barrier: the value being overwritten is logged first, so the
 * marker still reaches everything that was reachable when the mark began.
 * Otherwise it is a load of the heap's flags word, a predicted branch and
 * the store: 4 instructions with gcc 12 -O2 (objdump: mov 0x4(%rdi),%eax;
 * test $0x2,%al; jne <slow>; mov %rcx,(%rdx)) where a plain store is 1;
 * the slow path (gc/barrier.c) appends the old value to the thread's log
 * (about 10 instructions when the log has room). The
 * store is atomic (release) so that a marker reading the field
 * concurrently is not a data race. Thread safety: that of the store; the
 * calling thread is attached (docs/gc.md).
 */
struct tp__heap_head { /* the first words of every tp_heap */
  uint32_t magic;
  uint32_t flags;
};
#define TP__HEAP_MARKING 2u
TP_API void tp__heap_write_slow(tp_heap *h, void **field);

TP_INLINE void tp_heap_write(tp_heap *h, void *obj, void **field, void *value) {
  (void)obj;
  if (__builtin_expect(__atomic_load_n(&((const struct tp__heap_head *)(const void *)h)->flags,
                                       __ATOMIC_RELAXED) &
                           TP__HEAP_MARKING,
                       0))
    tp__heap_write_slow(h, field);
  __atomic_store_n(field, value, __ATOMIC_RELEASE);
}

/* For trace callbacks: traces the pointer in *field, read with a relaxed
 * atomic load. Trace callbacks run on the marker thread while mutators
 * store into the same fields through tp_heap_write; reading them with this
 * (or with __atomic_load_n(field, __ATOMIC_RELAXED)) instead of a plain
 * read keeps ThreadSanitizer quiet. Same code as a plain read on x86-64. */
TP_INLINE void tp_trace_field(tp_tracer *t, void *const *field) {
  tp_trace(t, __atomic_load_n(field, __ATOMIC_RELAXED));
}

#ifdef __cplusplus
}
#endif

#endif /* TIDEPOOL_GC_H */
