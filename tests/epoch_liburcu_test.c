/*
 * Mixing tidepool's epochs with direct use of liburcu (urcu-memb) on the
 * same threads: the supported cases of the contract in docs/epoch.md
 * ("Mixing with liburcu"), issue 14.
 *
 *  1. The application registers a thread with liburcu first, then uses
 *     tp_epoch_* on it, including tp_epoch_register_thread (adopted, not
 *     registered twice), and unregisters it itself.
 *  2. tidepool registers a thread first; the application uses liburcu's
 *     read side and synchronize on it, and may unregister it: tidepool
 *     registers it again on its next enter and does not unregister it a
 *     second time at exit.
 *  3. A reader in a section is reported as stalled from the very first
 *     grace period, before anything was retired; so is a thread the
 *     application registered once tp_epoch_register_thread adopted it.
 *  4. fork() while a thread registered with liburcu only is inside a
 *     section: the child's grace periods do not wait for it.
 *
 * Each case runs in a forked child with a deadline (a fresh process: the
 * stall case needs no reclaimer running yet; a hang or liburcu's assertion
 * fails the case).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sys/syscall.h>
#include <tidepool/tidepool.h>
#include <urcu/urcu-memb.h>

#include "tests/issue14_util.h"

#if defined(__SANITIZE_THREAD__)
/* Case 4's child starts the watchdog thread with its first grace period. */
const char *__tsan_default_options(void) { return "die_after_fork=0"; }
#endif

static int runs;
static void count_cb(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  __atomic_fetch_add(&runs, 1, __ATOMIC_RELAXED);
}

/* ---- 1: the application registers first --------------------------------- */

static void *app_first_thread(void *arg) {
  (void)arg;
  static char obj[8];
  urcu_memb_register_thread();
  if (tp_epoch_register_thread() != 0) return (void *)1; /* used to abort */
  tp_epoch_enter();
  urcu_memb_read_lock(); /* nested across the two APIs */
  urcu_memb_read_unlock();
  tp_epoch_leave();
  if (tp_epoch_retire(obj, count_cb, NULL) != 0) return (void *)2;
  if (tp_epoch_synchronize() != 0) return (void *)3;
  urcu_memb_synchronize_rcu();
  if (tp_epoch_barrier() != 0) return (void *)4;
  tp_epoch_stats st;
  tp_epoch_read_stats(&st);
  if (st.readers < 1) return (void *)5;
  urcu_memb_unregister_thread(); /* the application's to remove */
  return NULL;
}

static int app_first_child(void *arg) {
  (void)arg;
  for (int i = 0; i < 3; i++) {
    pthread_t t;
    void *rc = (void *)9;
    T14_CHECK(pthread_create(&t, NULL, app_first_thread, NULL) == 0);
    pthread_join(t, &rc);
    T14_CHECK(rc == NULL);
  }
  T14_CHECK(runs == 3);
  return 0;
}

static void app_registers_first(void **s) {
  (void)s;
  assert_int_equal(t14_run_child(app_first_child, NULL, TT_HANG_MS), 0);
}

/* ---- 2: tidepool registers first; the application unregisters -------- */

static int in_section, sync_returned;

static void *tp_first_thread(void *arg) {
  (void)arg;
  tp_epoch_enter(); /* tidepool registers the thread */
  tp_epoch_leave();
  urcu_memb_read_lock(); /* the application's read side on it */
  urcu_memb_read_unlock();
  urcu_memb_unregister_thread(); /* used to abort at exit */
  /* Registered again by the next enter: its section still holds a grace
   * period up (checked by the main thread). */
  tp_epoch_enter();
  __atomic_store_n(&in_section, 1, __ATOMIC_RELEASE);
  tt_sleep_ms(100);
  int early = __atomic_load_n(&sync_returned, __ATOMIC_ACQUIRE);
  tp_epoch_leave();
  return (void *)(intptr_t)early;
}

static void *synchronizer(void *arg) {
  (void)arg;
  tp_epoch_synchronize();
  __atomic_store_n(&sync_returned, 1, __ATOMIC_RELEASE);
  return NULL;
}

static int tp_first_child(void *arg) {
  (void)arg;
  pthread_t t, sy;
  void *early = (void *)1;
  T14_CHECK(pthread_create(&t, NULL, tp_first_thread, NULL) == 0);
  T14_CHECK(tt_wait_for(&in_section, 1));
  T14_CHECK(pthread_create(&sy, NULL, synchronizer, NULL) == 0);
  pthread_join(t, &early);
  pthread_join(sy, NULL);
  T14_CHECK(early == NULL); /* the grace period waited for the section */
  /* A thread unregistered by the application exits cleanly. */
  return 0;
}

