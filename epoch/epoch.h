/*
 * <tidepool/epoch.h> — epoch-protected reads and deferred reclamation, on
 * liburcu (urcu-memb flavour: membarrier-based, no signals).
 *
 * Model. A reader brackets its accesses to shared data with
 * tp_epoch_enter() / tp_epoch_leave() (a read section). A writer unlinks an
 * object (tp_publish of a new version) and retires the old one; the
 * retire's callback runs after a grace period: once every read section that
 * could have seen the old object has ended. Read sections never block and
 * never wait. By default tp_epoch_enter/leave/in_section, tp_deref and
 * tp_publish are calls into libtidepool (which runs liburcu's inline read
 * side inside); see "Inline read side" below for the opt-in that inlines
 * them into the caller.
 *
 *   // reader, any thread                 // writer
 *   tp_epoch_enter();                     struct cfg *old = current;
 *   struct cfg *c = tp_deref(current);    tp_publish(current, fresh);
 *   use(c);                               tp_pool_retire(cfg_pool, old);
 *   tp_epoch_leave();
 *
 * tp_pool_retire (a pool put after a grace period) is declared in
 * <tidepool/pool.h>. Retires are batched per thread (no call_rcu per object): a retire appends
 * to the calling thread's queue (a few stores, no atomic read-modify-write)
 * and a background reclaimer runs grace periods and callbacks, woken by the
 * backlog (and every `interval_ms` while anything is pending, and for four
 * intervals after, before it sleeps).
 *
 * Bounded memory. Retired-but-not-freed bytes are capped (64 MiB by default,
 * tp_epoch_config or TIDEPOOL_RETIRE_CAP). A retire past the cap makes the calling
 * thread wait for a grace period itself and free its own backlog; inside a
 * read section that wait could never end, so the retire fails instead with
 * -EDEADLK (errno EDEADLK, stats.cap_failures; abort in debug builds) and
 * the caller keeps the object. The cap is approximate by at most 64 KiB plus
 * one retire per retiring thread (retires are counted in per-thread
 * batches). A retire from inside a retire callback never waits (it is
 * accepted past the cap). A reader that stays inside one section longer
 * than stall_ms while a grace period waits for it is reported
 * (stats.stalls, and the optional callback with its thread id).
 *
 * Threads register on first use and unregister when they exit; a thread that
 * exits inside a section is taken out of it first. Background threads block
 * all signals. fork(): the child may go on using epochs, pools and arenas;
 * threads other than the forking one are gone, so their sections end and
 * their queues are drained by the child's own reclaimer (started on demand).
 * Do not fork inside a read section: no grace period may be in progress
 * across fork (liburcu's locks), and one may be waiting for the forking
 * thread; fork then waits up to stall_ms and aborts with a message.
 *
 * Mixing with liburcu (docs/epoch.md has the contract): a thread has one
 * liburcu registration, owned by whoever made it. One the application made
 * first is used (tp_epoch_register_thread adopts it); one tidepool made
 * serves the application's liburcu calls too, may be removed by the
 * application (tidepool registers again on the next enter), and must not be
 * made again with urcu_memb_register_thread (liburcu asserts).
 *
 * Thread safety: every function here is safe to call concurrently. tp_epoch_synchronize
 * and tp_epoch_barrier may not be called inside a read section (they return
 * -EDEADLK) nor from a retire callback (-EDEADLK).
 */
#ifndef TIDEPOOL_EPOCH_H
#define TIDEPOOL_EPOCH_H

#include <tidepool/common.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Inline read side (opt-in). liburcu's read side is LGPL-2.1 code; liburcu
 * itself inlines it only into programs that define _LGPL_SOURCE, and so does
 * tidepool: a program that defines _LGPL_SOURCE (or TP_EPOCH_INLINE, to opt
 * in for tidepool alone) before including this header gets tp_epoch_enter,
 * tp_epoch_leave, tp_epoch_in_section, tp_deref and tp_publish inline from
 * <tidepool/detail/epoch_inline.h>, which includes liburcu's static
 * headers. Without it this header includes no liburcu header and the
 * five are calls into libtidepool. Both forms may be mixed in one program.
 */
#if defined(_LGPL_SOURCE) || defined(TP_EPOCH_INLINE)
#define TP__EPOCH_INLINE 1
#include <tidepool/detail/epoch_inline.h>
#else
#define TP__EPOCH_INLINE 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_epoch_config {
  size_t retire_cap;     /* bytes retired and not yet freed; 0 = default
                            (TIDEPOOL_RETIRE_CAP at start-up, else 64 MiB) */
  unsigned interval_ms;  /* reclaimer timer while anything is pending;
                            0 = default (1 ms) */
  unsigned stall_ms;     /* report readers in one section longer than this
                            while a grace period waits; 0 = default (1000) */
  /* Optional: called from the watchdog thread for each stalled reader, with
   * its Linux thread id and how long it has been stalled. Must not block. */
  void (*on_stall)(pid_t tid, uint64_t stalled_ms, void *arg);
  void *on_stall_arg;
} tp_epoch_config;

