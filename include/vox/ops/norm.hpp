#pragma once
// Batch, instance, group and layer normalisation on channels-last tensors, with hand-written
// backward passes (kernels/cpu/norm.hpp). Weight and bias are optional (affine=False).
#include <cmath>

#include "kernels/cpu/norm.hpp"
#include "vox/ops/bf16_kernels.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

namespace detail {
// The batch statistics of a CUDA normalisation, left on the device ([B * G], the input's compute
// dtype): batch norm updates its running statistics from them with no host read.
struct DeviceStats {
  Tensor mean, var;  // var: the biased variance itself, not rebuilt from rstd
};

// The CUDA path of normalize(): statistics stay on the device ([B][G] mean and rstd tensors), and
// are handed out in `stats` where it is given. Fixed statistics go to the device as mean and rstd.
inline Tensor normalize_cuda(const char* node, const Tensor& x, kernels::cpu::NormShape s, const Tensor& weight,
                             const Tensor& bias, double eps, bool fixed_stats, std::vector<double>& mean,
                             std::vector<double>& var, const Tensor& slope, const Tensor& residual, DeviceStats* stats) {
  const Device device = x.device();
  const Tensor w = weight.defined() ? reshape(weight, {s.C}) : Tensor();
  const Tensor b = bias.defined() ? reshape(bias, {s.C}) : Tensor();
  auto detached = [](const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); };
  const Tensor xc = x.detach().contiguous(), wc = detached(w), bc = detached(b);
  const Tensor ac = slope.defined() ? slope.detach().contiguous() : Tensor();
  const Tensor rc = residual.defined() ? residual.detach().contiguous() : Tensor();
  NormParams p{s.B, s.R, s.C, s.G, eps, fixed_stats, ac.defined() && ac.size(0) > 1 ? 1 : 0};
  Tensor mean_t, rstd_t;
  if (fixed_stats) {
    std::vector<double> rstd(var.size());
    for (size_t i = 0; i < var.size(); ++i) rstd[i] = 1.0 / std::sqrt(var[i] + eps);
    mean_t = from_vector(mean, Shape{s.B * s.G}).to(x.dtype()).to(device);
    rstd_t = from_vector(rstd, Shape{s.B * s.G}).to(x.dtype()).to(device);
  } else {
    mean_t = empty(Shape{s.B * s.G}, x.dtype(), device);
    rstd_t = empty(Shape{s.B * s.G}, x.dtype(), device);
  }
  auto raw = [](const Tensor& t) -> const void* { return t.defined() ? t.raw_data() : nullptr; };
  Tensor out = empty(x.shape(), x.dtype(), device);
  const Tensor var_t = stats && !fixed_stats ? empty(Shape{s.B * s.G}, x.dtype(), device) : Tensor();
  cuda_backend(node).norm_forward(x.dtype(), p, xc.raw_data(), raw(wc), raw(bc), raw(ac), raw(rc), mean_t.raw_data(),
                                  rstd_t.raw_data(), var_t.defined() ? var_t.raw_data() : nullptr, out.raw_data(), device.index);
  if (var_t.defined()) *stats = DeviceStats{mean_t, var_t};
  autograd::record(node, out, {x, w, b, slope, residual},
                   [p, xc, wc, bc, ac, mean_t, rstd_t, need_x = x.requires_grad(), need_w = w.requires_grad(),
                    need_b = b.requires_grad(), need_a = slope.defined() && slope.requires_grad(),
                    need_r = residual.defined() && residual.requires_grad()](const Tensor& g) {
                     const Tensor gc = g.contiguous();
                     const Device dev = xc.device();
                     Tensor gx = need_x ? empty(xc.shape(), xc.dtype(), dev) : Tensor();
                     Tensor gw = need_w ? empty(Shape{p.C}, xc.dtype(), dev) : Tensor();
                     Tensor gb = need_b ? empty(Shape{p.C}, xc.dtype(), dev) : Tensor();
                     Tensor ga = need_a ? empty(ac.shape(), xc.dtype(), dev) : Tensor();
                     auto in = [](const Tensor& t) -> const void* { return t.defined() ? t.raw_data() : nullptr; };
                     auto out_ptr = [](Tensor& t) -> void* { return t.defined() ? t.raw_data() : nullptr; };
                     cuda_backend("normalize backward")
                         .norm_backward(xc.dtype(), p, xc.raw_data(), gc.raw_data(), mean_t.raw_data(), rstd_t.raw_data(), in(wc),
                                        in(bc), in(ac), out_ptr(gx), out_ptr(gw), out_ptr(gb), out_ptr(ga), dev.index);
                     return std::vector<Tensor>{gx, gw, gb, ga, need_r ? g : Tensor()};
                   });
  return out;
}

