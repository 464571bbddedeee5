#pragma once
// Segmentation and classification metrics with MONAI's semantics (monai.metrics 1.2):
//   - dice_per_class / iou_per_class: on label maps; a class absent from the ground truth gives
//     NaN, as MONAI's DiceMetric with ignore_empty=True (the default): it is then left out of
//     means (mean_ignoring_nan). Absent from both prediction and truth is also NaN.
//   - hausdorff_distance (percentile 95 by default) and average_surface_distance, per class, in
//     the spacing's units (mm): surfaces are the voxels of a mask that a 6-connected erosion
//     removes (MONAI's get_mask_edges), distances come from an exact Euclidean distance
//     transform with anisotropic spacing (scipy's distance_transform_edt); undirected Hausdorff is
//     the larger of the two directed percentiles; ASD is one-directed (prediction to truth) unless
//     symmetric. An empty truth or prediction surface gives infinity, both empty NaN (MONAI).
//   - confusion_matrix, accuracy, and roc_auc (Mann-Whitney U with ties counted half, as
//     sklearn's and MONAI's compute_roc_auc) for classification.
// Label maps are integer tensors [D, H, W] (or any shape; distances need 3-D); values are class
// indices.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/cpu/parallel.hpp"
#include "vox/core/tensor.hpp"

namespace vox::metrics {

namespace detail {
inline std::vector<int64_t> labels_of(const Tensor& t, const char* what) {
  VOX_CHECK(is_integral(t.dtype()) || t.dtype() == DType::boolean, what, "label maps must be integer tensors, got ", dtype_name(t.dtype()));
  return t.to_vector<int64_t>();
}
inline void same_shape(const Tensor& a, const Tensor& b, const char* what) {
  VOX_CHECK(a.shape() == b.shape(), what, "prediction ", a.shape(), " and truth ", b.shape(), " differ in shape");
}
}  // namespace detail

inline double mean_ignoring_nan(const std::vector<double>& v) {
  double sum = 0;
  int n = 0;
  for (double x : v)
    if (!std::isnan(x)) sum += x, ++n;
  return n ? sum / n : std::numeric_limits<double>::quiet_NaN();
}

// Dice of every class 0..classes-1 (NaN where the truth lacks the class).
inline std::vector<double> dice_per_class(const Tensor& prediction, const Tensor& truth, int64_t classes) {
  detail::same_shape(prediction, truth, "dice");
  const auto p = detail::labels_of(prediction, "dice"), t = detail::labels_of(truth, "dice");
  std::vector<double> inter(static_cast<size_t>(classes), 0), np(static_cast<size_t>(classes), 0), nt(static_cast<size_t>(classes), 0);
  for (size_t i = 0; i < p.size(); ++i) {
    VOX_CHECK(t[i] >= 0 && t[i] < classes && p[i] >= 0 && p[i] < classes, "dice", "label value ", t[i] < 0 || t[i] >= classes ? t[i] : p[i],
              " at voxel ", i, " is not one of the ", classes, " classes");
    np[static_cast<size_t>(p[i])] += 1, nt[static_cast<size_t>(t[i])] += 1;
    if (p[i] == t[i]) inter[static_cast<size_t>(t[i])] += 1;
  }
  std::vector<double> out(static_cast<size_t>(classes));
  for (size_t c = 0; c < out.size(); ++c)
    out[c] = nt[c] == 0 ? std::numeric_limits<double>::quiet_NaN() : 2 * inter[c] / (np[c] + nt[c]);
  return out;
}

inline std::vector<double> iou_per_class(const Tensor& prediction, const Tensor& truth, int64_t classes) {
  std::vector<double> d = dice_per_class(prediction, truth, classes);
  for (double& x : d)
    if (!std::isnan(x)) x = x / (2 - x);  // IoU = D / (2 - D)
  return d;
}

// counts[t][p]: voxels (or samples) of true class t predicted as p.
inline std::vector<std::vector<int64_t>> confusion_matrix(const Tensor& prediction, const Tensor& truth, int64_t classes) {
  detail::same_shape(prediction, truth, "confusion_matrix");
  const auto p = detail::labels_of(prediction, "confusion_matrix"), t = detail::labels_of(truth, "confusion_matrix");
  std::vector<std::vector<int64_t>> m(static_cast<size_t>(classes), std::vector<int64_t>(static_cast<size_t>(classes), 0));
  for (size_t i = 0; i < p.size(); ++i) {
    VOX_CHECK(t[i] >= 0 && t[i] < classes && p[i] >= 0 && p[i] < classes, "confusion_matrix", "class ", t[i], " or ", p[i], " at ", i,
              " is outside [0, ", classes, ")");
    ++m[static_cast<size_t>(t[i])][static_cast<size_t>(p[i])];
  }
  return m;
}

inline double accuracy(const Tensor& prediction, const Tensor& truth) {
  detail::same_shape(prediction, truth, "accuracy");
  const auto p = detail::labels_of(prediction, "accuracy"), t = detail::labels_of(truth, "accuracy");
  VOX_CHECK(!p.empty(), "accuracy", "no samples");
  int64_t right = 0;
  for (size_t i = 0; i < p.size(); ++i) right += p[i] == t[i];
  return static_cast<double>(right) / static_cast<double>(p.size());
}

// Area under the ROC curve of scores for the positive class (truth 1) against the rest (truth 0).
inline double roc_auc(const std::vector<double>& scores, const std::vector<int64_t>& truth) {
  VOX_CHECK(scores.size() == truth.size(), "roc_auc", scores.size(), " scores for ", truth.size(), " labels");
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // ranks with ties averaged
  std::vector<double> rank(scores.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && scores[order[j + 1]] == scores[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) rank[order[k]] = 0.5 * double(i + j) + 1;
    i = j + 1;
  }
  double positives = 0, negatives = 0, rank_sum = 0;
  for (size_t i = 0; i < truth.size(); ++i) {
    VOX_CHECK(truth[i] == 0 || truth[i] == 1, "roc_auc", "labels must be 0 or 1, got ", truth[i]);
    if (truth[i] == 1) positives += 1, rank_sum += rank[i];
    else negatives += 1;
  }
  VOX_CHECK(positives > 0 && negatives > 0, "roc_auc", "needs both positive and negative samples");
  return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives);
}

