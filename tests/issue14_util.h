/*
 * Helpers of the issue-14 regression tests: run a scenario in a forked
 * child with a deadline (a hang or a crash fails the test instead of
 * hanging it), and cap the child's address space.
 */
#ifndef TIDEPOOL_TESTS_ISSUE14_UTIL_H
#define TIDEPOOL_TESTS_ISSUE14_UTIL_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test_util.h"

/* Runs fn(arg) in a child; its exit status is fn's return value. Returns
 * that status, or -1 if the child died of a signal (printed), or -2 if it
 * was still running after ms milliseconds (killed: a hang). */
static inline int t14_run_child(int (*fn)(void *), void *arg, unsigned ms) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -3;
  if (pid == 0) _exit(fn(arg));
  uint64_t end = tt_now_ns() + (uint64_t)ms * 1000000u;
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (tt_now_ns() >= end) {
      fprintf(stderr, "child %d still running after %u ms: hang\n", (int)pid, ms);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -2;
    }
    tt_sleep_ms(2);
  }
  if (WIFSIGNALED(status)) {
    fprintf(stderr, "child died of signal %d\n", WTERMSIG(status));
    return -1;
  }
  return WEXITSTATUS(status);
}

/* The process's address-space size now (bytes), from /proc/self/statm. */
static inline size_t t14_vm_size(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (f) {
    if (fscanf(f, "%lu", &pages) != 1) pages = 0;
    fclose(f);
  }
  return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* Caps RLIMIT_AS at what is mapped now plus `extra` bytes. 0 or -1. */
static inline int t14_cap_as(size_t extra) {
  struct rlimit rl;
  rl.rlim_cur = rl.rlim_max = t14_vm_size() + extra;
  return setrlimit(RLIMIT_AS, &rl);
}

#define T14_CHECK(cond)                                                          \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      return 1;                                                                  \
    }                                                                            \
  } while (0)

#endif /* TIDEPOOL_TESTS_ISSUE14_UTIL_H */
