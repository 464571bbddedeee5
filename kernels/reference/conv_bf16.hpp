#pragma once
// Reference bf16 convolution passes (raw bf16 bits in and out, kernels/bf16_bits.hpp): every
// result is a vdpbf16ps chain (reference/gemm_bf16.hpp's dot_bf16) over its products in the
// order kernels/cpu/conv.hpp's bf16 passes take them, then rounded once to bf16. Naive loops,
// one result at a time; the order is the only thing they share with the fast kernels:
//   forward:          taps (kd, kh, kw) in order, then input channels; the bias added in f32;
//   data gradient:    unit stride: taps with kw reversed, then output channels; strided: only
//                     the taps of the input's stride phase, (kd, kh, kw) in order, then output
//                     channels;
//   weight gradient:  positions in order, one chain per chunk of tiles (weight_gradient_split),
//                     the chunks' f32 sums then added in order.
// Passes with at most 4 outputs per position (a unit-stride forward into 1 to 4 channels, a data
// gradient into 1 to 4) are not vdpbf16ps chains: the CPU computes them with its f32 kernels on
// the widened values, rounded once, and tests compare them with exactly that.
#include <cstdint>
#include <vector>

#include "kernels/bf16_bits.hpp"
#include "kernels/conv_geometry.hpp"
#include "kernels/reference/gemm_bf16.hpp"

namespace vox::kernels::reference {

namespace conv_bf16_detail {
inline int64_t position(const ConvGeometry&, const std::array<int64_t, 3>& dims, int64_t n, int64_t d, int64_t h, int64_t w) {
  return ((n * dims[0] + d) * dims[1] + h) * dims[2] + w;
}
inline bool inside(const std::array<int64_t, 3>& dims, int64_t d, int64_t h, int64_t w) {
  return d >= 0 && d < dims[0] && h >= 0 && h < dims[1] && w >= 0 && w < dims[2];
}
// The output a tap reaches from input coordinate i along one axis of the data gradient: (i +
// padding - k * dilation) / stride where that divides exactly and lands inside; -1 otherwise.
inline int64_t reached_output(const ConvGeometry& g, int axis, int64_t i, int64_t k) {
  const int64_t t = i + g.padding[axis] - k * g.dilation[axis];
  if (t < 0 || t % g.stride[axis] != 0) return -1;
  const int64_t o = t / g.stride[axis];
  return o < g.out[axis] ? o : -1;
}
}  // namespace conv_bf16_detail

inline void conv_forward_bf16(const ConvGeometry& g, const uint16_t* x, const uint16_t* w, const uint16_t* bias, uint16_t* y) {
  using namespace conv_bf16_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume(), K = kv * cg;
  std::vector<uint16_t> a(static_cast<size_t>(K)), b(static_cast<size_t>(K));
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t od = 0; od < g.out[0]; ++od)
      for (int64_t oh = 0; oh < g.out[1]; ++oh)
        for (int64_t ow = 0; ow < g.out[2]; ++ow)
          for (int64_t co = 0; co < g.out_channels; ++co) {
            const int64_t grp = co / og;
            for (int64_t kd = 0, t = 0; kd < g.kernel[0]; ++kd)
              for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
                for (int64_t kw = 0; kw < g.kernel[2]; ++kw, ++t) {
                  const int64_t d = od * g.stride[0] - g.padding[0] + kd * g.dilation[0];
                  const int64_t h = oh * g.stride[1] - g.padding[1] + kh * g.dilation[1];
                  const int64_t ww = ow * g.stride[2] - g.padding[2] + kw * g.dilation[2];
                  for (int64_t ci = 0; ci < cg; ++ci) {
                    a[static_cast<size_t>(t * cg + ci)] =
                        inside(g.in, d, h, ww) ? x[position(g, g.in, n, d, h, ww) * g.in_channels + grp * cg + ci] : uint16_t{0};
                    b[static_cast<size_t>(t * cg + ci)] = w[(co * kv + t) * cg + ci];
                  }
                }
            const float sum = dot_bf16(0.0f, K, a.data(), 1, b.data(), 1);
            y[position(g, g.out, n, od, oh, ow) * g.out_channels + co] =
                float_to_bf16_bits(bias ? sum + bf16_bits_to_float(bias[co]) : sum);
          }
}

