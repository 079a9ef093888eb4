/*
 * Internal: the pointer set every layer uses (a heap's precise root
 * slots).
 *
 * An open-addressing hash set of pointers with linear probing and
 * tombstones: a slot is empty (NULL), a member, or a tombstone (a removed
 * member, TP__PTRSET_TOMB), which keeps the probe chains through it
 * intact. The table's size is a power of two; it is rebuilt when members
 * and tombstones would fill more than half of it (doubled when members
 * alone fill more than a quarter, else rebuilt at its size to drop the
 * tombstones). NULL and TP__PTRSET_TOMB cannot be members. No locking: the
 * caller holds whatever guards the set. A zeroed struct is an empty set.
 */
#ifndef TIDEPOOL_PTRSET_INTERNAL_H
#define TIDEPOOL_PTRSET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#define TP__PTRSET_TOMB ((void *)1)

struct tp__ptrset {
  void **slots; /* cap entries: NULL, a member or TP__PTRSET_TOMB */
  size_t cap;   /* 0 or a power of two */
  size_t n;     /* members */
  size_t used;  /* members + tombstones */
};

/* Adds p: 0; -EEXIST if it is a member already; -EINVAL for NULL or
 * TP__PTRSET_TOMB; -ENOMEM (the set unchanged). errno is not set. */
int tp__ptrset_add(struct tp__ptrset *s, void *p);

/* Removes p: 0, or -ENOENT if it is not a member. */
int tp__ptrset_remove(struct tp__ptrset *s, const void *p);

/* Whether p is a member. */
bool tp__ptrset_has(const struct tp__ptrset *s, const void *p);

/* Iteration: the first member at or after table index *i, with *i moved
 * past it; NULL at the end. Start with *i = 0; adding or removing while
 * iterating is not allowed.
 *   for (size_t i = 0; (p = tp__ptrset_next(s, &i));) ... */
void *tp__ptrset_next(const struct tp__ptrset *s, size_t *i);

/* Frees the table; the set is empty (and usable) again. */
void tp__ptrset_free(struct tp__ptrset *s);

#endif /* TIDEPOOL_PTRSET_INTERNAL_H */
