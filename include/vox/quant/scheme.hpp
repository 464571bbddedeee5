#pragma once
// vox's INT8 scheme, and the arithmetic that turns ranges and float weights into its integers.
//
//   activations  u8, asymmetric, one scale and zero point per tensor; the range always holds 0,
//                so the real 0 (a padded border, a ReLU's floor) is exactly the zero point
//   weights      s8, symmetric (zero point 0), one scale per output channel: [-127, 127], or
//                [-63, 63] on CPUs whose int8 kernel cannot take 8 bits (int8_weight_bits())
//   sums         int32; the epilogue scales by x_scale * w_scale[c] in f32, adds the f32 bias
//
// activation_params follows ONNX Runtime's compute_scale_zp for uint8 (asymmetric), so ranges
// calibrated here and there give the same scales and zero points.
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/gemm_int8.hpp"
#include "vox/ops.hpp"

namespace vox::quant {

// x ~ (q - zero_point) * scale, q in [0, 255].
struct ActivationParams {
  float scale = 1.0f;
  int32_t zero_point = 0;
};

// The u8 parameters of the range [rmin, rmax], widened to hold 0: scale = (rmax - rmin) / 255
// (computed in f64, stored as f32), zero_point = round_half_even(-rmin / scale). A range too
// small for an f32 scale gets scale 1, zero point 0, as ONNX Runtime does.
inline ActivationParams activation_params(float rmin, float rmax) {
  VOX_CHECK(std::isfinite(rmin) && std::isfinite(rmax) && rmin <= rmax, "quant::activation_params", "needs a finite range, got [", rmin,
            ", ", rmax, "]");
  const double lo = std::min<double>(rmin, 0.0), hi = std::max<double>(rmax, 0.0);
  const double scale = (hi - lo) / 255.0;
  if (scale < static_cast<double>(std::numeric_limits<float>::min())) return {1.0f, 0};
  const double zero = std::nearbyint(0.0 - lo / scale);
  return {static_cast<float>(scale), static_cast<int32_t>(std::clamp(zero, 0.0, 255.0))};
}

// A weight quantized per output channel.
struct QuantizedWeight {
  Tensor values;  // i8, the float weight's shape and layout
  Tensor scale;   // f32 [channels]
};

// Quantizes w (f32) symmetrically per channel along `axis` (conv: 0 = out channels; a transposed
// conv's [in, k..., out / groups]: -1, with `groups` groups of it along axis 0) to
// +-(2^(bits - 1) - 1): scale = max|w| / that, q = round_half_even(w / scale). A channel of zeros
// gets scale 1.
inline QuantizedWeight quantize_weight(const Tensor& w, int64_t axis, int bits, int64_t groups = 1) {
  VOX_CHECK(w.dtype() == DType::f32 && w.device().is_cpu(), "quant::quantize_weight", "needs an f32 CPU tensor, got ", w.dtype());
  VOX_CHECK(bits == 7 || bits == 8, "quant::quantize_weight", "weights are 7 or 8 bits, got ", bits);
  const Tensor c = w.detach().contiguous();
  const Shape& s = c.shape();
  const int64_t ax = axis < 0 ? axis + s.size() : axis;
  VOX_CHECK(ax == 0 || ax == s.size() - 1, "quant::quantize_weight", "the channel axis is the first or the last, got ", axis);
  const int64_t lanes = s[ax], n = c.numel(), inner = ax == 0 ? n / std::max<int64_t>(lanes, 1) : 1;
  const int64_t per_group_rows = ax == 0 ? 1 : s[0] / groups;
  const int64_t channels = ax == 0 ? lanes : lanes * groups;
  // element i's channel: axis 0: i / inner; last axis: its group (row i / (n / s[0]) / per_group_rows) and lane
  const int64_t row = n / s[0];
  auto channel_of = [&](int64_t i) { return ax == 0 ? i / inner : (i / row / per_group_rows) * lanes + i % lanes; };
  const float* src = c.data<float>();
  std::vector<float> absmax(static_cast<size_t>(channels), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    VOX_CHECK(std::isfinite(src[i]), "quant::quantize_weight", "weight element ", i, " is ", src[i]);
    float& m = absmax[static_cast<size_t>(channel_of(i))];
    m = std::max(m, std::fabs(src[i]));
  }
  const float top = static_cast<float>((1 << (bits - 1)) - 1);
  QuantizedWeight q{empty(s, DType::i8), empty({channels}, DType::f32)};
  float* scale = q.scale.data<float>();
  for (int64_t ch = 0; ch < channels; ++ch) scale[ch] = absmax[static_cast<size_t>(ch)] > 0 ? absmax[static_cast<size_t>(ch)] / top : 1.0f;
  int8_t* dst = q.values.data<int8_t>();
  for (int64_t i = 0; i < n; ++i)
    dst[i] = static_cast<int8_t>(std::clamp(std::nearbyint(src[i] / scale[channel_of(i)]), -top, top));
  return q;
}

}  // namespace vox::quant
