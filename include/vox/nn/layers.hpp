#pragma once
// Layers. The spatial dimension and the kind of layer are template parameters, checked at
// compile time; channel counts and sizes are runtime values. Parameter names and shapes are
// PyTorch's (conv weights are stored channels-last and converted by state_dict()).
#include <tuple>
#include <utility>

#include "vox/nn/init.hpp"
#include "vox/nn/module.hpp"

namespace vox::nn {

namespace detail {
inline std::vector<int64_t> kernel_axes(const std::vector<int64_t>& k, int d, const char* layer) {
  VOX_CHECK(k.size() == 1 || static_cast<int>(k.size()) == d, layer, "kernel needs 1 or ", d, " sizes, got ", k.size());
  std::vector<int64_t> out(static_cast<size_t>(d), k[0]);
  for (size_t i = 0; i < k.size(); ++i) out[i] = k[i];
  for (int64_t v : out) VOX_CHECK(v >= 1, layer, "kernel sizes must be >= 1");
  return out;
}

// A (transposed) conv weight [lead, k..., trail] and its fan-in, trail * kernel volume (PyTorch
// takes the fan-in from weight axis 1, which is `trail` in vox's channels-last layout).
struct WeightSpec {
  Shape shape;
  int64_t fan_in;
};
inline WeightSpec conv_weight(int64_t lead, const std::vector<int64_t>& kernel, int64_t trail, int d, const char* layer) {
  const auto k = kernel_axes(kernel, d, layer);
  WeightSpec w{Shape{lead}, trail};
  for (int64_t v : k) {
    w.shape.push_back(v);
    w.fan_in *= v;
  }
  w.shape.push_back(trail);
  return w;
}
}  // namespace detail

// Stands in for a layer's own forward: quantization (vox/quant/) installs one to observe a
// layer's inputs during calibration, or to run the layer in INT8. It receives the input and the
// layer's own forward, which it may call.
using ForwardInterceptor = std::function<Tensor(const Tensor& x, const std::function<Tensor(const Tensor&)>& own_forward)>;

// The interceptor slot of the layers that quantization can replace (convolutions, linear) or
// fold away (batch norms).
class Interceptable {
 public:
  void set_interceptor(ForwardInterceptor f) { interceptor_ = std::move(f); }
  bool intercepted() const { return static_cast<bool>(interceptor_); }

 protected:
  template <class Own>
  Tensor run(const Tensor& x, Own own) const {
    if (!interceptor_) return own(x);
    return interceptor_(x, own);
  }

 private:
  ForwardInterceptor interceptor_;
};

// Conv<D>: weight [out, k..., in/groups] (PyTorch [out, in/groups, k...]), optional bias [out].
template <int D>
class Conv : public Module, public Interceptable {
  static_assert(D == 2 || D == 3, "vox::nn::Conv is 2-D or 3-D");

 public:
  Conv(int64_t in, int64_t out, std::vector<int64_t> kernel, ConvOptions options = {}, bool bias = true,
       Generator* gen = nullptr)
      : options_(std::move(options)) {
    VOX_CHECK(in >= 1 && out >= 1 && options_.groups >= 1 && in % options_.groups == 0 && out % options_.groups == 0,
              "nn::Conv", "channels ", in, " -> ", out, " must be positive and divisible by groups ", options_.groups);
    const auto w = detail::conv_weight(out, kernel, in / options_.groups, D, "nn::Conv");
    weight_ = &register_parameter("weight", init::pytorch_default(w.shape, w.fan_in, gen), TorchLayout::channels_first);
    if (bias) bias_ = &register_parameter("bias", init::pytorch_default({out}, w.fan_in, gen));
  }
  Tensor forward(const Tensor& x) const {
    return run(x, [this](const Tensor& v) { return conv(v, *weight_, bias_ ? *bias_ : Tensor(), options_); });
  }
  Tensor& weight() { return *weight_; }
  Tensor bias() const { return bias_ ? *bias_ : Tensor(); }
  const ConvOptions& options() const { return options_; }

