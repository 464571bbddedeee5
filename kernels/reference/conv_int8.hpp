#pragma once
// Reference INT8 convolution: the integer oracle the fast kernels (kernels/cpu/conv_int8.hpp)
// match bit for bit. Naive loops, one result at a time.
//
// The scheme (DESIGN.md, quant/): activations u8, asymmetric, one scale and zero point per
// tensor; weights s8, symmetric, one scale per output channel; int32 sums. A result is
//   acc[c]  = sum over the taps that exist of (x_q - zero_point) * w_q      (exact, in int32)
//   y[c]    = fma(float(acc[c]), scale[c], bias[c])   scale[c] = x_scale * w_scale[c]
//   y[c]    = y[c] < 0 ? y[c] * slope[c] : y[c]      where an activation is fused (ReLU: slope 0)
// Positions outside the input contribute nothing: the real value 0 is exactly x_q = zero_point.
// float(acc) rounds to nearest even, as vcvtdq2ps does; the fused multiply-add rounds once.
#include <cmath>
#include <cstdint>

#include "kernels/conv_geometry.hpp"

namespace vox::kernels::reference {

// What follows the integer sum: per output channel scale, optional bias and fused activation
// (slope null: none; slope_stride 0: one slope for every channel, 1: one per channel).
struct Int8Epilogue {
  const float* scale = nullptr;
  const float* bias = nullptr;
  const float* slope = nullptr;
  int64_t slope_stride = 0;

  float operator()(int32_t acc, int64_t c) const {
    float y = std::fma(static_cast<float>(acc), scale[c], bias ? bias[c] : 0.0f);
    if (slope && y < 0.0f) y *= slope[c * slope_stride];
    return y;
  }
};

// x_q = clamp(round_half_even(x * inv_scale) + zero_point, 0, 255): the u8 quantization of an
// activation (inv_scale = 1 / scale, as an f32). NaN quantizes to the zero point; the product is
// first clamped to [-512, 512], beyond which every zero point saturates anyway.
inline uint8_t quantize_u8(float x, float inv_scale, int32_t zero_point) {
  float scaled = x * inv_scale;
  if (std::isnan(scaled)) scaled = 0.0f;
  scaled = std::fmin(std::fmax(scaled, -512.0f), 512.0f);
  const int32_t q = static_cast<int32_t>(std::nearbyint(scaled)) + zero_point;  // the default rounding mode: to nearest even
  return static_cast<uint8_t>(q < 0 ? 0 : q > 255 ? 255 : q);
}
inline float dequantize_u8(uint8_t q, float scale, int32_t zero_point) { return static_cast<float>(q - zero_point) * scale; }

namespace conv_int8_detail {
inline bool inside(const std::array<int64_t, 3>& dims, int64_t d, int64_t h, int64_t w) {
  return d >= 0 && d < dims[0] && h >= 0 && h < dims[1] && w >= 0 && w < dims[2];
}
inline int64_t row(const std::array<int64_t, 3>& dims, int64_t n, int64_t d, int64_t h, int64_t w) {
  return ((n * dims[0] + d) * dims[1] + h) * dims[2] + w;
}
}  // namespace conv_int8_detail

// Convolution: x [N, g.in..., in_channels] u8, w [out_channels][kD][kH][kW][in_per_group] s8,
// y [N, g.out..., out_channels] f32.
inline void conv_forward_int8(const ConvGeometry& g, const uint8_t* x, int32_t x_zero_point, const int8_t* w, const Int8Epilogue& epilogue,
                              float* y) {
  using namespace conv_int8_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume();
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t od = 0; od < g.out[0]; ++od)
      for (int64_t oh = 0; oh < g.out[1]; ++oh)
        for (int64_t ow = 0; ow < g.out[2]; ++ow)
          for (int64_t co = 0; co < g.out_channels; ++co) {
            const int64_t grp = co / og;
            int32_t acc = 0;
            for (int64_t kd = 0, t = 0; kd < g.kernel[0]; ++kd)
              for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
                for (int64_t kw = 0; kw < g.kernel[2]; ++kw, ++t) {
                  const int64_t d = od * g.stride[0] - g.padding[0] + kd * g.dilation[0];
                  const int64_t h = oh * g.stride[1] - g.padding[1] + kh * g.dilation[1];
                  const int64_t ww = ow * g.stride[2] - g.padding[2] + kw * g.dilation[2];
                  if (!inside(g.in, d, h, ww)) continue;
                  const uint8_t* src = x + row(g.in, n, d, h, ww) * g.in_channels + grp * cg;
                  for (int64_t ci = 0; ci < cg; ++ci) acc += (int32_t{src[ci]} - x_zero_point) * int32_t{w[(co * kv + t) * cg + ci]};
                }
            y[row(g.out, n, od, oh, ow) * g.out_channels + co] = epilogue(acc, co);
          }
}

// Transposed convolution: the data gradient of the convolution `g` (DESIGN: g.in is the
// transposed convolution's output). x [N, g.out..., out_channels] u8, w as the convolution's
// [out_channels][kD][kH][kW][in_per_group] (PyTorch's transposed weight [in, out / groups, k...]
// is that with in and out swapped), y [N, g.in..., in_channels] f32. Output q sums, over taps k
// and the inputs o with o * stride - padding + k * dilation = q, x[o][co] * w[co][k][ci].
inline void conv_transpose_int8(const ConvGeometry& g, const uint8_t* x, int32_t x_zero_point, const int8_t* w, const Int8Epilogue& epilogue,
                                float* y) {
  using namespace conv_int8_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume();
  auto reached = [&](int axis, int64_t i, int64_t k) -> int64_t {  // the input of x that tap k brings to output i, or -1
    const int64_t t = i + g.padding[axis] - k * g.dilation[axis];
    if (t < 0 || t % g.stride[axis] != 0) return -1;
    return t / g.stride[axis] < g.out[axis] ? t / g.stride[axis] : -1;
  };
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t d = 0; d < g.in[0]; ++d)
      for (int64_t h = 0; h < g.in[1]; ++h)
        for (int64_t ww = 0; ww < g.in[2]; ++ww)
          for (int64_t ci = 0; ci < g.in_channels; ++ci) {
            const int64_t grp = ci / cg;
            int32_t acc = 0;
            for (int64_t kd = 0, t = 0; kd < g.kernel[0]; ++kd)
              for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
                for (int64_t kw = 0; kw < g.kernel[2]; ++kw, ++t) {
                  const int64_t od = reached(0, d, kd), oh = reached(1, h, kh), ow = reached(2, ww, kw);
                  if (od < 0 || oh < 0 || ow < 0) continue;
                  const uint8_t* src = x + row(g.out, n, od, oh, ow) * g.out_channels + grp * og;
                  for (int64_t co = 0; co < og; ++co)
                    acc += (int32_t{src[co]} - x_zero_point) * int32_t{w[((grp * og + co) * kv + t) * cg + ci % cg]};
                }
            y[row(g.in, n, d, h, ww) * g.in_channels + ci] = epilogue(acc, ci);
          }
}

// y[m][n] = epilogue(sum_k (x[m][k] - zero_point) * w[n][k], n): a linear layer, weight [N][K].
inline void linear_int8(int64_t M, int64_t N, int64_t K, const uint8_t* x, int32_t x_zero_point, const int8_t* w, const Int8Epilogue& epilogue,
                        float* y) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += (int32_t{x[m * K + k]} - x_zero_point) * int32_t{w[n * K + k]};
      y[m * N + n] = epilogue(acc, n);
    }
}

}  // namespace vox::kernels::reference
