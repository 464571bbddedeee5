#pragma once
// SyncBatchNorm: batch norm whose training statistics are those of the global batch, every rank's
// share of it together, on any process group (PyTorch has it only for GPUs). Each rank sums its
// inputs and their squares per channel (in f64), one allreduce adds them up (all_reduce_sum, so
// the backward pass reduces their gradients as well), and every rank normalises with the same
// mean and variance; the running statistics take the global batch's (unbiased variance). In
// evaluation it is the ordinary batch norm. convert_sync_batch_norm turns a model's batch norms
// into it, as torch.nn.SyncBatchNorm.convert_sync_batchnorm does; the state dict is unchanged.
#include "vox/dist/all_reduce.hpp"
#include "vox/nn/layers.hpp"

namespace vox::dist {

// y = (x - mean) / sqrt(var + eps) * weight + bias over channels-last x [..., C], with the
// global batch's statistics; updates the running statistics in place.
inline Tensor sync_batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                              const Tensor& bias, double momentum, double eps, ProcessGroup& group) {
  VOX_CHECK(x.rank() >= 2 && is_floating(x.dtype()), "sync_batch_norm", "needs floating [N, ..., C], got ", x.shape(), " ", x.dtype());
  const int64_t channels = x.size(-1);
  Axes axes;
  for (int64_t a = 0; a + 1 < x.rank(); ++a) axes.push_back(a);
  Tensor count = from_vector(std::vector<double>{double(x.numel() / channels)}, {1}).to(x.device());
  group.allreduce(count, ReduceOp::sum, "SyncBatchNorm count").wait();
  const double n = count.to(Device::cpu()).to_vector<double>()[0];
  VOX_CHECK(n > 1, "sync_batch_norm", "the global batch holds ", n, " value(s) per channel; training statistics need more than 1");
  const Tensor wide = cast(x, DType::f64);
  const Tensor sums = all_reduce_sum(concat({sum(wide, axes, false), sum(square(wide), axes, false)}, 0), group, "SyncBatchNorm sums");
  const Tensor mean = div(slice(sums, 0, 0, channels, 1), scalar(n, DType::f64));
  const Tensor variance = sub(div(slice(sums, 0, channels, 2 * channels, 1), scalar(n, DType::f64)), square(mean));
  const Tensor inverse_std = div(scalar(1.0, DType::f64), sqrt(add(variance, scalar(eps, DType::f64))));
  Tensor y = cast(mul(sub(wide, mean), inverse_std), x.dtype());
  if (weight.defined()) y = add(mul(y, weight), bias);
  NoGradGuard no_grad;
  running_mean.detach().copy_from(add(mul(running_mean, scalar(1 - momentum, running_mean.dtype())),
                                      mul(cast(mean.detach(), running_mean.dtype()), scalar(momentum, running_mean.dtype()))));
  const Tensor unbiased = mul(variance.detach(), scalar(n / (n - 1), DType::f64));
  running_var.detach().copy_from(add(mul(running_var, scalar(1 - momentum, running_var.dtype())),
                                     mul(cast(unbiased, running_var.dtype()), scalar(momentum, running_var.dtype()))));
  return y;
}

namespace detail {
template <int D>
bool make_sync(nn::Module& m, ProcessGroup& group) {
  auto* bn = dynamic_cast<nn::BatchNorm<D>*>(&m);
  if (!bn) return false;
  bn->set_interceptor([bn, &group](const Tensor& x, const std::function<Tensor(const Tensor&)>& own_forward) {
    if (!bn->is_training()) return own_forward(x);
    bn->count_batch();
    return sync_batch_norm(x, bn->running_mean(), bn->running_var(), bn->weight(), bn->bias(), bn->momentum(), bn->eps(), group);
  });
  return true;
}
}  // namespace detail

// Every nn::BatchNorm in `model` normalises with the global batch's statistics in training.
// Returns how many it converted. The group must outlive the model's use.
inline int64_t convert_sync_batch_norm(nn::Module& model, ProcessGroup& group) {
  int64_t converted = detail::make_sync<1>(model, group) || detail::make_sync<2>(model, group) || detail::make_sync<3>(model, group);
  model.visit_children([&](const std::string&, nn::Module& child) { converted += convert_sync_batch_norm(child, group); });
  return converted;
}

}  // namespace vox::dist
