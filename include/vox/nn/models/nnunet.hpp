#pragma once
// nnU-Net's plain conv U-Net (PlainConvUNet from dynamic_network_architectures, the network of
// nnU-Net v2's default plans), with its state_dict keys:
//   encoder.stages.s.0.convs.i  = conv (kernel k_s per axis, "same" padding; the first conv of
//                                 stage s carries stride s_s) -> instance norm (affine) ->
//                                 LeakyReLU(0.01); children "conv", "norm", "nonlin"
//   decoder.transpconvs.j       = transposed conv, kernel = stride = the stride of stage S-1-j
//   decoder.stages.j.convs.i    = as above, on [upsampled, skip] (skip from stage S-2-j)
//   decoder.seg_layers.j        = 1x1x1 conv with bias to num_classes; all are built, so that
//                                 weights load with or without deep supervision
// nnU-Net's checkpoints also hold aliases of the same tensors ("...all_modules.0." for
// "...conv.", "...all_modules.1." for "...norm.", and the whole encoder again under
// "decoder.encoder."); load_nnunet_state_dict() accepts them and nnunet_state_dict() writes them.
#include <map>
#include <memory>

#include "vox/nn/dynamic.hpp"
#include "vox/nn/layers.hpp"

namespace vox::nn::models {

struct PlainConvUNetConfig {
  int64_t input_channels = 1;
  int64_t num_classes = 2;
  std::vector<int64_t> features_per_stage{32, 64, 128, 256, 320, 320};
  std::vector<std::vector<int64_t>> kernel_sizes{{3, 3, 3}, {3, 3, 3}, {3, 3, 3}, {3, 3, 3}, {3, 3, 3}, {3, 3, 3}};
  std::vector<std::vector<int64_t>> strides{{1, 1, 1}, {2, 2, 2}, {2, 2, 2}, {2, 2, 2}, {2, 2, 2}, {2, 2, 2}};
  std::vector<int> n_conv_per_stage{2, 2, 2, 2, 2, 2};
  std::vector<int> n_conv_per_stage_decoder{2, 2, 2, 2, 2};
  bool conv_bias = true;
  bool deep_supervision = true;
  double negative_slope = 0.01;
};

namespace nnunet {

class ConvNormNonlin : public Module {
 public:
  ConvNormNonlin(int64_t in, int64_t out, const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
                 const PlainConvUNetConfig& c)
      : conv_(in, out, kernel, {.stride = stride, .padding = same_padding(kernel)}, c.conv_bias),
        norm_(out, true),
        nonlin_(c.negative_slope),
        negative_slope_(c.negative_slope) {}
  Tensor forward(const Tensor& x) { return norm_.forward_relu(conv_.forward(x), negative_slope_); }  // norm + LeakyReLU fused
  void visit_children(const ChildVisitor& visit) override {
    visit("conv", conv_);
    visit("norm", norm_);
    visit("nonlin", nonlin_);
  }

 private:
  static std::vector<int64_t> same_padding(const std::vector<int64_t>& kernel) {
    std::vector<int64_t> p;
    for (int64_t k : kernel) p.push_back((k - 1) / 2);
    return p;
  }
  Conv<3> conv_;
  InstanceNorm<3> norm_;
  LeakyReLU nonlin_;  // kept as the "nonlin" child; its slope runs in the fused norm
  double negative_slope_;
};

// StackedConvBlocks: "convs" = n conv blocks, the first with the stride.
class StackedConvs : public Module {
 public:
  StackedConvs(int n, int64_t in, int64_t out, const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
               const PlainConvUNetConfig& c) {
    VOX_CHECK(n >= 1, "PlainConvUNet", "every stage needs at least one conv, got ", n);
    for (int i = 0; i < n; ++i) convs_.push_back(ConvNormNonlin(i == 0 ? in : out, out, kernel, i == 0 ? stride : std::vector<int64_t>{1, 1, 1}, c));
  }
  Tensor forward(const Tensor& x) {
    Tensor h = x;
    for (size_t i = 0; i < convs_.size(); ++i) h = convs_[i].forward(h);
    return h;
  }
  void visit_children(const ChildVisitor& visit) override { visit("convs", convs_); }