// normalize() for bf16 on the CPU: the kernels read and write bf16 (raw bits) and compute in f32
// with f64 statistics; weight, bias and slope are used in f32 whatever their dtype (the master
// weights under autocast), and their gradients come back in f32 (the tape gives each input its
// own dtype). The input alone is kept for the backward pass, in bf16.
inline Tensor normalize_bf16(const char* node, const Tensor& x, kernels::cpu::NormShape s, const Tensor& weight, const Tensor& bias,
                             double eps, bool fixed_stats, std::vector<double>& mean, std::vector<double>& var, const Tensor& slope,
                             const Tensor& residual) {
  auto f32 = [](const Tensor& t) { return t.defined() ? t.detach().to(DType::f32).contiguous() : Tensor(); };
  const Tensor w = weight.defined() ? reshape(weight, {s.C}) : Tensor();
  const Tensor b = bias.defined() ? reshape(bias, {s.C}) : Tensor();
  const Tensor xc = x.detach().contiguous(), wc = f32(w), bc = f32(b), ac = f32(slope);
  const Tensor rc = residual.defined() ? residual.detach().to(DType::bf16).contiguous() : Tensor();
  const int64_t slope_stride = ac.defined() && ac.size(0) > 1 ? 1 : 0;
  Tensor out = empty(x.shape(), DType::bf16);
  auto p32 = [](const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; };
  if (!fixed_stats) kernels::cpu::norm_statistics(s, bf16_bits(xc), mean, var);
  std::vector<double> rstd(var.size());
  for (size_t i = 0; i < var.size(); ++i) rstd[i] = 1.0 / std::sqrt(var[i] + eps);
  kernels::cpu::norm_apply<float>(s, bf16_bits(xc), mean, rstd, p32(wc), p32(bc), bf16_bits(out), p32(ac), slope_stride,
                                  rc.defined() ? bf16_bits(rc) : nullptr);
  autograd::record(node, out, {x, w, b, slope, residual}, [s, xc, wc, bc, ac, slope_stride, mean, rstd, fixed_stats,
                                                           need_x = x.requires_grad(), need_w = w.requires_grad(),
                                                           need_b = b.requires_grad(), need_a = slope.defined() && slope.requires_grad(),
                                                           need_r = residual.defined() && residual.requires_grad()](const Tensor& g) {
    const Tensor gc = g.to(DType::bf16).contiguous();
    Tensor gx = need_x ? empty(xc.shape(), DType::bf16) : Tensor();
    Tensor gw = need_w ? empty(Shape{s.C}, DType::f32) : Tensor();
    Tensor gb = need_b ? empty(Shape{s.C}, DType::f32) : Tensor();
    Tensor ga = need_a ? empty(ac.shape(), DType::f32) : Tensor();
    auto ptr = [](const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; };
    kernels::cpu::norm_backward<float>(s, bf16_bits(xc), bf16_bits(gc), mean, rstd, ptr(wc), fixed_stats, gx.defined() ? bf16_bits(gx) : nullptr,
                                       ptr(gw), ptr(gb), ptr(bc), ptr(ac), slope_stride, ptr(ga));
    return std::vector<Tensor>{gx, gw, gb, ga, need_r ? g : Tensor()};
  });
  return out;
}

