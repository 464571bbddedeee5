// INT8 quantization of layers and networks: the scheme's arithmetic, calibration, quantized
// layers against the integer reference, whole networks against their float selves, saving and
// loading, and malformed quantized state dicts.
#include <random>

#include "harness.hpp"
#include <vox/io/file.hpp>
#include <vox/io/json.hpp>
#include <vox/io/safetensors.hpp>

#include "kernels/reference/conv_int8.hpp"

using namespace vox;

namespace {

Tensor random_input(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator gen(seed);
  return mul(randn(s, DType::f32, &gen), scalar(scale));
}

double max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.contiguous().to_vector<float>(), y = b.contiguous().to_vector<float>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(double(x[i]) - double(y[i])));
  return m;
}
double max_abs(const Tensor& a) {
  double m = 0;
  for (float v : a.contiguous().to_vector<float>()) m = std::max(m, std::fabs(double(v)));
  return m;
}

}  // namespace

TEST_CASE("activation_params: ONNX Runtime's uint8 scale and zero point, the real 0 exactly representable") {
  const quant::ActivationParams p = quant::activation_params(-1.0f, 3.0f);
  CHECK(p.scale == static_cast<float>(4.0 / 255.0));
  CHECK(p.zero_point == 64);  // round(1 / (4 / 255)) = round(63.75)
  CHECK(kernels::reference::quantize_u8(0.0f, 1.0f / p.scale, p.zero_point) == p.zero_point);
  const quant::ActivationParams positive = quant::activation_params(2.0f, 5.0f);  // widened to [0, 5]
  CHECK(positive.zero_point == 0);
  CHECK(positive.scale == static_cast<float>(5.0 / 255.0));
  const quant::ActivationParams negative = quant::activation_params(-7.0f, -1.0f);  // widened to [-7, 0]
  CHECK(negative.zero_point == 255);
  const quant::ActivationParams empty_range = quant::activation_params(0.0f, 0.0f);
  CHECK(empty_range.scale == 1.0f);
  CHECK(empty_range.zero_point == 0);
  CHECK_THROWS_AS(quant::activation_params(1.0f, -1.0f), Error);
  CHECK_THROWS_AS(quant::activation_params(0.0f, std::numeric_limits<float>::infinity()), Error);
}

TEST_CASE("quantize_weight: symmetric per output channel, for convolutions and (grouped) transposed convolutions") {
  Tensor w = from_vector<float>({0.3f, -1.0f, 0.25f, 0.0f, 0.0f, 0.0f}, {2, 1, 1, 1, 3});
  const quant::QuantizedWeight q = quant::quantize_weight(w, 0, 8);
  CHECK(q.scale.to_vector<float>() == std::vector<float>{1.0f / 127.0f, 1.0f});  // a channel of zeros: scale 1
  CHECK(q.values.to_vector<int8_t>() == std::vector<int8_t>{38, -127, 32, 0, 0, 0});  // 38.1, 31.75
  const quant::QuantizedWeight q7 = quant::quantize_weight(w, 0, 7);
  CHECK(q7.values.to_vector<int8_t>() == std::vector<int8_t>{19, -63, 16, 0, 0, 0});  // 18.9, 15.75
  // transposed [in = 4, k = 1, out / groups = 2] in 2 groups: channel = group * 2 + lane
  Tensor t = from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {4, 1, 1, 1, 2});
  const quant::QuantizedWeight qt = quant::quantize_weight(t, -1, 8, 2);
  CHECK(qt.scale.to_vector<float>() == std::vector<float>{3.0f / 127, 4.0f / 127, 7.0f / 127, 8.0f / 127});
}

