/*
 * The lock-order checker of debug builds (see lockorder_internal.h): the
 * rank table and the per-thread held set.
 *
 * A site's rank is looked up once (module from the file's path, then the
 * lock expression; a named site, by its name) and cached in the site with relaxed atomics (every
 * thread computes the same value). The held set is thread-local: a thread
 * only ever checks its own locks, so nothing here is shared but the sites.
 */
#include <stdatomic.h>
#include "core/lockorder_internal.h"
#include "core/debug_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if TP_DEBUG
/* This file calls the real functions. */
#undef pthread_mutex_lock
#undef pthread_mutex_trylock
#undef pthread_mutex_unlock
#undef pthread_mutex_init

/* NEST: the fork handlers walk a registry (core/registry.c), holding its
 * lock (a named lock), and take every element's locks in registry order
 * (pool 1's slab and stats locks, then pool 2's, ...; every concurrent
 * arena's refill lock). Under the named registry lock, locks of the same
 * group are not ordered against each other (lockdep's nest_lock). */
#define NEST_ARENAS "arena registry lock"
#define NEST_POOLS "pool registry lock"
#define NEST_HEAPS "heap registry lock"

/* The documented order (fork_internal.h's ranks, refined). The module is
 * the first of these words found in the site's file path. A row with no
 * module is a named lock (TP__LO_NAMED_SITE: the registries of
 * core/registry.c), found by its name. */
static const struct rank_entry {
  const char *module, *expr; /* NULL, NULL: a named lock */
  int rank;
  const char *name;
  const char *nest; /* see NEST */
} ranks[] = {
    /* Below the fork table: pools are created (and register their fork
     * handlers) under it; no fork handler takes it (lookups take no lock,
     * a forked child re-initializes it: arena/arena_chunks.c). */
    {"arena", "&chunk_pools_lock", 1, "arena chunk-pool setup lock", NULL},
    {"fork", "&hooks_lock", 2, "fork handler table lock", NULL},
    {"epoch", "&tp__epoch_gp_lock", 10, "epoch grace-period lock", NULL},
    {"epoch", "&tp__epoch_consume_lock", 12, "epoch consume lock", NULL},
    /* 15: an epoch read section; 16: an attached heap mutator. */
    {"sweeper", "&ctl_lock", 18, "sweeper start/stop lock", NULL},
    {"pool", "&tp__pool_pass_lock", 20, "sweeper pass lock", NULL},
    {"gc", "&tp__pool_pass_lock", 20, "sweeper pass lock", NULL},
    /* gc/arena_roots.c: its path names "arena" first. */
    {"arena", "&arena_roots_lock", 22, "heap arena-roots lock", NULL},
    {NULL, NULL, 24, "arena registry lock", NULL},
    {"arena", "&a->lock", 25, "concurrent arena refill lock", NEST_ARENAS},
    {NULL, NULL, 30, "pool registry lock", NULL},
    {"pool", "&p->lock", 32, "pool slab lock", NEST_POOLS},
    {"pool", "&p->stats_lock", 34, "pool stats lock", NEST_POOLS},
    {NULL, NULL, 38, "heap registry lock", NULL},
    {"gc", "&h->lock", 40, "heap lock", NEST_HEAPS},
    {"gc", "&h->sp_lock", 42, "heap handshake lock", NEST_HEAPS},
    {"gc", "&h->satb_lock", 44, "heap SATB log lock", NEST_HEAPS},
    /* gc/mark_parallel.c: taken by markers, also in pause 2 (h->lock held). */
    {"gc", "&ws->lock", 46, "heap mark work lock", NEST_HEAPS},
    {"gc", "&h->mw.lock", 46, "heap mark work lock", NEST_HEAPS},
    {"epoch", "&tp__epoch_registry_lock", 50, "epoch registry lock", NULL},
    {"epoch", "&tp__epoch_state_lock", 52, "epoch reclaimer state lock", NULL},
    {"sweeper", "&wake_lock", 60, "sweeper wake-up lock", NULL},
};

static const char *const modules[] = {"sweeper", "epoch", "arena", "fork", "gc", "pool"};

static const char *module_of(const char *file) {
  for (size_t i = 0; i < sizeof modules / sizeof *modules; i++)
    if (strstr(file, modules[i])) return modules[i];
  return "?";
}

static void resolve(struct tp__lo_site *s) {
  if (atomic_load_explicit(&s->rank, memory_order_acquire)) return;
  const char *mod = module_of(s->file);
  const char *named = s->expr ? NULL : atomic_load_explicit(&s->name, memory_order_relaxed);
  for (size_t i = 0; i < sizeof ranks / sizeof *ranks; i++) {
    if (named ? !ranks[i].module && strcmp(ranks[i].name, named) == 0
              : ranks[i].module && strcmp(ranks[i].module, mod) == 0 &&
                    strcmp(ranks[i].expr, s->expr) == 0) {
      /* A named site's name becomes the table's (NEST compares pointers). */
      atomic_store_explicit(&s->name, ranks[i].name, memory_order_relaxed);
      atomic_store_explicit(&s->nest, ranks[i].nest, memory_order_relaxed);
      /* release: a thread that sees the rank sees the name. */
      atomic_store_explicit(&s->rank, ranks[i].rank, memory_order_release);
      return;
    }
  }
  fprintf(stderr, "tidepool: lock order: %s:%d: lock %s has no rank (core/lockorder.c)\n",
          s->file, s->line, named ? named : s->expr);
  fflush(stderr);
  abort();
}

