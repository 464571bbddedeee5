#pragma once
// Unary math: exp, log, sqrt, abs, square, pow by a scalar, clamp, sigmoid, tanh. Integer inputs
// of the transcendental ones are promoted to f32, as PyTorch does. Backward kernels are fused:
// one pass over (grad, saved) per op.
#include <cmath>

#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

namespace detail {
// y = f(x) in floating dtype; backward g * df(saved), saved being x or y as the op chooses. On
// CUDA the forward is the backend kernel `cuda_op` and the backward either `cuda_df(g, saved)`,
// composed of ops that have CUDA kernels, or the backend kernel `cuda_backward(g, saved)`.
using CudaBackward = Tensor (*)(const Tensor& g, const Tensor& saved);
template <class F, class DF>
Tensor floating_unary(const char* name, const char* node, const Tensor& x, F f, bool save_output, DF df,
                      std::optional<CudaUnary> cuda_op = std::nullopt, CudaBackward cuda_df = nullptr,
                      std::optional<CudaBinary> cuda_backward = std::nullopt) {
  const DType t = floating_of(x.dtype());
  Tensor out = map_unary<Kinds::floating>(name, x, t, f, cuda_op);
  Tensor saved = save_output ? out.detach() : x.detach();
  autograd::record(node, out, {x}, [saved, df, name, cuda_df, cuda_backward](const Tensor& g) {
    if (g.device().is_cuda() && cuda_df) return std::vector<Tensor>{cuda_df(g, saved)};
    return std::vector<Tensor>{map_binary<Kinds::floating>(name, g, saved, g.dtype(), df, cuda_backward)};
  });
  return out;
}
}  // namespace detail

inline Tensor exp(const Tensor& x) {
  if (const auto c = detail::autocast_inputs("exp", {&x}))
    return detail::without_autocast([&] { return exp((*c)[0]); });
  return detail::floating_unary(
      "exp", "ExpBackward", x, [](auto v) { return std::exp(v); }, true, [](auto g, auto y) { return g * y; }, UnaryOp::exp,
      [](const Tensor& g, const Tensor& y) { return mul(g, y); });
}

inline Tensor log(const Tensor& x) {
  if (const auto c = detail::autocast_inputs("log", {&x}))
    return detail::without_autocast([&] { return log((*c)[0]); });
  return detail::floating_unary(
      "log", "LogBackward", x, [](auto v) { return std::log(v); }, false, [](auto g, auto v) { return g / v; }, UnaryOp::log,
      [](const Tensor& g, const Tensor& v) { return div(g, v); });
}

inline Tensor sqrt(const Tensor& x) {
  return detail::floating_unary(
      "sqrt", "SqrtBackward", x, [](auto v) { return std::sqrt(v); }, true, [](auto g, auto y) { return g / (y + y); },
      UnaryOp::sqrt, [](const Tensor& g, const Tensor& y) { return div(g, add(y, y)); });
}

inline Tensor sigmoid(const Tensor& x) {
  return detail::floating_unary(
      "sigmoid", "SigmoidBackward", x, [](auto v) { return decltype(v)(1) / (decltype(v)(1) + std::exp(-v)); }, true,
      [](auto g, auto y) { return g * y * (decltype(y)(1) - y); }, UnaryOp::sigmoid,
      [](const Tensor& g, const Tensor& y) { return mul(mul(g, y), sub(scalar(1.0, y.dtype()), y)); });
}

inline Tensor tanh(const Tensor& x) {
  return detail::floating_unary(
      "tanh", "TanhBackward", x, [](auto v) { return std::tanh(v); }, true, [](auto g, auto y) { return g * (decltype(y)(1) - y * y); },
      UnaryOp::tanh, [](const Tensor& g, const Tensor& y) { return mul(g, sub(scalar(1.0, y.dtype()), mul(y, y))); });
}

inline Tensor square(const Tensor& x) {
  return detail::floating_unary("square", "SquareBackward", x, [](auto v) { return v * v; }, false,
                                [](auto g, auto v) { return decltype(v)(2) * g * v; }, UnaryOp::square, nullptr,
                                BinaryOp::square_backward);
}

inline Tensor pow(const Tensor& x, double exponent) {
  if (const auto c = detail::autocast_inputs("pow", {&x}))
    return detail::without_autocast([&] { return pow((*c)[0], exponent); });
  return detail::floating_unary(
      "pow", "PowScalarBackward", x, [exponent](auto v) { return std::pow(v, static_cast<decltype(v)>(exponent)); },
      false, [exponent](auto g, auto v) {
        using C = decltype(v);
        return exponent == 0.0 ? C(0) : g * C(exponent) * std::pow(v, C(exponent - 1.0));
      },
      CudaUnary(UnaryOp::pow_scalar, {exponent}), nullptr, CudaBinary(BinaryOp::pow_scalar_backward, {exponent}));
}

inline Tensor abs(const Tensor& x) {
  VOX_CHECK(x.dtype() != DType::boolean, "abs", "bool tensor of shape ", x.shape());
  Tensor out = detail::map_unary<detail::Kinds::numeric>("abs", x, x.dtype(), [](auto v) {
    if constexpr (std::is_unsigned_v<decltype(v)>) return v;
    else return v < 0 ? -v : v;
  }, UnaryOp::abs);
  autograd::record("AbsBackward", out, {x}, [x = x.detach()](const Tensor& g) {
    return std::vector<Tensor>{detail::map_binary<detail::Kinds::floating>(
        "abs", g, x, g.dtype(), [](auto gv, auto v) { return v > 0 ? gv : v < 0 ? -gv : decltype(gv)(0); },
        BinaryOp::abs_backward)};
  });
  return out;
}

inline Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max) {
  VOX_CHECK(min || max, "clamp", "needs a min, a max, or both");
  VOX_CHECK(!min || !max || *min <= *max, "clamp", "min ", *min, " is above max ", *max);
  const double lo = min.value_or(-INFINITY), hi = max.value_or(INFINITY);
  Tensor out = detail::map_unary<detail::Kinds::numeric>("clamp", x, x.dtype(), [lo, hi](auto v) {
    using C = decltype(v);
    if (v != v) return v;
    const double d = static_cast<double>(v);
    return d < lo ? static_cast<C>(lo) : d > hi ? static_cast<C>(hi) : v;
  }, CudaUnary(UnaryOp::clamp, {lo, hi}));
  autograd::record("ClampBackward", out, {x}, [x = x.detach(), lo, hi](const Tensor& g) {
    return std::vector<Tensor>{detail::map_binary<detail::Kinds::floating>(
        "clamp", g, x, g.dtype(), [lo, hi](auto gv, auto v) {
          const double d = static_cast<double>(v);
          return (d >= lo && d <= hi) ? gv : decltype(gv)(0);
        }, CudaBinary(BinaryOp::clamp_backward, {lo, hi}))};
  });
  return out;
}

}  // namespace vox