typedef struct tp_epoch_stats {
  uint64_t retired;        /* retires accepted, ever */
  uint64_t freed;          /* callbacks run, ever */
  uint64_t pending;        /* retired, callback not yet run */
  uint64_t pending_bytes;  /* estimate the cap is checked against */
  uint64_t retire_cap;     /* the cap in force */
  uint64_t grace_periods;  /* grace periods tidepool waited for */
  uint64_t cap_waits;      /* retires that waited for a grace period */
  uint64_t cap_failures;   /* retires refused (over the cap inside a section) */
  uint64_t stalls;         /* stalled readers reported */
  uint64_t readers;        /* threads registered now */
} tp_epoch_stats;

/* Sets the cap, timer and stall reporting (NULL = defaults). 0, or -EINVAL
 * (errno) for a retire_cap above INT64_MAX, leaving the settings as they
 * were. Takes effect for retires and grace periods that start afterwards.
 * Safe to call concurrently. */
TP_API int tp_epoch_configure(const tp_epoch_config *cfg);

/* Registers the calling thread (what tp_epoch_enter does on first use); a
 * thread the application registered with liburcu is adopted, not
 * registered again. 0 or -errno. Safe to call concurrently. */
TP_API int tp_epoch_register_thread(void);
#if !TP__EPOCH_INLINE
/*
 * Begins a read section; nestable. A call into libtidepool (see "Inline
 * read side" above): one registration test (liburcu's flag), then
 * liburcu's read lock (a load and a store of thread-local data): 12
 * instructions with the return, no stack frame; tp_epoch_leave is 13 (gcc
 * 12 -O2, objdump of a program linking libtidepool.a). Safe to call
 * concurrently; never blocks.
 */
TP_API void tp_epoch_enter(void);

/*
 * Ends the innermost read section. A leave without an enter is ignored (and
 * aborts in debug builds). Safe to call concurrently; never blocks.
 */
TP_API void tp_epoch_leave(void);

/* 1 inside a read section, else 0. */
TP_API int tp_epoch_in_section(void);

/* Publishes `value` into the pointer `ptr_lvalue` for readers (release
 * store); read it inside a section with tp_deref (dependency-ordered load).
 * The assignment is type-checked (unevaluated) as `ptr_lvalue = value`. */
#define tp_publish(ptr_lvalue, value)                                          \
  (tp__publish((void *)&(ptr_lvalue), (void *)(value)), (void)sizeof((ptr_lvalue) = (value)))
#define tp_deref(ptr) ((__typeof__(ptr))tp__deref((const void *)&(ptr)))
#endif

/* The out-of-line tp_publish/tp_deref (not API). */
TP_API void tp__publish(void *ptr_addr, void *value);
TP_API void *tp__deref(const void *ptr_addr);

/* Waits for every read section that began before the call to end.
 * 0; -EDEADLK (errno) inside a read section or a retire callback. */
TP_API int tp_epoch_synchronize(void);

/* Calls fn(obj, arg) after a grace period, on the reclaimer thread (or, past
 * the cap, on the calling thread). `bytes` is what the cap counts (the
 * plain form counts 64). 0; -EINVAL (NULL fn); -EDEADLK over the cap inside
 * a read section (the object is not retired); -ENOMEM; -EAGAIN when no
 * reclaimer thread runs and none can be started (thread limit, memory):
 * the object is not retired, nothing is queued that nobody would free. */
TP_API int tp_epoch_retire(void *obj, void (*fn)(void *obj, void *arg), void *arg);
TP_API int tp_epoch_retire_sized(void *obj, size_t bytes,
                                 void (*fn)(void *obj, void *arg), void *arg);

/* Waits until the callback of every retire issued (by any thread) before the
 * call has run. 0; -EDEADLK inside a read section or a retire callback.
 * Never waits for a reclaimer that cannot start: it then runs the pending
 * callbacks on the calling thread (so tp_pool_destroy never hangs either). */
TP_API int tp_epoch_barrier(void);

/* "membarrier" (liburcu memb with sys_membarrier), or "mb" when the kernel
 * lacks membarrier and every read section pays a full fence. */
TP_API const char *tp_epoch_mode(void);

/* 0, or -EINVAL for NULL. Takes the registry lock for a walk over the
 * retire queues (not lock-free); the counters are read one by one, not as
 * a snapshot. Safe to call concurrently. */
TP_API int tp_epoch_read_stats(tp_epoch_stats *out);

/* Checks the epoch's structures: every retire queue (head <= tail, the
 * pending entries reachable through published segment links, each with a
 * callback) and the thread registry. 0; -EINVAL (errno) with a message on
 * stderr naming what is broken; -EDEADLK from a retire callback. Safe to
 * call concurrently (it takes the consumer and registry locks). Debug
 * builds run it after every reclaim cycle. */
TP_API int tp_epoch_check(void);

#ifdef __cplusplus
}
#endif

#endif /* TIDEPOOL_EPOCH_H */
