/*
 * Running part of a test in a child process, with a bound on how long it
 * may take: the fault, rlimit and fork tests use it so that a child that
 * hangs (a lock left held across fork, a wait that never ends) is killed and
 * reported as a failure instead of hanging the test.
 *
 * In the child, cmocka's assertions must not be used (a failure would
 * longjmp into the child's copy of the runner): TT_CHECK prints the failed
 * condition and leaves with _exit(TT_CHILD_FAILED).
 */
#ifndef TIDEPOOL_TESTS_CHILD_H
#define TIDEPOOL_TESTS_CHILD_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test_util.h"

#define TT_CHILD_FAILED 23

#define TT_CHECK(cond)                                                                   \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "child %d: %s:%d: check failed: %s\n", (int)getpid(), __FILE__,    \
              __LINE__, #cond);                                                          \
      fflush(stderr);                                                                    \
      _exit(TT_CHILD_FAILED);                                                            \
    }                                                                                    \
  } while (0)

/* Waits for pid at most ms (polling every millisecond): its wait status, or
 * -1 after killing it with SIGKILL when it did not finish (reported on
 * stderr as a hang). */
static inline int tt_wait_child(pid_t pid, unsigned ms) {
  uint64_t end = tt_now_ns() + (uint64_t)ms * 1000000u;
  int status;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    if (tt_now_ns() >= end) break;
    tt_sleep_ms(1);
  }
  fprintf(stderr, "child %d did not exit within %u ms (hang): killed\n", (int)pid, ms);
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

/* 1 if a wait status is a clean exit 0; else prints what it was. */
static inline int tt_child_ok(int status) {
  if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) return 1;
  if (status == -1) return 0; /* reported by tt_wait_child */
  if (WIFEXITED(status))
    fprintf(stderr, "child exited with %d\n", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    fprintf(stderr, "child killed by signal %d\n", WTERMSIG(status));
  return 0;
}

/* Runs fn(arg) in a child (exit 0 when it returns) and waits at most ms.
 * 1 if it exited cleanly. */
static inline int tt_in_child(void (*fn)(void *), void *arg, unsigned ms) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) {
    fn(arg);
    fflush(stdout);
    _exit(0);
  }
  return tt_child_ok(tt_wait_child(pid, ms));
}

#endif /* TIDEPOOL_TESTS_CHILD_H */
