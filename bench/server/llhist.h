/* bench/server/llhist.h — a log-linear latency histogram (HdrHistogram's
 * layout, written small): values below 2^LLHIST_SUB_BITS nanoseconds get one
 * bucket each; above, every power of two [2^e, 2^(e+1)) is cut into
 * 2^LLHIST_SUB_BITS equal buckets. A bucket is at most 1/64 = 1.6 % of its
 * values wide, so a quantile read at the bucket's midpoint is within 0.8 % of
 * a recorded value. Covers 0 .. 2^LLHIST_MAX_EXP ns (about 18 minutes);
 * longer values land in the last bucket. `max` is kept exactly.
 *
 * Not thread-safe: one histogram per thread, merged with llhist_merge. */
#ifndef TP_BENCH_LLHIST_H
#define TP_BENCH_LLHIST_H

#include <stddef.h>
#include <stdint.h>

#define LLHIST_SUB_BITS 6
#define LLHIST_SUB (1u << LLHIST_SUB_BITS)
#define LLHIST_MAX_EXP 40
/* Buckets: LLHIST_SUB for [0, 2^SUB_BITS), then LLHIST_SUB per exponent
 * SUB_BITS .. MAX_EXP-1. */
#define LLHIST_BUCKETS ((LLHIST_MAX_EXP - LLHIST_SUB_BITS + 1) * LLHIST_SUB)

typedef struct llhist {
  uint64_t count, max, sum;
  uint64_t bucket[LLHIST_BUCKETS];
} llhist;

static inline unsigned llhist_index(uint64_t v) {
  if (v < LLHIST_SUB) return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* 2^e <= v < 2^(e+1) */
  if (e >= LLHIST_MAX_EXP) return LLHIST_BUCKETS - 1;
  unsigned sub = (unsigned)(v >> (e - LLHIST_SUB_BITS)) & (LLHIST_SUB - 1);
  return (e - LLHIST_SUB_BITS + 1) * LLHIST_SUB + sub;
}

/* The smallest value of bucket i, and its width. */
static inline uint64_t llhist_lower(unsigned i) {
  if (i < LLHIST_SUB) return i;
  unsigned e = i / LLHIST_SUB + LLHIST_SUB_BITS - 1, sub = i % LLHIST_SUB;
  return (1ull << e) + ((uint64_t)sub << (e - LLHIST_SUB_BITS));
}

static inline uint64_t llhist_width(unsigned i) {
  if (i < LLHIST_SUB) return 1;
  return 1ull << (i / LLHIST_SUB - 1);
}

static inline void llhist_add(llhist *h, uint64_t v) {
  h->bucket[llhist_index(v)]++;
  h->count++;
  h->sum += v;
  if (v > h->max) h->max = v;
}

static inline void llhist_merge(llhist *into, const llhist *from) {
  for (unsigned i = 0; i < LLHIST_BUCKETS; i++) into->bucket[i] += from->bucket[i];
  into->count += from->count;
  into->sum += from->sum;
  if (from->max > into->max) into->max = from->max;
}

/* The q-quantile (0 <= q <= 1): the midpoint of the bucket holding the
 * ceil(q * count)-th smallest value, never above max; 0 when empty. */
static inline uint64_t llhist_quantile(const llhist *h, double q) {
  if (h->count == 0) return 0;
  uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > h->count) rank = h->count;
  uint64_t seen = 0;
  for (unsigned i = 0; i < LLHIST_BUCKETS; i++) {
    seen += h->bucket[i];
    if (seen >= rank) {
      uint64_t mid = llhist_lower(i) + llhist_width(i) / 2;
      return mid > h->max ? h->max : mid;
    }
  }
  return h->max;
}

#endif /* TP_BENCH_LLHIST_H */
