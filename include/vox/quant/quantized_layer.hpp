#pragma once
// One layer in INT8: a convolution, transposed convolution or linear layer whose weights are s8
// per output channel and whose input is quantized to u8 on entry with calibrated parameters.
// Its output is f32: in vox's networks a norm, a residual sum or the logits follow each layer,
// and those stay in float (their statistics depend on the input).
//
//   y = epilogue(int32 sum of (x_q - x_zero_point) * w_q), scale x_scale * w_scale[c], f32 bias
//
// Inference only: the output records no gradient. On the CPU the VNNI (or vpmaddubsw, or
// portable) kernels run it; on a CUDA device, a dp4a kernel with the same arithmetic
// (kernels/cuda/conv_int8.cuh), its weights copied there once per device.
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cpu/conv_int8.hpp"
#include "kernels/cpu/quantize.hpp"
#include "vox/ops/conv.hpp"
#include "vox/quant/scheme.hpp"

namespace vox::quant {

enum class LayerKind { conv, conv_transpose, linear };

inline const char* layer_kind_name(LayerKind k) {
  switch (k) {
    case LayerKind::conv_transpose: return "conv_transpose";
    case LayerKind::linear: return "linear";
    default: return "conv";
  }
}

// What a layer is, beyond its weight: kind, spatial dimensions (2 or 3; 0 for linear) and options.
struct LayerSpec {
  LayerKind kind = LayerKind::conv;
  int spatial = 3;
  ConvOptions conv;
  ConvTransposeOptions transpose;
  int64_t groups() const { return kind == LayerKind::conv ? conv.groups : kind == LayerKind::conv_transpose ? transpose.groups : 1; }
  // The weight axis that holds output channels: conv [out, k..., in / groups] and linear [out,
  // in]: 0; transposed [in, k..., out / groups]: the last.
  int64_t channel_axis() const { return kind == LayerKind::conv_transpose ? -1 : 0; }
};

class QuantizedLayer {
 public:
  QuantizedLayer(LayerSpec spec, QuantizedWeight weight, Tensor bias, ActivationParams input)
      : spec_(std::move(spec)), weight_(std::move(weight)), bias_(std::move(bias)), input_(input) {
    const char* op = "quant::QuantizedLayer";
    VOX_CHECK(weight_.values.dtype() == DType::i8 && weight_.scale.dtype() == DType::f32, op, "needs i8 weights and f32 scales, got ",
              weight_.values.dtype(), " and ", weight_.scale.dtype());
    VOX_CHECK(input_.scale > 0 && std::isfinite(input_.scale) && input_.zero_point >= 0 && input_.zero_point <= 255, op,
              "input scale ", input_.scale, " and zero point ", input_.zero_point, " are not a u8 quantization");
    const Shape& w = weight_.values.shape();
    const int64_t channels = out_channels();
    VOX_CHECK(weight_.scale.rank() == 1 && weight_.scale.size(0) == channels, op, "weight scale has shape ", weight_.scale.shape(),
              ", expected [", channels, "] for weight ", w);
    if (bias_.defined()) {
      bias_ = bias_.detach().to(DType::f32).contiguous();
      VOX_CHECK(bias_.rank() == 1 && bias_.size(0) == channels, op, "bias has shape ", bias_.shape(), ", expected [", channels, "]");
    }
    // int32 sums of up to K products of 255 x 127 stay exact (and vpdpbusd never wraps) for K <= 65536
    VOX_CHECK(weight_.values.numel() / channels <= 65536, op, "a layer of ", weight_.values.numel() / channels,
              " products per output could overflow its int32 sums; the limit is 65536");
    weight_.values = weight_.values.contiguous();
    const float* ws = weight_.scale.contiguous().data<float>();
    for (int64_t c = 0; c < channels; ++c) {
      VOX_CHECK(ws[c] > 0 && std::isfinite(ws[c]), op, "weight scale of channel ", c, " is ", ws[c]);
      output_scale_.push_back(input_.scale * ws[c]);
    }
    const int8_t* wq = weight_.values.data<int8_t>();
    warn_about_kernel(wq, weight_.values.numel());
    if (spec_.kind == LayerKind::linear) {
      VOX_CHECK(w.size() == 2, op, "a linear weight is [out, in], got ", w);
      linear_ = kernels::cpu::pack_int8(w[0], w[1], [&](int64_t k, int64_t n) { return wq[n * w[1] + k]; });
    } else {
      // a geometry of the smallest input, for the kernel, stride, padding, dilation and channels
      VOX_CHECK(static_cast<int>(w.size()) == spec_.spatial + 2, op, "weight ", w, " does not suit a ", spec_.spatial, "-D layer");
      const kernels::ConvGeometry g = geometry(smallest_input());
      conv_ = kernels::cpu::pack_conv_int8(g, wq, spec_.kind == LayerKind::conv_transpose);
    }
  }

