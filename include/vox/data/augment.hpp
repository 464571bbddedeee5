#pragma once
// Random augmentation of an image and its label, seeded, in nnU-Net v2's order and with its
// default probabilities (nnUNetTrainer.get_training_transforms):
//   spatial (rotation p 0.2 up to +-30 degrees about each axis, scaling p 0.2 in [0.7, 1.4],
//   elastic deformation p 0 by default), Gaussian noise p 0.1, Gaussian blur p 0.2,
//   brightness p 0.15, contrast p 0.15, low resolution p 0.25, inverted gamma p 0.1, gamma p 0.3,
//   mirroring p 0.5 per axis; translation and quarter turns (rot90) are there, off by default.
// Rotation, scaling and elastic displacement are composed and applied in one resampling (the
// image trilinear, the label nearest, so labels never blend); outside the input, images get 0
// and labels 0. The label always moves with the image. Intensity transforms touch the image only.
// Deviations from batchgenerators, stated: images are resampled trilinearly rather than with
// cubic splines, the low-resolution simulation upsamples trilinearly, and rotation is done in
// millimetres (so it stays a rotation on anisotropic grids).
#include <algorithm>
#include <array>
#include <cmath>
#include <numbers>
#include <vector>

#include "vox/data/filter.hpp"
#include "vox/data/random.hpp"
#include "vox/io/image.hpp"

