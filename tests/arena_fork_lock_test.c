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
 *
 * The second case is the same trap one level down: the table of chunk
 * pools (arena/arena_chunks.c) is guarded by a lock that no fork handler
 * may take (pools are created under it). Every tp_arena_create used to
 * take it for the lookup, so a child forked while another thread was
 * creating an arena hung in its first tp_arena_create (fork_test found it
 * under TSan, 8 of 60 runs). Here a thread creates an arena with a chunk
 * size never used before, so its chunk pool is created under the lock; the
 * first mmap that thread makes (the new pool's CPU caches) stops for up to
 * HOLD_MS, and the fork is issued then. The child creates arenas of the
 * existing size (a lock-free lookup now) and of the new one (the lock is
 * re-initialized in the child).
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
static int armed_pools, inside_pools;
static __thread int hold_next_mmap; /* set by the pool-creating thread only */

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
  if (hold_next_mmap && __atomic_exchange_n(&armed_pools, 0, __ATOMIC_ACQ_REL)) {
    hold_next_mmap = 0;
    __atomic_store_n(&inside_pools, 1, __ATOMIC_RELEASE);
    tt_sleep_ms(HOLD_MS); /* chunk_pools_lock stays held meanwhile */
  }
  return next(addr, len, prot, flags, fd, off);
}
#endif

/* Waits up to 10 s for the child; one that is still there hung on a lock
 * it inherited held (what): killed, and the test fails. */
static void expect_child_exits_0(pid_t pid, int round, const char *what) {
  int status = 0;
  uint64_t end = tt_now_ns() + 10000ull * 1000000u;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (tt_now_ns() > end) {
      fprintf(stderr, "round %d: child hung (%s)\n", round, what);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      fail();
    }
    tt_sleep_ms(5);
  }
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

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
    expect_child_exits_0(pid, round, "arena lock inherited held");
  }
  tp_arena_destroy(a);
}

static void *new_size_thread(void *arg) {
  size_t chunk = (size_t)(uintptr_t)arg;
  hold_next_mmap = 1;
  tp_arena *a = tp_arena_create(&(tp_arena_config){.chunk_size = chunk});
  hold_next_mmap = 0;
  return a;
}

/* The child: arenas of a size that existed before the fork and of the size
 * whose pool the parent's thread was creating at the fork. */
static void child_creates_arenas(size_t new_chunk) {
  size_t sizes[2] = {CHUNK, new_chunk};
  for (int k = 0; k < 2; k++) {
    tp_arena *b = tp_arena_create(&(tp_arena_config){.chunk_size = sizes[k]});
    if (!b) _exit(5 + k);
    for (int i = 0; i < 100; i++)
      if (!tp_arena_alloc(b, 1000)) _exit(7);
    tp_arena_destroy(b);
  }
  _exit(0);
}

static void fork_while_chunk_pool_table_is_locked(void **s) {
  (void)s;
  if (!INTERPOSE) {
    printf("TSan build: mmap cannot be interposed; skipped\n");
    skip();
  }
  tp_arena *a = tp_arena_create(&(tp_arena_config){.chunk_size = CHUNK});
  assert_non_null(a); /* CHUNK's pool exists before the fork */
  for (int round = 0; round < 2; round++) {
    size_t new_chunk = CHUNK << (round + 1); /* 128 and 256 KiB: new pools */
    __atomic_store_n(&inside_pools, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&armed_pools, 1, __ATOMIC_RELEASE);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, new_size_thread, (void *)(uintptr_t)new_chunk), 0);
    assert_true(tt_wait_for(&inside_pools, 1)); /* it holds chunk_pools_lock */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) child_creates_arenas(new_chunk);
    assert_true(pid > 0);
    void *got = NULL;
    pthread_join(t, &got);
    assert_non_null(got);
    tp_arena_destroy(got);
    expect_child_exits_0(pid, round, "chunk-pool table lock inherited held");
  }
  tp_arena_destroy(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fork_while_arena_lock_is_held),
      cmocka_unit_test(fork_while_chunk_pool_table_is_locked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
