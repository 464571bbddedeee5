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
inline constexpr int64_t kBlock = 1 << 16;  // voxels per task
inline std::vector<double> as_doubles(const Tensor& x) { return x.to_vector<double>(); }
inline Tensor f32_copy(const Tensor& x) {
  Tensor out = empty(x.shape(), DType::f32);
  out.copy_from(x);
  return out;
}
}  // namespace detail

inline Tensor scale_intensity_range(const Tensor& x, double a_min, double a_max, double b_min, double b_max, bool clip) {
  VOX_CHECK(a_max != a_min, "scale_intensity_range", "a_min and a_max are both ", a_min);
  // f32 out, computed in f64 per voxel; threaded, no f64 copy of the volume
  Tensor out = detail::f32_copy(x);
  float* v = out.data<float>();
  const double scale = (b_max - b_min) / (a_max - a_min), lo = std::min(b_min, b_max), hi = std::max(b_min, b_max);
  kernels::cpu::parallel_for(0, out.numel(), detail::kBlock, [&](int64_t b, int64_t e) {
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
  // One f32 copy and in-place passes: a CT volume needs no f64 copy. The statistics are summed in
  // f64 over fixed blocks, in block order, so that the thread count does not change them.
  Tensor out = detail::f32_copy(x);
  float* v = out.data<float>();
  const int64_t n = out.numel(), blocks = (n + detail::kBlock - 1) / detail::kBlock;
  auto block_sums = [&](auto&& term) {
    std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
    kernels::cpu::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        double s = 0;
        for (int64_t i = b * detail::kBlock; i < std::min(n, (b + 1) * detail::kBlock); ++i)
          if (!nonzero_only || v[i] != 0) s += term(static_cast<double>(v[i]));
        partial[static_cast<size_t>(b)] = s;
      }
    });
    double total = 0;
    for (double s : partial) total += s;
    return total;
  };
  const double count = block_sums([](double) { return 1.0; });
  if (count == 0) return out;  // nothing to normalise
  const double mean = block_sums([](double e) { return e; }) / count;
  double std_dev = std::sqrt(block_sums([&](double e) { return (e - mean) * (e - mean); }) / count);
  if (std_dev == 0) std_dev = 1;
  kernels::cpu::parallel_for(0, n, detail::kBlock, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      if (!nonzero_only || v[i] != 0) v[i] = static_cast<float>((static_cast<double>(v[i]) - mean) / std_dev);
  });
  return out;
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
  Tensor out = detail::f32_copy(x);
  float* v = out.data<float>();
  const double std_dev = std::max(f.std, 1e-8);
  kernels::cpu::parallel_for(0, out.numel(), detail::kBlock, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      v[i] = static_cast<float>((std::clamp(static_cast<double>(v[i]), f.percentile_00_5, f.percentile_99_5) - f.mean) / std_dev);
  });
  return out;
}

}  // namespace vox::data
