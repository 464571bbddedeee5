#pragma once
// Convolution and transposed convolution, 2-D and 3-D, channels-last, with stride, padding,
// dilation, groups, bias and (transposed) output_padding. 2-D runs as 3-D with depth 1.
// bf16 runs on the CPU's bf16 kernels (vdpbf16ps or its exact emulation, f32 sums rounded once);
// f16 on the CPU is computed in f32 and stored back. Tensors on a CUDA device run on the
// backend's convolution (cuDNN, or vox's implicit GEMM where cuDNN has no plan).
#include "kernels/cpu/conv.hpp"
#include "vox/ops/bf16_kernels.hpp"
#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

namespace detail {
// A per-axis option as three values (D, H, W); 2-D gets `depth_value` on D.
inline std::array<int64_t, 3> per_axis(const char* op, const char* name, const std::vector<int64_t>& v, int spatial,
                                       int64_t depth_value) {
  VOX_CHECK(v.size() == 1 || static_cast<int>(v.size()) == spatial, op, name, " needs 1 or ", spatial,
            " values, got ", v.size());
  std::array<int64_t, 3> out{depth_value, depth_value, depth_value};
  for (int i = 0; i < spatial; ++i) out[static_cast<size_t>(3 - spatial + i)] = v.size() == 1 ? v[0] : v[static_cast<size_t>(i)];
  return out;
}

inline int conv_spatial_dims(const char* op, const Tensor& x, const Tensor& w) {
  VOX_CHECK(x.rank() == 4 || x.rank() == 5, op, "input must be [N, H, W, C] or [N, D, H, W, C], got shape ", x.shape());
  VOX_CHECK(w.rank() == x.rank(), op, "weight rank ", w.rank(), " (shape ", w.shape(), ") does not match input shape ",
            x.shape());
  VOX_CHECK(x.dtype() == w.dtype(), op, "input dtype ", x.dtype(), " and weight dtype ", w.dtype(), " differ");
  VOX_CHECK(is_floating(x.dtype()), op, "needs floating tensors, got ", x.dtype());
  return static_cast<int>(x.rank()) - 2;
}

inline kernels::ConvGeometry make_geometry(int spatial, const Shape& input_like, const Shape& w, int64_t in_channels,
                                           const std::array<int64_t, 3>& stride, const std::array<int64_t, 3>& padding,
                                           const std::array<int64_t, 3>& dilation, int64_t groups) {
  kernels::ConvGeometry g;
  g.batch = input_like[0];
  for (int i = 0; i < spatial; ++i) {
    g.in[static_cast<size_t>(3 - spatial + i)] = input_like[1 + i];
    g.kernel[static_cast<size_t>(3 - spatial + i)] = w[1 + i];
  }
  g.stride = stride;
  g.padding = padding;
  g.dilation = dilation;
  g.in_channels = in_channels;
  g.groups = groups;
  return g;
}

// The geometry of conv(x, weight) for input and weight shapes, checked (spatial: 2 or 3).
inline kernels::ConvGeometry conv_geometry(const char* op, int spatial, const Shape& x, const Shape& weight, const ConvOptions& options) {
  const int64_t C = x.back(), Cout = weight[0], groups = options.groups;
  VOX_CHECK(groups >= 1 && C % groups == 0 && Cout % groups == 0, op, "groups ", groups, " must divide input channels ", C,
            " and output channels ", Cout);
  VOX_CHECK(weight.back() == C / groups, op, "weight shape ", weight, " expects ", weight.back() * groups,
            " input channels with groups=", groups, ", input shape ", x, " has ", C);
  auto g = make_geometry(spatial, x, weight, C, per_axis(op, "stride", options.stride, spatial, 1),
                         per_axis(op, "padding", options.padding, spatial, 0), per_axis(op, "dilation", options.dilation, spatial, 1), groups);
  g.out_channels = Cout;
  for (size_t i = 0; i < 3; ++i) {
    VOX_CHECK(g.stride[i] >= 1 && g.dilation[i] >= 1 && g.padding[i] >= 0, op,
              "stride and dilation must be >= 1 and padding >= 0");
    const int64_t span = g.dilation[i] * (g.kernel[i] - 1) + 1;
    VOX_CHECK(g.in[i] + 2 * g.padding[i] >= span, op, "kernel ", weight, " (dilated) is larger than the padded input ", x);
    g.out[i] = (g.in[i] + 2 * g.padding[i] - span) / g.stride[i] + 1;
  }
  return g;
}

// The geometry of conv_transpose(x, weight): that of the convolution it transposes, which maps
// this op's output (its g.in) to this op's input (its g.out).
inline kernels::ConvGeometry conv_transpose_geometry(const char* op, int spatial, const Shape& x, const Shape& weight,
                                                     const ConvTransposeOptions& options) {
  const int64_t Cin = x.back(), groups = options.groups;
  VOX_CHECK(weight[0] == Cin, op, "weight shape ", weight, " must start with the input channels ", Cin, " (input shape ", x, ")");
  VOX_CHECK(groups >= 1 && Cin % groups == 0, op, "groups ", groups, " must divide input channels ", Cin);
  const int64_t Cout = weight.back() * groups;
  auto g = make_geometry(spatial, x, weight, Cout, per_axis(op, "stride", options.stride, spatial, 1),
                         per_axis(op, "padding", options.padding, spatial, 0), per_axis(op, "dilation", options.dilation, spatial, 1), groups);
  const auto output_padding = per_axis(op, "output_padding", options.output_padding, spatial, 0);
  g.out_channels = Cin;
  g.out = g.in;
  for (size_t i = 0; i < 3; ++i) {
    VOX_CHECK(g.stride[i] >= 1 && g.dilation[i] >= 1 && g.padding[i] >= 0, op,
              "stride and dilation must be >= 1 and padding >= 0");
    VOX_CHECK(output_padding[i] >= 0 && (output_padding[i] < g.stride[i] || output_padding[i] < g.dilation[i]), op,
              "output_padding ", output_padding[i], " must be smaller than the stride or the dilation");
    g.in[i] = (g.out[i] - 1) * g.stride[i] - 2 * g.padding[i] + g.dilation[i] * (g.kernel[i] - 1) + output_padding[i] + 1;
    VOX_CHECK(g.in[i] >= 1, op, "output size would be ", g.in[i], " on spatial axis ", i, " for input shape ", x);
  }
  return g;
}

inline Shape channels_last_shape(int64_t batch, const std::array<int64_t, 3>& dims, int spatial, int64_t channels) {
  Shape s{batch};
  for (int i = 0; i < spatial; ++i) s.push_back(dims[static_cast<size_t>(3 - spatial + i)]);
  s.push_back(channels);
  return s;
}

inline Tensor bias_gradient(const Tensor& g) {
  Axes all_but_channels;
  for (int64_t i = 0; i + 1 < g.rank(); ++i) all_but_channels.push_back(i);
  return sum(g, all_but_channels, false);
}

// 16-bit convolutions run natively on CUDA (cuDNN or tensor cores, accumulating in f32) and, for
// bf16, on the CPU; f16 on the CPU is computed in f32 and rounded.
inline bool computes_16_bit_in_f32(const Tensor& x) { return x.dtype() == DType::f16 && !x.device().is_cuda(); }

// One pass of the convolution `g` (see ConvPass in vox/core/backend.hpp) on the operands' device,
// into a new tensor of `shape`; the forward pass adds `bias` if defined. a and b are contiguous.
inline Tensor conv_pass(ConvPass pass, const kernels::ConvGeometry& g, const Tensor& a, const Tensor& b, const Tensor& bias,
                        const Shape& shape) {
  Tensor out = empty(shape, a.dtype(), a.device());
  if (a.device().is_cuda()) {
    cuda_backend("conv").conv(pass, a.dtype(), g, a.raw_data(), b.raw_data(), out.raw_data(), a.device().index);
    return bias.defined() ? add(out, bias) : out;  // the bias broadcasts over the last (channel) axis
  }
  if (a.dtype() == DType::bf16) {
    note_bf16_path();
    switch (pass) {
      case ConvPass::forward:
        kernels::cpu::conv_forward<uint16_t>(g, bf16_bits(a), bf16_bits(b), bias.defined() ? bf16_bits(bias) : nullptr, bf16_bits(out));
        break;
      case ConvPass::backward_data: kernels::cpu::conv_backward_data<uint16_t>(g, bf16_bits(a), bf16_bits(b), bf16_bits(out)); break;
      case ConvPass::backward_weight: kernels::cpu::conv_backward_weight<uint16_t>(g, bf16_bits(a), bf16_bits(b), bf16_bits(out)); break;
    }
    return out;
  }
  dispatch_float(a.dtype(), "conv", [&]<class T>() {
    switch (pass) {
      case ConvPass::forward:
        kernels::cpu::conv_forward<T>(g, a.data<T>(), b.data<T>(), bias.defined() ? bias.data<T>() : nullptr, out.data<T>());
        break;
      case ConvPass::backward_data: kernels::cpu::conv_backward_data<T>(g, a.data<T>(), b.data<T>(), out.data<T>()); break;
      case ConvPass::backward_weight: kernels::cpu::conv_backward_weight<T>(g, a.data<T>(), b.data<T>(), out.data<T>()); break;
    }
  });
  return out;
}
}  // namespace detail

