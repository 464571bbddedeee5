#pragma once
// Reference pooling and resampling on channels-last [N][D][H][W][C] volumes, written from the
// PyTorch definitions one output at a time.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace vox::kernels::reference {

struct Volume {
  int64_t n, d, h, w, c;
  int64_t at(int64_t b, int64_t z, int64_t y, int64_t x, int64_t ch) const { return (((b * d + z) * h + y) * w + x) * c + ch; }
};

inline std::vector<double> max_pool3d(const std::vector<double>& x, const Volume& v, std::array<int64_t, 3> k,
                                      std::array<int64_t, 3> s, std::array<int64_t, 3> p, Volume& out) {
  out = {v.n, (v.d + 2 * p[0] - k[0]) / s[0] + 1, (v.h + 2 * p[1] - k[1]) / s[1] + 1, (v.w + 2 * p[2] - k[2]) / s[2] + 1, v.c};
  std::vector<double> y(static_cast<size_t>(out.n * out.d * out.h * out.w * out.c), -std::numeric_limits<double>::infinity());
  for (int64_t b = 0; b < out.n; ++b)
    for (int64_t z = 0; z < out.d; ++z)
      for (int64_t yy = 0; yy < out.h; ++yy)
        for (int64_t xx = 0; xx < out.w; ++xx)
          for (int64_t ch = 0; ch < v.c; ++ch)
            for (int64_t a = 0; a < k[0]; ++a)
              for (int64_t bb = 0; bb < k[1]; ++bb)
                for (int64_t cc = 0; cc < k[2]; ++cc) {
                  const int64_t iz = z * s[0] - p[0] + a, iy = yy * s[1] - p[1] + bb, ix = xx * s[2] - p[2] + cc;
                  if (iz < 0 || iz >= v.d || iy < 0 || iy >= v.h || ix < 0 || ix >= v.w) continue;
                  auto& o = y[static_cast<size_t>(out.at(b, z, yy, xx, ch))];
                  o = std::max(o, x[static_cast<size_t>(v.at(b, iz, iy, ix, ch))]);
                }
  return y;
}

inline std::vector<double> avg_pool3d(const std::vector<double>& x, const Volume& v, std::array<int64_t, 3> k,
                                      std::array<int64_t, 3> s, std::array<int64_t, 3> p, bool count_include_pad,
                                      Volume& out) {
  out = {v.n, (v.d + 2 * p[0] - k[0]) / s[0] + 1, (v.h + 2 * p[1] - k[1]) / s[1] + 1, (v.w + 2 * p[2] - k[2]) / s[2] + 1, v.c};
  std::vector<double> y(static_cast<size_t>(out.n * out.d * out.h * out.w * out.c), 0.0);
  for (int64_t b = 0; b < out.n; ++b)
    for (int64_t z = 0; z < out.d; ++z)
      for (int64_t yy = 0; yy < out.h; ++yy)
        for (int64_t xx = 0; xx < out.w; ++xx)
          for (int64_t ch = 0; ch < v.c; ++ch) {
            double total = 0, inside = 0, padded = 0;
            for (int64_t a = 0; a < k[0]; ++a)
              for (int64_t bb = 0; bb < k[1]; ++bb)
                for (int64_t cc = 0; cc < k[2]; ++cc) {
                  const int64_t iz = z * s[0] - p[0] + a, iy = yy * s[1] - p[1] + bb, ix = xx * s[2] - p[2] + cc;
                  const bool in_padded = iz < v.d + p[0] && iy < v.h + p[1] && ix < v.w + p[2];
                  if (in_padded) padded += 1;
                  if (iz < 0 || iz >= v.d || iy < 0 || iy >= v.h || ix < 0 || ix >= v.w) continue;
                  total += x[static_cast<size_t>(v.at(b, iz, iy, ix, ch))];
                  inside += 1;
                }
            y[static_cast<size_t>(out.at(b, z, yy, xx, ch))] = total / (count_include_pad ? padded : inside);
          }
  return y;
}

// Trilinear (or nearest) resampling to out_size, PyTorch's coordinate rules.
inline std::vector<double> upsample3d(const std::vector<double>& x, const Volume& v, std::array<int64_t, 3> size,
                                      bool linear, bool align_corners) {
  const std::array<int64_t, 3> in{v.d, v.h, v.w};
  auto source = [&](int axis, int64_t o, int64_t& i0, int64_t& i1, double& frac) {
    const double n_in = static_cast<double>(in[static_cast<size_t>(axis)]), n_out = static_cast<double>(size[static_cast<size_t>(axis)]);
    if (!linear) {
      i0 = i1 = std::min<int64_t>(static_cast<int64_t>(std::floor(static_cast<double>(o) * (n_in / n_out))), in[static_cast<size_t>(axis)] - 1);
      frac = 0;
      return;
    }
    double src;
    if (align_corners) src = n_out > 1 ? static_cast<double>(o) * (n_in - 1) / (n_out - 1) : 0.0;
    else src = std::max(0.0, (static_cast<double>(o) + 0.5) * (n_in / n_out) - 0.5);
    i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(src)), in[static_cast<size_t>(axis)] - 1);
    i1 = std::min<int64_t>(i0 + 1, in[static_cast<size_t>(axis)] - 1);
    frac = src - static_cast<double>(i0);
  };
  std::vector<double> y(static_cast<size_t>(v.n * size[0] * size[1] * size[2] * v.c));
  const Volume out{v.n, size[0], size[1], size[2], v.c};
  for (int64_t b = 0; b < v.n; ++b)
    for (int64_t z = 0; z < size[0]; ++z)
      for (int64_t yy = 0; yy < size[1]; ++yy)
        for (int64_t xx = 0; xx < size[2]; ++xx) {
          int64_t z0, z1, y0, y1, x0, x1;
          double fz, fy, fx;
          source(0, z, z0, z1, fz);
          source(1, yy, y0, y1, fy);
          source(2, xx, x0, x1, fx);
          for (int64_t ch = 0; ch < v.c; ++ch) {
            auto at = [&](int64_t a, int64_t bb, int64_t cc) { return x[static_cast<size_t>(v.at(b, a, bb, cc, ch))]; };
            const double c00 = at(z0, y0, x0) * (1 - fx) + at(z0, y0, x1) * fx;
            const double c01 = at(z0, y1, x0) * (1 - fx) + at(z0, y1, x1) * fx;
            const double c10 = at(z1, y0, x0) * (1 - fx) + at(z1, y0, x1) * fx;
            const double c11 = at(z1, y1, x0) * (1 - fx) + at(z1, y1, x1) * fx;
            const double c0 = c00 * (1 - fy) + c01 * fy, c1 = c10 * (1 - fy) + c11 * fy;
            y[static_cast<size_t>(out.at(b, z, yy, xx, ch))] = c0 * (1 - fz) + c1 * fz;
          }
        }
  return y;
}

}  // namespace vox::kernels::reference
