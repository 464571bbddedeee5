#pragma once
// Binary arithmetic with broadcasting and type promotion, comparisons, and where.
#include <cmath>

#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

inline Tensor scalar_like(double value, const Tensor& x) {
  const bool integral_value = std::floor(value) == value && std::abs(value) < 9.0e15;
  DType dtype = DType::f32;
  if (is_floating(x.dtype()) || (is_integral(x.dtype()) && integral_value)) dtype = x.dtype();
  else if (x.dtype() == DType::boolean && integral_value) dtype = DType::i64;
  return scalar(value, dtype);
}

namespace detail {
inline DType arithmetic_dtype(const char* op, const Tensor& a, const Tensor& b) {
  VOX_CHECK(a.dtype() != DType::boolean && b.dtype() != DType::boolean, op, "bool operands are not supported (",
            a.dtype(), " and ", b.dtype(), ", shapes ", a.shape(), " and ", b.shape(), ")");
  return promote(a.dtype(), b.dtype());
}
}  // namespace detail

inline Tensor add(const Tensor& a, const Tensor& b) {
  if (const auto c = detail::autocast_inputs("add", {&a, &b}))
    return detail::without_autocast([&] { return add((*c)[0], (*c)[1]); });
  const DType t = detail::arithmetic_dtype("add", a, b);
  Tensor out = detail::map_binary<detail::Kinds::numeric>("add", a, b, t, [](auto x, auto y) { return x + y; },
                                                             BinaryOp::add);
  const Shape sa = a.shape(), sb = b.shape();
  autograd::record("AddBackward", out, {a, b}, [sa, sb](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, sa), sum_to(g, sb)};
  });
  return out;
}

inline Tensor sub(const Tensor& a, const Tensor& b) {
  if (const auto c = detail::autocast_inputs("sub", {&a, &b}))
    return detail::without_autocast([&] { return sub((*c)[0], (*c)[1]); });
  const DType t = detail::arithmetic_dtype("sub", a, b);
  Tensor out = detail::map_binary<detail::Kinds::numeric>("sub", a, b, t, [](auto x, auto y) { return x - y; },
                                                             BinaryOp::sub);
  const Shape sa = a.shape(), sb = b.shape();
  autograd::record("SubBackward", out, {a, b}, [sa, sb](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, sa), sum_to(neg(g), sb)};
  });
  return out;
}

inline Tensor mul(const Tensor& a, const Tensor& b) {
  if (const auto c = detail::autocast_inputs("mul", {&a, &b}))
    return detail::without_autocast([&] { return mul((*c)[0], (*c)[1]); });
  const DType t = detail::arithmetic_dtype("mul", a, b);
  Tensor out = detail::map_binary<detail::Kinds::numeric>("mul", a, b, t, [](auto x, auto y) { return x * y; },
                                                             BinaryOp::mul);
  // Each input's gradient needs only the other operand: keep just what will be used.
  Tensor other_for_a = a.requires_grad() ? b : Tensor();
  Tensor other_for_b = b.requires_grad() ? a : Tensor();
  autograd::record("MulBackward", out, {a, b}, [other_for_a, other_for_b, sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{other_for_a.defined() ? sum_to(mul(g, other_for_a), sa) : Tensor(),
                               other_for_b.defined() ? sum_to(mul(g, other_for_b), sb) : Tensor()};
  });
  return out;
}

inline Tensor div(const Tensor& a, const Tensor& b) {
  if (const auto c = detail::autocast_inputs("div", {&a, &b}))
    return detail::without_autocast([&] { return div((*c)[0], (*c)[1]); });
  const DType t = detail::floating_of(detail::arithmetic_dtype("div", a, b));
  Tensor out = detail::map_binary<detail::Kinds::floating>("div", a, b, t, [](auto x, auto y) { return x / y; },
                                                            BinaryOp::div);
  autograd::record("DivBackward", out, {a, b}, [a, b, out = out.detach()](const Tensor& g) {
    Tensor ga, gb;
    if (a.requires_grad()) ga = sum_to(div(g, b), a.shape());
    if (b.requires_grad())
      gb = sum_to(g.device().is_cuda() ? neg(div(mul(g, out), b))
                                       : detail::map_ternary<detail::Kinds::floating>("div", g, out, b, g.dtype(),
                                                                                      [](auto gv, auto o, auto bv) { return -gv * o / bv; }),
                  b.shape());
    return std::vector<Tensor>{ga, gb};
  });
  return out;
}

