#pragma once
// Reference softmax / log-softmax along the middle axis of a row-major [outer][n][inner] array.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace vox::kernels::reference {

inline std::vector<double> softmax(const std::vector<double>& x, int64_t outer, int64_t n, int64_t inner, bool log) {
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t k) { return static_cast<size_t>((o * n + k) * inner + i); };
      double m = -INFINITY, total = 0;
      for (int64_t k = 0; k < n; ++k) m = std::max(m, x[at(k)]);
      for (int64_t k = 0; k < n; ++k) total += std::exp(x[at(k)] - m);
      for (int64_t k = 0; k < n; ++k) y[at(k)] = log ? x[at(k)] - m - std::log(total) : std::exp(x[at(k)] - m) / total;
    }
  return y;
}

}  // namespace vox::kernels::reference
