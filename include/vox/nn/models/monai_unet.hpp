#pragma once
// MONAI's UNet (monai.networks.nets.UNet) for 3-D inputs, built with the same module tree, so
// its state_dict keys and shapes are MONAI's and a MONAI state_dict loads directly:
//   model = [down, SkipConnection(submodule = next level, or the bottom), up]
//   down   = ResidualUnit(stride s, num_res_units subunits)   (a Convolution if 0 units)
//   bottom = ResidualUnit(stride 1)
//   up     = [Convolution(transposed, k3, stride s, output_padding s - 1), ResidualUnit(1 subunit)]
// (the blocks are in monai_blocks.hpp). The topmost up path ends in a bare conv. Skips
// concatenate [encoder, decoder] on channels. Activations are channels-last [N, D, H, W, C].
#include "vox/nn/models/monai_blocks.hpp"

namespace vox::nn::models {

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

class MonaiUNet : public Module {
 public:
  explicit MonaiUNet(MonaiUNetConfig config = {}) : config_(std::move(config)) {
    const auto& c = config_;
    monai::check_levels("MonaiUNet", c.channels, c.strides);
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
  monai::BlockOptions blocks() const {
    return {.norm = config_.norm, .act = monai::ActKind::prelu, .dropout = config_.dropout, .bias = config_.bias};
  }
  std::unique_ptr<DynamicModule> down_layer(int64_t in, int64_t out, int64_t stride) {
    const auto& c = config_;
    if (c.num_res_units > 0)
      return std::make_unique<monai::ResidualUnit>(in, out, stride, c.num_res_units, c.kernel_size, false, blocks());
    return std::make_unique<monai::Convolution>(in, out, stride, c.kernel_size, false, false, blocks());
  }
  std::unique_ptr<DynamicModule> up_layer(int64_t in, int64_t out, int64_t stride, bool is_top) {
    const auto& c = config_;
    auto conv = std::make_unique<monai::Convolution>(in, out, stride, c.up_kernel_size, true, is_top && c.num_res_units == 0,
                                                     blocks());
    if (c.num_res_units == 0) return conv;
    auto seq = std::make_unique<DynamicSequential>();
    seq->add(std::move(conv));
    seq->add(std::make_unique<monai::ResidualUnit>(out, out, 1, 1, c.kernel_size, is_top, blocks()));
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
