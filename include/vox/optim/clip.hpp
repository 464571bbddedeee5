#pragma once
// Gradient clipping by the global norm, as torch.nn.utils.clip_grad_norm_: if the norm of all
// gradients together exceeds max_norm, every gradient is scaled by max_norm / (norm + 1e-6).
// Returns the norm before clipping. Gradient accumulation needs no helper: backward() adds into
// .grad until zero_grad().
// With the gradients on a CUDA device, clip_grad_norm_on_device does it all there: the norm stays
// a device scalar and every gradient is scaled by min(1, max_norm / (norm + 1e-6)), PyTorch's
// clamped coefficient, so nothing waits for the device and the clip can be captured into a CUDA
// graph. clip_grad_norm takes that path for CUDA gradients and reads the norm back.
#include <cmath>

#include "vox/ops.hpp"

namespace vox::optim {

// The gradients' norm as an f64 scalar on their device, after scaling them in place of the
// originals (set_grad) where it exceeds max_norm. Undefined when no parameter has a gradient.
inline Tensor clip_grad_norm_on_device(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0) {
  VOX_CHECK(max_norm >= 0 && norm_type > 0, "clip_grad_norm", "max_norm must be >= 0 and norm_type > 0");
  NoGradGuard no_grad;
  const bool infinite = std::isinf(norm_type);
  Tensor total;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const Tensor a = abs(g.to(DType::f64));
    const Tensor part = infinite ? max(a) : sum(norm_type == 2.0 ? mul(a, a) : pow(a, norm_type));
    total = !total.defined() ? part : infinite ? where(gt(part, total), part, total) : add(total, part);
  }
  if (!total.defined()) return total;
  if (!infinite) total = norm_type == 2.0 ? sqrt(total) : pow(total, 1.0 / norm_type);
  const Tensor coefficient = clamp(div(scalar(max_norm, DType::f64), add(total, scalar(1e-6, DType::f64))), std::nullopt, 1.0);
  for (const Tensor& p : params)
    if (p.grad().defined()) p.set_grad(mul(p.grad(), coefficient.to(p.grad().dtype())));
  return total;
}

inline double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0) {
  VOX_CHECK(max_norm >= 0 && norm_type > 0, "clip_grad_norm", "max_norm must be >= 0 and norm_type > 0");
  for (const Tensor& p : params)
    if (p.grad().defined() && p.grad().device().is_cuda()) {
      const Tensor norm = clip_grad_norm_on_device(params, max_norm, norm_type);
      return norm.item<double>();
    }
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
