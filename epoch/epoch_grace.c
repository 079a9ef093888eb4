/*
 * Epochs: grace periods and the stall watchdog. A grace period is one
 * liburcu synchronize under gp_lock, announced to the watchdog (gp_active,
 * gp_seq, gp_start_ms under state_lock); the watchdog reports readers that
 * hold one up for longer than stall_ms (tp_epoch_config.on_stall).
 */
#define _GNU_SOURCE
#include <errno.h>
#include "epoch/epoch_state_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* ---- grace periods -------------------------------------------------------- */

/* A grace period waits for other threads' read sections (and for gp_lock,
 * held by another grace period): a blocking section for the collector
 * (core/blocking_internal.h), so an attached thread waiting here never
 * holds up a collection that a reader it waits for is parked in. */
void tp__epoch_grace_period(void) {
  tp__blocking_enter();
  pthread_mutex_lock(&tp__epoch_gp_lock);
  pthread_mutex_lock(&tp__epoch_state_lock);
  /* The watchdog watches every grace period, the first included (not only
   * those after the first retire). Except in a TSan build's child of a
   * multi-threaded fork, which starts no thread (core/fork_internal.h;
   * core knows: a parent that never used epochs had no handler of ours): a
   * grace period must still work there; the watchdog then starts with the
   * reclaimer, as a retire would need. */
  if (!tp__fork_child_threadless()) tp__epoch_ensure_watchdog_locked();
  tp__epoch_gp_active = true;
  tp__epoch_gp_seq++;
  tp__epoch_gp_start_ms = tp__now_ms_coarse();
  /* Only an idle watchdog needs waking; a watching one wakes on its own
   * timer (no wake-up per grace period: there may be thousands a second). */
  if (tp__epoch_watchdog_idle) {
    tp__epoch_watchdog_idle = false;
    pthread_cond_signal(&tp__epoch_watch_cv);
  }
  pthread_mutex_unlock(&tp__epoch_state_lock);
  tp__lo_wait(TP__LO_WAIT_GRACE_PERIOD, NULL, tp_epoch_in_section());
  urcu_memb_synchronize_rcu();
  tsan_acquire(&tp__epoch_tsan_sync);
  pthread_mutex_lock(&tp__epoch_state_lock);
  tp__epoch_gp_active = false;
  pthread_mutex_unlock(&tp__epoch_state_lock);
  __atomic_fetch_add(&tp__epoch_n_gp, 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&tp__epoch_gp_lock);
  tp__blocking_leave();
}

/* synchronize and barrier would wait for themselves inside a section, and
 * in a callback: there consume_lock (12) is held, so taking gp_lock (10)
 * would invert the lock order, and the caller may be the reclaimer. */
int tp__epoch_refuse_wait(void) {
  if (tp__epoch_in_section_inline() || tp__epoch_self.in_callback) {
    errno = EDEADLK;
    return -EDEADLK;
  }
  return 0;
}

int tp_epoch_synchronize(void) {
  tp__epoch_init();
  int rc = tp__epoch_refuse_wait();
  if (rc) return rc;
  tp__epoch_grace_period();
  return 0;
}
/* Reports readers that hold up a grace period for longer than stall_ms. */
static void *watchdog_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&tp__epoch_state_lock);
  for (;;) {
    if (!tp__epoch_gp_active) {
      tp__epoch_watchdog_idle = true; /* the next grace period wakes us */
      pthread_cond_wait(&tp__epoch_watch_cv, &tp__epoch_state_lock);
      continue;
    }
    uint64_t seq = tp__epoch_gp_seq, start = tp__epoch_gp_start_ms, now = tp__now_ms_coarse();
    if (now - start < tp__epoch_cfg_stall_ms) {
      struct timespec ts = tp__deadline_ms(tp__epoch_cfg_stall_ms - (now - start) + 1);
      pthread_cond_timedwait(&tp__epoch_watch_cv, &tp__epoch_state_lock, &ts);
      continue;
    }
    void (*cb)(pid_t, uint64_t, void *) = tp__epoch_cfg_on_stall;
    void *cb_arg = tp__epoch_cfg_on_stall_arg;
    pthread_mutex_unlock(&tp__epoch_state_lock);
    /* A reader still in a section of the old phase entered before this grace
     * period began, at least stall_ms ago. */
    pid_t found[64];
    int nfound = 0;
    pthread_mutex_lock(&tp__epoch_registry_lock);
    unsigned long gctr = __atomic_load_n(&urcu_memb_gp.ctr, __ATOMIC_RELAXED);
    for (struct tp__epoch_thread *t = tp__epoch_threads; t; t = t->next) {
      if (!t->urcu_registered || t->reported_gp == seq) continue;
      unsigned long c = __atomic_load_n(&t->reader->ctr, __ATOMIC_RELAXED);
      if ((c & URCU_GP_CTR_NEST_MASK) && ((c ^ gctr) & URCU_GP_CTR_PHASE)) {
        t->reported_gp = seq;
        if (nfound < 64) found[nfound++] = t->tid;
      }
    }
    pthread_mutex_unlock(&tp__epoch_registry_lock);
    uint64_t stalled = tp__now_ms_coarse() - start;
    for (int i = 0; i < nfound; i++) {
      __atomic_fetch_add(&tp__epoch_n_stalls, 1, __ATOMIC_RELAXED);
      if (cb) cb(found[i], stalled, cb_arg);
    }
    pthread_mutex_lock(&tp__epoch_state_lock);
    /* Check this grace period again one stall_ms later (new readers). */
    if (tp__epoch_gp_active && tp__epoch_gp_seq == seq) {
      struct timespec ts = tp__deadline_ms(tp__epoch_cfg_stall_ms);
      pthread_cond_timedwait(&tp__epoch_watch_cv, &tp__epoch_state_lock, &ts);
    }
  }
  return NULL;
}

/* Starts the stall watchdog on first need (the first grace period or the
 * reclaimer). Without it stalls go unreported; everything else works, and
 * the next grace period tries again. Caller holds state_lock. */
void tp__epoch_ensure_watchdog_locked(void) {
  if (tp__epoch_watchdog_running) return;
  pthread_t watchdog;
  if (tp__thread_create_quiet(&watchdog, watchdog_main, NULL) != 0) return;
  pthread_detach(watchdog);
  tp__epoch_watchdog_running = true;
}
