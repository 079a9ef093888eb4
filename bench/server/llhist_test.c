/* bench/server/llhist_test.c — the log-linear histogram: every value lands
 * in a bucket that holds it, buckets are ordered and at most 1/64 of their
 * values wide, and quantiles of known data are within that resolution. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench/server/llhist.h"

#define CHECK(c)                                                        \
  do {                                                                  \
    if (!(c)) {                                                         \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); \
      exit(1);                                                          \
    }                                                                   \
  } while (0)

int main(void) {
  unsigned prev = 0;
  for (uint64_t v = 0; v < (1ull << LLHIST_MAX_EXP); v = v < 5000 ? v + 1 : v + v / 97 + 1) {
    unsigned i = llhist_index(v);
    CHECK(i >= prev && i < LLHIST_BUCKETS);
    prev = i;
    CHECK(llhist_lower(i) <= v && v < llhist_lower(i) + llhist_width(i));
    if (v >= LLHIST_SUB) CHECK(llhist_width(i) * 64 <= llhist_lower(i));
  }
  CHECK(llhist_index(UINT64_MAX) == LLHIST_BUCKETS - 1);

  /* 1..100000 us: quantile q is q * 100000 us, within 1.6 %. */
  static llhist h;
  for (uint64_t us = 1; us <= 100000; us++) llhist_add(&h, us * 1000);
  const double qs[] = {0.5, 0.9, 0.99, 0.999};
  for (int k = 0; k < 4; k++) {
    double got = (double)llhist_quantile(&h, qs[k]), want = qs[k] * 1e8;
    printf("q%.3f: %.0f ns (exact %.0f)\n", qs[k], got, want);
    CHECK(fabs(got - want) <= want / 64);
  }
  CHECK(h.max == 100000000 && llhist_quantile(&h, 1.0) <= h.max && h.count == 100000);
  static llhist empty, m;
  CHECK(llhist_quantile(&empty, 0.5) == 0);
  llhist_merge(&m, &h);
  llhist_merge(&m, &h);
  CHECK(m.count == 200000 && llhist_quantile(&m, 0.5) == llhist_quantile(&h, 0.5));
  printf("PASS\n");
  return 0;
}
