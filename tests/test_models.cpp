// Floor 5: the model zoo against the originals. Each network is built by vox, loaded with the
// original's state_dict (MONAI's AttentionUnet and ResNets, nnU-Net's PlainConvUNet, torch's
// MultiheadAttention, the MLPerf 3D U-Net), run in training mode on the same input, and must give
// the same outputs, the same parameter gradients of a fixed projection loss, and the same batch
// norm running statistics. Both sides run in f64: these networks' f32 gradients are
// ill-conditioned (norms over few voxels deep in the network move PyTorch's own f32 gradients by
// percents from the exact ones), so f64 is where a wrong formula cannot hide. The f32 kernels are
// tested op by op, and the MONAI U-Net test in test_nn.cpp runs the whole network in f32.
// Fixtures: tests/parity/make_model_fixtures.py, made at test time.
#include <cstdlib>
#include <functional>

#include <vox/io/safetensors.hpp>
#include <vox/nn.hpp>

#include "model_parity.hpp"

using namespace vox;
using namespace vox::testing;
using namespace vox::nn::models;
using doctest::Contains;

namespace {

// PyTorch's layout <-> vox's: channels move between axis 1 and the last axis for rank >= 3.
Tensor from_torch(const Tensor& t) { return t.rank() >= 3 ? from_channels_first(t) : t; }
Tensor to_torch(const Tensor& t) { return t.rank() >= 3 ? to_channels_first(t) : t; }

using Outputs = std::vector<Tensor>;

// Loads the fixture's state (with `load`), runs `run` in training mode, and compares outputs,
// parameter gradients and buffers. An f64 fixture (loss = sum_i mean(out_i * r_i)) is compared
// within 1e-9 of each tensor's largest element. An f32 one holds outputs only (compared within
// 1e-4 max abs) and the buffers after the pass (within 1e-4 of their largest element): the f32
// gradients of ReLU networks are not comparable across implementations. A ReLU whose input lies
// within rounding of zero switches sides between two correct f32 computations; measured in a
// ResNet-18 stem, one such voxel in 1.5 million moved the weight gradient behind it by 5e-5 in
// norm, and a few of them move the ResNet-18's gradients by 0.5% (vox f32 against torch f32 and
// against the exact f64 gradients alike). With the gates fixed, the same f32 chain agrees with f64
// to 6e-7. The MONAI U-Net (PReLU) is compared in f32 gradients too, in test_nn.cpp.
template <class Net>
void check_against_original(const std::string& name, Net& net, const std::function<Outputs(Net&, const Tensor&)>& run,
                            const std::function<void(Net&, const std::map<std::string, Tensor>&)>& load) {
  const io::Safetensors f = model_fixture("model_" + name);
  const bool exact = f.at("x").dtype() == DType::f64;
  const double out_tol = exact ? 1e-9 : 1e-4, buffer_tol = exact ? 1e-9 : 1e-4;
  const std::map<std::string, Tensor> state = fixture_state(f);
  CHECK(net.parameter_count() == std::stoll(f.metadata.at("parameters")));
  if (exact) net.to(DType::f64);
  load(net, state);
  net.train();
  const Outputs outputs = run(net, from_torch(f.at("x")));
  Tensor loss = scalar(0.0, f.at("x").dtype());
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& want = f.at("out" + std::to_string(i));
    const Tensor got = to_torch(outputs[i]);
    REQUIRE(got.shape() == want.shape());
    double err = relative_max_error(got, want);
    if (!exact) err *= max_abs(want);  // absolute in f32
    INFO(name << " output " << i << ": max error " << err);
    CHECK(err < out_tol);
    if (exact) loss = add(loss, mean(mul(outputs[i], from_torch(f.at("r" + std::to_string(i))))));
  }
  CHECK_FALSE(f.contains("out" + std::to_string(outputs.size())));  // as many outputs as the original
  if (exact) {
    loss.backward();
    check_gradients(net, f, 1e-9, name);
  }
  for (const auto& [key, t] : net.state_dict()) {
    if (!f.contains("after." + key)) continue;
    INFO(name << " " << key << " after the training pass");
    if (t.dtype() == DType::i64) CHECK(values(t) == values(f.at("after." + key)));
    else CHECK(relative_max_error(t, f.at("after." + key)) < buffer_tol);
  }
}