// ROC AUC of class probabilities [N, C] against classes [N]: with two classes, that of the
// second class's score; with more, the mean of each class against the rest over the classes that
// occur and do not make up every sample (MONAI's compute_roc_auc, average="macro"). NaN when no
// class can be scored.
inline double roc_auc_of_probabilities(const Tensor& probabilities, const std::vector<int64_t>& truth) {
  VOX_CHECK(probabilities.rank() == 2 && probabilities.size(0) == static_cast<int64_t>(truth.size()), "roc_auc",
            "probabilities must be [N, C] for N = ", truth.size(), " samples, got ", probabilities.shape());
  const int64_t n = probabilities.size(0), classes = probabilities.size(1);
  const std::vector<double> p = probabilities.contiguous().to_vector<double>();
  auto one_vs_rest = [&](int64_t c) -> double {
    std::vector<double> scores(static_cast<size_t>(n));
    std::vector<int64_t> positive(static_cast<size_t>(n));
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) {
      scores[static_cast<size_t>(i)] = p[static_cast<size_t>(i * classes + c)];
      count += positive[static_cast<size_t>(i)] = truth[static_cast<size_t>(i)] == c;
    }
    if (count == 0 || count == n) return std::numeric_limits<double>::quiet_NaN();
    return roc_auc(scores, positive);
  };
  if (classes == 2) return one_vs_rest(1);
  double sum = 0;
  int64_t scored = 0;
  for (int64_t c = 0; c < classes; ++c)
    if (const double a = one_vs_rest(c); !std::isnan(a)) sum += a, ++scored;
  return scored ? sum / double(scored) : std::numeric_limits<double>::quiet_NaN();
}

// ---- surface distances

