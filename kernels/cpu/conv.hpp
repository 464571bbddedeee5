#pragma once
// Channels-last 3-D convolution on the CPU: forward, data gradient and weight gradient.
//
// Output positions are processed in tiles. For a tile, the kernel taps it needs are gathered
// into a small column buffer ([tile][taps x channels], bounded, one per thread and reused), and
// one GEMM against the repacked weights produces the tile's outputs. The whole volume is never
// unfolded. The data gradient gathers, for each input position, the output positions that read
// it, so threads never write the same element and no atomics are needed; with a stride, it works
// one stride phase at a time, on the taps that phase actually uses. The weight gradient
// sums tile products into a fixed number of partial gradients, so its results do not depend on
// the thread count either.
//
// bf16 (T = uint16_t, raw bf16 bits: kernels/bf16_bits.hpp) runs the same passes on the bf16
// GEMM (kernels/cpu/gemm_bf16.hpp): tap rows gathered as bf16, products accumulated in f32 and
// rounded once when stored, the bias added in f32 before that rounding; kernels/reference/
// conv_bf16.hpp defines the bits these passes produce. Passes with at most 4 outputs per position
// (segmentation heads, a transposed convolution into the classes, at full resolution) would spend
// the GEMM's 16 lanes on 1 to 4 of them: bf16 runs them on the f32 planar kernels instead, on the
// widened values, rounded once (bf16_through_f32).
#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "kernels/conv_geometry.hpp"
#include "kernels/cpu/conv_planar.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/gemm_bf16.hpp"
#include "kernels/cpu/parallel.hpp"