TEST_CASE("a quantized conv and transposed conv give the integer reference's bits") {
  for (const bool transposed : {false, true}) {
    CAPTURE(transposed);
    manual_seed(5);
    quant::LayerSpec spec;
    Tensor weight;
    if (transposed) {
      spec.kind = quant::LayerKind::conv_transpose;
      spec.transpose = {.stride = {2}, .padding = {1}, .output_padding = {1}};
      weight = random_input({12, 3, 3, 3, 5}, 1, 0.1);
    } else {
      spec.conv = {.stride = {2}, .padding = {1}};
      weight = random_input({7, 3, 3, 3, 6}, 1, 0.1);
    }
    const Tensor bias = random_input({transposed ? 5 : 7}, 2);
    const Tensor x = random_input({2, 5, 6, 7, transposed ? 12 : 6}, 3);
    const quant::ActivationParams in = quant::activation_params(min(x, {}, false).item<float>(), max(x, {}, false).item<float>());
    const quant::QuantizedWeight qw = quant::quantize_weight(weight, spec.channel_axis(), 8);
    const quant::QuantizedLayer layer(spec, qw, bias, in);
    const Tensor y = layer.forward(x);
    // the reference: quantize, then the integer convolution with the same epilogue
    std::vector<uint8_t> xq(static_cast<size_t>(x.numel()));
    const std::vector<float> xv = x.to_vector<float>();
    for (size_t i = 0; i < xq.size(); ++i) xq[i] = kernels::reference::quantize_u8(xv[i], 1.0f / in.scale, in.zero_point);
    std::vector<float> scale;
    for (float s : qw.scale.to_vector<float>()) scale.push_back(in.scale * s);
    kernels::reference::Int8Epilogue e;
    e.scale = scale.data();
    const std::vector<float> b = bias.to_vector<float>();
    e.bias = b.data();
    const kernels::ConvGeometry g = transposed ? detail::conv_transpose_geometry("test", 3, x.shape(), weight.shape(), spec.transpose)
                                               : detail::conv_geometry("test", 3, x.shape(), weight.shape(), spec.conv);
    std::vector<float> expected(static_cast<size_t>(y.numel()));
    if (transposed) kernels::reference::conv_transpose_int8(g, xq.data(), in.zero_point, qw.values.data<int8_t>(), e, expected.data());
    else kernels::reference::conv_forward_int8(g, xq.data(), in.zero_point, qw.values.data<int8_t>(), e, expected.data());
    CHECK(y.to_vector<float>() == expected);
    // and it approximates the float layer
    const Tensor reference = transposed ? conv_transpose(x, weight, bias, spec.transpose) : conv(x, weight, bias, spec.conv);
    CHECK(max_abs_difference(y, reference) < 0.05 * max_abs(reference));
  }
}

TEST_CASE("a quantized linear layer gives the integer reference's bits, for feature counts not a multiple of 4") {
  const Tensor w = random_input({9, 13}, 4, 0.2), b = random_input({9}, 5), x = random_input({3, 5, 13}, 6);
  const quant::ActivationParams in = quant::activation_params(-3.0f, 3.0f);
  const quant::QuantizedWeight qw = quant::quantize_weight(w, 0, 8);
  const quant::QuantizedLayer layer({.kind = quant::LayerKind::linear, .spatial = 0}, qw, b, in);
  const Tensor y = layer.forward(x);
  CHECK(y.shape() == Shape{3, 5, 9});
  std::vector<uint8_t> xq;
  for (float v : x.to_vector<float>()) xq.push_back(kernels::reference::quantize_u8(v, 1.0f / in.scale, in.zero_point));
  std::vector<float> scale;
  for (float s : qw.scale.to_vector<float>()) scale.push_back(in.scale * s);
  const std::vector<float> bv = b.to_vector<float>();
  kernels::reference::Int8Epilogue e;
  e.scale = scale.data(), e.bias = bv.data();
  std::vector<float> expected(static_cast<size_t>(y.numel()));
  kernels::reference::linear_int8(15, 9, 13, xq.data(), in.zero_point, qw.values.data<int8_t>(), e, expected.data());
  CHECK(y.to_vector<float>() == expected);
}