 private:
  ConvOptions options_;
  Tensor* weight_ = nullptr;
  Tensor* bias_ = nullptr;
};

// ConvTranspose<D>: weight [in, k..., out/groups] (PyTorch [in, out/groups, k...]).
template <int D>
class ConvTranspose : public Module, public Interceptable {
  static_assert(D == 2 || D == 3, "vox::nn::ConvTranspose is 2-D or 3-D");

 public:
  ConvTranspose(int64_t in, int64_t out, std::vector<int64_t> kernel, ConvTransposeOptions options = {}, bool bias = true,
                Generator* gen = nullptr)
      : options_(std::move(options)) {
    VOX_CHECK(in >= 1 && out >= 1 && options_.groups >= 1 && in % options_.groups == 0 && out % options_.groups == 0,
              "nn::ConvTranspose", "channels ", in, " -> ", out, " must be positive and divisible by groups ", options_.groups);
    const auto w = detail::conv_weight(in, kernel, out / options_.groups, D, "nn::ConvTranspose");
    weight_ = &register_parameter("weight", init::pytorch_default(w.shape, w.fan_in, gen), TorchLayout::channels_first);
    if (bias) bias_ = &register_parameter("bias", init::pytorch_default({out}, w.fan_in, gen));
  }
  Tensor forward(const Tensor& x) const {
    return run(x, [this](const Tensor& v) { return conv_transpose(v, *weight_, bias_ ? *bias_ : Tensor(), options_); });
  }
  Tensor& weight() { return *weight_; }
  Tensor bias() const { return bias_ ? *bias_ : Tensor(); }
  const ConvTransposeOptions& options() const { return options_; }

 private:
  ConvTransposeOptions options_;
  Tensor* weight_ = nullptr;
  Tensor* bias_ = nullptr;
};

// InstanceNorm<D>: per-sample, per-channel statistics; affine off by default, as in PyTorch.
template <int D>
class InstanceNorm : public Module {
  static_assert(D >= 1 && D <= 3, "vox::nn::InstanceNorm is 1-, 2- or 3-D");

 public:
  explicit InstanceNorm(int64_t channels, bool affine = false, double eps = 1e-5) : channels_(channels), eps_(eps) {
    if (affine) {
      weight_ = &register_parameter("weight", ones({channels}));
      bias_ = &register_parameter("bias", zeros({channels}));
    }
  }
  Tensor forward(const Tensor& x) const {
    VOX_CHECK(x.rank() == D + 2 && x.size(-1) == channels_, "nn::InstanceNorm", "expects [N, ", D, " spatial axes, ", channels_,
              "], got ", x.shape());
    return instance_norm(x, weight_ ? *weight_ : Tensor(), bias_ ? *bias_ : Tensor(), eps_);
  }
  // PReLU(forward(x)) (+ residual, when given) as one fused op (instance_norm_prelu_add); slope
  // is the PReLU's weight.
  Tensor forward_prelu(const Tensor& x, const Tensor& slope, const Tensor& residual = {}) const {
    VOX_CHECK(x.rank() == D + 2 && x.size(-1) == channels_, "nn::InstanceNorm", "expects [N, ", D, " spatial axes, ", channels_,
              "], got ", x.shape());
    return instance_norm_prelu_add(x, weight_ ? *weight_ : Tensor(), bias_ ? *bias_ : Tensor(), slope, residual, eps_);
  }
  // The channel count after structured pruning removed some (quant/prune.hpp), which resizes
  // the affine parameters itself.
  void set_channels(int64_t channels) {
    VOX_CHECK(channels >= 1 && (!weight_ || weight_->size(0) == channels), "nn::InstanceNorm", "cannot have ", channels, " channels",
              weight_ ? " with an affine weight of " + std::to_string(weight_->size(0)) : std::string());
    channels_ = channels;
  }
  // LeakyReLU(forward(x), negative_slope), ReLU for 0, as one fused op: a PReLU whose slope is a
  // constant.
  Tensor forward_relu(const Tensor& x, double negative_slope = 0.0) const {
    return forward_prelu(x, full(Shape{1}, negative_slope, x.dtype(), x.device()));
  }

