/*
 * Issue 14, fault 4: when the reclaimer thread cannot start, tp_epoch_retire
 * and tp_pool_retire returned 0 (queuing what nobody would free) and
 * tp_epoch_barrier / tp_pool_destroy then waited forever. Now retire fails
 * with -EAGAIN (the object stays the caller's) and barrier never waits for
 * a reclaimer that does not exist.
 *
 * This binary defines pthread_create (the library's calls bind to it in the
 * static link; it forwards to the next definition) so that thread creation
 * can be made to fail on demand. Each case runs in a forked child with a
 * deadline, so a hang fails the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <tidepool/tidepool.h>

#include "tests/issue14_util.h"

#if defined(__SANITIZE_THREAD__)
/* The fork case's child starts a reclaimer once creation works again. */
const char *__tsan_default_options(void) { return "die_after_fork=0"; }
#endif

static int fail_creates;

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg) {
  static int (*next)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
  if (__atomic_load_n(&fail_creates, __ATOMIC_ACQUIRE)) return EAGAIN;
  if (!next)
    next = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(
        RTLD_NEXT, "pthread_create");
  return next(t, attr, fn, arg);
}

static int runs;
static void count_cb(void *obj, void *arg) {
  (void)obj;
  (void)arg;
  runs++;
}

/* First use of epochs with thread creation failing. */
static int first_use_child(void *arg) {
  (void)arg;
  static char obj[64];
  __atomic_store_n(&fail_creates, 1, __ATOMIC_RELEASE);
  errno = 0;
  T14_CHECK(tp_epoch_retire(obj, count_cb, NULL) == -EAGAIN);
  T14_CHECK(errno == EAGAIN);
  tp_pool *p = tp_pool_create(&(tp_pool_config){.name = "r", .obj_size = 64});
  T14_CHECK(p != NULL);
  void *o = tp_pool_get(p);
  T14_CHECK(tp_pool_retire(p, o) == -EAGAIN); /* o is still ours */
  tp_pool_put(p, o);
  T14_CHECK(tp_epoch_barrier() == 0); /* returns: nothing was queued */
  tp_pool_destroy(p);                 /* returns too */
  T14_CHECK(runs == 0);
  /* Creation works again: so do retires. */
  __atomic_store_n(&fail_creates, 0, __ATOMIC_RELEASE);
  T14_CHECK(tp_epoch_retire(obj, count_cb, NULL) == 0);
  T14_CHECK(tp_epoch_barrier() == 0);
  T14_CHECK(runs == 1);
  return 0;
}

static void retire_fails_cleanly_without_reclaimer(void **s) {
  (void)s;
  assert_int_equal(t14_run_child(first_use_child, NULL, TT_HANG_MS), 0);
}

/* A forked child inherits queued retires but no reclaimer, and cannot
 * start one: barrier runs them itself; retire reports -EAGAIN. The
 * reclaimer's timer is set to 10 minutes so that retires stay queued; a
 * child that finds none queued (the reclaimer ran just before the fork)
 * exits 40 and the fork is retried. */
static int fork_child(void *arg) {
  (void)arg;
  static char obj[64];
  T14_CHECK(tp_epoch_configure(&(tp_epoch_config){.interval_ms = 600000}) == 0);
  for (int attempt = 0; attempt < 100; attempt++) {
    for (int i = 0; i < 100; i++) T14_CHECK(tp_epoch_retire(obj, count_cb, NULL) == 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      tp_epoch_stats st;
      if (tp_epoch_read_stats(&st) != 0) _exit(21);
      if (st.pending == 0) _exit(40);
      __atomic_store_n(&fail_creates, 1, __ATOMIC_RELEASE);
      uint64_t want = st.retired;
      if (tp_epoch_barrier() != 0) _exit(23); /* runs the queued ones here */
      if (tp_epoch_retire(obj, count_cb, NULL) != -EAGAIN) _exit(22);
      if (tp_epoch_read_stats(&st) != 0 || st.pending != 0 || st.freed != want) _exit(24);
      if ((uint64_t)runs != want) _exit(25);
      _exit(0);
    }
    T14_CHECK(pid > 0);
    int status = 0;
    uint64_t end = tt_hang_deadline();
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (tt_now_ns() > end) {
        fprintf(stderr, "grandchild hung\n");
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return 30;
      }
      tt_sleep_ms(2);
    }
    T14_CHECK(WIFEXITED(status));
    if (WEXITSTATUS(status) == 40) continue;
    if (WEXITSTATUS(status)) fprintf(stderr, "grandchild exit %d\n", WEXITSTATUS(status));
    printf("exercised at attempt %d\n", attempt);
    fflush(stdout);
    return WEXITSTATUS(status);
  }
  fprintf(stderr, "no fork found retires queued\n");
  return 31;
}

static void barrier_runs_inherited_retires_in_child(void **s) {
  (void)s;
  assert_int_equal(t14_run_child(fork_child, NULL, 2 * TT_HANG_MS), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(retire_fails_cleanly_without_reclaimer),
      cmocka_unit_test(barrier_runs_inherited_retires_in_child),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
