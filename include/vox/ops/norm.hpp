#pragma once
// Batch, instance, group and layer normalisation on channels-last tensors, with hand-written
// backward passes (kernels/cpu/norm.hpp). Weight and bias are optional (affine=False).
#include <cmath>

#include "kernels/cpu/norm.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

namespace detail {
// Normalises x viewed as [B][R][C] with G groups. With fixed statistics (batch norm in eval
// mode) mean/var are given and treated as constants; otherwise they are computed and returned.
inline Tensor normalize(const char* op, const char* node, const Tensor& x, kernels::cpu::NormShape s,
                        const Tensor& weight, const Tensor& bias, double eps, bool fixed_stats,
                        std::vector<double>& mean, std::vector<double>& var) {
  check_cpu(op, {&x, &weight, &bias});
  VOX_CHECK(is_floating(x.dtype()), op, "needs a floating tensor, got ", x.dtype());
  VOX_CHECK(x.numel() > 0, op, "empty input of shape ", x.shape());
  VOX_CHECK(eps >= 0, op, "eps must be >= 0, got ", eps);
  for (const Tensor* p : {&weight, &bias})
    if (p->defined())
      VOX_CHECK(p->numel() == s.C && p->dtype() == x.dtype(), op, "weight and bias need ", s.C, " values of ", x.dtype(),
                ", got shape ", p->shape(), " ", p->dtype(), " for input ", x.shape());
  if (x.dtype() == DType::f16 || x.dtype() == DType::bf16) {
    const Tensor w32 = weight.defined() ? cast(weight, DType::f32) : Tensor();
    const Tensor b32 = bias.defined() ? cast(bias, DType::f32) : Tensor();
    return cast(normalize(op, node, cast(x, DType::f32), s, w32, b32, eps, fixed_stats, mean, var), x.dtype());
  }
  const Tensor w = weight.defined() ? reshape(weight, {s.C}) : Tensor();
  const Tensor b = bias.defined() ? reshape(bias, {s.C}) : Tensor();
  const Tensor xc = x.detach().contiguous();
  const Tensor wc = w.defined() ? w.detach().contiguous() : Tensor();
  const Tensor bc = b.defined() ? b.detach().contiguous() : Tensor();
  Tensor out = empty(x.shape(), x.dtype());
  std::vector<double> rstd;
  dispatch_float(x.dtype(), op, [&]<class T>() {
    if (!fixed_stats) kernels::cpu::norm_statistics<T>(s, xc.data<T>(), mean, var);
    rstd.resize(var.size());
    for (size_t i = 0; i < var.size(); ++i) rstd[i] = 1.0 / std::sqrt(var[i] + eps);
    kernels::cpu::norm_apply<T>(s, xc.data<T>(), mean, rstd, wc.defined() ? wc.data<T>() : nullptr,
                                bc.defined() ? bc.data<T>() : nullptr, out.data<T>());
  });
  autograd::record(node, out, {x, w, b}, [s, xc, wc, mean, rstd, fixed_stats, need_x = x.requires_grad(),
                                          need_w = w.requires_grad(), need_b = b.requires_grad()](const Tensor& g) {
    const Tensor gc = g.contiguous();
    Tensor gx = need_x ? empty(xc.shape(), xc.dtype()) : Tensor();
    Tensor gw = need_w ? empty(Shape{s.C}, xc.dtype()) : Tensor();
    Tensor gb = need_b ? empty(Shape{s.C}, xc.dtype()) : Tensor();
    dispatch_float(xc.dtype(), "normalize backward", [&]<class T>() {
      kernels::cpu::norm_backward<T>(s, xc.data<T>(), gc.data<T>(), mean, rstd, wc.defined() ? wc.data<T>() : nullptr,
                                     fixed_stats, need_x ? gx.data<T>() : nullptr, need_w ? gw.data<T>() : nullptr,
                                     need_b ? gb.data<T>() : nullptr);
    });
    return std::vector<Tensor>{gx, gw, gb};
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
  Tensor out = detail::normalize(op, "BatchNormBackward", x, s, weight, bias, eps, false, mean, var);
  if (running_mean.defined() && running_var.defined()) {
    // PyTorch: running = (1 - momentum) * running + momentum * batch, variance unbiased.
    const double unbias = static_cast<double>(s.R) / static_cast<double>(s.R - 1);
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