namespace detail {

// 1-D squared Euclidean distance transform of f (Felzenszwalb and Huttenlocher), samples `step` apart.
inline void edt_1d(const double* f, double* d, int64_t n, double step, std::vector<int64_t>& v, std::vector<double>& z) {
  const double inf = std::numeric_limits<double>::infinity();
  int64_t k = 0;
  v[0] = -1;
  for (int64_t q = 0; q < n; ++q) {
    if (f[q] == inf) continue;
    if (v[0] < 0) {
      v[0] = q, z[0] = -inf, z[1] = inf, k = 0;
      continue;
    }
    while (true) {
      const int64_t p = v[static_cast<size_t>(k)];
      const double s = ((f[q] + double(q * q) * step * step) - (f[p] + double(p * p) * step * step)) / (2 * step * step * double(q - p));
      if (s <= z[static_cast<size_t>(k)]) {
        if (k == 0) {
          v[0] = q, z[0] = -inf, z[1] = inf;
          goto next;
        }
        --k;
        continue;
      }
      ++k;
      v[static_cast<size_t>(k)] = q, z[static_cast<size_t>(k)] = s, z[static_cast<size_t>(k) + 1] = inf;
      break;
    }
  next:;
  }
  if (v[0] < 0) {
    for (int64_t q = 0; q < n; ++q) d[q] = inf;
    return;
  }
  k = 0;
  for (int64_t q = 0; q < n; ++q) {
    while (z[static_cast<size_t>(k) + 1] < double(q)) ++k;
    const int64_t p = v[static_cast<size_t>(k)];
    d[q] = step * step * double((q - p) * (q - p)) + f[p];
  }
}

// Distances (in spacing units) from every voxel to the nearest `target` voxel. Dims (i, j, k).
inline std::vector<double> distance_to(const std::vector<uint8_t>& target, const std::array<int64_t, 3>& n, const std::array<double, 3>& spacing) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> d(target.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = target[i] ? 0 : inf;
  const int64_t stride[3] = {1, n[0], n[0] * n[1]};
  for (int a = 0; a < 3; ++a) {
    const int o1 = a == 0 ? 1 : 0, o2 = a == 2 ? 1 : 2;
    kernels::cpu::parallel_for(0, n[o1] * n[o2], 16, [&](int64_t first, int64_t last) {
      std::vector<double> f(static_cast<size_t>(n[a])), out(static_cast<size_t>(n[a])), z(static_cast<size_t>(n[a]) + 1);
      std::vector<int64_t> v(static_cast<size_t>(n[a]));
      for (int64_t line = first; line < last; ++line) {
        const int64_t start = (line % n[o1]) * stride[o1] + (line / n[o1]) * stride[o2];
        for (int64_t t = 0; t < n[a]; ++t) f[static_cast<size_t>(t)] = d[static_cast<size_t>(start + t * stride[a])];
        edt_1d(f.data(), out.data(), n[a], spacing[a], v, z);
        for (int64_t t = 0; t < n[a]; ++t) d[static_cast<size_t>(start + t * stride[a])] = out[static_cast<size_t>(t)];
      }
    });
  }
  for (double& x : d) x = std::sqrt(x);
  return d;
}

// The surface of a mask: its voxels that a 6-connected erosion (outside counted empty) removes.
inline std::vector<uint8_t> surface(const std::vector<uint8_t>& m, const std::array<int64_t, 3>& n) {
  std::vector<uint8_t> s(m.size(), 0);
  for (int64_t k = 0; k < n[2]; ++k)
    for (int64_t j = 0; j < n[1]; ++j)
      for (int64_t i = 0; i < n[0]; ++i) {
        const int64_t at = (k * n[1] + j) * n[0] + i;
        if (!m[static_cast<size_t>(at)]) continue;
        auto in = [&](int64_t x, int64_t y, int64_t z) {
          return x >= 0 && y >= 0 && z >= 0 && x < n[0] && y < n[1] && z < n[2] && m[static_cast<size_t>((z * n[1] + y) * n[0] + x)];
        };
        const bool interior = in(i - 1, j, k) && in(i + 1, j, k) && in(i, j - 1, k) && in(i, j + 1, k) && in(i, j, k - 1) && in(i, j, k + 1);
        s[static_cast<size_t>(at)] = !interior;
      }
  return s;
}

// numpy.percentile, linear.
inline double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double at = q / 100.0 * double(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(at)), hi = std::min(lo + 1, v.size() - 1);
  if (std::isinf(v[lo]) || std::isinf(v[hi])) return v[hi];
  return v[lo] + (v[hi] - v[lo]) * (at - double(lo));
}

// Distances from every surface voxel of `from` to the surface of `to` (MONAI's get_surface_distance).
inline std::vector<double> surface_distances(const std::vector<uint8_t>& from, const std::vector<uint8_t>& to,
                                             const std::array<int64_t, 3>& n, const std::array<double, 3>& spacing) {
  const std::vector<uint8_t> edge_from = surface(from, n), edge_to = surface(to, n);
  const bool any_to = std::any_of(edge_to.begin(), edge_to.end(), [](uint8_t x) { return x != 0; });
  const std::vector<double> dist = any_to ? distance_to(edge_to, n, spacing) : std::vector<double>();
  std::vector<double> out;
  for (size_t i = 0; i < edge_from.size(); ++i)
    if (edge_from[i]) out.push_back(any_to ? dist[i] : std::numeric_limits<double>::infinity());
  return out;
}

