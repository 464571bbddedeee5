// INT8 layers on the GPU (kernels/cuda/conv_int8.cuh): each kind of quantized layer gives the
// CPU's bits (which are the integer reference's, test_quant), on odd shapes, strides, dilations,
// groups, a 2-D convolution, inputs beyond the calibrated range and a NaN; whole quantized
// networks (a MONAI U-Net, a ResNet3D with folded batch norms) on the GPU agree with their CPU
// INT8 selves. Label gpu: without a CUDA device the program says why and exits 77, which CTest
// reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include <vox/vox.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::testing;

namespace {

const Device gpu = Device::cuda(0);

Tensor random_input(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator gen(seed);
  return mul(randn(s, DType::f32, &gen), scalar(scale));
}

// x with a NaN and values far beyond the calibrated range [-2, 2] (they saturate at 0 and 255)
Tensor hostile(Tensor x) {
  float* v = x.data<float>();
  v[0] = std::numeric_limits<float>::quiet_NaN();
  v[1] = 1e6f, v[2] = -1e6f;
  return x;
}

void check_same_bits(const quant::QuantizedLayer& layer, const Tensor& x) {
  const Tensor cpu = layer.forward(x);
  const Tensor on_gpu = layer.forward(x.to(gpu));
  REQUIRE(on_gpu.device() == gpu);
  CHECK(on_gpu.shape() == cpu.shape());
  CHECK(on_gpu.to(Device::cpu()).to_vector<float>() == cpu.to_vector<float>());
}

double max_abs_difference(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.contiguous().to_vector<float>(), y = b.contiguous().to_vector<float>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(double(x[i]) - double(y[i])));
  return m;
}

template <class Options>
struct LayerCase {
  const char* name;
  Options options;
  Shape weight, input;
};

}  // namespace

TEST_CASE("quantized convolutions on the GPU give the CPU's bits") {
  const std::vector<LayerCase<ConvOptions>> cases{
      {"3^3 stride 2 padding 1, 6 -> 7", {.stride = {2}, .padding = {1}}, {7, 3, 3, 3, 6}, {2, 5, 6, 7, 6}},
      {"dilation 2, 2 groups of 3 -> 2", {.padding = {2}, .dilation = {2}, .groups = 2}, {4, 3, 3, 3, 3}, {1, 7, 5, 6, 6}},
      {"1^3, 13 -> 5", {}, {5, 1, 1, 1, 13}, {1, 4, 3, 5, 13}},
      {"one input channel, 3^3 -> 16", {.padding = {1}}, {16, 3, 3, 3, 1}, {1, 9, 8, 7, 1}},
      {"anisotropic 1x3x3, stride (1, 2, 2)", {.stride = {1, 2, 2}, .padding = {0, 1, 1}}, {8, 1, 3, 3, 5}, {1, 3, 9, 8, 5}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    quant::LayerSpec spec;
    spec.conv = c.options;
    const Tensor weight = random_input(c.weight, 1, 0.1), bias = random_input({c.weight[0]}, 2);
    const quant::QuantizedLayer layer(spec, quant::quantize_weight(weight, 0, 8, c.options.groups), bias, quant::activation_params(-2.0f, 2.0f));
    check_same_bits(layer, hostile(random_input(c.input, 3)));
  }
  // 2-D, without a bias
  quant::LayerSpec spec2;
  spec2.spatial = 2, spec2.conv = {.stride = {2}, .padding = {1}};
  const Tensor w2 = random_input({6, 3, 3, 5}, 4, 0.1);
  const quant::QuantizedLayer layer2(spec2, quant::quantize_weight(w2, 0, 8), Tensor(), quant::activation_params(-1.0f, 3.0f));
  check_same_bits(layer2, random_input({2, 11, 9, 5}, 5));
}

TEST_CASE("quantized transposed convolutions and linear layers on the GPU give the CPU's bits") {
  const std::vector<LayerCase<ConvTransposeOptions>> cases{
      {"2^3 stride 2, 12 -> 5", {.stride = {2}}, {12, 2, 2, 2, 5}, {1, 4, 5, 3, 12}},
      {"3^3 stride 2 padding 1 output padding 1", {.stride = {2}, .padding = {1}, .output_padding = {1}}, {12, 3, 3, 3, 5}, {2, 3, 4, 5, 12}},
      {"2 groups", {.stride = {2}, .padding = {1}, .groups = 2}, {6, 3, 3, 3, 2}, {1, 4, 3, 4, 6}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    quant::LayerSpec spec;
    spec.kind = quant::LayerKind::conv_transpose, spec.transpose = c.options;
    const Tensor weight = random_input(c.weight, 6, 0.1), bias = random_input({c.weight.back() * c.options.groups}, 7);
    const quant::QuantizedLayer layer(spec, quant::quantize_weight(weight, -1, 8, c.options.groups), bias, quant::activation_params(-2.0f, 2.0f));
    check_same_bits(layer, hostile(random_input(c.input, 8)));
  }
  const Tensor w = random_input({9, 13}, 9, 0.2), b = random_input({9}, 10);
  const quant::QuantizedLayer linear({.kind = quant::LayerKind::linear, .spatial = 0}, quant::quantize_weight(w, 0, 8), b,
                                     quant::activation_params(-3.0f, 3.0f));
  check_same_bits(linear, hostile(random_input({3, 5, 13}, 11)));
}

TEST_CASE("quantized networks on the GPU agree with their CPU INT8 selves") {
  NoGradGuard no_grad;
  for (const char* arch : {"monai-unet", "resnet3d-18"}) {
    CAPTURE(arch);
    manual_seed(3);
    const bool classify = std::string(arch) == "resnet3d-18";
    nn::models::AnyModel model = nn::models::make_model({.arch = arch, .classes = 3, .channels = classify ? std::vector<int64_t>{8, 16, 32, 64}
                                                                                                         : std::vector<int64_t>{8, 16, 32}});
    model.module->eval();
    const Tensor x = random_input({1, 24, 24, 24, 1}, 12);
    quant::Calibration calibration(*model.module);
    model.forward(x);
    const auto inputs = calibration.inputs();
    calibration.detach();
    quant::quantize(*model.module, inputs);
    const Tensor cpu = model.forward(x);
    model.module->to(gpu);
    const Tensor on_gpu = model.forward(x.to(gpu)).to(Device::cpu());
    // the INT8 layers give the same bits; the norms between them round differently on the GPU,
    // which may move a value across a quantization step: a step's worth at most, here and there
    CHECK(max_abs_difference(on_gpu, cpu) < 0.05 * (1 + max_abs_difference(cpu, zeros_like(cpu))));
  }
}

int main(int argc, char** argv) { return run_gpu_tests("test_int8_cuda", argc, argv); }
