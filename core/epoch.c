/*
 * Epochs: thread registration, per-thread retire queues, the reclaimer and
 * the stall watchdog, on liburcu's memb flavour.
 *
 * Algorithm. Read sections are liburcu's (inline in epoch.h). Each thread
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
#include <tidepool/epoch.h>
#include <tidepool/pool.h>
#include <urcu/list.h>
#include <urcu/urcu-memb.h>

#include "core/blocking_internal.h"
#include "core/debug_internal.h"
#include "core/fork_internal.h"
#include "core/os_internal.h"
#include "pool/pool_internal.h"

#include <errno.h>
#include <link.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

#define SEG_CAP 254
#define REPORT_BYTES (64 * 1024)
#define KICK_ENTRIES 1024
#define BACKLOG_NOW 256
#define DEFAULT_CAP ((size_t)64 << 20)
#define NOMINAL_BYTES 64
#define MAX_BYTES ((size_t)1 << 48) /* one retire counts at most this */

struct entry {
  void *obj;
  void (*fn)(void *, void *);
  void *arg;
  size_t bytes;
};

struct seg {
  struct seg *next; /* written once by the producer (release) */
  struct entry e[SEG_CAP];
};

struct queue {
  /* Producer side: the owning thread only. */
  struct seg *ptail;
  uint32_t pidx;
  uint32_t since_kick;
  uint64_t tail_local;
  size_t unreported; /* bytes not yet added to pending_bytes */
  /* Shared. */
  uint64_t tail __attribute__((aligned(TP_CACHELINE))); /* published entries */
  int orphaned;                                          /* owner exited */
  /* Consumer side (consume_lock). */
  struct seg *chead __attribute__((aligned(TP_CACHELINE)));
  uint32_t cidx;
  uint64_t head; /* consumed entries (release store, read by stats) */
  uint64_t snap; /* tail at the running cycle's snapshot (reclaim_cycle) */
  struct queue *next; /* all queues (registry_lock) */
};

/* One per thread that used epochs; lives in the thread's TLS.
 * urcu_registered: the thread's liburcu reader is known (watched for
 * stalls, cleaned up after fork); urcu_owned: tidepool made that
 * registration (rather than the application) and removes it at exit. */
struct thread_state {
  pid_t tid;
  bool listed, urcu_registered, urcu_owned, in_callback;
  struct urcu_reader *reader;
  struct queue *q;
  uint64_t reported_gp;
  struct thread_state *prev, *next; /* registry_lock */
};

static __thread struct thread_state self;

static pthread_once_t epoch_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static pthread_mutex_t gp_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t consume_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reclaim_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t progress_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t watch_cv = PTHREAD_COND_INITIALIZER;

static struct thread_state *threads; /* registry_lock */
static struct queue *queues;         /* registry_lock */
static uint64_t nthreads;

/* Reclaimer state (state_lock unless noted). */
/* The reclaimer and the watchdog run for the life of the process (they are
 * never stopped; fork's child starts its own on demand). reclaimer_running
 * is written under state_lock and read without it by retire (relaxed: a
 * retire that sees it clear takes state_lock to start the thread).
 * inline_cycle: no reclaimer thread could be started and a barrier runs a
 * cycle on its own thread; meanwhile no thread is started (one cycle runs
 * at a time: reclaim_cycle's walk relies on it). */
static bool reclaimer_running;
static bool inline_cycle;
static bool watchdog_running; /* state_lock */
static bool forked_child;     /* this process is a fork child (state_lock) */
static int sleeping;           /* atomic: read by retiring threads */
static bool kicked;
static uint64_t cycles_started, cycles_done;

/* What the watchdog watches (state_lock). grace_period writes gp_active,
 * gp_seq and gp_start_ms (holding gp_lock too; fork's child resets
 * gp_active); the watchdog sets watchdog_idle and grace_period clears it. */
static bool gp_active;
static bool watchdog_idle; /* waiting for a grace period to start */
static uint64_t gp_seq, gp_start_ms;

/* Counters (relaxed atomics). */
static int64_t pending_bytes;
static uint64_t dead_retired, dead_freed; /* from freed queues */
static uint64_t n_gp, n_cap_waits, n_cap_failures, n_stalls;

/* Configuration. env_cap: the default cap (TP_RETIRE_CAP, else 64 MiB). */
static size_t cfg_cap = DEFAULT_CAP, env_cap = DEFAULT_CAP;
static unsigned cfg_interval_ms = 1, cfg_stall_ms = 1000;
static void (*cfg_on_stall)(pid_t, uint64_t, void *);
static void *cfg_on_stall_arg;
static bool have_membarrier;

static void thread_exit(void *arg);
static void fork_prepare_gp(void);
static void fork_parent_gp(void);
static void fork_child_gp(void);
static void fork_prepare_consume(void);
static void fork_parent_consume(void);
static void fork_prepare_state(void);
static void fork_parent_state(void);
static void fork_child_state(void);

/* liburcu-memb's loaded image: [urcu_lo, urcu_hi), spanning its PT_LOAD
 * segments, where its static reader-registry head lives (reader nodes live
 * in thread-local storage, never there). Found by the shared object's name,
 * not by a symbol's address: a non-PIC executable holds copy-relocated
 * data (urcu_memb_gp) and PLT stubs in its own image. Found once at init
 * (dl_iterate_phdr takes the loader's lock: not for a fork child handler);
 * 0, 0 if not found (liburcu linked statically): fork then cleans up only
 * the readers tidepool knows. */
