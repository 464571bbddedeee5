#pragma once
// Separable resampling of channels-last volumes: each output voxel is a weighted sum of input
// voxels, and the weights factor per axis. Average pooling (any padding rule), adaptive average
// pooling, nearest and (tri)linear upsampling are all of this form; only their per-axis tables
// differ. The adjoint of a separable map is separable with transposed tables, so the backward
// pass is the same gather kernel: no scatter, no races between threads.
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "kernels/cpu/parallel.hpp"

namespace vox::kernels::cpu {

// For each output index along one axis: the input indices and weights it sums (CSR layout).
struct AxisTable {
  int64_t in_size = 1, out_size = 1;
  std::vector<int64_t> begin{0};  // out_size + 1 offsets into index/weight
  std::vector<int64_t> index;
  std::vector<double> weight;

  void add(int64_t i, double w) {
    index.push_back(i);
    weight.push_back(w);
  }
  void close_row() { begin.push_back(static_cast<int64_t>(index.size())); }

  // The adjoint: for each input index, the output indices that read it and their weights.
  AxisTable transposed() const {
    AxisTable t;
    t.in_size = out_size;
    t.out_size = in_size;
    std::vector<std::vector<std::pair<int64_t, double>>> rows(static_cast<size_t>(in_size));
    for (int64_t o = 0; o < out_size; ++o)
      for (int64_t k = begin[static_cast<size_t>(o)]; k < begin[static_cast<size_t>(o + 1)]; ++k)
        rows[static_cast<size_t>(index[static_cast<size_t>(k)])].push_back({o, weight[static_cast<size_t>(k)]});
    for (const auto& r : rows) {
      for (const auto& [o, w] : r) t.add(o, w);
      t.close_row();
    }
    return t;
  }
};

// y[n][od][oh][ow][c] = sum over the three tables' entries of wd*wh*ww * x[n][id][ih][iw][c].
template <class T>
void resample_separable(int64_t batch, int64_t channels, const std::array<AxisTable, 3>& axes, const T* x, T* y) {
  const auto& [td, th, tw] = axes;
  const int64_t in_plane = td.in_size * th.in_size * tw.in_size * channels;
  const int64_t outputs = batch * td.out_size * th.out_size * tw.out_size;
  parallel_for(0, outputs, std::max<int64_t>(1, 4096 / std::max<int64_t>(channels, 1)), [&](int64_t pb, int64_t pe) {
    std::vector<double> acc(static_cast<size_t>(channels));
    for (int64_t p = pb; p < pe; ++p) {
      const int64_t ow = p % tw.out_size, oh = (p / tw.out_size) % th.out_size,
                    od = (p / (tw.out_size * th.out_size)) % td.out_size, n = p / (tw.out_size * th.out_size * td.out_size);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t a = td.begin[static_cast<size_t>(od)]; a < td.begin[static_cast<size_t>(od + 1)]; ++a)
        for (int64_t b = th.begin[static_cast<size_t>(oh)]; b < th.begin[static_cast<size_t>(oh + 1)]; ++b) {
          const double wab = td.weight[static_cast<size_t>(a)] * th.weight[static_cast<size_t>(b)];
          const T* row = x + n * in_plane +
                         (td.index[static_cast<size_t>(a)] * th.in_size + th.index[static_cast<size_t>(b)]) * tw.in_size * channels;
          for (int64_t c3 = tw.begin[static_cast<size_t>(ow)]; c3 < tw.begin[static_cast<size_t>(ow + 1)]; ++c3) {
            const double w = wab * tw.weight[static_cast<size_t>(c3)];
            const T* src = row + tw.index[static_cast<size_t>(c3)] * channels;
            for (int64_t c = 0; c < channels; ++c) acc[static_cast<size_t>(c)] += w * static_cast<double>(src[c]);
          }
        }
      T* out = y + p * channels;
      for (int64_t c = 0; c < channels; ++c) out[c] = static_cast<T>(acc[static_cast<size_t>(c)]);
    }
  });
}