TEST_CASE("RangeObserver: min-max over batches; percentile and entropy within the values seen") {
  quant::RangeObserver minmax;
  const std::vector<float> a{1.0f, -2.0f, std::nanf(""), 0.5f}, b{3.0f, 0.0f};
  minmax.observe(a.data(), 4);
  minmax.observe(b.data(), 2);
  CHECK(minmax.range() == std::pair<float, float>{-2.0f, 3.0f});
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> v(1000000);
  for (auto& x : v) x = normal(rng);
  v[0] = 40.0f;  // an outlier that min-max keeps and the 99.999th percentile (5 values a side) drops
  quant::RangeObserver percentile({.method = quant::CalibrationMethod::percentile});
  percentile.observe(v.data(), static_cast<int64_t>(v.size()));
  const auto [plo, phi] = percentile.range();
  CHECK(phi < 10.0f);
  CHECK(plo > -10.0f);
  CHECK(percentile.histogram().size() == 2048);
  quant::RangeObserver entropy({.method = quant::CalibrationMethod::entropy, .bins = 2048});
  entropy.observe(v.data(), static_cast<int64_t>(v.size()));
  const auto [elo, ehi] = entropy.range();
  CHECK(ehi < 40.0f);
  CHECK(elo >= -40.0f);
  quant::RangeObserver none;
  CHECK_THROWS_AS(none.range(), Error);
  CHECK_THROWS_AS(quant::parse_calibration_method("kl"), Error);
}

TEST_CASE("calibration against ONNX Runtime's calibrators: the same ranges and u8 parameters, batch by batch") {
  const std::string dir = testing::fixture_dir("VOX_QUANT_DIR", "quant");
  const std::vector<char> text = io::read_file(dir + "/calibration.json");
  const json::Value fixture = json::parse(std::string_view(text.data(), text.size()), dir + "/calibration.json");
  MESSAGE("reference: onnxruntime ", fixture.find("onnxruntime")->as_string());
  const std::vector<char> raw = io::read_file(dir + "/batches.f32");
  std::vector<float> values(raw.size() / sizeof(float));
  std::memcpy(values.data(), raw.data(), values.size() * sizeof(float));
  std::vector<int64_t> sizes;
  for (const json::Value& n : fixture.find("batch_sizes")->as_array()) sizes.push_back(n.as_int64());
  auto from_bits = [](const json::Value& v) {
    const auto b = static_cast<uint32_t>(v.as_int64());
    float f;
    std::memcpy(&f, &b, sizeof(f));
    return f;
  };
  const std::map<std::string, quant::CalibrationOptions> cases{
      {"minmax", {.method = quant::CalibrationMethod::minmax}},
      {"percentile", {.method = quant::CalibrationMethod::percentile}},
      {"percentile_asymmetric", {.method = quant::CalibrationMethod::percentile, .symmetric = false}},
      {"entropy", {.method = quant::CalibrationMethod::entropy}},
      {"entropy_2048", {.method = quant::CalibrationMethod::entropy, .bins = 2048}}};
  const json::Value& expected = *fixture.find("cases");
  for (const auto& [name, options] : cases) {
    CAPTURE(name);
    quant::RangeObserver observer(options);
    int64_t offset = 0;
    for (int64_t n : sizes) {
      observer.observe(values.data() + offset, n);
      offset += n;
    }
    REQUIRE(offset == static_cast<int64_t>(values.size()));
    const json::Value& e = *expected.find(name);
    const auto [lo, hi] = observer.range();
    CHECK(lo == from_bits(*e.find("low")));
    CHECK(hi == from_bits(*e.find("high")));
    const quant::ActivationParams p = quant::activation_params(lo, hi);
    CHECK(p.scale == from_bits(*e.find("scale")));
    CHECK(p.zero_point == e.find("zero_point")->as_int64());
  }
}

