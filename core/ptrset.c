/*
 * The pointer set (ptrset_internal.h): open addressing, linear probing,
 * tombstones; a Fibonacci hash of the pointer (the golden-ratio multiplier
 * spreads the aligned, clustered addresses callers store over the table's
 * bits).
 */
#define _GNU_SOURCE
#include "core/ptrset_internal.h"
#include "core/fault_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#define MIN_CAP 16

static size_t slot_of(const void *p, size_t cap) {
  return (size_t)(((uintptr_t)p * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

/* Rebuilds the table with cap slots, without tombstones. false on ENOMEM
 * (the set unchanged). */
static bool rehash(struct tp__ptrset *s, size_t cap) {
  void **t = tp__calloc(cap, sizeof *t);
  if (!t) return false;
  for (size_t i = 0; i < s->cap; i++) {
    void *p = s->slots[i];
    if (!p || p == TP__PTRSET_TOMB) continue;
    size_t j = slot_of(p, cap);
    while (t[j]) j = (j + 1) & (cap - 1);
    t[j] = p;
  }
  free(s->slots);
  s->slots = t;
  s->cap = cap;
  s->used = s->n;
  return true;
}

int tp__ptrset_add(struct tp__ptrset *s, void *p) {
  if (!p || p == TP__PTRSET_TOMB) return -EINVAL;
  if ((s->used + 1) * 2 > s->cap) {
    size_t cap = !s->cap ? MIN_CAP : s->n * 4 > s->cap ? s->cap * 2 : s->cap;
    if (cap < s->cap || !rehash(s, cap)) return -ENOMEM;
  }
  size_t j = slot_of(p, s->cap), tomb = SIZE_MAX;
  for (; s->slots[j]; j = (j + 1) & (s->cap - 1)) {
    if (s->slots[j] == p) return -EEXIST;
    if (s->slots[j] == TP__PTRSET_TOMB && tomb == SIZE_MAX) tomb = j;
  }
  if (tomb != SIZE_MAX) {
    j = tomb;
  } else {
    s->used++;
  }
  s->slots[j] = p;
  s->n++;
  return 0;
}

/* The index of p's slot, or SIZE_MAX. */
static size_t find(const struct tp__ptrset *s, const void *p) {
  if (!s->cap || !p || p == TP__PTRSET_TOMB) return SIZE_MAX;
  for (size_t j = slot_of(p, s->cap); s->slots[j]; j = (j + 1) & (s->cap - 1))
    if (s->slots[j] == p) return j;
  return SIZE_MAX;
}

int tp__ptrset_remove(struct tp__ptrset *s, const void *p) {
  size_t j = find(s, p);
  if (j == SIZE_MAX) return -ENOENT;
  s->slots[j] = TP__PTRSET_TOMB;
  s->n--;
  return 0;
}

bool tp__ptrset_has(const struct tp__ptrset *s, const void *p) { return find(s, p) != SIZE_MAX; }

void *tp__ptrset_next(const struct tp__ptrset *s, size_t *i) {
  for (; *i < s->cap; ++*i) {
    void *p = s->slots[*i];
    if (p && p != TP__PTRSET_TOMB) {
      ++*i;
      return p;
    }
  }
  return NULL;
}

void tp__ptrset_free(struct tp__ptrset *s) {
  free(s->slots);
  *s = (struct tp__ptrset){0};
}
