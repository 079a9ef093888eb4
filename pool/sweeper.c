/*
 * The background sweeper and the process-wide stats.
 *
 * One thread, all signals blocked, wakes every interval_ms and runs a pass:
 * under the pools' pass lock (so no pool is destroyed meanwhile) it calls
 * tp__pool_sweep on every registered pool, arena chunk pools included,
 * with one retain budget shared by all of them. A pass never holds a
 * pool's slab lock across a syscall on many slabs: detached slabs are
 * unmapped after the lock is dropped, and CPU caches are taken over one at
 * a time with a membarrier fence (see core/percpu.h), so get and put never
 * wait for the sweeper.
 */
#define _GNU_SOURCE
#include <tidepool/sweeper.h>

#include "core/debug_internal.h"
#include "core/fork_internal.h"
#include "epoch/epoch_internal.h"
#include "core/os_internal.h"
#include "pool/sweeper_internal.h"
#include "pool/pool_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* What retain_bytes SIZE_MAX (TP_SWEEPER_CONFIG_DEFAULT's) stands for. */
#define DEFAULT_RETAIN ((size_t)4 << 20)

static const tp_sweeper_config defaults = TP_SWEEPER_CONFIG_DEFAULT;

static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER; /* start/stop */
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_cv;
static pthread_once_t sweeper_once = PTHREAD_ONCE_INIT;
static bool running, stop_requested;
static pthread_t thread;
static tp_sweeper_config cfg; /* normalized; the defaults from sweeper_init */
static uint64_t n_sweeps;

static void fork_prepare(void) { pthread_mutex_lock(&ctl_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&ctl_lock); }
static void fork_child(void) {
  /* The sweeper thread does not exist in the child. */
  running = false;
  stop_requested = false;
  pthread_mutex_init(&wake_lock, NULL);
  tp__cond_init_monotonic(&wake_cv);
  pthread_mutex_unlock(&ctl_lock);
}

/* Validates and fills in defaults. 0 or -EINVAL. */
static int normalize(const tp_sweeper_config *in, tp_sweeper_config *out) {
  tp_sweeper_config c = in ? *in : defaults;
  if (c.interval_ms == 0) c.interval_ms = defaults.interval_ms;
  if (c.decay_ms == 0) c.decay_ms = defaults.decay_ms;
  if (c.retain_bytes == (size_t)-1) c.retain_bytes = DEFAULT_RETAIN;
  if (c.interval_ms > 60000 || c.decay_ms > 3600000) return -EINVAL;
  *out = c;
  return 0;
}

static void sweeper_init(void) {
  normalize(NULL, &cfg);
  tp__cond_init_monotonic(&wake_cv);
  tp__fork_register(TP__FORK_RANK_SWEEPER_CTL, fork_prepare, fork_parent, fork_child);
}

struct pass_args {
  uint64_t now_ms, decay_ms;
  size_t retain, released;
};

static void sweep_one(tp_pool *p, void *arg) {
  struct pass_args *a = arg;
  a->released += tp__pool_sweep(p, a->now_ms, a->decay_ms, &a->retain);
}

static size_t pass(uint64_t decay_ms, size_t retain) {
  struct pass_args a = {tp__now_ms_coarse(), decay_ms, retain, 0};
  tp__pool_foreach(sweep_one, &a);
  /* Empty magazines beyond a small working set give their pages back. */
  a.released += tp__mag_trim(8);
  __atomic_fetch_add(&n_sweeps, 1, __ATOMIC_RELAXED);
  return a.released;
}

static void *sweeper_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&wake_lock);
  while (!stop_requested) {
    tp_sweeper_config c = cfg;
    struct timespec ts = tp__deadline_ms(c.interval_ms);
    int rc = 0;
    while (!stop_requested && rc != ETIMEDOUT)
      rc = pthread_cond_timedwait(&wake_cv, &wake_lock, &ts);
    if (stop_requested) break;
    pthread_mutex_unlock(&wake_lock);
    pass(c.decay_ms, c.retain_bytes);
    pthread_mutex_lock(&wake_lock);
  }
  pthread_mutex_unlock(&wake_lock);
  return NULL;
}