TEST_CASE("a quantized MONAI U-Net: close to the float network, saved and loaded to the same outputs, malformed files refused") {
  manual_seed(7);
  nn::models::AnyModel model = nn::models::make_model({.arch = "monai-unet", .channels = {8, 16, 32}});
  model.module->eval();
  NoGradGuard no_grad;
  const Tensor x = random_input({1, 16, 16, 16, 1}, 9);
  const Tensor reference = model.forward(x);
  quant::Calibration calibration(*model.module);
  for (uint64_t s = 0; s < 4; ++s) model.forward(random_input({1, 16, 16, 16, 1}, 20 + s));
  model.forward(x);
  const auto inputs = calibration.inputs();
  calibration.detach();
  CHECK(inputs.size() == quant::quantizable_layers(*model.module).size());
  const quant::QuantizedLayers layers = quant::quantize(*model.module, inputs);
  // without VNNI the head (the transposed convolution into the 2 classes, the conv after it) stays
  // in float
  size_t narrow = 0;
  for (const auto& l : quant::quantizable_layers(*model.module)) narrow += quant::stays_float_for_speed(l);
  CHECK(narrow == (kernels::cpu::int8_kernel() == kernels::cpu::Int8Kernel::vnni ? 0 : 2));
  CHECK(layers.size() == inputs.size() - narrow);
  const Tensor y = model.forward(x);
  CHECK(y.shape() == reference.shape());
  // the class decision rarely changes; the logits stay close
  const Tensor agree = eq(argmax(y, -1), argmax(reference, -1)).to(DType::f32);
  CHECK(mean(agree).item<float>() > 0.97f);
  CHECK(max_abs_difference(y, reference) < 0.1 * max_abs(reference));

  const std::string dir = testing::fresh_dir("quant_unet");
  const std::map<std::string, Tensor> state = quant::quantized_state_dict(*model.module, layers);
  CHECK(state.count("model.0.conv.unit0.conv.weight_int8") == 1);
  CHECK(state.count("model.0.conv.unit0.conv.weight") == 0);
  CHECK(state.at("model.0.conv.unit0.conv.weight_int8").dtype() == DType::i8);
  io::save_safetensors(dir + "/int8.safetensors", state);
  nn::models::AnyModel loaded = nn::models::make_model({.arch = "monai-unet", .channels = {8, 16, 32}});
  loaded.module->eval();
  quant::load_quantized_state_dict(*loaded.module, io::load_safetensors(dir + "/int8.safetensors").tensors);
  CHECK(loaded.forward(x).to_vector<float>() == y.to_vector<float>());

  auto refused = [&](std::map<std::string, Tensor> bad, const std::string& needle) {
    nn::models::AnyModel fresh = nn::models::make_model({.arch = "monai-unet", .channels = {8, 16, 32}});
    try {
      quant::load_quantized_state_dict(*fresh.module, std::move(bad));
      FAIL("accepted a malformed state dict (", needle, ")");
    } catch (const Error& e) {
      CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, e.what());
    }
  };
  std::map<std::string, Tensor> missing = state;
  missing.erase("model.0.conv.unit0.conv.weight_scale");
  refused(missing, "model.0.conv.unit0.conv.weight_scale");
  std::map<std::string, Tensor> wrong_dtype = state;
  wrong_dtype["model.0.conv.unit0.conv.weight_int8"] = wrong_dtype["model.0.conv.unit0.conv.weight_int8"].to(DType::f32);
  refused(wrong_dtype, "model.0.conv.unit0.conv.weight_int8");
  std::map<std::string, Tensor> bad_scale = state;
  bad_scale["model.0.conv.unit0.conv.input_scale"] = full({1}, -1.0, DType::f32);
  refused(bad_scale, "input scale");
  std::map<std::string, Tensor> wrong_shape = state;
  wrong_shape["model.0.conv.unit0.conv.weight_scale"] = ones({3});
  refused(wrong_shape, "weight scale");
  refused(model.module->state_dict(), "not an INT8 model");
}

TEST_CASE("keep_float leaves the named layers in float; an unknown name is an error") {
  manual_seed(8);
  nn::models::AnyModel model = nn::models::make_model({.arch = "monai-unet", .channels = {8, 16}});
  model.module->eval();
  NoGradGuard no_grad;
  quant::Calibration calibration(*model.module);
  model.forward(random_input({1, 8, 8, 8, 1}, 1));
  const auto inputs = calibration.inputs();
  calibration.detach();
  const std::string first = quant::quantizable_layers(*model.module).front().name;
  const quant::QuantizedLayers layers = quant::quantize(*model.module, inputs, {.keep_float = {first}});
  size_t narrow = 0;
  for (const auto& l : quant::quantizable_layers(*model.module)) narrow += quant::stays_float_for_speed(l);
  CHECK(layers.count(first) == 0);
  CHECK(layers.size() == inputs.size() - 1 - narrow);
  quant::restore_float(*model.module);
  CHECK_THROWS_AS(quant::quantize(*model.module, inputs, {.keep_float = {"model.9.nothing"}}), Error);
}

