#pragma once
// Resampling an image to a new voxel spacing, keeping its world geometry:
//   - the output size along each axis is max(1, round(n * spacing / new_spacing)) (nnU-Net's rule);
//   - voxel (0, 0, 0) stays where it was (the origin is unchanged, as in ITK and MONAI's Spacing)
//     and output index i' samples the input at continuous index i' * new_spacing / spacing;
//   - samples past the last input voxel take the edge value;
//   - linear: trilinear interpolation of every channel, output f32 (for images);
//     nearest: the nearest input voxel, dtype kept (for labels, which must never blend).
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.hpp"
#include "vox/io/image.hpp"

namespace vox::data {

enum class Interpolation { linear, nearest };

namespace detail {
// For each output index along one axis: the two input indices around its sample point and the
// weight of the second.
struct AxisSamples {
  std::vector<int64_t> lo, hi;
  std::vector<double> weight;
};

inline AxisSamples axis_samples(int64_t n_in, int64_t n_out, double step) {
  AxisSamples s;
  for (int64_t o = 0; o < n_out; ++o) {
    const double x = std::min(static_cast<double>(o) * step, static_cast<double>(n_in - 1));
    const int64_t lo = static_cast<int64_t>(std::floor(x));
    s.lo.push_back(lo);
    s.hi.push_back(std::min(lo + 1, n_in - 1));
    s.weight.push_back(x - static_cast<double>(lo));
  }
  return s;
}
// nnU-Net's output size along one axis: max(1, round(n * spacing / new_spacing)).
inline int64_t resampled_size(int64_t n, double spacing, double new_spacing, int axis, const char* op) {
  VOX_CHECK(new_spacing > 0 && std::isfinite(new_spacing), op, "spacing must be positive, got ", new_spacing, " for axis ", axis);
  const double scaled = static_cast<double>(n) * spacing / new_spacing;
  VOX_CHECK(scaled < double(int64_t{1} << 31), op, "axis ", axis, " would have ", scaled, " voxels");
  return std::max<int64_t>(1, std::llround(scaled));
}
}  // namespace detail

inline io::Image resample_to_spacing(const io::Image& image, const std::array<double, 3>& new_spacing, Interpolation mode) {
  for (int a = 0; a < 3; ++a)
    VOX_CHECK(new_spacing[a] > 0 && std::isfinite(new_spacing[a]), "resample_to_spacing", "spacing must be positive, got ",
              new_spacing[a], " for axis ", a);
  const int64_t in_size[3] = {image.width(), image.height(), image.depth()}, channels = image.channels();
  int64_t out_size[3];
  detail::AxisSamples axes[3];
  for (int a = 0; a < 3; ++a) {
    out_size[a] = detail::resampled_size(in_size[a], image.spacing[a], new_spacing[a], a, "resample_to_spacing");
    axes[a] = detail::axis_samples(in_size[a], out_size[a], new_spacing[a] / image.spacing[a]);
  }
  io::Image out;
  out.spacing = new_spacing;
  out.origin = image.origin;
  out.direction = image.direction;
  Shape shape{out_size[2], out_size[1], out_size[0]};
  if (image.voxels.rank() == 4) shape.push_back(channels);
  const int64_t nx = in_size[0], ny = in_size[1];
  auto index = [&](int64_t i, int64_t j, int64_t k) { return ((k * ny + j) * nx + i) * channels; };
  if (mode == Interpolation::nearest) {
    const Tensor src = image.voxels.contiguous();
    out.voxels = empty(shape, src.dtype());
    const size_t elem = dtype_size(src.dtype());
    const auto* in = static_cast<const unsigned char*>(src.raw_data());
    auto* o = static_cast<unsigned char*>(out.voxels.raw_data());
    auto nearest = [](const detail::AxisSamples& s, int64_t t) { return s.weight[static_cast<size_t>(t)] < 0.5 ? s.lo[static_cast<size_t>(t)] : s.hi[static_cast<size_t>(t)]; };
    int64_t w = 0;
    for (int64_t k = 0; k < out_size[2]; ++k)
      for (int64_t j = 0; j < out_size[1]; ++j)
        for (int64_t i = 0; i < out_size[0]; ++i, w += channels)
          std::memcpy(o + w * elem, in + index(nearest(axes[0], i), nearest(axes[1], j), nearest(axes[2], k)) * elem,
                      static_cast<size_t>(channels) * elem);
    return out;
  }
  const Tensor source = image.voxels.to(DType::f32).contiguous();
  const float* in = source.data<float>();
  out.voxels = empty(shape, DType::f32);
  float* o = out.voxels.data<float>();
  // output slices are independent: threaded over k
  kernels::cpu::parallel_for(0, out_size[2], 1, [&](int64_t k_begin, int64_t k_end) {
    for (int64_t k = k_begin; k < k_end; ++k) {
      int64_t w = k * out_size[1] * out_size[0] * channels;
      const auto zk = static_cast<size_t>(k);
      const int64_t k0 = axes[2].lo[zk], k1 = axes[2].hi[zk];
      const double fz = axes[2].weight[zk];
      for (int64_t j = 0; j < out_size[1]; ++j) {
        const auto yj = static_cast<size_t>(j);
        const int64_t j0 = axes[1].lo[yj], j1 = axes[1].hi[yj];
        const double fy = axes[1].weight[yj];
        for (int64_t i = 0; i < out_size[0]; ++i) {
          const auto xi = static_cast<size_t>(i);
          const int64_t i0 = axes[0].lo[xi], i1 = axes[0].hi[xi];
          const double fx = axes[0].weight[xi];
          for (int64_t c = 0; c < channels; ++c, ++w) {
            auto at = [&](int64_t a, int64_t b, int64_t d) { return static_cast<double>(in[static_cast<size_t>(index(a, b, d) + c)]); };
            const double c00 = at(i0, j0, k0) * (1 - fx) + at(i1, j0, k0) * fx, c10 = at(i0, j1, k0) * (1 - fx) + at(i1, j1, k0) * fx;
            const double c01 = at(i0, j0, k1) * (1 - fx) + at(i1, j0, k1) * fx, c11 = at(i0, j1, k1) * (1 - fx) + at(i1, j1, k1) * fx;
            o[w] = static_cast<float>((c00 * (1 - fy) + c10 * fy) * (1 - fz) + (c01 * (1 - fy) + c11 * fy) * fz);
          }
        }
      }
    }
  });
  return out;
}

}  // namespace vox::data