  Tensor forward(const Tensor& x) const {
    const char* op = "quant::QuantizedLayer";
    VOX_CHECK(is_floating(x.dtype()), op, "takes a floating input, got ", x.dtype());
    if (x.device().is_cuda()) return forward_cuda(x);
    const Tensor xf = x.detach().to(DType::f32).contiguous();
    const float inv_scale = 1.0f / input_.scale;
    kernels::cpu::Int8Epilogue e;
    e.scale = output_scale_.data();
    e.bias = bias_.defined() ? bias_.data<float>() : nullptr;
    if (spec_.kind == LayerKind::linear) {
      Tensor q = empty(xf.shape(), DType::u8);
      kernels::cpu::quantize_u8(xf.data<float>(), xf.numel(), inv_scale, input_.zero_point, q.data<uint8_t>());
      return forward_linear(q, e);
    }
    // the convolutions quantize their input on the way in
    const kernels::ConvGeometry g = geometry(xf.shape());
    if (spec_.kind == LayerKind::conv) {
      Tensor y = empty(detail::channels_last_shape(g.batch, g.out, spec_.spatial, g.out_channels), DType::f32);
      kernels::cpu::conv_forward_int8(g, xf.data<float>(), inv_scale, input_.zero_point, conv_, e, y.data<float>());
      return y;
    }
    Tensor y = empty(detail::channels_last_shape(g.batch, g.in, spec_.spatial, g.in_channels), DType::f32);
    kernels::cpu::conv_transpose_int8(g, xf.data<float>(), inv_scale, input_.zero_point, conv_, e, y.data<float>());
    return y;
  }

  const LayerSpec& spec() const { return spec_; }
  const QuantizedWeight& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  ActivationParams input() const { return input_; }
  // The batch norm folded into the weights and bias (its state_dict prefix), or empty.
  const std::string& folded_batch_norm() const { return folded_batch_norm_; }
  void set_folded_batch_norm(std::string norm) { folded_batch_norm_ = std::move(norm); }
  int64_t out_channels() const {
    const Shape& w = weight_.values.shape();
    return spec_.kind == LayerKind::conv_transpose ? w.back() * spec_.groups() : w[0];
  }
  // The weight as floats again, w_q * w_scale: what the layer computes with.
  Tensor dequantized_weight() const {
    const Shape& s = weight_.values.shape();
    Tensor out = empty(s, DType::f32);
    const int8_t* q = weight_.values.data<int8_t>();
    const float* scale = weight_.scale.contiguous().data<float>();
    const int64_t n = out.numel(), row = n / s[0], lanes = s.back(), rows_per_group = s[0] / spec_.groups();
    float* dst = out.data<float>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t c = spec_.channel_axis() == 0 ? i / row : (i / row / rows_per_group) * lanes + i % lanes;
      dst[i] = static_cast<float>(q[i]) * scale[c];
    }
    return out;
  }

 private:
  // The weights as the GPU kernel reads them, on one device.
  struct DeviceWeights {
    Tensor weight;    // i8 [y channels][taps][a group's x channels, padded to 4 with 0]
    Tensor tap_sums;  // i32 [y channels][taps]
    Tensor scale, bias;
  };