inline Tensor conv(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvOptions& options) {
  if (const auto c = detail::autocast_inputs("conv", {&x, &weight, &bias}))
    return detail::without_autocast([&] { return conv((*c)[0], (*c)[1], (*c)[2], options); });
  constexpr const char* op = "conv";
  detail::device_of(op, {&x, &weight, &bias});
  const int spatial = detail::conv_spatial_dims(op, x, weight);
  if (detail::computes_16_bit_in_f32(x)) {
    const Tensor b32 = bias.defined() ? cast(bias, DType::f32) : Tensor();
    return cast(conv(cast(x, DType::f32), cast(weight, DType::f32), b32, options), x.dtype());
  }
  const kernels::ConvGeometry g = detail::conv_geometry(op, spatial, x.shape(), weight.shape(), options);
  const int64_t Cout = g.out_channels;
  if (bias.defined())
    VOX_CHECK(bias.rank() == 1 && bias.size(0) == Cout && bias.dtype() == x.dtype(), op, "bias must be [", Cout, "] of ",
              x.dtype(), ", got shape ", bias.shape(), " ", bias.dtype());
  const Tensor xc = x.detach().contiguous(), wc = weight.detach().contiguous();
  const Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
  const Tensor out = detail::conv_pass(ConvPass::forward, g, xc, wc, bc,
                                       detail::channels_last_shape(g.batch, g.out, spatial, Cout));
  autograd::record("ConvBackward", out, {x, weight, bias}, [g, xc, wc, need_x = x.requires_grad(),
                                                            need_w = weight.requires_grad(),
                                                            need_b = bias.requires_grad()](const Tensor& grad) {
    const Tensor gc = grad.contiguous();
    Tensor gx, gw, gb;
    if (need_x) gx = detail::conv_pass(ConvPass::backward_data, g, gc, wc, {}, xc.shape());
    if (need_w) gw = detail::conv_pass(ConvPass::backward_weight, g, xc, gc, {}, wc.shape());
    if (need_b) gb = detail::bias_gradient(gc);
    return std::vector<Tensor>{gx, gw, gb};
  });
  return out;
}

