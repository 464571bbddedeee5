#pragma once
// INT8 convolutions on the GPU with dp4a: the arithmetic of kernels/reference/conv_int8.hpp, bit
// for bit (its GPU test compares them).
//   quantize: x f32 -> u8 as the reference does (x * inv_scale, NaN to 0, clamp to +-512, round
//             half to even, + zero point, clamp to [0, 255]), stored as s8 = u8 - 128, each
//             group's channels padded to a multiple of 4 (the weights there are 0);
//   convolve: one thread per output (position, channel) walks the taps that reach an input and
//             sums s8 x s8 quads with __dp4a; since sum (u - zp) w = sum (u - 128) w +
//             (128 - zp) sum w, it also sums each reached tap's weight total (precomputed) and
//             adds the correction: the taps that reach nothing contribute nothing, as in the
//             reference, for convolutions and transposed convolutions alike;
//   epilogue: fmaf(float(acc), scale[c], bias[c]).
// int32 sums stay exact for the layers QuantizedLayer accepts (at most 65536 products per output);
// the correction is added in unsigned arithmetic, whose wrap-around gives the exact total.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/elementwise.cuh"
#include "vox/core/backend.hpp"

namespace vox::cuda {

__device__ inline int8_t quantize_s8_shifted(float x, float inv_scale, int32_t zero_point) {
  float scaled = __fmul_rn(x, inv_scale);  // no contraction: the reference rounds the product
  if (isnan(scaled)) scaled = 0.0f;
  scaled = fminf(fmaxf(scaled, -512.0f), 512.0f);
  int32_t q = static_cast<int32_t>(rintf(scaled)) + zero_point;
  q = q < 0 ? 0 : q > 255 ? 255 : q;
  return static_cast<int8_t>(q - 128);
}

// x [positions][groups][per_group] f32 -> xq [positions][groups][per_group4] s8.
__global__ void quantize_s8_shifted_kernel(int64_t positions, int64_t groups, int64_t per_group, int64_t per_group4, const float* x,
                                           float inv_scale, int32_t zero_point, int8_t* xq) {
  const int64_t n = positions * groups * per_group4;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % per_group4, rest = i / per_group4, g = rest % groups, p = rest / groups;
    xq[i] = c < per_group ? quantize_s8_shifted(x[(p * groups + g) * per_group + c], inv_scale, zero_point) : int8_t{0};
  }
}

// The launch's shape in gather form: outputs y [N, y_dims..., y_channels] from inputs x [N,
// x_dims..., groups, reduce4]; output channel c of group c / (y_channels / groups).
struct Int8GatherConv {
  int64_t batch;
  int64_t x_dims[3], y_dims[3];
  int64_t kernel[3], stride[3], padding[3], dilation[3];
  int64_t groups, reduce4, y_channels;  // reduce4: a group's input channels padded to 4
  bool transposed;
  int32_t zero_point;
  const float *scale, *bias;

  // The input coordinate that tap k brings to output coordinate o along an axis, or -1.
  __device__ int64_t reached(int a, int64_t o, int64_t k) const {
    if (!transposed) {
      const int64_t i = o * stride[a] - padding[a] + k * dilation[a];
      return i >= 0 && i < x_dims[a] ? i : -1;
    }
    const int64_t t = o + padding[a] - k * dilation[a];
    if (t < 0 || t % stride[a] != 0) return -1;
    return t / stride[a] < x_dims[a] ? t / stride[a] : -1;
  }
};

// w [y_channels][taps][reduce4] s8; tap_sums [y_channels][taps]: each tap's weight total.
__global__ void conv_int8_dp4a_kernel(Int8GatherConv p, const int8_t* xq, const int8_t* w, const int32_t* tap_sums, float* y) {
  const int64_t taps = p.kernel[0] * p.kernel[1] * p.kernel[2], quads = p.reduce4 / 4;
  const int64_t per_group = p.y_channels / p.groups;
  const int64_t n_out = p.batch * p.y_dims[0] * p.y_dims[1] * p.y_dims[2] * p.y_channels;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n_out; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % p.y_channels;
    int64_t rest = i / p.y_channels;
    const int64_t ow = rest % p.y_dims[2];
    rest /= p.y_dims[2];
    const int64_t oh = rest % p.y_dims[1];
    rest /= p.y_dims[1];
    const int64_t od = rest % p.y_dims[0], n = rest / p.y_dims[0], group = c / per_group;
    int32_t acc = 0;
    int32_t weight_total = 0;
    for (int64_t kd = 0, t = 0; kd < p.kernel[0]; ++kd) {
      const int64_t d = p.reached(0, od, kd);
      for (int64_t kh = 0; kh < p.kernel[1]; ++kh) {
        const int64_t h = p.reached(1, oh, kh);
        for (int64_t kw = 0; kw < p.kernel[2]; ++kw, ++t) {
          const int64_t ww = p.reached(2, ow, kw);
          if (d < 0 || h < 0 || ww < 0) continue;
          const int64_t row = ((n * p.x_dims[0] + d) * p.x_dims[1] + h) * p.x_dims[2] + ww;
          const int* xs = reinterpret_cast<const int*>(xq + (row * p.groups + group) * p.reduce4);
          const int* ws = reinterpret_cast<const int*>(w + (c * taps + t) * p.reduce4);
          for (int64_t q = 0; q < quads; ++q) acc = __dp4a(xs[q], ws[q], acc);
          weight_total += tap_sums[c * taps + t];
        }
      }
    }
    const uint32_t exact = static_cast<uint32_t>(acc) + static_cast<uint32_t>(128 - p.zero_point) * static_cast<uint32_t>(weight_total);
    y[i] = fmaf(__int2float_rn(static_cast<int32_t>(exact)), p.scale[c], p.bias ? p.bias[c] : 0.0f);
  }
}

}  // namespace vox::cuda
