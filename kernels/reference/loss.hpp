#pragma once
// Reference losses, written from PyTorch's documented formulas.
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/reference/softmax.hpp"

namespace vox::kernels::reference {

// Mean cross-entropy of logits [rows][C] against targets (ignore_index skipped), with class
// weights and label smoothing e: (1 - e) * sum(w_t * nll) / sum(w_t)
//                                 + e / C * sum(-sum_c w_c log p_c) / sum(w_t).
inline double cross_entropy_mean(const std::vector<double>& logits, const std::vector<int64_t>& target, int64_t C,
                                 const std::vector<double>& weight, int64_t ignore_index, double smoothing) {
  const auto rows = static_cast<int64_t>(target.size());
  const std::vector<double> logp = softmax(logits, rows, C, 1, true);
  double nll = 0, smooth = 0, weight_sum = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = target[static_cast<size_t>(r)];
    if (t == ignore_index) continue;
    const double wt = weight.empty() ? 1.0 : weight[static_cast<size_t>(t)];
    nll -= wt * logp[static_cast<size_t>(r * C + t)];
    weight_sum += wt;
    for (int64_t c = 0; c < C; ++c) smooth -= (weight.empty() ? 1.0 : weight[static_cast<size_t>(c)]) * logp[static_cast<size_t>(r * C + c)];
  }
  return (1 - smoothing) * nll / weight_sum + smoothing / static_cast<double>(C) * smooth / weight_sum;
}

// Mean of -w [p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], with w and p per element.
inline double bce_with_logits_mean(const std::vector<double>& x, const std::vector<double>& y, const std::vector<double>& w,
                                   const std::vector<double>& pos_weight) {
  double total = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double log_sig = -std::log1p(std::exp(-x[i])), log_one_minus = -std::log1p(std::exp(x[i]));
    total += -w[i] * (pos_weight[i] * y[i] * log_sig + (1 - y[i]) * log_one_minus);
  }
  return total / static_cast<double>(x.size());
}

}  // namespace vox::kernels::reference