namespace vox::kernels::cpu {

namespace conv_detail {

// bf16 storage: the kernels' raw bf16 bits.
template <class T>
constexpr bool is_bf16 = std::is_same_v<T, uint16_t>;
// What the GEMM accumulates and returns: f32 for bf16, T otherwise.
template <class T>
using acc_t = std::conditional_t<is_bf16<T>, float, T>;
// An accumulated value as stored: rounded once for bf16.
template <class T>
inline T from_acc(acc_t<T> v) {
  if constexpr (is_bf16<T>) return float_to_bf16_bits(v);
  else return v;
}

inline int64_t tile_for(int64_t row_length) { return conv_tile_rows(row_length); }

// tile_for, shrunk where the tiles are few (the deep, small layers), so that their count is a
// multiple of the thread count: with 2 threads, 5 tiles kept one thread waiting a fifth of the
// layer. Each output row is computed alone, so the tile size does not change the results.
inline int64_t balanced_tile(int64_t positions, int64_t row_length) {
  const int64_t threads = num_threads();
  int64_t tile = tile_for(row_length);
  auto tiles = [&] { return (positions + tile - 1) / tile; };
  if (threads <= 1 || tiles() >= 8 * threads) return tile;
  while (tile > 6 && tiles() % threads != 0) tile -= 6;
  return tiles() % threads == 0 ? tile : tile_for(row_length);
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

// Copies n elements. Runs of a few channels are the common case (1 to 32 channels per tap), so
// a plain loop avoids a library call per tap; the attribute keeps GCC from turning it into one.
template <class T>
__attribute__((optimize("no-tree-loop-distribute-patterns"))) inline void copy_run(const T* __restrict src, int64_t n, T* __restrict dst) {
  if (n >= 64) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}
template <class T>
__attribute__((optimize("no-tree-loop-distribute-patterns"))) inline void fill_run(int64_t n, T value, T* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = value;
}
template <class T>
inline void zero_run(int64_t n, T* dst) {
  fill_run(n, T(0), dst);
}

// Writes a planar row acc[co][w] into channels-last out at row (n, d, h) of a grid of `dims`,
// positions first + step * index along each axis; plus bias[co] when given.
template <class T>
void store_row(T* out, int64_t channels, const std::array<int64_t, 3>& dims, const std::array<int64_t, 3>& first,
               const std::array<int64_t, 3>& step, int64_t width, int64_t n, int64_t d, int64_t h, const T* acc,
               const T* bias = nullptr) {
  T* row = out + ((n * dims[0] + first[0] + d * step[0]) * dims[1] + first[1] + h * step[1]) * dims[2] * channels;
  for (int64_t w = 0; w < width; ++w)
    for (int64_t co = 0; co < channels; ++co)
      row[(first[2] + w * step[2]) * channels + co] = acc[co * width + w] + (bias ? bias[co] : T(0));
}

inline bool few_outputs(const ConvGeometry& g, int64_t outputs) { return g.groups == 1 && outputs <= kPlanarMaxOutputs; }

// Gathers kernel[0] x kernel[1] x kernel[2] taps of `width` values each from `src`, a
// channels-last volume of `dims` positions with `channels` values per position (src already
// offset to the group's first channel): tap (a, b, c) reads position first + (a, b, c) * step of
// batch item n, or `outside` (zero; an int8 input's zero point) outside the volume. When a tap row along w is contiguous (unit w step,
// all of it inside, width == channels: one group), it is one run: one copy instead of kernel[2].
template <class T>
void gather_tap_rows(const T* src, const std::array<int64_t, 3>& dims, int64_t channels, int64_t n, const std::array<int64_t, 3>& first,
                     const std::array<int64_t, 3>& step, const std::array<int64_t, 3>& kernel, int64_t width, T* row,
                     T outside = T(0)) {
  const int64_t kw_n = kernel[2];
  const bool whole_run = width == channels && step[2] == 1 && first[2] >= 0 && first[2] + kw_n <= dims[2];
  for (int64_t a = 0; a < kernel[0]; ++a) {
    const int64_t d = first[0] + a * step[0];
    for (int64_t b = 0; b < kernel[1]; ++b) {
      const int64_t h = first[1] + b * step[1];
      T* dst = row + (a * kernel[1] + b) * kw_n * width;
      if (d < 0 || d >= dims[0] || h < 0 || h >= dims[1]) {
        fill_run(kw_n * width, outside, dst);
        continue;
      }
      const T* line = src + ((n * dims[0] + d) * dims[1] + h) * dims[2] * channels;
      if (whole_run) {
        copy_run(line + first[2] * channels, kw_n * width, dst);
        continue;
      }
      if (width == 1) {  // one channel (a first layer, a 1-channel data gradient): one load per tap, no call
        for (int64_t c = 0; c < kw_n; ++c) {
          const int64_t w = first[2] + c * step[2];
          dst[c] = w < 0 || w >= dims[2] ? outside : line[w * channels];
        }
        continue;
      }
      for (int64_t c = 0; c < kw_n; ++c) {
        const int64_t w = first[2] + c * step[2];
        if (w < 0 || w >= dims[2]) fill_run(width, outside, dst + c * width);
        else copy_run(line + w * channels, width, dst + c * width);
      }
    }
  }
}

// Gathers the taps of output position p for group grp: row[tap][ci] (`outside` outside the input).
template <class T>
void gather_taps(const ConvGeometry& g, const T* x, int64_t p, int64_t grp, T* row, T outside = T(0)) {
  const Position o = unravel(p, g.out);
  gather_tap_rows(x + grp * g.in_per_group(), g.in, g.in_channels, o.n,
                  {o.d * g.stride[0] - g.padding[0], o.h * g.stride[1] - g.padding[1], o.w * g.stride[2] - g.padding[2]}, g.dilation,
                  g.kernel, g.in_per_group(), row, outside);
}

// Packs one [K][N] right-hand side per group, element (k, n) of group grp being value(grp, k, n),
// straight into gemm_packed's panel layout, in parallel: repacking the weights is otherwise a
// serial pass at every call, which the largest layers notice.
template <class T, class Value>
std::vector<std::vector<T>> pack_groups(int64_t groups, int64_t K, int64_t N, Value value) {
  if constexpr (is_bf16<T>) {
    const int64_t panels = (N + gemm_bf16_detail::kPanel - 1) / gemm_bf16_detail::kPanel;
    std::vector<std::vector<T>> packed(static_cast<size_t>(groups));
    for (int64_t grp = 0; grp < groups; ++grp) {
      std::vector<T>& out = packed[static_cast<size_t>(grp)];
      out.resize(static_cast<size_t>(gemm_bf16_detail::packed_size(N, K)));
      parallel_for(0, panels, 1, [&](int64_t b, int64_t e) {
        pack_bf16_panels(N, K, [&](int64_t k, int64_t n) { return value(grp, k, n); }, out.data(), b, e);
      });
    }
    return packed;
  } else {
    constexpr int64_t NR = gemm_detail::panel_width<T>();
    const int64_t panels = (N + NR - 1) / NR;
    std::vector<std::vector<T>> packed(static_cast<size_t>(groups));
    for (int64_t grp = 0; grp < groups; ++grp) {
      std::vector<T>& out = packed[static_cast<size_t>(grp)];
      out.resize(static_cast<size_t>(gemm_detail::packed_size<T>(N, K)));
      parallel_for(0, panels * K, std::max<int64_t>(1, 4096 / NR), [&](int64_t b, int64_t e) {
        for (int64_t pk = b; pk < e; ++pk) {
          const int64_t panel = pk / K, k = pk % K, n0 = panel * NR;
          T* dst = out.data() + (panel * K + k) * NR;
          for (int64_t j = 0; j < NR; ++j) dst[j] = n0 + j < N ? value(grp, k, n0 + j) : T(0);
        }
      });
    }
    return packed;
  }
}

// C[rows][N] (+)= A * packed B on the calling thread, in the accumulator type.
template <class T>
void gemm_rows(int64_t rows, int64_t N, int64_t K, const T* a, int64_t lda, const T* packed, acc_t<T>* c, int64_t ldc,
               bool accumulate) {
  if constexpr (is_bf16<T>) gemm_bf16_packed(rows, N, K, a, lda, packed, c, ldc, accumulate);
  else gemm_packed<T>(rows, N, K, a, lda, packed, c, ldc, accumulate);
}

// out[p][grp * N + j] = sum_k A_grp[p][k] * B_grp[k][j] (+ bias[grp * N + j]) for every position
// p, in parallel tiles.
// Rows of A are gathered by gather(p, grp, row) into a per-thread buffer, or read in place from
// `direct` (row stride direct_ld) when the convolution is pointwise.
template <class T, class Gather>
void tiled_group_gemm(int64_t positions, int64_t groups, int64_t K, int64_t N, const std::vector<std::vector<T>>& packed,
                      const T* direct, int64_t direct_ld, T* out, int64_t ldc, Gather gather, const T* bias = nullptr) {
  const int64_t tile = balanced_tile(positions, K);
  const int64_t tiles = (positions + tile - 1) / tile;
  parallel_for(0, tiles, 1, [&](int64_t tb, int64_t te) {
    std::vector<T> col(direct ? 0 : static_cast<size_t>(tile * K));
    std::vector<float> result(is_bf16<T> ? static_cast<size_t>(tile * N) : 0);  // bf16: f32 sums, rounded when stored
    for (int64_t ti = tb; ti < te; ++ti) {
      const int64_t p0 = ti * tile, rows = std::min(tile, positions - p0);
      for (int64_t grp = 0; grp < groups; ++grp) {
        const T* a = direct ? direct + p0 * direct_ld : col.data();
        if (!direct)
          for (int64_t r = 0; r < rows; ++r) gather(p0 + r, grp, col.data() + r * K);
        T* c = out + p0 * ldc + grp * N;
        if constexpr (is_bf16<T>) {
          gemm_rows<T>(rows, N, K, a, direct ? direct_ld : K, packed[static_cast<size_t>(grp)].data(), result.data(), N, false);
          for (int64_t r = 0; r < rows; ++r) round_to_bf16(result.data() + r * N, bias ? bias + grp * N : nullptr, N, c + r * ldc);
        } else {
          gemm_packed<T>(rows, N, K, a, direct ? direct_ld : K, packed[static_cast<size_t>(grp)].data(), c, ldc, false);
          if (bias)  // while the tile is still in cache, instead of another pass over the output
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t j = 0; j < N; ++j) c[r * ldc + j] += bias[grp * N + j];
        }
      }
    }
  });
}

}  // namespace conv_detail

namespace conv_detail {

// A unit-stride convolution pass with at most 4 outputs per position, as planar_correlate:
// out[q][o] = sum over taps t = (kd, kh, kw) and source channels c of
// weight(t, c, o) * src_c[q + direction * (k * dilation - padding)]. The forward pass reads x
// forwards (direction +1); the data gradient reads dy backwards (direction -1) with the same
// weights, transposed.
template <class T, class Weight>
void planar_unit_stride(const ConvGeometry& g, int64_t direction, const T* src, const std::array<int64_t, 3>& src_grid,
                        int64_t channels, const std::array<int64_t, 3>& out_grid, int64_t outputs, Weight weight_of,
                        const T* bias, T* out) {
  const int64_t kv = g.kernel_volume();
  std::vector<std::array<int64_t, 3>> offsets;
  for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
    for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
      for (int64_t kw = 0; kw < g.kernel[2]; ++kw)
        offsets.push_back({direction * (kd * g.dilation[0] - g.padding[0]), direction * (kh * g.dilation[1] - g.padding[1]),
                           direction * (kw * g.dilation[2] - g.padding[2])});
  std::vector<T> weight(static_cast<size_t>(kv * channels * outputs));  // [tap][c][o]
  for (int64_t t = 0; t < kv; ++t)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t o = 0; o < outputs; ++o) weight[static_cast<size_t>((t * channels + c) * outputs + o)] = weight_of(t, c, o);
  std::array<int64_t, 3> low{}, high{};
  planar_margins(out_grid, src_grid, offsets, low, high);
  const Planes<T> planes(src, g.batch, src_grid, channels, low, high);
  planar_correlate(planes, out_grid, offsets, weight.data(), outputs, [&](int64_t n, int64_t d, int64_t h, const T* acc) {
    store_row(out, outputs, out_grid, {0, 0, 0}, {1, 1, 1}, out_grid[2], n, d, h, acc, bias);
  });
}

}  // namespace conv_detail

