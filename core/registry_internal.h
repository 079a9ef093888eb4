/*
 * Internal: a process-wide registry of objects of one kind (every pool,
 * every concurrent or observed arena, every heap) and its fork handling.
 *
 * Each object embeds a struct tp__reg_link; the registry lists them under
 * its own mutex (core/list_internal.h's list with a tail). It exists so
 * that fork() is safe for the locks the objects hold: a fork while another
 * thread holds one would leave the child's copy locked by a thread that
 * does not exist there. On the first link the registry registers its fork
 * handlers with core/fork.c at the owner's fork rank:
 *
 *   prepare  the registry's lock, then each element's locks, first element
 *            to last (the owner's lock callback; it waits for any holder);
 *   parent   each element's unlock callback, last element to first, then
 *            the registry's lock;
 *   child    the same, with the owner's child callback on each element
 *            just before its unlock (the child's one thread holds them all).
 *
 * Why that is enough: between prepare and the fork, the forking thread
 * holds the registry's lock, so no element is linked or unlinked, and
 * every element's locks, so no other thread is inside one of them at the
 * fork; the child's copies are held by its only thread and released by
 * the child handler. The element locks rank after the registry's lock and
 * are taken in one order (the list's), and the fork table runs registries
 * in rank order, so the handlers follow the lock order (fork_internal.h).
 *
 * Lock order in debug builds: the registry's lock is a named lock
 * (lockorder_site_internal.h), ranked in core/lockorder.c by the name the
 * owner gives it ("pool registry lock"), since its one call site here
 * serves every registry. The element locks are taken by the owner's
 * callbacks, in the owner's file, and ranked by those call sites as today;
 * their NEST group names the registry's lock, so the instances of one
 * class may be taken in list order under it.
 *
 * Linking pushes at the head and changes no other element's next, so a
 * walk from a head read under the lock (tp__registry_head) sees a fixed
 * list of live elements while the caller keeps elements from being
 * unlinked by other means (the pools' sweeper pass lock).
 */
#ifndef TIDEPOOL_REGISTRY_INTERNAL_H
#define TIDEPOOL_REGISTRY_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include "core/lockorder_site_internal.h"

/* Embedded in each registered object. */
struct tp__reg_link {
  struct tp__reg_link *prev, *next;
};

/* The owner's callbacks on one element (the containing object: see
 * TP__REG_OBJ). Called from the fork handlers, with the registry's lock
 * held; they take or release only the element's own locks. */
struct tp__registry_ops {
  void (*lock)(struct tp__reg_link *);   /* prepare: take the element's locks */
  void (*unlock)(struct tp__reg_link *); /* parent, child: release them */
  void (*child)(struct tp__reg_link *);  /* child, before unlock; may be NULL */
};

struct tp__registry {
  pthread_mutex_t lock;
  struct tp__reg_link *head, *tail; /* (lock) */
  const struct tp__registry_ops *ops;
  int fork_rank;
  _Atomic bool forks_on;  /* the fork handlers are registered */
  struct tp__lo_site lo;  /* the lock's rank in debug builds */
};

/* A static registry: TP__REGISTRY_INIT(TP__FORK_RANK_POOLS, "pool
 * registry lock", &ops), the name a named row of core/lockorder.c's table. */
#define TP__REGISTRY_INIT(fork_rank_, lock_name, ops_)                                 \
  {                                                                                    \
    .lock = PTHREAD_MUTEX_INITIALIZER, .ops = (ops_), .fork_rank = (fork_rank_),       \
    .lo = TP__LO_NAMED_SITE(lock_name)                                                 \
  }

/* The object of type `type` whose member `member` is the link l. */
#define TP__REG_OBJ(l, type, member) ((type *)(void *)((char *)(l) - offsetof(type, member)))

/* Registers r's fork handlers (once; later calls return at once). Link
 * calls it; call it earlier where a link happens under a lock that ranks
 * after the fork table's (the registration takes that one). */
void tp__registry_init(struct tp__registry *r);

/* Adds l (not in r) at the head; removes l (in r). Under r's lock. */
void tp__registry_link(struct tp__registry *r, struct tp__reg_link *l);
void tp__registry_unlink(struct tp__registry *r, struct tp__reg_link *l);

/* Calls fn(l, arg) for every element, first to last, holding r's lock (fn
 * may not link or unlink, nor take locks ranked before r's). Returns how
 * many it visited. */
size_t tp__registry_foreach(struct tp__registry *r, void (*fn)(struct tp__reg_link *l, void *arg),
                            void *arg);

/* The first element, read under r's lock, for a walk without it (see the
 * top of this file for when that is safe). */
struct tp__reg_link *tp__registry_head(struct tp__registry *r);

#endif /* TIDEPOOL_REGISTRY_INTERNAL_H */