 private:
  int64_t channels_;
  double eps_;
  Tensor* weight_ = nullptr;
  Tensor* bias_ = nullptr;
};

// BatchNorm<D>: batch statistics in training (updating running_mean / running_var with
// momentum 0.1 and counting num_batches_tracked), running statistics in eval.
template <int D>
class BatchNorm : public Module, public Interceptable {  // interceptable: quantization folds it into the conv before it
  static_assert(D >= 1 && D <= 3, "vox::nn::BatchNorm is 1-, 2- or 3-D");

 public:
  explicit BatchNorm(int64_t channels, double eps = 1e-5, double momentum = 0.1) : eps_(eps), momentum_(momentum) {
    weight_ = &register_parameter("weight", ones({channels}));
    bias_ = &register_parameter("bias", zeros({channels}));
    running_mean_ = &register_buffer("running_mean", zeros({channels}));
    running_var_ = &register_buffer("running_var", ones({channels}));
    batches_ = &register_buffer("num_batches_tracked", zeros({}, DType::i64));
  }
  Tensor forward(const Tensor& x) {
    return run(x, [this](const Tensor& v) {
      if (is_training()) count_batch();
      return batch_norm(v, *running_mean_, *running_var_, *weight_, *bias_, is_training(), momentum_, eps_);
    });
  }
  const Tensor& weight() const { return *weight_; }
  const Tensor& bias() const { return *bias_; }
  const Tensor& running_mean() const { return *running_mean_; }
  const Tensor& running_var() const { return *running_var_; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }

  // num_batches_tracked += 1 where the buffer lives: on a GPU as a device op (through f64, exact
  // below 2^53 batches), with no host read, so that a step stays asynchronous and capturable.
  // (Public for interceptors that replace the training forward, SyncBatchNorm's.)
  void count_batch() {
    if (batches_->device().is_cpu()) {
      *batches_->data<int64_t>() += 1;
      return;
    }
    autograd::NoGradGuard no_grad;
    batches_->copy_from(batches_->to(DType::f64) + 1.0);
  }

 private:
  double eps_, momentum_;
  Tensor *weight_, *bias_, *running_mean_, *running_var_, *batches_;
};

// GroupNorm: channels (last axis) in `groups` groups, affine by default, as torch.nn.GroupNorm.
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t groups, int64_t channels, bool affine = true, double eps = 1e-5) : groups_(groups), eps_(eps) {
    VOX_CHECK(groups >= 1 && channels % groups == 0, "nn::GroupNorm", "groups ", groups, " must divide channels ", channels);
    if (affine) {
      weight_ = &register_parameter("weight", ones({channels}));
      bias_ = &register_parameter("bias", zeros({channels}));
    }
  }
  Tensor forward(const Tensor& x) const { return group_norm(x, groups_, weight_ ? *weight_ : Tensor(), bias_ ? *bias_ : Tensor(), eps_); }

 private:
  int64_t groups_;
  double eps_;
  Tensor* weight_ = nullptr;
  Tensor* bias_ = nullptr;
};

// LayerNorm over the trailing axes `normalized_shape`, affine by default, as torch.nn.LayerNorm.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(const Shape& normalized_shape, bool affine = true, double eps = 1e-5)
      : axes_(normalized_shape.size()), eps_(eps) {
    VOX_CHECK(axes_ >= 1, "nn::LayerNorm", "needs at least one normalised axis");
    if (affine) {
      weight_ = &register_parameter("weight", ones(normalized_shape));
      bias_ = &register_parameter("bias", zeros(normalized_shape));
    }
  }
  Tensor forward(const Tensor& x) const { return layer_norm(x, axes_, weight_ ? *weight_ : Tensor(), bias_ ? *bias_ : Tensor(), eps_); }

 private:
  int64_t axes_;
  double eps_;
  Tensor* weight_ = nullptr;
  Tensor* bias_ = nullptr;
};

// PReLU with one slope or one per channel (the last axis), initialised to 0.25.
class PReLU : public Module {
 public:
  explicit PReLU(int64_t num_parameters = 1, double init = 0.25) {
    weight_ = &register_parameter("weight", full({num_parameters}, init));
  }
  Tensor forward(const Tensor& x) const { return prelu(x, *weight_); }
  const Tensor& weight() const { return *weight_; }

 private:
  Tensor* weight_;
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) const { return relu(x); }
};

class Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) const { return sigmoid(x); }
};

