#pragma once
// Where patches come from:
//   - random_crop_box: a uniformly placed box (the image is padded first when smaller);
//   - pos_neg_crop_box: MONAI's RandCropByPosNegLabel: with probability pos / (pos + neg) the box
//     is centred on a random foreground voxel (label > 0), else on a random background voxel, and
//     the centre is moved just enough for the box to fit (MONAI's correct_crop_centers);
//   - class_balanced_crop_box: MONAI's RandCropByLabelClasses: a class is drawn by its ratio among
//     the classes present, then a voxel of that class;
//   - grid_boxes: the patches of sliding-window inference, placed as MONAI's dense_patch_slices
//     places them (interval floor(patch * (1 - overlap)), at least 1; the last patch flush with
//     the far edge).
// Boxes are in (i, j, k) voxel order; crop with extract_region (crop_pad.hpp).
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "vox/data/crop_pad.hpp"
#include "vox/data/random.hpp"

namespace vox::data {

namespace sampling_detail {
// A box of `size` centred (as MONAI centres: begin = centre - size / 2) on `centre`, moved inside
// an image of n voxels (or starting at 0 where the image is smaller than the box).
inline Box box_around(const Index3& centre, const Index3& size, const Index3& n) {
  Box box;
  box.size = size;
  for (int a = 0; a < 3; ++a) {
    const int64_t half = size[a] / 2;
    const int64_t lo = half, hi = std::max(half, n[a] - size[a] + half);
    box.begin[a] = std::clamp(centre[a], lo, hi) - half;
  }
  return box;
}

// Voxel indices (flat, [k][j][i]) of a label, grouped by value (value -> indices), first channel.
inline std::vector<std::vector<int64_t>> voxels_by_class(const io::Image& label, int64_t classes) {
  const std::vector<int64_t> v = label.voxels.to_vector<int64_t>();
  const int64_t channels = label.channels();
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(classes));
  for (size_t at = 0, p = 0; at < v.size(); at += static_cast<size_t>(channels), ++p) {
    const int64_t c = v[at];
    VOX_CHECK(c >= 0 && c < classes, "sampling", "label value ", c, " at voxel ", p, " is outside [0, ", classes, ")");
    out[static_cast<size_t>(c)].push_back(static_cast<int64_t>(p));
  }
  return out;
}

inline Index3 unflatten(int64_t p, const Index3& n) { return {p % n[0], (p / n[0]) % n[1], p / (n[0] * n[1])}; }
}  // namespace sampling_detail

inline Box random_crop_box(const Index3& n, const Index3& size, Random& rng) {
  Box box;
  box.size = size;
  for (int a = 0; a < 3; ++a) box.begin[a] = n[a] > size[a] ? rng.integer(0, n[a] - size[a] + 1) : -((size[a] - n[a]) / 2);
  return box;
}

// RandCropByPosNegLabel for one crop. Without foreground (or background) the other kind is used.
inline Box pos_neg_crop_box(const io::Image& label, const Index3& size, double pos, double neg, Random& rng) {
  VOX_CHECK(pos >= 0 && neg >= 0 && pos + neg > 0, "pos_neg_crop_box", "pos and neg must be >= 0 and not both 0, got ", pos, " and ", neg);
  const Index3 n = detail::size_of(label);
  const std::vector<double> v = label.voxels.to_vector<double>();
  const int64_t channels = label.channels();
  std::vector<int64_t> fg, bg;
  for (size_t at = 0, p = 0; at < v.size(); at += static_cast<size_t>(channels), ++p) (v[at] > 0 ? fg : bg).push_back(static_cast<int64_t>(p));
  const bool want_fg = rng.chance(pos / (pos + neg));
  const std::vector<int64_t>& pool = (want_fg && !fg.empty()) || bg.empty() ? fg : bg;
  const int64_t p = pool[static_cast<size_t>(rng.integer(0, static_cast<int64_t>(pool.size())))];
  return sampling_detail::box_around(sampling_detail::unflatten(p, n), size, n);
}

// RandCropByLabelClasses for one crop: ratios per class (empty: equal), absent classes skipped.
inline Box class_balanced_crop_box(const io::Image& label, const Index3& size, int64_t classes, std::vector<double> ratios, Random& rng) {
  if (ratios.empty()) ratios.assign(static_cast<size_t>(classes), 1.0);
  VOX_CHECK(static_cast<int64_t>(ratios.size()) == classes, "class_balanced_crop_box", ratios.size(), " ratios for ", classes, " classes");
  const Index3 n = detail::size_of(label);
  const auto by_class = sampling_detail::voxels_by_class(label, classes);
  double total = 0;
  for (int64_t c = 0; c < classes; ++c) {
    VOX_CHECK(ratios[static_cast<size_t>(c)] >= 0, "class_balanced_crop_box", "ratio of class ", c, " is negative");
    if (by_class[static_cast<size_t>(c)].empty()) ratios[static_cast<size_t>(c)] = 0;  // absent: skipped, as MONAI warns and does
    total += ratios[static_cast<size_t>(c)];
  }
  VOX_CHECK(total > 0, "class_balanced_crop_box", "no voxel of any class with a positive ratio");
  double pick = rng.uniform() * total;
  int64_t chosen = 0;
  while (chosen + 1 < classes && (pick >= ratios[static_cast<size_t>(chosen)] || ratios[static_cast<size_t>(chosen)] == 0))
    pick -= ratios[static_cast<size_t>(chosen++)];
  const auto& pool = by_class[static_cast<size_t>(chosen)];
  const int64_t p = pool[static_cast<size_t>(rng.integer(0, static_cast<int64_t>(pool.size())))];
  return sampling_detail::box_around(sampling_detail::unflatten(p, n), size, n);
}

// Sliding-window patches over an image of n voxels (patch sizes above n are cut to n, as MONAI's
// get_valid_patch_size does; pad the image first to keep the full patch).
inline std::vector<Box> grid_boxes(const Index3& n, Index3 patch, double overlap) {
  VOX_CHECK(overlap >= 0 && overlap < 1, "grid_boxes", "overlap must be in [0, 1), got ", overlap);
  std::array<std::vector<int64_t>, 3> starts;
  for (int a = 0; a < 3; ++a) {
    VOX_CHECK(patch[a] >= 1 && n[a] >= 1, "grid_boxes", "patch and image sizes must be positive");
    patch[a] = std::min(patch[a], n[a]);
    const int64_t interval = patch[a] == n[a] ? patch[a] : std::max<int64_t>(1, static_cast<int64_t>(double(patch[a]) * (1 - overlap)));
    for (int64_t start = 0;; start += interval) {
      const int64_t s = std::min(start, n[a] - patch[a]);
      starts[static_cast<size_t>(a)].push_back(s);
      if (start + patch[a] >= n[a]) break;
    }
  }
  std::vector<Box> boxes;
  for (int64_t i : starts[0])
    for (int64_t j : starts[1])
      for (int64_t k : starts[2]) boxes.push_back({{i, j, k}, patch});
  return boxes;
}

}  // namespace vox::data
