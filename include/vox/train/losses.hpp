#pragma once
// Segmentation losses with MONAI's semantics (monai.losses, 1.2), on channels-last tensors:
// predictions are [N, spatial..., C] logits; targets are integer labels [N, spatial...] (one-hot
// encoded here, MONAI's to_onehot_y) or floating [N, spatial..., C].
//   dice_loss     DiceLoss: 1 - (2 sum(p t) + smooth_nr) / (sum(p) + sum(t) + smooth_dr) per
//                 sample and class (over the batch too with batch = true, and over every rank's
//                 batch with a process group, as nnU-Net's DDP all-gathers them); optional
//                 softmax or sigmoid first, background dropped after the activation, squared_pred,
//                 jaccard.
//   dice_ce_loss  DiceCELoss: lambda_dice * Dice + lambda_ce * cross-entropy on the logits.
//   focal_loss    FocalLoss: sigmoid form (per-channel BCE scaled by (1 - p_t)^gamma) or softmax
//                 form, optional alpha and class weights, background dropped before it.
//   deep_supervision_loss  sum_i w_i loss(outputs[i], targets[i]), w_i = 2^-i / sum_j 2^-j.
// All are built from differentiable ops; their gradients come from the tape.
#include <cmath>
#include <functional>

#include "vox/dist/all_reduce.hpp"
#include "vox/ops.hpp"

