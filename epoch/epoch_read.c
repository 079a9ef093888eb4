/*
 * Epochs: the read side and thread registration. tp_epoch_enter/leave and
 * tp_deref/tp_publish for programs that do not opt in to the inline read
 * side (detail/epoch_inline.h), the TSan annotations that stand in for
 * liburcu's ordering, registration with liburcu (mixing with an
 * application's own registrations, docs/epoch.md), and the thread registry
 * with the thread-exit handler that takes a thread off it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "epoch/epoch_state_internal.h"
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

/* The read side's registration flag (detail/epoch_inline.h): set with
 * self.urcu_registered, by the thread itself. */
__thread int tp__epoch_registered;

/* ---- registration --------------------------------------------------------- */

void tp__epoch_list_self(void) {
  if (tp__epoch_self.listed) return;
  tp__epoch_init();
  tp__epoch_self.tid = (pid_t)syscall(SYS_gettid);
  pthread_setspecific(tp__epoch_exit_key, &tp__epoch_self); /* runs thread_exit at exit */
  pthread_mutex_lock(&tp__epoch_registry_lock);
  TP__LIST_PUSH(tp__epoch_threads, &tp__epoch_self, prev, next);
  tp__epoch_nthreads++;
  pthread_mutex_unlock(&tp__epoch_registry_lock);
  tp__epoch_self.listed = true;
}

/* Mixing with liburcu (docs/epoch.md): one liburcu registration per
 * thread, owned by whoever made it. A thread the application registered
 * first is adopted (watched, never unregistered by tidepool); a thread
 * whose tidepool registration the application removed
 * (urcu_memb_unregister_thread) is registered again here, on its next
 * enter. The test is liburcu's own flag, not ours: ours may be stale. */
int tp_epoch_register_thread(void) {
  tp__epoch_list_self();
  if (!tp__epoch_self.urcu_registered || !URCU_TLS(urcu_memb_reader).registered) {
    pthread_mutex_lock(&tp__epoch_registry_lock);
    if (!URCU_TLS(urcu_memb_reader).registered) {
      urcu_memb_register_thread();
      tp__epoch_self.urcu_owned = true;
    }
    tp__epoch_self.reader = &URCU_TLS(urcu_memb_reader);
    tp__epoch_self.urcu_registered = true;
    tp__epoch_registered = 1;
    pthread_mutex_unlock(&tp__epoch_registry_lock);
  }
  return 0;
}

/* Cold and out of line: inlined into tp_epoch_enter it would give the
 * out-of-line fast path a stack frame. */
TP_COLD void tp__epoch_register_slow(void) { tp_epoch_register_thread(); }

/* An enter on a thread liburcu does not count as registered: its first,
 * or the first after the application removed the registration tidepool
 * made (urcu_memb_unregister_thread). Register (tp_epoch_register_thread),
 * then enter. Cold and reached by a tail call, so the fast path below
 * needs no stack frame. */
static TP_COLD void enter_slow(void) {
  tp_epoch_register_thread();
  tp__epoch_read_lock_inline();
}

/* Both halves of the pair start on a cache line (TP__FAST_ALIGN): their
 * fast paths (51 and 46 bytes) then each sit in one line. Where the linker
 * happened to put them across a 64-byte boundary the pair measured
 * 3.3 ns against 2.5 ns for the same instructions (//bench read_pair,
 * 3 alternations, AMD EPYC). */
#define TP__FAST_ALIGN __attribute__((aligned(TP_CACHELINE)))

/* The read side for programs that do not opt in to the inline one
 * (epoch.h): liburcu's read lock, one call away, behind one registration
 * test. The test is liburcu's own flag, not tidepool's: it is what must
 * hold for a section to count (the application may have unregistered a
 * thread tidepool registered, docs/epoch.md), and a thread it shows
 * registered needs nothing from tidepool's registration to read (one the
 * application registered itself is adopted by tp_epoch_register_thread,
 * as documented). The opt-in inline path tests
 * tidepool's flag instead (it reads nothing of liburcu's but the nesting
 * counter); there the application calls tp_epoch_register_thread() again
 * after it unregistered a thread itself. */
TP__FAST_ALIGN void tp_epoch_enter(void) {
  if (TP_UNLIKELY(!URCU_TLS(urcu_memb_reader).registered)) {
    enter_slow();
    return;
  }
  tp__epoch_read_lock_inline();
}
/* The leave is the header's (detail/epoch_inline.h): liburcu's read
 * unlock with its membarrier flag read once. 13 instructions on the
 * outermost leave (objdump). */
TP__FAST_ALIGN void tp_epoch_leave(void) { tp__epoch_leave_inline(); }
int tp_epoch_in_section(void) { return tp__epoch_in_section_inline(); }
void tp__publish(void *ptr_addr, void *value) { tp__publish_inline(*(void **)ptr_addr, value); }
void *tp__deref(const void *ptr_addr) { return tp__deref_inline(*(void *const *)ptr_addr); }

/* TSan builds (epoch.h): a leave releases, the end of a grace period
 * acquires `tsan_sync`, so TSan sees that what a reader did inside a
 * section happens before what runs after the grace period (callbacks, and
 * through the pool's own annotations, the next owner of the memory). The
 * application may be built with TSan when the library is not, so the
 * runtime's entry points are weak references, not TP_TSAN_*: set whenever
 * a TSan runtime is linked (always in a TSan build of the library). */
char tp__epoch_tsan_sync;

void tp__epoch_read_lock_tsan(void) { urcu_memb_read_lock(); }

/* Also the way out of the sections of an exiting thread (thread_exit). */
void tp__epoch_read_unlock_tsan(void) {
  tsan_release(&tp__epoch_tsan_sync);
  urcu_memb_read_unlock();
}

void tp__epoch_unbalanced_leave(void) {
  if (TP_DEBUG) tp__fatal("tp_epoch_leave", NULL, "leave without a matching enter");
}
/* Takes thread t off the registry; whatever its queue still holds is the
 * reclaimer's to run and free. Caller holds registry_lock. */
void tp__epoch_unlist_locked(struct tp__epoch_thread *t) {
  TP__LIST_UNLINK(tp__epoch_threads, t, prev, next);
  tp__epoch_nthreads--;
  if (t->q) {
    tp__epoch_report_bytes(t->q);
    /* release: the reclaimer that sees orphaned sees the final tail. */
    __atomic_store_n(&t->q->orphaned, 1, __ATOMIC_RELEASE);
  }
}

void tp__epoch_thread_exit(void *arg) {
  struct tp__epoch_thread *t = arg;
  /* Ours to remove: tidepool made the registration and it is still there
   * (the application may have removed it itself: removing it twice trips
   * liburcu's assertion). One the application made is the application's. */
  bool ours = t->urcu_owned && URCU_TLS(urcu_memb_reader).registered;
  if (ours) {
    /* Leave any open section so no grace period waits for a dead thread. */
    while (tp__epoch_in_section_inline()) tp__epoch_read_unlock_tsan();
  }
  pthread_mutex_lock(&tp__epoch_registry_lock);
  if (ours) urcu_memb_unregister_thread();
  t->urcu_registered = t->urcu_owned = false;
  tp__epoch_registered = 0; /* thread_exit runs on the exiting thread */
  tp__epoch_unlist_locked(t);
  pthread_mutex_unlock(&tp__epoch_registry_lock);
  bool had_queue = t->q != NULL;
  t->q = NULL;
  t->listed = false;
  if (had_queue) tp__epoch_kick_reclaimer();
}
