/*
 * Epochs: the layer's shared state (declared in epoch_state_internal.h),
 * its one-time initialization, tp_epoch_configure, tp_epoch_mode and
 * tp_epoch_read_stats.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <link.h>
#include <string.h>
#include <sys/syscall.h>
#include <linux/membarrier.h>
#include <unistd.h>
#include "epoch/epoch_state_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

__thread struct tp__epoch_thread tp__epoch_self;

static pthread_once_t epoch_once = PTHREAD_ONCE_INIT;
pthread_key_t tp__epoch_exit_key;
pthread_mutex_t tp__epoch_gp_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t tp__epoch_consume_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t tp__epoch_registry_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t tp__epoch_state_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t tp__epoch_reclaim_cv = PTHREAD_COND_INITIALIZER;
pthread_cond_t tp__epoch_progress_cv = PTHREAD_COND_INITIALIZER;
pthread_cond_t tp__epoch_watch_cv = PTHREAD_COND_INITIALIZER;

struct tp__epoch_thread *tp__epoch_threads; /* registry_lock */
struct tp__epoch_queue *tp__epoch_queues;         /* registry_lock */
uint64_t tp__epoch_nthreads;

/* Reclaimer state (state_lock unless noted). */
/* The reclaimer and the watchdog run for the life of the process (they are
 * never stopped; fork's child starts its own on demand). reclaimer_running
 * is written under state_lock and read without it by retire (relaxed: a
 * retire that sees it clear takes state_lock to start the thread).
 * inline_cycle: no reclaimer thread could be started and a barrier runs a
 * cycle on its own thread; meanwhile no thread is started (one cycle runs
 * at a time: reclaim_cycle's walk relies on it). */
bool tp__epoch_reclaimer_running;
bool tp__epoch_inline_cycle;
bool tp__epoch_watchdog_running; /* state_lock */
_Atomic int tp__epoch_sleeping; /* read by retiring threads */
bool tp__epoch_kicked;
uint64_t tp__epoch_cycles_started, tp__epoch_cycles_done;

/* What the watchdog watches (state_lock). grace_period writes gp_active,
 * gp_seq and gp_start_ms (holding gp_lock too; fork's child resets
 * gp_active); the watchdog sets watchdog_idle and grace_period clears it. */
bool tp__epoch_gp_active;
bool tp__epoch_watchdog_idle; /* waiting for a grace period to start */
uint64_t tp__epoch_gp_seq, tp__epoch_gp_start_ms;

/* Counters (relaxed atomics). */
int64_t tp__epoch_pending_bytes;
uint64_t tp__epoch_dead_retired, tp__epoch_dead_freed; /* from freed queues */
uint64_t tp__epoch_n_gp, tp__epoch_n_cap_waits, tp__epoch_n_cap_failures, tp__epoch_n_stalls;

/* Configuration. env_cap: the default cap (TIDEPOOL_RETIRE_CAP, else 64 MiB). */
size_t tp__epoch_cfg_cap = DEFAULT_CAP;
static size_t env_cap = DEFAULT_CAP;
unsigned tp__epoch_cfg_interval_ms = 1, tp__epoch_cfg_stall_ms = 1000;
void (*tp__epoch_cfg_on_stall)(pid_t, uint64_t, void *);
void *tp__epoch_cfg_on_stall_arg;
bool tp__epoch_have_membarrier;

/* liburcu-memb's loaded image: [urcu_lo, urcu_hi), spanning its PT_LOAD
 * segments, where its static reader-registry head lives (reader nodes live
 * in thread-local storage, never there). Found by the shared object's name,
 * not by a symbol's address: a non-PIC executable holds copy-relocated
 * data (urcu_memb_gp) and PLT stubs in its own image. Found once at init
 * (dl_iterate_phdr takes the loader's lock: not for a fork child handler);
 * 0, 0 if not found (liburcu linked statically): fork then cleans up only
 * the readers tidepool knows. */
uintptr_t tp__epoch_urcu_lo, tp__epoch_urcu_hi;

