#pragma once
// Separable Gaussian smoothing of a volume, with scipy.ndimage.gaussian_filter's semantics
// (which nnU-Net's blur and elastic deformation use): kernel radius int(4 sigma + 0.5), weights
// exp(-x^2 / 2 sigma^2) normalised to sum 1, borders by "reflect" (d c b a | a b c d). sigma 0
// leaves an axis alone. The volume is [D, H, W] floats, x (i) fastest.
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "vox/core/error.hpp"

namespace vox::data {

inline std::vector<double> gaussian_kernel(double sigma) {
  const int64_t radius = static_cast<int64_t>(4.0 * sigma + 0.5);
  std::vector<double> w(static_cast<size_t>(2 * radius + 1));
  double sum = 0;
  for (int64_t x = -radius; x <= radius; ++x) {
    const double v = std::exp(-0.5 * static_cast<double>(x * x) / (sigma * sigma));
    w[static_cast<size_t>(x + radius)] = v;
    sum += v;
  }
  for (double& v : w) v /= sum;
  return w;
}

// scipy's "reflect": the edge sample is repeated once (d c b a | a b c d | d c b a).
inline int64_t reflect_index(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * n;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - 1 - i;
}

// Smooths `volume` ([dims[2]][dims[1]][dims[0]]) in place; sigma per axis (i, j, k) in voxels.
inline void gaussian_filter(std::vector<float>& volume, const std::array<int64_t, 3>& dims, const std::array<double, 3>& sigma) {
  VOX_CHECK(static_cast<int64_t>(volume.size()) == dims[0] * dims[1] * dims[2], "gaussian_filter", "volume of ", volume.size(),
            " values is not ", dims[0], "x", dims[1], "x", dims[2]);
  const int64_t stride[3] = {1, dims[0], dims[0] * dims[1]};
  std::vector<double> line, smoothed;
  for (int a = 0; a < 3; ++a) {
    VOX_CHECK(sigma[a] >= 0 && std::isfinite(sigma[a]), "gaussian_filter", "sigma must be >= 0, got ", sigma[a]);
    if (sigma[a] == 0 || dims[a] == 1) continue;
    const std::vector<double> w = gaussian_kernel(sigma[a]);
    const int64_t radius = static_cast<int64_t>(w.size() / 2), n = dims[a];
    line.resize(static_cast<size_t>(n));
    smoothed.resize(static_cast<size_t>(n));
    // every line along axis a: start points are all voxels whose index along a is 0
    const int64_t other1 = a == 0 ? 1 : 0, other2 = a == 2 ? 1 : 2;
    for (int64_t p = 0; p < dims[other2]; ++p)
      for (int64_t q = 0; q < dims[other1]; ++q) {
        const int64_t start = p * stride[other2] + q * stride[other1];
        for (int64_t t = 0; t < n; ++t) line[static_cast<size_t>(t)] = volume[static_cast<size_t>(start + t * stride[a])];
        for (int64_t t = 0; t < n; ++t) {
          double acc = 0;
          for (int64_t d = -radius; d <= radius; ++d)
            acc += w[static_cast<size_t>(d + radius)] * line[static_cast<size_t>(reflect_index(t + d, n))];
          smoothed[static_cast<size_t>(t)] = acc;
        }
        for (int64_t t = 0; t < n; ++t) volume[static_cast<size_t>(start + t * stride[a])] = static_cast<float>(smoothed[static_cast<size_t>(t)]);
      }
  }
}

}  // namespace vox::data