namespace vox::data {

// An image with its (optional) label on the same grid.
struct Sample {
  io::Image image;
  io::Image label;  // voxels undefined when there is none
  bool has_label() const { return label.voxels.defined(); }
};

struct AugmentConfig {
  double p_rotation = 0.2, max_rotation = std::numbers::pi / 6;  // about each axis, radians
  double p_scale = 0.2, min_scale = 0.7, max_scale = 1.4;         // > 1 enlarges the content
  double p_translation = 0.0, max_translation = 10;  // mm per axis (not in nnU-Net's defaults)
  double p_elastic = 0.0, min_alpha = 0, max_alpha = 900, min_sigma = 9, max_sigma = 13;  // voxels
  double p_noise = 0.1, max_noise_std = 0.1;  // batchgenerators draws "variance" in [0, 0.1] and uses it as the std
  double p_blur = 0.2, min_blur_sigma = 0.5, max_blur_sigma = 1.0, p_blur_per_channel = 0.5;
  double p_brightness = 0.15, min_brightness = 0.75, max_brightness = 1.25;
  double p_contrast = 0.15, min_contrast = 0.75, max_contrast = 1.25;
  double p_lowres = 0.25, min_lowres_zoom = 0.5, max_lowres_zoom = 1.0, p_lowres_per_channel = 0.5;
  double p_gamma_inverted = 0.1, p_gamma = 0.3, min_gamma = 0.7, max_gamma = 1.5;
  double p_flip = 0.5;
  std::array<bool, 3> flip_axes{true, true, true};  // (i, j, k)
  double p_rot90 = 0.0;  // quarter turns in the (i, j) plane, as MONAI's RandRotate90 (needs equal i and j sizes to keep the patch shape)
};

namespace augment_detail {

inline std::array<int64_t, 3> dims_of(const io::Image& im) { return {im.width(), im.height(), im.depth()}; }

// The image as f32 [D, H, W, C] floats, contiguous.
inline std::vector<float> floats(const io::Image& im) { return im.voxels.to_vector<float>(); }

inline void store(io::Image& im, const std::vector<float>& v) {
  Tensor t = empty(im.voxels.shape(), DType::f32);
  std::copy(v.begin(), v.end(), t.data<float>());
  im.voxels = t;
}

// A factor in [lo, hi] that is below 1 half the time when the range spans 1 (batchgenerators'
// rule for contrast and gamma).
inline double factor_around_one(Random& rng, double lo, double hi) {
  if (lo < 1 && hi > 1) return rng.chance(0.5) ? rng.uniform(lo, 1.0) : rng.uniform(1.0, hi);
  return rng.uniform(lo, hi);
}

struct ChannelStats {
  double mean = 0, std = 0, min = 0, max = 0;
};
inline ChannelStats stats(const std::vector<float>& v, int64_t channels, int64_t c) {
  ChannelStats s{0, 0, INFINITY, -INFINITY};
  double sum = 0, squares = 0, n = 0;
  for (size_t at = static_cast<size_t>(c); at < v.size(); at += static_cast<size_t>(channels)) {
    const double x = v[at];
    sum += x, squares += x * x, n += 1;
    s.min = std::min(s.min, x), s.max = std::max(s.max, x);
  }
  s.mean = sum / n;
  s.std = std::sqrt(std::max(0.0, squares / n - s.mean * s.mean));
  return s;
}

// Trilinear sample of channel c at continuous index (x, y, z); 0 outside.
inline double trilinear(const std::vector<float>& v, const std::array<int64_t, 3>& n, int64_t channels, int64_t c, double x, double y,
                        double z) {
  if (x < -1 || y < -1 || z < -1 || x > double(n[0]) || y > double(n[1]) || z > double(n[2])) return 0;
  const int64_t x0 = static_cast<int64_t>(std::floor(x)), y0 = static_cast<int64_t>(std::floor(y)), z0 = static_cast<int64_t>(std::floor(z));
  const double fx = x - double(x0), fy = y - double(y0), fz = z - double(z0);
  double acc = 0;
  for (int dz = 0; dz < 2; ++dz)
    for (int dy = 0; dy < 2; ++dy)
      for (int dx = 0; dx < 2; ++dx) {
        const int64_t xi = x0 + dx, yi = y0 + dy, zi = z0 + dz;
        if (xi < 0 || yi < 0 || zi < 0 || xi >= n[0] || yi >= n[1] || zi >= n[2]) continue;
        const double w = (dx ? fx : 1 - fx) * (dy ? fy : 1 - fy) * (dz ? fz : 1 - fz);
        acc += w * v[static_cast<size_t>(((zi * n[1] + yi) * n[0] + xi) * channels + c)];
      }
  return acc;
}

}  // namespace augment_detail

// Reverses the voxel order along axis a (0 = i, 1 = j, 2 = k) of image and label. Geometry moves
// with it (the origin to the far end, the direction column negated), so world positions hold.
inline void flip(Sample& s, int axis) {
  VOX_CHECK(axis >= 0 && axis < 3, "flip", "axis must be 0, 1 or 2, got ", axis);
  auto flip_one = [&](io::Image& im) {
    const int64_t n = im.voxels.size(2 - axis);
    std::vector<bool> axes(static_cast<size_t>(im.voxels.rank()), false);
    axes[static_cast<size_t>(2 - axis)] = true;
    im.voxels = io::detail::flipped(im.voxels, axes);
    for (int r = 0; r < 3; ++r) {
      im.origin[r] += im.direction[r][axis] * im.spacing[axis] * static_cast<double>(n - 1);
      im.direction[r][axis] = -im.direction[r][axis];
    }
  };
  flip_one(s.image);
  if (s.has_label()) flip_one(s.label);
}

// Rotates image and label by k quarter turns in the plane of voxel axes a and b (0 = i, 1 = j,
// 2 = k), from a towards b, as numpy.rot90 turns its first axis towards its second. Geometry
// moves with the voxels (origin and direction columns follow), so world positions hold.
inline void rot90(Sample& s, int k, int a, int b) {
  VOX_CHECK(a >= 0 && a < 3 && b >= 0 && b < 3 && a != b, "rot90", "the plane needs two different axes among 0, 1, 2; got ", a, " and ", b);
  k = ((k % 4) + 4) % 4;
  for (int turn = 0; turn < k; ++turn) {
    // one quarter turn: new axis a = old axis b reversed... as numpy: transpose (a, b), then flip a
    auto turn_one = [&](io::Image& im) {
      const int ta = 2 - a, tb = 2 - b;  // tensor dims of voxel axes a and b
      std::vector<int64_t> order(static_cast<size_t>(im.voxels.rank()));
      for (size_t d = 0; d < order.size(); ++d) order[d] = static_cast<int64_t>(d);
      std::swap(order[static_cast<size_t>(ta)], order[static_cast<size_t>(tb)]);
      const int64_t nb = im.voxels.size(tb);  // becomes the length of axis a
      std::vector<bool> axes(order.size(), false);
      axes[static_cast<size_t>(ta)] = true;
      im.voxels = io::detail::flipped(im.voxels.permute(order).contiguous(), axes);
      // new voxel (.., p_a, p_b) = old voxel with p'_a = p_b, p'_b = nb - 1 - p_a
      std::array<double, 3> origin = im.origin;
      io::Matrix3 dir = im.direction;
      std::array<double, 3> spacing = im.spacing;
      for (int r = 0; r < 3; ++r) {
        origin[r] += im.direction[r][b] * im.spacing[b] * static_cast<double>(nb - 1);
        dir[r][a] = -im.direction[r][b];
        dir[r][b] = im.direction[r][a];
      }
      spacing[a] = im.spacing[b], spacing[b] = im.spacing[a];
      im.origin = origin, im.direction = dir, im.spacing = spacing;
    };
    turn_one(s.image);
    if (s.has_label()) turn_one(s.label);
  }
}

// The parameters of one spatial transform.
struct SpatialParams {
  std::array<double, 3> rotation{0, 0, 0};  // radians about the i, j, k axes, applied k then j then i
  double scale = 1;                         // > 1 enlarges the content
  std::array<double, 3> translation{0, 0, 0};  // mm along the voxel axes i, j, k: the content moves by this
  double elastic_alpha = 0, elastic_sigma = 0;  // displacement field magnitude and smoothness, voxels
};

// Resamples image and label through rotation and scaling about the volume's centre (in mm), a
// translation, and an optional smooth random displacement (drawn from rng), in one resampling.
// The grid and geometry are kept.
inline void spatial_transform(Sample& s, const SpatialParams& p, Random& rng) {
  using namespace augment_detail;
  const std::array<int64_t, 3> n = dims_of(s.image);
  const int64_t voxels = n[0] * n[1] * n[2], channels = s.image.channels();
  if (s.has_label()) VOX_CHECK(dims_of(s.label) == n, "spatial_transform", "the label's size differs from the image's");
  VOX_CHECK(p.scale > 0, "spatial_transform", "scale must be positive, got ", p.scale);
  // R = Rx Ry Rz; input point = R^T (output point) / scale
  const double cx = std::cos(p.rotation[0]), sx = std::sin(p.rotation[0]), cy = std::cos(p.rotation[1]), sy = std::sin(p.rotation[1]),
               cz = std::cos(p.rotation[2]), sz = std::sin(p.rotation[2]);
  const double rx[3][3] = {{1, 0, 0}, {0, cx, -sx}, {0, sx, cx}}, ry[3][3] = {{cy, 0, sy}, {0, 1, 0}, {-sy, 0, cy}},
               rz[3][3] = {{cz, -sz, 0}, {sz, cz, 0}, {0, 0, 1}};
  double ryz[3][3] = {}, r[3][3] = {};
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 3; ++c) ryz[a][b] += ry[a][c] * rz[c][b];
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 3; ++c) r[a][b] += rx[a][c] * ryz[c][b];
  std::array<std::vector<float>, 3> displacement;
  if (p.elastic_alpha > 0) {
    for (auto& field : displacement) {
      field.resize(static_cast<size_t>(voxels));
      for (float& d : field) d = static_cast<float>(rng.uniform(-1.0, 1.0));
      gaussian_filter(field, n, {p.elastic_sigma, p.elastic_sigma, p.elastic_sigma});
      for (float& d : field) d = static_cast<float>(d * p.elastic_alpha);
    }
  }
  const std::array<double, 3> centre{(double(n[0]) - 1) / 2, (double(n[1]) - 1) / 2, (double(n[2]) - 1) / 2};
  const std::array<double, 3>& sp = s.image.spacing;
  const std::vector<float> in = floats(s.image);
  std::vector<float> out(in.size());
  const bool labelled = s.has_label();
  const Tensor label_in = labelled ? s.label.voxels.contiguous() : Tensor();
  Tensor label_out = labelled ? zeros(label_in.shape(), label_in.dtype()) : Tensor();
  const size_t elem = labelled ? dtype_size(label_in.dtype()) : 0;
  const auto* lin = labelled ? static_cast<const unsigned char*>(label_in.raw_data()) : nullptr;
  auto* lout = labelled ? static_cast<unsigned char*>(label_out.raw_data()) : nullptr;
  const int64_t label_channels = labelled ? s.label.channels() : 0;
  int64_t v = 0;
  for (int64_t k = 0; k < n[2]; ++k)
    for (int64_t j = 0; j < n[1]; ++j)
      for (int64_t i = 0; i < n[0]; ++i, ++v) {
        const double mm[3] = {(double(i) - centre[0]) * sp[0], (double(j) - centre[1]) * sp[1], (double(k) - centre[2]) * sp[2]};
        double at[3];
        for (int a = 0; a < 3; ++a) {
          const double q = (r[0][a] * (mm[0] - p.translation[0]) + r[1][a] * (mm[1] - p.translation[1]) +
                            r[2][a] * (mm[2] - p.translation[2])) / p.scale;  // R^T (mm - t) / scale
          at[a] = q / sp[a] + centre[a] + (p.elastic_alpha > 0 ? displacement[static_cast<size_t>(a)][static_cast<size_t>(v)] : 0.0);
        }
        for (int64_t c = 0; c < channels; ++c)
          out[static_cast<size_t>(v * channels + c)] = static_cast<float>(trilinear(in, n, channels, c, at[0], at[1], at[2]));
        if (labelled) {
          const int64_t xi = std::llround(at[0]), yi = std::llround(at[1]), zi = std::llround(at[2]);
          if (xi >= 0 && yi >= 0 && zi >= 0 && xi < n[0] && yi < n[1] && zi < n[2])
            std::memcpy(lout + static_cast<size_t>(v * label_channels) * elem,
                        lin + static_cast<size_t>(((zi * n[1] + yi) * n[0] + xi) * label_channels) * elem,
                        static_cast<size_t>(label_channels) * elem);
        }
      }
  store(s.image, out);
  if (labelled) s.label.voxels = label_out;
}

