#pragma once
// Convolutions with at most 4 output channels, computed directly on planar copies of the input.
//
// The tiled GEMM of conv.hpp spends its register tile on 16 output channels; with 1 to 4 (a
// segmentation head, the first layers' data gradients, the transposed convolution into the
// classes) most of the tile is padding, and gathering taps of 1 or 2 channels is all overhead.
// Here the input is copied once into zero-margined planes, one per channel ([n][c][d][h][w]), and
// each output row is a sum of shifted input rows times a scalar weight: contiguous vector loads,
// no gather, no padding in the arithmetic.
//
// planar_correlate computes, over an output grid, out[q][co] = sum over terms (tap t, channel c)
// of weight[t][c][co] * input_c[q + offset_t] (zero outside the input). Convolution forward, the
// unit-stride data gradient and each stride phase of the strided data gradient are this sum with
// their own offsets and weights.
#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#include "kernels/cpu/parallel.hpp"

namespace vox::kernels::cpu {

inline constexpr int64_t kPlanarMaxOutputs = 4;

namespace planar_detail {

// acc[co][w] += sum_j weight[j][co] * src[j][w] for w < width, co < outputs (1 to 4).
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) inline void accumulate_row_f32(
    const float* const* src, const float* weight, int64_t terms, int64_t outputs, int64_t width, float* __restrict acc) {
  float* __restrict a0 = acc;
  float* __restrict a1 = acc + width;
  float* __restrict a2 = acc + 2 * width;
  float* __restrict a3 = acc + 3 * width;
  for (int64_t j = 0; j < terms; ++j) {
    const float* __restrict s = src[j];
    const float* wj = weight + j * outputs;
    switch (outputs) {
      case 1: {
        const float w0 = wj[0];
        for (int64_t w = 0; w < width; ++w) a0[w] += w0 * s[w];
        break;
      }
      case 2: {
        const float w0 = wj[0], w1 = wj[1];
        for (int64_t w = 0; w < width; ++w) a0[w] += w0 * s[w], a1[w] += w1 * s[w];
        break;
      }
      case 3: {
        const float w0 = wj[0], w1 = wj[1], w2 = wj[2];
        for (int64_t w = 0; w < width; ++w) a0[w] += w0 * s[w], a1[w] += w1 * s[w], a2[w] += w2 * s[w];
        break;
      }
      default: {
        const float w0 = wj[0], w1 = wj[1], w2 = wj[2], w3 = wj[3];
        for (int64_t w = 0; w < width; ++w) a0[w] += w0 * s[w], a1[w] += w1 * s[w], a2[w] += w2 * s[w], a3[w] += w3 * s[w];
      }
    }
  }
}

template <class T>
void accumulate_row(const T* const* src, const T* weight, int64_t terms, int64_t outputs, int64_t width, T* acc) {
  if constexpr (std::is_same_v<T, float>) {
    accumulate_row_f32(src, weight, terms, outputs, width, acc);
  } else {
    for (int64_t j = 0; j < terms; ++j)
      for (int64_t co = 0; co < outputs; ++co) {
        const T wv = weight[j * outputs + co];
        for (int64_t w = 0; w < width; ++w) acc[co * width + w] += wv * src[j][w];
      }
  }
}

}  // namespace planar_detail

// Zero-margined planes of a channels-last volume [batch][D][H][W][C]: [batch][C][D'][H'][W'] with
// `low` zeros before and `high` after each axis.
template <class T>
struct Planes {
  std::array<int64_t, 3> dims{}, low{}, high{};  // unpadded dims and margins
  std::array<int64_t, 3> padded{};
  int64_t batch = 0, channels = 0;
  std::vector<T> data;

  Planes(const T* x, int64_t n, std::array<int64_t, 3> d, int64_t c, std::array<int64_t, 3> lo, std::array<int64_t, 3> hi)
      : dims(d), low(lo), high(hi), batch(n), channels(c) {
    for (int a = 0; a < 3; ++a) padded[a] = d[a] + lo[a] + hi[a];
    data.assign(static_cast<size_t>(n * c * padded[0] * padded[1] * padded[2]), T(0));
    parallel_for(0, n * d[0], 1, [&](int64_t b, int64_t e) {
      for (int64_t nd = b; nd < e; ++nd) {
        const int64_t in = nd / d[0], id = nd % d[0];
        for (int64_t ih = 0; ih < d[1]; ++ih) {
          const T* src = x + ((in * d[0] + id) * d[1] + ih) * d[2] * c;
          for (int64_t ch = 0; ch < c; ++ch) {
            T* dst = plane(in, ch) + ((id + lo[0]) * padded[1] + ih + lo[1]) * padded[2] + lo[2];
            for (int64_t iw = 0; iw < d[2]; ++iw) dst[iw] = src[iw * c + ch];
          }
        }
      }
    });
  }
  T* plane(int64_t n, int64_t c) { return data.data() + (n * channels + c) * padded[0] * padded[1] * padded[2]; }
  const T* plane(int64_t n, int64_t c) const { return data.data() + (n * channels + c) * padded[0] * padded[1] * padded[2]; }
};

// Margins that keep grid + offset inside the padded planes for every offset.
inline void planar_margins(const std::array<int64_t, 3>& grid, const std::array<int64_t, 3>& dims,
                           const std::vector<std::array<int64_t, 3>>& offsets, std::array<int64_t, 3>& low, std::array<int64_t, 3>& high) {
  for (int a = 0; a < 3; ++a)
    for (const auto& o : offsets) {
      low[a] = std::max(low[a], -o[a]);
      high[a] = std::max(high[a], grid[a] - 1 + o[a] - (dims[a] - 1));
    }
}

// For every output row (n, d, h) of `grid`: acc[co][w] = sum over taps t and channels c of
// weight[(t * C + c) * outputs + co] * input_c[(d, h, w) + offsets[t]]; then store(n, d, h, acc).
template <class T, class Store>
void planar_correlate(const Planes<T>& in, const std::array<int64_t, 3>& grid, const std::vector<std::array<int64_t, 3>>& offsets,
                      const T* weight, int64_t outputs, Store store) {
  const int64_t C = in.channels, terms = static_cast<int64_t>(offsets.size()) * C, width = grid[2];
  parallel_for(0, in.batch * grid[0] * grid[1], 4, [&](int64_t b, int64_t e) {
    std::vector<const T*> src(static_cast<size_t>(terms));
    std::vector<T> acc(static_cast<size_t>(outputs * width));
    for (int64_t row = b; row < e; ++row) {
      const int64_t n = row / (grid[0] * grid[1]), d = (row / grid[1]) % grid[0], h = row % grid[1];
      for (size_t t = 0; t < offsets.size(); ++t)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t pd = d + offsets[t][0] + in.low[0], ph = h + offsets[t][1] + in.low[1], pw = offsets[t][2] + in.low[2];
          src[t * static_cast<size_t>(C) + static_cast<size_t>(c)] = in.plane(n, c) + (pd * in.padded[1] + ph) * in.padded[2] + pw;
        }
      std::fill(acc.begin(), acc.end(), T(0));
      planar_detail::accumulate_row(src.data(), weight, terms, outputs, width, acc.data());
      store(n, d, h, acc.data());
    }
  });
}

}  // namespace vox::kernels::cpu
