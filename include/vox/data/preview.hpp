#pragma once
// PNG previews of a volume, with its label drawn over it: one row of axial, one of coronal and
// one of sagittal slices, `slices` of each, evenly spread over the label's extent (or the whole
// volume without a label). Slices are shown at their physical aspect (resampled to the finest
// spacing, nearest), superior at the top of coronal and sagittal views, intensities scaled from
// the 0.5th to the 99.5th percentile; classes take fixed colours at 45 % opacity.
#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "vox/data/crop_pad.hpp"
#include "vox/io/png.hpp"

namespace vox::data {

struct PreviewOptions {
  int64_t slices = 3;          // per view
  int64_t max_tile = 256;      // pixels on a tile's longer side at most
  double opacity = 0.45;
};

inline void write_preview_png(const std::string& path, const io::Image& image, const io::Image* label = nullptr,
                              const PreviewOptions& o = {}) {
  const Index3 n = detail::size_of(image);
  VOX_CHECK(o.slices >= 1, "write_preview_png", "slices must be at least 1");
  if (label) VOX_CHECK(detail::size_of(*label) == n, "write_preview_png", "the label's size differs from the image's");
  const int64_t channels = image.channels();
  const std::vector<float> all = image.voxels.to_vector<float>();
  std::vector<float> v(static_cast<size_t>(n[0] * n[1] * n[2]));
  for (size_t p = 0; p < v.size(); ++p) v[p] = all[p * static_cast<size_t>(channels)];  // first channel
  std::vector<float> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  const float lo = sorted[static_cast<size_t>(0.005 * double(sorted.size() - 1))], hi = sorted[static_cast<size_t>(0.995 * double(sorted.size() - 1))];
  const std::vector<int64_t> lab = label ? label->voxels.to_vector<int64_t>() : std::vector<int64_t>();
  // slice positions: spread over the label's bounding box, else the volume
  Box extent{{0, 0, 0}, n};
  if (label) extent = foreground_box(*label);
  static const uint8_t colours[8][3] = {{230, 25, 75}, {60, 180, 75}, {255, 225, 25}, {0, 130, 200},
                                        {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230}};
  const double finest = std::min({image.spacing[0], image.spacing[1], image.spacing[2]});
  struct Tile {
    int64_t width, height;
    std::vector<uint8_t> rgb;
  };
  std::vector<std::vector<Tile>> rows(3);
  for (int view = 0; view < 3; ++view) {
    // view 0 axial (normal k): columns i, rows j; 1 coronal (normal j): columns i, rows k from the top;
    // 2 sagittal (normal i): columns j, rows k from the top
    const int normal = view == 0 ? 2 : view == 1 ? 1 : 0, across = view == 2 ? 1 : 0, down = view == 0 ? 1 : 2;
    double w_mm = double(n[across]) * image.spacing[across], h_mm = double(n[down]) * image.spacing[down];
    const double scale = std::min(1.0 / finest, double(o.max_tile) / std::max(w_mm, h_mm));  // pixels per mm
    const int64_t tw = std::max<int64_t>(1, std::llround(w_mm * scale)), th = std::max<int64_t>(1, std::llround(h_mm * scale));
    for (int64_t s = 0; s < o.slices; ++s) {
      const int64_t at = extent.begin[normal] + (extent.size[normal] * (2 * s + 1)) / (2 * o.slices);
      Tile tile{tw, th, std::vector<uint8_t>(static_cast<size_t>(tw * th * 3))};
      for (int64_t y = 0; y < th; ++y)
        for (int64_t x = 0; x < tw; ++x) {
          Index3 p;
          p[normal] = at;
          p[across] = std::min(n[across] - 1, static_cast<int64_t>(double(x) / double(tw) * double(n[across])));
          const int64_t row = std::min(n[down] - 1, static_cast<int64_t>(double(y) / double(th) * double(n[down])));
          p[down] = view == 0 ? row : n[down] - 1 - row;
          const size_t voxel = static_cast<size_t>((p[2] * n[1] + p[1]) * n[0] + p[0]);
          const double grey = hi > lo ? std::clamp((v[voxel] - lo) / (hi - lo), 0.0f, 1.0f) * 255.0 : 0.0;
          double rgb[3] = {grey, grey, grey};
          if (label && lab[voxel] > 0) {
            const uint8_t* c = colours[(lab[voxel] - 1) % 8];
            for (int ch = 0; ch < 3; ++ch) rgb[ch] = (1 - o.opacity) * rgb[ch] + o.opacity * c[ch];
          }
          for (int ch = 0; ch < 3; ++ch) tile.rgb[static_cast<size_t>((y * tw + x) * 3 + ch)] = static_cast<uint8_t>(std::lround(rgb[ch]));
        }
      rows[static_cast<size_t>(view)].push_back(std::move(tile));
    }
  }
  const int64_t gap = 4;
  int64_t width = 0, height = 0;
  for (const auto& r : rows) {
    int64_t w = 0, h = 0;
    for (const Tile& t : r) w += t.width + gap, h = std::max(h, t.height);
    width = std::max(width, w + gap), height += h + gap;
  }
  height += gap;
  std::vector<uint8_t> canvas(static_cast<size_t>(width * height * 3), 0);
  int64_t y0 = gap;
  for (const auto& r : rows) {
    int64_t x0 = gap, h = 0;
    for (const Tile& t : r) {
      for (int64_t y = 0; y < t.height; ++y)
        std::copy(t.rgb.begin() + y * t.width * 3, t.rgb.begin() + (y + 1) * t.width * 3, canvas.begin() + ((y0 + y) * width + x0) * 3);
      x0 += t.width + gap, h = std::max(h, t.height);
    }
    y0 += h + gap;
  }
  io::write_png(path, canvas, width, height, 3);
}

}  // namespace vox::data