// Max pooling over per-axis windows [start, end) (already clipped to the input). Writes the
// flat input position (d * H + h) * W + w of each maximum, per channel, for the backward pass,
// unless argmax is null (inference: the values alone, in a faster loop; the same values).
template <class T>
void max_pool_forward(int64_t batch, int64_t channels, const std::array<int64_t, 3>& in,
                      const std::array<std::vector<std::pair<int64_t, int64_t>>, 3>& windows, const T* x, T* y,
                      int64_t* argmax) {
  const std::array<int64_t, 3> out{static_cast<int64_t>(windows[0].size()), static_cast<int64_t>(windows[1].size()),
                                   static_cast<int64_t>(windows[2].size())};
  const int64_t outputs = batch * out[0] * out[1] * out[2];
  parallel_for(0, outputs, std::max<int64_t>(1, 4096 / std::max<int64_t>(channels, 1)), [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      const int64_t ow = p % out[2], oh = (p / out[2]) % out[1], od = (p / (out[2] * out[1])) % out[0],
                    n = p / (out[2] * out[1] * out[0]);
      T* best = y + p * channels;
      if (!argmax) {  // values only (inference): a branch-free, vectorisable update; a NaN wins and stays
        bool first = true;
        for (int64_t d = windows[0][static_cast<size_t>(od)].first; d < windows[0][static_cast<size_t>(od)].second; ++d)
          for (int64_t h = windows[1][static_cast<size_t>(oh)].first; h < windows[1][static_cast<size_t>(oh)].second; ++h)
            for (int64_t w = windows[2][static_cast<size_t>(ow)].first; w < windows[2][static_cast<size_t>(ow)].second; ++w) {
              const T* src = x + (n * in[0] * in[1] * in[2] + (d * in[1] + h) * in[2] + w) * channels;
              if (first) std::copy(src, src + channels, best);
              else
                for (int64_t c = 0; c < channels; ++c) best[c] = src[c] > best[c] || src[c] != src[c] ? src[c] : best[c];
              first = false;
            }
        continue;
      }
      int64_t* where = argmax + p * channels;
      bool first = true;
      for (int64_t d = windows[0][static_cast<size_t>(od)].first; d < windows[0][static_cast<size_t>(od)].second; ++d)
        for (int64_t h = windows[1][static_cast<size_t>(oh)].first; h < windows[1][static_cast<size_t>(oh)].second; ++h)
          for (int64_t w = windows[2][static_cast<size_t>(ow)].first; w < windows[2][static_cast<size_t>(ow)].second; ++w) {
            const int64_t flat = (d * in[1] + h) * in[2] + w;
            const T* src = x + (n * in[0] * in[1] * in[2] + flat) * channels;
            for (int64_t c = 0; c < channels; ++c) {
              const T v = src[c];
              if (first || v > best[c] || (v != v && best[c] == best[c])) {
                best[c] = v;
                where[c] = flat;
              }
            }
            first = false;
          }
    }
  });
}

// dx[n][argmax][c] += dy[n][p][c]. Threads own disjoint (batch, channel block) pairs.
template <class T>
void max_pool_backward(int64_t batch, int64_t channels, int64_t in_positions, int64_t out_positions, const T* dy,
                       const int64_t* argmax, T* dx) {
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (channels + kBlock - 1) / kBlock;
  std::fill(dx, dx + batch * in_positions * channels, T(0));
  parallel_for(0, batch * blocks, 1, [&](int64_t ib, int64_t ie) {
    for (int64_t item = ib; item < ie; ++item) {
      const int64_t n = item / blocks, c0 = (item % blocks) * kBlock, c1 = std::min(channels, c0 + kBlock);
      for (int64_t p = 0; p < out_positions; ++p) {
        const int64_t o = (n * out_positions + p) * channels;
        for (int64_t c = c0; c < c1; ++c) dx[(n * in_positions + argmax[o + c]) * channels + c] += dy[o + c];
      }
    }
  });
}

}  // namespace vox::kernels::cpu
