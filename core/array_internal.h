/*
 * Internal: the growable array every layer uses (a heap's conservative
 * root ranges and finalizer lists, tp_stats_print's tables).
 *
 * An array is the caller's own three fields: a pointer to its elements,
 * a count and a capacity, named as the caller likes. TP__ARRAY_RESERVE
 * makes room for `need` elements, doubling the capacity from `min_cap`,
 * through tp__realloc (so fault injection reaches it). No locking: the
 * caller holds whatever guards the array. The macro evaluates its
 * arguments more than once: pass plain lvalues.
 */
#ifndef TIDEPOOL_ARRAY_INTERNAL_H
#define TIDEPOOL_ARRAY_INTERNAL_H

#include <errno.h>
#include <stddef.h>

/* The array arr (capacity *cap elements of elem bytes) grown to hold at
 * least need elements: the capacity doubles from min_cap (at least 1)
 * until it does. Returns the array, moved or not (arr itself when it
 * already holds need), and sets *cap; NULL with errno ENOMEM (the
 * capacity would overflow, or realloc failed), arr and *cap unchanged. */
void *tp__array_grow(void *arr, size_t *cap, size_t need, size_t elem, size_t min_cap);

/* Room for need elements in arr (capacity cap, an lvalue): 0, or -ENOMEM
 * (errno ENOMEM) with arr and cap unchanged. */
#define TP__ARRAY_RESERVE(arr, cap, need, min_cap)                                    \
  __extension__({                                                                     \
    void *tp__grown = tp__array_grow((arr), &(cap), (need), sizeof *(arr), (min_cap)); \
    if (tp__grown) (arr) = tp__grown;                                                 \
    tp__grown ? 0 : -ENOMEM;                                                          \
  })

#endif /* TIDEPOOL_ARRAY_INTERNAL_H */
