#pragma once
// Activations: ReLU, LeakyReLU, PReLU (one slope, or one per channel on the last axis), GELU
// (exact erf form, or the tanh approximation). Backward passes are fused single passes.
#include <cmath>
#include <numbers>

#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

inline Tensor relu(const Tensor& x) {
  VOX_CHECK(is_floating(x.dtype()), "relu", "needs a floating tensor, got ", x.dtype());
  using detail::Kinds;
  Tensor out = detail::map_unary<Kinds::floating>("relu", x, x.dtype(), [](auto v) { return v > 0 ? v : decltype(v)(0); },
                                                  UnaryOp::relu);
  autograd::record("ReluBackward", out, {x}, [y = out.detach()](const Tensor& g) {
    return std::vector<Tensor>{detail::map_binary<Kinds::floating>(
        "relu", g, y, g.dtype(), [](auto gv, auto v) { return v > 0 ? gv : decltype(gv)(0); }, BinaryOp::relu_backward)};
  });
  return out;
}

inline Tensor leaky_relu(const Tensor& x, double negative_slope) {
  VOX_CHECK(is_floating(x.dtype()), "leaky_relu", "needs a floating tensor, got ", x.dtype());
  using detail::Kinds;
  Tensor out = detail::map_unary<Kinds::floating>("leaky_relu", x, x.dtype(), [negative_slope](auto v) {
    return v > 0 ? v : static_cast<decltype(v)>(negative_slope) * v;
  }, CudaUnary(UnaryOp::leaky_relu, {negative_slope}));
  autograd::record("LeakyReluBackward", out, {x}, [x = x.detach(), negative_slope](const Tensor& g) {
    return std::vector<Tensor>{detail::map_binary<Kinds::floating>("leaky_relu", g, x, g.dtype(), [negative_slope](auto gv, auto v) {
      return v > 0 ? gv : static_cast<decltype(gv)>(negative_slope) * gv;
    }, CudaBinary(BinaryOp::leaky_relu_backward, {negative_slope}))};
  });
  return out;
}

inline Tensor prelu(const Tensor& x, const Tensor& weight) {
  if (const auto c = detail::autocast_inputs("prelu", {&x, &weight}))
    return detail::without_autocast([&] { return prelu((*c)[0], (*c)[1]); });
  constexpr const char* op = "prelu";
  VOX_CHECK(is_floating(x.dtype()) && weight.dtype() == x.dtype(), op, "needs floating input and weight of one dtype, got ",
            x.dtype(), " and ", weight.dtype());
  VOX_CHECK(weight.rank() == 1 && (weight.size(0) == 1 || (x.rank() >= 1 && weight.size(0) == x.size(-1))), op,
            "weight must be [1] or [C] with C the last axis of ", x.shape(), ", got ", weight.shape());
  using detail::Kinds;
  Tensor out = detail::map_binary<Kinds::floating>(op, x, weight, x.dtype(),
                                                  [](auto v, auto a) { return v > 0 ? v : a * v; }, BinaryOp::prelu);
  autograd::record("PreluBackward", out, {x, weight}, [x = x.detach(), w = weight.detach(), need_w = weight.requires_grad()](const Tensor& g) {
    if (g.device().is_cuda()) {  // from kernels the backend has: g's positive part plus slope * its other part
      const Tensor negative = detail::map_binary<Kinds::floating>(
          "prelu", g, x, g.dtype(), [](auto gv, auto v) { return v > 0 ? decltype(gv)(0) : gv; }, BinaryOp::nonpositive_part);
      const Tensor positive = detail::map_binary<Kinds::floating>(
          "prelu", g, x, g.dtype(), [](auto gv, auto v) { return v > 0 ? gv : decltype(gv)(0); }, BinaryOp::relu_backward);
      return std::vector<Tensor>{add(positive, mul(negative, w)), need_w ? sum_to(mul(negative, x), w.shape()) : Tensor()};
    }
    Tensor gx = detail::map_ternary<Kinds::floating>("prelu", g, x, w, g.dtype(),
                                                     [](auto gv, auto v, auto a) { return v > 0 ? gv : a * gv; });
    Tensor gw;
    if (need_w)
      gw = sum_to(detail::map_binary<Kinds::floating>("prelu", g, x, g.dtype(),
                                                      [](auto gv, auto v) { return v > 0 ? decltype(gv)(0) : gv * v; }),
                  w.shape());
    return std::vector<Tensor>{gx, gw};
  });
  return out;
}

inline Tensor gelu(const Tensor& x, GeluApproximation approximation) {
  VOX_CHECK(is_floating(x.dtype()), "gelu", "needs a floating tensor, got ", x.dtype());
  using detail::Kinds;
  const bool exact = approximation == GeluApproximation::none;
  Tensor out = detail::map_unary<Kinds::floating>("gelu", x, x.dtype(), [exact](auto v) {
    using C = decltype(v);
    if (exact) return C(0.5) * v * (C(1) + std::erf(v * C(std::numbers::sqrt2 / 2)));
    const C k = C(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);  // sqrt(2 / pi)
    return C(0.5) * v * (C(1) + std::tanh(k * (v + C(0.044715) * v * v * v)));
  }, exact ? UnaryOp::gelu_erf : UnaryOp::gelu_tanh);
  autograd::record("GeluBackward", out, {x}, [x = x.detach(), exact](const Tensor& g) {
    return std::vector<Tensor>{detail::map_binary<Kinds::floating>("gelu", g, x, g.dtype(), [exact](auto gv, auto v) {
      using C = decltype(v);
      if (exact) {
        const C cdf = C(0.5) * (C(1) + std::erf(v * C(std::numbers::sqrt2 / 2)));
        const C pdf = std::exp(C(-0.5) * v * v) * C(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
        return gv * (cdf + v * pdf);
      }
      const C k = C(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);
      const C inner = k * (v + C(0.044715) * v * v * v);
      const C t = std::tanh(inner);
      const C d_inner = k * (C(1) + C(3 * 0.044715) * v * v);
      return gv * (C(0.5) * (C(1) + t) + C(0.5) * v * (C(1) - t * t) * d_inner);
    }, exact ? BinaryOp::gelu_erf_backward : BinaryOp::gelu_tanh_backward)};
  });
  return out;
}

}  // namespace vox
