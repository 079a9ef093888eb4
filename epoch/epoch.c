/*
 * Epochs: the per-thread retire queues, the reclaimer that runs them, and
 * tp_epoch_retire / tp_epoch_barrier (on liburcu's memb flavour). The rest
 * of the layer: epoch_state.c (shared state, init, configuration, stats),
 * epoch_read.c (read side, thread registration), epoch_grace.c (grace
 * periods, stall watchdog), epoch_check.c, epoch_fork.c.
 *
 * Algorithm. Read sections are liburcu's (detail/epoch_inline.h: inline in
 * programs that opt in, else behind the calls tp_epoch_enter/leave here). Each thread
 * that retires owns a queue: a singly linked chain of segments with one
 * producer (the thread) and one consumer at a time (the reclaimer, or the
 * thread itself past the cap, serialized by the queue's consumer lock).
 * A retire writes an entry and publishes it with a release store of the
 * queue's tail. A reclaim cycle snapshots every tail (acquire), waits for one
 * grace period (urcu_memb_synchronize_rcu), then runs the callbacks of the
 * entries below the snapshots and publishes the new heads.
 *
 * Why it is correct. An entry below a snapshot was published before the
 * snapshot, hence retired before the grace period began; liburcu guarantees
 * that every read section that began before the grace period has ended when
 * synchronize returns, so no reader can still hold what the entry frees.
 * The producer never touches a segment before its current one, and the
 * consumer frees a segment only after reading an entry published in the
 * next one, so no segment is freed while the producer can write it.
 *
 * Waking the reclaimer without a fence on the retire path (asymmetric
 * Dekker): the reclaimer sets `sleeping`, then issues
 * membarrier(PRIVATE_EXPEDITED) — a full barrier on every CPU running one of
 * our threads — then re-checks every queue before it sleeps. A retire
 * publishes its tail, then (compiler barrier only) reads `sleeping`. After
 * the membarrier, either the reclaimer sees the new tail or the retiring
 * thread sees `sleeping` and wakes it. Without membarrier the retire
 * publishes its tail with a locked exchange, which on x86-64 is also the
 * full fence between that store and the read of `sleeping`.
 *
 * Locks, in the order they nest (fork_internal.h ranks): gp_lock (10)
 * around every liburcu synchronize; consume_lock (12) while callbacks run
 * (one consumer at a time, across all queues); then, from callbacks, pool
 * locks (30); registry_lock and state_lock (50): the thread list, the queue
 * list, liburcu register/unregister, the reclaimer's conditions. Neither of
 * the last two is held across a grace period or a callback. Callbacks never
 * wait: synchronize and barrier return -EDEADLK in one (they would take
 * gp_lock under consume_lock, or wait for the reclaimer running them), and a
 * retire in one is accepted past the cap instead of waiting.
 *
 * The cap is checked against pending_bytes, to which each thread adds its
 * retires in batches of up to REPORT_BYTES, and a retire that crosses it is
 * accepted once its thread has waited for a grace period: with T retiring
 * threads, retired-but-not-freed bytes stay within the cap plus
 * T x (REPORT_BYTES + one retire).
 *
 * ThreadSanitizer cannot see liburcu's ordering; see epoch.h and
 * tp__epoch_read_unlock_tsan for the annotations that stand in for it.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <linux/membarrier.h>
#include <unistd.h>
#include "epoch/epoch_state_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- queues --------------------------------------------------------------- */

