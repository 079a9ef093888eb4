/*
 * Cross-layer blocking-section hooks (see blocking_internal.h).
 */
#include "core/blocking_internal.h"

#include <stddef.h>

static void (*hook_enter)(void), (*hook_leave)(void);

void tp__blocking_hooks_set(void (*enter)(void), void (*leave)(void)) {
  __atomic_store_n(&hook_leave, leave, __ATOMIC_RELAXED);
  /* release: a thread that sees enter also sees leave. */
  __atomic_store_n(&hook_enter, enter, __ATOMIC_RELEASE);
}

/* The enter a thread ran is the one its leave must match: a thread that
 * ran no enter (hooks set meanwhile) runs no leave. */
static __thread int entered;

void tp__blocking_enter(void) {
  void (*f)(void) = __atomic_load_n(&hook_enter, __ATOMIC_ACQUIRE);
  if (f) {
    entered++;
    f();
  }
}

void tp__blocking_leave(void) {
  if (!entered) return;
  entered--;
  __atomic_load_n(&hook_leave, __ATOMIC_RELAXED)();
}