static uintptr_t urcu_lo, urcu_hi;

static int find_urcu_image(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  (void)arg;
  if (!info->dlpi_name || !strstr(info->dlpi_name, "liburcu-memb.so")) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD) continue;
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
    if (!urcu_lo || lo < urcu_lo) urcu_lo = lo;
    if (hi > urcu_hi) urcu_hi = hi;
  }
  return 1;
}

static void epoch_init(void) {
  pthread_key_create(&exit_key, thread_exit);
  dl_iterate_phdr(find_urcu_image, NULL);
  /* The timed waits (reclaimer timer, watchdog) run on CLOCK_MONOTONIC. */
  tp__cond_init_monotonic(&reclaim_cv);
  tp__cond_init_monotonic(&watch_cv);
  const char *env = getenv("TP_RETIRE_CAP");
  if (env && *env) {
    char *end;
    unsigned long long v = strtoull(env, &end, 0);
    if (*end == 'k' || *end == 'K') v <<= 10;
    else if (*end == 'm' || *end == 'M') v <<= 20;
    else if (*end == 'g' || *end == 'G') v <<= 30;
    if (v) env_cap = (size_t)v;
  }
  __atomic_store_n(&cfg_cap, env_cap, __ATOMIC_RELAXED);
  have_membarrier = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  tp__fork_register(TP__FORK_RANK_EPOCH_GP, fork_prepare_gp, fork_parent_gp, fork_child_gp);
  tp__fork_register(TP__FORK_RANK_EPOCH_CONSUME, fork_prepare_consume, fork_parent_consume,
                    fork_parent_consume);
  tp__fork_register(TP__FORK_RANK_EPOCH_STATE, fork_prepare_state, fork_parent_state,
                    fork_child_state);
}

static inline void init(void) { pthread_once(&epoch_once, epoch_init); }

const char *tp_epoch_mode(void) {
  return urcu_memb_has_sys_membarrier ? "membarrier" : "mb";
}

int tp_epoch_configure(const tp_epoch_config *cfg) {
  /* retire's cap test is int64 arithmetic: a larger cap would read as
   * negative there and make every retire wait for a grace period. */
  if (cfg && cfg->retire_cap > (size_t)INT64_MAX) {
    errno = EINVAL;
    return -EINVAL;
  }
  init();
  tp_epoch_config d = {0};
  if (!cfg) cfg = &d;
  pthread_mutex_lock(&state_lock);
  __atomic_store_n(&cfg_cap, cfg->retire_cap ? cfg->retire_cap : env_cap, __ATOMIC_RELAXED);
  cfg_interval_ms = cfg->interval_ms ? cfg->interval_ms : 1;
  cfg_stall_ms = cfg->stall_ms ? cfg->stall_ms : 1000;
  cfg_on_stall = cfg->on_stall;
  cfg_on_stall_arg = cfg->on_stall_arg;
  /* A watching watchdog recomputes its deadline with the new stall_ms. */
  pthread_cond_signal(&watch_cv);
  pthread_mutex_unlock(&state_lock);
  return 0;
}

/* ---- registration --------------------------------------------------------- */

static void list_self(void) {
  if (self.listed) return;
  init();
  self.tid = (pid_t)syscall(SYS_gettid);
  pthread_setspecific(exit_key, &self); /* runs thread_exit at exit */
  pthread_mutex_lock(&registry_lock);
  self.prev = NULL;
  self.next = threads;
  if (threads) threads->prev = &self;
  threads = &self;
  nthreads++;
  pthread_mutex_unlock(&registry_lock);
  self.listed = true;
}

/* Mixing with liburcu (docs/epoch.md): one liburcu registration per
 * thread, owned by whoever made it. A thread the application registered
 * first is adopted (watched, never unregistered by tidepool); a thread
 * whose tidepool registration the application removed
 * (urcu_memb_unregister_thread) is registered again here, on its next
 * enter. The test is liburcu's own flag, not ours: ours may be stale. */
int tp_epoch_register_thread(void) {
  list_self();
  if (!self.urcu_registered || !URCU_TLS(urcu_memb_reader).registered) {
    pthread_mutex_lock(&registry_lock);
    if (!URCU_TLS(urcu_memb_reader).registered) {
      urcu_memb_register_thread();
      self.urcu_owned = true;
    }
    self.reader = &URCU_TLS(urcu_memb_reader);
    self.urcu_registered = true;
    pthread_mutex_unlock(&registry_lock);
  }
  return 0;
}

void tp__epoch_register_slow(void) { tp_epoch_register_thread(); }

/* TSan builds (epoch.h): a leave releases, the end of a grace period
 * acquires `tsan_sync`, so TSan sees that what a reader did inside a
 * section happens before what runs after the grace period (callbacks, and
 * through the pool's own annotations, the next owner of the memory). The
 * application may be built with TSan when the library is not, so the
 * runtime's entry points are weak references, not TP_TSAN_*: set whenever
 * a TSan runtime is linked (always in a TSan build of the library). */
extern void __tsan_acquire(void *addr) __attribute__((weak));
extern void __tsan_release(void *addr) __attribute__((weak));
extern void __tsan_mutex_pre_lock(void *addr, unsigned flags) __attribute__((weak));
extern void __tsan_mutex_post_lock(void *addr, unsigned flags, int recursion)
    __attribute__((weak));
#define tsan_acquire(p) (__tsan_acquire ? __tsan_acquire(p) : (void)0)
#define tsan_release(p) (__tsan_release ? __tsan_release(p) : (void)0)
static char tsan_sync;