namespace conv_detail {
inline std::vector<float> widened(const uint16_t* v, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  parallel_for(0, n, 65536, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[static_cast<size_t>(i)] = bf16_bits_to_float(v[i]);
  });
  return out;
}
// A bf16 pass computed by its f32 kernel: `pass` gets the widened operands (a of na values, b of
// nb, the bias of nbias or none) and an f32 output of n values, which is then rounded into out.
template <class Pass>
void bf16_through_f32(const uint16_t* a, int64_t na, const uint16_t* b, int64_t nb, const uint16_t* bias, int64_t nbias, uint16_t* out,
                      int64_t n, Pass pass) {
  const std::vector<float> a32 = widened(a, na), b32 = widened(b, nb), bias32 = bias ? widened(bias, nbias) : std::vector<float>();
  std::vector<float> out32(static_cast<size_t>(n));
  pass(a32.data(), b32.data(), bias ? bias32.data() : nullptr, out32.data());
  parallel_for(0, n, 65536, [&](int64_t lo, int64_t hi) { round_to_bf16(out32.data() + lo, nullptr, hi - lo, out + lo); });
}
}  // namespace conv_detail

template <class T>
void conv_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  using namespace conv_detail;
  if constexpr (is_bf16<T>)
    if (few_outputs(g, g.out_channels) && g.stride == std::array<int64_t, 3>{1, 1, 1})
      return bf16_through_f32(x, g.in_positions() * g.in_channels, w, g.weight_size(), bias, g.out_channels, y,
                              g.out_positions() * g.out_channels,
                              [&](const float* x32, const float* w32, const float* b32, float* y32) { conv_forward<float>(g, x32, w32, b32, y32); });
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume(), K = kv * cg;
  const int64_t C = g.out_channels;
  if constexpr (!is_bf16<T>)
    if (few_outputs(g, C) && g.stride == std::array<int64_t, 3>{1, 1, 1}) {  // y[q] = sum over taps of w x[q + k * dilation - padding]
      planar_unit_stride(g, 1, x, g.in, g.in_channels, g.out, C, [&](int64_t t, int64_t c, int64_t co) { return w[(co * kv + t) * cg + c]; },
                         bias, y);
      return;
    }
  // Right-hand side per group: the weights as [K][og].
  const auto packed = pack_groups<T>(g.groups, K, og, [&](int64_t grp, int64_t k, int64_t co) { return w[(grp * og + co) * K + k]; });
  const bool pointwise = is_pointwise(g) && g.groups == 1;
  tiled_group_gemm<T>(g.out_positions(), g.groups, K, og, packed, pointwise ? x : nullptr, g.in_channels, y, C,
                      [&](int64_t p, int64_t grp, T* row) { gather_taps(g, x, p, grp, row); }, bias);
}