#define MAX_HELD 64
struct held {
  const void *lock;
  int rank;
  const char *name, *nest;
  const char *file;
  int line;
  int pseudo; /* not a mutex: only waits check it */
};
static __thread struct held held[MAX_HELD];
static __thread int nheld;

TP_COLD __attribute__((noreturn)) static void violation(const char *what, int rank,
                                                         const char *file, int line,
                                                         const struct held *h) {
  fprintf(stderr,
          "tidepool: lock order violation: %s (rank %d, %s:%d) while holding %s (rank %d, "
          "%s:%d)\n",
          what, rank, file, line, h->name, h->rank, h->file, h->line);
  fflush(stderr);
  abort();
}

static void push(const void *lock, int rank, const char *name, const char *nest,
                 const char *file, int line, int pseudo) {
  if (nheld == MAX_HELD) tp__fatal("tp__lo", lock, "lock order: more than 64 locks held");
  held[nheld++] = (struct held){lock, rank, name, nest, file, line, pseudo};
}

static void pop(const void *lock) {
  for (int i = nheld - 1; i >= 0; i--) {
    if (held[i].lock == lock) {
      memmove(&held[i], &held[i + 1], (size_t)(nheld - 1 - i) * sizeof held[0]);
      nheld--;
      return;
    }
  }
}

/* Records m as held, from site s (resolved by this thread: the relaxed
 * loads see what resolve's release store, or our own stores, published). */
static void push_site(pthread_mutex_t *m, struct tp__lo_site *s) {
  push(m, atomic_load_explicit(&s->rank, memory_order_relaxed), atomic_load_explicit(&s->name, memory_order_relaxed),
       atomic_load_explicit(&s->nest, memory_order_relaxed), s->file, s->line, 0);
}

static void check_acquire(const pthread_mutex_t *m, struct tp__lo_site *s) {
  resolve(s);
  int rank = atomic_load_explicit(&s->rank, memory_order_acquire);
  const char *name = atomic_load_explicit(&s->name, memory_order_relaxed);
  const char *nest = atomic_load_explicit(&s->nest, memory_order_relaxed);
  int nested = 0;
  for (int i = 0; nest && i < nheld; i++) nested |= held[i].name == nest;
  for (int i = 0; i < nheld; i++) {
    const struct held *h = &held[i];
    if (h->pseudo || (nested && h->nest == nest && h->lock != m)) continue;
    if (h->lock == m) {
      char what[128];
      snprintf(what, sizeof what, "taking %s again", name);
      violation(what, rank, s->file, s->line, h);
    }
    /* Instances of one class (same name) may nest: registry-order walks. */
    if (h->rank > rank || (h->rank == rank && h->name != name)) {
      char what[128];
      snprintf(what, sizeof what, "taking %s", name);
      violation(what, rank, s->file, s->line, h);
    }
  }
}

int tp__lo_lock(pthread_mutex_t *m, struct tp__lo_site *s) {
  check_acquire(m, s);
  int rc = pthread_mutex_lock(m);
  if (rc == 0) push_site(m, s);
  return rc;
}

int tp__lo_trylock(pthread_mutex_t *m, struct tp__lo_site *s) {
  /* A trylock never waits, so it cannot deadlock: no order check. */
  resolve(s);
  int rc = pthread_mutex_trylock(m);
  if (rc == 0) push_site(m, s);
  return rc;
}

int tp__lo_unlock(pthread_mutex_t *m) {
  pop(m);
  return pthread_mutex_unlock(m);
}

int tp__lo_init(pthread_mutex_t *m, const pthread_mutexattr_t *a) {
  pop(m); /* a fork child handler re-initializing a lock this thread held */
  return pthread_mutex_init(m, a);
}

void tp__lo_hold(const void *key) {
  push(key, TP__LO_RANK_MUTATOR, "attached heap mutator", NULL, "gc/mutators.c", 0, 1);
}

void tp__lo_drop(const void *key) { pop(key); }

void tp__lo_wait(enum tp__lo_wait_kind kind, const pthread_mutex_t *cv_mutex, bool in_section) {
  static const struct held section = {NULL, TP__LO_RANK_SECTION, "an epoch read section",
                                      NULL, "core/epoch.h", 0, 1};
  const char *what = kind == TP__LO_WAIT_GRACE_PERIOD ? "waiting for an epoch grace period"
                                                      : "parking for a heap collection";
  /* A grace period may be waited for holding only what ranks below a read
   * section (readers take everything above); parking may hold a read
   * section and the handshake lock it sleeps on, nothing else. */
  int limit = kind == TP__LO_WAIT_GRACE_PERIOD ? TP__LO_RANK_SECTION : TP__LO_RANK_MUTATOR;
  if (in_section && TP__LO_RANK_SECTION >= limit)
    violation(what, limit, "", 0, &section);
  for (int i = 0; i < nheld; i++) {
    const struct held *h = &held[i];
    if (h->lock == cv_mutex) continue;
    /* A parked mutator has given its own "lock" up to the collector. */
    if (kind == TP__LO_WAIT_COLLECTION && h->rank == TP__LO_RANK_MUTATOR && h->pseudo) continue;
    if (h->rank >= limit) violation(what, limit, "", 0, h);
  }
}
#else
typedef int tp__lockorder_unused; /* ISO C: a translation unit is not empty */
#endif