class LeakyReLU : public Module {
 public:
  explicit LeakyReLU(double negative_slope = 0.01) : slope_(negative_slope) {}
  Tensor forward(const Tensor& x) const { return leaky_relu(x, slope_); }

 private:
  double slope_;
};

class GELU : public Module {
 public:
  explicit GELU(GeluApproximation approximation = GeluApproximation::none) : approximation_(approximation) {}
  Tensor forward(const Tensor& x) const { return gelu(x, approximation_); }

 private:
  GeluApproximation approximation_;
};

// Dropout in training mode, identity in eval mode.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5) : p_(p) { VOX_CHECK(p >= 0 && p <= 1, "nn::Dropout", "p = ", p, " is outside [0, 1]"); }
  Tensor forward(const Tensor& x) const { return dropout(x, p_, is_training()); }
  // True when forward returns its input unchanged.
  bool is_identity() const { return p_ == 0 || !is_training(); }

 private:
  double p_;
};

// Linear: weight [out, in] and bias [out], as PyTorch.
class Linear : public Module, public Interceptable {
 public:
  Linear(int64_t in, int64_t out, bool bias = true, Generator* gen = nullptr) {
    weight_ = &register_parameter("weight", init::pytorch_default({out, in}, in, gen));
    if (bias) bias_ = &register_parameter("bias", init::pytorch_default({out}, in, gen));
  }
  Tensor forward(const Tensor& x) const {
    return run(x, [this](const Tensor& v) { return linear(v, *weight_, bias_ ? *bias_ : Tensor()); });
  }
  Tensor& weight() { return *weight_; }
  Tensor bias() const { return bias_ ? *bias_ : Tensor(); }

 private:
  Tensor* weight_ = nullptr;
  Tensor* bias_ = nullptr;
};

class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) const { return x; }
};

// A module that can stand in a Sequential: it has forward(Tensor) -> Tensor.
template <class M>
concept Layer = std::derived_from<M, Module> && requires(M m, const Tensor& x) {
  { m.forward(x) } -> std::convertible_to<Tensor>;
};

// Sequential<A, B, C>: a flat type list of layers applied in order, children named "0", "1",
// ... as in torch.nn.Sequential. No nesting is needed to compose.
template <Layer... Layers>
class Sequential : public Module {
 public:
  explicit Sequential(Layers... layers) : layers_(std::move(layers)...) {}
  Tensor forward(const Tensor& x) {
    return std::apply([&x](auto&... layer) {
      Tensor h = x;
      ((h = layer.forward(h)), ...);
      return h;
    }, layers_);
  }
  void visit_children(const ChildVisitor& visit) override {
    std::apply([&visit](auto&... layer) {
      int index = 0;
      (visit(std::to_string(index++), layer), ...);
    }, layers_);
  }
  template <size_t I>
  auto& get() {
    return std::get<I>(layers_);
  }

 private:
  std::tuple<Layers...> layers_;
};

// Residual<Layers...>: x + body(x), the body a Sequential of the layers, named "body".
template <Layer... Layers>
class Residual : public Module {
 public:
  explicit Residual(Layers... layers) : body_(std::move(layers)...) {}
  Tensor forward(const Tensor& x) {
    const Tensor y = body_.forward(x);
    VOX_CHECK(y.shape() == x.shape(), "nn::Residual", "the body maps ", x.shape(), " to ", y.shape(),
              "; an identity residual needs the same shape");
    return add(x, y);
  }
  void visit_children(const ChildVisitor& visit) override { visit("body", body_); }
  Sequential<Layers...>& body() { return body_; }

 private:
  Sequential<Layers...> body_;
};

// SkipConcat<Layers...>: concatenates [x, submodule(x)] on the channel (last) axis, the U-Net
// skip; the body is named "submodule" as in MONAI's SkipConnection.
template <Layer... Layers>
class SkipConcat : public Module {
 public:
  explicit SkipConcat(Layers... layers) : body_(std::move(layers)...) {}
  Tensor forward(const Tensor& x) { return concat({x, body_.forward(x)}, -1); }
  void visit_children(const ChildVisitor& visit) override { visit("submodule", body_); }

 private:
  Sequential<Layers...> body_;
};

}  // namespace vox::nn
