#pragma once
// Reference normalisation over [B][R][C] with G channel groups: per (b, g), the plain mean and
// biased variance of its R * C/G values, then (x - mean) / sqrt(var + eps) * gamma + beta.
#include <cmath>
#include <cstdint>
#include <vector>

namespace vox::kernels::reference {

inline std::vector<double> normalize(const std::vector<double>& x, int64_t B, int64_t R, int64_t C, int64_t G,
                                     const double* gamma, const double* beta, double eps) {
  std::vector<double> y(x.size());
  const int64_t cg = C / G;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g) {
      double total = 0, count = 0;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) total += x[static_cast<size_t>((b * R + r) * C + c)], count += 1;
      const double mean = total / count;
      double sq = 0;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
          const double d = x[static_cast<size_t>((b * R + r) * C + c)] - mean;
          sq += d * d;
        }
      const double inv = 1.0 / std::sqrt(sq / count + eps);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
          const size_t i = static_cast<size_t>((b * R + r) * C + c);
          y[i] = (x[i] - mean) * inv * (gamma ? gamma[c] : 1.0) + (beta ? beta[c] : 0.0);
        }
    }
  return y;
}

}  // namespace vox::kernels::reference