void tp__epoch_read_lock_tsan(void) { urcu_memb_read_lock(); }

/* Also the way out of the sections of an exiting thread (thread_exit). */
void tp__epoch_read_unlock_tsan(void) {
  tsan_release(&tsan_sync);
  urcu_memb_read_unlock();
}

void tp__epoch_unbalanced_leave(void) {
  if (TP_DEBUG) tp__fatal("tp_epoch_leave", NULL, "leave without a matching enter");
}

static void kick_reclaimer(void);
static void ensure_watchdog_locked(void);

/* Adds a queue's unreported bytes to the process-wide pending count. */
static void report_bytes(struct queue *q) {
  if (q->unreported) {
    __atomic_fetch_add(&pending_bytes, (int64_t)q->unreported, __ATOMIC_RELAXED);
    q->unreported = 0;
  }
}

/* Takes thread t off the registry; whatever its queue still holds is the
 * reclaimer's to run and free. Caller holds registry_lock. */
static void unlist_locked(struct thread_state *t) {
  if (t->prev) t->prev->next = t->next; else threads = t->next;
  if (t->next) t->next->prev = t->prev;
  nthreads--;
  if (t->q) {
    report_bytes(t->q);
    /* release: the reclaimer that sees orphaned sees the final tail. */
    __atomic_store_n(&t->q->orphaned, 1, __ATOMIC_RELEASE);
  }
}

static void thread_exit(void *arg) {
  struct thread_state *t = arg;
  /* Ours to remove: tidepool made the registration and it is still there
   * (the application may have removed it itself: removing it twice trips
   * liburcu's assertion). One the application made is the application's. */
  bool ours = t->urcu_owned && URCU_TLS(urcu_memb_reader).registered;
  if (ours) {
    /* Leave any open section so no grace period waits for a dead thread. */
    while (tp_epoch_in_section()) tp__epoch_read_unlock_tsan();
  }
  pthread_mutex_lock(&registry_lock);
  if (ours) urcu_memb_unregister_thread();
  t->urcu_registered = t->urcu_owned = false;
  unlist_locked(t);
  pthread_mutex_unlock(&registry_lock);
  bool had_queue = t->q != NULL;
  t->q = NULL;
  t->listed = false;
  if (had_queue) kick_reclaimer();
}

/* ---- grace periods -------------------------------------------------------- */

/* A grace period waits for other threads' read sections (and for gp_lock,
 * held by another grace period): a blocking section for the collector
 * (core/blocking_internal.h), so an attached thread waiting here never
 * holds up a collection that a reader it waits for is parked in. */
static void grace_period(void) {
  tp__blocking_enter();
  pthread_mutex_lock(&gp_lock);
  pthread_mutex_lock(&state_lock);
  /* The watchdog watches every grace period, the first included (not only
   * those after the first retire). Except in a TSan build's forked child:
   * TSan cannot start threads there (a grace period must still work; the
   * watchdog then starts with the reclaimer, as a retire would need). */
  if (!(TP_TSAN && forked_child)) ensure_watchdog_locked();
  gp_active = true;
  gp_seq++;
  gp_start_ms = tp__now_ms_coarse();
  /* Only an idle watchdog needs waking; a watching one wakes on its own
   * timer (no wake-up per grace period: there may be thousands a second). */
  if (watchdog_idle) {
    watchdog_idle = false;
    pthread_cond_signal(&watch_cv);
  }
  pthread_mutex_unlock(&state_lock);
  tp__lo_wait(TP__LO_WAIT_GRACE_PERIOD, NULL);
  urcu_memb_synchronize_rcu();
  tsan_acquire(&tsan_sync);
  pthread_mutex_lock(&state_lock);
  gp_active = false;
  pthread_mutex_unlock(&state_lock);
  __atomic_fetch_add(&n_gp, 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&gp_lock);
  tp__blocking_leave();
}

/* synchronize and barrier would wait for themselves inside a section, and
 * in a callback: there consume_lock (12) is held, so taking gp_lock (10)
 * would invert the lock order, and the caller may be the reclaimer. */
static int refuse_wait(void) {
  if (tp_epoch_in_section() || self.in_callback) {
    errno = EDEADLK;
    return -EDEADLK;
  }
  return 0;
}

int tp_epoch_synchronize(void) {
  init();
  int rc = refuse_wait();
  if (rc) return rc;
  grace_period();
  return 0;
}

/* ---- queues --------------------------------------------------------------- */

/* Queues and segments come from two internal pools (queue_pool, seg_pool),
 * not malloc: threads that come and go (each queue is freed by the
 * reclaimer after its thread exits) leave no fragmentation behind, and the
 * sweeper returns what stays unused.
 *
 * The first queue_new creates them, so a process that never retires maps
 * neither. Each is published with a CAS from NULL (a racing creator
 * destroys its own copy); a creation that fails leaves it NULL, queue_new
 * fails with ENOMEM, and the next queue_new tries again (once memory is
 * back, retires work again: a pthread_once here would keep failing for the
 * life of the process). Every other use is of a queue, hence after a
 * successful queue_new: the CAS (acquire/release) orders the creation
 * before the creating thread links its queue under registry_lock, and the
 * lock before any other thread finds it. */
static tp_pool *queue_pool, *seg_pool; /* __atomic: set once by a CAS */

/* relaxed: a queue (or a segment of one) is only used after the queue_new
 * that saw both pools set (acquire), in this thread or, through
 * registry_lock, in the one that found the queue. */