// Normalises x viewed as [B][R][C] with G groups. With fixed statistics (batch norm in eval
// mode) mean/var are given and treated as constants; otherwise they are computed and returned.
// With `slope` defined ([1] or [C]), PReLU follows in the same passes (instance_norm_prelu), and
// with `residual` defined (x's shape), the result is added to it in the same pass.
inline Tensor normalize(const char* op, const char* node, const Tensor& x, kernels::cpu::NormShape s,
                        const Tensor& weight, const Tensor& bias, double eps, bool fixed_stats,
                        std::vector<double>& mean, std::vector<double>& var, const Tensor& slope = {},
                        const Tensor& residual = {}, DeviceStats* device_stats = nullptr) {
  device_of(op, {&x, &weight, &bias, &slope, &residual});
  VOX_CHECK(is_floating(x.dtype()), op, "needs a floating tensor, got ", x.dtype());
  VOX_CHECK(x.numel() > 0, op, "empty input of shape ", x.shape());
  VOX_CHECK(eps >= 0, op, "eps must be >= 0, got ", eps);
  // 16-bit inputs are normalised in f32, so their parameters (and a residual) may be f32: the
  // master weights under autocast. The result has x's dtype.
  const bool narrow = x.dtype() == DType::f16 || x.dtype() == DType::bf16;
  auto accepted = [&](const Tensor& t) { return t.dtype() == x.dtype() || (narrow && t.dtype() == DType::f32); };
  for (const Tensor* p : {&weight, &bias})
    if (p->defined())
      VOX_CHECK(p->numel() == s.C && accepted(*p), op, "weight and bias need ", s.C, " values of ", x.dtype(),
                narrow ? " or f32" : "", ", got shape ", p->shape(), " ", p->dtype(), " for input ", x.shape());
  if (slope.defined())
    VOX_CHECK(slope.rank() == 1 && (slope.size(0) == 1 || slope.size(0) == s.C) && accepted(slope), op,
              "the PReLU slope must be [1] or [", s.C, "] of ", x.dtype(), narrow ? " or f32" : "", ", got shape ", slope.shape(), " ",
              slope.dtype());
  if (residual.defined())
    VOX_CHECK(residual.shape() == x.shape() && accepted(residual), op, "the residual must match the input ", x.shape(), " ",
              x.dtype(), narrow ? " (or be f32)" : "", ", got ", residual.shape(), " ", residual.dtype());
  if (x.dtype() == DType::bf16 && x.device().is_cpu()) return normalize_bf16(node, x, s, weight, bias, eps, fixed_stats, mean, var, slope, residual);
  if (narrow) {  // f16, and bf16 on CUDA: computed in f32 and rounded
    auto f32 = [](const Tensor& t) { return t.defined() ? cast(t, DType::f32) : Tensor(); };
    return cast(normalize(op, node, cast(x, DType::f32), s, f32(weight), f32(bias), eps, fixed_stats, mean, var, f32(slope),
                          f32(residual), device_stats),
                x.dtype());
  }
  if (x.device().is_cuda()) return normalize_cuda(node, x, s, weight, bias, eps, fixed_stats, mean, var, slope, residual, device_stats);
  const Tensor w = weight.defined() ? reshape(weight, {s.C}) : Tensor();
  const Tensor b = bias.defined() ? reshape(bias, {s.C}) : Tensor();
  const Tensor xc = x.detach().contiguous();
  auto detached = [](const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); };
  const Tensor wc = detached(w), bc = detached(b), ac = detached(slope), rc = detached(residual);
  const int64_t slope_stride = ac.defined() && ac.size(0) > 1 ? 1 : 0;
  Tensor out = empty(x.shape(), x.dtype());
  std::vector<double> rstd;
  dispatch_float(x.dtype(), op, [&]<class T>() {
    if (!fixed_stats) kernels::cpu::norm_statistics<T>(s, xc.data<T>(), mean, var);
    rstd.resize(var.size());
    for (size_t i = 0; i < var.size(); ++i) rstd[i] = 1.0 / std::sqrt(var[i] + eps);
    kernels::cpu::norm_apply<T>(s, xc.data<T>(), mean, rstd, wc.defined() ? wc.data<T>() : nullptr,
                                bc.defined() ? bc.data<T>() : nullptr, out.data<T>(), ac.defined() ? ac.data<T>() : nullptr,
                                slope_stride, rc.defined() ? rc.data<T>() : nullptr);
  });
  // x alone is kept: the PReLU's input is recomputed from it in the backward pass; the residual's
  // gradient is the output's
  autograd::record(node, out, {x, w, b, slope, residual}, [s, xc, wc, bc, ac, slope_stride, mean, rstd, fixed_stats,
                                                           need_x = x.requires_grad(), need_w = w.requires_grad(),
                                                           need_b = b.requires_grad(), need_a = slope.defined() && slope.requires_grad(),
                                                           need_r = residual.defined() && residual.requires_grad()](const Tensor& g) {
    const Tensor gc = g.contiguous();
    Tensor gx = need_x ? empty(xc.shape(), xc.dtype()) : Tensor();
    Tensor gw = need_w ? empty(Shape{s.C}, xc.dtype()) : Tensor();
    Tensor gb = need_b ? empty(Shape{s.C}, xc.dtype()) : Tensor();
    Tensor ga = need_a ? empty(ac.shape(), xc.dtype()) : Tensor();
    dispatch_float(xc.dtype(), "normalize backward", [&]<class T>() {
      auto ptr = [](const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; };
      kernels::cpu::norm_backward<T>(s, xc.data<T>(), gc.data<T>(), mean, rstd, ptr(wc), fixed_stats, ptr(gx), ptr(gw), ptr(gb), ptr(bc),
                                     ptr(ac), slope_stride, ptr(ga));
    });
    return std::vector<Tensor>{gx, gw, gb, ga, need_r ? g : Tensor()};
  });
  return out;
}