namespace vox::losses {

enum class Activation { none, softmax, sigmoid };

struct DiceOptions {
  bool include_background = true;
  Activation activation = Activation::none;  // MONAI's default; {.activation = softmax} is typical
  bool squared_pred = false;
  bool jaccard = false;
  double smooth_nr = 1e-5;
  double smooth_dr = 1e-5;
  bool batch = false;  // sum over the batch before the ratio
  Reduction reduction = Reduction::mean;  // none: [N, C] (or [C] with batch)
  dist::ProcessGroup* group = nullptr;    // with batch: the sums over every rank's share of the batch
};

namespace detail {
inline Tensor activate(const Tensor& x, Activation a) {
  switch (a) {
    case Activation::softmax: return softmax(x, -1);
    case Activation::sigmoid: return sigmoid(x);
    case Activation::none: return x;
  }
  return x;
}

// Targets as floating [N, spatial..., C] in the prediction's dtype.
inline Tensor target_like(const char* op, const Tensor& prediction, const Tensor& target) {
  const int64_t C = prediction.size(-1);
  if (is_integral(target.dtype())) {
    Shape expected = prediction.shape();
    expected.resize(prediction.rank() - 1);
    VOX_CHECK(target.shape() == expected, op, "integer target shape ", target.shape(), " must be the prediction shape ",
              prediction.shape(), " without its class axis");
    return one_hot(target, C, prediction.dtype());
  }
  VOX_CHECK(target.shape() == prediction.shape(), op, "target shape ", target.shape(), " differs from prediction shape ",
            prediction.shape());
  return cast(target, prediction.dtype());
}

inline Tensor without_background(const Tensor& t) { return slice(t, -1, 1, t.size(-1)); }

using vox::detail::reduce_loss;
}  // namespace detail

inline Tensor dice_loss(const Tensor& prediction, const Tensor& target, const DiceOptions& o = {}) {
  constexpr const char* op = "dice_loss";
  VOX_CHECK(prediction.rank() >= 3 && is_floating(prediction.dtype()), op,
            "prediction must be floating [N, spatial..., C], got shape ", prediction.shape(), " ", prediction.dtype());
  Tensor p = detail::activate(prediction, o.activation);
  Tensor t = detail::target_like(op, prediction, target);
  if (!o.include_background) {
    VOX_CHECK(prediction.size(-1) > 1, op, "include_background = false needs more than one class");
    p = detail::without_background(p);
    t = detail::without_background(t);
  }
  Axes axes;
  for (int64_t a = o.batch ? 0 : 1; a + 1 < p.rank(); ++a) axes.push_back(a);
  Tensor intersection = sum(mul(p, t), axes);
  Tensor ground = sum(o.squared_pred ? square(t) : t, axes);
  Tensor predicted = sum(o.squared_pred ? square(p) : p, axes);
  if (o.batch && o.group && o.group->size() > 1) {  // one collective for the three sums
    const int64_t c = intersection.size(0);
    const Tensor all = dist::all_reduce_sum(concat({intersection, ground, predicted}, 0), *o.group, "batch Dice sums");
    intersection = slice(all, 0, 0, c, 1), ground = slice(all, 0, c, 2 * c, 1), predicted = slice(all, 0, 2 * c, 3 * c, 1);
  }
  Tensor denominator = add(ground, predicted);
  if (o.jaccard) denominator = mul(sub(denominator, intersection), scalar(2.0, p.dtype()));
  const Tensor ratio = div(add(mul(intersection, scalar(2.0, p.dtype())), scalar(o.smooth_nr, p.dtype())),
                           add(denominator, scalar(o.smooth_dr, p.dtype())));
  return detail::reduce_loss(sub(scalar(1.0, p.dtype()), ratio), o.reduction);
}

struct DiceCEOptions {
  DiceOptions dice{};
  Tensor ce_weight;  // [C], optional
  double lambda_dice = 1.0;
  double lambda_ce = 1.0;
};

// target: integer labels [N, spatial...].
inline Tensor dice_ce_loss(const Tensor& logits, const Tensor& target, const DiceCEOptions& o = {}) {
  VOX_CHECK(o.lambda_dice >= 0 && o.lambda_ce >= 0, "dice_ce_loss", "lambdas must be >= 0");
  VOX_CHECK(is_integral(target.dtype()), "dice_ce_loss", "target must hold integer labels, got ", target.dtype());
  const Tensor dice = dice_loss(logits, target, o.dice);
  const Tensor ce = cross_entropy(logits, target, {.weight = o.ce_weight});
  return add(mul(dice, scalar(o.lambda_dice, logits.dtype())), mul(ce, scalar(o.lambda_ce, logits.dtype())));
}

struct FocalOptions {
  bool include_background = true;
  double gamma = 2.0;
  std::optional<double> alpha;
  std::vector<double> weight;  // per class (after dropping the background), optional
  bool use_softmax = false;
  Reduction reduction = Reduction::mean;
};

inline Tensor focal_loss(const Tensor& logits, const Tensor& target, const FocalOptions& o = {}) {
  constexpr const char* op = "focal_loss";
  VOX_CHECK(logits.rank() >= 2 && is_floating(logits.dtype()), op, "logits must be floating [N, ..., C], got ",
            logits.shape());
  Tensor x = logits;
  Tensor t = detail::target_like(op, logits, target);
  if (!o.include_background && logits.size(-1) > 1) {
    x = detail::without_background(x);
    t = detail::without_background(t);
  }
  const DType d = x.dtype();
  auto s = [d](double v) { return scalar(v, d); };
  Tensor loss;
  if (o.use_softmax) {
    // MONAI ignores alpha here with a warning (its factor is tied to class 0, the background).
    VOX_CHECK(!o.alpha || o.include_background, op, "alpha with use_softmax needs include_background = true: "
              "its factor (1 - alpha) applies to class 0, the background");
    const Tensor log_p = log_softmax(x, -1);
    loss = neg(mul(mul(pow(sub(s(1.0), exp(log_p)), o.gamma), log_p), t));
    if (o.alpha) {
      std::vector<double> factors(static_cast<size_t>(x.size(-1)), *o.alpha);
      factors[0] = 1.0 - *o.alpha;
      loss = mul(loss, from_vector(factors, Shape{x.size(-1)}).to(d));
    }
  } else {
    // BCE with logits, times (1 - p_t)^gamma = exp(gamma * logsigmoid(-x (2t - 1))).
    const Tensor bce = binary_cross_entropy_with_logits(x, t, {}, {}, Reduction::none);
    const Tensor z = neg(mul(x, sub(mul(t, s(2.0)), s(1.0))));
    const Tensor log_sigmoid_z = neg(binary_cross_entropy_with_logits(z, ones_like(z), {}, {}, Reduction::none));
    loss = mul(exp(mul(log_sigmoid_z, s(o.gamma))), bce);
    if (o.alpha) loss = mul(loss, add(mul(t, s(*o.alpha)), mul(sub(s(1.0), t), s(1.0 - *o.alpha))));
  }
  if (!o.weight.empty()) {
    VOX_CHECK(static_cast<int64_t>(o.weight.size()) == x.size(-1), op, o.weight.size(), " class weights for ", x.size(-1),
              " classes (after dropping the background if asked)");
    for (double w : o.weight) VOX_CHECK(w >= 0, op, "class weights must be >= 0");
    loss = mul(loss, from_vector(o.weight, Shape{x.size(-1)}).to(d));
  }
  if (o.reduction == Reduction::sum) {  // MONAI averages the spatial axes first, then sums
    Axes spatial;
    for (int64_t a = 1; a + 1 < loss.rank(); ++a) spatial.push_back(a);
    return sum(spatial.empty() ? loss : mean(loss, spatial));
  }
  return detail::reduce_loss(loss, o.reduction);
}

using LossFn = std::function<Tensor(const Tensor& output, const Tensor& target)>;

// nnU-Net-style deep supervision: outputs[0] is full resolution, each next one coarser.
inline Tensor deep_supervision_loss(const std::vector<Tensor>& outputs, const std::vector<Tensor>& targets, const LossFn& loss) {
  VOX_CHECK(!outputs.empty() && outputs.size() == targets.size(), "deep_supervision_loss", outputs.size(), " outputs and ",
            targets.size(), " targets");
  double total_weight = 0;
  for (size_t i = 0; i < outputs.size(); ++i) total_weight += std::ldexp(1.0, -static_cast<int>(i));
  Tensor total;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor term = mul(loss(outputs[i], targets[i]), scalar(std::ldexp(1.0, -static_cast<int>(i)) / total_weight,
                                                                 outputs[i].dtype()));
    total = total.defined() ? add(total, term) : term;
  }
  return total;
}

}  // namespace vox::losses