TEST_CASE("a quantized ResNet3D (batch norm, a linear classifier) and MLPerf U-Net stay close to their float selves") {
  NoGradGuard no_grad;
  {
    manual_seed(11);
    nn::models::AnyModel model = nn::models::make_model({.arch = "resnet3d-18", .classes = 3, .channels = {8, 16, 32, 64}});
    model.module->eval();
    const Tensor x = random_input({2, 32, 32, 32, 1}, 12);
    const Tensor reference = softmax(model.forward(x), -1);
    quant::Calibration calibration(*model.module);
    for (uint64_t s = 0; s < 3; ++s) model.forward(random_input({2, 32, 32, 32, 1}, 30 + s));
    model.forward(x);
    const auto inputs = calibration.inputs();
    calibration.detach();
    const quant::QuantizedLayers layers = quant::quantize(*model.module, inputs);
    bool linear = false;
    for (const auto& [name, layer] : layers) linear = linear || layer->spec().kind == quant::LayerKind::linear;
    CHECK(linear);  // the classifier's fc runs in INT8 too
    const Tensor y = softmax(model.forward(x), -1);
    CHECK(max_abs_difference(y, reference) < 0.05);
  }
  {
    manual_seed(13);
    nn::models::AnyModel model = nn::models::make_model({.arch = "unet3d", .channels = {8, 16, 32}});
    model.module->eval();
    const Tensor x = random_input({1, 16, 16, 16, 1}, 14);
    const Tensor reference = model.forward(x);
    quant::Calibration calibration(*model.module, {.method = quant::CalibrationMethod::percentile});
    model.forward(x);
    const auto inputs = calibration.inputs();
    calibration.detach();
    quant::quantize(*model.module, inputs);
    const Tensor y = model.forward(x);
    const Tensor agree = eq(argmax(y, -1), argmax(reference, -1)).to(DType::f32);
    CHECK(mean(agree).item<float>() > 0.95f);
    CHECK(max_abs_difference(y, reference) < 0.1 * max_abs(reference));
  }
}

TEST_CASE("pruning MONAI's U-Net: the pruned network computes what the network with those channels zeroed does") {
  NoGradGuard no_grad;
  const nn::models::MonaiUNetConfig config{.channels = {8, 16, 32, 64}, .strides = {2, 2, 2}};
  const Tensor x = random_input({1, 16, 16, 16, 1}, 41);
  for (const auto& options : {quant::PruneOptions{.amount = 0.3, .global = true}, quant::PruneOptions{.amount = 0.5, .norm = quant::FilterNorm::l2},
                              quant::PruneOptions{.amount = 0.0}}) {
    CAPTURE(options.amount);
    CAPTURE(options.global);
    manual_seed(21);
    nn::models::MonaiUNet net(config);
    manual_seed(21);
    nn::models::MonaiUNet zeroed(config);
    net.eval(), zeroed.eval();
    const int64_t before = net.parameter_count();
    const std::vector<quant::ChannelGroup> groups = quant::channel_groups(net);
    CHECK(groups.size() == 3 * 2 + 2 + 2);  // per level a subunit and an output group, the bottom's two, two inner up paths
    const quant::PrunePlan plan = quant::plan_pruning(groups, options);
    int64_t total = 0, kept = 0;
    for (size_t i = 0; i < groups.size(); ++i) total += groups[i].channels, kept += static_cast<int64_t>(plan[i].size());
    if (options.amount == 0) CHECK(kept == total);
    else CHECK(kept < total);
    quant::zero_pruned_channels(quant::channel_groups(zeroed), plan);
    const Tensor expected = zeroed.forward(x);
    if (options.amount > 0) CHECK(max_abs_difference(net.forward(x), expected) > 1e-3);  // the zeroing mattered
    quant::apply_pruning(groups, plan);
    const Tensor y = net.forward(x);
    CHECK(y.shape() == expected.shape());
    CHECK(max_abs_difference(y, expected) < 1e-5);
    if (options.amount > 0) CHECK(net.parameter_count() < before);
    // the pruned network's state dict loads into a network pruned by the same plan
    manual_seed(22);
    nn::models::MonaiUNet again(config);
    quant::apply_pruning(quant::channel_groups(again), plan);
    again.load_state_dict(net.state_dict());
    again.eval();
    CHECK(again.forward(x).to_vector<float>() == y.to_vector<float>());
  }
  CHECK_THROWS_AS(quant::plan_pruning(quant::channel_groups(*std::make_unique<nn::models::MonaiUNet>(config)), {.amount = 1.0}), Error);
}