template <class Net>
Outputs single(Net& net, const Tensor& x) {
  return {net.forward(x)};
}
template <class Net>
void strict(Net& net, const std::map<std::string, Tensor>& state) {
  net.load_state_dict(state);
}

}  // namespace

TEST_CASE("MONAI's AttentionUnet: keys, outputs and gradients") {
  AttentionUNet net({.in_channels = 1, .out_channels = 2, .channels = {4, 8, 16, 32}, .strides = {2, 2, 2}});
  check_against_original<AttentionUNet>("attention_unet", net, single<AttentionUNet>, strict<AttentionUNet>);
  CHECK_THROWS_WITH_AS(net.forward(randn({1, 12, 16, 16, 1}, DType::f64)), Contains("divisible by the product of the strides"), Error);
}

TEST_CASE("MONAI's ResNets: parameter counts, and parity for basic, bottleneck and shortcut-A layouts") {
  for (int depth : {10, 18, 34, 50}) {
    ResNet3D net(resnet_config(depth, {.n_input_channels = 1, .num_classes = 2}));
    const std::string name = "count_resnet" + std::to_string(depth);
    INFO(name);
    CHECK(net.parameter_count() == std::stoll(model_fixture(name).metadata.at("parameters")));
  }
  SUBCASE("resnet18") {
    ResNet3D net(resnet_config(18, {.n_input_channels = 2, .widen_factor = 0.25, .num_classes = 3}));
    check_against_original<ResNet3D>("resnet18", net, single<ResNet3D>, strict<ResNet3D>);
  }
  SUBCASE("resnet18, full width, f32, forward") {
    ResNet3D net(resnet_config(18, {.n_input_channels = 1, .num_classes = 2}));
    check_against_original<ResNet3D>("resnet18_f32", net, single<ResNet3D>, strict<ResNet3D>);
  }
  SUBCASE("resnet50") {
    ResNet3D net(resnet_config(50, {.n_input_channels = 1, .conv1_t_size = 3, .conv1_t_stride = 2, .widen_factor = 0.125, .num_classes = 2}));
    check_against_original<ResNet3D>("resnet50", net, single<ResNet3D>, strict<ResNet3D>);
  }
  SUBCASE("resnet10, shortcut A, no max pool") {
    ResNet3D net(resnet_config(10, {.n_input_channels = 1, .no_max_pool = true, .shortcut = ResNetShortcut::A,
                                    .widen_factor = 0.25, .num_classes = 2}));
    check_against_original<ResNet3D>("resnet10_shortcut_a", net, single<ResNet3D>, strict<ResNet3D>);
  }
  CHECK_THROWS_WITH_AS(resnet_config(19), Contains("no ResNet of depth 19"), Error);
}

TEST_CASE("the MLPerf 3D U-Net: 31,190,243 parameters, outputs and gradients") {
  UNet3D f32;
  CHECK(f32.parameter_count() == 31190243);
  // the reference's keys (mlcommons/training, image_segmentation/pytorch/model/layers.py): its
  // OutputLayer and upsample_conv are conv_block_factory Sequentials, so the conv is ".0"
  const auto keys = f32.state_dict();
  for (const char* key : {"output.conv.0.weight", "output.conv.0.bias", "upsample.0.upsample_conv.0.weight",
                          "input_block.conv1.0.weight", "input_block.conv1.1.weight", "bottleneck.conv2.1.bias"})
    CHECK_MESSAGE(keys.count(key) == 1, key);
  check_against_original<UNet3D>("unet3d_f32", f32, single<UNet3D>, strict<UNet3D>);
  UNet3D net({.filters = {8, 16, 32, 64, 80}});  // the same five levels, narrower, for the f64 gradients
  check_against_original<UNet3D>("unet3d", net, single<UNet3D>, strict<UNet3D>);
  CHECK_THROWS_WITH_AS(net.forward(randn({1, 32, 48, 32, 1}, DType::f64)), Contains("divisible by 32"), Error);
  CHECK_THROWS_WITH_AS(UNet3D({.filters = {8}}), Contains("at least 2 filter levels"), Error);
}