  // The layer's weights in that gather form, built on the host: a convolution's output channel
  // reads its own filter; a transposed convolution's reads, per tap, the column of every filter
  // of its group (PyTorch's [in, out / groups, k...] read the other way); linear is a 1x1x1
  // convolution.
  DeviceWeights gather_weights() const {
    const Shape& w = weight_.values.shape();
    const int8_t* v = weight_.values.data<int8_t>();
    const bool transposed = spec_.kind == LayerKind::conv_transpose;
    const int64_t taps = spec_.kind == LayerKind::linear ? 1 : weight_.values.numel() / (w[0] * w.back());
    const int64_t groups = spec_.groups(), y_channels = out_channels();
    const int64_t x_per_group = transposed ? w[0] / groups : w.back(), reduce4 = (x_per_group + 3) / 4 * 4;
    const int64_t y_per_group = y_channels / groups;
    DeviceWeights d;
    d.weight = zeros({y_channels, taps, reduce4}, DType::i8);
    d.tap_sums = zeros({y_channels, taps}, DType::i32);
    int8_t* gw = d.weight.data<int8_t>();
    int32_t* sums = d.tap_sums.data<int32_t>();
    for (int64_t c = 0; c < y_channels; ++c)
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t r = 0; r < x_per_group; ++r) {
          const int8_t value = transposed ? v[((c / y_per_group * x_per_group + r) * taps + t) * y_per_group + c % y_per_group]
                                          : v[(c * taps + t) * x_per_group + r];
          gw[(c * taps + t) * reduce4 + r] = value;
          sums[c * taps + t] += value;
        }
    d.scale = from_vector(output_scale_, {y_channels});
    if (bias_.defined()) d.bias = bias_;
    return d;
  }

  const DeviceWeights& device_weights(Device device) const {
    std::lock_guard<std::mutex> lock(device_mutex_);
    const auto it = device_weights_.find(device.index);
    if (it != device_weights_.end()) return it->second;
    DeviceWeights d = gather_weights();
    for (Tensor* t : {&d.weight, &d.tap_sums, &d.scale, &d.bias})
      if (t->defined()) *t = t->to(device);
    return device_weights_.emplace(device.index, std::move(d)).first->second;
  }

  Tensor forward_cuda(const Tensor& x) const {
    const Tensor xf = x.detach().to(DType::f32).contiguous();
    const DeviceWeights& d = device_weights(x.device());
    Int8ConvCall call;
    Shape out_shape;
    if (spec_.kind == LayerKind::linear) {  // rows as a batch of 1x1x1 positions
      const int64_t K = weight_.values.size(1), N = weight_.values.size(0);
      VOX_CHECK(xf.rank() >= 1 && xf.size(-1) == K, "quantized linear", "input ", xf.shape(), " does not end in ", K, " features");
      call.geometry.batch = xf.numel() / K, call.geometry.in_channels = K, call.geometry.out_channels = N;
      out_shape = xf.shape();
      out_shape[out_shape.size() - 1] = N;
    } else {
      call.geometry = geometry(xf.shape());
      call.transposed = spec_.kind == LayerKind::conv_transpose;
      const kernels::ConvGeometry& g = call.geometry;
      out_shape = call.transposed ? detail::channels_last_shape(g.batch, g.in, spec_.spatial, g.in_channels)
                                  : detail::channels_last_shape(g.batch, g.out, spec_.spatial, g.out_channels);
    }
    call.inv_scale = 1.0f / input_.scale, call.zero_point = input_.zero_point;
    call.weight = static_cast<const int8_t*>(d.weight.raw_data());
    call.tap_sums = static_cast<const int32_t*>(d.tap_sums.raw_data());
    call.scale = static_cast<const float*>(d.scale.raw_data());
    call.bias = d.bias.defined() ? static_cast<const float*>(d.bias.raw_data()) : nullptr;
    Tensor y = empty(out_shape, DType::f32, x.device());
    cuda_backend("quant::QuantizedLayer").conv_int8(call, static_cast<const float*>(xf.raw_data()), static_cast<float*>(y.raw_data()),
                                                    x.device().index);
    return y;
  }

  Shape smallest_input() const {
    const Shape& w = weight_.values.shape();
    Shape x{1};
    auto axis = [&](const std::vector<int64_t>& v, int i) { return v.size() == 1 ? v[0] : v.at(static_cast<size_t>(i)); };
    for (int i = 0; i < spec_.spatial; ++i)  // a convolution's dilated kernel; enough for a transposed one's output to exist
      x.push_back(spec_.kind == LayerKind::conv ? axis(spec_.conv.dilation, i) * (w[1 + i] - 1) + 1 : 2 * axis(spec_.transpose.padding, i) + 1);
    x.push_back(spec_.kind == LayerKind::conv ? w.back() * spec_.groups() : w[0]);
    return x;
  }
  kernels::ConvGeometry geometry(const Shape& x) const {
    const char* op = spec_.kind == LayerKind::conv ? "quantized conv" : "quantized conv_transpose";
    VOX_CHECK(static_cast<int>(x.size()) == spec_.spatial + 2, op, "input must be channels-last with ", spec_.spatial,
              " spatial axes, got ", x);
    return spec_.kind == LayerKind::conv ? detail::conv_geometry(op, spec_.spatial, x, weight_.values.shape(), spec_.conv)
                                         : detail::conv_transpose_geometry(op, spec_.spatial, x, weight_.values.shape(), spec_.transpose);
  }

  Tensor forward_linear(const Tensor& q, const kernels::cpu::Int8Epilogue& e) const {
    const int64_t K = linear_.K, N = linear_.N;
    VOX_CHECK(q.rank() >= 1 && q.size(-1) == K, "quantized linear", "input ", q.shape(), " does not end in ", K, " features");
    const int64_t M = q.numel() / K, lda = (K + 3) / 4 * 4;
    Shape out_shape = q.shape();
    out_shape[out_shape.size() - 1] = N;
    Tensor y = empty(out_shape, DType::f32);
    const uint8_t* a = q.data<uint8_t>();
    std::vector<uint8_t> padded;
    if (lda != K) {  // rows readable to a multiple of 4 bytes
      padded.assign(static_cast<size_t>(M * lda), 0);
      for (int64_t m = 0; m < M; ++m) std::copy(a + m * K, a + (m + 1) * K, padded.begin() + m * lda);
      a = padded.data();
    }
    float* out = y.data<float>();
    kernels::cpu::parallel_for(0, M, 64, [&](int64_t b, int64_t end) {
      kernels::cpu::gemm_int8_packed(end - b, a + b * lda, lda, input_.zero_point, linear_, e, out + b * N, N);
    });
    return y;
  }

  // Says once on stderr when this CPU's INT8 path is slow: no AVX-512 at all (the portable
  // kernel), or 8-bit weights (a model quantized on a CPU with VNNI) where only vpmaddubsw exists
  // (AVX-512BW or AVX2).
  static void warn_about_kernel(const int8_t* w, int64_t n) {
    const kernels::cpu::Int8Kernel kernel = kernels::cpu::int8_kernel();
    bool eight_bit = false;
    for (int64_t i = 0; i < n && !eight_bit; ++i) eight_bit = w[i] < -63 || w[i] > 63;
    static std::once_flag portable, wide;
    if (kernel == kernels::cpu::Int8Kernel::portable)
      std::call_once(portable, [] {
        std::fprintf(stderr, "vox: INT8 layers run the portable kernel, much slower (this CPU has neither AVX-512 nor AVX2, or the "
                             "kernel was forced)\n");
      });
    else if ((kernel == kernels::cpu::Int8Kernel::avx512bw || kernel == kernels::cpu::Int8Kernel::avx2) && eight_bit)
      std::call_once(wide, [] {
        std::fprintf(stderr, "vox: this CPU has no AVX512_VNNI and the model's weights are 8-bit: its INT8 layers run the portable "
                             "kernel; quantize the model on this CPU (7-bit weights) for the vpmaddubsw kernel\n");
      });
  }

  LayerSpec spec_;
  QuantizedWeight weight_;
  Tensor bias_;
  ActivationParams input_;
  std::string folded_batch_norm_;
  std::vector<float> output_scale_;
  kernels::cpu::Int8ConvWeights conv_;
  kernels::cpu::PackedInt8 linear_;
  mutable std::mutex device_mutex_;
  mutable std::map<int, DeviceWeights> device_weights_;
};

}  // namespace vox::quant
