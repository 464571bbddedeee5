#pragma once
// MONAI's UNet (monai.networks.nets.UNet) for 3-D inputs, built with the same module tree, so
// its state_dict keys and shapes are MONAI's and a MONAI state_dict loads directly:
//   model = [down, SkipConnection(submodule = next level, or the bottom), up]
//   down   = ResidualUnit(stride s, num_res_units subunits)   (a Convolution if 0 units)
//   bottom = ResidualUnit(stride 1)
//   up     = [Convolution(transposed, k3, stride s, output_padding s - 1), ResidualUnit(1 subunit)]
// A Convolution is conv -> adn (norm "N", dropout "D", PReLU "A"); the topmost up path ends in a
// bare conv. Residual branches: a strided conv (kernel k) when the stride is not 1, a 1x1x1 conv
// when only the channels change, otherwise identity. Skips concatenate [encoder, decoder] on
// channels. Activations are channels-last [N, D, H, W, C].
#include <memory>

#include "vox/nn/dynamic.hpp"
#include "vox/nn/layers.hpp"

namespace vox::nn::models {

enum class NormKind { instance, batch };

struct MonaiUNetConfig {
  int64_t in_channels = 1;
  int64_t out_channels = 2;
  std::vector<int64_t> channels{16, 32, 64, 128, 256};
  std::vector<int64_t> strides{2, 2, 2, 2};
  int64_t kernel_size = 3;
  int64_t up_kernel_size = 3;
  int num_res_units = 2;
  NormKind norm = NormKind::instance;
  double dropout = 0.0;
  bool bias = true;
};

namespace monai {

// Norm -> dropout -> PReLU, named N, D, A as MONAI's ADN block.
class ADN : public DynamicModule {
 public:
  ADN(int64_t channels, NormKind norm, double dropout) : dropout_(dropout) {
    if (norm == NormKind::batch) batch_ = std::make_unique<BatchNorm<3>>(channels);
    else instance_ = std::make_unique<InstanceNorm<3>>(channels);
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = batch_ ? batch_->forward(x) : instance_->forward(x);
    return act_.forward(dropout_.forward(h));
  }
  void visit_children(const ChildVisitor& visit) override {
    if (batch_) visit("N", *batch_);
    else visit("N", *instance_);
    visit("D", dropout_);
    visit("A", act_);
  }

 private:
  std::unique_ptr<BatchNorm<3>> batch_;
  std::unique_ptr<InstanceNorm<3>> instance_;
  Dropout dropout_;
  PReLU act_;
};

// MONAI's Convolution: "conv" (plain or transposed), then "adn" unless conv_only.
class Convolution : public DynamicModule {
 public:
  Convolution(int64_t in, int64_t out, int64_t stride, int64_t kernel, bool transposed, bool conv_only,
              const MonaiUNetConfig& c) {
    const int64_t padding = (kernel - 1) / 2;
    if (transposed)
      transposed_ = std::make_unique<ConvTranspose<3>>(
          in, out, std::vector<int64_t>{kernel},
          ConvTransposeOptions{.stride = {stride}, .padding = {padding}, .output_padding = {stride - 1}}, c.bias);
    else
      conv_ = std::make_unique<Conv<3>>(in, out, std::vector<int64_t>{kernel},
                                        ConvOptions{.stride = {stride}, .padding = {padding}}, c.bias);
    if (!conv_only) adn_ = std::make_unique<ADN>(out, c.norm, c.dropout);
  }
  Tensor forward(const Tensor& x) override {
    const Tensor h = conv_ ? conv_->forward(x) : transposed_->forward(x);
    return adn_ ? adn_->forward(h) : h;
  }
  void visit_children(const ChildVisitor& visit) override {
    if (conv_) visit("conv", *conv_);
    else visit("conv", *transposed_);
    if (adn_) visit("adn", *adn_);
  }

 private:
  std::unique_ptr<Conv<3>> conv_;
  std::unique_ptr<ConvTranspose<3>> transposed_;
  std::unique_ptr<ADN> adn_;
};

// Subunits unit0, unit1, ... (the first carries the stride) plus a residual branch.
class ResidualUnit : public DynamicModule {
 public:
  ResidualUnit(int64_t in, int64_t out, int64_t stride, int subunits, bool last_conv_only, const MonaiUNetConfig& c) {
    subunits = std::max(1, subunits);
    int64_t ch = in, s = stride;
    for (int u = 0; u < subunits; ++u) {
      units_.add_unit(std::make_unique<Convolution>(ch, out, s, c.kernel_size, false, last_conv_only && u == subunits - 1, c));
      ch = out;
      s = 1;
    }
    if (stride != 1 || in != out) {
      const int64_t k = stride != 1 ? c.kernel_size : 1;
      residual_ = std::make_unique<Conv<3>>(in, out, std::vector<int64_t>{k},
                                            ConvOptions{.stride = {stride}, .padding = {stride != 1 ? (k - 1) / 2 : 0}}, c.bias);
    }
  }
  Tensor forward(const Tensor& x) override {
    const Tensor res = residual_ ? residual_->forward(x) : x;
    return add(units_.forward(x), res);
  }
  void visit_children(const ChildVisitor& visit) override {
    visit("conv", units_);
    if (residual_) visit("residual", *residual_);
  }