// ---- intensity transforms (image only), each on every channel

inline void gaussian_noise(io::Image& im, double std_dev, Random& rng) {
  std::vector<float> v = augment_detail::floats(im);
  for (float& x : v) x = static_cast<float>(x + std_dev * rng.normal());
  augment_detail::store(im, v);
}

inline void gaussian_blur(io::Image& im, double sigma, int64_t channel) {
  const std::array<int64_t, 3> n = augment_detail::dims_of(im);
  const int64_t channels = im.channels();
  std::vector<float> v = augment_detail::floats(im), plane(static_cast<size_t>(n[0] * n[1] * n[2]));
  for (size_t p = 0; p < plane.size(); ++p) plane[p] = v[p * static_cast<size_t>(channels) + static_cast<size_t>(channel)];
  gaussian_filter(plane, n, {sigma, sigma, sigma});
  for (size_t p = 0; p < plane.size(); ++p) v[p * static_cast<size_t>(channels) + static_cast<size_t>(channel)] = plane[p];
  augment_detail::store(im, v);
}

inline void multiply(io::Image& im, double factor) {
  std::vector<float> v = augment_detail::floats(im);
  for (float& x : v) x = static_cast<float>(x * factor);
  augment_detail::store(im, v);
}

// (x - mean) * factor + mean per channel, clipped to the channel's original range.
inline void contrast(io::Image& im, double factor) {
  std::vector<float> v = augment_detail::floats(im);
  const int64_t channels = im.channels();
  for (int64_t c = 0; c < channels; ++c) {
    const auto s = augment_detail::stats(v, channels, c);
    for (size_t at = static_cast<size_t>(c); at < v.size(); at += static_cast<size_t>(channels))
      v[at] = static_cast<float>(std::clamp((v[at] - s.mean) * factor + s.mean, s.min, s.max));
  }
  augment_detail::store(im, v);
}