/* Queues and segments come from two block caches of core
 * (core/blocks_internal.h), not malloc and not a pool (epoch sits below the
 * pool layer): threads that come and go (each queue is freed by the
 * reclaimer after its thread exits) reuse each other's blocks. A segment is
 * two pages (SEG_CAP entries fill it); a queue takes one page.
 *
 * Segments the reclaimer frees are held (up to SEG_HOLD, 32 MiB) while
 * retires flow, and trimmed to SEG_KEEP when the reclaimer goes to sleep
 * (nothing pending for LINGER_INTERVALS intervals: 4 ms by default) or a
 * barrier's inline cycle drains every queue, so a burst leaves at most
 * SEG_KEEP segments mapped once retires stop (and what a steady trickle
 * does not use goes after SEG_DECAY_MS: below). Unmapping each one past
 * SEG_KEEP at once, as this did, made a retiring thread whose backlog
 * outgrew 32 segments map nearly every segment fresh (BM_retire: ~3 mmap +
 * munmap pairs and 6 page faults per 1000 retires, each munmap a TLB
 * shootdown of the retiring CPU); so did trimming whenever a cycle found
 * the queues empty (the retiring thread refills them a few microseconds
 * later). */
#define SEG_KEEP 32
#define SEG_HOLD 4096
/* And every SEG_DECAY_MS of cycles the reclaimer unmaps the segments that
 * stayed free the whole time (tp__blocks_decay): a trickle of retires
 * that keeps it from ever sleeping does not pin a past burst's segments
 * (up to 32 MiB) for good. */
#define SEG_DECAY_MS 1000
_Static_assert(sizeof(struct tp__epoch_seg) <= 8192, "a segment fits its block");
_Static_assert(sizeof(struct tp__epoch_queue) <= 4096, "a queue fits its block");
static tp__blocks queue_blocks = TP__BLOCKS_INIT(4096, 8, 8);
static tp__blocks seg_blocks = TP__BLOCKS_INIT(8192, SEG_KEEP, SEG_HOLD);

size_t tp__epoch_trim(void) { return tp__blocks_trim(&seg_blocks); }

static struct tp__epoch_seg *seg_new(void) {
  struct tp__epoch_seg *s = tp__blocks_get(&seg_blocks);
  if (s) s->next = NULL;
  return s;
}

static struct tp__epoch_queue *queue_new(void) {
  struct tp__epoch_queue *q = tp__blocks_get(&queue_blocks);
  struct tp__epoch_seg *s = seg_new();
  if (!q || !s) {
    tp__blocks_put(&queue_blocks, q); /* a NULL block is a no-op */
    tp__blocks_put(&seg_blocks, s);
    return NULL;
  }
  memset(q, 0, sizeof *q);
  q->ptail = q->chead = s;
  pthread_mutex_lock(&tp__epoch_registry_lock);
  q->next = tp__epoch_queues;
  tp__epoch_queues = q;
  pthread_mutex_unlock(&tp__epoch_registry_lock);
  return q;
}

/* Runs the callbacks of entries [head, upto). Caller holds consume_lock. */
static void queue_consume(struct tp__epoch_queue *q, uint64_t upto) {
  uint64_t h = q->head;
  int64_t bytes = 0;
  bool was = tp__epoch_self.in_callback;
  tp__epoch_self.in_callback = true;
  while (h < upto) {
    if (q->cidx == SEG_CAP) {
      /* acquire: pairs with the producer's release store of next. */
      struct tp__epoch_seg *next = __atomic_load_n(&q->chead->next, __ATOMIC_ACQUIRE);
      tp__blocks_put(&seg_blocks, q->chead);
      q->chead = next;
      q->cidx = 0;
    }
    struct tp__epoch_entry e = q->chead->e[q->cidx++];
    e.fn(e.obj, e.arg);
    bytes += (int64_t)e.bytes;
    h++;
  }
  tp__epoch_self.in_callback = was;
  /* release: stats readers and barrier waiters see the progress. */
  __atomic_store_n(&q->head, h, __ATOMIC_RELEASE);
  __atomic_fetch_sub(&tp__epoch_pending_bytes, bytes, __ATOMIC_RELAXED);
}

/* Counts a finished queue's totals as dead (caller holds registry_lock, so
 * stats count it once); the memory is freed by queue_free, outside it.
 * The published tail, never the owner's tail_local: retire advances
 * tail_local before it publishes tail, so after a fork between the two the
 * child's orphaned queue has tail_local one ahead of what was published
 * (and consumed); counting it would leave pending at 1 forever. */
