/*
 * The process-wide registry and its fork handlers (registry_internal.h
 * holds the algorithm and why it is correct).
 */
#include "core/registry_internal.h"
#include "core/fork_internal.h"
#include "core/list_internal.h"

#include <stdatomic.h>
#include "core/lockorder_internal.h" /* last: wraps the pthread_mutex calls */

static void fork_prepare(void *arg) {
  struct tp__registry *r = arg;
  tp__lo_lock_named(&r->lock, &r->lo);
  for (struct tp__reg_link *l = r->head; l; l = l->next) r->ops->lock(l);
}

static void fork_parent(void *arg) {
  struct tp__registry *r = arg;
  for (struct tp__reg_link *l = r->tail; l; l = l->prev) r->ops->unlock(l);
  pthread_mutex_unlock(&r->lock);
}

static void fork_child(void *arg) {
  struct tp__registry *r = arg;
  for (struct tp__reg_link *l = r->tail; l; l = l->prev) {
    if (r->ops->child) r->ops->child(l);
    r->ops->unlock(l);
  }
  pthread_mutex_unlock(&r->lock);
}

void tp__registry_init(struct tp__registry *r) {
  /* acquire: pairs with the release below; a thread that skips the
   * registration sees the hooks in the table (and so does its fork). */
  if (atomic_load_explicit(&r->forks_on, memory_order_acquire)) return;
  /* Racing callers all register: core/fork.c keeps one, and each returns
   * once it is in the table. */
  tp__fork_register_arg(r->fork_rank, fork_prepare, fork_parent, fork_child, r);
  atomic_store_explicit(&r->forks_on, true, memory_order_release);
}

void tp__registry_link(struct tp__registry *r, struct tp__reg_link *l) {
  tp__registry_init(r);
  tp__lo_lock_named(&r->lock, &r->lo);
  TP__LIST2_PUSH_FRONT(r->head, r->tail, l, prev, next);
  pthread_mutex_unlock(&r->lock);
}

void tp__registry_unlink(struct tp__registry *r, struct tp__reg_link *l) {
  tp__lo_lock_named(&r->lock, &r->lo);
  TP__LIST2_UNLINK(r->head, r->tail, l, prev, next);
  pthread_mutex_unlock(&r->lock);
}

size_t tp__registry_foreach(struct tp__registry *r, void (*fn)(struct tp__reg_link *, void *),
                            void *arg) {
  size_t n = 0;
  tp__lo_lock_named(&r->lock, &r->lo);
  for (struct tp__reg_link *l = r->head; l; l = l->next, n++) fn(l, arg);
  pthread_mutex_unlock(&r->lock);
  return n;
}

struct tp__reg_link *tp__registry_head(struct tp__registry *r) {
  tp__lo_lock_named(&r->lock, &r->lo);
  struct tp__reg_link *head = r->head;
  pthread_mutex_unlock(&r->lock);
  return head;
}
