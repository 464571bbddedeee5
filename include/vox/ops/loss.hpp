#pragma once
// Losses with PyTorch's exact semantics.
//   cross_entropy: class weights, ignore_index and label smoothing; "mean" divides both the
//   negative log-likelihood and the smoothing term by the summed weights of the targets that
//   are not ignored (their count, without weights).
//   binary_cross_entropy_with_logits: the log-sum-exp form, stable for any logit, with optional
//   weight and pos_weight.
// Both are built from differentiable ops, so their gradients come from the tape.
#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/one_hot.hpp"

namespace vox {

namespace detail {
inline Tensor reduce_loss(const Tensor& per_element, Reduction reduction) {
  switch (reduction) {
    case Reduction::none: return per_element;
    case Reduction::sum: return sum(per_element);
    case Reduction::mean: return mean(per_element);
  }
  return per_element;
}
}  // namespace detail

namespace detail {
// The CUDA path of cross_entropy's gather (see DeviceBackend::pick_classes): one kernel instead
// of comparisons, a one-hot mask and a product; differentiable in logp.
inline void pick_target_classes(const Tensor& logp, const Tensor& target, const Tensor& weight, int64_t ignore_index,
                                Tensor& picked, Tensor& target_weight, Tensor& valid) {
  VOX_CHECK(target.device() == logp.device(), "cross_entropy", "target is on ", target.device(), ", logits on ", logp.device());
  const Device device = logp.device();
  const int64_t C = logp.size(-1), rows = logp.numel() / std::max<int64_t>(C, 1);
  Shape shape = logp.shape();
  shape.resize(logp.rank() - 1);
  const Tensor labels = target.detach().to(DType::i64).contiguous(), values = logp.detach().contiguous();
  picked = empty(shape, logp.dtype(), device);
  target_weight = empty(shape, logp.dtype(), device);
  valid = empty(shape, logp.dtype(), device);
  const auto* label_ptr = static_cast<const int64_t*>(labels.raw_data());
  cuda_backend("cross_entropy")
      .pick_classes(logp.dtype(), rows, C, values.raw_data(), label_ptr, weight.defined() ? weight.contiguous().raw_data() : nullptr,
                    ignore_index, picked.raw_data(), target_weight.raw_data(), valid.raw_data(), device.index);
  autograd::record("PickClassesBackward", picked, {logp}, [labels, rows, C, ignore_index, values](const Tensor& g) {
    const Tensor gc = g.contiguous();
    Tensor dvalues = empty(values.shape(), values.dtype(), values.device());
    cuda_backend("cross_entropy backward")
        .pick_classes_backward(values.dtype(), rows, C, gc.raw_data(), static_cast<const int64_t*>(labels.raw_data()), ignore_index,
                               dvalues.raw_data(), values.device().index);
    return std::vector<Tensor>{dvalues};
  });
}
}  // namespace detail

inline Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options) {
  if (const auto c = detail::autocast_inputs("cross_entropy", {&logits}))
    return detail::without_autocast([&] { return cross_entropy((*c)[0], target, options); });
  constexpr const char* op = "cross_entropy";
  VOX_CHECK(logits.rank() >= 1 && is_floating(logits.dtype()), op, "logits must be floating [..., C], got shape ",
            logits.shape(), " ", logits.dtype());
  VOX_CHECK(is_integral(target.dtype()), op, "target must hold integer class indices, got ", target.dtype());
  Shape expected = logits.shape();
  expected.resize(logits.rank() - 1);
  VOX_CHECK(target.shape() == expected, op, "target shape ", target.shape(), " must be the logits shape ", logits.shape(),
            " without its class axis, ", expected);
  const double eps = options.label_smoothing;
  VOX_CHECK(eps >= 0.0 && eps <= 1.0, op, "label_smoothing ", eps, " is outside [0, 1]");
  const int64_t C = logits.size(-1);
  const Tensor& weight = options.weight;
  if (weight.defined())
    VOX_CHECK(weight.rank() == 1 && weight.size(0) == C, op, "weight must be [", C, "], got shape ", weight.shape());
  const DType t = logits.dtype();
  const Tensor logp = log_softmax(logits, -1);
  const Tensor w = weight.defined() ? weight.detach().to(t).to(logits.device()) : Tensor();
  // picked: the log-probability of each target class; target_weight: its class weight; valid: 0
  // where the target is ignore_index (picked and target_weight are 0 there too).
  Tensor picked, target_weight, valid;
  if (logits.device().is_cuda()) {
    // The kernel picks in f32 or f64; 16-bit values widen exactly, and what it picks narrows back
    // exactly (each is one value of logp or w), so the result is the CPU's.
    const bool narrow = t == DType::f16 || t == DType::bf16;
    auto widened = [&](const Tensor& v) { return narrow && v.defined() ? cast(v, DType::f32) : v; };
    detail::pick_target_classes(widened(logp), target, widened(w), options.ignore_index, picked, target_weight, valid);
    if (narrow) picked = cast(picked, t), target_weight = cast(target_weight, t), valid = cast(valid, t);
  } else {
    // Ignored targets become class 0 with a zero mask; all others must be valid classes.
    const Tensor ignored = eq(target, scalar(static_cast<double>(options.ignore_index), DType::i64));
    const Tensor safe_target = where(ignored, zeros(Shape{}, target.dtype()), target);
    valid = cast(eq(ignored, scalar(0.0, DType::boolean)), t);
    const Tensor picked_mask = one_hot(safe_target, C, t);
    target_weight = w.defined() ? mul(sum(mul(picked_mask, w), {-1}), valid) : valid;
    picked = sum(mul(logp, picked_mask), {-1});
  }
  const Tensor nll = neg(mul(picked, target_weight));
  Tensor nll_reduced;
  if (options.reduction == Reduction::mean) nll_reduced = div(sum(nll), sum(target_weight));
  else nll_reduced = detail::reduce_loss(nll, options.reduction);
  if (eps == 0.0) return nll_reduced;
  const Tensor smooth = mul(neg(sum(w.defined() ? mul(logp, w) : logp, {-1})), valid);
  Tensor smooth_reduced;
  if (options.reduction == Reduction::mean) smooth_reduced = div(sum(smooth), sum(target_weight));
  else smooth_reduced = detail::reduce_loss(smooth, options.reduction);
  return add(mul(nll_reduced, scalar(1.0 - eps, t)), mul(smooth_reduced, scalar(eps / static_cast<double>(C), t)));
}

