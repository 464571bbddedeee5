#pragma once
// Cropping, padding and resizing that keep every voxel at its world position (the origin moves
// with the region's first voxel; direction is unchanged):
//   - extract_region: any box of voxel indices, parts outside the image filled with a constant;
//   - foreground_box / crop_to_foreground: the bounding box of the voxels above a threshold in a
//     source (a label, or the image itself), grown by a margin and kept inside the image
//     (MONAI's CropForeground with allow_smaller=False; nnU-Net crops to the non-zero region);
//   - pad_or_crop_to_size: centred, as MONAI's ResizeWithPadOrCrop (symmetric padding puts the
//     odd voxel after; centred crops start at (n - size) / 2, rounded down);
//   - pad_to_multiple: every axis padded up to a multiple of k, symmetrically (DivisiblePad);
//   - resize: to a voxel count, the extent kept (spacing scales by n / size) and voxel centres
//     placed as torch's interpolate with align_corners=False places them.
// Sizes and boxes are given in (i, j, k) order, as spacing is.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "vox/io/image.hpp"

namespace vox::data {

using Index3 = std::array<int64_t, 3>;

struct Box {
  Index3 begin{0, 0, 0};  // first voxel (may be negative: padding)
  Index3 size{0, 0, 0};   // voxel count along i, j, k
};

namespace detail {
// The world origin of voxel index `at` (continuous) of an image.
inline std::array<double, 3> world_of_index(const io::Image& image, const std::array<double, 3>& at) {
  std::array<double, 3> w = image.origin;
  for (int r = 0; r < 3; ++r)
    for (int a = 0; a < 3; ++a) w[r] += image.direction[r][a] * image.spacing[a] * at[a];
  return w;
}
inline Index3 size_of(const io::Image& image) { return {image.width(), image.height(), image.depth()}; }
}  // namespace detail

// The voxels of `box` (any position and size), `fill` where the box leaves the image.
inline io::Image extract_region(const io::Image& image, const Box& box, double fill = 0.0) {
  const Index3 n = detail::size_of(image);
  for (int a = 0; a < 3; ++a)
    VOX_CHECK(box.size[a] >= 1, "extract_region", "box size ", box.size[a], " along axis ", a, " is not positive");
  const int64_t channels = image.channels();
  Shape shape{box.size[2], box.size[1], box.size[0]};
  if (image.voxels.rank() == 4) shape.push_back(channels);
  const Tensor src = image.voxels.contiguous();
  io::Image out;
  out.spacing = image.spacing;
  out.direction = image.direction;
  out.origin = detail::world_of_index(image, {double(box.begin[0]), double(box.begin[1]), double(box.begin[2])});
  out.voxels = full(shape, fill, src.dtype());
  const size_t elem = dtype_size(src.dtype());
  const auto* in = static_cast<const unsigned char*>(src.raw_data());
  auto* o = static_cast<unsigned char*>(out.voxels.raw_data());
  // copy the rows of i that lie inside the image
  const int64_t i0 = std::max<int64_t>(0, box.begin[0]), i1 = std::min(n[0], box.begin[0] + box.size[0]);
  if (i1 <= i0) return out;
  for (int64_t k = 0; k < box.size[2]; ++k) {
    const int64_t sk = box.begin[2] + k;
    if (sk < 0 || sk >= n[2]) continue;
    for (int64_t j = 0; j < box.size[1]; ++j) {
      const int64_t sj = box.begin[1] + j;
      if (sj < 0 || sj >= n[1]) continue;
      const int64_t from = ((sk * n[1] + sj) * n[0] + i0) * channels;
      const int64_t to = ((k * box.size[1] + j) * box.size[0] + (i0 - box.begin[0])) * channels;
      std::memcpy(o + static_cast<size_t>(to) * elem, in + static_cast<size_t>(from) * elem, static_cast<size_t>((i1 - i0) * channels) * elem);
    }
  }
  return out;
}

// The bounding box of the voxels of `source` above `threshold` (any channel), grown by `margin`
// voxels per side and clipped to the image. An empty source gives the whole image.
inline Box foreground_box(const io::Image& source, double threshold = 0.0, const Index3& margin = {0, 0, 0}) {
  const Index3 n = detail::size_of(source);
  const int64_t channels = source.channels();
  const std::vector<double> v = source.voxels.to_vector<double>();
  Index3 lo{n[0], n[1], n[2]}, hi{-1, -1, -1};
  size_t at = 0;
  for (int64_t k = 0; k < n[2]; ++k)
    for (int64_t j = 0; j < n[1]; ++j)
      for (int64_t i = 0; i < n[0]; ++i)
        for (int64_t c = 0; c < channels; ++c, ++at)
          if (v[at] > threshold) {
            const Index3 p{i, j, k};
            for (int a = 0; a < 3; ++a) lo[a] = std::min(lo[a], p[a]), hi[a] = std::max(hi[a], p[a]);
          }
  if (hi[0] < 0) return {{0, 0, 0}, n};
  Box box;
  for (int a = 0; a < 3; ++a) {
    VOX_CHECK(margin[a] >= 0, "foreground_box", "margin must not be negative, got ", margin[a]);
    const int64_t b = std::max<int64_t>(0, lo[a] - margin[a]), e = std::min(n[a] - 1, hi[a] + margin[a]);
    box.begin[a] = b, box.size[a] = e - b + 1;
  }
  return box;
}

// An image and its label cropped to the label's (or, without one, the image's) foreground.
inline void crop_to_foreground(io::Image& image, io::Image* label = nullptr, double threshold = 0.0, const Index3& margin = {0, 0, 0}) {
  if (label)
    VOX_CHECK(detail::size_of(*label) == detail::size_of(image), "crop_to_foreground", "label size differs from the image's");
  const Box box = foreground_box(label ? *label : image, threshold, margin);
  image = extract_region(image, box);
  if (label) *label = extract_region(*label, box);
}

// The centred box of `size` voxels: padding splits as MONAI's symmetric SpatialPad, crops as its
// CenterSpatialCrop.
inline Box centred_box(const Index3& n, const Index3& size) {
  Box box;
  for (int a = 0; a < 3; ++a) {
    VOX_CHECK(size[a] >= 1, "centred_box", "size ", size[a], " along axis ", a, " is not positive");
    box.size[a] = size[a];
    box.begin[a] = size[a] >= n[a] ? -((size[a] - n[a]) / 2) : n[a] / 2 - size[a] / 2;
  }
  return box;
}

inline io::Image pad_or_crop_to_size(const io::Image& image, const Index3& size, double fill = 0.0) {
  return extract_region(image, centred_box(detail::size_of(image), size), fill);
}

// Pads each axis up to the next multiple of k (symmetric; nothing when it is one already).
inline io::Image pad_to_multiple(const io::Image& image, const Index3& k, double fill = 0.0) {
  const Index3 n = detail::size_of(image);
  Index3 size;
  for (int a = 0; a < 3; ++a) {
    VOX_CHECK(k[a] >= 1, "pad_to_multiple", "k must be positive, got ", k[a]);
    size[a] = (n[a] + k[a] - 1) / k[a] * k[a];
  }
  return extract_region(image, centred_box(n, size), fill);
}

enum class ResizeMode { linear, nearest };

// Resizes to `size` voxels (i, j, k) over the same extent. Linear gives f32 (images); nearest
// keeps the dtype (labels) and picks voxel floor((o + 0.5) * n / size), as torch's "nearest-exact".
inline io::Image resize(const io::Image& image, const Index3& size, ResizeMode mode) {
  const Index3 n = detail::size_of(image);
  const int64_t channels = image.channels();
  std::array<double, 3> scale;
  for (int a = 0; a < 3; ++a) {
    VOX_CHECK(size[a] >= 1, "resize", "size ", size[a], " along axis ", a, " is not positive");
    scale[a] = static_cast<double>(n[a]) / static_cast<double>(size[a]);
  }
  io::Image out;
  out.direction = image.direction;
  for (int a = 0; a < 3; ++a) out.spacing[a] = image.spacing[a] * scale[a];
  // output voxel 0's centre sits at input index 0.5 * scale - 0.5
  out.origin = detail::world_of_index(image, {0.5 * scale[0] - 0.5, 0.5 * scale[1] - 0.5, 0.5 * scale[2] - 0.5});
  Shape shape{size[2], size[1], size[0]};
  if (image.voxels.rank() == 4) shape.push_back(channels);
  auto in_index = [&](int64_t i, int64_t j, int64_t k) { return ((k * n[1] + j) * n[0] + i) * channels; };
  if (mode == ResizeMode::nearest) {
    const Tensor src = image.voxels.contiguous();
    out.voxels = empty(shape, src.dtype());
    const size_t elem = dtype_size(src.dtype());
    const auto* in = static_cast<const unsigned char*>(src.raw_data());
    auto* o = static_cast<unsigned char*>(out.voxels.raw_data());
    auto pick = [&](int a, int64_t t) { return std::min(n[a] - 1, static_cast<int64_t>(std::floor((static_cast<double>(t) + 0.5) * scale[a]))); };
    int64_t w = 0;
    for (int64_t k = 0; k < size[2]; ++k)
      for (int64_t j = 0; j < size[1]; ++j)
        for (int64_t i = 0; i < size[0]; ++i, w += channels)
          std::memcpy(o + static_cast<size_t>(w) * elem, in + static_cast<size_t>(in_index(pick(0, i), pick(1, j), pick(2, k))) * elem,
                      static_cast<size_t>(channels) * elem);
    return out;
  }
  const std::vector<float> in = image.voxels.to_vector<float>();
  out.voxels = empty(shape, DType::f32);
  float* o = out.voxels.data<float>();
  struct Tap {
    int64_t lo, hi;
    double w;
  };
  std::vector<Tap> taps[3];
  for (int a = 0; a < 3; ++a)
    for (int64_t t = 0; t < size[a]; ++t) {
      const double x = std::clamp((static_cast<double>(t) + 0.5) * scale[a] - 0.5, 0.0, static_cast<double>(n[a] - 1));
      const int64_t lo = static_cast<int64_t>(std::floor(x));
      taps[a].push_back({lo, std::min(lo + 1, n[a] - 1), x - static_cast<double>(lo)});
    }
  int64_t w = 0;
  for (int64_t k = 0; k < size[2]; ++k) {
    const Tap& z = taps[2][static_cast<size_t>(k)];
    for (int64_t j = 0; j < size[1]; ++j) {
      const Tap& y = taps[1][static_cast<size_t>(j)];
      for (int64_t i = 0; i < size[0]; ++i) {
        const Tap& x = taps[0][static_cast<size_t>(i)];
        for (int64_t c = 0; c < channels; ++c, ++w) {
          auto at = [&](int64_t a, int64_t b, int64_t d) { return static_cast<double>(in[static_cast<size_t>(in_index(a, b, d) + c)]); };
          const double c00 = at(x.lo, y.lo, z.lo) * (1 - x.w) + at(x.hi, y.lo, z.lo) * x.w;
          const double c10 = at(x.lo, y.hi, z.lo) * (1 - x.w) + at(x.hi, y.hi, z.lo) * x.w;
          const double c01 = at(x.lo, y.lo, z.hi) * (1 - x.w) + at(x.hi, y.lo, z.hi) * x.w;
          const double c11 = at(x.lo, y.hi, z.hi) * (1 - x.w) + at(x.hi, y.hi, z.hi) * x.w;
          o[w] = static_cast<float>((c00 * (1 - y.w) + c10 * y.w) * (1 - z.w) + (c01 * (1 - y.w) + c11 * y.w) * z.w);
        }
      }
    }
  }
  return out;
}

}  // namespace vox::data
