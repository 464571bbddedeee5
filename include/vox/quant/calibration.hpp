#pragma once
// Calibration: the range of each quantized layer's input, observed over calibration data.
//
//   minmax      the smallest and largest value seen (the default)
//   percentile  the 99.999th percentile of the magnitudes (a 2048-bin histogram), as the range
//               (-t, t) clipped to the values seen
//   entropy     the symmetric range whose 128-bin quantization keeps the histogram closest in
//               KL divergence (TensorRT's method)
//
// All three follow ONNX Runtime's calibrators (onnxruntime.quantization.calibrate: MinMax-,
// Percentile- and EntropyCalibrater) with the defaults quantize_static gives them: the same
// histograms, bin edges computed in f32 as numpy computes them, the same thresholds, the same
// clipping to the values seen. test_quant checks the ranges against onnxruntime itself.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "vox/core/error.hpp"

namespace vox::quant {

enum class CalibrationMethod { minmax, percentile, entropy };

inline const char* calibration_method_name(CalibrationMethod m) {
  switch (m) {
    case CalibrationMethod::percentile: return "percentile";
    case CalibrationMethod::entropy: return "entropy";
    default: return "minmax";
  }
}
inline CalibrationMethod parse_calibration_method(const std::string& s) {
  if (s == "minmax") return CalibrationMethod::minmax;
  if (s == "percentile") return CalibrationMethod::percentile;
  if (s == "entropy") return CalibrationMethod::entropy;
  fail("quant", "calibration method \"", s, "\" is not one of minmax, percentile, entropy");
}

struct CalibrationOptions {
  CalibrationMethod method = CalibrationMethod::minmax;
  int64_t bins = 0;              // histogram bins; 0: ONNX Runtime's default (percentile 2048, entropy 128)
  double percentile = 99.999;    // percentile: the share of values kept
  bool symmetric = true;         // percentile: a histogram of magnitudes and a range (-t, t), as quantize_static's default
  int64_t quantized_bins = 128;  // entropy: the bins of the candidate quantization
};

namespace calibration_detail {

// f32 arithmetic kept apart (numpy computes each step in f32, never fused).
inline float f32_product(float a, float b) {
  volatile float p = a * b;
  return p;
}
inline float f32_sum(float a, float b) {
  volatile float s = a + b;
  return s;
}

// numpy.linspace(lo, hi, bins + 1) in f32: lo + i * ((hi - lo) / bins), the last edge hi.
inline std::vector<double> linspace_edges(float lo, float hi, int64_t bins) {
  if (lo == hi) lo -= 0.5f, hi += 0.5f;  // numpy.histogram widens an empty range
  const float step = (hi - lo) / static_cast<float>(bins);
  std::vector<double> edges(static_cast<size_t>(bins + 1));
  for (int64_t i = 0; i <= bins; ++i) edges[static_cast<size_t>(i)] = f32_sum(f32_product(static_cast<float>(i), step), lo);
  edges.back() = hi;
  return edges;
}

// numpy.histogram(values, bins=edges): bin i holds edges[i] <= v < edges[i + 1], the last bin
// also its right edge; values outside are not counted. The bin is guessed from the uniform
// spacing and settled against the edges, as numpy does.
inline void count(const float* x, int64_t n, const std::vector<double>& edges, std::vector<int64_t>& hist, bool magnitudes) {
  const int64_t bins = static_cast<int64_t>(edges.size()) - 1;
  const double lo = edges.front(), hi = edges.back(), norm = static_cast<double>(bins) / (hi - lo);
  for (int64_t i = 0; i < n; ++i) {
    const float v = magnitudes ? std::fabs(x[i]) : x[i];
    if (std::isnan(v) || v < edges.front() || v > edges.back()) continue;
    int64_t b = std::clamp<int64_t>(static_cast<int64_t>((static_cast<double>(v) - lo) * norm), 0, bins - 1);
    while (b > 0 && v < edges[static_cast<size_t>(b)]) --b;
    while (b < bins - 1 && v >= edges[static_cast<size_t>(b + 1)]) ++b;
    ++hist[static_cast<size_t>(b)];
  }
}

}  // namespace calibration_detail

// Collects one tensor's values over calibration batches and gives its range.
class RangeObserver {
 public:
  explicit RangeObserver(CalibrationOptions options = {}) : o_(options) {
    if (o_.bins == 0) o_.bins = o_.method == CalibrationMethod::percentile ? 2048 : 128;
    VOX_CHECK(o_.bins >= 1 && o_.quantized_bins >= 1, "quant::RangeObserver", "needs at least one bin");
    VOX_CHECK(o_.percentile >= 0 && o_.percentile <= 100, "quant::RangeObserver", "percentile ", o_.percentile, " is outside [0, 100]");
  }

