/*
 * Internal to epoch/: the state the layer's files share (epoch.c: retire
 * queues and the reclaimer; epoch_read.c: read side and registration;
 * epoch_grace.c: grace periods and the watchdog; epoch_state.c: the
 * definitions, init, configuration, stats; epoch_check.c; epoch_fork.c).
 * Not for the layers above (they use epoch_internal.h). Comments in these
 * files call the state by its short name: gp_lock is tp__epoch_gp_lock.
 * The locking rules are in epoch.c's opening comment.
 */
#ifndef TIDEPOOL_EPOCH_STATE_INTERNAL_H
#define TIDEPOOL_EPOCH_STATE_INTERNAL_H

#include <tidepool/epoch.h>
#include <tidepool/detail/epoch_inline.h>
#include <urcu/list.h>
#include <urcu/urcu-memb.h>

#include "core/blocking_internal.h"
#include "core/blocks_internal.h"
#include "core/debug_internal.h"
#include "core/list_internal.h"
#include "core/fork_internal.h"
#include "core/options_internal.h"
#include "core/os_internal.h"
#include "epoch/epoch_internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define SEG_CAP 254
#define REPORT_BYTES (64 * 1024)
#define KICK_ENTRIES 1024
#define BACKLOG_NOW 256
#define LINGER_INTERVALS 4 /* the reclaimer stays awake this many empty intervals */
#define DEFAULT_CAP ((size_t)64 << 20)
#define NOMINAL_BYTES 64
#define MAX_BYTES ((size_t)1 << 48) /* one retire counts at most this */

struct tp__epoch_entry {
  void *obj;
  void (*fn)(void *, void *);
  void *arg;
  size_t bytes;
};

struct tp__epoch_seg {
  struct tp__epoch_seg *next; /* written once by the producer (release) */
  struct tp__epoch_entry e[SEG_CAP];
};

struct tp__epoch_queue {
  /* Producer side: the owning thread only. */
  struct tp__epoch_seg *ptail;
  uint32_t pidx;
  uint32_t since_kick;
  uint64_t tail_local;
  size_t unreported; /* bytes not yet added to pending_bytes */
  /* Shared. */
  uint64_t tail __attribute__((aligned(TP_CACHELINE))); /* published entries */
  int orphaned;                                          /* owner exited */
  /* Consumer side (consume_lock). */
  struct tp__epoch_seg *chead __attribute__((aligned(TP_CACHELINE)));
  uint32_t cidx;
  uint64_t head; /* consumed entries (release store, read by stats) */
  uint64_t snap; /* tail at the running cycle's snapshot (reclaim_cycle) */
  struct tp__epoch_queue *next; /* all queues (registry_lock) */
};

/* One per thread that used epochs; lives in the thread's TLS.
 * urcu_registered: the thread's liburcu reader is known (watched for
 * stalls, cleaned up after fork); urcu_owned: tidepool made that
 * registration (rather than the application) and removes it at exit. */
struct tp__epoch_thread {
  pid_t tid;
  bool listed, urcu_registered, urcu_owned, in_callback;
  struct urcu_reader *reader;
  struct tp__epoch_queue *q;
  uint64_t reported_gp;
  struct tp__epoch_thread *prev, *next; /* registry_lock */
};

extern __thread struct tp__epoch_thread tp__epoch_self;

/* Locks (ranks in core/lockorder.c) and conditions. */
extern pthread_key_t tp__epoch_exit_key;
extern pthread_mutex_t tp__epoch_gp_lock, tp__epoch_consume_lock;
extern pthread_mutex_t tp__epoch_registry_lock, tp__epoch_state_lock;
extern pthread_cond_t tp__epoch_reclaim_cv, tp__epoch_progress_cv, tp__epoch_watch_cv;

/* The registry (registry_lock). */
extern struct tp__epoch_thread *tp__epoch_threads;
extern struct tp__epoch_queue *tp__epoch_queues;
extern uint64_t tp__epoch_nthreads;

/* The reclaimer and the watchdog (state_lock unless noted; see epoch_state.c). */
extern bool tp__epoch_reclaimer_running, tp__epoch_inline_cycle, tp__epoch_watchdog_running;
extern bool tp__epoch_kicked;
extern _Atomic int tp__epoch_sleeping; /* read by retiring threads */
extern uint64_t tp__epoch_cycles_started, tp__epoch_cycles_done;
extern bool tp__epoch_gp_active, tp__epoch_watchdog_idle;
extern uint64_t tp__epoch_gp_seq, tp__epoch_gp_start_ms;

/* Counters (relaxed atomics). */
extern int64_t tp__epoch_pending_bytes;
extern uint64_t tp__epoch_dead_retired, tp__epoch_dead_freed;
extern uint64_t tp__epoch_n_gp, tp__epoch_n_cap_waits, tp__epoch_n_cap_failures, tp__epoch_n_stalls;

/* Configuration. */
extern size_t tp__epoch_cfg_cap;
extern unsigned tp__epoch_cfg_interval_ms, tp__epoch_cfg_stall_ms;
extern void (*tp__epoch_cfg_on_stall)(pid_t, uint64_t, void *);
extern void *tp__epoch_cfg_on_stall_arg;
extern bool tp__epoch_have_membarrier;

/* liburcu-memb's loaded image (epoch_state.c), for fork's child. */
extern uintptr_t tp__epoch_urcu_lo, tp__epoch_urcu_hi;

/* TSan builds: what a grace period's end acquires and a leave releases
 * (epoch_read.c). The runtime's entry points are weak references: the
 * application may be built with TSan when the library is not. */
extern char tp__epoch_tsan_sync;
extern void __tsan_acquire(void *addr) __attribute__((weak));
extern void __tsan_release(void *addr) __attribute__((weak));
extern void __tsan_mutex_pre_lock(void *addr, unsigned flags) __attribute__((weak));
extern void __tsan_mutex_post_lock(void *addr, unsigned flags, int recursion)
    __attribute__((weak));
#define tsan_acquire(p) (__tsan_acquire ? __tsan_acquire(p) : (void)0)
#define tsan_release(p) (__tsan_release ? __tsan_release(p) : (void)0)

/* epoch_state.c */
void tp__epoch_init(void); /* once per process; every entry point calls it */
/* epoch_read.c */
void tp__epoch_list_self(void);
void tp__epoch_unlist_locked(struct tp__epoch_thread *t);
void tp__epoch_thread_exit(void *arg);
/* epoch_grace.c */
void tp__epoch_grace_period(void);
int tp__epoch_refuse_wait(void);
void tp__epoch_ensure_watchdog_locked(void);
/* epoch.c */
void tp__epoch_kick_reclaimer(void);
/* epoch_check.c */
int tp__epoch_check_all(void);
/* epoch_fork.c */
void tp__epoch_fork_register(void);

/* Adds a queue's unreported bytes to the process-wide pending count. */
static inline void tp__epoch_report_bytes(struct tp__epoch_queue *q) {
  if (q->unreported) {
    __atomic_fetch_add(&tp__epoch_pending_bytes, (int64_t)q->unreported, __ATOMIC_RELAXED);
    q->unreported = 0;
  }
}

#endif /* TIDEPOOL_EPOCH_STATE_INTERNAL_H */