namespace conv_detail {

// The data gradient of a strided convolution (the forward pass of a transposed convolution),
// one stride phase at a time. An input position q reads output o through tap k only where
// q + padding - k * dilation is a multiple of the stride, so along each axis the residue of q
// modulo the stride fixes which taps connect: for a 3^3 kernel with stride 2, 27/8 on average.
// Each phase gathers only its own taps and multiplies by only their weights, instead of
// gathering all 27 taps, most of them zeros.
template <class T>
void strided_backward_data(const ConvGeometry& g, const T* dy, const T* w, T* dx) {
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume();
  // taps[axis][residue]: the kernel offsets along that axis that reach an input of that residue
  const std::array<std::vector<std::vector<int64_t>>, 3> taps = stride_phase_taps(g);
  // With at most 4 input channels, each phase is a planar correlation of dy (copied to planes
  // once, with margins wide enough for every phase).
  // (bf16 never takes the planar branches: conv_backward_data sends it through f32 first; the
  // `if constexpr`s below only keep them from being compiled for it)
  const bool planar = !is_bf16<T> && few_outputs(g, cg);
  std::optional<Planes<acc_t<T>>> planes;
  auto phase_offsets = [&](const std::array<int64_t, 3>& first, const std::vector<std::array<int64_t, 4>>& phase_taps) {
    std::vector<std::array<int64_t, 3>> offsets;  // exact divisions: the phase guarantees divisibility
    for (const auto& t : phase_taps)
      offsets.push_back({(first[0] + g.padding[0] - t[0] * g.dilation[0]) / g.stride[0],
                         (first[1] + g.padding[1] - t[1] * g.dilation[1]) / g.stride[1],
                         (first[2] + g.padding[2] - t[2] * g.dilation[2]) / g.stride[2]});
    return offsets;
  };
  auto taps_of_phase = [&](int64_t rd, int64_t rh, int64_t rw) {
    std::vector<std::array<int64_t, 4>> phase_taps;  // kd, kh, kw, flat tap index
    for (int64_t kd : taps[0][static_cast<size_t>(rd)])
      for (int64_t kh : taps[1][static_cast<size_t>(rh)])
        for (int64_t kw : taps[2][static_cast<size_t>(rw)]) phase_taps.push_back({kd, kh, kw, (kd * g.kernel[1] + kh) * g.kernel[2] + kw});
    return phase_taps;
  };
  auto counts_of_phase = [&](const std::array<int64_t, 3>& first) {
    std::array<int64_t, 3> counts;
    for (int a = 0; a < 3; ++a) counts[a] = (g.in[a] - first[a] + g.stride[a] - 1) / g.stride[a];
    return counts;
  };
  if constexpr (!is_bf16<T>)
  if (planar) {
    std::array<int64_t, 3> low{}, high{};
    for (int64_t rd = 0; rd < std::min(g.stride[0], g.in[0]); ++rd)
      for (int64_t rh = 0; rh < std::min(g.stride[1], g.in[1]); ++rh)
        for (int64_t rw = 0; rw < std::min(g.stride[2], g.in[2]); ++rw)
          planar_margins(counts_of_phase({rd, rh, rw}), g.out, phase_offsets({rd, rh, rw}, taps_of_phase(rd, rh, rw)), low, high);
    planes.emplace(dy, g.batch, g.out, og, low, high);
  }
  for (int64_t rd = 0; rd < std::min(g.stride[0], g.in[0]); ++rd)
    for (int64_t rh = 0; rh < std::min(g.stride[1], g.in[1]); ++rh)
      for (int64_t rw = 0; rw < std::min(g.stride[2], g.in[2]); ++rw) {
        // this phase's inputs: d = rd + stride * i for i < counts[0], and so on
        const std::array<int64_t, 3> first{rd, rh, rw};
        const std::array<int64_t, 3> counts = counts_of_phase(first);
        const std::vector<std::array<int64_t, 4>> phase_taps = taps_of_phase(rd, rh, rw);
        const int64_t K = static_cast<int64_t>(phase_taps.size()) * og;
        const int64_t positions = g.batch * counts[0] * counts[1] * counts[2];
        auto input_offset = [&](int64_t p) {  // the phase's p-th input position, as a row of dx
          const Position i = unravel(p, counts);
          return ((i.n * g.in[0] + first[0] + i.d * g.stride[0]) * g.in[1] + first[1] + i.h * g.stride[1]) * g.in[2] + first[2] +
                 i.w * g.stride[2];
        };
        if (K == 0) {  // no tap reaches these inputs (a kernel smaller than the stride)
          parallel_for(0, positions, 4096, [&](int64_t b, int64_t e) {
            for (int64_t p = b; p < e; ++p) std::fill_n(dx + input_offset(p) * g.in_channels, g.in_channels, T(0));
          });
          continue;
        }
        if constexpr (!is_bf16<T>)
        if (planar) {
          std::vector<T> weight(static_cast<size_t>(K * cg));  // [phase tap][co][ci]
          for (size_t j = 0; j < phase_taps.size(); ++j)
            for (int64_t co = 0; co < og; ++co)
              for (int64_t ci = 0; ci < cg; ++ci)
                weight[static_cast<size_t>((static_cast<int64_t>(j) * og + co) * cg + ci)] = w[(co * kv + phase_taps[j][3]) * cg + ci];
          planar_correlate(*planes, counts, phase_offsets(first, phase_taps), weight.data(), cg,
                           [&](int64_t n, int64_t d, int64_t h, const T* acc) { store_row(dx, cg, g.in, first, g.stride, counts[2], n, d, h, acc); });
          continue;
        }
        // row j * og + co, column ci: the weight of phase tap j from output co to input ci
        const auto packed = pack_groups<T>(g.groups, K, cg, [&](int64_t grp, int64_t k, int64_t ci) {
          return w[((grp * og + k % og) * kv + phase_taps[static_cast<size_t>(k / og)][3]) * cg + ci];
        });
        const int64_t tile = balanced_tile(positions, K), tiles = (positions + tile - 1) / tile;
        parallel_for(0, tiles, 1, [&](int64_t tb, int64_t te) {
          std::vector<T> col(static_cast<size_t>(tile * K));
          std::vector<acc_t<T>> result(static_cast<size_t>(tile * cg));
          std::vector<int64_t> rows_of_dx(static_cast<size_t>(tile));
          for (int64_t ti = tb; ti < te; ++ti) {
            const int64_t p0 = ti * tile, rows = std::min(tile, positions - p0);
            for (int64_t r = 0; r < rows; ++r) rows_of_dx[static_cast<size_t>(r)] = input_offset(p0 + r);
            for (int64_t grp = 0; grp < g.groups; ++grp) {
              for (int64_t r = 0; r < rows; ++r) {
                const Position i = unravel(rows_of_dx[static_cast<size_t>(r)], g.in);
                T* row = col.data() + r * K;
                for (size_t j = 0; j < phase_taps.size(); ++j) {
                  // exact divisions: the phase guarantees divisibility
                  const int64_t od = (i.d + g.padding[0] - phase_taps[j][0] * g.dilation[0]) / g.stride[0];
                  const int64_t oh = (i.h + g.padding[1] - phase_taps[j][1] * g.dilation[1]) / g.stride[1];
                  const int64_t ow = (i.w + g.padding[2] - phase_taps[j][2] * g.dilation[2]) / g.stride[2];
                  const bool inside = i.d + g.padding[0] - phase_taps[j][0] * g.dilation[0] >= 0 &&
                                      i.h + g.padding[1] - phase_taps[j][1] * g.dilation[1] >= 0 &&
                                      i.w + g.padding[2] - phase_taps[j][2] * g.dilation[2] >= 0 && od < g.out[0] && oh < g.out[1] &&
                                      ow < g.out[2];
                  T* dst = row + static_cast<int64_t>(j) * og;
                  if (!inside) {
                    zero_run(og, dst);
                  } else {
                    const T* src = dy + (((i.n * g.out[0] + od) * g.out[1] + oh) * g.out[2] + ow) * g.out_channels + grp * og;
                    copy_run(src, og, dst);
                  }
                }
              }
              gemm_rows<T>(rows, cg, K, col.data(), K, packed[static_cast<size_t>(grp)].data(), result.data(), cg, false);
              for (int64_t r = 0; r < rows; ++r) {
                T* dst = dx + rows_of_dx[static_cast<size_t>(r)] * g.in_channels + grp * cg;
                if constexpr (is_bf16<T>) round_to_bf16(result.data() + r * cg, nullptr, cg, dst);
                else copy_run(result.data() + r * cg, cg, dst);
              }
            }
          }
        });
      }
}

}  // namespace conv_detail

