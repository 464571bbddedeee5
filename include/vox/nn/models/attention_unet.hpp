#pragma once
// MONAI's AttentionUnet (monai.networks.nets.AttentionUnet, Oktay et al. 2018) for 3-D inputs,
// with MONAI's module tree and state_dict keys:
//   model = [head ConvBlock(in -> ch0), level 0, reduce (1x1x1 conv ch0 -> out)]
//   level i (channels c_i -> c_{i+1}, stride s_i) = AttentionLayer:
//     submodule = [ConvBlock(c_i -> c_{i+1}, stride s_i), level i+1]   (the deepest: the ConvBlock)
//     upconv    = transposed conv c_{i+1} -> c_i (kernel up_kernel_size, stride s_i) + BN + ReLU
//     attention = AttentionGate(f_int = c_i / 2, g = upconv output, x = the level's input)
//     merge     = conv [gated x, upconv output] (2 c_i) -> c_i + instance norm + PReLU
//   ConvBlock = two 3x3x3 convs, each + batch norm + ReLU; the first carries the stride.
// As in MONAI 1.2, the ConvBlocks always use 3x3x3 kernels.
#include <memory>

#include "vox/nn/attention.hpp"
#include "vox/nn/models/monai_blocks.hpp"

namespace vox::nn::models {

struct AttentionUNetConfig {
  int64_t in_channels = 1;
  int64_t out_channels = 2;
  std::vector<int64_t> channels{16, 32, 64, 128, 256};
  std::vector<int64_t> strides{2, 2, 2, 2};
  int64_t up_kernel_size = 3;
  double dropout = 0.0;
};

namespace monai {

class ConvBlock : public DynamicModule {
 public:
  ConvBlock(int64_t in, int64_t out, int64_t stride, double dropout) {
    const BlockOptions o{.norm = NormKind::batch, .act = ActKind::relu, .dropout = dropout};
    convs_.add(std::make_unique<Convolution>(in, out, stride, 3, false, false, o));
    convs_.add(std::make_unique<Convolution>(out, out, 1, 3, false, false, o));
  }
  Tensor forward(const Tensor& x) override { return convs_.forward(x); }
  void visit_children(const ChildVisitor& visit) override { visit("conv", convs_); }

 private:
  DynamicSequential convs_;
};

class AttentionLayer : public DynamicModule {
 public:
  AttentionLayer(int64_t in, int64_t out, std::unique_ptr<DynamicModule> submodule, int64_t up_kernel, int64_t stride,
                 double dropout)
      : attention_(in / 2, in, in),
        upconv_(out, in, stride, up_kernel, dropout),
        merge_(2 * in, in, 1, 3, false, false, {.dropout = dropout}),
        submodule_(std::move(submodule)) {}
  Tensor forward(const Tensor& x) override {
    const Tensor from_lower = upconv_.forward(submodule_->forward(x));
    VOX_CHECK(from_lower.shape() == x.shape(), "AttentionUNet",
              "the decoder's upsampled features ", from_lower.shape(), " do not match the skip ", x.shape(),
              "; each spatial size must be divisible by the product of the strides");
    return merge_.forward(concat({attention_.forward(from_lower, x), from_lower}, -1));
  }
  void visit_children(const ChildVisitor& visit) override {
    visit("attention", attention_);
    visit("upconv", upconv_);
    visit("merge", merge_);
    visit("submodule", *submodule_);
  }

 private:
  // MONAI's UpConv: the transposed Convolution under the name "up".
  class UpConv : public DynamicModule {
   public:
    UpConv(int64_t in, int64_t out, int64_t stride, int64_t kernel, double dropout)
        : up_(in, out, stride, kernel, true, false, {.norm = NormKind::batch, .act = ActKind::relu, .dropout = dropout}) {}
    Tensor forward(const Tensor& x) override { return up_.forward(x); }
    void visit_children(const ChildVisitor& visit) override { visit("up", up_); }

   private:
    Convolution up_;
  };
  AttentionGate<3> attention_;
  UpConv upconv_;
  Convolution merge_;
  std::unique_ptr<DynamicModule> submodule_;
};

}  // namespace monai

class AttentionUNet : public Module {
 public:
  explicit AttentionUNet(AttentionUNetConfig config = {}) : config_(std::move(config)) {
    const auto& c = config_;
    monai::check_levels("AttentionUNet", c.channels, c.strides);
    VOX_CHECK(c.up_kernel_size % 2 == 1, "AttentionUNet", "up_kernel_size must be odd, got ", c.up_kernel_size);
    model_.add(std::make_unique<monai::ConvBlock>(c.in_channels, c.channels[0], 1, c.dropout));
    model_.add(level(0));
    model_.add(std::make_unique<monai::Convolution>(c.channels[0], c.out_channels, 1, 1, false, true, monai::BlockOptions{}));
  }
  Tensor forward(const Tensor& x) {
    VOX_CHECK(x.rank() == 5 && x.size(-1) == config_.in_channels, "AttentionUNet", "expects [N, D, H, W, ", config_.in_channels,
              "], got ", x.shape());
    return model_.forward(x);
  }
  void visit_children(const ChildVisitor& visit) override { visit("model", model_); }
  const AttentionUNetConfig& config() const { return config_; }

 private:
  std::unique_ptr<DynamicModule> level(size_t i) {
    const auto& c = config_;
    const int64_t in = c.channels[i], out = c.channels[i + 1], s = c.strides[i];
    std::unique_ptr<DynamicModule> sub = std::make_unique<monai::ConvBlock>(in, out, s, c.dropout);
    if (i + 2 < c.channels.size()) {
      auto seq = std::make_unique<DynamicSequential>();
      seq->add(std::move(sub));
      seq->add(level(i + 1));
      sub = std::move(seq);
    }
    return std::make_unique<monai::AttentionLayer>(in, out, std::move(sub), c.up_kernel_size, s, c.dropout);
  }

  AttentionUNetConfig config_;
  DynamicSequential model_;
};

}  // namespace vox::nn::models