 private:
  ModuleList<ConvNormNonlin> convs_;
};

}  // namespace nnunet

class PlainConvUNet : public Module {
 public:
  explicit PlainConvUNet(PlainConvUNetConfig config = {}) : config_(std::move(config)) {
    const auto& c = config_;
    const size_t stages = c.features_per_stage.size();
    VOX_CHECK(stages >= 2 && c.kernel_sizes.size() == stages && c.strides.size() == stages && c.n_conv_per_stage.size() == stages,
              "PlainConvUNet", "features_per_stage, kernel_sizes, strides and n_conv_per_stage need one entry per stage (",
              stages, "), got ", c.kernel_sizes.size(), ", ", c.strides.size(), " and ", c.n_conv_per_stage.size());
    VOX_CHECK(c.n_conv_per_stage_decoder.size() == stages - 1, "PlainConvUNet", "n_conv_per_stage_decoder needs ", stages - 1,
              " entries, got ", c.n_conv_per_stage_decoder.size());
    for (size_t s = 0; s < stages; ++s) {
      VOX_CHECK(c.kernel_sizes[s].size() == 3 && c.strides[s].size() == 3, "PlainConvUNet", "stage ", s,
                " needs a kernel size and a stride for each of the 3 axes");
      encoder_.stages.push_back({}).push_back(nnunet::StackedConvs(c.n_conv_per_stage[s],
                                                                   s == 0 ? c.input_channels : c.features_per_stage[s - 1],
                                                                   c.features_per_stage[s], c.kernel_sizes[s], c.strides[s], c));
    }
    for (size_t j = 0; j + 1 < stages; ++j) {
      const size_t below = stages - 1 - j, skip = below - 1;
      const int64_t fin = c.features_per_stage[below], fskip = c.features_per_stage[skip];
      decoder_.transpconvs.push_back(ConvTranspose<3>(fin, fskip, c.strides[below], {.stride = c.strides[below]}, c.conv_bias));
      decoder_.stages.push_back(nnunet::StackedConvs(c.n_conv_per_stage_decoder[j], 2 * fskip, fskip, c.kernel_sizes[skip], {1, 1, 1}, c));
      decoder_.seg_layers.push_back(Conv<3>(fskip, c.num_classes, {1}));
    }
  }

  // Segmentation logits at every decoder resolution, the full resolution first (one entry only
  // without deep supervision).
  std::vector<Tensor> forward_all(const Tensor& x) {
    VOX_CHECK(x.rank() == 5 && x.size(-1) == config_.input_channels, "PlainConvUNet", "expects [N, D, H, W, ",
              config_.input_channels, "], got ", x.shape());
    std::vector<Tensor> skips;
    Tensor h = x;
    for (size_t s = 0; s < encoder_.stages.size(); ++s) skips.push_back(h = encoder_.stages[s][0].forward(h));
    std::vector<Tensor> outputs;
    const size_t n = decoder_.stages.size();
    for (size_t j = 0; j < n; ++j) {
      const Tensor& skip = skips[skips.size() - 2 - j];
      const Tensor up = decoder_.transpconvs[j].forward(h);
      VOX_CHECK(up.shape() == skip.shape(), "PlainConvUNet", "decoder stage ", j, " upsamples to ", up.shape(),
                " but the skip is ", skip.shape(), "; each spatial size must be divisible by the product of the strides");
      h = decoder_.stages[j].forward(concat({up, skip}, -1));
      if (config_.deep_supervision || j + 1 == n) outputs.push_back(decoder_.seg_layers[j].forward(h));
    }
    std::reverse(outputs.begin(), outputs.end());
    return outputs;
  }
  // The full-resolution logits [N, D, H, W, num_classes].
  Tensor forward(const Tensor& x) { return forward_all(x).front(); }