inline int64_t spatial_size(const Tensor& x) {
  int64_t n = 1;
  for (int64_t i = 1; i + 1 < x.rank(); ++i) n *= x.size(i);
  return n;
}
}  // namespace detail

inline Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                         const Tensor& bias, bool training, double momentum, double eps) {
  constexpr const char* op = "batch_norm";
  VOX_CHECK(x.rank() >= 2, op, "input must be [N, ..., C], got shape ", x.shape());
  const int64_t C = x.size(-1);
  const kernels::cpu::NormShape s{1, x.numel() / std::max<int64_t>(C, 1), C, C};
  for (const Tensor* r : {&running_mean, &running_var})
    if (r->defined())
      VOX_CHECK(r->rank() == 1 && r->size(0) == C && is_floating(r->dtype()), op, "running statistics need [", C,
                "] floating values, got shape ", r->shape(), " ", r->dtype());
  std::vector<double> mean, var;
  if (!training) {
    VOX_CHECK(running_mean.defined() && running_var.defined(), op, "eval mode needs running_mean and running_var");
    mean = running_mean.to_vector<double>();
    var = running_var.to_vector<double>();
    return detail::normalize(op, "BatchNormBackward", x, s, weight, bias, eps, true, mean, var);
  }
  VOX_CHECK(s.R > 1, op, "training needs more than one value per channel, input shape ", x.shape());
  const bool update_running = running_mean.defined() && running_var.defined();
  // PyTorch: running = (1 - momentum) * running + momentum * batch, variance unbiased.
  const double unbias = static_cast<double>(s.R) / static_cast<double>(s.R - 1);
  if (x.device().is_cuda()) {  // on the device, with no host read: a training step stays asynchronous and capturable
    detail::DeviceStats stats;
    Tensor out = detail::normalize(op, "BatchNormBackward", x, s, weight, bias, eps, false, mean, var, {}, {},
                                   update_running ? &stats : nullptr);
    if (update_running) {
      autograd::NoGradGuard no_grad;
      running_mean.copy_from(running_mean * (1 - momentum) + stats.mean.to(running_mean.dtype()) * momentum);
      running_var.copy_from(running_var * (1 - momentum) + stats.var.to(running_var.dtype()) * (momentum * unbias));
    }
    return out;
  }
  Tensor out = detail::normalize(op, "BatchNormBackward", x, s, weight, bias, eps, false, mean, var);
  if (update_running) {
    std::vector<double> rm = running_mean.to_vector<double>(), rv = running_var.to_vector<double>();
    for (int64_t c = 0; c < C; ++c) {
      rm[static_cast<size_t>(c)] = (1 - momentum) * rm[static_cast<size_t>(c)] + momentum * mean[static_cast<size_t>(c)];
      rv[static_cast<size_t>(c)] = (1 - momentum) * rv[static_cast<size_t>(c)] + momentum * var[static_cast<size_t>(c)] * unbias;
    }
    running_mean.copy_from(from_vector(rm, Shape{C}));
    running_var.copy_from(from_vector(rv, Shape{C}));
  }
  return out;
}