inline Tensor conv_transpose(const Tensor& x, const Tensor& weight, const Tensor& bias,
                             const ConvTransposeOptions& options) {
  if (const auto c = detail::autocast_inputs("conv_transpose", {&x, &weight, &bias}))
    return detail::without_autocast([&] { return conv_transpose((*c)[0], (*c)[1], (*c)[2], options); });
  constexpr const char* op = "conv_transpose";
  detail::device_of(op, {&x, &weight, &bias});
  const int spatial = detail::conv_spatial_dims(op, x, weight);
  if (detail::computes_16_bit_in_f32(x)) {
    const Tensor b32 = bias.defined() ? cast(bias, DType::f32) : Tensor();
    return cast(conv_transpose(cast(x, DType::f32), cast(weight, DType::f32), b32, options), x.dtype());
  }
  const kernels::ConvGeometry g = detail::conv_transpose_geometry(op, spatial, x.shape(), weight.shape(), options);
  const int64_t Cout = g.in_channels;
  if (bias.defined())
    VOX_CHECK(bias.rank() == 1 && bias.size(0) == Cout && bias.dtype() == x.dtype(), op, "bias must be [", Cout, "] of ",
              x.dtype(), ", got shape ", bias.shape(), " ", bias.dtype());
  const Tensor xc = x.detach().contiguous(), wc = weight.detach().contiguous();
  Tensor out = detail::conv_pass(ConvPass::backward_data, g, xc, wc, {}, detail::channels_last_shape(g.batch, g.in, spatial, Cout));
  if (bias.defined()) out = add(out.detach(), bias.detach());
  autograd::record("ConvTransposeBackward", out, {x, weight, bias}, [g, xc, wc, need_x = x.requires_grad(),
                                                                     need_w = weight.requires_grad(),
                                                                     need_b = bias.requires_grad()](const Tensor& grad) {
    const Tensor gc = grad.contiguous();
    Tensor gx, gw, gb;
    if (need_x) gx = detail::conv_pass(ConvPass::forward, g, gc, wc, {}, xc.shape());
    if (need_w) gw = detail::conv_pass(ConvPass::backward_weight, g, gc, xc, {}, wc.shape());
    if (need_b) gb = detail::bias_gradient(gc);
    return std::vector<Tensor>{gx, gw, gb};
  });
  return out;
}

}  // namespace vox