// batchgenerators' augment_gamma with retain_stats: scaled to [0, 1], raised to gamma, scaled
// back, then the channel's mean and std restored; `invert` applies it to the negated image.
inline void gamma(io::Image& im, double g, bool invert) {
  std::vector<float> v = augment_detail::floats(im);
  const int64_t channels = im.channels();
  const double eps = 1e-7;
  if (invert)
    for (float& x : v) x = -x;
  for (int64_t c = 0; c < channels; ++c) {
    const auto before = augment_detail::stats(v, channels, c);
    const double range = before.max - before.min;
    for (size_t at = static_cast<size_t>(c); at < v.size(); at += static_cast<size_t>(channels))
      v[at] = static_cast<float>(std::pow((v[at] - before.min) / (range + eps), g) * (range + eps) + before.min);
    const auto after = augment_detail::stats(v, channels, c);
    for (size_t at = static_cast<size_t>(c); at < v.size(); at += static_cast<size_t>(channels))
      v[at] = static_cast<float>((v[at] - after.mean) / (after.std + 1e-8) * before.std + before.mean);
  }
  if (invert)
    for (float& x : v) x = -x;
  augment_detail::store(im, v);
}

// Downsamples channel `channel` by `zoom` (nearest) and brings it back to full size (trilinear).
inline void simulate_low_resolution(io::Image& im, double zoom, int64_t channel) {
  const std::array<int64_t, 3> n = augment_detail::dims_of(im);
  const int64_t channels = im.channels();
  std::array<int64_t, 3> m;
  for (int a = 0; a < 3; ++a) m[a] = std::max<int64_t>(1, std::llround(double(n[a]) * zoom));
  std::vector<float> v = augment_detail::floats(im);
  std::vector<float> small(static_cast<size_t>(m[0] * m[1] * m[2]));
  auto src = [](int64_t t, int64_t from, int64_t to) {
    return std::min(from - 1, static_cast<int64_t>(std::floor((double(t) + 0.5) * double(from) / double(to))));
  };
  for (int64_t k = 0; k < m[2]; ++k)
    for (int64_t j = 0; j < m[1]; ++j)
      for (int64_t i = 0; i < m[0]; ++i) {
        const int64_t si = src(i, n[0], m[0]), sj = src(j, n[1], m[1]), sk = src(k, n[2], m[2]);
        small[static_cast<size_t>((k * m[1] + j) * m[0] + i)] = v[static_cast<size_t>(((sk * n[1] + sj) * n[0] + si) * channels + channel)];
      }
  for (int64_t k = 0; k < n[2]; ++k)
    for (int64_t j = 0; j < n[1]; ++j)
      for (int64_t i = 0; i < n[0]; ++i) {
        const auto back = [&](int64_t t, int64_t from, int64_t to) {
          return std::clamp((double(t) + 0.5) * double(to) / double(from) - 0.5, 0.0, double(to - 1));
        };
        const double x = back(i, n[0], m[0]), y = back(j, n[1], m[1]), z = back(k, n[2], m[2]);
        v[static_cast<size_t>(((k * n[1] + j) * n[0] + i) * channels + channel)] =
            static_cast<float>(augment_detail::trilinear(small, m, 1, 0, x, y, z));
      }
  augment_detail::store(im, v);
}

