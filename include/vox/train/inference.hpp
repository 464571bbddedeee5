#pragma once
// Sliding-window inference with MONAI's semantics (monai.inferers.sliding_window_inference 1.2):
//   - windows of `patch` voxels placed by dense_patch_slices (data::grid_boxes) with the given
//     overlap (default 0.5); an image smaller than the patch is padded (constant 0, split as
//     MONAI splits it) and the result cropped back;
//   - each window's output weighted by an importance map, Gaussian with sigma = patch / 8
//     (MONAI's sigma_scale 0.125; values clamped below at max(min, 1e-3)) or constant, and the
//     weighted sum divided by the summed weights;
//   - `batch` windows per forward call; test-time augmentation by mirroring (any subset of the 8
//     flip combinations), the outputs flipped back and averaged, as nnU-Net does.
// sliding_window_logits returns the full [D, H, W, K] average. sliding_window_labels returns the
// argmax [D, H, W] while holding accumulators for one slab of slices at a time (the windows of
// one k-start plus the slices they overlap), so a 512x512x400 CT never needs K full-volume f32
// buffers; it reports the accumulators' peak bytes.
//
// The predictor maps a batch [B, d, h, w, C] (channels last) to logits [B, d, h, w, K].
#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <map>
#include <vector>

#include "vox/autograd/grad_mode.hpp"
#include "vox/data/crop_pad.hpp"
#include "vox/data/sampling.hpp"
#include "vox/ops/concat.hpp"
#include "vox/ops/elementwise.hpp"
#include "vox/ops/pad.hpp"