TEST_CASE("pruning the MLPerf U-Net (affine norms, transposed convs, [up-sampled, skip] concatenations) equals zeroing") {
  NoGradGuard no_grad;
  const nn::models::UNet3DConfig config{.filters = {8, 16, 32}};
  const Tensor x = random_input({1, 16, 16, 16, 1}, 43);
  manual_seed(31);
  nn::models::UNet3D net(config);
  manual_seed(31);
  nn::models::UNet3D zeroed(config);
  net.eval(), zeroed.eval();
  for (nn::models::UNet3D* m : {&net, &zeroed}) {  // the affine norms' defaults (1, 0) would hide a missed slice: the same values in both
    Generator gen(5);
    for (const auto& t : m->named_parameters())
      if (t.tensor->rank() == 1) t.tensor->detach().copy_from(randn(t.tensor->shape(), DType::f32, &gen));
  }
  const std::vector<quant::ChannelGroup> groups = quant::channel_groups(net);
  CHECK(groups.size() == 2 * 3 + 2 + 3 * 3);  // encoder blocks, bottleneck, per up-sampling block: its transposed conv and two convs
  const quant::PrunePlan plan = quant::plan_pruning(groups, {.amount = 0.4, .global = true});
  quant::zero_pruned_channels(quant::channel_groups(zeroed), plan);
  const Tensor expected = zeroed.forward(x);
  CHECK(max_abs_difference(net.forward(x), expected) > 1e-3);
  const int64_t before = net.parameter_count();
  quant::apply_pruning(groups, plan);
  const Tensor y = net.forward(x);
  CHECK(max_abs_difference(y, expected) < 1e-5);
  CHECK(net.parameter_count() < before);
}

TEST_CASE("pruning ResNet3D (batch norms, identity and convolution shortcuts, the classifier) equals zeroing") {
  NoGradGuard no_grad;
  for (const char* arch : {"resnet3d-18", "resnet3d-50"}) {
    CAPTURE(arch);
    const nn::models::ModelSpec config{.arch = arch, .classes = 3, .channels = {8, 16, 16, 24}};
    const Tensor x = random_input({2, 24, 24, 24, 1}, 47);
    manual_seed(33);
    nn::models::AnyModel net = nn::models::make_model(config);
    manual_seed(33);
    nn::models::AnyModel zeroed = nn::models::make_model(config);
    for (nn::models::AnyModel* m : {&net, &zeroed}) {  // batch norms' defaults (1, 0, 0, 1) would hide a missed slice
      m->module->eval();
      Generator gen(6);
      for (const auto& list : {m->module->named_parameters(), m->module->named_buffers()})
        for (const auto& t : list)
          if (t.tensor->rank() == 1 && t.tensor->dtype() == DType::f32)
            t.tensor->detach().copy_from(t.name.find("running_var") != std::string::npos ? rand(t.tensor->shape(), DType::f32, &gen) + 0.5
                                                                                         : randn(t.tensor->shape(), DType::f32, &gen));
    }
    const std::vector<quant::ChannelGroup> groups = quant::channel_groups(*net.module);
    // basic: per block one inner group, plus a summed group per downsample and the stem's; bottleneck: two inner groups per block
    CHECK(groups.size() == (std::string(arch) == "resnet3d-18" ? 8 + 4 : 16 * 2 + 5));
    const quant::PrunePlan plan = quant::plan_pruning(groups, {.amount = 0.4, .global = true});
    quant::zero_pruned_channels(quant::channel_groups(*zeroed.module), plan);
    const Tensor expected = zeroed.forward(x);
    CHECK(max_abs_difference(net.forward(x), expected) > 1e-3);
    const int64_t before = net.module->parameter_count();
    quant::apply_pruning(groups, plan);
    const Tensor y = net.forward(x);
    CHECK(y.shape() == expected.shape());
    CHECK(max_abs_difference(y, expected) < 1e-5);
    CHECK(net.module->parameter_count() < before);
  }
  nn::models::AnyModel shortcut_a = nn::models::make_model({.arch = "resnet3d-18", .classes = 2, .channels = {8, 16, 16, 24}});
  auto* resnet = dynamic_cast<nn::models::ResNet3D*>(shortcut_a.module.get());
  REQUIRE(resnet != nullptr);
  nn::models::ResNetConfig a_config = resnet->config();
  a_config.shortcut = nn::models::ResNetShortcut::A;
  nn::models::ResNet3D with_a(a_config);
  CHECK_THROWS_AS(quant::channel_groups(with_a), Error);
}