// One random augmentation of a sample, nnU-Net's pipeline with the probabilities of `config`.
inline void augment(Sample& s, const AugmentConfig& config, Random& rng) {
  using augment_detail::factor_around_one;
  SpatialParams p;
  bool spatial = false;
  if (rng.chance(config.p_rotation)) {
    for (double& angle : p.rotation) angle = rng.uniform(-config.max_rotation, config.max_rotation);
    spatial = true;
  }
  if (rng.chance(config.p_scale)) {
    p.scale = factor_around_one(rng, config.min_scale, config.max_scale);
    spatial = true;
  }
  if (rng.chance(config.p_translation)) {
    for (double& t : p.translation) t = rng.uniform(-config.max_translation, config.max_translation);
    spatial = true;
  }
  if (rng.chance(config.p_elastic)) {
    p.elastic_alpha = rng.uniform(config.min_alpha, config.max_alpha);
    p.elastic_sigma = rng.uniform(config.min_sigma, config.max_sigma);
    spatial = true;
  }
  if (spatial) spatial_transform(s, p, rng);
  const int64_t channels = s.image.channels();
  if (rng.chance(config.p_noise)) gaussian_noise(s.image, rng.uniform(0.0, config.max_noise_std), rng);
  if (rng.chance(config.p_blur)) {
    const double sigma = rng.uniform(config.min_blur_sigma, config.max_blur_sigma);
    for (int64_t c = 0; c < channels; ++c)
      if (rng.chance(config.p_blur_per_channel)) gaussian_blur(s.image, sigma, c);
  }
  if (rng.chance(config.p_brightness)) multiply(s.image, rng.uniform(config.min_brightness, config.max_brightness));
  if (rng.chance(config.p_contrast)) contrast(s.image, factor_around_one(rng, config.min_contrast, config.max_contrast));
  if (rng.chance(config.p_lowres)) {
    const double zoom = rng.uniform(config.min_lowres_zoom, config.max_lowres_zoom);
    for (int64_t c = 0; c < channels; ++c)
      if (rng.chance(config.p_lowres_per_channel)) simulate_low_resolution(s.image, zoom, c);
  }
  if (rng.chance(config.p_gamma_inverted)) gamma(s.image, factor_around_one(rng, config.min_gamma, config.max_gamma), true);
  if (rng.chance(config.p_gamma)) gamma(s.image, factor_around_one(rng, config.min_gamma, config.max_gamma), false);
  for (int axis = 0; axis < 3; ++axis)
    if (config.flip_axes[static_cast<size_t>(axis)] && rng.chance(config.p_flip)) flip(s, axis);
  if (rng.chance(config.p_rot90)) rot90(s, static_cast<int>(rng.integer(1, 4)), 0, 1);
}

}  // namespace vox::data
