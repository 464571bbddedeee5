#pragma once
// Upsampling (or any resize) of channels-last volumes to a given size: nearest (PyTorch's
// "nearest": source = floor(out * in / size)) and (bi/tri)linear with align_corners true or
// false. Both are separable resamplings; see kernels/cpu/resample.hpp.
#include <cmath>

#include "vox/ops/pool.hpp"

namespace vox {

inline Tensor upsample_nearest(const Tensor& x, const std::vector<int64_t>& output_size) {
  if (const auto c = detail::autocast_inputs("upsample_nearest", {&x}))
    return detail::without_autocast([&] { return upsample_nearest((*c)[0], output_size); });
  const int spatial = detail::volume_dims("upsample_nearest", x);
  const auto out = detail::per_axis("upsample_nearest", "output_size", output_size, spatial, 1);
  const auto in = detail::spatial_of(x, spatial);
  const auto tables = detail::axis_tables("upsample_nearest", x, in, out, [&](size_t i, int64_t o, kernels::cpu::AxisTable& t) {
    const double scale = static_cast<double>(in[i]) / static_cast<double>(out[i]);
    t.add(std::min<int64_t>(static_cast<int64_t>(std::floor(static_cast<double>(o) * scale)), in[i] - 1), 1.0);
  });
  return detail::resample("upsample_nearest", "UpsampleNearestBackward", x, spatial, tables);
}

inline Tensor upsample_trilinear(const Tensor& x, const std::vector<int64_t>& output_size, bool align_corners) {
  if (const auto c = detail::autocast_inputs("upsample_trilinear", {&x}))
    return detail::without_autocast([&] { return upsample_trilinear((*c)[0], output_size, align_corners); });
  const int spatial = detail::volume_dims("upsample_trilinear", x);
  const auto out = detail::per_axis("upsample_trilinear", "output_size", output_size, spatial, 1);
  const auto in = detail::spatial_of(x, spatial);
  const auto tables = detail::axis_tables("upsample_trilinear", x, in, out, [&](size_t i, int64_t o, kernels::cpu::AxisTable& t) {
    const double n_in = static_cast<double>(in[i]), n_out = static_cast<double>(out[i]);
    double src;
    if (align_corners) src = n_out > 1 ? static_cast<double>(o) * (n_in - 1) / (n_out - 1) : 0.0;
    else src = std::max(0.0, (static_cast<double>(o) + 0.5) * (n_in / n_out) - 0.5);
    const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(src)), in[i] - 1);
    const int64_t i1 = std::min<int64_t>(i0 + 1, in[i] - 1);
    const double frac = src - static_cast<double>(i0);
    t.add(i0, 1.0 - frac);
    if (frac != 0.0) t.add(i1, frac);
  });
  return detail::resample("upsample_trilinear", "UpsampleTrilinearBackward", x, spatial, tables);
}

}  // namespace vox