  // One batch of n values (NaNs are ignored, as numpy's nanmin and nanmax ignore them).
  void observe(const float* x, int64_t n) {
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    for (int64_t i = 0; i < n; ++i)
      if (!std::isnan(x[i])) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
    if (!(lo <= hi)) lo = hi = 0.0f;  // no value: ONNX Runtime records a range of zeros
    VOX_CHECK(std::isfinite(lo) && std::isfinite(hi), "quant::RangeObserver", "calibration data holds an infinity");
    min_ = batches_ ? std::min(min_, lo) : lo;
    max_ = batches_ ? std::max(max_, hi) : hi;
    if (o_.method == CalibrationMethod::percentile && o_.symmetric) add_magnitudes(x, n);
    else if (o_.method != CalibrationMethod::minmax) add_values(x, n, std::max(std::fabs(lo), std::fabs(hi)));
    ++batches_;
  }
  int64_t batches() const { return batches_; }

  // The calibrated range [low, high].
  std::pair<float, float> range() const {
    VOX_CHECK(batches_ > 0, "quant::RangeObserver", "has seen no calibration data");
    switch (o_.method) {
      case CalibrationMethod::percentile: return percentile_range();
      case CalibrationMethod::entropy: return entropy_range();
      default: return {min_, max_};
    }
  }

  const std::vector<int64_t>& histogram() const { return hist_; }
  const std::vector<double>& edges() const { return edges_; }

 private:
  // ONNX Runtime's HistogramCollector.collect_value and merge_histogram: bins over [-t, t], t the
  // first batch's largest magnitude; a later batch beyond t widens the range by whole bins.
  void add_values(const float* x, int64_t n, float t) {
    using namespace calibration_detail;
    if (hist_.empty()) {
      threshold_ = t;
      edges_ = linspace_edges(-t, t, o_.bins);
      hist_.assign(static_cast<size_t>(o_.bins), 0);
      count(x, n, edges_, hist_, false);
      return;
    }
    if (t <= threshold_) {
      count(x, n, edges_, hist_, false);
      return;
    }
    const size_t old_bins = hist_.size();
    int64_t half = 0;
    float widened = t;
    if (threshold_ != 0) {  // f32, as numpy computes it from ONNX Runtime's f32 thresholds
      const float stride = 2.0f * threshold_ / static_cast<float>(old_bins);
      half = static_cast<int64_t>(std::floor((t - threshold_) / stride)) + 1;
      widened = f32_sum(f32_product(static_cast<float>(half), stride), threshold_);
    }
    std::vector<int64_t> fresh(old_bins + 2 * static_cast<size_t>(half), 0);
    edges_ = linspace_edges(-widened, widened, static_cast<int64_t>(fresh.size()));
    count(x, n, edges_, fresh, false);
    for (size_t i = 0; i < old_bins; ++i) fresh[i + static_cast<size_t>(half)] += hist_[i];
    hist_ = std::move(fresh);
    threshold_ = widened;
  }

  // ONNX Runtime's HistogramCollector.collect_absolute_value: magnitudes, bins over [min, max] of
  // the first batch's; a later batch beyond the last edge adds bins of the same width.
  void add_magnitudes(const float* x, int64_t n) {
    using namespace calibration_detail;
    float lo = std::numeric_limits<float>::infinity(), hi = 0.0f;
    for (int64_t i = 0; i < n; ++i)
      if (!std::isnan(x[i])) lo = std::min(lo, std::fabs(x[i])), hi = std::max(hi, std::fabs(x[i]));
    if (hist_.empty()) {
      edges_ = linspace_edges(std::isfinite(lo) ? lo : 0.0f, hi, o_.bins);
      hist_.assign(static_cast<size_t>(o_.bins), 0);
      count(x, n, edges_, hist_, true);
      return;
    }
    if (hi > edges_.back()) {
      // numpy.arange(last + width, hi + width, width) on f32 scalars: the first two values in
      // f32, the rest f64 steps of their difference; this batch counts on those f64 edges, which
      // ONNX Runtime then stores as f32.
      const float width = f32_sum(static_cast<float>(edges_[1]), -static_cast<float>(edges_[0]));
      const float first = f32_sum(static_cast<float>(edges_.back()), width), second = f32_sum(first, width);
      const float stop = f32_sum(hi, width);
      const int64_t extra = static_cast<int64_t>(std::ceil((static_cast<double>(stop) - first) / width));
      const double step = static_cast<double>(second) - first;
      for (int64_t i = 0; i < extra; ++i) edges_.push_back(static_cast<double>(first) + static_cast<double>(i) * step);
      hist_.resize(edges_.size() - 1, 0);
      count(x, n, edges_, hist_, true);
      for (double& e : edges_) e = static_cast<float>(e);
      return;
    }
    count(x, n, edges_, hist_, true);
  }

  // The first bin where the cumulative share reaches `share` (numpy.searchsorted, left).
  int64_t cdf_index(double share) const {
    int64_t total = 0;
    for (int64_t h : hist_) total += h;
    double cumulative = 0;
    for (size_t i = 0; i < hist_.size(); ++i) {
      cumulative += static_cast<double>(hist_[i]) / static_cast<double>(total);
      if (cumulative >= share) return static_cast<int64_t>(i);
    }
    return static_cast<int64_t>(hist_.size());
  }

