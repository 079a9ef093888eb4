/*
 * Internal: a lock site of the lock-order checker (core/lockorder.c), the
 * one type of it that may be included anywhere (lockorder_internal.h,
 * which wraps the pthread_mutex calls, is included last by the files that
 * take locks).
 *
 * A site is where a lock is taken: its rank, name and NEST group are
 * looked up once in core/lockorder.c's table and cached here. Sites are
 * made by the wrapped pthread_mutex_lock at every call site (keyed by the
 * module of the file and the lock expression) or, for a lock of a core
 * utility that several modules use (core/registry.c's lock), by the lock's
 * owner: TP__LO_NAMED_SITE("pool registry lock") beside the lock, taken
 * with tp__lo_lock_named. A call-site key would make one lock of all the
 * registries; the name is looked up in the table's named rows, so locks
 * taken at the modules' call sites may nest under it (NEST). Defined in
 * every build (a registry's layout does not depend on TP_DEBUG); only
 * debug builds read it.
 */
#ifndef TIDEPOOL_LOCKORDER_SITE_INTERNAL_H
#define TIDEPOOL_LOCKORDER_SITE_INTERNAL_H

#include <stddef.h>

struct tp__lo_site {
  const char *file, *expr; /* expr NULL: a named site */
  int line;
  _Atomic int rank; /* 0 until resolved from the table; release-stored */
  const char *_Atomic name, *_Atomic nest; /* stored before rank */
};

/* A named site; __FILE__ and __LINE__ (the owner's) appear in reports. */
#define TP__LO_NAMED_SITE(lock_name) {__FILE__, NULL, __LINE__, 0, lock_name, NULL}

#endif /* TIDEPOOL_LOCKORDER_SITE_INTERNAL_H */