int tp_sweeper_start(const tp_sweeper_config *in) {
  pthread_once(&sweeper_once, sweeper_init);
  tp_sweeper_config c;
  if (normalize(in, &c) != 0) {
    errno = EINVAL;
    return -EINVAL;
  }
  pthread_mutex_lock(&ctl_lock);
  pthread_mutex_lock(&wake_lock);
  cfg = c;
  pthread_cond_signal(&wake_cv); /* a running sweeper picks it up now */
  pthread_mutex_unlock(&wake_lock);
  int rc = 0;
  if (!running) {
    stop_requested = false;
    rc = tp__thread_create_quiet(&thread, sweeper_main, NULL);
    if (rc == 0) running = true;
  }
  pthread_mutex_unlock(&ctl_lock);
  if (rc) errno = -rc;
  return rc;
}

void tp_sweeper_stop(void) {
  pthread_once(&sweeper_once, sweeper_init);
  pthread_mutex_lock(&ctl_lock);
  if (running) {
    pthread_mutex_lock(&wake_lock);
    stop_requested = true;
    pthread_cond_signal(&wake_cv);
    pthread_mutex_unlock(&wake_lock);
    pthread_join(thread, NULL);
    running = false;
  }
  pthread_mutex_unlock(&ctl_lock);
}

int tp_sweeper_running(void) {
  pthread_once(&sweeper_once, sweeper_init);
  pthread_mutex_lock(&ctl_lock);
  int r = running;
  pthread_mutex_unlock(&ctl_lock);
  return r;
}

size_t tp_sweep_now(void) {
  pthread_once(&sweeper_once, sweeper_init);
  pthread_mutex_lock(&wake_lock);
  tp_sweeper_config c = cfg;
  pthread_mutex_unlock(&wake_lock);
  return pass(c.decay_ms, c.retain_bytes);
}

size_t tp_sweep_all(void) {
  /* No sweeper_init: pass() reads neither cfg nor the wake and control
   * state. Two passes: the first notes every CPU cache's word, the
   * second sees the idle ones unchanged and drains them (decay 0). The
   * epoch layer's held retire-queue segments are idle memory too. */
  size_t r = pass(0, 0);
  return r + pass(0, 0) + tp__epoch_trim();
}

static void add_pool_stats(tp_pool *p, void *arg) {
  tp_stats *out = arg;
  tp_pool_stats ps;
  if (tp_pool_read_stats(p, &ps) != 0) return;
  out->bytes_in_use += ps.in_use * ps.stride;
  out->bytes_cached += ps.cached * ps.stride;
  out->slabs_freed += ps.slabs_freed;
}

int tp_read_stats(tp_stats *out) {
  if (!out) {
    errno = EINVAL;
    return -EINVAL;
  }
  memset(out, 0, sizeof *out);
  out->pools = tp__pool_foreach(add_pool_stats, out);
  out->bytes_mapped = tp__counter_get(&tp__os.mapped);
  out->bytes_resident = tp__counter_get(&tp__os.resident);
  out->bytes_returned = tp__counter_get(&tp__os.returned);
  out->sweeps = __atomic_load_n(&n_sweeps, __ATOMIC_RELAXED);
  out->caches_drained = tp__counter_get(&tp__caches_drained);
  return 0;
}

int tp__sweeper_read_config(tp_sweeper_config *out) {
  pthread_once(&sweeper_once, sweeper_init);
  pthread_mutex_lock(&ctl_lock);
  int r = running;
  pthread_mutex_lock(&wake_lock);
  *out = cfg;
  pthread_mutex_unlock(&wake_lock);
  pthread_mutex_unlock(&ctl_lock);
  return r;
}
