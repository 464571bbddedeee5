#pragma once
// Intensity transforms with MONAI's semantics, deterministic, on CPU tensors of any shape and
// numeric dtype; results are f32.
//   scale_intensity_range  MONAI ScaleIntensityRange: (x - a_min) / (a_max - a_min) *
//                          (b_max - b_min) + b_min, then clipped to [b_min, b_max] if asked
//   apply_window           a CT window (centre, width) mapped to [0, 1] and clipped: the range
//                          [centre - width / 2, centre + width / 2]
//   z_score                MONAI NormalizeIntensity: (x - mean) / std with the population std
//                          (a zero std counts as 1); with nonzero_only, statistics over the
//                          non-zero voxels, which alone are changed
//   foreground_intensities nnU-Net's dataset fingerprint of intensities under the labels
//   ct_normalize           nnU-Net's CTNormalization: clip to the 0.5/99.5 foreground
//                          percentiles, then z-score with the dataset's foreground mean and std
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/parallel.hpp"
#include "vox/core/tensor.hpp"

namespace vox::data {

struct Window {
  double center = 0;
  double width = 1;
};

// Radiology's usual windows (Hounsfield units).
inline Window window_preset(const std::string& name) {
  struct Preset {
    const char* name;
    Window window;
  };
  static const Preset presets[] = {{"lung", {-600, 1500}},  {"mediastinum", {50, 350}}, {"abdomen", {40, 400}},
                                   {"liver", {60, 160}},    {"bone", {400, 1800}},      {"brain", {40, 80}},
                                   {"subdural", {75, 215}}, {"stroke", {40, 40}}};
  std::string known;
  for (const Preset& p : presets) {
    if (name == p.name) return p.window;
    known += known.empty() ? p.name : std::string(", ") + p.name;
  }
  fail("window_preset", "no window called \"", name, "\"; the presets are ", known);
}

namespace detail {
inline std::vector<double> as_doubles(const Tensor& x) { return x.to_vector<double>(); }
inline Tensor from_doubles(const std::vector<double>& v, const Shape& shape) {
  Tensor out = empty(shape, DType::f32);
  float* p = out.data<float>();
  for (size_t i = 0; i < v.size(); ++i) p[i] = static_cast<float>(v[i]);
  return out;
}
}  // namespace detail

inline Tensor scale_intensity_range(const Tensor& x, double a_min, double a_max, double b_min, double b_max, bool clip) {
  VOX_CHECK(a_max != a_min, "scale_intensity_range", "a_min and a_max are both ", a_min);
  // f32 out, computed in f64 per voxel; threaded, no f64 copy of the volume
  Tensor out = empty(x.shape(), DType::f32);
  out.copy_from(x);
  float* v = out.data<float>();
  const double scale = (b_max - b_min) / (a_max - a_min), lo = std::min(b_min, b_max), hi = std::max(b_min, b_max);
  kernels::cpu::parallel_for(0, out.numel(), 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      double r = (static_cast<double>(v[i]) - a_min) * scale + b_min;
      if (clip) r = std::clamp(r, lo, hi);
      v[i] = static_cast<float>(r);
    }
  });
  return out;
}

inline Tensor apply_window(const Tensor& x, Window w) {
  VOX_CHECK(w.width > 0, "apply_window", "width must be positive, got ", w.width);
  return scale_intensity_range(x, w.center - w.width / 2, w.center + w.width / 2, 0.0, 1.0, true);
}

inline Tensor z_score(const Tensor& x, bool nonzero_only = false) {
  std::vector<double> v = detail::as_doubles(x);
  double sum = 0, count = 0;
  for (double e : v)
    if (!nonzero_only || e != 0) sum += e, count += 1;
  if (count == 0) return detail::from_doubles(v, x.shape());  // nothing to normalise
  const double mean = sum / count;
  double squares = 0;
  for (double e : v)
    if (!nonzero_only || e != 0) squares += (e - mean) * (e - mean);
  double std_dev = std::sqrt(squares / count);
  if (std_dev == 0) std_dev = 1;
  for (double& e : v)
    if (!nonzero_only || e != 0) e = (e - mean) / std_dev;
  return detail::from_doubles(v, x.shape());
}

// numpy.percentile's default ("linear"): q in [0, 100] over the values, sorted.
inline double percentile(std::vector<double> values, double q) {
  VOX_CHECK(!values.empty(), "percentile", "no values");
  VOX_CHECK(q >= 0 && q <= 100, "percentile", "q must be in [0, 100], got ", q);
  std::sort(values.begin(), values.end());
  const double at = q / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(at)), hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (at - static_cast<double>(lo));
}

// nnU-Net's foreground intensity properties of a dataset (one channel): the voxels under a
// label > 0 of every training case, pooled. nnU-Net samples up to 10,000 per case with its own
// RNG; vox uses every foreground voxel, so the statistics are exact rather than sampled.
struct ForegroundIntensities {
  double mean = 0, std = 0, median = 0, min = 0, max = 0, percentile_00_5 = 0, percentile_99_5 = 0;
  int64_t voxels = 0;
};

inline ForegroundIntensities foreground_intensities(const std::vector<Tensor>& images, const std::vector<Tensor>& labels) {
  VOX_CHECK(images.size() == labels.size() && !images.empty(), "foreground_intensities", images.size(), " images and ", labels.size(),
            " labels; one label per image, at least one case");
  std::vector<double> pooled;
  for (size_t n = 0; n < images.size(); ++n) {
    VOX_CHECK(images[n].numel() == labels[n].numel(), "foreground_intensities", "case ", n, ": image and label sizes differ");
    const std::vector<double> v = detail::as_doubles(images[n]), l = detail::as_doubles(labels[n]);
    for (size_t i = 0; i < v.size(); ++i)
      if (l[i] > 0) pooled.push_back(v[i]);
  }
  VOX_CHECK(!pooled.empty(), "foreground_intensities", "no foreground voxel (label > 0) in any case");
  ForegroundIntensities f;
  f.voxels = static_cast<int64_t>(pooled.size());
  double sum = 0;
  for (double x : pooled) sum += x;
  f.mean = sum / static_cast<double>(pooled.size());
  double squares = 0;
  for (double x : pooled) squares += (x - f.mean) * (x - f.mean);
  f.std = std::sqrt(squares / static_cast<double>(pooled.size()));  // numpy's std: ddof 0
  f.median = percentile(pooled, 50);
  f.percentile_00_5 = percentile(pooled, 0.5);
  f.percentile_99_5 = percentile(pooled, 99.5);
  f.min = *std::min_element(pooled.begin(), pooled.end());
  f.max = *std::max_element(pooled.begin(), pooled.end());
  return f;
}

// nnU-Net's CTNormalization: clip to the foreground's 0.5 and 99.5 percentiles, then subtract
// its mean and divide by max(std, 1e-8). Output f32.
inline Tensor ct_normalize(const Tensor& x, const ForegroundIntensities& f) {
  std::vector<double> v = detail::as_doubles(x);
  const double std_dev = std::max(f.std, 1e-8);
  for (double& e : v) e = (std::clamp(e, f.percentile_00_5, f.percentile_99_5) - f.mean) / std_dev;
  return detail::from_doubles(v, x.shape());
}

}  // namespace vox::data
