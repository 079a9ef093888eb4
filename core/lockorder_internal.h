/*
 * Internal: the lock order, checked in debug builds.
 *
 * Every library mutex has a rank (the table in core/lockorder.c, keyed by
 * the module and the lock expression at the call site, or, for a lock of
 * a core utility that serves several modules, by a name its owner gives:
 * tp__lo_lock_named). A thread holding a
 * lock of rank r may only take locks of higher rank (instances of one lock
 * class may nest: the fork handlers take every pool's and every heap's
 * lock in registry order). In TP_DEBUG builds each library file includes
 * this header last, which routes pthread_mutex_lock/trylock/unlock/init
 * through a checker keeping a per-thread held set; a violation aborts
 * naming both locks, and a lock missing from the table aborts too (every
 * acquisition is checked). Other builds compile the plain calls.
 *
 * Waits that cross modules are part of the order (tp__lo_wait):
 *   - an epoch grace period (synchronize, barrier, a retire over the cap)
 *     waits for every thread in a read section, so it may only be waited
 *     for holding locks ranked below a read section;
 *   - an attached, running heap mutator is waited for by every collection,
 *     so it is a "lock" the thread holds from attach to detach, released
 *     across blocking sections (tp__lo_hold/tp__lo_drop): waiting for a
 *     grace period while holding it deadlocks against a thread parked
 *     inside its read section (issue 14, fault 3);
 *   - parking for a collection (safepoints, exit handlers) waits for the
 *     collector, which takes pool locks: only the read section and the
 *     handshake lock may be held there;
 *   - fork runs the prepare handlers from tp__fork_register's table (the
 *     fork handler lock, rank 1): forking holding a library lock aborts.
 * The read section itself is not tracked (its enter/leave are inline); the
 * checker asks tp_epoch_in_section() at each wait.
 */
#ifndef TIDEPOOL_LOCKORDER_INTERNAL_H
#define TIDEPOOL_LOCKORDER_INTERNAL_H

#include <tidepool/common.h>
#include <pthread.h>
#include <stdbool.h>
#include "core/lockorder_site_internal.h"

#ifndef TP_DEBUG
#define TP_DEBUG 0
#endif

/* Ranks of what is not a mutex (see the table in lockorder.c for the rest). */
enum {
  TP__LO_RANK_SECTION = 15, /* an epoch read section */
  TP__LO_RANK_MUTATOR = 16, /* an attached heap thread, not blocking */
};

/* What a thread waits for across modules. */
enum tp__lo_wait_kind {
  TP__LO_WAIT_GRACE_PERIOD, /* all read sections to end */
  TP__LO_WAIT_COLLECTION,   /* a heap collection to end (parking) */
};

#if TP_DEBUG
int tp__lo_lock(pthread_mutex_t *m, struct tp__lo_site *s);
int tp__lo_trylock(pthread_mutex_t *m, struct tp__lo_site *s);
int tp__lo_unlock(pthread_mutex_t *m);
int tp__lo_init(pthread_mutex_t *m, const pthread_mutexattr_t *a);
/* Checks a cross-module wait against what the thread holds (except the
 * mutex of the condition variable the wait sleeps on, which may be NULL). */
/* in_section: the caller is inside an epoch read section (the caller says
 * so: core sits below the epoch layer). */
void tp__lo_wait(enum tp__lo_wait_kind kind, const pthread_mutex_t *cv_mutex, bool in_section);
/* The heap-mutator "lock" (one per thread and heap, keyed by `key`). */
void tp__lo_hold(const void *key);
void tp__lo_drop(const void *key);

#define TP__LO_SITE(m)                                                              \
  __extension__({                                                                   \
    static struct tp__lo_site tp__lo_site_ = {__FILE__, #m, __LINE__, 0, NULL, NULL}; \
    &tp__lo_site_;                                                                  \
  })
/* A named lock (lockorder_site_internal.h): its owner's site, not the
 * call site's. */
#define tp__lo_lock_named(m, s) tp__lo_lock((m), (s))

#define pthread_mutex_lock(m) tp__lo_lock((m), TP__LO_SITE(m))
#define pthread_mutex_trylock(m) tp__lo_trylock((m), TP__LO_SITE(m))
#define pthread_mutex_unlock(m) tp__lo_unlock(m)
#define pthread_mutex_init(m, a) tp__lo_init((m), (a))
#else
#define tp__lo_lock_named(m, s) pthread_mutex_lock(m)
#define tp__lo_wait(kind, cv_mutex, in_section) ((void)(kind), (void)(cv_mutex), (void)(in_section))
#define tp__lo_hold(key) ((void)(key))
#define tp__lo_drop(key) ((void)(key))
#endif

#endif /* TIDEPOOL_LOCKORDER_INTERNAL_H */
