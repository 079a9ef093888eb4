/*
 * The ranked fork-handler table, and in TSan builds whether this process
 * is the child of a multi-threaded fork (see fork_internal.h).
 */
#define _GNU_SOURCE
#include "core/fork_internal.h"
#include "core/debug_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

#define MAX_HOOKS 16

/* A hook is either form: the plain functions (tp__fork_register) or the
 * ones that take arg (tp__fork_register_arg); the other form's are NULL. */
struct hook {
  int rank;
  void (*prepare)(void), (*parent)(void), (*child)(void);
  void (*prepare_arg)(void *), (*parent_arg)(void *), (*child_arg)(void *);
  void *arg;
};

static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hook hooks[MAX_HOOKS]; /* sorted by rank */
static int nhooks;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* TSan builds. prepare_multi: run_prepare saw more than one thread
 * (hooks_lock; read by the child's run_child). threadless: this process is
 * the child of such a fork, or a descendant of one (TSan's own state says
 * so too: the threads the first fork left behind stay alive in its thread
 * registry). */
static bool prepare_multi, threadless;

/* The kernel's count of this process's threads ("Threads:" in
 * /proc/self/status), or 0 if it cannot be read. No malloc and no stdio:
 * it runs in the prepare handler. TSan's own background thread, once
 * started (at the first pthread_create), counts too: a process that
 * started threads and joined them all counts as multi-threaded, which
 * only costs its fork children the background threads TSan would still
 * have let them start. */
static unsigned count_threads(void) {
  char buf[4096];
  int saved = errno; /* fork's caller sees the errno it had */
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    errno = saved;
    return 0;
  }
  size_t n = 0;
  ssize_t r;
  while (n < sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) != 0) {
    if (r > 0) n += (size_t)r;
    else if (errno != EINTR) break;
  }
  close(fd);
  errno = saved;
  buf[n] = 0;
  const char *t = strstr(buf, "\nThreads:");
  return t ? (unsigned)strtoul(t + 9, NULL, 10) : 0;
}

static void call(void (*fn)(void), void (*fn_arg)(void *), void *arg) {
  if (fn) fn();
  else if (fn_arg) fn_arg(arg);
}

static void run_prepare(void) {
  pthread_mutex_lock(&hooks_lock);
  /* Unknown (0) counts as more than one: the safe side. */
  if (TP_TSAN) prepare_multi = count_threads() != 1;
  for (int i = 0; i < nhooks; i++)
    call(hooks[i].prepare, hooks[i].prepare_arg, hooks[i].arg);
}

static void run_parent(void) {
  for (int i = nhooks - 1; i >= 0; i--) call(hooks[i].parent, hooks[i].parent_arg, hooks[i].arg);
  pthread_mutex_unlock(&hooks_lock);
}

static void run_child(void) {
  if (prepare_multi) __atomic_store_n(&threadless, true, __ATOMIC_RELAXED);
  for (int i = nhooks - 1; i >= 0; i--) call(hooks[i].child, hooks[i].child_arg, hooks[i].arg);
  /* The child's copy of the lock is held by this (the only) thread. */
  pthread_mutex_unlock(&hooks_lock);
}

static void install(void) { pthread_atfork(run_prepare, run_parent, run_child); }

#if TP_TSAN
/* At load, before any module registers: the handlers must run at every
 * fork for tp__fork_child_threadless (a module that the parent never used
 * registers its own only in the child). With no hook registered yet they
 * only count the threads and take and release hooks_lock. */
__attribute__((constructor)) static void install_at_load(void) {
  pthread_once(&atfork_once, install);
}
#endif

bool tp__fork_child_threadless(void) {
  return TP_TSAN && __atomic_load_n(&threadless, __ATOMIC_RELAXED);
}

/* Inserts h in rank order (after the hooks of its rank), unless it is of
 * the argument form and a hook with its prepare function and argument is
 * there already. */
static void add(const struct hook *h) {
  pthread_once(&atfork_once, install);
  pthread_mutex_lock(&hooks_lock);
  for (int j = 0; h->prepare_arg && j < nhooks; j++) {
    if (hooks[j].prepare_arg == h->prepare_arg && hooks[j].arg == h->arg) {
      pthread_mutex_unlock(&hooks_lock);
      return;
    }
  }
  if (nhooks == MAX_HOOKS) tp__fatal("tp__fork_register", NULL, "too many hooks");
  int i = nhooks++;
  while (i > 0 && hooks[i - 1].rank > h->rank) {
    hooks[i] = hooks[i - 1];
    i--;
  }
  hooks[i] = *h;
  pthread_mutex_unlock(&hooks_lock);
}

void tp__fork_register(int rank, void (*prepare)(void), void (*parent)(void),
                       void (*child)(void)) {
  add(&(struct hook){.rank = rank, .prepare = prepare, .parent = parent, .child = child});
}

void tp__fork_register_arg(int rank, void (*prepare)(void *), void (*parent)(void *),
                           void (*child)(void *), void *arg) {
  add(&(struct hook){.rank = rank,
                     .prepare_arg = prepare,
                     .parent_arg = parent,
                     .child_arg = child,
                     .arg = arg});
}
