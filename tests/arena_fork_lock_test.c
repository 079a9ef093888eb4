/*
 * Issue 14, fault 2: fork() while another thread holds a concurrent
 * arena's lock (taken by refills and large allocations). The child used to
 * inherit the lock held by a thread that does not exist there, and hung on
 * its next refill (40 of 40 children in the report).
 *
 * Deterministic: this binary defines mmap (the library's calls bind to it
 * in the static link; it forwards to the next definition). When armed, the
 * mmap of one marked size — the mapping of a large allocation, which
 * tp_arena_alloc makes while holding the arena's lock — stops for up to
 * HOLD_MS, so the fork below is issued while the lock is held. With the
 * arena's fork handler, fork waits for the lock (the stop ends, the holder
 * unlocks, fork proceeds); without it the child's refill waits forever and
 * the parent kills it at the deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <stdio.h>
#include <tidepool/tidepool.h>

#include "tests/test_util.h"

#define CHUNK ((size_t)64 << 10)
#define MARKED_LEN ((size_t)77 << 12) /* the large allocation's mapping */
#define HOLD_MS 1500u

static int armed, inside;

#if defined(__SANITIZE_THREAD__)
/* TSan's runtime cannot run under an executable that preempts its mmap
 * interceptor (it faults in its own shadow setup): the case is skipped
 * there; the default, ASan and no-rseq configurations run it. */
#define INTERPOSE 0
#else
#define INTERPOSE 1
#endif

#if INTERPOSE
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  static void *(*next)(void *, size_t, int, int, int, off_t);
  if (!next) next = (void *(*)(void *, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap");
  if (len == MARKED_LEN && __atomic_exchange_n(&armed, 0, __ATOMIC_ACQ_REL)) {
    __atomic_store_n(&inside, 1, __ATOMIC_RELEASE);
    tt_sleep_ms(HOLD_MS); /* the arena's lock stays held meanwhile */
  }
  return next(addr, len, prot, flags, fd, off);
}
#endif

static void *large_alloc_thread(void *arg) {
  tp_arena *a = arg;
  void *p = tp_arena_alloc(a, MARKED_LEN); /* large: mapped under a->lock */
  return p;
}

static void fork_while_arena_lock_is_held(void **s) {
  (void)s;
  if (!INTERPOSE) {
    printf("TSan build: mmap cannot be interposed; skipped\n");
    skip();
  }
  tp_arena *a = tp_arena_create(
      &(tp_arena_config){.chunk_size = CHUNK, .flags = TP_ARENA_CONCURRENT});
  assert_non_null(a);
  for (int round = 0; round < 2; round++) {
    __atomic_store_n(&inside, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&armed, 1, __ATOMIC_RELEASE);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, large_alloc_thread, a), 0);
    assert_true(tt_wait_for(&inside, 1)); /* the thread holds a->lock */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      /* The child: refills (a->lock) and large allocations (a->lock). */
      for (int i = 0; i < 200; i++)
        if (!tp_arena_alloc(a, 1000)) _exit(2);
      if (!tp_arena_alloc(a, 3 * CHUNK)) _exit(3);
      tp_arena_stats st;
      if (tp_arena_read_stats(a, &st) != 0) _exit(4);
      _exit(0);
    }
    assert_true(pid > 0);
    void *got = NULL;
    pthread_join(t, &got);
    assert_non_null(got);
    int status = 0;
    uint64_t end = tt_now_ns() + 10000ull * 1000000u;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (tt_now_ns() > end) {
        fprintf(stderr, "round %d: child hung (arena lock inherited held)\n", round);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail();
      }
      tt_sleep_ms(5);
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
  tp_arena_destroy(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fork_while_arena_lock_is_held),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
