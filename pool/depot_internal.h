/*
 * Internal: magazines (batches of free objects) and the lock-free stacks
 * that hold them.
 *
 * A magazine is a 4 KiB block holding up to TP__MAG_CAP object pointers.
 * A pool's depot is a stack of full magazines; one process-wide stack holds
 * empty ones. Magazines live in 2 MiB segments reserved as they are first
 * needed (see depot.c) and are never unmapped, so a thread may read a magazine's link after another thread has
 * popped it (type-stable memory); the stacks use a 64-bit head of
 * (tag << 32 | index) and bump the tag on every successful CAS, so a
 * pop that read a stale link fails its CAS instead of corrupting the stack
 * (no ABA). Links live in a side array so a magazine's own page is never
 * read by anyone but its owner.
 *
 * Synchronization table (any stack):
 *   push, pop, take_all — safe to call concurrently with each other, from
 *   any number of threads. Linearization points: the successful CAS on the
 *   head.
 */
#ifndef TIDEPOOL_DEPOT_INTERNAL_H
#define TIDEPOOL_DEPOT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define TP__MAG_CAP 510

typedef struct tp__mag {
  uint32_t count;     /* objects in obj[0..count) */
  uint32_t unused;
  uint64_t stamp_ms;  /* when it was filled (decay) */
  void *obj[TP__MAG_CAP];
} tp__mag;

typedef struct tp__mag_stack {
  uint64_t head; /* tag << 32 | index of the top magazine (0 = empty) */
} tp__mag_stack;

/* A magazine from the empty stack, or a fresh one; NULL + ENOMEM when no
 * segment can be mapped for it (address-space limit, strict overcommit) or
 * 2^20 magazines exist. Safe to call concurrently. */
tp__mag *tp__mag_new(void);
/* Gives a magazine back to the empty stack. Safe to call concurrently. */
void tp__mag_free(tp__mag *m);
/* Gives the pages of empty magazines beyond the `keep` most recently used
 * back to the OS (they fault in again when reused). Returns the bytes.
 * Safe to call concurrently (a magazine is trimmed only while popped). */
size_t tp__mag_trim(unsigned keep);

/* A chain of magazines the caller owns, top to bottom (both NULL: empty). */
typedef struct tp__mag_chain {
  tp__mag *top, *bottom;
} tp__mag_chain;

/* Lock-free; safe to call concurrently with each other on any stack. */
void tp__mag_push(tp__mag_stack *s, tp__mag *m);
/* Pushes a whole chain (one CAS), keeping its order; empty: no-op. */
void tp__mag_push_chain(tp__mag_stack *s, const tp__mag_chain *c);
tp__mag *tp__mag_pop(tp__mag_stack *s);
/* Detaches the whole stack; returns its top (walk with tp__mag_next). */
tp__mag *tp__mag_take_all(tp__mag_stack *s);
/* The magazine below m in a chain the caller owns (from take_all). Read it
 * before appending m to another chain. */
tp__mag *tp__mag_next(const tp__mag *m);
/* Appends m (owned by the caller) at the bottom of c. */
void tp__mag_chain_append(tp__mag_chain *c, tp__mag *m);

#endif /* TIDEPOOL_DEPOT_INTERNAL_H */
