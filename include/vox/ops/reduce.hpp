#pragma once
// Reductions over any set of axes: sum, mean, max, min, argmax, argmin, var, std. A set of axes
// is reduced one run of adjacent axes at a time, each run as a contiguous [A][R][B] block
// (kernels/cpu/reduce.hpp; on the GPU kernels/cuda/reduce.cuh and extremum.cuh). Sums accumulate
// in f64 (i64 for integers) on the CPU; CUDA sums take f32 or f64.
#include <algorithm>

#include "kernels/cpu/reduce.hpp"
#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

namespace detail {
// Sorted, unique, normalised axes; empty means all.
inline std::vector<bool> reduced_axes(const char* op, const Tensor& x, const Axes& axes) {
  std::vector<bool> flags(static_cast<size_t>(x.rank()), axes.empty());
  for (int64_t a : axes) {
    const auto i = static_cast<size_t>(normalize_axis(a, x.rank(), op));
    VOX_CHECK(!flags[i], op, "axis ", a, " given twice for shape ", x.shape());
    flags[i] = true;
  }
  return flags;
}

inline Shape keepdim_shape(const Shape& s, const std::vector<bool>& flags) {
  Shape out = s;
  for (int64_t i = 0; i < s.size(); ++i)
    if (flags[static_cast<size_t>(i)]) out[i] = 1;
  return out;
}

inline Shape dropped_shape(const Shape& s, const std::vector<bool>& flags) {
  Shape out;
  for (int64_t i = 0; i < s.size(); ++i)
    if (!flags[static_cast<size_t>(i)]) out.push_back(s[i]);
  return out;
}

// Applies the [A][R][B] kernel to each run of flagged adjacent axes, last run first. The result
// has the keepdim shape and dtype out_dtype.
template <template <class> class Reducer>
Tensor reduce_runs(const char* op, const Tensor& x, const std::vector<bool>& flags, DType out_dtype) {
  constexpr bool summing = std::is_same_v<Reducer<double>, kernels::cpu::SumReducer<double>>;
  constexpr bool maximising = std::is_same_v<Reducer<double>, kernels::cpu::MaxReducer<double>>;
  if (x.device().is_cuda()) {
    VOX_CHECK(!summing || x.dtype() == DType::f32 || x.dtype() == DType::f64, op, "CUDA sums take f32 or f64, got ",
              x.dtype(), "; cast the operand first");
  } else {
    check_cpu(op, {&x});
  }
  Tensor current = x.detach().contiguous();
  Shape shape = x.shape();
  for (int64_t end = shape.size(); end > 0;) {
    if (!flags[static_cast<size_t>(end - 1)]) {
      --end;
      continue;
    }
    int64_t begin = end - 1;
    while (begin > 0 && flags[static_cast<size_t>(begin - 1)]) --begin;
    int64_t A = 1, R = 1, B = 1;
    for (int64_t i = 0; i < begin; ++i) A *= shape[i];
    for (int64_t i = begin; i < end; ++i) R *= shape[i];
    for (int64_t i = end; i < shape.size(); ++i) B *= shape[i];
    Shape next = shape;
    for (int64_t i = begin; i < end; ++i) next[i] = 1;
    Tensor reduced = empty(next, out_dtype, x.device());
    if (x.device().is_cuda()) {
      if constexpr (summing)
        cuda_backend(op).sum_middle(out_dtype, A, R, B, reduced.raw_data(), current.raw_data(), 1.0, x.device().index);
      else  // max or min: the value only
        cuda_backend(op).extremum_middle(out_dtype, A, R, B, current.raw_data(), reduced.raw_data(), nullptr, maximising,
                                         x.device().index);
      current = reduced;
      shape = next;
      end = begin;
      continue;
    }
    dispatch_numeric(current.dtype() == DType::boolean ? DType::u8 : current.dtype(), op, [&]<class T>() {
      // Sums accumulate in f64 (i64 for integers) and keep floating dtypes; max and min keep T.
      using C = compute_t<T>;
      constexpr bool is_sum = std::is_same_v<Reducer<C>, kernels::cpu::SumReducer<C>>;
      using Wide = std::conditional_t<std::is_floating_point_v<C>, double, int64_t>;
      using Acc = std::conditional_t<is_sum, Wide, C>;
      using TO = std::conditional_t<is_sum && !std::is_floating_point_v<C>, int64_t, T>;
      VOX_CHECK(dtype_v<TO> == out_dtype, op, "cannot reduce dtype ", x.dtype(), " (shape ", x.shape(), ")");
      if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) {
        const Tensor wide = current.to(DType::f32);  // widen 16-bit storage once
        kernels::cpu::reduce_middle<Reducer<Acc>>(wide.data<float>(), reduced.data<TO>(), A, R, B);
      } else {
        kernels::cpu::reduce_middle<Reducer<Acc>>(static_cast<const T*>(current.raw_data()), reduced.data<TO>(), A, R, B);
      }
    });
    current = reduced;
    shape = next;
    end = begin;
  }
  return current;
}

