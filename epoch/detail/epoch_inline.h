/*
 * <tidepool/detail/epoch_inline.h> — the epoch read side inline, on
 * liburcu's LGPL-2.1 static headers. Included by <tidepool/epoch.h> when
 * the program opts in (_LGPL_SOURCE or TP_EPOCH_INLINE defined before the
 * include), and by libtidepool itself, whose out-of-line tp_epoch_enter etc.
 * are these functions. Not API: every name here but the five public ones
 * is tp__ and changes without notice.
 *
 * Registration. tidepool keeps its own per-thread flag, tp__epoch_registered
 * (thread-local in libtidepool, initial-exec: in a program that links
 * libtidepool.a the linker makes it local-exec, one %fs-relative load),
 * set when the thread has registered with liburcu through tidepool and
 * cleared when it unregisters; the first enter of a thread registers it.
 * The read side reads nothing of liburcu's but what liburcu's own inline
 * read lock/unlock read (the reader's nesting counter,
 * URCU_TLS(urcu_memb_reader).ctr).
 *
 * Cost (gcc 12 -O2, objdump of //bench's loop): an enter+leave pair is 23
 * instructions against 22 for liburcu's own inline pair — the
 * registration test (3) and one register copy the leave's test for a
 * leave without an enter keeps, less the second load and test of the
 * membarrier flag that the leave saves (3). //bench read_pair_inline:
 * 1.04-1.05 ns against liburcu's 0.97-1.01 in the same process.
 *
 * ThreadSanitizer cannot see liburcu's ordering (the grace period is
 * inside uninstrumented liburcu and membarrier), and liburcu's inline read
 * side races benignly on its own words (plain volatile stores of the
 * futex). In a TSan build of the includer (TP__TSAN, common.h), read
 * sections therefore call liburcu's out-of-line read lock/unlock
 * (uninstrumented) through tidepool, a leave is a TSan release and a grace
 * period's end an acquire of one sync object, and tp_publish/tp_deref are
 * C11 release/acquire atomics (the same instructions on x86-64). Nothing
 * changes in other builds.
 */
#ifndef TIDEPOOL_DETAIL_EPOCH_INLINE_H
#define TIDEPOOL_DETAIL_EPOCH_INLINE_H

#include <tidepool/common.h>

/* Including the static headers directly gives the inline functions whatever
 * the includer's _LGPL_SOURCE setting (libtidepool does not define it). */
#include <urcu/static/pointer.h>
#include <urcu/static/urcu-memb.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 once the calling thread is registered (tp_epoch_register_thread). */
TP_API extern __thread int tp__epoch_registered __attribute__((tls_model("initial-exec")));

TP_API void tp__epoch_register_slow(void);
TP_API void tp__epoch_unbalanced_leave(void);
/* Out-of-line read side for TSan builds (see above). */
TP_API void tp__epoch_read_lock_tsan(void);
TP_API void tp__epoch_read_unlock_tsan(void);

/* The read lock of a registered thread: liburcu's (TSan: out of line). */
TP_INLINE void tp__epoch_read_lock_inline(void) {
#if TP__TSAN
  tp__epoch_read_lock_tsan();
#else
  _urcu_memb_read_lock();
#endif
}

TP_INLINE void tp__epoch_enter_inline(void) {
  if (TP_UNLIKELY(!tp__epoch_registered)) tp__epoch_register_slow();
  tp__epoch_read_lock_inline();
}

TP_INLINE int tp__epoch_in_section_inline(void) {
  return (URCU_TLS(urcu_memb_reader).ctr & URCU_GP_CTR_NEST_MASK) != 0;
}

/* liburcu's read unlock (_urcu_memb_read_unlock_update_and_wakeup, the
 * same stores, fences and futex wake), with two changes off its common
 * path:
 *  - the membarrier flag is read once: liburcu's helper tests
 *    urcu_memb_has_sys_membarrier on each side of the counter store, and
 *    the compiler barrier between them makes the compiler load it twice.
 *    The flag is set once, by liburcu's constructor, before any reader can
 *    run, so one load serves both sides;
 *  - the test for a leave without an enter: the outermost leave is tested
 *    first (the compare liburcu's helper makes anyway), and only a leave
 *    that is not the outermost asks whether it is one at all.
 * Fences, as liburcu's: the first orders the section's accesses before the
 * counter store, the second the counter store before the read of the
 * grace-period futex in urcu_common_wake_up_gp; with sys_membarrier each
 * is a compiler barrier only (the updater's membarrier makes it a full
 * fence on demand). A nested leave stores the decremented counter and
 * needs no fence (liburcu's else branch). */
TP_INLINE void tp__epoch_leave_inline(void) {
#if TP__TSAN
  if (TP_UNLIKELY(!tp__epoch_in_section_inline())) {
    tp__epoch_unbalanced_leave();
    return;
  }
  tp__epoch_read_unlock_tsan();
#else
  unsigned long tmp = URCU_TLS(urcu_memb_reader).ctr;
  if (TP_LIKELY((tmp & URCU_GP_CTR_NEST_MASK) == URCU_GP_COUNT)) {
    int sys = urcu_memb_has_sys_membarrier;
    if (TP_LIKELY(sys)) cmm_barrier(); /* section before the store */
    else cmm_smp_mb();
    _CMM_STORE_SHARED(URCU_TLS(urcu_memb_reader).ctr, tmp - URCU_GP_COUNT);
    if (TP_LIKELY(sys)) cmm_barrier(); /* the store before the futex read */
    else cmm_smp_mb();
    urcu_common_wake_up_gp(&urcu_memb_gp);
  } else if (TP_UNLIKELY(!(tmp & URCU_GP_CTR_NEST_MASK))) {
    tp__epoch_unbalanced_leave();
    return;
  } else {
    _CMM_STORE_SHARED(URCU_TLS(urcu_memb_reader).ctr, tmp - URCU_GP_COUNT); /* nested */
  }
  cmm_barrier(); /* as liburcu's read unlock: not reordered with what follows */
#endif
}

#if TP__TSAN
#define tp__publish_inline(ptr_lvalue, value) __atomic_store_n(&(ptr_lvalue), (value), __ATOMIC_RELEASE)
#define tp__deref_inline(ptr) __atomic_load_n(&(ptr), __ATOMIC_ACQUIRE)
#else
#define tp__publish_inline(ptr_lvalue, value) _rcu_assign_pointer(ptr_lvalue, value)
#define tp__deref_inline(ptr) _rcu_dereference(ptr)
#endif

#if TP__EPOCH_INLINE
/* The opt-in (epoch.h): the public read side, inline. Same contracts as
 * the out-of-line declarations in epoch.h. */
TP_INLINE void tp_epoch_enter(void) { tp__epoch_enter_inline(); }
TP_INLINE void tp_epoch_leave(void) { tp__epoch_leave_inline(); }
TP_INLINE int tp_epoch_in_section(void) { return tp__epoch_in_section_inline(); }
#define tp_publish(ptr_lvalue, value) tp__publish_inline(ptr_lvalue, value)
#define tp_deref(ptr) tp__deref_inline(ptr)
#endif

#ifdef __cplusplus
}
#endif

#endif /* TIDEPOOL_DETAIL_EPOCH_INLINE_H */
