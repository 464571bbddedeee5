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
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

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
  std::vector<double> v = detail::as_doubles(x);
  const double scale = (b_max - b_min) / (a_max - a_min), lo = std::min(b_min, b_max), hi = std::max(b_min, b_max);
  for (double& e : v) {
    e = (e - a_min) * scale + b_min;
    if (clip) e = std::clamp(e, lo, hi);
  }
  return detail::from_doubles(v, x.shape());
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

}  // namespace vox::data
