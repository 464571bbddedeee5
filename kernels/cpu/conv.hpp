#pragma once
// Channels-last 3-D convolution on the CPU: forward, data gradient and weight gradient.
//
// Output positions are processed in tiles. For a tile, the kernel taps it needs are gathered
// into a small column buffer ([tile][taps x channels], bounded, one per thread and reused), and
// one GEMM against the repacked weights produces the tile's outputs. The whole volume is never
// unfolded. The data gradient gathers, for each input position, the output positions that read
// it, so threads never write the same element and no atomics are needed. The weight gradient is
// split over kernel taps and output-channel blocks; each weight element is summed in one fixed
// order, so results do not depend on the thread count.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/conv_geometry.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/parallel.hpp"

namespace vox::kernels::cpu {

namespace conv_detail {

inline int64_t tile_for(int64_t row_length) {
  return std::clamp<int64_t>(32768 / std::max<int64_t>(row_length, 1), 12, 384);
}

struct Position {
  int64_t n, d, h, w;
};
inline Position unravel(int64_t p, const std::array<int64_t, 3>& dims) {
  Position q;
  q.w = p % dims[2];
  p /= dims[2];
  q.h = p % dims[1];
  p /= dims[1];
  q.d = p % dims[0];
  q.n = p / dims[0];
  return q;
}

// True for 1x1x1 kernels with unit stride and no padding: the input rows are the GEMM rows.
inline bool is_pointwise(const ConvGeometry& g) {
  return g.kernel_volume() == 1 && g.stride == std::array<int64_t, 3>{1, 1, 1} &&
         g.padding == std::array<int64_t, 3>{0, 0, 0} && g.in == g.out;
}

// Gathers the taps of output position p for group grp: row[tap][ci] (zeros outside the input).
template <class T>
void gather_taps(const ConvGeometry& g, const T* x, int64_t p, int64_t grp, int64_t tap_begin, int64_t tap_end, T* row) {
  const Position o = unravel(p, g.out);
  const int64_t cg = g.in_per_group();
  for (int64_t t = tap_begin; t < tap_end; ++t) {
    const int64_t kw = t % g.kernel[2], kh = (t / g.kernel[2]) % g.kernel[1], kd = t / (g.kernel[2] * g.kernel[1]);
    const int64_t id = o.d * g.stride[0] - g.padding[0] + kd * g.dilation[0];
    const int64_t ih = o.h * g.stride[1] - g.padding[1] + kh * g.dilation[1];
    const int64_t iw = o.w * g.stride[2] - g.padding[2] + kw * g.dilation[2];
    T* dst = row + (t - tap_begin) * cg;
    if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1] || iw < 0 || iw >= g.in[2]) {
      std::fill(dst, dst + cg, T(0));
    } else {
      const T* src = x + (((o.n * g.in[0] + id) * g.in[1] + ih) * g.in[2] + iw) * g.in_channels + grp * cg;
      std::copy(src, src + cg, dst);
    }
  }
}

}  // namespace conv_detail

template <class T>
void conv_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  using namespace conv_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume(), K = kv * cg;
  const int64_t P = g.out_positions(), C = g.out_channels;
  // Weights per group as [K][og], the GEMM's right-hand side.
  std::vector<T> wt(static_cast<size_t>(g.groups * K * og));
  for (int64_t grp = 0; grp < g.groups; ++grp)
    for (int64_t co = 0; co < og; ++co)
      for (int64_t k = 0; k < K; ++k) wt[static_cast<size_t>((grp * K + k) * og + co)] = w[(grp * og + co) * K + k];
  const bool pointwise = is_pointwise(g) && g.groups == 1;
  const int64_t tile = tile_for(K);
  const int64_t tiles = (P + tile - 1) / tile;
  parallel_for(0, tiles, 1, [&](int64_t tb, int64_t te) {
    std::vector<T> col(pointwise ? 0 : static_cast<size_t>(tile * K)), scratch;
    for (int64_t ti = tb; ti < te; ++ti) {
      const int64_t p0 = ti * tile, rows = std::min(tile, P - p0);
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const T* a = x + p0 * g.in_channels;
        int64_t lda = g.in_channels;
        if (!pointwise) {
          for (int64_t r = 0; r < rows; ++r) gather_taps(g, x, p0 + r, grp, 0, kv, col.data() + r * K);
          a = col.data();
          lda = K;
        }
        gemm<T>(rows, og, K, a, lda, wt.data() + grp * K * og, og, y + p0 * C + grp * og, C, false, scratch);
      }
      if (bias)
        for (int64_t r = 0; r < rows; ++r) {
          T* out = y + (p0 + r) * C;
          for (int64_t c = 0; c < C; ++c) out[c] += bias[c];
        }
    }
  });
}