inline std::array<int64_t, 3> dims3(const Tensor& t, const char* what) {
  VOX_CHECK(t.rank() == 3, what, "surface distances need a 3-D label map [D, H, W], got rank ", t.rank());
  return {t.size(2), t.size(1), t.size(0)};
}

inline std::vector<uint8_t> mask_of(const std::vector<int64_t>& labels, int64_t c) {
  std::vector<uint8_t> m(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) m[i] = labels[i] == c;
  return m;
}
}  // namespace detail

namespace detail {
// For each class 1..classes-1: distances(prediction mask, truth mask, dims), or, where those are
// empty (no surface to measure from), infinity if the truth has the class and NaN if neither
// does (MONAI). Background stays NaN.
template <class Distances, class Reduce>
std::vector<double> per_class_distance(const Tensor& prediction, const Tensor& truth, int64_t classes, const char* what,
                                       Distances distances, Reduce reduce) {
  same_shape(prediction, truth, what);
  const auto n = dims3(prediction, what);
  const auto p = labels_of(prediction, what), t = labels_of(truth, what);
  std::vector<double> out(static_cast<size_t>(classes), std::numeric_limits<double>::quiet_NaN());
  for (int64_t c = 1; c < classes; ++c) {
    const auto pm = mask_of(p, c), tm = mask_of(t, c);
    const std::vector<double> d = distances(pm, tm, n);
    if (d.empty()) {
      if (std::any_of(tm.begin(), tm.end(), [](uint8_t x) { return x != 0; })) out[static_cast<size_t>(c)] = std::numeric_limits<double>::infinity();
      continue;
    }
    out[static_cast<size_t>(c)] = reduce(d, pm, tm, n);
  }
  return out;
}
}  // namespace detail

// Hausdorff distance (the given percentile, 95 by default; 100 is the maximum) of each class
// 1..classes-1 (index 0, background, is NaN), in the spacing's units.
inline std::vector<double> hausdorff_distance(const Tensor& prediction, const Tensor& truth, int64_t classes,
                                              const std::array<double, 3>& spacing = {1, 1, 1}, double percentile = 95,
                                              bool directed = false) {
  using Mask = std::vector<uint8_t>;
  using Dims = std::array<int64_t, 3>;
  return detail::per_class_distance(
      prediction, truth, classes, "hausdorff_distance",
      [&](const Mask& pm, const Mask& tm, const Dims& n) { return detail::surface_distances(pm, tm, n, spacing); },
      [&](const std::vector<double>& forward, const Mask& pm, const Mask& tm, const Dims& n) {
        const double hd = detail::percentile(forward, percentile);
        if (directed) return hd;
        const std::vector<double> backward = detail::surface_distances(tm, pm, n, spacing);
        return backward.empty() ? std::numeric_limits<double>::infinity() : std::max(hd, detail::percentile(backward, percentile));
      });
}

// Average surface distance of each class 1..classes-1 (prediction to truth, or both ways pooled
// when symmetric), in the spacing's units.
inline std::vector<double> average_surface_distance(const Tensor& prediction, const Tensor& truth, int64_t classes,
                                                    const std::array<double, 3>& spacing = {1, 1, 1}, bool symmetric = false) {
  using Mask = std::vector<uint8_t>;
  using Dims = std::array<int64_t, 3>;
  return detail::per_class_distance(
      prediction, truth, classes, "average_surface_distance",
      [&](const Mask& pm, const Mask& tm, const Dims& n) {
        std::vector<double> d = detail::surface_distances(pm, tm, n, spacing);
        if (symmetric) {
          const std::vector<double> back = detail::surface_distances(tm, pm, n, spacing);
          d.insert(d.end(), back.begin(), back.end());
        }
        return d;
      },
      [](const std::vector<double>& d, const Mask&, const Mask&, const Dims&) {
        double sum = 0;
        for (double x : d) sum += x;
        return sum / double(d.size());
      });
}

}  // namespace vox::metrics
