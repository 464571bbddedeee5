#pragma once
// The MLPerf 3D U-Net (the KiTS19 image-segmentation reference), with its state_dict keys:
//   input_block  = conv1, conv2                      (filters[0], stride 1)
//   downsample.i = conv1 (stride 2), conv2           (filters[i] -> filters[i+1])
//   bottleneck   = conv1 (stride 2), conv2           (filters[-1] -> filters[-1])
//   upsample.j   = upsample_conv (transposed conv k2 s2 with bias), then [upsampled, skip]
//                  concatenated on channels, conv1, conv2
//   output       = conv.0: 1x1x1 with bias to n_class (conv is a Sequential of it and two
//                  Identity layers, as MLPerf's conv_block_factory builds it)
// Each conv1/conv2 is [3x3x3 conv without bias, instance norm (affine), ReLU], named "0", "1",
// "2". With the defaults (1 -> 3 classes, filters 32..320) it has 31,190,243 parameters. Every
// spatial size must be divisible by 2^len(filters) (32 with the defaults).
#include <memory>

#include "vox/nn/dynamic.hpp"
#include "vox/nn/layers.hpp"

namespace vox::nn::models {

struct UNet3DConfig {
  int64_t in_channels = 1;
  int64_t n_class = 3;
  std::vector<int64_t> filters{32, 64, 128, 256, 320};
};

namespace mlperf {

// [3x3x3 conv without bias, instance norm, ReLU], children "0", "1", "2" as in MLPerf's
// nn.Sequential; the norm and the ReLU run as one fused pass.
class ConvNormReLU : public Module {
 public:
  ConvNormReLU(int64_t in, int64_t out, int64_t stride)
      : conv_(in, out, {3}, {.stride = {stride}, .padding = {1}}, false), norm_(out, true) {}
  Tensor forward(const Tensor& x) { return norm_.forward_relu(conv_.forward(x)); }
  void visit_children(const ChildVisitor& visit) override {
    visit("0", conv_);
    visit("1", norm_);
    visit("2", relu_);
  }

 private:
  Conv<3> conv_;
  InstanceNorm<3> norm_;
  ReLU relu_;
};

// Two conv blocks, the first with the stride (MLPerf's InputBlock and DownsampleBlock).
class DoubleConv : public Module {
 public:
  DoubleConv(int64_t in, int64_t out, int64_t stride) : conv1_(in, out, stride), conv2_(out, out, 1) {}
  Tensor forward(const Tensor& x) { return conv2_.forward(conv1_.forward(x)); }
  void visit_children(const ChildVisitor& visit) override {
    visit("conv1", conv1_);
    visit("conv2", conv2_);
  }

 private:
  ConvNormReLU conv1_, conv2_;
};

class UpsampleBlock : public Module {
 public:
  UpsampleBlock(int64_t in, int64_t out)
      : upsample_conv_(ConvTranspose<3>(in, out, {2}, {.stride = {2}}, true), Identity(), Identity()),
        convs_(2 * out, out, 1) {}
  Tensor forward(const Tensor& x, const Tensor& skip) {
    return convs_.forward(concat({upsample_conv_.forward(x), skip}, -1));
  }
  void visit_children(const ChildVisitor& visit) override {
    visit("upsample_conv", upsample_conv_);
    convs_.visit_children(visit);  // conv1 and conv2 sit directly in the block
  }

 private:
  Sequential<ConvTranspose<3>, Identity, Identity> upsample_conv_;
  DoubleConv convs_;
};

class OutputLayer : public Module {
 public:
  OutputLayer(int64_t in, int64_t classes) : conv_(Conv<3>(in, classes, {1}), Identity(), Identity()) {}
  Tensor forward(const Tensor& x) { return conv_.forward(x); }
  void visit_children(const ChildVisitor& visit) override { visit("conv", conv_); }

 private:
  // MLPerf's conv_block_factory with neither norm nor activation: Sequential(conv, Identity,
  // Identity), so the keys are output.conv.0.weight and output.conv.0.bias
  Sequential<Conv<3>, Identity, Identity> conv_;
};

}  // namespace mlperf

class UNet3D : public Module {
 public:
  explicit UNet3D(UNet3DConfig config = {})
      : config_(std::move(config)),
        input_block_(config_.in_channels, first_filter(config_), 1),
        bottleneck_(config_.filters.back(), config_.filters.back(), 2),
        output_(config_.filters.front(), config_.n_class) {
    const auto& f = config_.filters;
    for (size_t i = 0; i + 1 < f.size(); ++i) downsample_.push_back(mlperf::DoubleConv(f[i], f[i + 1], 2));
    upsample_.push_back(mlperf::UpsampleBlock(f.back(), f.back()));
    for (size_t i = f.size() - 1; i >= 1; --i) upsample_.push_back(mlperf::UpsampleBlock(f[i], f[i - 1]));
  }

  Tensor forward(const Tensor& x) {
    VOX_CHECK(x.rank() == 5 && x.size(-1) == config_.in_channels, "UNet3D", "expects [N, D, H, W, ", config_.in_channels,
              "], got ", x.shape());
    const int64_t multiple = int64_t{1} << config_.filters.size();
    for (int64_t axis = 1; axis <= 3; ++axis)
      VOX_CHECK(x.size(axis) % multiple == 0, "UNet3D", "spatial sizes must be divisible by ", multiple, ", got ", x.shape());
    std::vector<Tensor> skips{input_block_.forward(x)};
    for (size_t i = 0; i < downsample_.size(); ++i) skips.push_back(downsample_[i].forward(skips.back()));
    Tensor h = bottleneck_.forward(skips.back());
    for (size_t j = 0; j < upsample_.size(); ++j) h = upsample_[j].forward(h, skips[skips.size() - 1 - j]);
    return output_.forward(h);
  }
  void visit_children(const ChildVisitor& visit) override {
    visit("input_block", input_block_);
    visit("downsample", downsample_);
    visit("bottleneck", bottleneck_);
    visit("upsample", upsample_);
    visit("output", output_);
  }
  const UNet3DConfig& config() const { return config_; }

 private:
  static int64_t first_filter(const UNet3DConfig& c) {
    VOX_CHECK(c.filters.size() >= 2, "UNet3D", "needs at least 2 filter levels, got ", c.filters.size());
    return c.filters.front();
  }

  UNet3DConfig config_;
  mlperf::DoubleConv input_block_;
  ModuleList<mlperf::DoubleConv> downsample_;
  mlperf::DoubleConv bottleneck_;
  ModuleList<mlperf::UpsampleBlock> upsample_;
  mlperf::OutputLayer output_;
};

}  // namespace vox::nn::models
