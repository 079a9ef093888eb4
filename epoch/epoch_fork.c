/*
 * Epochs: fork handling. The handlers hold the grace-period lock, the
 * consume lock and the registry and state locks across fork (ranks 10, 12,
 * 50), and the child's handler takes the threads that did not survive out
 * of liburcu's registry and tidepool's.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "epoch/epoch_state_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- fork ----------------------------------------------------------------------- */

/* Rank 10: no grace period may be in progress across fork (liburcu's own
 * locks would be copied held). liburcu's call_rcu threads (if the
 * application uses call_rcu) are paused as its documentation asks. */
static void fork_prepare_gp(void) {
  if (!tp__epoch_in_section_inline()) {
    pthread_mutex_lock(&tp__epoch_gp_lock);
  } else {
    /* fork() inside a read section: a grace period in progress may be
     * waiting for this very thread, and blocking on gp_lock would never
     * end. One that does not need us ends: wait up to stall_ms for it, then
     * stop loudly rather than hang. */
    pthread_mutex_lock(&tp__epoch_state_lock);
    struct timespec ts = tp__deadline_ms(tp__epoch_cfg_stall_ms);
    pthread_mutex_unlock(&tp__epoch_state_lock);
    /* gcc 12's TSan does not intercept clocklock: without these it takes
     * the unlock after fork for one of an unlocked mutex. */
    if (__tsan_mutex_pre_lock) __tsan_mutex_pre_lock(&tp__epoch_gp_lock, 0);
    if (pthread_mutex_clocklock(&tp__epoch_gp_lock, CLOCK_MONOTONIC, &ts) != 0)
      tp__fatal("fork", NULL,
                "fork() inside an epoch read section while a grace period waits "
                "for this thread (leave the section before forking)");
    if (__tsan_mutex_post_lock) __tsan_mutex_post_lock(&tp__epoch_gp_lock, 0, 0);
  }
  urcu_memb_call_rcu_before_fork();
}
static void fork_parent_gp(void) {
  urcu_memb_call_rcu_after_fork_parent();
  pthread_mutex_unlock(&tp__epoch_gp_lock);
}
static void fork_child_gp(void) {
  urcu_memb_call_rcu_after_fork_child();
  pthread_mutex_unlock(&tp__epoch_gp_lock);
}

/* Rank 12: no callback runs across fork. */
static void fork_prepare_consume(void) { pthread_mutex_lock(&tp__epoch_consume_lock); }
static void fork_parent_consume(void) { pthread_mutex_unlock(&tp__epoch_consume_lock); }

/* Rank 50: the registry and the reclaimer's state. */
static void fork_prepare_state(void) {
  pthread_mutex_lock(&tp__epoch_registry_lock);
  pthread_mutex_lock(&tp__epoch_state_lock);
}
static void fork_parent_state(void) {
  pthread_mutex_unlock(&tp__epoch_state_lock);
  pthread_mutex_unlock(&tp__epoch_registry_lock);
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
  for (struct tp__epoch_thread *t = tp__epoch_threads; t && !start; t = t->next)
    if (t->urcu_registered && t->reader->registered) start = &t->reader->node;
  if (!start || !tp__epoch_urcu_hi) return false;
  struct cds_list_head *head = NULL, *n = start;
  do {
    if ((uintptr_t)n >= tp__epoch_urcu_lo && (uintptr_t)n < tp__epoch_urcu_hi) head = n;
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
  for (struct tp__epoch_thread *t = tp__epoch_threads, *next; t; t = next) {
    next = t->next;
    if (t == &tp__epoch_self) continue;
    if (t->urcu_registered && !scrubbed && t->reader->registered) {
      t->reader->ctr = 0;
      t->reader->registered = 0;
      cds_list_del(&t->reader->node);
    }
    t->urcu_registered = t->urcu_owned = false;
    tp__epoch_unlist_locked(t); /* as thread_exit would have done */
  }
  if (tp__epoch_self.listed) tp__epoch_self.tid = (pid_t)syscall(SYS_gettid);
  __atomic_store_n(&tp__epoch_reclaimer_running, false, __ATOMIC_RELAXED);
  tp__epoch_inline_cycle = false;
  tp__epoch_watchdog_running = false;
  tp__epoch_kicked = false;
  /* A cycle the parent's reclaimer had started never finishes here: a
   * barrier waiting for cycles_done to pass it would wait forever. */
  tp__epoch_cycles_done = tp__epoch_cycles_started;
  atomic_store_explicit(&tp__epoch_sleeping, 0, memory_order_relaxed);
  tp__epoch_gp_active = false;
  tp__cond_init_monotonic(&tp__epoch_reclaim_cv);
  pthread_cond_init(&tp__epoch_progress_cv, NULL);
  tp__cond_init_monotonic(&tp__epoch_watch_cv);
  pthread_mutex_unlock(&tp__epoch_state_lock);
  pthread_mutex_unlock(&tp__epoch_registry_lock);
}

void tp__epoch_fork_register(void) {
  tp__fork_register(TP__FORK_RANK_EPOCH_GP, fork_prepare_gp, fork_parent_gp, fork_child_gp);
  tp__fork_register(TP__FORK_RANK_EPOCH_CONSUME, fork_prepare_consume, fork_parent_consume,
                    fork_parent_consume);
  tp__fork_register(TP__FORK_RANK_EPOCH_STATE, fork_prepare_state, fork_parent_state,
                    fork_child_state);
}