template <class T>
void conv_backward_data(const ConvGeometry& g, const T* dy, const T* w, T* dx) {
  using namespace conv_detail;
  if constexpr (is_bf16<T>)
    if (few_outputs(g, g.in_per_group()))
      return bf16_through_f32(dy, g.out_positions() * g.out_channels, w, g.weight_size(), nullptr, 0, dx, g.in_positions() * g.in_channels,
                              [&](const float* dy32, const float* w32, const float*, float* dx32) { conv_backward_data<float>(g, dy32, w32, dx32); });
  if (g.stride != std::array<int64_t, 3>{1, 1, 1}) return strided_backward_data(g, dy, w, dx);
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume(), K = kv * og, kw_n = g.kernel[2];
  if constexpr (!is_bf16<T>)
    if (few_outputs(g, cg)) {  // dx[q] = sum over taps of w^T dy[q + padding - k * dilation]
      planar_unit_stride(g, -1, dy, g.out, og, g.in, cg, [&](int64_t t, int64_t co, int64_t ci) { return w[(co * kv + t) * cg + ci]; },
                         static_cast<const T*>(nullptr), dx);
      return;
    }
  // Input q reads output q + padding - k * dilation through tap k. Taps are ordered with kw
  // reversed, so that along w they read increasing output positions: with one group and no
  // dilation along w, the taps of one (kd, kh) are one contiguous run of dy.
  // Right-hand side per group: the weights as [tap][og][cg], for rows of gathered dy.
  const auto packed = pack_groups<T>(g.groups, K, cg, [&](int64_t grp, int64_t k, int64_t ci) {
    const int64_t slot = k / og, co = k % og, t = slot - slot % kw_n + (kw_n - 1 - slot % kw_n);  // slot -> tap: kw reversed
    return w[((grp * og + co) * kv + t) * cg + ci];
  });
  const bool pointwise = is_pointwise(g) && g.groups == 1;
  // Input q reads output q + padding - k * dilation: d and h step back as the tap index grows;
  // along w the slots (kw reversed) step forward from the output read by kw = kW - 1.
  auto gather = [&](int64_t q, int64_t grp, T* row) {
    const Position i = unravel(q, g.in);
    gather_tap_rows(dy + grp * og, g.out, g.out_channels, i.n,
                    {i.d + g.padding[0], i.h + g.padding[1], i.w + g.padding[2] - (kw_n - 1) * g.dilation[2]},
                    {-g.dilation[0], -g.dilation[1], g.dilation[2]}, g.kernel, og, row);
  };
  tiled_group_gemm<T>(g.in_positions(), g.groups, K, cg, packed, pointwise ? dy : nullptr, g.out_channels, dx,
                      g.in_channels, gather);
}

