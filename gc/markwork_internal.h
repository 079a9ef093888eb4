/*
 * Internal: the state parallel markers share (struct tp__markwork, one
 * per heap, h->mw) and the marker's own (struct tp__marker): the shared
 * list of gray blocks, the session that markers join and leave, its
 * termination, the overflow pass's cursors and count, and the helper
 * threads. gc/mark_parallel.c holds the functions, gc/mark.c the drain
 * that uses them; the correctness argument is at the top of gc/mark.c.
 */
#ifndef TIDEPOOL_GC_MARKWORK_INTERNAL_H
#define TIDEPOOL_GC_MARKWORK_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_heap;
struct tp__region;
struct tp__large;

/* Most markers a heap runs (tp_heap_config.markers). */
#define TP__MARKERS_MAX 64u
/* Bytes of a large object scanned per gray entry (gc/mark.c, scan_large). */
#define TP__SCAN_CHUNK ((size_t)4096)
/* Gray entries per shared block. */
#define TP__GRAYBLK_N 254

/* A block of gray entries on the shared list (or its free list). */
struct tp__grayblk {
  struct tp__grayblk *next;
  size_t n;
  uintptr_t v[TP__GRAYBLK_N];
};

/* One marker's state: on the heap for the marker thread (the concurrent
 * mark keeps it from pause 1 to pause 2), on the stack for a helper, the
 * stop-the-world fallback and the checkmark. Gray entries: payload
 * addresses, or (tagged, bit 0) the address in a large object where the
 * rest of it is to be scanned. */
struct tp__marker {
  struct tp_heap *h;
  uintptr_t lo, span; /* [h->lo, h->hi) when the mark started */
  uintptr_t *st;      /* the gray stack: entries [bot, top) */
  size_t top, cap;
  size_t bot;         /* entries below were given to the shared list */
  struct tp__region *regions; /* the overflow pass's regions: h->regions */
  struct tp__large *large;    /*  and h->large when the mark started */
  struct tp__markwork *ws;    /* &h->mw (NULL for the checkmark) */
  bool check;         /* checkmark traversal (growable stack) */
  bool lenient;       /* checkmark of a concurrent mark, now scanning a
                         stack: an unmarked target is a stale word */
  bool concurrent;    /* checkmark of a concurrent mark */
  bool par;           /* in a session with other markers: atomic bits */
  bool defer;         /* scanning a chunk of a large object: what it
                         points to goes to the overflow pass */
  bool any_overflow;  /* the gray stack overflowed in this collection */
  uint8_t epoch;
  uint64_t bytes, objs;
  uint64_t helper_cpu_ns; /* CPU time helper threads spent in this marker's
                            sessions (it led them), summed */
};

/* A helper marker thread (its stack and gray stack mapped for it). */
struct tp__markhelper {
  struct tp_heap *h;
  pthread_t tid;
  void *stack;
  uintptr_t *gray;
};

struct tp__markwork {
  pthread_mutex_t lock;   /* everything below but the atomics */
  pthread_cond_t cv;      /* helpers wait for a session, idle markers for
                             work or the end */
  pthread_cond_t cv_left; /* the leader waits for the helpers to leave */
  struct tp__grayblk *full, *free;
  unsigned nfull;         /* blocks on full (also read relaxed: a hint) */
  unsigned want, active;  /* the session: markers asked for, taking part */
  unsigned idle;          /* of those, idle (also read relaxed: a hint) */
  bool open;              /* helpers may join (until termination) */
  bool done;              /* terminated */
  bool stop;              /* helpers exit (tp_heap_destroy) */
  struct tp__marker *leader; /* helpers copy its mark's parameters */
  uint64_t bytes, objs;   /* helpers' counters, summed as they leave */
  uint64_t cpu_ns;        /*  and their CPU time in the session */
  bool any_overflow;
  /* The overflow pass (atomics): flags set, and the walks' cursors. */
  uint64_t ovf_pending;
  struct tp__region *rcur, *regions;
  struct tp__large *lcur, *large;
  /* Helper threads (created with the marker thread, sp_lock held). */
  unsigned nhelpers;      /* running (written under sp_lock, read relaxed) */
  unsigned max_helpers;   /* h->markers - 1 */
  struct tp__markhelper *helpers;
};

/* gc/mark_parallel.c: the lifecycle. init / destroy: tp_heap_create and
 * _destroy (after stop). start: with the marker thread (sp_lock held),
 * creates up to h->markers - 1 helper threads (fewer if threads fail: still correct).
 * stop: tp_heap_destroy, after the marker thread is gone. Fork: the
 * prepare handler takes the lock, the parent releases it; in the child,
 * fork_child re-initializes everything but the lock (no helper exists
 * there), and fork_parent then releases it as in the parent. */
void tp__markwork_init(struct tp_heap *h);
void tp__markwork_destroy(struct tp_heap *h);
void tp__markwork_start_helpers(struct tp_heap *h);
void tp__markwork_stop_helpers(struct tp_heap *h);
void tp__markwork_fork_prepare(struct tp_heap *h);
void tp__markwork_fork_parent(struct tp_heap *h);
void tp__markwork_fork_child(struct tp_heap *h);

#endif /* TIDEPOOL_GC_MARKWORK_INTERNAL_H */