static inline tp_pool *qpool(void) { return __atomic_load_n(&queue_pool, __ATOMIC_RELAXED); }
static inline tp_pool *spool(void) { return __atomic_load_n(&seg_pool, __ATOMIC_RELAXED); }

/* *slot, created on first need; NULL (errno ENOMEM) when it cannot be. */
static tp_pool *internal_pool(tp_pool **slot, const tp_pool_config *cfg, size_t align,
                              size_t cache_bytes) {
  tp_pool *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
  if (TP_LIKELY(p != NULL)) return p;
  if (!(p = tp__pool_create(cfg, align, cache_bytes))) return NULL;
  tp_pool *expect = NULL;
  if (__atomic_compare_exchange_n(slot, &expect, p, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    return p;
  tp_pool_destroy(p); /* another thread's copy won */
  return expect;
}

static bool pools_init(void) {
  tp_pool_config qc = {.name = "epoch-queues", .obj_size = sizeof(struct queue),
                       .align = TP_CACHELINE};
  tp_pool_config sc = {.name = "epoch-segments", .obj_size = sizeof(struct seg)};
  /* Small CPU caches: a queue is taken once per thread. */
  return internal_pool(&queue_pool, &qc, TP_CACHELINE, 4 * sizeof(struct queue)) &&
         internal_pool(&seg_pool, &sc, 16, 4 * sizeof(struct seg));
}

static struct seg *seg_new(void) {
  struct seg *s = tp_pool_get(spool());
  if (s) s->next = NULL;
  return s;
}

static struct queue *queue_new(void) {
  if (!pools_init()) return NULL;
  struct queue *q = tp_pool_get(qpool());
  struct seg *s = seg_new();
  if (!q || !s) {
    tp_pool_put(qpool(), q); /* a NULL object is a no-op */
    tp_pool_put(spool(), s);
    return NULL;
  }
  memset(q, 0, sizeof *q);
  q->ptail = q->chead = s;
  pthread_mutex_lock(&registry_lock);
  q->next = queues;
  queues = q;
  pthread_mutex_unlock(&registry_lock);
  return q;
}

/* Runs the callbacks of entries [head, upto). Caller holds consume_lock. */
static void queue_consume(struct queue *q, uint64_t upto) {
  uint64_t h = q->head;
  int64_t bytes = 0;
  bool was = self.in_callback;
  self.in_callback = true;
  while (h < upto) {
    if (q->cidx == SEG_CAP) {
      /* acquire: pairs with the producer's release store of next. */
      struct seg *next = __atomic_load_n(&q->chead->next, __ATOMIC_ACQUIRE);
      tp_pool_put(spool(), q->chead);
      q->chead = next;
      q->cidx = 0;
    }
    struct entry e = q->chead->e[q->cidx++];
    e.fn(e.obj, e.arg);
    bytes += (int64_t)e.bytes;
    h++;
  }
  self.in_callback = was;
  /* release: stats readers and barrier waiters see the progress. */
  __atomic_store_n(&q->head, h, __ATOMIC_RELEASE);
  __atomic_fetch_sub(&pending_bytes, bytes, __ATOMIC_RELAXED);
}

/* Counts a finished queue's totals as dead (caller holds registry_lock, so
 * stats count it once); the memory is freed by queue_free, outside it.
 * The published tail, never the owner's tail_local: retire advances
 * tail_local before it publishes tail, so after a fork between the two the
 * child's orphaned queue has tail_local one ahead of what was published
 * (and consumed); counting it would leave pending at 1 forever. */
static void queue_retire_counts(struct queue *q) {
  __atomic_fetch_add(&dead_retired, __atomic_load_n(&q->tail, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
  __atomic_fetch_add(&dead_freed, q->head, __ATOMIC_RELAXED);
}

/* Not under registry_lock (50): pool puts take pool locks (30). */
static void queue_free(struct queue *q) {
  tp_pool_put(spool(), q->chead);
  tp_pool_put(qpool(), q);
}

/* ---- the reclaimer ---------------------------------------------------------- */

/* Entries waiting for a callback, over every queue; an exited thread's
 * empty queue counts as one (it still has to be freed). The reclaimer only
 * compares the count with 0 and BACKLOG_NOW, so the walk stops there. */
static uint64_t pending_entries(void) {
  uint64_t n = 0;
  pthread_mutex_lock(&registry_lock);
  for (struct queue *q = queues; q && n < BACKLOG_NOW; q = q->next) {
    uint64_t t = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
    uint64_t h = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
    n += t - h;
    if (t == h && __atomic_load_n(&q->orphaned, __ATOMIC_ACQUIRE)) n++;
  }
  pthread_mutex_unlock(&registry_lock);
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
 * every retire published before it started (what tp_epoch_barrier counts). */
static void reclaim_cycle(void) {
  pthread_mutex_lock(&state_lock);
  cycles_started++;
  pthread_mutex_unlock(&state_lock);

  /* Snapshot every tail (acquire: the entries below it are visible). */
  bool work = false;
  pthread_mutex_lock(&registry_lock);
  struct queue *first = queues;
  for (struct queue *q = first; q; q = q->next) {
    q->snap = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
    if (q->snap != __atomic_load_n(&q->head, __ATOMIC_RELAXED) ||
        __atomic_load_n(&q->orphaned, __ATOMIC_ACQUIRE))
      work = true;
  }
  pthread_mutex_unlock(&registry_lock);

  if (work) {
    grace_period();
    pthread_mutex_lock(&consume_lock);
    for (struct queue *q = first; q; q = q->next)
      if (q->head < q->snap) queue_consume(q, q->snap);
    pthread_mutex_unlock(&consume_lock);
    /* Free the queues of exited threads once they are empty: unlink them
     * under the registry lock, free them after it. */
    struct queue *dead = NULL;
    pthread_mutex_lock(&registry_lock);
    for (struct queue **pq = &queues; *pq;) {
      struct queue *q = *pq;
      if (__atomic_load_n(&q->orphaned, __ATOMIC_ACQUIRE) &&
          q->head == __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE)) {
        *pq = q->next;
        queue_retire_counts(q);
        q->next = dead;
        dead = q;
      } else {
        pq = &q->next;
      }
    }
    pthread_mutex_unlock(&registry_lock);
    while (dead) {
      struct queue *q = dead;
      dead = q->next;
      queue_free(q);
    }
  }
  pthread_mutex_lock(&state_lock);
  cycles_done++;
  pthread_cond_broadcast(&progress_cv);
  pthread_mutex_unlock(&state_lock);
}

static void *reclaimer_main(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&state_lock);
    while (!kicked) {
      pthread_mutex_unlock(&state_lock);
      uint64_t pending = pending_entries();
      pthread_mutex_lock(&state_lock);
      /* A backlog runs the next cycle at once: reclamation follows the
       * retire rate, the timer only bounds the wait of a trickle. */
      if (kicked || pending >= BACKLOG_NOW) break;
      if (pending) {
        /* Something waits: come back after interval_ms at the latest. */
        struct timespec ts = tp__deadline_ms(cfg_interval_ms);
        if (pthread_cond_timedwait(&reclaim_cv, &state_lock, &ts) == ETIMEDOUT) break;
        continue;
      }
      /* Nothing pending: announce sleep, fence every CPU, look again. */
      __atomic_store_n(&sleeping, 1, __ATOMIC_SEQ_CST);
      pthread_mutex_unlock(&state_lock);
      if (have_membarrier)
        syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
      pending = pending_entries();
      pthread_mutex_lock(&state_lock);
      if (!pending && !kicked) pthread_cond_wait(&reclaim_cv, &state_lock);
      __atomic_store_n(&sleeping, 0, __ATOMIC_RELAXED);
    }
    kicked = false;
    pthread_mutex_unlock(&state_lock);
    reclaim_cycle();
  }
  return NULL;
}

/* Reports readers that hold up a grace period for longer than stall_ms. */
static void *watchdog_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&state_lock);
  for (;;) {
    if (!gp_active) {
      watchdog_idle = true; /* the next grace period wakes us */
      pthread_cond_wait(&watch_cv, &state_lock);
      continue;
    }
    uint64_t seq = gp_seq, start = gp_start_ms, now = tp__now_ms_coarse();
    if (now - start < cfg_stall_ms) {
      struct timespec ts = tp__deadline_ms(cfg_stall_ms - (now - start) + 1);
      pthread_cond_timedwait(&watch_cv, &state_lock, &ts);
      continue;
    }
    void (*cb)(pid_t, uint64_t, void *) = cfg_on_stall;
    void *cb_arg = cfg_on_stall_arg;
    pthread_mutex_unlock(&state_lock);
    /* A reader still in a section of the old phase entered before this grace
     * period began, at least stall_ms ago. */
    pid_t found[64];
    int nfound = 0;
    pthread_mutex_lock(&registry_lock);
    unsigned long gctr = __atomic_load_n(&urcu_memb_gp.ctr, __ATOMIC_RELAXED);
    for (struct thread_state *t = threads; t; t = t->next) {
      if (!t->urcu_registered || t->reported_gp == seq) continue;
      unsigned long c = __atomic_load_n(&t->reader->ctr, __ATOMIC_RELAXED);
      if ((c & URCU_GP_CTR_NEST_MASK) && ((c ^ gctr) & URCU_GP_CTR_PHASE)) {
        t->reported_gp = seq;
        if (nfound < 64) found[nfound++] = t->tid;
      }
    }
    pthread_mutex_unlock(&registry_lock);
    uint64_t stalled = tp__now_ms_coarse() - start;
    for (int i = 0; i < nfound; i++) {
      __atomic_fetch_add(&n_stalls, 1, __ATOMIC_RELAXED);
      if (cb) cb(found[i], stalled, cb_arg);
    }
    pthread_mutex_lock(&state_lock);
    /* Check this grace period again one stall_ms later (new readers). */
    if (gp_active && gp_seq == seq) {
      struct timespec ts = tp__deadline_ms(cfg_stall_ms);
      pthread_cond_timedwait(&watch_cv, &state_lock, &ts);
    }
  }
  return NULL;
}