inline Tensor pow(const Tensor& a, const Tensor& b) {
  if (const auto c = detail::autocast_inputs("pow", {&a, &b}))
    return detail::without_autocast([&] { return pow((*c)[0], (*c)[1]); });
  const DType t = detail::floating_of(detail::arithmetic_dtype("pow", a, b));
  Tensor out = detail::map_binary<detail::Kinds::floating>("pow", a, b, t,
                                                           [](auto x, auto y) { return std::pow(x, y); }, BinaryOp::pow);
  autograd::record("PowBackward", out, {a, b}, [a, b, out = out.detach()](const Tensor& g) {
    Tensor ga, gb;
    using detail::Kinds;
    if (g.device().is_cuda()) {  // the CPU's fused rules, from kernels the backend has
      const Tensor zero = scalar(0.0, g.dtype());
      if (a.requires_grad())
        ga = sum_to(where(eq(b, zero), zero, mul(mul(g, b), pow(a, sub(b, scalar(1.0, g.dtype()))))), a.shape());
      if (b.requires_grad()) gb = sum_to(where(eq(a, zero), zero, mul(mul(g, out), log(a))), b.shape());
      return std::vector<Tensor>{ga, gb};
    }
    if (a.requires_grad())
      ga = sum_to(detail::map_ternary<Kinds::floating>("pow", g, a, b, g.dtype(),
                                                       [](auto gv, auto x, auto y) {
                                                         return y == 0 ? decltype(x)(0) : gv * y * std::pow(x, y - 1);
                                                       }),
                  a.shape());
    if (b.requires_grad()) {
      // d/db a^b = a^b log a; PyTorch takes it as 0 where a == 0 (and b >= 0).
      Tensor glog = detail::map_ternary<Kinds::floating>(
          "pow", g, out, a, g.dtype(), [](auto gv, auto o, auto x) { return x == 0 ? decltype(x)(0) : gv * o * std::log(x); });
      gb = sum_to(glog, b.shape());
    }
    return std::vector<Tensor>{ga, gb};
  });
  return out;
}

inline Tensor neg(const Tensor& x) {
  VOX_CHECK(x.dtype() != DType::boolean, "neg", "bool tensor of shape ", x.shape());
  Tensor out = detail::map_unary<detail::Kinds::numeric>("neg", x, x.dtype(), [](auto v) { return -v; }, UnaryOp::neg);
  autograd::record("NegBackward", out, {x}, [](const Tensor& g) { return std::vector<Tensor>{neg(g)}; });
  return out;
}

namespace detail {
template <class F>
Tensor compare(const char* op, CompareOp code, const Tensor& a, const Tensor& b, F f) {
  const DType in = promote(a.dtype(), b.dtype());
  if (const auto device = cuda_device_of(op, {&a, &b})) {
    const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
    const Tensor ad = on_device(a, in, *device), bd = on_device(b, in, *device);
    Tensor out = empty(shape, DType::boolean, *device);
    cuda_backend(op).compare(code, in, shape, static_cast<bool*>(out.raw_data()), ad.raw_data(), broadcast_strides(ad, shape),
                             bd.raw_data(), broadcast_strides(bd, shape), device->index);
    return out;
  }
  return map_binary<Kinds::all, Out::boolean>(op, a, b, in, f);
}
}  // namespace detail

inline Tensor eq(const Tensor& a, const Tensor& b) { return detail::compare("eq", CompareOp::eq, a, b, [](auto x, auto y) { return x == y; }); }
inline Tensor ne(const Tensor& a, const Tensor& b) { return detail::compare("ne", CompareOp::ne, a, b, [](auto x, auto y) { return x != y; }); }
inline Tensor lt(const Tensor& a, const Tensor& b) { return detail::compare("lt", CompareOp::lt, a, b, [](auto x, auto y) { return x < y; }); }
inline Tensor le(const Tensor& a, const Tensor& b) { return detail::compare("le", CompareOp::le, a, b, [](auto x, auto y) { return x <= y; }); }
inline Tensor gt(const Tensor& a, const Tensor& b) { return detail::compare("gt", CompareOp::gt, a, b, [](auto x, auto y) { return x > y; }); }
inline Tensor ge(const Tensor& a, const Tensor& b) { return detail::compare("ge", CompareOp::ge, a, b, [](auto x, auto y) { return x >= y; }); }

inline Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  if (const auto c = detail::autocast_inputs("where", {&a, &b}))
    return detail::without_autocast([&] { return where(condition, (*c)[0], (*c)[1]); });
  VOX_CHECK(condition.dtype() == DType::boolean, "where", "condition must be bool, got ", condition.dtype(),
            " (shape ", condition.shape(), ")");
  const DType t = promote(a.dtype(), b.dtype());
  Tensor out;
  if (const auto device = detail::cuda_device_of("where", {&condition, &a, &b})) {
    const Shape shape = broadcast_shapes(broadcast_shapes(condition.shape(), a.shape(), "where"), b.shape(), "where");
    const Tensor cd = condition.detach().to(*device), ad = detail::on_device(a, t, *device), bd = detail::on_device(b, t, *device);
    out = empty(shape, t, *device);
    cuda_backend("where").where(t, shape, out.raw_data(), static_cast<const bool*>(cd.raw_data()), detail::broadcast_strides(cd, shape),
                                ad.raw_data(), detail::broadcast_strides(ad, shape), bd.raw_data(),
                                detail::broadcast_strides(bd, shape), device->index);
  } else {
    const Tensor cond = condition.to(t);  // 0 or 1 in the value type, so one ternary kernel serves
    out = detail::map_ternary<detail::Kinds::all>("where", cond, a, b, t, [](auto c, auto x, auto y) { return c ? x : y; });
  }
  autograd::record("WhereBackward", out, {a, b}, [cond = condition, sa = a.shape(), sb = b.shape()](const Tensor& g) {
    const Tensor zero = zeros(Shape{}, g.dtype());
    return std::vector<Tensor>{sum_to(where(cond, g, zero), sa), sum_to(where(cond, zero, g), sb)};
  });
  return out;
}

}  // namespace vox
