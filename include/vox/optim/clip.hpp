#pragma once
// Gradient clipping by the global norm, as torch.nn.utils.clip_grad_norm_: if the norm of all
// gradients together exceeds max_norm, every gradient is scaled by max_norm / (norm + 1e-6).
// Returns the norm before clipping. Gradient accumulation needs no helper: backward() adds into
// .grad until zero_grad().
#include <cmath>

#include "vox/ops.hpp"

namespace vox::optim {

inline double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0) {
  VOX_CHECK(max_norm >= 0 && norm_type > 0, "clip_grad_norm", "max_norm must be >= 0 and norm_type > 0");
  double total = 0;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const auto v = g.to_vector<double>();
    if (std::isinf(norm_type)) {
      for (double e : v) total = std::max(total, std::abs(e));
    } else {
      for (double e : v) total += std::pow(std::abs(e), norm_type);
    }
  }
  if (!std::isinf(norm_type)) total = std::pow(total, 1.0 / norm_type);
  const double coefficient = max_norm / (total + 1e-6);
  if (coefficient < 1.0) {
    NoGradGuard no_grad;
    for (const Tensor& p : params)
      if (p.grad().defined()) p.set_grad(mul(p.grad(), scalar(coefficient, p.grad().dtype())));
  }
  return total;
}

}  // namespace vox::optim
