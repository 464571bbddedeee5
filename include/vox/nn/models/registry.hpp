#pragma once
// Models by name, for programs that pick the architecture at run time (vox train, infer, bench).
//
//   monai-unet       MONAI's UNet (2 residual units, PReLU, instance norm); channels = its widths
//   attention-unet   MONAI's AttentionUnet; channels = its widths
//   unet3d           the MLPerf 3D U-Net (KiTS19); channels = its filters
//   nnunet           nnU-Net v2's PlainConvUNet (2 convs per stage, no deep supervision);
//                    channels = features per stage
//   resnet3d-N       MONAI's ResNet (N = 10, 18, 34, 50, 101, 152, 200) for classification;
//                    channels = the four block widths (64, 128, 256, 512 in MONAI)
//
// Segmentation models take [N, D, H, W, C] and return logits [N, D, H, W, classes]; their spatial
// sizes must be multiples of `size_multiple`. Classifiers return logits [N, classes].
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "vox/nn/models/attention_unet.hpp"
#include "vox/nn/models/monai_unet.hpp"
#include "vox/nn/models/nnunet.hpp"
#include "vox/nn/models/resnet.hpp"
#include "vox/nn/models/unet3d.hpp"

namespace vox::nn::models {

enum class Task { segment, classify };

struct ModelSpec {
  std::string arch = "monai-unet";
  int64_t in_channels = 1;
  int64_t classes = 2;
  std::vector<int64_t> channels;  // empty: the architecture's default widths
};

// A model of any architecture behind one forward.
struct AnyModel {
  std::unique_ptr<Module> module;
  std::function<Tensor(const Tensor&)> forward;
  Task task = Task::segment;
  int64_t size_multiple = 1;
  std::vector<int64_t> channels;  // the widths used
};

inline std::vector<std::string> architecture_names() {
  return {"monai-unet", "attention-unet", "unet3d", "nnunet", "resnet3d-10", "resnet3d-18", "resnet3d-34", "resnet3d-50"};
}

inline std::vector<int64_t> default_channels(const std::string& arch) {
  if (arch == "monai-unet" || arch == "attention-unet") return {16, 32, 64, 128, 256};
  if (arch == "unet3d") return {32, 64, 128, 256, 320};
  if (arch == "nnunet") return {32, 64, 128, 256, 320, 320};
  if (arch.rfind("resnet3d-", 0) == 0) return {64, 128, 256, 512};
  return {};
}

inline Task task_of(const std::string& arch) { return arch.rfind("resnet3d-", 0) == 0 ? Task::classify : Task::segment; }

namespace registry_detail {

template <class Net>
AnyModel wrap(std::unique_ptr<Net> net, Task task, int64_t multiple, std::vector<int64_t> channels) {
  Net* raw = net.get();
  return AnyModel{std::move(net), [raw](const Tensor& x) { return raw->forward(x); }, task, multiple, std::move(channels)};
}

inline std::string known_list() {
  std::string s;
  for (const std::string& n : architecture_names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace registry_detail

inline AnyModel make_model(const ModelSpec& spec) {
  using registry_detail::wrap;
  const std::string& arch = spec.arch;
  const std::vector<int64_t> channels = spec.channels.empty() ? default_channels(arch) : spec.channels;
  VOX_CHECK(!channels.empty(), "make_model", "unknown architecture \"", arch, "\"; choose one of ", registry_detail::known_list());
  VOX_CHECK(spec.in_channels >= 1 && spec.classes >= 2, "make_model", "needs at least 1 input channel and 2 classes, got ",
            spec.in_channels, " and ", spec.classes);
  for (int64_t c : channels) VOX_CHECK(c >= 1, "make_model", "channel widths must be positive, got ", c);
  const int64_t levels = static_cast<int64_t>(channels.size());
  if (arch == "monai-unet" || arch == "attention-unet") {
    VOX_CHECK(levels >= 2, "make_model", arch, " needs at least 2 channel levels, got ", levels);
    const std::vector<int64_t> strides(channels.size() - 1, 2);
    if (arch == "monai-unet") {
      MonaiUNetConfig c;
      c.in_channels = spec.in_channels, c.out_channels = spec.classes, c.channels = channels, c.strides = strides;
      return wrap(std::make_unique<MonaiUNet>(c), Task::segment, int64_t{1} << (levels - 1), channels);
    }
    AttentionUNetConfig c;
    c.in_channels = spec.in_channels, c.out_channels = spec.classes, c.channels = channels, c.strides = strides;
    return wrap(std::make_unique<AttentionUNet>(c), Task::segment, int64_t{1} << (levels - 1), channels);
  }
  if (arch == "unet3d") {
    UNet3DConfig c;
    c.in_channels = spec.in_channels, c.n_class = spec.classes, c.filters = channels;
    return wrap(std::make_unique<UNet3D>(c), Task::segment, int64_t{1} << levels, channels);
  }
  if (arch == "nnunet") {
    VOX_CHECK(levels >= 2, "make_model", "nnunet needs at least 2 stages, got ", levels);
    PlainConvUNetConfig c;
    c.input_channels = spec.in_channels, c.num_classes = spec.classes, c.features_per_stage = channels;
    c.kernel_sizes.assign(channels.size(), {3, 3, 3});
    c.strides.assign(channels.size(), {2, 2, 2});
    c.strides[0] = {1, 1, 1};
    c.n_conv_per_stage.assign(channels.size(), 2);
    c.n_conv_per_stage_decoder.assign(channels.size() - 1, 2);
    c.deep_supervision = false;
    return wrap(std::make_unique<PlainConvUNet>(c), Task::segment, int64_t{1} << (levels - 1), channels);
  }
  if (task_of(arch) == Task::classify) {
    const std::string depth = arch.substr(9);
    VOX_CHECK(!depth.empty() && depth.find_first_not_of("0123456789") == std::string::npos, "make_model", "unknown architecture \"",
              arch, "\"; choose one of ", registry_detail::known_list());
    VOX_CHECK(levels == 4, "make_model", arch, " takes 4 channel widths (one per layer), got ", levels);
    ResNetConfig base;
    base.n_input_channels = spec.in_channels, base.num_classes = spec.classes, base.block_inplanes = channels;
    return wrap(std::make_unique<ResNet3D>(resnet_config(std::stoi(depth), base)), Task::classify, 1, channels);
  }
  fail("make_model", "unknown architecture \"", arch, "\"; choose one of ", registry_detail::known_list());
}

}  // namespace vox::nn::models