inline DType sum_dtype(DType t) { return is_floating(t) ? t : DType::i64; }
}  // namespace detail

inline Tensor sum(const Tensor& x, const Axes& axes, bool keepdim) {
  if (const auto c = detail::autocast_inputs("sum", {&x}))
    return detail::without_autocast([&] { return sum((*c)[0], axes, keepdim); });
  if (x.device().is_cuda() && (x.dtype() == DType::f16 || x.dtype() == DType::bf16))  // accumulated in f32
    return cast(sum(cast(x, DType::f32), axes, keepdim), x.dtype());
  const auto flags = detail::reduced_axes("sum", x, axes);
  Tensor out = detail::reduce_runs<kernels::cpu::SumReducer>("sum", x, flags, detail::sum_dtype(x.dtype()));
  if (!keepdim) out = out.reshape(detail::dropped_shape(x.shape(), flags).vec());
  autograd::record("SumBackward", out, {x}, [in_shape = x.shape(), flags](const Tensor& g) {
    return std::vector<Tensor>{g.reshape(detail::keepdim_shape(in_shape, flags).vec()).expand(in_shape)};
  });
  return out;
}

inline Tensor mean(const Tensor& x, const Axes& axes, bool keepdim) {
  if (const auto c = detail::autocast_inputs("mean", {&x}))
    return detail::without_autocast([&] { return mean((*c)[0], axes, keepdim); });
  const auto flags = detail::reduced_axes("mean", x, axes);
  int64_t count = 1;
  for (int64_t i = 0; i < x.rank(); ++i)
    if (flags[static_cast<size_t>(i)]) count *= x.size(i);
  VOX_CHECK(count > 0, "mean", "mean over an empty set of elements (shape ", x.shape(), ")");
  const Tensor xf = cast(x, detail::floating_of(x.dtype()));
  return mul(sum(xf, axes, keepdim), scalar(1.0 / static_cast<double>(count), xf.dtype()));
}

namespace detail {
template <template <class> class Reducer>
Tensor extremum(const char* op, const char* node, const Tensor& x, const Axes& axes, bool keepdim) {
  VOX_CHECK(x.numel() > 0, op, "cannot take the ", op, " of an empty tensor of shape ", x.shape());
  const auto flags = reduced_axes(op, x, axes);
  for (int64_t i = 0; i < x.rank(); ++i)
    VOX_CHECK(!flags[static_cast<size_t>(i)] || x.size(i) > 0, op, "axis ", i, " of shape ", x.shape(), " is empty");
  Tensor kept = reduce_runs<Reducer>(op, x, flags, x.dtype());
  Tensor out = keepdim ? kept : kept.reshape(dropped_shape(x.shape(), flags).vec());
  autograd::record(node, out, {x}, [x = x.detach(), kept, flags](const Tensor& g) {
    // Ties share the gradient equally (PyTorch's amax/amin rule).
    const Tensor mask = eq(x, kept);
    Axes reduced;
    for (size_t i = 0; i < flags.size(); ++i)
      if (flags[i]) reduced.push_back(static_cast<int64_t>(i));
    const Tensor ties = sum(mask.to(g.dtype()), reduced, true);  // counted in g's dtype: CUDA sums are floating
    const Tensor share = div(g.reshape(kept.shape().vec()), ties);
    return std::vector<Tensor>{where(mask, share, zeros(Shape{}, g.dtype()))};
  });
  return out;
}

inline Tensor arg_extremum(const char* op, const Tensor& x, int64_t axis, bool keepdim, bool want_max) {
  axis = normalize_axis(axis, x.rank(), op);
  VOX_CHECK(x.size(axis) > 0, op, "axis ", axis, " of shape ", x.shape(), " is empty");
  const Tensor c = x.detach().contiguous();
  int64_t A = 1, B = 1;
  for (int64_t i = 0; i < axis; ++i) A *= x.size(i);
  for (int64_t i = axis + 1; i < x.rank(); ++i) B *= x.size(i);
  Shape kept = x.shape();
  kept[axis] = 1;
  Tensor out = empty(kept, DType::i64, x.device());
  if (x.device().is_cuda()) {
    cuda_backend(op).extremum_middle(c.dtype(), A, x.size(axis), B, c.raw_data(), nullptr,
                                     static_cast<int64_t*>(out.raw_data()), want_max, x.device().index);
    return keepdim ? out : out.squeeze(axis);
  }
  dispatch_numeric(c.dtype(), op, [&]<class T>() {
    if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) {
      const Tensor wide = c.to(DType::f32);
      kernels::cpu::arg_reduce_middle(wide.data<float>(), out.data<int64_t>(), A, x.size(axis), B, want_max);
    } else {
      kernels::cpu::arg_reduce_middle(c.data<T>(), out.data<int64_t>(), A, x.size(axis), B, want_max);
    }
  });
  return keepdim ? out : out.squeeze(axis);
}
}  // namespace detail

