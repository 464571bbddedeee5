#pragma once
// Initialisers, drawn from vox's seeded generator:
//   PyTorch's default for conv and linear layers: weights U(-b, b) with b = 1/sqrt(fan_in)
//   (kaiming_uniform with a = sqrt(5)), and biases U(-b, b) with the same bound;
//   He (kaiming) normal: N(0, 2 / fan_in); Xavier (Glorot) uniform: U(-b, b),
//   b = sqrt(6 / (fan_in + fan_out)).
#include <cmath>

#include "vox/core/rng.hpp"

namespace vox::nn::init {

inline Tensor pytorch_default(const Shape& shape, int64_t fan_in, Generator* gen = nullptr) {
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  return uniform(shape, -bound, bound, DType::f32, gen);
}

inline Tensor he_normal(const Shape& shape, int64_t fan_in, Generator* gen = nullptr) {
  return randn(shape, DType::f32, gen, 0.0, std::sqrt(2.0 / static_cast<double>(std::max<int64_t>(fan_in, 1))));
}

inline Tensor xavier_uniform(const Shape& shape, int64_t fan_in, int64_t fan_out, Generator* gen = nullptr) {
  const double bound = std::sqrt(6.0 / static_cast<double>(std::max<int64_t>(fan_in + fan_out, 1)));
  return uniform(shape, -bound, bound, DType::f32, gen);
}

}  // namespace vox::nn::init