 private:
  class Units : public DynamicModule {
   public:
    void add_unit(std::unique_ptr<Convolution> u) { units_.push_back(std::move(u)); }
    Tensor forward(const Tensor& x) override {
      Tensor h = x;
      for (auto& u : units_) h = u->forward(h);
      return h;
    }
    void visit_children(const ChildVisitor& visit) override {
      for (size_t i = 0; i < units_.size(); ++i) visit("unit" + std::to_string(i), *units_[i]);
    }

   private:
    std::vector<std::unique_ptr<Convolution>> units_;
  };
  Units units_;
  std::unique_ptr<Conv<3>> residual_;
};

// Concatenates [x, submodule(x)] on the channel axis.
class SkipConnection : public DynamicModule {
 public:
  explicit SkipConnection(std::unique_ptr<DynamicModule> submodule) : submodule_(std::move(submodule)) {}
  Tensor forward(const Tensor& x) override { return concat({x, submodule_->forward(x)}, -1); }
  void visit_children(const ChildVisitor& visit) override { visit("submodule", *submodule_); }

 private:
  std::unique_ptr<DynamicModule> submodule_;
};

}  // namespace monai

class MonaiUNet : public Module {
 public:
  explicit MonaiUNet(MonaiUNetConfig config = {}) : config_(std::move(config)) {
    const auto& c = config_;
    VOX_CHECK(c.channels.size() >= 2, "MonaiUNet", "needs at least 2 channel levels, got ", c.channels.size());
    VOX_CHECK(c.strides.size() >= c.channels.size() - 1, "MonaiUNet", "needs ", c.channels.size() - 1, " strides, got ",
              c.strides.size());
    VOX_CHECK(c.kernel_size % 2 == 1 && c.up_kernel_size % 2 == 1, "MonaiUNet", "kernel sizes must be odd");
    model_ = block(c.in_channels, c.out_channels, 0, true);
  }
  Tensor forward(const Tensor& x) {
    VOX_CHECK(x.rank() == 5 && x.size(-1) == config_.in_channels, "MonaiUNet", "expects [N, D, H, W, ", config_.in_channels,
              "], got ", x.shape());
    return model_->forward(x);
  }
  void visit_children(const ChildVisitor& visit) override { visit("model", *model_); }
  const MonaiUNetConfig& config() const { return config_; }

 private:
  std::unique_ptr<DynamicModule> down_layer(int64_t in, int64_t out, int64_t stride) {
    const auto& c = config_;
    if (c.num_res_units > 0) return std::make_unique<monai::ResidualUnit>(in, out, stride, c.num_res_units, false, c);
    return std::make_unique<monai::Convolution>(in, out, stride, c.kernel_size, false, false, c);
  }
  std::unique_ptr<DynamicModule> up_layer(int64_t in, int64_t out, int64_t stride, bool is_top) {
    const auto& c = config_;
    auto conv = std::make_unique<monai::Convolution>(in, out, stride, c.up_kernel_size, true, is_top && c.num_res_units == 0, c);
    if (c.num_res_units == 0) return conv;
    auto seq = std::make_unique<DynamicSequential>();
    seq->add(std::move(conv));
    seq->add(std::make_unique<monai::ResidualUnit>(out, out, 1, 1, is_top, c));
    return seq;
  }
  // Level `level` maps inc -> outc channels around everything below it.
  std::unique_ptr<DynamicModule> block(int64_t inc, int64_t outc, size_t level, bool is_top) {
    const auto& ch = config_.channels;
    const int64_t c = ch[level], s = config_.strides[level];
    std::unique_ptr<DynamicModule> sub;
    int64_t up_in;
    if (level + 2 < ch.size()) {
      sub = block(c, c, level + 1, false);
      up_in = 2 * c;
    } else {
      sub = down_layer(c, ch[level + 1], 1);  // the bottom
      up_in = c + ch[level + 1];
    }
    auto seq = std::make_unique<DynamicSequential>();
    seq->add(down_layer(inc, c, s));
    seq->add(std::make_unique<monai::SkipConnection>(std::move(sub)));
    seq->add(up_layer(up_in, outc, s, is_top));
    return seq;
  }

  MonaiUNetConfig config_;
  std::unique_ptr<DynamicModule> model_;
};

}  // namespace vox::nn::models
