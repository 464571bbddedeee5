#pragma once
// Dropout: in training, zero each element with probability p (Philox bernoulli, so the mask is
// the same on any thread count, and on the GPU the same as on the CPU) and scale the survivors
// by 1 / (1 - p). Identity in eval mode.
#include "vox/core/rng.hpp"
#include "vox/ops/fwd.hpp"

namespace vox {

inline Tensor dropout(const Tensor& x, double p, bool training, Generator* generator) {
  VOX_CHECK(p >= 0.0 && p <= 1.0, "dropout", "probability ", p, " is outside [0, 1]");
  VOX_CHECK(is_floating(x.dtype()), "dropout", "needs a floating tensor, got ", x.dtype());
  if (!training || p == 0.0) return x;
  if (p == 1.0) return mul(x, zeros(Shape{}, x.dtype()));
  const DType mask_dtype = x.device().is_cuda() && !(x.dtype() == DType::f32 || x.dtype() == DType::f64) ? DType::f32 : x.dtype();
  const Tensor keep = bernoulli(x.shape(), 1.0 - p, mask_dtype, generator, x.device());
  return mul(x, mul(keep, scalar(1.0 / (1.0 - p), x.dtype())));
}

}  // namespace vox
