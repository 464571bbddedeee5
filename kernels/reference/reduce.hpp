#pragma once
// Reference reductions: for every output element, loop over every input element and keep those
// whose kept coordinates match. Quadratic and obviously right.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace vox::kernels::reference {

enum class ReduceKind { sum, mean, max, min, var };

// Reduces a contiguous row-major tensor over the axes flagged in `reduced`. Output is laid out
// as the input with reduced axes of size 1. var uses `correction` (1 = unbiased).
inline std::vector<double> reduce(const std::vector<double>& in, const std::vector<int64_t>& shape,
                                  const std::vector<bool>& reduced, ReduceKind kind, double correction = 1.0) {
  const size_t rank = shape.size();
  std::vector<int64_t> out_shape = shape;
  for (size_t i = 0; i < rank; ++i)
    if (reduced[i]) out_shape[i] = 1;
  int64_t out_n = 1;
  for (int64_t s : out_shape) out_n *= s;
  auto out_index = [&](int64_t flat) {
    int64_t idx = 0, mul = 1;
    for (size_t ax = rank; ax-- > 0;) {
      const int64_t c = flat % shape[ax];
      flat /= shape[ax];
      if (!reduced[ax]) idx += c * mul;
      mul *= out_shape[ax];
    }
    return idx;
  };
  std::vector<double> acc(static_cast<size_t>(out_n), 0.0), count(static_cast<size_t>(out_n), 0.0);
  if (kind == ReduceKind::max) acc.assign(acc.size(), -std::numeric_limits<double>::infinity());
  if (kind == ReduceKind::min) acc.assign(acc.size(), std::numeric_limits<double>::infinity());
  for (size_t i = 0; i < in.size(); ++i) {
    const auto o = static_cast<size_t>(out_index(static_cast<int64_t>(i)));
    count[o] += 1;
    if (kind == ReduceKind::max) acc[o] = std::max(acc[o], in[i]);
    else if (kind == ReduceKind::min) acc[o] = std::min(acc[o], in[i]);
    else acc[o] += in[i];
  }
  if (kind == ReduceKind::mean)
    for (size_t o = 0; o < acc.size(); ++o) acc[o] /= count[o];
  if (kind == ReduceKind::var) {
    std::vector<double> mean = acc, sq(acc.size(), 0.0);
    for (size_t o = 0; o < acc.size(); ++o) mean[o] /= count[o];
    for (size_t i = 0; i < in.size(); ++i) {
      const auto o = static_cast<size_t>(out_index(static_cast<int64_t>(i)));
      sq[o] += (in[i] - mean[o]) * (in[i] - mean[o]);
    }
    for (size_t o = 0; o < acc.size(); ++o) acc[o] = sq[o] / (count[o] - correction);
  }
  return acc;
}

}  // namespace vox::kernels::reference