static void tidepool_registers_first_app_unregisters(void **s) {
  (void)s;
  assert_int_equal(t14_run_child(tp_first_child, NULL, TT_HANG_MS), 0);
}

/* ---- 3: stalls from the first grace period ------------------------------ */

static pid_t stalled_tid;
static int stall_seen, reader_tid_set;
static pid_t reader_tid;

static void on_stall(pid_t tid, uint64_t ms, void *arg) {
  (void)ms;
  (void)arg;
  if (tid == __atomic_load_n(&reader_tid, __ATOMIC_ACQUIRE)) {
    stalled_tid = tid;
    __atomic_store_n(&stall_seen, 1, __ATOMIC_RELEASE);
  }
}

static void *stalling_reader(void *arg) {
  int app_registered = (int)(intptr_t)arg;
  if (app_registered) {
    urcu_memb_register_thread();
    tp_epoch_register_thread(); /* adopted: watched from now on */
  }
  __atomic_store_n(&reader_tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
  tp_epoch_enter();
  __atomic_store_n(&reader_tid_set, 1, __ATOMIC_RELEASE);
  int seen = tt_wait_for(&stall_seen, 1); /* stays until reported */
  tp_epoch_leave();
  if (app_registered) urcu_memb_unregister_thread();
  return (void *)(intptr_t)!seen;
}

static int stall_child(void *arg) {
  T14_CHECK(tp_epoch_configure(&(tp_epoch_config){.stall_ms = 50, .on_stall = on_stall}) == 0);
  pthread_t r, sy;
  void *rc = (void *)1;
  T14_CHECK(pthread_create(&r, NULL, stalling_reader, arg) == 0);
  T14_CHECK(tt_wait_for(&reader_tid_set, 1));
  /* No retire anywhere: the grace period alone must start the watchdog. */
  T14_CHECK(pthread_create(&sy, NULL, synchronizer, NULL) == 0);
  pthread_join(r, &rc);
  pthread_join(sy, NULL);
  T14_CHECK(rc == NULL);
  T14_CHECK(stalled_tid == reader_tid);
  tp_epoch_stats st;
  T14_CHECK(tp_epoch_read_stats(&st) == 0 && st.stalls >= 1 && st.retired == 0);
  return 0;
}

static void stall_reported_before_any_retire(void **s) {
  (void)s;
  assert_int_equal(t14_run_child(stall_child, (void *)0, 2 * TT_HANG_MS), 0);
}

static void stall_of_app_registered_reader_reported(void **s) {
  (void)s;
  assert_int_equal(t14_run_child(stall_child, (void *)1, 2 * TT_HANG_MS), 0);
}

/* ---- 4: fork with a liburcu-only reader inside a section --------------- */

static int urcu_in_section, urcu_release;

static void *urcu_only_reader(void *arg) {
  (void)arg;
  urcu_memb_register_thread();
  urcu_memb_read_lock();
  __atomic_store_n(&urcu_in_section, 1, __ATOMIC_RELEASE);
  tt_wait_for(&urcu_release, 1);
  urcu_memb_read_unlock();
  urcu_memb_unregister_thread();
  return NULL;
}

static int fork_child(void *arg) {
  (void)arg;
  tp_epoch_enter(); /* this thread is tidepool's */
  tp_epoch_leave();
  pthread_t r;
  T14_CHECK(pthread_create(&r, NULL, urcu_only_reader, NULL) == 0);
  T14_CHECK(tt_wait_for(&urcu_in_section, 1));
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    /* The reader does not exist here; its section must not count. */
    if (tp_epoch_synchronize() != 0) _exit(2);
    urcu_memb_synchronize_rcu();
    _exit(0);
  }
  T14_CHECK(pid > 0);
  int status = 0;
  uint64_t end = tt_now_ns() + 10000ull * 1000000u;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (tt_now_ns() > end) {
      fprintf(stderr, "forked child's grace period hung on the dead reader\n");
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      status = -1;
      break;
    }
    tt_sleep_ms(2);
  }
  __atomic_store_n(&urcu_release, 1, __ATOMIC_RELEASE);
  pthread_join(r, NULL);
  if (status != -1 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    fprintf(stderr, "forked child: status 0x%x\n", status);
  T14_CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return 0;
}

static void fork_with_liburcu_only_reader_in_section(void **s) {
  (void)s;
  assert_int_equal(t14_run_child(fork_child, NULL, TT_HANG_MS), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(app_registers_first),
      cmocka_unit_test(tidepool_registers_first_app_unregisters),
      cmocka_unit_test(stall_reported_before_any_retire),
      cmocka_unit_test(stall_of_app_registered_reader_reported),
      cmocka_unit_test(fork_with_liburcu_only_reader_in_section),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