static void queue_retire_counts(struct tp__epoch_queue *q) {
  __atomic_fetch_add(&tp__epoch_dead_retired, __atomic_load_n(&q->tail, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
  __atomic_fetch_add(&tp__epoch_dead_freed, __atomic_load_n(&q->head, __ATOMIC_RELAXED),
                    __ATOMIC_RELAXED);
}

/* Not under registry_lock: nothing needs it, and the unmaps are syscalls. */
static void queue_free(struct tp__epoch_queue *q) {
  tp__blocks_put(&seg_blocks, q->chead);
  tp__blocks_put(&queue_blocks, q);
}

/* ---- the reclaimer ---------------------------------------------------------- */

/* Entries waiting for a callback, over every queue; an exited thread's
 * empty queue counts as one (it still has to be freed). The reclaimer only
 * compares the count with 0 and BACKLOG_NOW, so the walk stops there. */
static uint64_t pending_entries(void) {
  uint64_t n = 0;
  pthread_mutex_lock(&tp__epoch_registry_lock);
  for (struct tp__epoch_queue *q = tp__epoch_queues; q && n < BACKLOG_NOW; q = q->next) {
    uint64_t t = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
    uint64_t h = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
    n += t - h;
    if (t == h && __atomic_load_n(&q->orphaned, __ATOMIC_ACQUIRE)) n++;
  }
  pthread_mutex_unlock(&tp__epoch_registry_lock);
  return n;
}

/* One cycle: snapshot every tail, wait for a grace period, consume below
 * the snapshots, free the empty queues of exited threads.
 *
 * The snapshot needs no memory of its own: each queue keeps its snapshot in
 * `snap`, and the cycle remembers the list head it saw. After the grace
 * period it walks from that head without registry_lock (callbacks take pool
 * locks, which rank below it) and reaches exactly the queues it
 * snapshotted: queue_new only pushes in front of the head, and only this
 * function unlinks (after the walk), and it runs on one thread at a time
 * (the reclaimer, or a barrier's inline cycle when no reclaimer could be
 * started: ensure_running_locked starts none while one runs), so the
 * nodes from the remembered head on and their `next` links stay as the
 * snapshot saw them. Every queue is covered, so a finished cycle has run
 * every retire published before it started (what tp_epoch_barrier counts).
 * Returns whether it left every queue empty. */
static bool reclaim_cycle(void) {
  pthread_mutex_lock(&tp__epoch_state_lock);
  tp__epoch_cycles_started++;
  pthread_mutex_unlock(&tp__epoch_state_lock);

  /* Snapshot every tail (acquire: the entries below it are visible). */
  bool work = false, drained = true;
  pthread_mutex_lock(&tp__epoch_registry_lock);
  struct tp__epoch_queue *first = tp__epoch_queues;
  for (struct tp__epoch_queue *q = first; q; q = q->next) {
    q->snap = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
    if (q->snap != __atomic_load_n(&q->head, __ATOMIC_RELAXED) ||
        __atomic_load_n(&q->orphaned, __ATOMIC_ACQUIRE))
      work = true;
  }
  pthread_mutex_unlock(&tp__epoch_registry_lock);

  if (work) {
    tp__epoch_grace_period();
    pthread_mutex_lock(&tp__epoch_consume_lock);
    for (struct tp__epoch_queue *q = first; q; q = q->next)
      if (q->head < q->snap) queue_consume(q, q->snap);
    pthread_mutex_unlock(&tp__epoch_consume_lock);
    /* Debug builds: every queue is whole after a cycle. */
    if (TP_DEBUG && tp__epoch_check_all() != 0) tp__fatal("reclaimer", NULL, "tp_epoch_check failed");
    /* Free the queues of exited threads once they are empty: unlink them
     * under the registry lock, free them after it. */
    struct tp__epoch_queue *dead = NULL;
    pthread_mutex_lock(&tp__epoch_registry_lock);
    for (struct tp__epoch_queue **pq = &tp__epoch_queues; *pq;) {
      struct tp__epoch_queue *q = *pq;
      /* head atomically: a thread past the cap consumes its own queue
       * (over_cap) under consume_lock, which this walk does not hold. */
      bool empty = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE) ==
                   __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
      if (empty && __atomic_load_n(&q->orphaned, __ATOMIC_ACQUIRE)) {
        *pq = q->next;
        queue_retire_counts(q);
        q->next = dead;
        dead = q;
      } else {
        drained &= empty;
        pq = &q->next;
      }
    }
    pthread_mutex_unlock(&tp__epoch_registry_lock);
    while (dead) {
      struct tp__epoch_queue *q = dead;
      dead = q->next;
      queue_free(q);
    }
  }
  pthread_mutex_lock(&tp__epoch_state_lock);
  tp__epoch_cycles_done++;
  pthread_cond_broadcast(&tp__epoch_progress_cv);
  pthread_mutex_unlock(&tp__epoch_state_lock);
  return drained;
}

/* The reclaimer between two cycles. Something pending: it runs the next
 * cycle after interval_ms at the latest (at once on a kick or a backlog).
 * Nothing pending: it lingers, awake on its timer, for LINGER_INTERVALS
 * intervals before it announces that it sleeps. A retire that finds it
 * asleep wakes it (a lock, a signal, a context switch, and a cycle for that
 * one retire); while it lingers a retire only queues, and the timer picks
 * it up. Without the linger a steady stream of retires that the reclaimer
 * keeps up with (one every few microseconds, each reclaimed before the
 * next comes) woke it for every one or two of them: under a memcached-style
 * set load on one CPU, 94 k grace periods for 154 k retires and a context
 * switch per request. */
static void *reclaimer_main(void *arg) {
  (void)arg;
  uint64_t decayed_ms = tp__now_ms_coarse();
  for (;;) {
    pthread_mutex_lock(&tp__epoch_state_lock);
    unsigned idle = 0;   /* intervals in a row with nothing pending */
    bool waited = false; /* an interval has passed since the last cycle */
    while (!tp__epoch_kicked) {
      pthread_mutex_unlock(&tp__epoch_state_lock);
      uint64_t pending = pending_entries();
      pthread_mutex_lock(&tp__epoch_state_lock);
      /* A backlog runs the next cycle at once: reclamation follows the
       * retire rate, the timer only bounds the wait of a trickle. */
      if (tp__epoch_kicked || pending >= BACKLOG_NOW || (pending && waited)) break;
      if (pending || idle < LINGER_INTERVALS) {
        /* Something waits: come back after interval_ms at the latest (an
         * entry queued during a lingering interval waited at most that
         * long when the interval ends, so it runs then). */
        if (!pending) idle++;
        struct timespec ts = tp__deadline_ms(tp__epoch_cfg_interval_ms);
        if (pthread_cond_timedwait(&tp__epoch_reclaim_cv, &tp__epoch_state_lock, &ts) == ETIMEDOUT)
          waited = true;
        continue;
      }
      /* Nothing pending: announce sleep, fence every CPU, look again. */
      atomic_store_explicit(&tp__epoch_sleeping, 1, memory_order_seq_cst);
      pthread_mutex_unlock(&tp__epoch_state_lock);
      tp__blocks_trim(&seg_blocks); /* retires stopped: segments held for them go */
      if (tp__epoch_have_membarrier)
        syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
      pending = pending_entries();
      pthread_mutex_lock(&tp__epoch_state_lock);
      if (!pending && !tp__epoch_kicked) pthread_cond_wait(&tp__epoch_reclaim_cv, &tp__epoch_state_lock);
      atomic_store_explicit(&tp__epoch_sleeping, 0, memory_order_relaxed);
    }
    tp__epoch_kicked = false;
    pthread_mutex_unlock(&tp__epoch_state_lock);
    reclaim_cycle();
    uint64_t now_ms = tp__now_ms_coarse();
    if (now_ms - decayed_ms >= SEG_DECAY_MS) {
      tp__blocks_decay(&seg_blocks);
      decayed_ms = now_ms;
    }
  }
  return NULL;
}

/* Starts the background threads on first need. 0, or -EAGAIN when the
 * reclaimer thread cannot be started (or a barrier runs a cycle inline
 * because it could not). Caller holds state_lock. */
static int ensure_running_locked(void) {
  if (tp__epoch_reclaimer_running) return 0;
  if (tp__epoch_inline_cycle) return -EAGAIN;
  pthread_t reclaimer;
  if (tp__thread_create_quiet(&reclaimer, reclaimer_main, NULL) != 0) return -EAGAIN;
  pthread_detach(reclaimer);
  tp__epoch_ensure_watchdog_locked();
  __atomic_store_n(&tp__epoch_reclaimer_running, true, __ATOMIC_RELAXED);
  return 0;
}

/* Wakes the reclaimer (starting it if need be). A reclaimer that cannot
 * start is reported by retire and handled by barrier, not here. */
void tp__epoch_kick_reclaimer(void) {
  pthread_mutex_lock(&tp__epoch_state_lock);
  ensure_running_locked();
  tp__epoch_kicked = true;
  pthread_cond_signal(&tp__epoch_reclaim_cv);
  pthread_mutex_unlock(&tp__epoch_state_lock);
}

/* retire: no reclaimer runs (first retire, or first after fork): start it
 * before queuing anything, so nothing is queued that nobody would free. */
static TP_NOINLINE int start_reclaimer(void) {
  pthread_mutex_lock(&tp__epoch_state_lock);
  int rc = ensure_running_locked();
  pthread_mutex_unlock(&tp__epoch_state_lock);
  return rc;
}

/* ---- retire ------------------------------------------------------------------- */

/* Past the cap: wait for a grace period here and free our own backlog. */
static int over_cap(struct tp__epoch_queue *q) {
  if (tp__epoch_in_section_inline()) {
    __atomic_fetch_add(&tp__epoch_n_cap_failures, 1, __ATOMIC_RELAXED);
    if (TP_DEBUG)
      tp__fatal("tp_epoch_retire", NULL,
                "retire cap reached inside a read section (waiting would deadlock)");
    errno = EDEADLK;
    return -EDEADLK;
  }
  __atomic_fetch_add(&tp__epoch_n_cap_waits, 1, __ATOMIC_RELAXED);
  tp__epoch_report_bytes(q);
  tp__epoch_kick_reclaimer();
  uint64_t upto = q->tail_local;
  tp__epoch_grace_period();
  pthread_mutex_lock(&tp__epoch_consume_lock);
  if (q->head < upto) queue_consume(q, upto);
  pthread_mutex_unlock(&tp__epoch_consume_lock);
  return 0;
}

/* Appends an entry to q (room in its current segment) and publishes it,
 * then does what the count asks for: report the bytes, kick the
 * reclaimer (rarely; out of line). */
static TP_NOINLINE void retire_after(struct tp__epoch_queue *q);

TP_INLINE void retire_append(struct tp__epoch_queue *q, void *obj, size_t bytes,
                             void (*fn)(void *, void *), void *arg) {
  q->ptail->e[q->pidx++] = (struct tp__epoch_entry){obj, fn, arg, bytes};
  /* The publication point: the tail store (release: the entry is visible
   * with the tail) must precede the read of `sleeping` below (file
   * comment). With membarrier the reclaimer's membarrier orders the two, so
   * only the compiler must not swap them. Without it the store is a seq_cst
   * exchange: on x86-64 a locked instruction, which is the full fence too
   * (an exchange, not atomic_thread_fence, which gcc's TSan does not
   * support). */
  if (TP_LIKELY(tp__epoch_have_membarrier)) {
    __atomic_store_n(&q->tail, ++q->tail_local, __ATOMIC_RELEASE);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
  } else {
    __atomic_exchange_n(&q->tail, ++q->tail_local, __ATOMIC_SEQ_CST);
  }
  q->unreported += bytes;
  if (TP_UNLIKELY(q->unreported >= REPORT_BYTES ||
                  atomic_load_explicit(&tp__epoch_sleeping, memory_order_relaxed) ||
                  ++q->since_kick >= KICK_ENTRIES))
    retire_after(q);
}

static TP_NOINLINE void retire_after(struct tp__epoch_queue *q) {
  if (q->unreported >= REPORT_BYTES) tp__epoch_report_bytes(q);
  /* since_kick was not counted when a report or `sleeping` cut the test
   * short: one retire more or less between kicks. */
  if (atomic_load_explicit(&tp__epoch_sleeping, memory_order_relaxed) ||
      q->since_kick >= KICK_ENTRIES) {
    q->since_kick = 0;
    tp__epoch_kick_reclaimer();
  }
}

/* Everything but the common case: no queue yet, no reclaimer yet, the cap
 * reached, or the current segment full; or fn NULL. nowait: internal
 * retires (the sweeper's slabs, tp__epoch_retire_nowait) never wait at the
 * cap. */
static TP_NOINLINE int retire_slow(void *obj, size_t bytes, void (*fn)(void *, void *),
                                   void *arg, bool nowait) {
  if (TP_UNLIKELY(!fn)) {
    errno = EINVAL;
    return -EINVAL;
  }
  struct tp__epoch_queue *q = tp__epoch_self.q;
  if (TP_UNLIKELY(!q)) {
    tp__epoch_list_self();
    if (!(q = queue_new())) {
      errno = ENOMEM;
      return -ENOMEM;
    }
    tp__epoch_self.q = q;
  }
  /* No reclaimer, and none can be started (thread limit, memory): refuse
   * rather than queue what nobody would ever free. */
  if (TP_UNLIKELY(!__atomic_load_n(&tp__epoch_reclaimer_running, __ATOMIC_RELAXED)) &&
      start_reclaimer() != 0) {
    errno = EAGAIN;
    return -EAGAIN;
  }
  /* The cap: one shared relaxed load, written rarely. A callback never
   * waits (it runs under consume_lock, often on the reclaimer itself, which
   * is what the wait would wait for): its retires are accepted past the cap,
   * as the sweeper's are. */
  if (TP_UNLIKELY((int64_t)(q->unreported + bytes) +
                      __atomic_load_n(&tp__epoch_pending_bytes, __ATOMIC_RELAXED) >
                  (int64_t)__atomic_load_n(&tp__epoch_cfg_cap, __ATOMIC_RELAXED)) &&
      !nowait && !tp__epoch_self.in_callback) {
    int rc = over_cap(q);
    if (rc) return rc;
  }
  if (TP_UNLIKELY(q->pidx == SEG_CAP)) {
    struct tp__epoch_seg *s = seg_new();
    if (!s) {
      errno = ENOMEM;
      return -ENOMEM;
    }
    /* release: the consumer that follows the link sees an initialized seg. */
    __atomic_store_n(&q->ptail->next, s, __ATOMIC_RELEASE);
    q->ptail = s;
    q->pidx = 0;
  }
  retire_append(q, obj, bytes, fn, arg);
  return 0;
}

/* The common case inline in each entry point, and a leaf: what can call
 * out (a new queue or segment, the cap, a report, a kick) is in
 * retire_slow and retire_after, so the fast path saves no registers. */
TP_INLINE int retire(void *obj, size_t bytes, void (*fn)(void *, void *), void *arg,
                     bool nowait) {
  struct tp__epoch_queue *q = tp__epoch_self.q;
  if (TP_UNLIKELY(!fn || !q || !__atomic_load_n(&tp__epoch_reclaimer_running, __ATOMIC_RELAXED) ||
                  (int64_t)(q->unreported + bytes) +
                          __atomic_load_n(&tp__epoch_pending_bytes, __ATOMIC_RELAXED) >
                      (int64_t)__atomic_load_n(&tp__epoch_cfg_cap, __ATOMIC_RELAXED) ||
                  q->pidx == SEG_CAP))
    return retire_slow(obj, bytes, fn, arg, nowait);
  retire_append(q, obj, bytes, fn, arg);
  return 0;
}

int tp_epoch_retire_sized(void *obj, size_t bytes, void (*fn)(void *, void *), void *arg) {
  /* Counted sizes stay far from int64 overflow in the cap arithmetic (the
   * library's own sizes, slabs and the plain form, are far below it). */
  if (TP_UNLIKELY(bytes > MAX_BYTES)) bytes = MAX_BYTES;
  return retire(obj, bytes, fn, arg, false);
}

int tp_epoch_retire(void *obj, void (*fn)(void *, void *), void *arg) {
  return retire(obj, NOMINAL_BYTES, fn, arg, false);
}

int tp_epoch_barrier(void) {
  tp__epoch_init();
  int rc = tp__epoch_refuse_wait();
  if (rc) return rc;
  if (tp__epoch_self.q) tp__epoch_report_bytes(tp__epoch_self.q);
  pthread_mutex_lock(&tp__epoch_registry_lock);
  bool any_queue = tp__epoch_queues != NULL;
  pthread_mutex_unlock(&tp__epoch_registry_lock);
  pthread_mutex_lock(&tp__epoch_state_lock);
  if (!tp__epoch_reclaimer_running && !any_queue) {
    pthread_mutex_unlock(&tp__epoch_state_lock);
    return 0; /* nothing was ever retired */
  }
  if (ensure_running_locked() != 0) {
    /* No reclaimer thread (it cannot start: thread limit, memory, or a
     * forked child that may not start threads): run a cycle here, one at a
     * time, with no thread started meanwhile. The queued retires were
     * issued before the call, so one cycle runs them all. */
    if (tp__epoch_inline_cycle) {
      pthread_mutex_unlock(&tp__epoch_state_lock);
      tp__blocking_enter();
      pthread_mutex_lock(&tp__epoch_state_lock);
      while (tp__epoch_inline_cycle) pthread_cond_wait(&tp__epoch_progress_cv, &tp__epoch_state_lock);
      pthread_mutex_unlock(&tp__epoch_state_lock);
      tp__blocking_leave();
      pthread_mutex_lock(&tp__epoch_state_lock);
    }
    if (!tp__epoch_reclaimer_running) {
      tp__epoch_inline_cycle = true;
      pthread_mutex_unlock(&tp__epoch_state_lock);
      /* No reclaimer goes to sleep to trim the held segments: a cycle
       * that drains everything does. */
      if (reclaim_cycle()) tp__blocks_trim(&seg_blocks);
      pthread_mutex_lock(&tp__epoch_state_lock);
      tp__epoch_inline_cycle = false;
      pthread_cond_broadcast(&tp__epoch_progress_cv);
      pthread_mutex_unlock(&tp__epoch_state_lock);
      return 0;
    }
  }
  /* A cycle that starts after this point snapshots every retire issued
   * before the call; wait for one to finish. */
  uint64_t target = tp__epoch_cycles_started + 1;
  tp__epoch_kicked = true;
  pthread_cond_signal(&tp__epoch_reclaim_cv);
  if (tp__epoch_cycles_done < target) {
    /* A blocking section for the collector, outside state_lock (the hooks
     * take heap locks, which rank below it). */
    pthread_mutex_unlock(&tp__epoch_state_lock);
    tp__blocking_enter();
    pthread_mutex_lock(&tp__epoch_state_lock);
    tp__lo_wait(TP__LO_WAIT_GRACE_PERIOD, &tp__epoch_state_lock, tp_epoch_in_section());
    while (tp__epoch_cycles_done < target) pthread_cond_wait(&tp__epoch_progress_cv, &tp__epoch_state_lock);
    pthread_mutex_unlock(&tp__epoch_state_lock);
    tp__blocking_leave();
    return 0;
  }
  pthread_mutex_unlock(&tp__epoch_state_lock);
  return 0;
}

int tp__epoch_retire_nowait(void *obj, size_t bytes, void (*fn)(void *, void *), void *arg) {
  return retire(obj, bytes, fn, arg, true);
}
