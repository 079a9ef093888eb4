/*
 * Death tests: run a function in a child process and check that it aborts
 * (SIGABRT) with a message on stderr that contains an expected string.
 */
#ifndef TIDEPOOL_TESTS_DEATH_H
#define TIDEPOOL_TESTS_DEATH_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test_util.h"

/* Returns 1 if fn(arg) aborted and its stderr contained `expect`. */
static inline int tt_dies_with(void (*fn)(void *), void *arg, const char *expect) {
  int fds[2];
  if (pipe(fds) != 0) return 0;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    fn(arg);
    _exit(0); /* survived: the parent reports it */
  }
  close(fds[1]);
  char buf[4096];
  tt_read_all(fds[0], buf, sizeof buf);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  int ok = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && strstr(buf, expect) != NULL;
  if (!ok)
    fprintf(stderr, "death test: status %d (signal %d), expected \"%s\", stderr: %s\n", status,
            WIFSIGNALED(status) ? WTERMSIG(status) : 0, expect, buf);
  return ok;
}

#endif /* TIDEPOOL_TESTS_DEATH_H */
