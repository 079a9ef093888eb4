/*
 * Issue 14, fault 5: retire() advanced the owner's private tail_local
 * before publishing it in q->tail; a fork between the two left the child
 * counting one retire that was never published (dead_retired took
 * tail_local when the orphaned queue was freed), so stats.pending stayed 1
 * forever (epoch_fork_test's "st.pending == 0" flake).
 *
 * NRETIRERS threads retire without pause while the main thread forks; each child
 * drains everything (barrier) and checks that pending is 0 and
 * retired == freed. The window is a few instructions wide, so this is a
 * stress test: seeded (the seed only varies the retire burst lengths),
 * bounded to NFORKS forks or the phase time, and reports how many children
 * ran. nosan: the children start a reclaimer thread (TSan refuses threads
 * in a forked child; ASan's allocator has no fork handlers).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sys/wait.h>
#include <tidepool/tidepool.h>

#include "tests/test_util.h"

#define NFORKS 3000
#define NRETIRERS 3

static int stop;
static uint64_t seed;

static void noop(void *obj, void *arg) {
  (void)obj;
  (void)arg;
}

static void *retirer(void *arg) {
  (void)arg;
  uint64_t s = seed, n = 0;
  static char objs[64];
  while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
    unsigned burst = 1 + (unsigned)(tt_rand(&s) % 64);
    for (unsigned i = 0; i < burst; i++) tp_epoch_retire(&objs[n++ % 64], noop, NULL);
  }
  return NULL;
}

static int child_check(void) {
  if (tp_epoch_barrier() != 0) return 10;
  if (tp_epoch_barrier() != 0) return 11;
  tp_epoch_stats st;
  if (tp_epoch_read_stats(&st) != 0) return 12;
  if (st.pending != 0 || st.retired != st.freed) {
    fprintf(stderr, "child: pending %llu, retired %llu, freed %llu\n",
            (unsigned long long)st.pending, (unsigned long long)st.retired,
            (unsigned long long)st.freed);
    return 23;
  }
  return 0;
}

static void fork_while_retiring_counts_exactly(void **s) {
  (void)s;
  seed = tt_seed("epoch_fork_count_test");
  pthread_t t[NRETIRERS];
  for (int i = 0; i < NRETIRERS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, retirer, NULL), 0);
  uint64_t end = tt_deadline(4.0);
  int forks = 0, bad = 0;
  while (forks < NFORKS && tt_now_ns() < end) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) _exit(child_check());
    assert_true(pid > 0);
    forks++;
    int status = 0;
    uint64_t dl = tt_hang_deadline();
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (tt_now_ns() > dl) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fprintf(stderr, "child hung\n");
        break;
      }
      tt_sleep_ms(1);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) bad++;
  }
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  for (int i = 0; i < NRETIRERS; i++) pthread_join(t[i], NULL);
  printf("%d forks while retiring, %d children with wrong counts\n", forks, bad);
  assert_int_equal(bad, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fork_while_retiring_counts_exactly),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
