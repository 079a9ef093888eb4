/*
 * The growable array (array_internal.h): capacity doubling with overflow
 * checks, on tp__realloc.
 */
#define _GNU_SOURCE
#include "core/array_internal.h"
#include "core/fault_internal.h"

#include <stdint.h>

void *tp__array_grow(void *arr, size_t *cap, size_t need, size_t elem, size_t min_cap) {
  if (need <= *cap) return arr;
  size_t c = *cap ? *cap : (min_cap ? min_cap : 1);
  while (c < need) {
    if (c > SIZE_MAX / 2) {
      errno = ENOMEM;
      return NULL;
    }
    c *= 2;
  }
  if (elem && c > SIZE_MAX / elem) {
    errno = ENOMEM;
    return NULL;
  }
  void *p = tp__realloc(arr, c * elem);
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  *cap = c;
  return p;
}
