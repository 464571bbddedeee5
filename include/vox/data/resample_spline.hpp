#pragma once
// Cubic B-spline resampling and nnU-Net's scheme for anisotropic images.
//
//   - resample_bspline: to a new spacing with the same grid rule as resample_to_spacing (origin
//     kept, output index o samples input index min(o * new / old, n - 1)), by cubic B-spline
//     interpolation: the samples are first turned into spline coefficients (the exact recursive
//     prefilter of Unser, with mirror boundaries), then evaluated. This is what
//     scipy.ndimage.map_coordinates(order=3, mode="mirror") computes at the same positions.
//     Separable: one axis at a time, threaded. Output f32.
//   - resample_nnunet: nnU-Net's resample_data_or_seg rule. When the current (or target) spacing
//     is anisotropic (largest / smallest > 3) and one axis alone has the largest spacing, images
//     are interpolated in-plane with the cubic spline and out-of-plane with the nearest slice
//     (nnU-Net's order_z = 0), so thick slices are not blurred into each other; otherwise the
//     spline runs on all three axes. Labels always take the nearest voxel. (nnU-Net resizes with
//     skimage's edge mode and half-voxel-centred grid; vox keeps its origin-preserving grid.)
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.hpp"
#include "vox/data/resample.hpp"

namespace vox::data {

namespace spline_detail {

constexpr double pole = -0.26794919243112270;  // sqrt(3) - 2, the cubic B-spline's pole

inline int64_t mirror(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * n - 2;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

// Samples -> cubic B-spline coefficients, in place, mirror boundaries (exact initialisation).
inline void prefilter(double* c, int64_t n) {
  if (n == 1) return;
  const double z = pole, gain = (1 - z) * (1 - 1 / z);
  for (int64_t k = 0; k < n; ++k) c[k] *= gain;
  // causal initialisation: sum over the mirrored signal of z^k c[k]
  double zn = z, sum = c[0];
  const double z2n = std::pow(z, static_cast<double>(2 * n - 2));
  double iz = z2n / z;
  for (int64_t k = 1; k < n - 1; ++k) {
    sum += (zn + iz) * c[k];
    zn *= z;
    iz /= z;
  }
  sum += zn * c[n - 1];
  c[0] = sum / (1 - z2n);
  for (int64_t k = 1; k < n; ++k) c[k] += z * c[k - 1];
  c[n - 1] = (z / (z * z - 1)) * (z * c[n - 2] + c[n - 1]);
  for (int64_t k = n - 2; k >= 0; --k) c[k] = z * (c[k + 1] - c[k]);
}

inline void weights(double t, double w[4]) {
  const double u = 1 - t;
  w[0] = u * u * u / 6;
  w[1] = (3 * t * t * t - 6 * t * t + 4) / 6;
  w[2] = (-3 * t * t * t + 3 * t * t + 3 * t + 1) / 6;
  w[3] = t * t * t / 6;
}

enum class Kind { spline, nearest };

// Resamples `v` ([dims[2]][dims[1]][dims[0]] x channels) along one axis to `out` samples at
// positions pos[o] (input indices). Returns the new volume; dims[axis] becomes out.
inline std::vector<double> along_axis(const std::vector<double>& v, std::array<int64_t, 3>& dims, int64_t channels, int axis,
                                      const std::vector<double>& pos, Kind kind) {
  const int64_t n = dims[axis], m = static_cast<int64_t>(pos.size());
  std::array<int64_t, 3> out_dims = dims;
  out_dims[axis] = m;
  const int64_t in_stride[3] = {channels, dims[0] * channels, dims[0] * dims[1] * channels};
  const int64_t out_stride[3] = {channels, out_dims[0] * channels, out_dims[0] * out_dims[1] * channels};
  const int other1 = axis == 0 ? 1 : 0, other2 = axis == 2 ? 1 : 2;
  std::vector<double> out(static_cast<size_t>(out_dims[0] * out_dims[1] * out_dims[2] * channels));
  const int64_t lines = dims[other1] * dims[other2] * channels;
  kernels::cpu::parallel_for(0, lines, 64, [&](int64_t first, int64_t last) {
    std::vector<double> line(static_cast<size_t>(n));
    for (int64_t l = first; l < last; ++l) {
      const int64_t c = l % channels, q = (l / channels) % dims[other1], p = l / channels / dims[other1];
      const int64_t in_start = p * in_stride[other2] + q * in_stride[other1] + c;
      const int64_t out_start = p * out_stride[other2] + q * out_stride[other1] + c;
      for (int64_t t = 0; t < n; ++t) line[static_cast<size_t>(t)] = v[static_cast<size_t>(in_start + t * in_stride[axis])];
      if (kind == Kind::spline) prefilter(line.data(), n);
      for (int64_t o = 0; o < m; ++o) {
        const double x = pos[static_cast<size_t>(o)];
        double value;
        if (kind == Kind::nearest) {
          value = line[static_cast<size_t>(std::clamp<int64_t>(std::llround(x), 0, n - 1))];
        } else {
          const int64_t i = static_cast<int64_t>(std::floor(x));
          double w[4];
          weights(x - static_cast<double>(i), w);
          value = 0;
          for (int d = 0; d < 4; ++d) value += w[d] * line[static_cast<size_t>(mirror(i - 1 + d, n))];
        }
        out[static_cast<size_t>(out_start + o * out_stride[axis])] = value;
      }
    }
  });
  dims = out_dims;
  return out;
}

// The image resampled to `spacing`, each axis by `kinds[axis]`.
inline io::Image resample_separable(const io::Image& image, const std::array<double, 3>& spacing, const std::array<Kind, 3>& kinds) {
  std::array<int64_t, 3> dims{image.width(), image.height(), image.depth()};
  const int64_t channels = image.channels();
  std::array<std::vector<double>, 3> positions;
  for (int a = 0; a < 3; ++a) {
    const int64_t m = detail::resampled_size(dims[a], image.spacing[a], spacing[a], a, "resample_bspline");
    for (int64_t o = 0; o < m; ++o)
      positions[a].push_back(std::min(static_cast<double>(o) * spacing[a] / image.spacing[a], static_cast<double>(dims[a] - 1)));
  }
  std::vector<double> v = image.voxels.to_vector<double>();
  for (int a = 0; a < 3; ++a) v = along_axis(v, dims, channels, a, positions[a], kinds[a]);
  io::Image out;
  out.spacing = spacing;
  out.origin = image.origin;
  out.direction = image.direction;
  Shape shape{dims[2], dims[1], dims[0]};
  if (image.voxels.rank() == 4) shape.push_back(channels);
  out.voxels = empty(shape, DType::f32);
  float* o = out.voxels.data<float>();
  for (size_t i = 0; i < v.size(); ++i) o[i] = static_cast<float>(v[i]);
  return out;
}

// nnU-Net's get_do_separate_z / get_lowres_axis: the one axis with the largest spacing when
// largest / smallest > threshold, else -1.
inline int lowres_axis(const std::array<double, 3>& spacing, double threshold) {
  const double hi = *std::max_element(spacing.begin(), spacing.end()), lo = *std::min_element(spacing.begin(), spacing.end());
  if (hi / lo <= threshold) return -1;
  int axis = -1, count = 0;
  for (int a = 0; a < 3; ++a)
    if (spacing[a] == hi) axis = a, ++count;
  return count == 1 ? axis : -1;
}

}  // namespace spline_detail

inline io::Image resample_bspline(const io::Image& image, const std::array<double, 3>& spacing) {
  using spline_detail::Kind;
  return spline_detail::resample_separable(image, spacing, {Kind::spline, Kind::spline, Kind::spline});
}

// The axis nnU-Net treats separately (-1: none) for a resampling from `current` to `target`.
inline int nnunet_separate_axis(const std::array<double, 3>& current, const std::array<double, 3>& target, double threshold = 3.0) {
  const int axis = spline_detail::lowres_axis(current, threshold);
  return axis >= 0 ? axis : spline_detail::lowres_axis(target, threshold);
}

inline io::Image resample_nnunet(const io::Image& image, const std::array<double, 3>& spacing, bool is_label, double threshold = 3.0) {
  using spline_detail::Kind;
  if (is_label) return resample_to_spacing(image, spacing, Interpolation::nearest);
  const int separate = nnunet_separate_axis(image.spacing, spacing, threshold);
  std::array<Kind, 3> kinds{Kind::spline, Kind::spline, Kind::spline};
  if (separate >= 0) kinds[static_cast<size_t>(separate)] = Kind::nearest;
  return spline_detail::resample_separable(image, spacing, kinds);
}

}  // namespace vox::data