inline Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, const Tensor& weight,
                                               const Tensor& pos_weight, Reduction reduction) {
  if (const auto c = detail::autocast_inputs("binary_cross_entropy_with_logits", {&logits, &target, &weight, &pos_weight}))
    return detail::without_autocast([&] { return binary_cross_entropy_with_logits((*c)[0], (*c)[1], (*c)[2], (*c)[3], reduction); });
  constexpr const char* op = "binary_cross_entropy_with_logits";
  VOX_CHECK(is_floating(logits.dtype()), op, "logits must be floating, got ", logits.dtype());
  VOX_CHECK(target.shape() == logits.shape(), op, "target shape ", target.shape(), " differs from logits shape ",
            logits.shape());
  const DType t = logits.dtype();
  const Tensor y = cast(target, t);
  // softplus(-x) = max(-x, 0) + log(exp(-max(-x, 0)) + exp(-x - max(-x, 0)))
  const Tensor m = clamp(neg(logits), 0.0, std::nullopt);
  const Tensor softplus_neg = add(m, log(add(exp(neg(m)), exp(sub(neg(logits), m)))));
  Tensor log_weight = ones(Shape{}, t);
  if (pos_weight.defined()) log_weight = add(mul(sub(pos_weight, scalar(1.0, t)), y), scalar(1.0, t));
  Tensor loss = add(mul(sub(scalar(1.0, t), y), logits), mul(log_weight, softplus_neg));
  if (weight.defined()) loss = mul(loss, weight);
  return detail::reduce_loss(loss, reduction);
}

}  // namespace vox