/* Starts the background threads on first need. 0, or -EAGAIN when the
 * reclaimer thread cannot be started (or a barrier runs a cycle inline
 * because it could not). Caller holds state_lock. */
static int ensure_running_locked(void) {
  if (reclaimer_running) return 0;
  if (inline_cycle) return -EAGAIN;
  pthread_t reclaimer;
  if (tp__thread_create_quiet(&reclaimer, reclaimer_main, NULL) != 0) return -EAGAIN;
  pthread_detach(reclaimer);
  ensure_watchdog_locked();
  __atomic_store_n(&reclaimer_running, true, __ATOMIC_RELAXED);
  return 0;
}

/* Starts the stall watchdog on first need (the first grace period or the
 * reclaimer). Without it stalls go unreported; everything else works, and
 * the next grace period tries again. Caller holds state_lock. */
static void ensure_watchdog_locked(void) {
  if (watchdog_running) return;
  pthread_t watchdog;
  if (tp__thread_create_quiet(&watchdog, watchdog_main, NULL) != 0) return;
  pthread_detach(watchdog);
  watchdog_running = true;
}

/* Wakes the reclaimer (starting it if need be). A reclaimer that cannot
 * start is reported by retire and handled by barrier, not here. */
static void kick_reclaimer(void) {
  pthread_mutex_lock(&state_lock);
  ensure_running_locked();
  kicked = true;
  pthread_cond_signal(&reclaim_cv);
  pthread_mutex_unlock(&state_lock);
}

