// bench/median.h — the median both the driver (over rounds) and the shim
// (over a case's iterations) report. NaN samples (a failed round) are left
// out; no sample gives NaN.
#ifndef BENCH_MEDIAN_H
#define BENCH_MEDIAN_H

#include <algorithm>
#include <cmath>
#include <vector>

inline double Median(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return std::isnan(x); }), v.end());
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#endif  // BENCH_MEDIAN_H