  void visit_children(const ChildVisitor& visit) override {
    visit("encoder", encoder_);
    visit("decoder", decoder_);
  }
  const PlainConvUNetConfig& config() const { return config_; }

  // Loads an nnU-Net state_dict: alias keys are folded onto the canonical ones (an alias must
  // equal its canonical tensor when both are present), then loaded strictly.
  void load_nnunet_state_dict(const std::map<std::string, Tensor>& state) {
    std::map<std::string, Tensor> canonical;
    std::vector<std::pair<std::string, std::string>> aliases;  // alias key -> canonical key
    for (const auto& [key, t] : state) {
      const std::string c = canonical_key(key);
      if (c == key) canonical[key] = t;
      else aliases.push_back({key, c});
    }
    for (const auto& [alias, key] : aliases) {
      const auto it = canonical.find(key);
      if (it == canonical.end()) {
        canonical[key] = state.at(alias);
        continue;
      }
      VOX_CHECK(it->second.shape() == state.at(alias).shape() && it->second.dtype() == state.at(alias).dtype() &&
                    all_equal(it->second, state.at(alias)),
                "PlainConvUNet::load_nnunet_state_dict", "\"", alias, "\" should be the same tensor as \"", key, "\" but differs");
    }
    load_state_dict(canonical);
  }
  // The state_dict with nnU-Net's alias keys, as torch's strict load_state_dict expects.
  std::map<std::string, Tensor> nnunet_state_dict() const {
    std::map<std::string, Tensor> out;
    for (const auto& [key, t] : state_dict()) {
      std::vector<std::string> names{key};
      if (key.rfind("encoder.", 0) == 0) names.push_back("decoder." + key);  // the decoder's reference to the encoder
      for (const std::string& name : names) {
        out[name] = t;
        for (const auto& [canon, alias] : block_aliases()) {
          const size_t at = name.find(canon);
          if (at != std::string::npos) out[name.substr(0, at) + alias + name.substr(at + canon.size())] = t;
        }
      }
    }
    return out;
  }


 private:
  struct Encoder : Module {
    // Stage s is nn.Sequential(StackedConvBlocks): its convs sit under "stages.s.0".
    ModuleList<ModuleList<nnunet::StackedConvs>> stages;
    void visit_children(const ChildVisitor& visit) override { visit("stages", stages); }
  };
  struct Decoder : Module {
    ModuleList<nnunet::StackedConvs> stages;
    ModuleList<ConvTranspose<3>> transpconvs;
    ModuleList<Conv<3>> seg_layers;
    void visit_children(const ChildVisitor& visit) override {
      visit("stages", stages);
      visit("transpconvs", transpconvs);
      visit("seg_layers", seg_layers);
    }
  };

  static std::vector<std::pair<std::string, std::string>> block_aliases() {
    return {{".conv.", ".all_modules.0."}, {".norm.", ".all_modules.1."}};
  }
  static std::string canonical_key(std::string key) {
    if (key.rfind("decoder.encoder.", 0) == 0) key = key.substr(8);
    for (const auto& [canon, alias] : block_aliases()) {
      const size_t at = key.find(alias);
      if (at != std::string::npos) key = key.substr(0, at) + canon + key.substr(at + alias.size());
    }
    return key;
  }
  static bool all_equal(const Tensor& a, const Tensor& b) {
    const Tensor x = a.contiguous().to(DType::f64), y = b.contiguous().to(DType::f64);
    const double* p = x.data<double>();
    const double* q = y.data<double>();
    for (int64_t i = 0; i < x.numel(); ++i)
      if (p[i] != q[i]) return false;
    return true;
  }

  PlainConvUNetConfig config_;
  Encoder encoder_;
  Decoder decoder_;
};

}  // namespace vox::nn::models