/* retire: no reclaimer runs (first retire, or first after fork): start it
 * before queuing anything, so nothing is queued that nobody would free. */
static TP_NOINLINE int start_reclaimer(void) {
  pthread_mutex_lock(&state_lock);
  int rc = ensure_running_locked();
  pthread_mutex_unlock(&state_lock);
  return rc;
}

/* ---- retire ------------------------------------------------------------------- */

/* Past the cap: wait for a grace period here and free our own backlog. */
static int over_cap(struct queue *q) {
  if (tp_epoch_in_section()) {
    __atomic_fetch_add(&n_cap_failures, 1, __ATOMIC_RELAXED);
    if (TP_DEBUG)
      tp__fatal("tp_epoch_retire", NULL,
                "retire cap reached inside a read section (waiting would deadlock)");
    errno = EDEADLK;
    return -EDEADLK;
  }
  __atomic_fetch_add(&n_cap_waits, 1, __ATOMIC_RELAXED);
  report_bytes(q);
  kick_reclaimer();
  uint64_t upto = q->tail_local;
  grace_period();
  pthread_mutex_lock(&consume_lock);
  if (q->head < upto) queue_consume(q, upto);
  pthread_mutex_unlock(&consume_lock);
  return 0;
}

/* nowait: internal retires (the sweeper's slabs) never wait at the cap. */
static int retire(void *obj, size_t bytes, void (*fn)(void *, void *), void *arg,
                  bool nowait) {
  if (TP_UNLIKELY(!fn)) {
    errno = EINVAL;
    return -EINVAL;
  }
  struct queue *q = self.q;
  if (TP_UNLIKELY(!q)) {
    list_self();
    if (!(q = queue_new())) {
      errno = ENOMEM;
      return -ENOMEM;
    }
    self.q = q;
  }
  /* No reclaimer, and none can be started (thread limit, memory): refuse
   * rather than queue what nobody would ever free. */
  if (TP_UNLIKELY(!__atomic_load_n(&reclaimer_running, __ATOMIC_RELAXED)) &&
      start_reclaimer() != 0) {
    errno = EAGAIN;
    return -EAGAIN;
  }
  /* The cap: one shared relaxed load, written rarely. A callback never
   * waits (it runs under consume_lock, often on the reclaimer itself, which
   * is what the wait would wait for): its retires are accepted past the cap,
   * as the sweeper's are. */
  if (TP_UNLIKELY((int64_t)(q->unreported + bytes) +
                      __atomic_load_n(&pending_bytes, __ATOMIC_RELAXED) >
                  (int64_t)__atomic_load_n(&cfg_cap, __ATOMIC_RELAXED)) &&
      !nowait && !self.in_callback) {
    int rc = over_cap(q);
    if (rc) return rc;
  }
  if (TP_UNLIKELY(q->pidx == SEG_CAP)) {
    struct seg *s = seg_new();
    if (!s) {
      errno = ENOMEM;
      return -ENOMEM;
    }
    /* release: the consumer that follows the link sees an initialized seg. */
    __atomic_store_n(&q->ptail->next, s, __ATOMIC_RELEASE);
    q->ptail = s;
    q->pidx = 0;
  }
  q->ptail->e[q->pidx++] = (struct entry){obj, fn, arg, bytes};
  /* The publication point: the tail store (release: the entry is visible
   * with the tail) must precede the read of `sleeping` below (file
   * comment). With membarrier the reclaimer's membarrier orders the two, so
   * only the compiler must not swap them. Without it the store is a seq_cst
   * exchange: on x86-64 a locked instruction, which is the full fence too
   * (an exchange, not atomic_thread_fence, which gcc's TSan does not
   * support). */
  if (TP_LIKELY(have_membarrier)) {
    __atomic_store_n(&q->tail, ++q->tail_local, __ATOMIC_RELEASE);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
  } else {
    __atomic_exchange_n(&q->tail, ++q->tail_local, __ATOMIC_SEQ_CST);
  }
  q->unreported += bytes;
  if (TP_UNLIKELY(q->unreported >= REPORT_BYTES)) report_bytes(q);
  if (TP_UNLIKELY(__atomic_load_n(&sleeping, __ATOMIC_RELAXED) ||
                  ++q->since_kick >= KICK_ENTRIES)) {
    q->since_kick = 0;
    kick_reclaimer();
  }
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
  init();
  int rc = refuse_wait();
  if (rc) return rc;
  if (self.q) report_bytes(self.q);
  pthread_mutex_lock(&registry_lock);
  bool any_queue = queues != NULL;
  pthread_mutex_unlock(&registry_lock);
  pthread_mutex_lock(&state_lock);
  if (!reclaimer_running && !any_queue) {
    pthread_mutex_unlock(&state_lock);
    return 0; /* nothing was ever retired */
  }
  if (ensure_running_locked() != 0) {
    /* No reclaimer thread (it cannot start: thread limit, memory, or a
     * forked child that may not start threads): run a cycle here, one at a
     * time, with no thread started meanwhile. The queued retires were
     * issued before the call, so one cycle runs them all. */
    if (inline_cycle) {
      pthread_mutex_unlock(&state_lock);
      tp__blocking_enter();
      pthread_mutex_lock(&state_lock);
      while (inline_cycle) pthread_cond_wait(&progress_cv, &state_lock);
      pthread_mutex_unlock(&state_lock);
      tp__blocking_leave();
      pthread_mutex_lock(&state_lock);
    }
    if (!reclaimer_running) {
      inline_cycle = true;
      pthread_mutex_unlock(&state_lock);
      reclaim_cycle();
      pthread_mutex_lock(&state_lock);
      inline_cycle = false;
      pthread_cond_broadcast(&progress_cv);
      pthread_mutex_unlock(&state_lock);
      return 0;
    }
  }
  /* A cycle that starts after this point snapshots every retire issued
   * before the call; wait for one to finish. */
  uint64_t target = cycles_started + 1;
  kicked = true;
  pthread_cond_signal(&reclaim_cv);
  if (cycles_done < target) {
    /* A blocking section for the collector, outside state_lock (the hooks
     * take heap locks, which rank below it). */
    pthread_mutex_unlock(&state_lock);
    tp__blocking_enter();
    pthread_mutex_lock(&state_lock);
    tp__lo_wait(TP__LO_WAIT_GRACE_PERIOD, &state_lock);
    while (cycles_done < target) pthread_cond_wait(&progress_cv, &state_lock);
    pthread_mutex_unlock(&state_lock);
    tp__blocking_leave();
    return 0;
  }
  pthread_mutex_unlock(&state_lock);
  return 0;
}

