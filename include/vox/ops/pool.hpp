#pragma once
// 3-D pooling on channels-last volumes (2-D inputs [N, H, W, C] work as depth 1): max pooling,
// average pooling (count_include_pad as PyTorch), adaptive average pooling. Average pools are
// separable resamplings (kernels/cpu/resample.hpp); max pooling keeps argmax positions. Each
// runs on the input's device.
#include "kernels/cpu/resample.hpp"
#include "vox/ops/conv.hpp"
#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"

namespace vox {

namespace detail {
inline int volume_dims(const char* op, const Tensor& x) {
  VOX_CHECK(x.rank() == 4 || x.rank() == 5, op, "input must be [N, D, H, W, C] (or [N, H, W, C]), got shape ", x.shape());
  VOX_CHECK(is_floating(x.dtype()), op, "needs a floating tensor, got ", x.dtype());
  return static_cast<int>(x.rank()) - 2;
}

// [N, D, H, W, C] sizes of a rank-4 or rank-5 channels-last tensor.
inline std::array<int64_t, 3> spatial_of(const Tensor& x, int spatial) {
  std::array<int64_t, 3> s{1, 1, 1};
  for (int i = 0; i < spatial; ++i) s[static_cast<size_t>(3 - spatial + i)] = x.size(1 + i);
  return s;
}

// y = R x on x's device into a new tensor of `shape` (x contiguous).
inline Tensor run_resample(const char* op, int64_t N, int64_t C, const std::array<kernels::cpu::AxisTable, 3>& tables,
                           const Tensor& x, const Shape& shape) {
  Tensor y = empty(shape, x.dtype(), x.device());
  if (x.device().is_cuda()) {
    std::array<ResampleAxis, 3> axes;
    for (size_t i = 0; i < 3; ++i)
      axes[i] = {tables[i].in_size, tables[i].out_size, tables[i].begin.data(), tables[i].index.data(), tables[i].weight.data()};
    cuda_backend(op).resample(x.dtype(), N, C, axes, x.raw_data(), y.raw_data(), x.device().index);
    return y;
  }
  dispatch_float(x.dtype(), op, [&]<class T>() { kernels::cpu::resample_separable<T>(N, C, tables, x.data<T>(), y.data<T>()); });
  return y;
}

// Runs y = R x for a separable resampling R given by per-axis tables, with backward R^T g.
inline Tensor resample(const char* op, const char* node, const Tensor& x, int spatial,
                       const std::array<kernels::cpu::AxisTable, 3>& tables) {
  if (x.dtype() == DType::f16 || x.dtype() == DType::bf16)
    return cast(resample(op, node, cast(x, DType::f32), spatial, tables), x.dtype());
  const std::array<int64_t, 3> out_dims{tables[0].out_size, tables[1].out_size, tables[2].out_size};
  const int64_t N = x.size(0), C = x.size(-1);
  const Tensor xc = x.detach().contiguous();
  const Tensor out = run_resample(op, N, C, tables, xc, channels_last_shape(N, out_dims, spatial, C));
  autograd::record(node, out, {x}, [tables, N, C, in_shape = x.shape(), op](const Tensor& g) {
    const std::array<kernels::cpu::AxisTable, 3> adjoint{tables[0].transposed(), tables[1].transposed(),
                                                         tables[2].transposed()};
    return std::vector<Tensor>{run_resample(op, N, C, adjoint, g.contiguous(), in_shape)};
  });
  return out;
}

// One AxisTable per spatial axis: add_row(axis, o, table) appends output o's entries.
template <class AddRow>
std::array<kernels::cpu::AxisTable, 3> axis_tables(const char* op, const Tensor& x, const std::array<int64_t, 3>& in,
                                                   const std::array<int64_t, 3>& out, AddRow add_row) {
  std::array<kernels::cpu::AxisTable, 3> tables;
  for (size_t i = 0; i < 3; ++i) {
    VOX_CHECK(out[i] >= 1 && in[i] >= 1, op, "input and output sizes must be >= 1, input ", x.shape(), ", output axis ", i,
              " of size ", out[i]);
    tables[i].in_size = in[i];
    tables[i].out_size = out[i];
    for (int64_t o = 0; o < out[i]; ++o) {
      add_row(i, o, tables[i]);
      tables[i].close_row();
    }
  }
  return tables;
}

struct PoolAxes {
  std::array<int64_t, 3> kernel, stride, padding, out;
};

inline PoolAxes pool_axes(const char* op, const Tensor& x, int spatial, const PoolOptions& o) {
  PoolAxes a;
  a.kernel = per_axis(op, "kernel", o.kernel, spatial, 1);
  a.stride = o.stride.empty() ? a.kernel : per_axis(op, "stride", o.stride, spatial, 1);
  a.padding = per_axis(op, "padding", o.padding, spatial, 0);
  const auto in = spatial_of(x, spatial);
  for (size_t i = 0; i < 3; ++i) {
    VOX_CHECK(a.kernel[i] >= 1 && a.stride[i] >= 1, op, "kernel and stride must be >= 1");
    VOX_CHECK(a.padding[i] >= 0 && 2 * a.padding[i] <= a.kernel[i], op, "padding ", a.padding[i],
              " must be at most half the kernel ", a.kernel[i]);
    VOX_CHECK(in[i] + 2 * a.padding[i] >= a.kernel[i], op, "kernel larger than the padded input, shape ", x.shape());
    a.out[i] = (in[i] + 2 * a.padding[i] - a.kernel[i]) / a.stride[i] + 1;
  }
  return a;
}
}  // namespace detail

inline Tensor avg_pool3d(const Tensor& x, const PoolOptions& options) {
  if (const auto c = detail::autocast_inputs("avg_pool3d", {&x}))
    return detail::without_autocast([&] { return avg_pool3d((*c)[0], options); });
  const int spatial = detail::volume_dims("avg_pool3d", x);
  const auto a = detail::pool_axes("avg_pool3d", x, spatial, options);
  const auto in = detail::spatial_of(x, spatial);
  const auto tables = detail::axis_tables("avg_pool3d", x, in, a.out, [&](size_t i, int64_t o, kernels::cpu::AxisTable& t) {
    const int64_t start = o * a.stride[i] - a.padding[i];
    const int64_t padded_end = std::min(start + a.kernel[i], in[i] + a.padding[i]);
    const int64_t lo = std::max<int64_t>(start, 0), hi = std::min(padded_end, in[i]);
    const double divisor = static_cast<double>(options.count_include_pad ? padded_end - start : hi - lo);
    for (int64_t j = lo; j < hi; ++j) t.add(j, 1.0 / divisor);
  });
  return detail::resample("avg_pool3d", "AvgPoolBackward", x, spatial, tables);
}

inline Tensor adaptive_avg_pool3d(const Tensor& x, const std::vector<int64_t>& output_size) {
  if (const auto c = detail::autocast_inputs("adaptive_avg_pool3d", {&x}))
    return detail::without_autocast([&] { return adaptive_avg_pool3d((*c)[0], output_size); });
  const int spatial = detail::volume_dims("adaptive_avg_pool3d", x);
  const auto out = detail::per_axis("adaptive_avg_pool3d", "output_size", output_size, spatial, 1);
  const auto in = detail::spatial_of(x, spatial);
  const auto tables = detail::axis_tables("adaptive_avg_pool3d", x, in, out, [&](size_t i, int64_t o, kernels::cpu::AxisTable& t) {
    const int64_t lo = (o * in[i]) / out[i], hi = ((o + 1) * in[i] + out[i] - 1) / out[i];
    for (int64_t j = lo; j < hi; ++j) t.add(j, 1.0 / static_cast<double>(hi - lo));
  });
  return detail::resample("adaptive_avg_pool3d", "AdaptiveAvgPoolBackward", x, spatial, tables);
}

inline Tensor max_pool3d(const Tensor& x, const PoolOptions& options) {
  constexpr const char* op = "max_pool3d";
  const int spatial = detail::volume_dims(op, x);
  if (x.dtype() == DType::f16 || x.dtype() == DType::bf16) return cast(max_pool3d(cast(x, DType::f32), options), x.dtype());
  const auto a = detail::pool_axes(op, x, spatial, options);
  const auto in = detail::spatial_of(x, spatial);
  std::array<std::vector<std::pair<int64_t, int64_t>>, 3> windows;
  for (size_t i = 0; i < 3; ++i)
    for (int64_t o = 0; o < a.out[i]; ++o) {
      const int64_t start = o * a.stride[i] - a.padding[i];
      windows[i].push_back({std::max<int64_t>(start, 0), std::min(start + a.kernel[i], in[i])});
    }
  const int64_t N = x.size(0), C = x.size(-1);
  const Tensor xc = x.detach().contiguous();
  const Shape out_shape = detail::channels_last_shape(N, a.out, spatial, C);
  const Device device = x.device();
  Tensor out = empty(out_shape, x.dtype(), device);
  const bool recording = autograd::should_record({x});
  Tensor positions = recording || device.is_cuda() ? empty(out_shape, DType::i64, device) : Tensor();  // the backward pass's
  if (device.is_cuda()) {
    std::vector<int64_t> flat_windows;  // [3][out][2]
    for (const auto& axis : windows)
      for (const auto& [begin, end] : axis) flat_windows.insert(flat_windows.end(), {begin, end});
    cuda_backend(op).max_pool(x.dtype(), N, C, in, a.out, flat_windows.data(), xc.raw_data(), out.raw_data(),
                              static_cast<int64_t*>(positions.raw_data()), device.index);
  } else {
    dispatch_float(x.dtype(), op, [&]<class T>() {
      kernels::cpu::max_pool_forward<T>(N, C, in, windows, xc.data<T>(), out.data<T>(), recording ? positions.data<int64_t>() : nullptr);
    });
  }
  if (!recording) return out;
  autograd::record("MaxPoolBackward", out, {x}, [positions, in_shape = x.shape(), N, C, in, a](const Tensor& g) {
    const Tensor gc = g.contiguous();
    Tensor gx = empty(in_shape, g.dtype(), g.device());
    const int64_t in_volume = in[0] * in[1] * in[2], out_volume = a.out[0] * a.out[1] * a.out[2];
    if (g.device().is_cuda()) {
      cuda_backend("max_pool3d backward")
          .max_pool_backward(g.dtype(), N, C, in_volume, out_volume, gc.raw_data(),
                             static_cast<const int64_t*>(positions.raw_data()), gx.raw_data(), g.device().index);
      return std::vector<Tensor>{gx};
    }
    dispatch_float(g.dtype(), "max_pool3d backward", [&]<class T>() {
      kernels::cpu::max_pool_backward<T>(N, C, in_volume, out_volume, gc.data<T>(), positions.data<int64_t>(), gx.data<T>());
    });
    return std::vector<Tensor>{gx};
  });
  return out;
}

}  // namespace vox