  std::pair<float, float> clip_to_seen(float lo, float hi) const { return {std::max(lo, min_), std::min(hi, max_)}; }

  std::pair<float, float> percentile_range() const {
    if (o_.symmetric) {
      const auto t = static_cast<float>(edges_[static_cast<size_t>(cdf_index(o_.percentile / 100.0))]);
      return clip_to_seen(-t, t);
    }
    const double cut = (100.0 - o_.percentile) / 200.0;
    return clip_to_seen(static_cast<float>(edges_[static_cast<size_t>(cdf_index(cut))]),
                        static_cast<float>(edges_[static_cast<size_t>(cdf_index(1.0 - cut))]));
  }

  // ONNX Runtime's smooth_distribution: zeros become eps, the non-zeros give that mass back.
  static bool smooth(std::vector<double>& p) {
    int64_t zeros = 0;
    for (double v : p) zeros += v == 0;
    const int64_t nonzeros = static_cast<int64_t>(p.size()) - zeros;
    if (nonzeros == 0) return false;
    const double eps = 0.0001, eps1 = eps * static_cast<double>(zeros) / static_cast<double>(nonzeros);
    for (double& v : p) v = v == 0 ? eps : v - eps1;
    return true;
  }
  // scipy.stats.entropy(p, q): both normalised, sum p log(p / q).
  static double kl_divergence(const std::vector<double>& p, const std::vector<double>& q) {
    double sp = 0, sq = 0;
    for (size_t i = 0; i < p.size(); ++i) sp += p[i], sq += q[i];
    double kl = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      const double a = p[i] / sp, b = q[i] / sq;
      if (a > 0) kl += a * std::log(a / b);
    }
    return kl;
  }

  // ONNX Runtime's get_entropy_threshold: for each candidate [-edge, edge] around the middle bin
  // (from quantized_bins wide to the whole histogram), the outliers folded into the end bins (p)
  // against p merged into quantized_bins and spread back over its non-empty bins (q).
  std::pair<float, float> entropy_range() const {
    const int64_t bins = static_cast<int64_t>(hist_.size()), zero_bin = bins / 2, half_q = o_.quantized_bins / 2;
    double best = std::numeric_limits<double>::infinity();
    std::pair<float, float> chosen{0.0f, 0.0f};
    bool any = false;
    for (int64_t i = half_q; i <= zero_bin; ++i) {
      const int64_t start = zero_bin - i, end = std::min(zero_bin + i + 1, bins);
      const std::vector<int64_t> sliced(hist_.begin() + start, hist_.begin() + end);
      std::vector<double> p(sliced.begin(), sliced.end());
      for (int64_t j = 0; j < start; ++j) p.front() += static_cast<double>(hist_[static_cast<size_t>(j)]);
      for (int64_t j = end; j < bins; ++j) p.back() += static_cast<double>(hist_[static_cast<size_t>(j)]);
      const int64_t size = static_cast<int64_t>(sliced.size()), merged = size / o_.quantized_bins;
      std::vector<int64_t> quantized(static_cast<size_t>(o_.quantized_bins), 0);
      for (int64_t b = 0; b < o_.quantized_bins; ++b)
        for (int64_t j = b * merged; j < b * merged + merged; ++j) quantized[static_cast<size_t>(b)] += sliced[static_cast<size_t>(j)];
      for (int64_t j = o_.quantized_bins * merged; j < size; ++j) quantized.back() += sliced[static_cast<size_t>(j)];
      std::vector<double> q(static_cast<size_t>(size), 0.0);
      for (int64_t b = 0; b < o_.quantized_bins; ++b) {
        int64_t nonzero = 0;
        for (int64_t j = b * merged; j < b * merged + merged; ++j) nonzero += p[static_cast<size_t>(j)] != 0;
        if (nonzero == 0) continue;
        // numpy stores the quotient into an int64 array: truncated toward zero
        const auto share = static_cast<double>(quantized[static_cast<size_t>(b)] / nonzero);
        for (int64_t j = b * merged; j < b * merged + merged; ++j) q[static_cast<size_t>(j)] = share;
      }
      const double divergence = smooth(p) && smooth(q) ? kl_divergence(p, q) : std::numeric_limits<double>::infinity();
      if (!any || divergence < best) best = divergence, chosen = {static_cast<float>(edges_[static_cast<size_t>(start)]), static_cast<float>(edges_[static_cast<size_t>(end)])}, any = true;
    }
    VOX_CHECK(any, "quant::RangeObserver", "entropy calibration needs at least as many histogram bins (", bins, ") as quantized bins (",
              o_.quantized_bins, ")");
    return clip_to_seen(chosen.first, chosen.second);
  }

  CalibrationOptions o_;
  int64_t batches_ = 0;
  float min_ = 0, max_ = 0;
  std::vector<int64_t> hist_;
  std::vector<double> edges_;  // f32 values, but for the f64 edges of a batch that extends them
  float threshold_ = 0;
};

}  // namespace vox::quant