inline Tensor instance_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  VOX_CHECK(x.rank() >= 3, "instance_norm", "input must be [N, spatial..., C], got shape ", x.shape());
  const int64_t C = x.size(-1), R = detail::spatial_size(x);
  std::vector<double> mean, var;
  return detail::normalize("instance_norm", "InstanceNormBackward", x, {x.size(0), R, C, C}, weight, bias, eps, false,
                           mean, var);
}

// PReLU(instance_norm(x, weight, bias)) in two passes over x instead of four, keeping only x for
// the backward pass. slope is PReLU's weight, [1] or [C].
inline Tensor instance_norm_prelu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& slope, double eps) {
  return instance_norm_prelu_add(x, weight, bias, slope, Tensor(), eps);
}

// instance_norm_prelu(x, ...) + residual, the residual added in the same pass: a residual unit's
// last block and its sum in one op (residual undefined: no sum).
inline Tensor instance_norm_prelu_add(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& slope,
                                      const Tensor& residual, double eps) {
  const char* op = residual.defined() ? "instance_norm_prelu_add" : "instance_norm_prelu";
  VOX_CHECK(x.rank() >= 3, op, "input must be [N, spatial..., C], got shape ", x.shape());
  VOX_CHECK(slope.defined(), op, "needs the PReLU slope");
  const int64_t C = x.size(-1), R = detail::spatial_size(x);
  std::vector<double> mean, var;
  return detail::normalize(op, residual.defined() ? "InstanceNormPreluAddBackward" : "InstanceNormPreluBackward", x,
                           {x.size(0), R, C, C}, weight, bias, eps, false, mean, var, slope, residual);
}

inline Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, double eps) {
  VOX_CHECK(x.rank() >= 2, "group_norm", "input must be [N, ..., C], got shape ", x.shape());
  const int64_t C = x.size(-1);
  VOX_CHECK(groups >= 1 && C % groups == 0, "group_norm", "groups ", groups, " must divide the channels ", C);
  std::vector<double> mean, var;
  return detail::normalize("group_norm", "GroupNormBackward", x, {x.size(0), detail::spatial_size(x), C, groups}, weight,
                           bias, eps, false, mean, var);
}

inline Tensor layer_norm(const Tensor& x, int64_t normalized_axes, const Tensor& weight, const Tensor& bias, double eps) {
  VOX_CHECK(normalized_axes >= 1 && normalized_axes <= x.rank(), "layer_norm", "normalized_axes ", normalized_axes,
            " is outside 1..", x.rank(), " for shape ", x.shape());
  int64_t inner = 1;
  for (int64_t i = x.rank() - normalized_axes; i < x.rank(); ++i) inner *= x.size(i);
  for (const Tensor* p : {&weight, &bias})
    if (p->defined()) {
      bool matches = p->rank() == normalized_axes;
      for (int64_t i = 0; matches && i < normalized_axes; ++i) matches = p->size(i) == x.size(x.rank() - normalized_axes + i);
      VOX_CHECK(matches, "layer_norm", "weight/bias shape ", p->shape(), " must equal the normalised axes of ", x.shape());
    }
  std::vector<double> mean, var;
  return detail::normalize("layer_norm", "LayerNormBackward", x, {x.numel() / std::max<int64_t>(inner, 1), 1, inner, 1},
                           weight, bias, eps, false, mean, var);
}

}  // namespace vox