namespace vox::inference {

using Predictor = std::function<Tensor(const Tensor&)>;
using data::Index3;

struct SlidingWindowOptions {
  Index3 patch{64, 64, 64};  // (i, j, k)
  double overlap = 0.5;
  bool gaussian = true;      // false: constant weights
  double sigma_scale = 0.125;
  int64_t batch = 1;         // windows per predictor call
  std::vector<std::array<bool, 3>> mirrors;  // extra passes flipped along (i, j, k); empty: none
  std::function<void(int64_t done, int64_t total)> progress;  // after each predictor call
};

// Every flip combination but the identity: nnU-Net's full mirroring (7 extra passes).
inline std::vector<std::array<bool, 3>> all_mirrors() {
  std::vector<std::array<bool, 3>> out;
  for (int m = 1; m < 8; ++m) out.push_back({(m & 1) != 0, (m & 2) != 0, (m & 4) != 0});
  return out;
}

// MONAI's compute_importance_map: [d, h, w] weights.
inline std::vector<float> importance_map(const Index3& patch, bool gaussian, double sigma_scale) {
  const int64_t n = patch[0] * patch[1] * patch[2];
  std::vector<float> map(static_cast<size_t>(n), 1.0f);
  if (!gaussian) return map;
  std::array<std::vector<float>, 3> axis;
  for (int a = 0; a < 3; ++a) {
    const double sigma = static_cast<double>(patch[a]) * sigma_scale;
    for (int64_t t = 0; t < patch[a]; ++t) {
      const float x = static_cast<float>(-(static_cast<double>(patch[a]) - 1) / 2.0 + static_cast<double>(t));  // torch.arange in f32
      axis[a].push_back(std::exp(x * x / static_cast<float>(-2 * sigma * sigma)));
    }
  }
  float lowest = INFINITY;
  for (int64_t k = 0; k < patch[2]; ++k)
    for (int64_t j = 0; j < patch[1]; ++j)
      for (int64_t i = 0; i < patch[0]; ++i) {
        const float w = axis[2][static_cast<size_t>(k)] * axis[1][static_cast<size_t>(j)] * axis[0][static_cast<size_t>(i)];
        map[static_cast<size_t>((k * patch[1] + j) * patch[0] + i)] = w;
        lowest = std::min(lowest, w);
      }
  const float floor = std::max(lowest, 1e-3f);
  for (float& w : map) w = std::max(w, floor);
  return map;
}

namespace detail {

// The windows of an image (after padding), sorted by k start (then j, i): the slab order.
inline std::vector<data::Box> windows(const Index3& n, const Index3& patch, double overlap) {
  std::vector<data::Box> boxes = data::grid_boxes(n, patch, overlap);
  std::stable_sort(boxes.begin(), boxes.end(), [](const data::Box& a, const data::Box& b) {
    return std::tie(a.begin[2], a.begin[1], a.begin[0]) < std::tie(b.begin[2], b.begin[1], b.begin[0]);
  });
  return boxes;
}

// Runs the predictor (with mirroring) on a batch of windows cut from `image` [D, H, W, C].
inline Tensor predict(const Tensor& image, const std::vector<data::Box>& boxes, const Predictor& predictor,
                      const SlidingWindowOptions& o) {
  std::vector<Tensor> crops;
  for (const data::Box& b : boxes) {
    io::Image im;
    im.voxels = image;
    crops.push_back(data::extract_region(im, b).voxels.unsqueeze(0));
  }
  const Tensor batch = concat(crops, 0);
  Tensor sum = predictor(batch);
  VOX_CHECK(sum.rank() == 5 && sum.size(0) == batch.size(0) && sum.size(1) == batch.size(1) && sum.size(2) == batch.size(2) &&
                sum.size(3) == batch.size(3),
            "sliding_window", "the predictor must map [B, d, h, w, C] to [B, d, h, w, K]; got ", sum.shape(), " for ", batch.shape());
  for (const auto& m : o.mirrors) {
    std::vector<int64_t> axes;
    for (int a = 0; a < 3; ++a)
      if (m[static_cast<size_t>(a)]) axes.push_back(3 - a);  // (i, j, k) -> tensor dims 3, 2, 1
    if (axes.empty()) continue;
    sum = add(sum, flip(predictor(flip(batch, axes)), axes));
  }
  if (!o.mirrors.empty()) sum = div(sum, scalar(static_cast<double>(1 + o.mirrors.size())));
  return sum.to(DType::f32).contiguous();
}

inline void check_image(const Tensor& image, const SlidingWindowOptions& o) {
  VOX_CHECK(image.rank() == 4, "sliding_window", "the image must be [D, H, W, C], got ", image.shape());
  VOX_CHECK(o.batch >= 1, "sliding_window", "batch must be at least 1");
  for (int a = 0; a < 3; ++a) VOX_CHECK(o.patch[a] >= 1, "sliding_window", "patch sizes must be positive");
}

// The padded image, its windows in slab order and the importance map (MONAI pads an image
// smaller than the patch with 0, before = (patch - n) / 2).
struct Plan {
  Index3 n, padded;
  data::Box pad_box;
  Tensor image;
  std::vector<data::Box> boxes;
  std::vector<float> weight;
};

inline Plan plan(const Tensor& image, const SlidingWindowOptions& o) {
  check_image(image, o);
  Plan p;
  p.n = {image.size(2), image.size(1), image.size(0)};
  for (int a = 0; a < 3; ++a) p.padded[a] = std::max(p.n[a], o.patch[a]);
  p.pad_box = data::centred_box(p.n, p.padded);
  if (p.padded == p.n) {
    p.image = image;  // no padding: no copy of a volume that may be large
  } else {
    io::Image src;
    src.voxels = image;
    p.image = data::extract_region(src, p.pad_box).voxels;
  }
  p.boxes = windows(p.padded, o.patch, o.overlap);
  p.weight = importance_map(o.patch, o.gaussian, o.sigma_scale);
  return p;
}

// Adds the weighted outputs `out` [B, d, h, w, K] of `group` into accumulators whose voxel
// (i, j, k) of the padded image sits at ((k - k0) * rows + j) * columns + i.
inline void accumulate(const Tensor& out, const std::vector<data::Box>& group, const Index3& patch, const std::vector<float>& weight,
                       int64_t k0, int64_t rows, int64_t columns, std::vector<float>& acc, std::vector<float>& count) {
  const int64_t classes = out.size(4), per_window = patch[0] * patch[1] * patch[2];
  const float* p = out.data<float>();
  for (size_t w = 0; w < group.size(); ++w) {
    const data::Box& b = group[w];
    for (int64_t k = 0; k < patch[2]; ++k)
      for (int64_t j = 0; j < patch[1]; ++j)
        for (int64_t i = 0; i < patch[0]; ++i) {
          const int64_t local = (k * patch[1] + j) * patch[0] + i;
          const int64_t at = ((b.begin[2] + k - k0) * rows + b.begin[1] + j) * columns + b.begin[0] + i;
          const float wt = weight[static_cast<size_t>(local)];
          count[static_cast<size_t>(at)] += wt;
          const float* v = p + (static_cast<int64_t>(w) * per_window + local) * classes;
          for (int64_t c = 0; c < classes; ++c) acc[static_cast<size_t>(at * classes + c)] += wt * v[c];
        }
  }
}

}  // namespace detail

// The blended logits [D, H, W, K] of the whole image [D, H, W, C].
inline Tensor sliding_window_logits(const Tensor& image_in, const Predictor& predictor, const SlidingWindowOptions& o) {
  NoGradGuard no_grad;
  const detail::Plan plan = detail::plan(image_in, o);
  const Index3& padded = plan.padded;
  const std::vector<data::Box>& boxes = plan.boxes;
  std::vector<float> acc, count(static_cast<size_t>(padded[0] * padded[1] * padded[2]), 0.0f);
  int64_t classes = 0;
  for (size_t first = 0; first < boxes.size(); first += static_cast<size_t>(o.batch)) {
    const size_t last = std::min(boxes.size(), first + static_cast<size_t>(o.batch));
    const std::vector<data::Box> group(boxes.begin() + static_cast<std::ptrdiff_t>(first), boxes.begin() + static_cast<std::ptrdiff_t>(last));
    const Tensor out = detail::predict(plan.image, group, predictor, o);
    if (classes == 0) {
      classes = out.size(4);
      acc.assign(count.size() * static_cast<size_t>(classes), 0.0f);
    }
    detail::accumulate(out, group, o.patch, plan.weight, 0, padded[1], padded[0], acc, count);
    if (o.progress) o.progress(static_cast<int64_t>(last), static_cast<int64_t>(boxes.size()));
  }
  Tensor full_out = empty({padded[2], padded[1], padded[0], classes}, DType::f32);
  float* f = full_out.data<float>();
  for (size_t v = 0; v < count.size(); ++v)
    for (int64_t c = 0; c < classes; ++c) f[v * static_cast<size_t>(classes) + static_cast<size_t>(c)] = acc[v * static_cast<size_t>(classes) + static_cast<size_t>(c)] / count[v];
  // crop the padding away
  io::Image padded_out;
  padded_out.voxels = full_out;
  data::Box back;
  for (int a = 0; a < 3; ++a) back.begin[a] = -plan.pad_box.begin[a], back.size[a] = plan.n[a];
  return data::extract_region(padded_out, back).voxels;
}

struct LabelResult {
  Tensor labels;                   // [D, H, W] u8 (i32 when more than 255 classes)
  int64_t accumulator_peak_bytes = 0;  // of the slab accumulators
};

// The argmax of the blended logits, accumulated slab by slab (see the top of the file). Equal to
// argmax(sliding_window_logits(...)): the same windows are summed in the same order.
inline LabelResult sliding_window_labels(const Tensor& image_in, const Predictor& predictor, const SlidingWindowOptions& o) {
  NoGradGuard no_grad;
  const detail::Plan plan = detail::plan(image_in, o);
  const Index3 &n = plan.n, &padded = plan.padded;
  const std::vector<data::Box>& boxes = plan.boxes;
  const int64_t plane = padded[0] * padded[1];
  // accumulators for slices [base, base + depth)
  const int64_t depth = o.patch[2];
  int64_t base = 0, classes = 0;
  std::vector<float> acc, count(static_cast<size_t>(depth * plane), 0.0f);
  LabelResult result;
  const int64_t oi = -plan.pad_box.begin[0], oj = -plan.pad_box.begin[1], ok = -plan.pad_box.begin[2];
  auto finish_slices_before = [&](int64_t until) {  // argmax of slices [base, until) into the output, then shift the slab
    const int64_t done = until - base;
    if (done <= 0) return;
    for (int64_t z = 0; z < done; ++z) {
      const int64_t k = base + z - ok;  // output slice (padding slices are dropped)
      if (k < 0 || k >= n[2]) continue;
      for (int64_t j = 0; j < n[1]; ++j)
        for (int64_t i = 0; i < n[0]; ++i) {
          const size_t at = static_cast<size_t>(z * plane + (j + oj) * padded[0] + i + oi);
          int32_t best = 0;
          float best_value = -INFINITY;
          for (int64_t c = 0; c < classes; ++c) {
            const float value = acc[at * static_cast<size_t>(classes) + static_cast<size_t>(c)] / count[at];
            if (value > best_value) best_value = value, best = static_cast<int32_t>(c);
          }
          const int64_t out = (k * n[1] + j) * n[0] + i;
          if (result.labels.dtype() == DType::u8) result.labels.data<uint8_t>()[out] = static_cast<uint8_t>(best);
          else result.labels.data<int32_t>()[out] = best;
        }
    }
    const size_t shift = static_cast<size_t>(done * plane);
    std::move(count.begin() + static_cast<std::ptrdiff_t>(shift), count.end(), count.begin());
    std::fill(count.end() - static_cast<std::ptrdiff_t>(shift), count.end(), 0.0f);
    std::move(acc.begin() + static_cast<std::ptrdiff_t>(shift * static_cast<size_t>(classes)), acc.end(), acc.begin());
    std::fill(acc.end() - static_cast<std::ptrdiff_t>(shift * static_cast<size_t>(classes)), acc.end(), 0.0f);
    base = until;
  };
  for (size_t first = 0; first < boxes.size();) {
    // a group: up to `batch` windows, all with the same k start
    size_t last = first;
    while (last < boxes.size() && last - first < static_cast<size_t>(o.batch) && boxes[last].begin[2] == boxes[first].begin[2]) ++last;
    const std::vector<data::Box> group(boxes.begin() + static_cast<std::ptrdiff_t>(first), boxes.begin() + static_cast<std::ptrdiff_t>(last));
    finish_slices_before(group.front().begin[2]);
    const Tensor out = detail::predict(plan.image, group, predictor, o);
    if (classes == 0) {
      classes = out.size(4);
      acc.assign(count.size() * static_cast<size_t>(classes), 0.0f);
      result.accumulator_peak_bytes = static_cast<int64_t>((acc.size() + count.size()) * sizeof(float));
      result.labels = empty({n[2], n[1], n[0]}, classes > 255 ? DType::i32 : DType::u8);
    }
    detail::accumulate(out, group, o.patch, plan.weight, base, padded[1], padded[0], acc, count);
    if (o.progress) o.progress(static_cast<int64_t>(last), static_cast<int64_t>(boxes.size()));
    first = last;
  }
  finish_slices_before(padded[2]);
  return result;
}

}  // namespace vox::inference