/* ---- pools -------------------------------------------------------------------- */

static void pool_put_cb(void *obj, void *arg) { tp_pool_put(arg, obj); }

/* No shared atomic here: the pool is only marked once, the first time it is
 * retired into (tp_pool_destroy then waits with a barrier). */
int tp_pool_retire(tp_pool *p, void *obj) {
  if (!p || !obj) {
    errno = EINVAL;
    return -EINVAL;
  }
  tp__pool_check_owner(p, obj, "tp_pool_retire");
  if (TP_UNLIKELY(!__atomic_load_n(&p->epoch_used, __ATOMIC_RELAXED)))
    __atomic_store_n(&p->epoch_used, true, __ATOMIC_RELAXED);
  return tp_epoch_retire_sized(obj, p->stride, pool_put_cb, p);
}

void tp__epoch_pool_quiesce(tp_pool *p) {
  /* Every retire of p was issued before this call (destroy runs alone), so
   * one barrier runs them all, the sweeper's slab retires included. */
  if (tp_epoch_barrier() != 0)
    tp__fatal("tp_pool_destroy", p,
              "the pool was retired into and the caller is inside a read section "
              "or a retire callback: its retires cannot be waited for here");
}

static void slab_cb(void *obj, void *arg) {
  (void)arg;
  tp__pool_slab_retired(obj);
}

void tp__epoch_retire_slab(tp_slab *s, size_t bytes) {
  /* Called by the sweeper under its pass lock: must not wait (lock order). */
  if (retire(s, bytes, slab_cb, NULL, true) != 0) {
    /* Out of memory for the queue: give the pages back now and leave the
     * address range mapped (a reader may still touch it; it reads zeros). */
    tp__os_decommit(s, bytes);
  }
}

/* ---- stats -------------------------------------------------------------------- */

int tp_epoch_read_stats(tp_epoch_stats *out) {
  if (!out) {
    errno = EINVAL;
    return -EINVAL;
  }
  init();
  memset(out, 0, sizeof *out);
  /* Under registry_lock: a queue freed meanwhile is counted once, either
   * in the list or in the dead counters (the reclaimer unlinks it and adds
   * it to them in one registry_lock section; queue_free runs later). */
  pthread_mutex_lock(&registry_lock);
  uint64_t retired = __atomic_load_n(&dead_retired, __ATOMIC_RELAXED);
  uint64_t freed = __atomic_load_n(&dead_freed, __ATOMIC_RELAXED);
  for (struct queue *q = queues; q; q = q->next) {
    retired += __atomic_load_n(&q->tail, __ATOMIC_RELAXED);
    freed += __atomic_load_n(&q->head, __ATOMIC_RELAXED);
  }
  out->readers = nthreads;
  pthread_mutex_unlock(&registry_lock);
  out->retired = retired;
  out->freed = freed;
  out->pending = retired - freed;
  int64_t pb = __atomic_load_n(&pending_bytes, __ATOMIC_RELAXED);
  out->pending_bytes = pb > 0 ? (uint64_t)pb : 0;
  out->retire_cap = __atomic_load_n(&cfg_cap, __ATOMIC_RELAXED);
  out->grace_periods = __atomic_load_n(&n_gp, __ATOMIC_RELAXED);
  out->cap_waits = __atomic_load_n(&n_cap_waits, __ATOMIC_RELAXED);
  out->cap_failures = __atomic_load_n(&n_cap_failures, __ATOMIC_RELAXED);
  out->stalls = __atomic_load_n(&n_stalls, __ATOMIC_RELAXED);
  return 0;
}