template <class T>
void conv_backward_weight(const ConvGeometry& g, const T* x, const T* dy, T* dw) {
  using namespace conv_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume(), K = kv * cg;
  const int64_t P = g.out_positions();
  // Work is split two ways, by sizes only, so that the result is the same on any number of
  // threads: position tiles into chunks that each sum into their own copy of the gradient
  // (conv_geometry.hpp's weight_gradient_split), and output channels into blocks (for large
  // weights, which few chunks would leave serial).
  const WeightGradientSplit split = weight_gradient_split(g);
  const int64_t tile = split.tile, chunks = split.chunks;
  const int64_t weight = g.weight_size();
  const int64_t co_blocks = chunks >= 8 ? 1 : std::clamp<int64_t>(og / 32, 1, 8);
  // One chunk sums straight into dw, except in bf16, whose sums stay f32 until rounded.
  const bool direct = chunks == 1 && !is_bf16<T>;
  std::vector<acc_t<T>> partial(direct ? 0 : static_cast<size_t>(chunks * weight), acc_t<T>(0));
  if (direct) std::fill(dw, dw + weight, T(0));
  parallel_for(0, chunks * co_blocks, 1, [&](int64_t ib, int64_t ie) {
    std::vector<T> col(static_cast<size_t>(tile * K)), dyt(static_cast<size_t>(tile * og)), scratch;
    for (int64_t item = ib; item < ie; ++item) {
      const int64_t chunk = item / co_blocks, block = item % co_blocks;
      const int64_t co0 = og * block / co_blocks, co1 = og * (block + 1) / co_blocks, cn = co1 - co0;
      acc_t<T>* acc = partial.empty() ? nullptr : partial.data() + chunk * weight;
      if constexpr (!is_bf16<T>)
        if (direct) acc = dw;
      for (int64_t ti = split.first_tile(chunk); ti < split.first_tile(chunk + 1); ++ti) {
        const int64_t p0 = ti * tile, rows = std::min(tile, P - p0);
        for (int64_t grp = 0; grp < g.groups; ++grp) {
          for (int64_t r = 0; r < rows; ++r) gather_taps(g, x, p0 + r, grp, col.data() + r * K);
          for (int64_t r = 0; r < rows; ++r) {  // this block's dy, transposed to [cn][rows]
            const T* src = dy + (p0 + r) * g.out_channels + grp * og + co0;
            for (int64_t c = 0; c < cn; ++c) dyt[static_cast<size_t>(c * rows + r)] = src[c];
          }
          // dW[grp][co0:co1][K] += dy^T [cn][rows] x col [rows][K]
          if constexpr (is_bf16<T>) gemm_bf16(cn, K, rows, dyt.data(), rows, col.data(), K, acc + (grp * og + co0) * K, K, true, scratch);
          else gemm<T>(cn, K, rows, dyt.data(), rows, col.data(), K, acc + (grp * og + co0) * K, K, true, scratch);
        }
      }
    }
  });
  if (direct) return;
  parallel_for(0, weight, 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      acc_t<T> total = partial[static_cast<size_t>(i)];
      for (int64_t c = 1; c < chunks; ++c) total += partial[static_cast<size_t>(c * weight + i)];
      dw[i] = from_acc<T>(total);
    }
  });
}

}  // namespace vox::kernels::cpu