template <class T>
void conv_backward_data(const ConvGeometry& g, const T* dy, const T* w, T* dx) {
  using namespace conv_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume(), K = kv * og;
  const int64_t Q = g.in_positions();
  // Weights per group as [tap][og][cg]: the GEMM's right-hand side for gathered dy rows.
  std::vector<T> w2(static_cast<size_t>(g.groups * K * cg));
  for (int64_t grp = 0; grp < g.groups; ++grp)
    for (int64_t t = 0; t < kv; ++t)
      for (int64_t co = 0; co < og; ++co)
        for (int64_t ci = 0; ci < cg; ++ci)
          w2[static_cast<size_t>(((grp * kv + t) * og + co) * cg + ci)] = w[((grp * og + co) * kv + t) * cg + ci];
  const bool pointwise = is_pointwise(g) && g.groups == 1;
  const int64_t tile = tile_for(K);
  const int64_t tiles = (Q + tile - 1) / tile;
  parallel_for(0, tiles, 1, [&](int64_t tb, int64_t te) {
    std::vector<T> col(pointwise ? 0 : static_cast<size_t>(tile * K)), scratch;
    for (int64_t ti = tb; ti < te; ++ti) {
      const int64_t q0 = ti * tile, rows = std::min(tile, Q - q0);
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const T* a = dy + q0 * g.out_channels;
        int64_t lda = g.out_channels;
        if (!pointwise) {
          for (int64_t r = 0; r < rows; ++r) {
            const Position i = unravel(q0 + r, g.in);
            T* row = col.data() + r * K;
            for (int64_t t = 0; t < kv; ++t) {
              const int64_t kw = t % g.kernel[2], kh = (t / g.kernel[2]) % g.kernel[1],
                            kd = t / (g.kernel[2] * g.kernel[1]);
              const int64_t nd = i.d + g.padding[0] - kd * g.dilation[0];
              const int64_t nh = i.h + g.padding[1] - kh * g.dilation[1];
              const int64_t nw = i.w + g.padding[2] - kw * g.dilation[2];
              T* dst = row + t * og;
              const bool hit = nd >= 0 && nh >= 0 && nw >= 0 && nd % g.stride[0] == 0 && nh % g.stride[1] == 0 &&
                               nw % g.stride[2] == 0 && nd / g.stride[0] < g.out[0] && nh / g.stride[1] < g.out[1] &&
                               nw / g.stride[2] < g.out[2];
              if (!hit) {
                std::fill(dst, dst + og, T(0));
                continue;
              }
              const int64_t o = ((i.n * g.out[0] + nd / g.stride[0]) * g.out[1] + nh / g.stride[1]) * g.out[2] +
                                nw / g.stride[2];
              const T* src = dy + o * g.out_channels + grp * og;
              std::copy(src, src + og, dst);
            }
          }
          a = col.data();
          lda = K;
        }
        gemm<T>(rows, cg, K, a, lda, w2.data() + grp * K * cg, cg, dx + q0 * g.in_channels + grp * cg, g.in_channels,
                false, scratch);
      }
    }
  });
}

template <class T>
void conv_backward_weight(const ConvGeometry& g, const T* x, const T* dy, T* dw) {
  using namespace conv_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume(), K = kv * cg;
  const int64_t P = g.out_positions();
  // Work items: (group, tap, block of output channels). Each owns its weight elements.
  const int64_t co_blocks = std::clamp<int64_t>((16 + kv * g.groups - 1) / (kv * g.groups), 1, std::max<int64_t>(og / 8, 1));
  const int64_t tile = tile_for(cg + og);
  const int64_t items = g.groups * kv * co_blocks;
  parallel_for(0, items, 1, [&](int64_t ib, int64_t ie) {
    std::vector<T> col(static_cast<size_t>(tile * cg)), dyt(static_cast<size_t>(tile * og)), scratch;
    for (int64_t item = ib; item < ie; ++item) {
      const int64_t grp = item / (kv * co_blocks), t = (item / co_blocks) % kv, blk = item % co_blocks;
      const int64_t c0 = og * blk / co_blocks, c1 = og * (blk + 1) / co_blocks, width = c1 - c0;
      if (width == 0) continue;
      T* out = dw + (grp * og + c0) * K + t * cg;  // rows of stride K
      for (int64_t r = 0; r < width; ++r) std::fill(out + r * K, out + r * K + cg, T(0));
      for (int64_t p0 = 0; p0 < P; p0 += tile) {
        const int64_t rows = std::min(tile, P - p0);
        for (int64_t r = 0; r < rows; ++r) gather_taps(g, x, p0 + r, grp, t, t + 1, col.data() + r * cg);
        for (int64_t r = 0; r < rows; ++r) {  // dy tile, transposed to [width][rows]
          const T* src = dy + (p0 + r) * g.out_channels + grp * og + c0;
          for (int64_t c = 0; c < width; ++c) dyt[static_cast<size_t>(c * rows + r)] = src[c];
        }
        gemm<T>(width, cg, rows, dyt.data(), rows, col.data(), cg, out, K, true, scratch);
      }
    }
  });
}

}  // namespace vox::kernels::cpu