inline Tensor max(const Tensor& x, const Axes& axes, bool keepdim) {
  return detail::extremum<kernels::cpu::MaxReducer>("max", "MaxBackward", x, axes, keepdim);
}
inline Tensor min(const Tensor& x, const Axes& axes, bool keepdim) {
  return detail::extremum<kernels::cpu::MinReducer>("min", "MinBackward", x, axes, keepdim);
}
inline Tensor argmax(const Tensor& x, int64_t axis, bool keepdim) {
  return detail::arg_extremum("argmax", x, axis, keepdim, true);
}
inline Tensor argmin(const Tensor& x, int64_t axis, bool keepdim) {
  return detail::arg_extremum("argmin", x, axis, keepdim, false);
}

inline Tensor var(const Tensor& x, const Axes& axes, double correction, bool keepdim) {
  if (const auto c = detail::autocast_inputs("var", {&x}))
    return detail::without_autocast([&] { return var((*c)[0], axes, correction, keepdim); });
  const auto flags = detail::reduced_axes("var", x, axes);
  int64_t count = 1;
  for (int64_t i = 0; i < x.rank(); ++i)
    if (flags[static_cast<size_t>(i)]) count *= x.size(i);
  VOX_CHECK(static_cast<double>(count) - correction > 0, "var", "needs more than ", correction,
            " elements per output, has ", count, " (shape ", x.shape(), ")");
  const Tensor xf = cast(x, detail::floating_of(x.dtype()));
  const Tensor centred = sub(xf, mean(xf, axes, true));
  return mul(sum(square(centred), axes, keepdim), scalar(1.0 / (static_cast<double>(count) - correction), xf.dtype()));
}

inline Tensor std_dev(const Tensor& x, const Axes& axes, double correction, bool keepdim) {
  if (const auto c = detail::autocast_inputs("std_dev", {&x}))
    return detail::without_autocast([&] { return std_dev((*c)[0], axes, correction, keepdim); });
  return sqrt(var(x, axes, correction, keepdim));
}

inline Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  VOX_CHECK(x.rank() >= shape.size(), "sum_to", "cannot sum shape ", x.shape(), " to ", shape);
  const int64_t lead = x.rank() - shape.size();
  Axes axes;
  for (int64_t i = 0; i < x.rank(); ++i) {
    if (i < lead) {
      axes.push_back(i);
    } else if (shape[i - lead] == 1 && x.size(i) != 1) {
      axes.push_back(i);
    } else {
      VOX_CHECK(shape[i - lead] == x.size(i), "sum_to", "cannot sum shape ", x.shape(), " to ", shape);
    }
  }
  if (axes.empty()) return reshape(x, shape.vec());
  return reshape(sum(x, axes, true), shape.vec());
}

}  // namespace vox