/* ---- fork ----------------------------------------------------------------------- */

/* Rank 10: no grace period may be in progress across fork (liburcu's own
 * locks would be copied held). liburcu's call_rcu threads (if the
 * application uses call_rcu) are paused as its documentation asks. */
static void fork_prepare_gp(void) {
  if (!tp_epoch_in_section()) {
    pthread_mutex_lock(&gp_lock);
  } else {
    /* fork() inside a read section: a grace period in progress may be
     * waiting for this very thread, and blocking on gp_lock would never
     * end. One that does not need us ends: wait up to stall_ms for it, then
     * stop loudly rather than hang. */
    pthread_mutex_lock(&state_lock);
    struct timespec ts = tp__deadline_ms(cfg_stall_ms);
    pthread_mutex_unlock(&state_lock);
    /* gcc 12's TSan does not intercept clocklock: without these it takes
     * the unlock after fork for one of an unlocked mutex. */
    if (__tsan_mutex_pre_lock) __tsan_mutex_pre_lock(&gp_lock, 0);
    if (pthread_mutex_clocklock(&gp_lock, CLOCK_MONOTONIC, &ts) != 0)
      tp__fatal("fork", NULL,
                "fork() inside an epoch read section while a grace period waits "
                "for this thread (leave the section before forking)");
    if (__tsan_mutex_post_lock) __tsan_mutex_post_lock(&gp_lock, 0, 0);
  }
  urcu_memb_call_rcu_before_fork();
}
static void fork_parent_gp(void) {
  urcu_memb_call_rcu_after_fork_parent();
  pthread_mutex_unlock(&gp_lock);
}
static void fork_child_gp(void) {
  urcu_memb_call_rcu_after_fork_child();
  pthread_mutex_unlock(&gp_lock);
}

/* Rank 12: no callback runs across fork. */
static void fork_prepare_consume(void) { pthread_mutex_lock(&consume_lock); }
static void fork_parent_consume(void) { pthread_mutex_unlock(&consume_lock); }

/* Rank 50: the registry and the reclaimer's state. */
static void fork_prepare_state(void) {
  pthread_mutex_lock(&registry_lock);
  pthread_mutex_lock(&state_lock);
}
static void fork_parent_state(void) {
  pthread_mutex_unlock(&state_lock);
  pthread_mutex_unlock(&registry_lock);
}
/* Fork's child: takes every liburcu reader but the calling thread's out of
 * liburcu's registry, the application's own readers (registered with
 * liburcu only) included, ending their sections. The registry is a
 * circular list whose head is static in liburcu: it is entered through a
 * reader tidepool knows, and the head is the one node inside liburcu's
 * image (readers live in thread-local storage). Returns false (nothing
 * done) if no entry or no head is found. Caller: fork_child_state, with
 * registry_lock held and no other thread alive. */
static bool scrub_urcu_registry(void) {
  struct urcu_reader *mine = &URCU_TLS(urcu_memb_reader);
  struct cds_list_head *start = mine->registered ? &mine->node : NULL;
  for (struct thread_state *t = threads; t && !start; t = t->next)
    if (t->urcu_registered && t->reader->registered) start = &t->reader->node;
  if (!start || !urcu_hi) return false;
  struct cds_list_head *head = NULL, *n = start;
  do {
    if ((uintptr_t)n >= urcu_lo && (uintptr_t)n < urcu_hi) head = n;
    n = n->next;
  } while (!head && n != start);
  if (!head) return false;
  for (n = head->next; n != head;) {
    struct cds_list_head *next = n->next;
    struct urcu_reader *r = caa_container_of(n, struct urcu_reader, node);
    if (r != mine) {
      r->ctr = 0; /* its section ends: no grace period waits for it */
      r->registered = 0;
      cds_list_del(n);
    }
    n = next;
  }
  return true;
}

static void fork_child_state(void) {
  /* Only this thread exists now. The others' liburcu reader entries would
   * make every grace period wait for threads that are gone: end their
   * sections and take them out of liburcu's registry (their TLS is still
   * mapped in the child; no liburcu lock is held, see fork_prepare_gp).
   * Readers the application registered with liburcu alone are removed too
   * (scrub_urcu_registry); failing that, the ones tidepool knows. */
  bool scrubbed = scrub_urcu_registry();
  for (struct thread_state *t = threads, *next; t; t = next) {
    next = t->next;
    if (t == &self) continue;
    if (t->urcu_registered && !scrubbed && t->reader->registered) {
      t->reader->ctr = 0;
      t->reader->registered = 0;
      cds_list_del(&t->reader->node);
    }
    t->urcu_registered = t->urcu_owned = false;
    unlist_locked(t); /* as thread_exit would have done */
  }
  if (self.listed) self.tid = (pid_t)syscall(SYS_gettid);
  __atomic_store_n(&reclaimer_running, false, __ATOMIC_RELAXED);
  inline_cycle = false;
  watchdog_running = false;
  forked_child = true;
  kicked = false;
  /* A cycle the parent's reclaimer had started never finishes here: a
   * barrier waiting for cycles_done to pass it would wait forever. */
  cycles_done = cycles_started;
  __atomic_store_n(&sleeping, 0, __ATOMIC_RELAXED);
  gp_active = false;
  tp__cond_init_monotonic(&reclaim_cv);
  pthread_cond_init(&progress_cv, NULL);
  tp__cond_init_monotonic(&watch_cv);
  pthread_mutex_unlock(&state_lock);
  pthread_mutex_unlock(&registry_lock);
}
