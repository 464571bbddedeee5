#pragma once
// Reference scaled dot-product attention for one batch of q [L][E], k [S][E], v [S][Ev]:
// softmax over s of (q.k * scale, or -inf where the mask says no) times v.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace vox::kernels::reference {

inline std::vector<double> attention(const double* q, const double* k, const double* v, int64_t L, int64_t S, int64_t E,
                                     int64_t Ev, double scale, const std::vector<bool>& attend /* [L][S] or empty */) {
  std::vector<double> out(static_cast<size_t>(L * Ev), 0.0), score(static_cast<size_t>(S));
  for (int64_t i = 0; i < L; ++i) {
    double m = -INFINITY, total = 0;
    for (int64_t j = 0; j < S; ++j) {
      double dot = 0;
      for (int64_t e = 0; e < E; ++e) dot += q[i * E + e] * k[j * E + e];
      const bool keep = attend.empty() || attend[static_cast<size_t>(i * S + j)];
      score[static_cast<size_t>(j)] = keep ? dot * scale : -INFINITY;
      m = std::max(m, score[static_cast<size_t>(j)]);
    }
    for (double& s : score) total += (s = std::exp(s - m));
    for (int64_t j = 0; j < S; ++j)
      for (int64_t e = 0; e < Ev; ++e) out[static_cast<size_t>(i * Ev + e)] += score[static_cast<size_t>(j)] / total * v[j * Ev + e];
  }
  return out;
}

}  // namespace vox::kernels::reference
