/*
 * The ranked fork-handler table (see fork_internal.h).
 */
#include "core/fork_internal.h"
#include "core/debug_internal.h"

#include <pthread.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

#define MAX_HOOKS 16

struct hook {
  int rank;
  void (*prepare)(void), (*parent)(void), (*child)(void);
};

static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hook hooks[MAX_HOOKS]; /* sorted by rank */
static int nhooks;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void run_prepare(void) {
  pthread_mutex_lock(&hooks_lock);
  for (int i = 0; i < nhooks; i++)
    if (hooks[i].prepare) hooks[i].prepare();
}

static void run_parent(void) {
  for (int i = nhooks - 1; i >= 0; i--)
    if (hooks[i].parent) hooks[i].parent();
  pthread_mutex_unlock(&hooks_lock);
}

static void run_child(void) {
  for (int i = nhooks - 1; i >= 0; i--)
    if (hooks[i].child) hooks[i].child();
  /* The child's copy of the lock is held by this (the only) thread. */
  pthread_mutex_unlock(&hooks_lock);
}

static void install(void) { pthread_atfork(run_prepare, run_parent, run_child); }

void tp__fork_register(int rank, void (*prepare)(void), void (*parent)(void),
                       void (*child)(void)) {
  pthread_once(&atfork_once, install);
  pthread_mutex_lock(&hooks_lock);
  if (nhooks == MAX_HOOKS) tp__fatal("tp__fork_register", NULL, "too many hooks");
  int i = nhooks++;
  while (i > 0 && hooks[i - 1].rank > rank) {
    hooks[i] = hooks[i - 1];
    i--;
  }
  hooks[i] = (struct hook){rank, prepare, parent, child};
  pthread_mutex_unlock(&hooks_lock);
}
