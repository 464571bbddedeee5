#pragma once
// MONAI's building blocks (monai.networks.blocks), built with MONAI's child names so that the
// state_dict keys of models made from them are MONAI's:
//   ADN            norm "N" -> dropout "D" -> activation "A" (MONAI's "NDA" ordering)
//   Convolution    "conv" (plain or transposed, "same" padding) then "adn" unless conv_only
//   ResidualUnit   "conv" = subunits unit0, unit1, ... (the first carries the stride) plus a
//                  "residual" branch: a strided conv (kernel k) when the stride is not 1, a
//                  1x1x1 conv when only the channels change, otherwise identity
//   SkipConnection [x, submodule(x)] concatenated on channels
// MONAI's instance norm has no affine parameters; its batch norm has them.
#include <memory>

#include "vox/nn/dynamic.hpp"
#include "vox/nn/layers.hpp"

namespace vox::nn::models {

enum class NormKind { instance, batch };

namespace monai {

enum class ActKind { prelu, relu };

struct BlockOptions {
  NormKind norm = NormKind::instance;
  ActKind act = ActKind::prelu;
  double dropout = 0.0;
  bool bias = true;
};

// The level lists of MONAI's U-Nets: at least two channel counts and one stride per level below
// the top.
inline void check_levels(const char* model, const std::vector<int64_t>& channels, const std::vector<int64_t>& strides) {
  VOX_CHECK(channels.size() >= 2, model, "needs at least 2 channel levels, got ", channels.size());
  VOX_CHECK(strides.size() >= channels.size() - 1, model, "needs ", channels.size() - 1, " strides, got ", strides.size());
}

class ADN : public DynamicModule {
 public:
  ADN(int64_t channels, const BlockOptions& o) : dropout_(o.dropout) {
    if (o.norm == NormKind::batch) batch_ = std::make_unique<BatchNorm<3>>(channels);
    else instance_ = std::make_unique<InstanceNorm<3>>(channels);
    if (o.act == ActKind::prelu) prelu_ = std::make_unique<PReLU>();
  }
  Tensor forward(const Tensor& x) override { return forward_add(x, Tensor()); }
  // forward(x) + residual (residual undefined: forward(x)). MONAI's default block (instance norm,
  // no dropout, PReLU) runs as one fused op, with the residual added in the same pass.
  Tensor forward_add(const Tensor& x, const Tensor& residual) {
    if (instance_ && prelu_ && dropout_.is_identity()) return instance_->forward_prelu(x, prelu_->weight(), residual);
    const Tensor h = dropout_.forward(batch_ ? batch_->forward(x) : instance_->forward(x));
    const Tensor y = prelu_ ? prelu_->forward(h) : relu_.forward(h);
    return residual.defined() ? add(y, residual) : y;
  }
  void visit_children(const ChildVisitor& visit) override {
    if (batch_) visit("N", *batch_);
    else visit("N", *instance_);
    visit("D", dropout_);
    if (prelu_) visit("A", *prelu_);
    else visit("A", relu_);
  }

 private:
  std::unique_ptr<BatchNorm<3>> batch_;
  std::unique_ptr<InstanceNorm<3>> instance_;
  Dropout dropout_;
  std::unique_ptr<PReLU> prelu_;
  ReLU relu_;
};

class Convolution : public DynamicModule {
 public:
  Convolution(int64_t in, int64_t out, int64_t stride, int64_t kernel, bool transposed, bool conv_only, const BlockOptions& o) {
    VOX_CHECK(kernel % 2 == 1, "monai::Convolution", "MONAI's same padding needs an odd kernel, got ", kernel);
    const int64_t padding = (kernel - 1) / 2;
    if (transposed)
      transposed_ = std::make_unique<ConvTranspose<3>>(
          in, out, std::vector<int64_t>{kernel},
          ConvTransposeOptions{.stride = {stride}, .padding = {padding}, .output_padding = {stride - 1}}, o.bias);
    else
      conv_ = std::make_unique<Conv<3>>(in, out, std::vector<int64_t>{kernel}, ConvOptions{.stride = {stride}, .padding = {padding}},
                                        o.bias);
    if (!conv_only) adn_ = std::make_unique<ADN>(out, o);
  }
  Tensor forward(const Tensor& x) override { return forward_add(x, Tensor()); }
  // forward(x) + residual, fused into the ADN's pass where it has one.
  Tensor forward_add(const Tensor& x, const Tensor& residual) {
    const Tensor h = conv_ ? conv_->forward(x) : transposed_->forward(x);
    if (adn_) return adn_->forward_add(h, residual);
    return residual.defined() ? add(h, residual) : h;
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

class ResidualUnit : public DynamicModule {
 public:
  ResidualUnit(int64_t in, int64_t out, int64_t stride, int subunits, int64_t kernel, bool last_conv_only, const BlockOptions& o) {
    subunits = std::max(1, subunits);
    int64_t ch = in, s = stride;
    for (int u = 0; u < subunits; ++u) {
      units_.add_unit(std::make_unique<Convolution>(ch, out, s, kernel, false, last_conv_only && u == subunits - 1, o));
      ch = out;
      s = 1;
    }
    if (stride != 1 || in != out) {
      const int64_t k = stride != 1 ? kernel : 1;
      residual_ = std::make_unique<Conv<3>>(in, out, std::vector<int64_t>{k},
                                            ConvOptions{.stride = {stride}, .padding = {(k - 1) / 2}}, o.bias);
    }
  }
  Tensor forward(const Tensor& x) override {
    const Tensor res = residual_ ? residual_->forward(x) : x;
    return units_.forward_add(x, res);
  }
  void visit_children(const ChildVisitor& visit) override {
    visit("conv", units_);
    if (residual_) visit("residual", *residual_);
  }

 private:
  class Units : public DynamicModule {
   public:
    void add_unit(std::unique_ptr<Convolution> u) { units_.push_back(std::move(u)); }
    Tensor forward(const Tensor& x) override { return forward_add(x, Tensor()); }
    // The units in turn, the last one adding the residual branch in its own final pass.
    Tensor forward_add(const Tensor& x, const Tensor& residual) {
      Tensor h = x;
      for (size_t i = 0; i + 1 < units_.size(); ++i) h = units_[i]->forward(h);
      return units_.back()->forward_add(h, residual);
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

class SkipConnection : public DynamicModule {
 public:
  explicit SkipConnection(std::unique_ptr<DynamicModule> submodule) : submodule_(std::move(submodule)) {}
  Tensor forward(const Tensor& x) override { return concat({x, submodule_->forward(x)}, -1); }
  void visit_children(const ChildVisitor& visit) override { visit("submodule", *submodule_); }

 private:
  std::unique_ptr<DynamicModule> submodule_;
};

}  // namespace monai
}  // namespace vox::nn::models