TEST_CASE("batch norms fold into the quantized convolutions before them: the arithmetic, a ResNet3D, saving and loading") {
  NoGradGuard no_grad;
  auto randomise_norms = [](nn::Module& m, uint64_t seed) {  // statistics and affine values far from the (0, 1) defaults
    Generator gen(seed);
    for (const auto& list : {m.named_parameters(), m.named_buffers()})
      for (const auto& t : list)
        if (t.name.find("bn") != std::string::npos || t.name.find("downsample.1") != std::string::npos) {
          if (t.tensor->dtype() != DType::f32) continue;
          const bool var = t.name.find("running_var") != std::string::npos;
          t.tensor->detach().copy_from(var ? rand(t.tensor->shape(), DType::f32, &gen) + 0.5 : randn(t.tensor->shape(), DType::f32, &gen) * 0.5);
        }
  };
  SUBCASE("conv(x, folded weight, folded bias) is batch_norm(conv(x)) in float") {
    nn::Conv<3> conv(5, 7, {3}, {.padding = {1}}, true);
    nn::BatchNorm<3> bn(7);
    Generator gen(3);
    for (Tensor* t : {&const_cast<Tensor&>(bn.weight()), &const_cast<Tensor&>(bn.bias()), &const_cast<Tensor&>(bn.running_mean())})
      t->detach().copy_from(randn({7}, DType::f32, &gen));
    const_cast<Tensor&>(bn.running_var()).detach().copy_from(rand({7}, DType::f32, &gen) + 0.1);
    bn.eval();
    const Tensor x = random_input({2, 6, 5, 7, 5}, 4);
    Tensor folded_bias;
    const Tensor w = quant::model_detail::fold_batch_norm(bn, conv.weight(), conv.bias(), 0, &folded_bias, false);
    const Tensor expected = bn.forward(conv.forward(x));
    CHECK(max_abs_difference(vox::conv(x, w, folded_bias, {.padding = {1}}), expected) < 1e-5 * (1 + max_abs(expected)));
    const Tensor back = quant::model_detail::fold_batch_norm(bn, w, Tensor(), 0, nullptr, true);
    CHECK(max_abs_difference(back, conv.weight()) < 1e-6);
  }
  SUBCASE("a ResNet3D: every batch norm folded, close to the float network, saved and loaded to the same outputs") {
    manual_seed(17);
    const nn::models::ModelSpec spec{.arch = "resnet3d-18", .classes = 3, .channels = {8, 16, 32, 64}};
    nn::models::AnyModel model = nn::models::make_model(spec);
    randomise_norms(*model.module, 9);
    const Tensor x = random_input({2, 24, 24, 24, 1}, 18);
    model.module->eval();
    const Tensor reference_logits = model.forward(x), reference = softmax(reference_logits, -1);
    const std::map<std::string, quant::BatchNormFold> folds = quant::batch_norm_folds(*model.module);
    CHECK(folds.size() == 1 + 8 * 2 + 3);  // the stem's, two per block, three downsample shortcuts'
    CHECK(folds.count("layer2.0.downsample.0") == 1);
    CHECK(folds.at("layer1.1.conv2").norm == "layer1.1.bn2");
    quant::Calibration calibration(*model.module);
    for (uint64_t s = 0; s < 3; ++s) model.forward(random_input({2, 24, 24, 24, 1}, 50 + s));
    model.forward(x);
    const auto inputs = calibration.inputs();
    calibration.detach();
    model.module->train();  // batch statistics are not fixed yet: nothing to fold
    CHECK_THROWS_WITH_AS(quant::quantize(*model.module, inputs), doctest::Contains("training mode"), Error);
    model.module->eval();
    quant::restore_float(*model.module);
    const quant::QuantizedLayers unfolded = quant::quantize(*model.module, inputs, {.fold_batch_norms = false});
    quant::restore_float(*model.module);
    const quant::QuantizedLayers layers = quant::quantize(*model.module, inputs);
    size_t folded = 0;
    for (const auto& [name, layer] : layers) folded += !layer->folded_batch_norm().empty();
    CHECK(folded == folds.size());
    for (const auto& [conv, fold] : folds) CHECK(fold.slot->intercepted());  // the norms pass their input through
    const Tensor y = softmax(model.forward(x), -1);
    CHECK(max_abs_difference(y, reference) < 0.05);
    // folding changed what the INT8 layers compute: scaled weights, a bias where the conv had none
    const quant::QuantizedLayer &with_norm = *layers.at("layer1.0.conv1"), &without = *unfolded.at("layer1.0.conv1");
    CHECK(with_norm.bias().defined());
    CHECK_FALSE(without.bias().defined());
    CHECK(with_norm.weight().scale.to_vector<float>() != without.weight().scale.to_vector<float>());
    // one folded layer alone in INT8 (the sensitivity report): its norm passes through, not applied twice
    quant::restore_float(*model.module);
    quant::install_alone(*model.module, quant::quantizable_layers(*model.module)[1], layers.at("layer1.0.conv1"));
    CHECK(folds.at("layer1.0.conv1").slot->intercepted());
    CHECK_FALSE(folds.at("layer1.0.conv2").slot->intercepted());
    const double alone = max_abs_difference(model.forward(x), reference_logits);
    quant::restore_float(*model.module);
    quant::install(quant::quantizable_layers(*model.module)[1], layers.at("layer1.0.conv1"));  // without: the norm twice
    const double twice = max_abs_difference(model.forward(x), reference_logits);
    // measured: 1.5e-5 alone, 1.2e-3 twice, the largest logit 0.55
    CHECK(alone < 0.05 * max_abs(reference_logits));
    CHECK(twice > 4 * alone);
    quant::restore_float(*model.module);
    for (const auto& [name, layer] : layers)
      for (const quant::QuantizableLayer& l : quant::quantizable_layers(*model.module))
        if (l.name == name) quant::install_alone(*model.module, l, layer);
    CHECK(softmax(model.forward(x), -1).to_vector<float>() == y.to_vector<float>());
    const std::map<std::string, Tensor> state = quant::quantized_state_dict(*model.module, layers);
    CHECK(state.count("layer1.0.conv1.folded_bias") == 1);
    manual_seed(99);
    nn::models::AnyModel fresh = nn::models::make_model(spec);
    fresh.module->eval();
    quant::load_quantized_state_dict(*fresh.module, state);
    CHECK(softmax(fresh.forward(x), -1).to_vector<float>() == y.to_vector<float>());
    // back in float, the unfolded dequantized weights with the loaded norms give the float network, within the weights' rounding
    quant::restore_float(*fresh.module);
    CHECK(max_abs_difference(softmax(fresh.forward(x), -1), reference) < 0.05);
    // a folded bias with no batch norm after its layer is refused, naming it
    std::map<std::string, Tensor> bad = state;
    bad["fc.folded_bias"] = zeros({3});
    nn::models::AnyModel other = nn::models::make_model(spec);
    CHECK_THROWS_WITH_AS(quant::load_quantized_state_dict(*other.module, bad), doctest::Contains("fc.folded_bias"), Error);
  }
}