static int find_urcu_image(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  (void)arg;
  if (!info->dlpi_name || !strstr(info->dlpi_name, "liburcu-memb.so")) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD) continue;
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
    if (!tp__epoch_urcu_lo || lo < tp__epoch_urcu_lo) tp__epoch_urcu_lo = lo;
    if (hi > tp__epoch_urcu_hi) tp__epoch_urcu_hi = hi;
  }
  return 1;
}

static void epoch_init(void) {
  pthread_key_create(&tp__epoch_exit_key, tp__epoch_thread_exit);
  dl_iterate_phdr(find_urcu_image, NULL);
  /* The timed waits (reclaimer timer, watchdog) run on CLOCK_MONOTONIC. */
  tp__cond_init_monotonic(&tp__epoch_reclaim_cv);
  tp__cond_init_monotonic(&tp__epoch_watch_cv);
  if (tp__options()->retire_cap) env_cap = tp__options()->retire_cap; /* TIDEPOOL_RETIRE_CAP */
  __atomic_store_n(&tp__epoch_cfg_cap, env_cap, __ATOMIC_RELAXED);
  tp__epoch_have_membarrier = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  tp__epoch_fork_register();
}

void tp__epoch_init(void) { pthread_once(&epoch_once, epoch_init); }

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
  tp__epoch_init();
  tp_epoch_config d = {0};
  if (!cfg) cfg = &d;
  pthread_mutex_lock(&tp__epoch_state_lock);
  __atomic_store_n(&tp__epoch_cfg_cap, cfg->retire_cap ? cfg->retire_cap : env_cap, __ATOMIC_RELAXED);
  tp__epoch_cfg_interval_ms = cfg->interval_ms ? cfg->interval_ms : 1;
  tp__epoch_cfg_stall_ms = cfg->stall_ms ? cfg->stall_ms : 1000;
  tp__epoch_cfg_on_stall = cfg->on_stall;
  tp__epoch_cfg_on_stall_arg = cfg->on_stall_arg;
  /* A watching watchdog recomputes its deadline with the new stall_ms. */
  pthread_cond_signal(&tp__epoch_watch_cv);
  pthread_mutex_unlock(&tp__epoch_state_lock);
  return 0;
}
/* ---- stats -------------------------------------------------------------------- */

int tp_epoch_read_stats(tp_epoch_stats *out) {
  if (!out) {
    errno = EINVAL;
    return -EINVAL;
  }
  tp__epoch_init();
  memset(out, 0, sizeof *out);
  /* Under registry_lock: a queue freed meanwhile is counted once, either
   * in the list or in the dead counters (the reclaimer unlinks it and adds
   * it to them in one registry_lock section; queue_free runs later). */
  pthread_mutex_lock(&tp__epoch_registry_lock);
  uint64_t retired = __atomic_load_n(&tp__epoch_dead_retired, __ATOMIC_RELAXED);
  uint64_t freed = __atomic_load_n(&tp__epoch_dead_freed, __ATOMIC_RELAXED);
  for (struct tp__epoch_queue *q = tp__epoch_queues; q; q = q->next) {
    retired += __atomic_load_n(&q->tail, __ATOMIC_RELAXED);
    freed += __atomic_load_n(&q->head, __ATOMIC_RELAXED);
  }
  out->readers = tp__epoch_nthreads;
  pthread_mutex_unlock(&tp__epoch_registry_lock);
  out->retired = retired;
  out->freed = freed;
  out->pending = retired - freed;
  int64_t pb = __atomic_load_n(&tp__epoch_pending_bytes, __ATOMIC_RELAXED);
  out->pending_bytes = pb > 0 ? (uint64_t)pb : 0;
  out->retire_cap = __atomic_load_n(&tp__epoch_cfg_cap, __ATOMIC_RELAXED);
  out->grace_periods = __atomic_load_n(&tp__epoch_n_gp, __ATOMIC_RELAXED);
  out->cap_waits = __atomic_load_n(&tp__epoch_n_cap_waits, __ATOMIC_RELAXED);
  out->cap_failures = __atomic_load_n(&tp__epoch_n_cap_failures, __ATOMIC_RELAXED);
  out->stalls = __atomic_load_n(&tp__epoch_n_stalls, __ATOMIC_RELAXED);
  return 0;
}