inline void conv_backward_data_bf16(const ConvGeometry& g, const uint16_t* dy, const uint16_t* w, uint16_t* dx) {
  using namespace conv_bf16_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume();
  const bool unit_stride = g.stride == std::array<int64_t, 3>{1, 1, 1};
  std::vector<uint16_t> a, b;
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t d = 0; d < g.in[0]; ++d)
      for (int64_t h = 0; h < g.in[1]; ++h)
        for (int64_t ww = 0; ww < g.in[2]; ++ww)
          for (int64_t c = 0; c < g.in_channels; ++c) {
            const int64_t grp = c / cg, ci = c % cg;
            a.clear();
            b.clear();
            for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
              for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
                for (int64_t slot = 0; slot < g.kernel[2]; ++slot) {
                  const int64_t kw = unit_stride ? g.kernel[2] - 1 - slot : slot;
                  const int64_t od = reached_output(g, 0, d, kd), oh = reached_output(g, 1, h, kh), ow = reached_output(g, 2, ww, kw);
                  // With a stride, a phase takes only the taps that can reach its inputs at all:
                  // those whose offset matches the input's residue along every axis.
                  if (!unit_stride) {
                    const bool phase_tap = (d + g.padding[0] - kd * g.dilation[0]) % g.stride[0] == 0 &&
                                           (h + g.padding[1] - kh * g.dilation[1]) % g.stride[1] == 0 &&
                                           (ww + g.padding[2] - kw * g.dilation[2]) % g.stride[2] == 0;
                    if (!phase_tap) continue;
                  }
                  const int64_t t = (kd * g.kernel[1] + kh) * g.kernel[2] + kw;
                  for (int64_t co = 0; co < og; ++co) {
                    const bool reached = od >= 0 && oh >= 0 && ow >= 0;
                    a.push_back(reached ? dy[position(g, g.out, n, od, oh, ow) * g.out_channels + grp * og + co] : uint16_t{0});
                    b.push_back(w[((grp * og + co) * kv + t) * cg + ci]);
                  }
                }
            const float sum = dot_bf16(0.0f, static_cast<int64_t>(a.size()), a.data(), 1, b.data(), 1);
            dx[position(g, g.in, n, d, h, ww) * g.in_channels + c] = float_to_bf16_bits(sum);
          }
}

inline void conv_backward_weight_bf16(const ConvGeometry& g, const uint16_t* x, const uint16_t* dy, uint16_t* dw) {
  using namespace conv_bf16_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume();
  const int64_t P = g.out_positions();
  const WeightGradientSplit split = weight_gradient_split(g);
  std::vector<uint16_t> a, b;
  for (int64_t co = 0; co < g.out_channels; ++co)
    for (int64_t t = 0; t < kv; ++t)
      for (int64_t ci = 0; ci < cg; ++ci) {
        const int64_t grp = co / og, kd = t / (g.kernel[1] * g.kernel[2]), kh = t / g.kernel[2] % g.kernel[1], kw = t % g.kernel[2];
        float total = 0;
        for (int64_t chunk = 0; chunk < split.chunks; ++chunk) {
          float partial = 0;
          for (int64_t ti = split.first_tile(chunk); ti < split.first_tile(chunk + 1); ++ti) {
            const int64_t p0 = ti * split.tile, rows = std::min(split.tile, P - p0);
            a.assign(static_cast<size_t>(rows), 0);
            b.assign(static_cast<size_t>(rows), 0);
            for (int64_t r = 0; r < rows; ++r) {
              int64_t p = p0 + r;
              const int64_t ow = p % g.out[2], oh = p / g.out[2] % g.out[1], od = p / (g.out[2] * g.out[1]) % g.out[0],
                            n = p / (g.out[2] * g.out[1] * g.out[0]);
              const int64_t d = od * g.stride[0] - g.padding[0] + kd * g.dilation[0];
              const int64_t h = oh * g.stride[1] - g.padding[1] + kh * g.dilation[1];
              const int64_t ww = ow * g.stride[2] - g.padding[2] + kw * g.dilation[2];
              a[static_cast<size_t>(r)] = dy[p * g.out_channels + co];
              b[static_cast<size_t>(r)] =
                  inside(g.in, d, h, ww) ? x[position(g, g.in, n, d, h, ww) * g.in_channels + grp * cg + ci] : uint16_t{0};
            }
            partial = dot_bf16(partial, rows, a.data(), 1, b.data(), 1);
          }
          total = chunk == 0 ? partial : total + partial;
        }
        dw[(co * kv + t) * cg + ci] = float_to_bf16_bits(total);
      }
}

}  // namespace vox::kernels::reference
