/*
 * Internal: the intrusive doubly-linked list every layer uses (threads,
 * registries of pools, arenas and heaps, a pool's available slabs, a heap's
 * regions, large objects, weak references and thread records).
 *
 * A list is a head pointer (and, for the TP__LIST2_ forms, a tail pointer)
 * to nodes that carry their own prev and next fields, named by the caller
 * (a node may sit on several lists: an arena-root link has hprev/hnext for
 * its heap's list beside anext for its arena's, gc/arena_roots.c).
 * The first node's prev and the last node's next are NULL. No locking: the
 * caller holds whatever guards the list. The macros evaluate their
 * arguments more than once: pass plain lvalues.
 */
#ifndef TIDEPOOL_LIST_INTERNAL_H
#define TIDEPOOL_LIST_INTERNAL_H

#include <stddef.h>

/* node becomes the first node of the list at head. */
#define TP__LIST_PUSH(head, node, prev, next) \
  do {                                        \
    (node)->prev = NULL;                      \
    (node)->next = (head);                    \
    if (head) (head)->prev = (node);          \
    (head) = (node);                          \
  } while (0)

/* node leaves the list at head (its own links are left as they were). */
#define TP__LIST_UNLINK(head, node, prev, next)          \
  do {                                                   \
    if ((node)->prev) (node)->prev->next = (node)->next; \
    else (head) = (node)->next;                          \
    if ((node)->next) (node)->next->prev = (node)->prev; \
  } while (0)

/* The same for a list with a tail pointer. */
#define TP__LIST2_PUSH_FRONT(head, tail, node, prev, next) \
  do {                                                     \
    (node)->prev = NULL;                                   \
    (node)->next = (head);                                 \
    if (head) (head)->prev = (node);                       \
    else (tail) = (node);                                  \
    (head) = (node);                                       \
  } while (0)

#define TP__LIST2_PUSH_BACK(head, tail, node, prev, next) \
  do {                                                    \
    (node)->next = NULL;                                  \
    (node)->prev = (tail);                                \
    if (tail) (tail)->next = (node);                      \
    else (head) = (node);                                 \
    (tail) = (node);                                      \
  } while (0)

#define TP__LIST2_UNLINK(head, tail, node, prev, next)   \
  do {                                                   \
    if ((node)->prev) (node)->prev->next = (node)->next; \
    else (head) = (node)->next;                          \
    if ((node)->next) (node)->next->prev = (node)->prev; \
    else (tail) = (node)->prev;                          \
  } while (0)

#endif /* TIDEPOOL_LIST_INTERNAL_H */
