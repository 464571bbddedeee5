#pragma once
// 3-D ResNet classifiers in MONAI's layout (monai.networks.nets.ResNet, after Hara et al.'s
// 3D-ResNets and MedicalNet), with MONAI's state_dict keys:
//   conv1 (k conv1_t_size, stride conv1_t_stride, no bias) -> bn1 -> relu -> maxpool (k3 s2 p1,
//   unless no_max_pool) -> layer1..layer4 -> global average pool -> fc
// layer_i is a sequence of blocks; its first block carries the stride (1 for layer1, else 2) and
// a "downsample" shortcut when the stride or the width changes:
//   shortcut B (MONAI's default): 1x1x1 conv (bias = bias_downsample) + batch norm;
//   shortcut A: stride-s subsampling padded with zero channels. As in MONAI, no gradient flows
//   through this shortcut (MONAI concatenates `out.data`).
// Blocks: basic (two 3x3x3 convs, expansion 1) or bottleneck (1x1x1, 3x3x3 strided, 1x1x1 to
// 4x the width). Weights are initialised as MONAI does: convs He-normal with fan_out, batch norms
// to (1, 0), the fc bias to 0.
#include <memory>

#include "vox/nn/dynamic.hpp"
#include "vox/nn/layers.hpp"

namespace vox::nn::models {

enum class ResNetBlockKind { basic, bottleneck };
enum class ResNetShortcut { A, B };

struct ResNetConfig {
  ResNetBlockKind block = ResNetBlockKind::basic;
  std::vector<int> layers{2, 2, 2, 2};
  std::vector<int64_t> block_inplanes{64, 128, 256, 512};
  int64_t n_input_channels = 3;
  int64_t conv1_t_size = 7;
  int64_t conv1_t_stride = 1;
  bool no_max_pool = false;
  ResNetShortcut shortcut = ResNetShortcut::B;
  double widen_factor = 1.0;
  int64_t num_classes = 400;
  bool feed_forward = true;  // false: return the pooled features [N, C]
  bool bias_downsample = true;
};

// MONAI's resnet10 ... resnet200: block kind and blocks per layer; the rest of `base` is kept.
inline ResNetConfig resnet_config(int depth, ResNetConfig base = {}) {
  struct Spec {
    int depth;
    ResNetBlockKind block;
    std::vector<int> layers;
  };
  const std::vector<Spec> specs{{10, ResNetBlockKind::basic, {1, 1, 1, 1}},       {18, ResNetBlockKind::basic, {2, 2, 2, 2}},
                                {34, ResNetBlockKind::basic, {3, 4, 6, 3}},       {50, ResNetBlockKind::bottleneck, {3, 4, 6, 3}},
                                {101, ResNetBlockKind::bottleneck, {3, 4, 23, 3}}, {152, ResNetBlockKind::bottleneck, {3, 8, 36, 3}},
                                {200, ResNetBlockKind::bottleneck, {3, 24, 36, 3}}};
  for (const Spec& s : specs)
    if (s.depth == depth) {
      base.block = s.block;
      base.layers = s.layers;
      return base;
    }
  fail("resnet_config", "no ResNet of depth ", depth, "; choose 10, 18, 34, 50, 101, 152 or 200");
}

namespace resnet {

inline void he_normal_fan_out(Tensor& weight) {  // weight [out, k..., in]: fan_out = out * kernel volume
  weight.detach().copy_from(init::he_normal(weight.shape(), weight.numel() / weight.size(-1)));
}

// The shortcut of a block's first layer when the stride or the width changes.
class Downsample : public DynamicModule {
 public:
  Downsample(int64_t in, int64_t out, int64_t stride, const ResNetConfig& c) : out_(out), stride_(stride) {
    if (c.shortcut == ResNetShortcut::B) {
      conv_ = std::make_unique<Conv<3>>(in, out, std::vector<int64_t>{1}, ConvOptions{.stride = {stride}}, c.bias_downsample);
      he_normal_fan_out(conv_->weight());
      bn_ = std::make_unique<BatchNorm<3>>(out);
    }
  }
  Tensor forward(const Tensor& x) override {
    if (conv_) return bn_->forward(conv_->forward(x));
    Tensor sub = x.detach();  // MONAI's shortcut A passes no gradient
    for (int64_t axis = 1; axis <= 3; ++axis) sub = slice(sub, axis, 0, sub.size(axis), stride_);
    return pad(sub, {{0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, out_ - sub.size(-1)}});
  }
  void visit_children(const ChildVisitor& visit) override {
    if (conv_) {
      visit("0", *conv_);
      visit("1", *bn_);
    }
  }