TEST_CASE("nnU-Net's PlainConvUNet: anisotropic stages, deep supervision, nnU-Net's alias keys") {
  PlainConvUNetConfig config{.input_channels = 1,
                             .num_classes = 3,
                             .features_per_stage = {8, 16, 32, 64},
                             .kernel_sizes = {{1, 3, 3}, {3, 3, 3}, {3, 3, 3}, {3, 3, 3}},
                             .strides = {{1, 1, 1}, {1, 2, 2}, {2, 2, 2}, {2, 2, 2}},
                             .n_conv_per_stage = {2, 2, 2, 2},
                             .n_conv_per_stage_decoder = {1, 2, 2}};
  PlainConvUNet net(config);
  check_against_original<PlainConvUNet>(
      "nnunet_plain", net, [](PlainConvUNet& n, const Tensor& x) { return n.forward_all(x); },
      [](PlainConvUNet& n, const std::map<std::string, Tensor>& state) { n.load_nnunet_state_dict(state); });

  // nnunet_state_dict() has exactly the original's keys, aliases included.
  const io::Safetensors f = model_fixture("model_nnunet_plain");
  std::vector<std::string> want, got;
  for (const auto& [key, t] : f.tensors)
    if (key.rfind("state.", 0) == 0) want.push_back(key.substr(6));
  for (const auto& [key, t] : net.nnunet_state_dict()) got.push_back(key);
  std::sort(want.begin(), want.end());
  CHECK(got == want);

  // An alias that disagrees with its canonical tensor is refused.
  auto state = net.nnunet_state_dict();
  state["decoder.encoder.stages.0.0.convs.0.all_modules.0.bias"] = zeros({8});
  CHECK_THROWS_WITH_AS(net.load_nnunet_state_dict(state), Contains("should be the same tensor"), Error);

  config.deep_supervision = false;
  PlainConvUNet plain(config);
  CHECK(plain.forward_all(randn({1, 4, 8, 8, 1})).size() == 1);
  CHECK_THROWS_WITH_AS(plain.forward(randn({1, 4, 6, 8, 1})), Contains("divisible by the product of the strides"), Error);
}

TEST_CASE("multi-head self-attention over a volume's voxels matches torch.nn.MultiheadAttention") {
  nn::MultiheadSelfAttention net(12, 3);
  check_against_original<nn::MultiheadSelfAttention>("mhsa", net, single<nn::MultiheadSelfAttention>,
                                                     strict<nn::MultiheadSelfAttention>);
  CHECK_THROWS_WITH_AS(nn::MultiheadSelfAttention(10, 3), Contains("divisible by num_heads"), Error);
  CHECK_THROWS_WITH_AS(net.forward(randn({2, 5, 8}, DType::f64)), Contains("expects tokens"), Error);
  // Tokens [N, L, E] and the same voxels as a volume give the same result.
  const Tensor volume = randn({1, 2, 3, 2, 12}, DType::f64);
  VOX_CHECK_CLOSE(values(net.forward(volume)), values(net.forward(reshape(volume, {1, 12, 12}))), 0.0, 0.0, "tokens vs volume");
}

TEST_CASE("the attention gate scales the skip features by a per-voxel weight in (0, 1)") {
  nn::AttentionGate<3> gate(2, 4, 6);
  const Tensor g = randn({1, 3, 4, 5, 4}), x = randn({1, 3, 4, 5, 6});
  const Tensor y = gate.forward(g, x);
  REQUIRE(y.shape() == x.shape());
  const auto xv = values(x), yv = values(y);
  for (size_t v = 0; v < xv.size(); v += 6) {  // one factor per voxel, shared by its 6 channels
    const double factor = yv[v] / xv[v];
    CHECK(factor > 0.0);
    CHECK(factor < 1.0);
    for (size_t c = 1; c < 6; ++c) CHECK(yv[v + c] == doctest::Approx(factor * xv[v + c]).epsilon(1e-5));
  }
  CHECK_THROWS_WITH_AS(gate.forward(randn({1, 3, 4, 4, 4}), x), Contains("share batch and spatial sizes"), Error);
}
