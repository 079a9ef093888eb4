/*
 * Test-only fault injection (see fault_internal.h): the arming state and
 * the counting half of TP__FAULT. Compiled to nothing outside fault builds.
 *
 * The state is a handful of relaxed atomics: arming is done by a test
 * between phases, and a call racing with an arm or disarm may be counted
 * under either setting, which is all a sweep needs (it retries until an
 * armed run injects nothing).
 */
#define _GNU_SOURCE
#include "core/fault_internal.h"

#if TP_FAULT_INJECT
int tp__fault_armed;
static unsigned fault_kinds;
static unsigned fault_flags;
static uint64_t fault_nth, fault_count;
static uint64_t fault_calls, fault_injected;
static pthread_t fault_thread; /* accessed with __atomic (an integer on glibc) */

bool tp__fault_hit(unsigned kind) {
  if (!(__atomic_load_n(&fault_kinds, __ATOMIC_RELAXED) & kind)) return false;
  if ((__atomic_load_n(&fault_flags, __ATOMIC_RELAXED) & TP__FAULT_THIS_THREAD) &&
      !pthread_equal(pthread_self(), __atomic_load_n(&fault_thread, __ATOMIC_RELAXED)))
    return false;
  uint64_t n = __atomic_add_fetch(&fault_calls, 1, __ATOMIC_RELAXED);
  uint64_t nth = __atomic_load_n(&fault_nth, __ATOMIC_RELAXED);
  uint64_t count = __atomic_load_n(&fault_count, __ATOMIC_RELAXED);
  if (n < nth || (count && n - nth >= count)) return false;
  if (!__atomic_load_n(&tp__fault_armed, __ATOMIC_RELAXED)) return false;
  __atomic_add_fetch(&fault_injected, 1, __ATOMIC_RELAXED);
  return true;
}

void tp__fault_arm(unsigned kinds, uint64_t nth, uint64_t count, unsigned flags) {
  __atomic_store_n(&tp__fault_armed, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&fault_thread, pthread_self(), __ATOMIC_RELAXED);
  __atomic_store_n(&fault_kinds, kinds, __ATOMIC_RELAXED);
  __atomic_store_n(&fault_flags, flags, __ATOMIC_RELAXED);
  __atomic_store_n(&fault_nth, nth, __ATOMIC_RELAXED);
  __atomic_store_n(&fault_count, count, __ATOMIC_RELAXED);
  __atomic_store_n(&fault_calls, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&fault_injected, 0, __ATOMIC_RELAXED);
  /* Orders the settings above before any call that sees the fault armed. */
  __atomic_store_n(&tp__fault_armed, 1, __ATOMIC_SEQ_CST);
}

void tp__fault_disarm(void) { __atomic_store_n(&tp__fault_armed, 0, __ATOMIC_SEQ_CST); }

void tp__fault_resume(void) { __atomic_store_n(&tp__fault_armed, 1, __ATOMIC_SEQ_CST); }

uint64_t tp__fault_calls(void) { return __atomic_load_n(&fault_calls, __ATOMIC_RELAXED); }
uint64_t tp__fault_injected(void) { return __atomic_load_n(&fault_injected, __ATOMIC_RELAXED); }
#else
typedef int tp__fault_unused; /* ISO C: a translation unit is not empty */
#endif