 private:
  int64_t out_, stride_;
  std::unique_ptr<Conv<3>> conv_;
  std::unique_ptr<BatchNorm<3>> bn_;
};

// A basic or bottleneck block: convs conv1..conv3 with batch norms bn1..bn3, then x + shortcut.
class Block : public DynamicModule {
 public:
  Block(int64_t in, int64_t planes, int64_t stride, std::unique_ptr<Downsample> downsample, ResNetBlockKind kind)
      : downsample_(std::move(downsample)) {
    auto add = [&](int64_t cin, int64_t cout, int64_t k, int64_t s) {
      convs_.push_back(std::make_unique<Conv<3>>(cin, cout, std::vector<int64_t>{k},
                                                 ConvOptions{.stride = {s}, .padding = {k / 2}}, false));
      he_normal_fan_out(convs_.back()->weight());
      norms_.push_back(std::make_unique<BatchNorm<3>>(cout));
    };
    if (kind == ResNetBlockKind::basic) {
      add(in, planes, 3, stride);
      add(planes, planes, 3, 1);
    } else {
      add(in, planes, 1, 1);
      add(planes, planes, 3, stride);
      add(planes, planes * 4, 1, 1);
    }
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (size_t i = 0; i < convs_.size(); ++i) {
      h = norms_[i]->forward(convs_[i]->forward(h));
      if (i + 1 < convs_.size()) h = relu(h);
    }
    return relu(add(h, downsample_ ? downsample_->forward(x) : x));
  }
  void visit_children(const ChildVisitor& visit) override {
    for (size_t i = 0; i < convs_.size(); ++i) {
      visit("conv" + std::to_string(i + 1), *convs_[i]);
      visit("bn" + std::to_string(i + 1), *norms_[i]);
    }
    if (downsample_) visit("downsample", *downsample_);
  }

 private:
  std::vector<std::unique_ptr<Conv<3>>> convs_;
  std::vector<std::unique_ptr<BatchNorm<3>>> norms_;
  std::unique_ptr<Downsample> downsample_;
};

}  // namespace resnet

class ResNet3D : public Module {
 public:
  explicit ResNet3D(ResNetConfig config = {}) : config_(std::move(config)) {
    const auto& c = config_;
    VOX_CHECK(c.layers.size() == 4 && c.block_inplanes.size() == 4, "ResNet3D", "needs 4 layers and 4 block_inplanes, got ",
              c.layers.size(), " and ", c.block_inplanes.size());
    VOX_CHECK(c.conv1_t_size >= 1 && c.conv1_t_stride >= 1 && c.widen_factor > 0, "ResNet3D",
              "conv1_t_size, conv1_t_stride and widen_factor must be positive");
    std::vector<int64_t> planes;
    for (int64_t p : c.block_inplanes) planes.push_back(static_cast<int64_t>(static_cast<double>(p) * c.widen_factor));
    const int64_t expansion = c.block == ResNetBlockKind::bottleneck ? 4 : 1;
    conv1_ = std::make_unique<Conv<3>>(c.n_input_channels, planes[0], std::vector<int64_t>{c.conv1_t_size},
                                       ConvOptions{.stride = {c.conv1_t_stride}, .padding = {c.conv1_t_size / 2}}, false);
    resnet::he_normal_fan_out(conv1_->weight());
    bn1_ = std::make_unique<BatchNorm<3>>(planes[0]);
    int64_t in = planes[0];
    for (size_t l = 0; l < 4; ++l) {
      VOX_CHECK(c.layers[l] >= 1, "ResNet3D", "layer", l + 1, " needs at least one block");
      const int64_t stride = l == 0 ? 1 : 2, width = planes[l] * expansion;
      for (int b = 0; b < c.layers[l]; ++b) {
        std::unique_ptr<resnet::Downsample> shortcut;
        if (b == 0 && (stride != 1 || in != width)) shortcut = std::make_unique<resnet::Downsample>(in, width, stride, c);
        layers_[l].add(std::make_unique<resnet::Block>(in, planes[l], b == 0 ? stride : 1, std::move(shortcut), c.block));
        in = width;
      }
    }
    if (c.feed_forward) {
      fc_ = std::make_unique<Linear>(in, c.num_classes);
      fc_->bias().detach().fill(0.0);
    }
  }

  // x [N, D, H, W, n_input_channels] -> logits [N, num_classes] (or features [N, C]).
  Tensor forward(const Tensor& x) {
    VOX_CHECK(x.rank() == 5 && x.size(-1) == config_.n_input_channels, "ResNet3D", "expects [N, D, H, W, ",
              config_.n_input_channels, "], got ", x.shape());
    Tensor h = relu(bn1_->forward(conv1_->forward(x)));
    if (!config_.no_max_pool) h = max_pool3d(h, {.kernel = {3}, .stride = {2}, .padding = {1}});
    for (auto& layer : layers_) h = layer.forward(h);
    h = reshape(adaptive_avg_pool3d(h, {1, 1, 1}), {h.size(0), h.size(-1)});
    return fc_ ? fc_->forward(h) : h;
  }
  void visit_children(const ChildVisitor& visit) override {
    visit("conv1", *conv1_);
    visit("bn1", *bn1_);
    for (size_t l = 0; l < 4; ++l) visit("layer" + std::to_string(l + 1), layers_[l]);
    if (fc_) visit("fc", *fc_);
  }
  const ResNetConfig& config() const { return config_; }

 private:
  ResNetConfig config_;
  std::unique_ptr<Conv<3>> conv1_;
  std::unique_ptr<BatchNorm<3>> bn1_;
  DynamicSequential layers_[4];
  std::unique_ptr<Linear> fc_;
};

}  // namespace vox::nn::models
