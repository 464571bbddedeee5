// The CUDA backend: each op's CUDA path against the CPU kernels on the same inputs (odd shapes,
// broadcasting, non-contiguous views), gradients through the tape on the GPU against the CPU's,
// and the caching allocator's accounting. Without a CUDA device the program says why and exits
// 77, which CTest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <functional>

#include <vox/data/synthetic.hpp>
#include <vox/io/safetensors.hpp>
#include <vox/train/trainer.hpp>
#include <vox/vox.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::testing;
using doctest::Contains;

namespace {
const Device gpu = Device::cuda(0);

// CPU and GPU runs of `f` on the same inputs: outputs and input gradients must agree.
void check_op(const std::string& name, const std::vector<Tensor>& inputs, const std::function<Tensor(const std::vector<Tensor>&)>& f,
              double rtol, double atol, const std::vector<DType>& dtypes = {DType::f64, DType::f32}) {
  for (DType dtype : dtypes) {
    std::vector<Tensor> cpu, dev;
    for (const Tensor& t : inputs) {
      cpu.push_back(t.to(dtype).detach().set_requires_grad());
      dev.push_back(t.to(dtype).to(gpu).detach().set_requires_grad());
    }
    const Tensor y_cpu = f(cpu), y_dev = f(dev);
    REQUIRE(y_dev.device() == gpu);
    const double scale = dtype == DType::f64 ? 1e-6 : 1.0;  // f64 must agree far closer than f32
    VOX_CHECK_CLOSE(values(y_dev.to(Device::cpu())), values(y_cpu), atol * scale, rtol * scale, name << " forward, " << dtype_name(dtype));
    const Tensor r = randn(y_cpu.shape(), dtype);
    sum(mul(y_cpu, r)).backward();
    sum(mul(y_dev, r.to(gpu))).backward();
    for (size_t i = 0; i < inputs.size(); ++i) {
      REQUIRE(dev[i].grad().defined());
      CHECK(dev[i].grad().device() == gpu);
      VOX_CHECK_CLOSE(values(dev[i].grad().to(Device::cpu())), values(cpu[i].grad()), atol * scale, rtol * scale,
                      name << " gradient " << i << ", " << dtype_name(dtype));
    }
  }
}

// Runs `body` with the CUDA backend's convolution settings changed by `change`, restoring them.
void with_conv_settings(const std::function<void(ConvSettings&)>& change, const std::function<void()>& body) {
  auto& backend = cuda_backend("test");
  const ConvSettings saved = backend.conv_settings();
  ConvSettings s = saved;
  change(s);
  backend.set_conv_settings(s);
  try {
    body();
  } catch (...) {
    backend.set_conv_settings(saved);
    throw;
  }
  backend.set_conv_settings(saved);
}

Tensor scaled_randn(const Shape& shape, double scale) { return mul(randn(shape), scalar(scale)); }

// f(inputs) computed on the GPU, differentiable from host f64 inputs (for gradcheck).
std::function<Tensor(const std::vector<Tensor>&)> through_gpu(std::function<Tensor(const std::vector<Tensor>&)> f) {
  return [f](const std::vector<Tensor>& inputs) {
    std::vector<Tensor> moved;
    for (const Tensor& t : inputs) moved.push_back(to_device(t, gpu));
    return to_device(f(moved), Device::cpu());
  };
}

std::vector<Tensor> f64_leaves(const std::vector<Tensor>& inputs) {
  std::vector<Tensor> out;
  for (const Tensor& t : inputs) out.push_back(t.to(DType::f64).detach().set_requires_grad());
  return out;
}

// The convolution shapes every engine is checked on: odd sizes, padding, stride 2, dilation,
// a non-cubic kernel, groups, 1x1x1, 2-D, and transposed convolutions with output_padding.
void check_convolutions(const std::string& engine) {
  check_op(engine + " conv3d 3x3x3", {randn({2, 5, 6, 7, 3}), scaled_randn({4, 3, 3, 3, 3}, 0.3), randn({4})},
           [](auto& v) { return conv(v[0], v[1], v[2], {.padding = {1}}); }, 1e-4, 1e-4);
  check_op(engine + " strided", {randn({1, 9, 8, 7, 2}), scaled_randn({5, 3, 3, 3, 2}, 0.3)},
           [](auto& v) { return conv(v[0], v[1], Tensor(), {.stride = {2}, .padding = {1}}); }, 1e-4, 1e-4);
  check_op(engine + " dilated, non-cubic", {randn({1, 7, 6, 9, 4}), scaled_randn({3, 3, 1, 2, 4}, 0.3)},
           [](auto& v) { return conv(v[0], v[1], Tensor(), {.padding = {2, 0, 1}, .dilation = {2, 1, 2}}); }, 1e-4, 1e-4);
  check_op(engine + " groups", {randn({1, 6, 5, 4, 4}), scaled_randn({6, 3, 3, 3, 2}, 0.3), randn({6})},
           [](auto& v) { return conv(v[0], v[1], v[2], {.padding = {1}, .groups = 2}); }, 1e-4, 1e-4);
  check_op(engine + " 1x1x1", {randn({2, 4, 4, 4, 16}), scaled_randn({8, 1, 1, 1, 16}, 0.3)},
           [](auto& v) { return conv(v[0], v[1], Tensor(), {}); }, 1e-4, 1e-4);
  check_op(engine + " 2-D", {randn({2, 9, 9, 3}), scaled_randn({4, 3, 3, 3}, 0.3), randn({4})},
           [](auto& v) { return conv(v[0], v[1], v[2], {.padding = {1}}); }, 1e-4, 1e-4);
  check_op(engine + " transposed, stride 2", {randn({1, 4, 5, 3, 6}), scaled_randn({6, 2, 2, 2, 4}, 0.3), randn({4})},
           [](auto& v) { return conv_transpose(v[0], v[1], v[2], {.stride = {2}}); }, 1e-4, 1e-4);
  check_op(engine + " transposed, output_padding", {randn({1, 3, 4, 5, 4}), scaled_randn({4, 3, 3, 3, 5}, 0.3)},
           [](auto& v) { return conv_transpose(v[0], v[1], Tensor(), {.stride = {2}, .padding = {1}, .output_padding = {1}}); },
           1e-4, 1e-4);
}
}  // namespace

TEST_CASE("convolutions on vox's implicit GEMM match the CPU, forward and both gradients") {
  with_conv_settings([](ConvSettings& s) { s.engine = ConvEngine::implicit_gemm; }, [] {
    check_convolutions("implicit GEMM");
    auto& backend = cuda_backend("test");
    CHECK(backend.last_conv_engine(ConvPass::forward) == "implicit_gemm");
    CHECK(backend.last_conv_engine(ConvPass::backward_data) == "implicit_gemm");
    CHECK(backend.last_conv_engine(ConvPass::backward_weight) == "implicit_gemm");
    // a weight gradient over many positions: split over blocks, then summed in order
    check_op("implicit GEMM, split-K weight gradient", {randn({2, 24, 24, 24, 8}), scaled_randn({8, 3, 3, 3, 8}, 0.2)},
             [](auto& v) { return conv(v[0], v[1], Tensor(), {.padding = {1}}); }, 1e-4, 1e-3);
  });
}

TEST_CASE("convolutions through cuDNN match the CPU, and f32 runs on cuDNN by default") {
  with_conv_settings([](ConvSettings& s) { s.engine = ConvEngine::automatic; }, [] {
    check_convolutions("automatic");
    auto& backend = cuda_backend("test");
    const Tensor x = randn({1, 8, 8, 8, 16}).to(gpu), w = scaled_randn({16, 3, 3, 3, 16}, 0.2).to(gpu);
    const Tensor y = conv(x, w, {}, {.padding = {1}});
    const std::string engine = backend.last_conv_engine(ConvPass::forward);
    INFO("engine: " << engine);
    CHECK(engine.rfind("cudnn:", 0) == 0);
    VOX_CHECK_CLOSE(values(y.to(Device::cpu())), values(conv(x.to(Device::cpu()), w.to(Device::cpu()), {}, {.padding = {1}})), 1e-4,
                    1e-4, "cuDNN forward");
  });
  with_conv_settings([](ConvSettings& s) { s.engine = ConvEngine::cudnn; s.autotune = false; }, [] {
    check_op("cuDNN only, heuristic plan", {randn({1, 6, 7, 5, 8}), scaled_randn({8, 3, 3, 3, 8}, 0.3), randn({8})},
             [](auto& v) { return conv(v[0], v[1], v[2], {.padding = {1}}); }, 1e-4, 1e-4, {DType::f32});
    CHECK(cuda_backend("test").last_conv_engine(ConvPass::backward_weight).rfind("cudnn:", 0) == 0);
  });
}

TEST_CASE("f16 and bf16 convolutions run natively on the GPU, accumulating in f32, and match the CPU's") {
  // The CPU computes 16-bit convolutions in f32 and rounds; the GPU accumulates in f32 on cuDNN or
  // tensor cores and rounds once. They differ by the rounding of the 16-bit result and of each
  // gradient step: a few units in the last place (f16: 2^-11 relative, bf16: 2^-8).
  for (ConvEngine engine : {ConvEngine::implicit_gemm, ConvEngine::automatic})
    with_conv_settings([engine](ConvSettings& s) { s.engine = engine; }, [&] {
      const std::string name = engine == ConvEngine::implicit_gemm ? "tensor cores" : "automatic";
      for (const auto& [dtype, tolerance] : {std::pair{DType::f16, 1e-2}, std::pair{DType::bf16, 4e-2}}) {
        check_op(name + " 16-bit conv3d", {randn({2, 5, 6, 7, 8}), scaled_randn({16, 3, 3, 3, 8}, 0.2), randn({16})},
                 [](auto& v) { return conv(v[0], v[1], v[2], {.padding = {1}}); }, tolerance, tolerance, {dtype});
        check_op(name + " 16-bit odd channels, stride 2", {randn({1, 7, 9, 5, 3}), scaled_randn({5, 3, 3, 3, 3}, 0.3)},
                 [](auto& v) { return conv(v[0], v[1], Tensor(), {.stride = {2}, .padding = {1}}); }, tolerance, tolerance,
                 {dtype});
        check_op(name + " 16-bit transposed", {randn({1, 4, 5, 3, 8}), scaled_randn({8, 2, 2, 2, 4}, 0.3), randn({4})},
                 [](auto& v) { return conv_transpose(v[0], v[1], v[2], {.stride = {2}}); }, tolerance, tolerance, {dtype});
        // a long weight-gradient sum: split over blocks, summed in f32, rounded once
        check_op(name + " 16-bit split-K", {mul(randn({2, 16, 16, 16, 8}), scalar(0.25)), scaled_randn({8, 1, 1, 1, 8}, 0.3)},
                 [](auto& v) { return conv(v[0], v[1], Tensor(), {}); }, tolerance, tolerance, {dtype});
      }
    });
  with_conv_settings([](ConvSettings& s) { s.engine = ConvEngine::implicit_gemm; }, [] {
    (void)conv(randn({1, 4, 4, 4, 8}).to(DType::f16).to(gpu), randn({8, 3, 3, 3, 8}).to(DType::f16).to(gpu), {}, {.padding = {1}});
    CHECK(cuda_backend("test").last_conv_engine(ConvPass::forward) == "implicit_gemm");
  });
}

TEST_CASE("f64 gradient checks through the GPU's convolution, norms and softmax") {
  for (ConvEngine engine : {ConvEngine::implicit_gemm, ConvEngine::automatic})
    with_conv_settings([engine](ConvSettings& s) { s.engine = engine; }, [] {
      const auto r = gradcheck(through_gpu([](auto& v) { return conv(v[0], v[1], v[2], {.stride = {2}, .padding = {1}}); }),
                               f64_leaves({randn({1, 5, 4, 5, 2}), scaled_randn({3, 3, 3, 3, 2}, 0.3), randn({3})}));
      CHECK_MESSAGE(r.ok, r.detail);
      const auto t = gradcheck(through_gpu([](auto& v) { return conv_transpose(v[0], v[1], v[2], {.stride = {2}}); }),
                               f64_leaves({randn({1, 3, 2, 3, 3}), scaled_randn({3, 2, 2, 2, 2}, 0.3), randn({2})}));
      CHECK_MESSAGE(t.ok, t.detail);
    });
  const auto n = gradcheck(through_gpu([](auto& v) { return instance_norm_prelu_add(v[0], v[1], v[2], v[3], v[4], 1e-5); }),
                           f64_leaves({randn({2, 3, 4, 5, 3}), randn({3}), randn({3}), mul(rand({3}), scalar(0.5)),
                                       randn({2, 3, 4, 5, 3})}));
  CHECK_MESSAGE(n.ok, n.detail);
  const auto g = gradcheck(through_gpu([](auto& v) { return group_norm(v[0], 2, v[1], v[2], 1e-5); }),
                           f64_leaves({randn({2, 3, 3, 4, 6}), randn({6}), randn({6})}));
  CHECK_MESSAGE(g.ok, g.detail);
  const auto s = gradcheck(through_gpu([](auto& v) { return log_softmax(v[0], 1); }), f64_leaves({randn({3, 5, 4})}));
  CHECK_MESSAGE(s.ok, s.detail);
}

TEST_CASE("norms on the GPU match the CPU: instance, group, layer and batch norm, fused with PReLU and a residual") {
  const Tensor x = randn({2, 5, 4, 3, 6}), gamma = randn({6}), beta = randn({6});
  const Tensor slope = mul(rand({6}), scalar(0.5)), one_slope = full({1}, 0.2);
  check_op("instance_norm", {x, gamma, beta}, [](auto& v) { return instance_norm(v[0], v[1], v[2], 1e-5); }, 1e-4, 1e-4);
  check_op("instance_norm, no affine", {x}, [](auto& v) { return instance_norm(v[0], {}, {}, 1e-5); }, 1e-4, 1e-4);
  check_op("instance_norm_prelu, per channel", {x, gamma, beta, slope},
           [](auto& v) { return instance_norm_prelu(v[0], v[1], v[2], v[3], 1e-5); }, 1e-4, 1e-4);
  check_op("instance_norm_prelu, one slope", {x, gamma, beta, one_slope},
           [](auto& v) { return instance_norm_prelu(v[0], v[1], v[2], v[3], 1e-5); }, 1e-4, 1e-4);
  check_op("instance_norm_prelu_add", {x, gamma, beta, slope, randn(x.shape())},
           [](auto& v) { return instance_norm_prelu_add(v[0], v[1], v[2], v[3], v[4], 1e-5); }, 1e-4, 1e-4);
  check_op("group_norm", {x, gamma, beta}, [](auto& v) { return group_norm(v[0], 3, v[1], v[2], 1e-5); }, 1e-4, 1e-4);
  check_op("layer_norm", {randn({7, 3, 40}), randn({3, 40}), randn({3, 40})},
           [](auto& v) { return layer_norm(v[0], 2, v[1], v[2], 1e-5); }, 1e-4, 1e-4);
  // a large volume: statistics split over hundreds of chunks, then merged (Welford)
  check_op("instance_norm, many chunks", {add(mul(randn({1, 40, 40, 40, 8}), scalar(3.0)), scalar(10.0)), randn({8}), randn({8})},
           [](auto& v) { return instance_norm(v[0], v[1], v[2], 1e-5); }, 1e-3, 1e-3);
  // batch norm, training (running statistics updated like the CPU's) and eval
  for (bool training : {true, false}) {
    const Tensor rm_cpu = randn({6}), rv_cpu = add(rand({6}), scalar(0.5));
    const Tensor rm_gpu = rm_cpu.clone().to(gpu), rv_gpu = rv_cpu.clone().to(gpu);
    const Tensor y_cpu = batch_norm(x, rm_cpu, rv_cpu, gamma, beta, training, 0.1, 1e-5);
    const Tensor y_gpu = batch_norm(x.to(gpu), rm_gpu, rv_gpu, gamma.to(gpu), beta.to(gpu), training, 0.1, 1e-5);
    VOX_CHECK_CLOSE(values(y_gpu.to(Device::cpu())), values(y_cpu), 1e-4, 1e-4, "batch_norm, training " << training);
    VOX_CHECK_CLOSE(values(rm_gpu.to(Device::cpu())), values(rm_cpu), 1e-5, 1e-5, "running mean");
    VOX_CHECK_CLOSE(values(rv_gpu.to(Device::cpu())), values(rv_cpu), 1e-4, 1e-4, "running var");
  }
}

TEST_CASE("softmax, log_softmax and concat on the GPU match the CPU") {
  check_op("softmax, last axis, short rows", {randn({4, 3, 5, 3})}, [](auto& v) { return softmax(v[0], -1); }, 1e-5, 1e-6);
  check_op("softmax, long rows", {mul(randn({6, 300}), scalar(4.0))}, [](auto& v) { return softmax(v[0], 1); }, 1e-5, 1e-6);
  check_op("log_softmax, middle axis", {randn({3, 7, 11})}, [](auto& v) { return log_softmax(v[0], 1); }, 1e-5, 1e-5);
  check_op("log_softmax, long rows", {randn({5, 129})}, [](auto& v) { return log_softmax(v[0], -1); }, 1e-5, 1e-5);
  check_op("pad, constant", {randn({2, 3, 4, 5})}, [](auto& v) { return pad(v[0], {{0, 0}, {1, 2}, {0, 3}, {2, 0}}, PadMode::constant, 0.5); },
           0, 0);
  check_op("pad, reflect", {randn({2, 5, 4, 3})}, [](auto& v) { return pad(v[0], {{0, 0}, {2, 2}, {1, 3}, {0, 0}}, PadMode::reflect, 0); },
           1e-6, 1e-6);
  check_op("pad, replicate", {randn({1, 4, 3, 2})}, [](auto& v) { return pad(v[0], {{0, 0}, {3, 1}, {2, 2}, {0, 1}}, PadMode::replicate, 0); },
           1e-6, 1e-6);
  check_op("flip", {randn({3, 4, 5})}, [](auto& v) { return flip(v[0], {0, 2}); }, 0, 0);
  check_op("concat, channels", {randn({2, 3, 4, 5, 3}), randn({2, 3, 4, 5, 6})}, [](auto& v) { return concat({v[0], v[1]}, -1); }, 0,
           0);
}

TEST_CASE("one_hot, cross-entropy and DiceCE on the GPU match the CPU, and bad labels are reported") {
  const Tensor labels = randint(0, 3, {2, 4, 3, 5});
  CHECK(values(one_hot(labels.to(gpu), 3, DType::f32).to(Device::cpu())) == values(one_hot(labels, 3, DType::f32)));
  const Tensor logits = randn({2, 4, 3, 5, 3});
  Tensor ignored = labels.clone();
  ignored.slice(1, 0, 1).copy_from(full({}, -100.0, DType::i64));
  for (const Tensor& target : {labels, ignored}) {
    check_op("cross_entropy", {logits}, [target](auto& v) { return cross_entropy(v[0], target.to(v[0].device()), {}); }, 1e-5, 1e-6);
    check_op("cross_entropy, weighted, smoothed", {logits},
             [target](auto& v) {
               return cross_entropy(v[0], target.to(v[0].device()),
                                    {.weight = from_vector(std::vector<double>{0.2, 1.0, 3.0}, Shape{3}).to(v[0].dtype()).to(v[0].device()),
                                     .label_smoothing = 0.1});
             },
             1e-5, 1e-6);
  }
  check_op("dice_ce_loss", {logits}, [labels](auto& v) { return losses::dice_ce_loss(v[0], labels.to(v[0].device()), {}); }, 1e-5, 1e-6);
  const Tensor bad = full({4}, 1.0, DType::i64).to(gpu);
  bad.slice(0, 2, 3).copy_from(full({}, 7.0, DType::i64));
  CHECK_THROWS_WITH_AS(one_hot(bad, 3, DType::f32), Contains("label 7 at flat index 2"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(randn({4, 3}).to(gpu), bad, {}), Contains("label 7 at flat index 2"), Error);
}

TEST_CASE("a MONAI U-Net training step on the GPU matches the CPU's: loss, gradients and Adam's update") {
  nn::models::MonaiUNet cpu_net({.in_channels = 1, .out_channels = 3, .channels = {4, 8, 16}, .strides = {2, 2}});
  nn::models::MonaiUNet gpu_net({.in_channels = 1, .out_channels = 3, .channels = {4, 8, 16}, .strides = {2, 2}});
  gpu_net.load_state_dict(cpu_net.state_dict());
  gpu_net.to(gpu);
  const Tensor x = randn({2, 12, 10, 14, 1}), labels = randint(0, 3, {2, 12, 10, 14});
  optim::Adam cpu_opt(cpu_net.parameters(), {.lr = 1e-3}), gpu_opt(gpu_net.parameters(), {.lr = 1e-3});
  for (int step = 0; step < 2; ++step) {
    cpu_net.zero_grad();
    gpu_net.zero_grad();
    const Tensor cpu_loss = losses::dice_ce_loss(cpu_net.forward(x), labels, {});
    const Tensor gpu_loss = losses::dice_ce_loss(gpu_net.forward(x.to(gpu)), labels.to(gpu), {});
    CHECK(gpu_loss.item<double>() == doctest::Approx(cpu_loss.item<double>()).epsilon(1e-4));
    cpu_loss.backward();
    gpu_loss.backward();
    const auto cpu_params = cpu_net.named_parameters(), gpu_params = gpu_net.named_parameters();
    REQUIRE(cpu_params.size() == gpu_params.size());
    for (size_t i = 0; i < cpu_params.size(); ++i)
      VOX_CHECK_CLOSE(values(gpu_params[i].tensor->grad().to(Device::cpu())), values(cpu_params[i].tensor->grad()), 1e-4, 1e-3,
                      "gradient of " << cpu_params[i].name);
    cpu_opt.step();
    gpu_opt.step();
  }
  const auto cpu_params = cpu_net.named_parameters(), gpu_params = gpu_net.named_parameters();
  for (size_t i = 0; i < cpu_params.size(); ++i)
    VOX_CHECK_CLOSE(values(gpu_params[i].tensor->to(Device::cpu())), values(*cpu_params[i].tensor), 1e-5, 1e-4,
                    "parameter " << cpu_params[i].name << " after two steps");
}

TEST_CASE("random draws on the GPU repeat the CPU's Philox counters, and dropout keeps the same elements") {
  Generator cpu_gen(42), gpu_gen(42);
  CHECK(values(rand({1001}, DType::f64, &gpu_gen, gpu).to(Device::cpu())) == values(rand({1001}, DType::f64, &cpu_gen)));
  CHECK(values(uniform({7, 9}, -2.0, 3.0, DType::f32, &gpu_gen, gpu).to(Device::cpu())) ==
        values(uniform({7, 9}, -2.0, 3.0, DType::f32, &cpu_gen)));
  CHECK(values(bernoulli({333}, 0.3, DType::f32, &gpu_gen, gpu).to(Device::cpu())) == values(bernoulli({333}, 0.3, DType::f32, &cpu_gen)));
  VOX_CHECK_CLOSE(values(randn({501}, DType::f64, &gpu_gen, 1.5, 2.0, gpu).to(Device::cpu())),
                  values(randn({501}, DType::f64, &cpu_gen, 1.5, 2.0)), 1e-12, 1e-12, "randn");
  CHECK(gpu_gen.offset() == cpu_gen.offset());
  const Tensor x = randn({4, 5, 6});
  Generator a(7), b(7);
  check_op("dropout", {x}, [&](auto& v) {
    Generator& g = v[0].device().is_cuda() ? b : a;
    return dropout(v[0], 0.3, true, &g);
  }, 1e-6, 1e-6, {DType::f32});
}

TEST_CASE("pooling and upsampling on the GPU match the CPU, forward and backward") {
  const Tensor x = randn({2, 7, 6, 9, 3});
  check_op("max_pool3d, overlapping windows", {x}, [](auto& v) { return max_pool3d(v[0], {.kernel = {3}, .stride = {2}, .padding = {1}}); },
           1e-6, 1e-6);
  check_op("max_pool3d 2x2x2", {x}, [](auto& v) { return max_pool3d(v[0], {.kernel = {2}}); }, 1e-6, 1e-6);
  check_op("avg_pool3d, padding excluded", {x},
           [](auto& v) { return avg_pool3d(v[0], {.kernel = {3}, .stride = {2}, .padding = {1}, .count_include_pad = false}); }, 1e-5,
           1e-6);
  check_op("adaptive_avg_pool3d", {x}, [](auto& v) { return adaptive_avg_pool3d(v[0], {1}); }, 1e-5, 1e-6);
  check_op("adaptive_avg_pool3d, uneven", {x}, [](auto& v) { return adaptive_avg_pool3d(v[0], {3, 4, 5}); }, 1e-5, 1e-6);
  check_op("upsample_nearest", {x}, [](auto& v) { return upsample_nearest(v[0], {14, 12, 18}); }, 1e-6, 1e-6);
  check_op("upsample_trilinear", {x}, [](auto& v) { return upsample_trilinear(v[0], {11, 13, 17}, false); }, 1e-5, 1e-6);
  check_op("upsample_trilinear, 2-D, align_corners", {randn({2, 5, 4, 3})},
           [](auto& v) { return upsample_trilinear(v[0], {9, 7}, true); }, 1e-5, 1e-6);
}

// Four steps of `make_optimizer`'s optimizer on a small model, on the CPU and on the GPU: the
// parameters must agree.
template <class MakeOptimizer>
void check_optimizer(const std::string& name, MakeOptimizer make_optimizer) {
  const Tensor w0 = randn({33, 7}), b0 = randn({7});
  std::vector<Tensor> cpu{w0.clone().set_requires_grad(), b0.clone().set_requires_grad()};
  std::vector<Tensor> dev{w0.to(gpu).detach().set_requires_grad(), b0.to(gpu).detach().set_requires_grad()};
  auto cpu_opt = make_optimizer(cpu);
  auto dev_opt = make_optimizer(dev);
  const Tensor x = randn({5, 33});
  for (int step = 0; step < 4; ++step) {
    for (auto* params : {&cpu, &dev}) {
      const Tensor xi = params == &dev ? x.to(gpu) : x;
      for (Tensor& p : *params) p.zero_grad();
      sum(tanh(add(matmul(xi, (*params)[0]), (*params)[1]))).backward();
    }
    cpu_opt.step();
    dev_opt.step();
  }
  for (size_t i = 0; i < cpu.size(); ++i)
    VOX_CHECK_CLOSE(values(dev[i].to(Device::cpu())), values(cpu[i]), 1e-5, 1e-5, name << ", param " << i);
}

TEST_CASE("Adam, AdamW and SGD on the GPU take the same steps as on the CPU") {
  for (bool decoupled : {false, true})
    check_optimizer(decoupled ? "AdamW" : "Adam", [decoupled](std::vector<Tensor>& p) {
      return optim::Adam(p, {.lr = 0.01, .weight_decay = 0.05, .decoupled_weight_decay = decoupled});
    });
  check_optimizer("SGD", [](std::vector<Tensor>& p) { return optim::SGD(p, {.lr = 0.05, .weight_decay = 0.01}); });
  check_optimizer("SGD, momentum and dampening",
                  [](std::vector<Tensor>& p) { return optim::SGD(p, {.lr = 0.05, .momentum = 0.9, .dampening = 0.1}); });
  check_optimizer("SGD, Nesterov", [](std::vector<Tensor>& p) { return optim::SGD(p, {.lr = 0.05, .momentum = 0.9, .nesterov = true}); });
  // Capturable: the learning rate and step counts live on the device, bias corrections computed there.
  check_optimizer("Adam, capturable", [](std::vector<Tensor>& p) {
    return optim::Adam(p, {.lr = 0.01, .weight_decay = 0.05, .capturable = true});
  });
  check_optimizer("AdamW, capturable", [](std::vector<Tensor>& p) {
    return optim::Adam(p, {.lr = 0.01, .weight_decay = 0.05, .decoupled_weight_decay = true, .capturable = true});
  });
  check_optimizer("SGD, momentum, capturable",
                  [](std::vector<Tensor>& p) { return optim::SGD(p, {.lr = 0.05, .momentum = 0.9, .capturable = true}); });
}

namespace {
}  // namespace

TEST_CASE("tensors move between host and device and keep their values, dtypes and views") {
  const Tensor x = randn({3, 5, 7});
  const Tensor d = x.to(gpu);
  CHECK(d.device() == gpu);
  CHECK(values(d.to(Device::cpu())) == values(x));
  // a non-contiguous view, converted on the device
  const Tensor view = permute(d, {2, 0, 1}).slice(0, 1, 7, 2);
  CHECK(values(view.to(Device::cpu())) == values(permute(x, {2, 0, 1}).slice(0, 1, 7, 2)));
  CHECK(values(d.to(DType::f16).to(Device::cpu())) == values(x.to(DType::f16)));
  CHECK(values(d.to(DType::bf16).to(DType::f64).to(Device::cpu())) == values(x.to(DType::bf16).to(DType::f64)));
  const Tensor labels = randint(-3, 9, {4, 6});
  CHECK(values(labels.to(gpu).to(DType::f32).to(Device::cpu())) == values(labels.to(DType::f32)));
  CHECK(values(full({2, 3}, 2.5, DType::f32, gpu).to(Device::cpu())) == std::vector<double>(6, 2.5));
  CHECK(values(zeros({5}, DType::f64, gpu).to(Device::cpu())) == std::vector<double>(5, 0.0));
  CHECK(sum(d).item<float>() == doctest::Approx(sum(x).item<float>()).epsilon(1e-5));  // item() reads through the host
  CHECK_THROWS_WITH_AS(d.data<float>(), Contains("host access to a tensor on cuda:0"), Error);
}

TEST_CASE("elementwise ops with broadcasting match the CPU, forward and backward") {
  const Tensor a = randn({3, 1, 5, 4}), b = randn({6, 1, 4}), pos = add(rand({3, 6, 5, 4}), scalar(0.5));
  check_op("add", {a, b}, [](auto& v) { return add(v[0], v[1]); }, 1e-6, 1e-6);
  check_op("sub", {a, b}, [](auto& v) { return sub(v[0], v[1]); }, 1e-6, 1e-6);
  check_op("mul", {a, b}, [](auto& v) { return mul(v[0], v[1]); }, 1e-6, 1e-6);
  check_op("div", {a, pos}, [](auto& v) { return div(v[0], v[1]); }, 1e-5, 1e-6);
  check_op("neg", {a}, [](auto& v) { return neg(v[0]); }, 0, 0);
  check_op("relu", {a}, [](auto& v) { return relu(v[0]); }, 0, 0);
  check_op("exp", {a}, [](auto& v) { return exp(v[0]); }, 1e-6, 1e-6);
  check_op("log", {pos}, [](auto& v) { return log(v[0]); }, 1e-6, 1e-6);
  check_op("sqrt", {pos}, [](auto& v) { return sqrt(v[0]); }, 1e-6, 1e-6);
  check_op("sigmoid", {a}, [](auto& v) { return sigmoid(v[0]); }, 1e-6, 1e-6);
  check_op("tanh", {a}, [](auto& v) { return tanh(v[0]); }, 1e-6, 1e-6);
  check_op("scalar from the host", {a}, [](auto& v) { return mul(v[0], scalar(3.0, v[0].dtype())); }, 1e-6, 1e-6);
  check_op("abs", {a}, [](auto& v) { return abs(v[0]); }, 0, 0);
  check_op("square", {a}, [](auto& v) { return square(v[0]); }, 1e-6, 1e-6);
  check_op("pow by a scalar", {pos}, [](auto& v) { return pow(v[0], 2.5); }, 1e-5, 1e-6);
  // a tensor exponent, broadcast, with zeros in it (the base's gradient is 0 there by rule)
  const Tensor base = add(abs(a), scalar(0.2));
  const Tensor exponent = where(gt(b, scalar(1.2)), scalar(0.0), b);
  check_op("pow by a tensor", {base, exponent}, [](auto& v) { return pow(v[0], v[1]); }, 1e-5, 1e-6);
  check_op("clamp", {a}, [](auto& v) { return clamp(v[0], -0.5, 0.7); }, 0, 0);
  check_op("clamp, min only", {a}, [](auto& v) { return clamp(v[0], 0.1, std::nullopt); }, 0, 0);
  check_op("leaky_relu", {a}, [](auto& v) { return leaky_relu(v[0], 0.01); }, 1e-6, 1e-6);
  check_op("gelu", {a}, [](auto& v) { return gelu(v[0], GeluApproximation::none); }, 1e-5, 1e-6);
  check_op("gelu, tanh", {a}, [](auto& v) { return gelu(v[0], GeluApproximation::tanh); }, 1e-5, 1e-6);
  check_op("prelu, per channel", {randn({3, 5, 4}), mul(rand({4}), scalar(0.5))}, [](auto& v) { return prelu(v[0], v[1]); }, 1e-6,
           1e-6);
  check_op("prelu, one slope", {randn({3, 5, 4}), full({1}, 0.25)}, [](auto& v) { return prelu(v[0], v[1]); }, 1e-6, 1e-6);
  check_op("transposed operand", {randn({4, 5}), randn({5, 4})}, [](auto& v) { return add(v[0], transpose(v[1], 0, 1)); }, 1e-6, 1e-6);
}

TEST_CASE("comparisons and where on the GPU match the CPU, integers included") {
  const Tensor a = randn({3, 1, 5}), b = randn({4, 5});
  const Tensor ia = randint(-3, 4, {6, 7}), ib = randint(-3, 4, {7});
  for (auto* compare : {&eq, &ne, &lt, &le, &gt, &ge}) {
    CHECK(values((*compare)(a.to(gpu), b.to(gpu)).to(Device::cpu())) == values((*compare)(a, b)));
    CHECK(values((*compare)(ia.to(gpu), ib.to(gpu)).to(Device::cpu())) == values((*compare)(ia, ib)));
  }
  CHECK(values(eq(ia.to(gpu), scalar(2.0, DType::i64)).to(Device::cpu())) == values(eq(ia, scalar(2.0, DType::i64))));
  const Tensor condition = gt(randn({4, 5}), scalar(0.0));
  check_op("where", {a, b}, [condition](auto& v) { return where(condition.to(v[0].device()), v[0], v[1]); }, 0, 0);
  CHECK(values(where(condition.to(gpu), ia.slice(0, 0, 4).slice(1, 0, 5).to(gpu), scalar(9.0, DType::i64)).to(Device::cpu())) ==
        values(where(condition, ia.slice(0, 0, 4).slice(1, 0, 5), scalar(9.0, DType::i64))));
}

TEST_CASE("sums and means over any axes match the CPU") {
  const Tensor x = randn({3, 7, 5, 33});
  check_op("sum all", {x}, [](auto& v) { return sum(v[0]); }, 1e-5, 1e-5);
  check_op("sum last", {x}, [](auto& v) { return sum(v[0], {-1}); }, 1e-5, 1e-5);
  check_op("sum middle", {x}, [](auto& v) { return sum(v[0], {1, 2}, true); }, 1e-5, 1e-5);
  check_op("sum split axes", {x}, [](auto& v) { return sum(v[0], {0, 2}); }, 1e-5, 1e-5);
  check_op("mean", {x}, [](auto& v) { return mean(v[0], {1}); }, 1e-5, 1e-5);
  const Tensor big = randn({1 << 20});  // a full sum: split over many blocks, then summed again
  check_op("sum of 2^20", {big}, [](auto& v) { return sum(v[0]); }, 1e-4, 1e-3);
  // per-channel sums of a channels-last volume (columns, a partial tile of 24 lanes, two passes)
  check_op("per-channel sum", {randn({4, 16, 16, 24})}, [](auto& v) { return sum(v[0], {0, 1, 2}); }, 1e-4, 1e-4);
  check_op("few columns", {randn({3000, 5})}, [](auto& v) { return sum(v[0], {0}); }, 1e-4, 1e-4);
}

TEST_CASE("max, min, argmax and argmin on the GPU match the CPU: ties, NaN, integers and every split") {
  const Tensor x = randn({3, 7, 5, 33});
  check_op("max all", {x}, [](auto& v) { return max(v[0]); }, 0, 0);
  check_op("max last", {x}, [](auto& v) { return max(v[0], {-1}); }, 0, 0);
  check_op("min middle", {x}, [](auto& v) { return min(v[0], {1, 2}, true); }, 0, 0);
  check_op("max split axes", {x}, [](auto& v) { return max(v[0], {0, 2}); }, 0, 0);
  check_op("max of 2^20 (split, then folded)", {randn({1 << 20})}, [](auto& v) { return max(v[0]); }, 0, 0);
  check_op("per-channel min (columns)", {randn({4, 16, 16, 24})}, [](auto& v) { return min(v[0], {0, 1, 2}); }, 0, 0);
  // Ties share the gradient: a rounded input has many equal maxima.
  check_op("max with ties", {randint(-2, 3, {6, 40}).to(DType::f32)}, [](auto& v) { return max(v[0], {1}); }, 0, 0);
  for (const int64_t axis : {0, 1, 2, 3}) {
    CHECK(values(argmax(x.to(gpu), axis).to(Device::cpu())) == values(argmax(x, axis)));
    CHECK(values(argmin(x.to(gpu), axis, true).to(Device::cpu())) == values(argmin(x, axis, true)));
  }
  // The first of tied values wins, at every split of a long axis.
  const Tensor ties = randint(0, 3, {2, 5000, 3}).to(DType::f32);
  CHECK(values(argmax(ties.to(gpu), 1).to(Device::cpu())) == values(argmax(ties, 1)));
  CHECK(values(argmin(ties.to(gpu), 1).to(Device::cpu())) == values(argmin(ties, 1)));
  // A NaN wins, the first one.
  std::vector<double> with_nan(3000, 1.0);
  with_nan[1700] = with_nan[2900] = std::nan("");
  const Tensor nan_row = from_vector(with_nan, {1, 3000});
  CHECK(argmax(nan_row.to(gpu), 1).to(Device::cpu()).item<int64_t>() == 1700);
  CHECK(argmin(nan_row.to(gpu), 1).to(Device::cpu()).item<int64_t>() == 1700);
  CHECK(std::isnan(max(nan_row.to(gpu)).to(Device::cpu()).item<double>()));
  // Integers, 16-bit floats and argmax over channels-last classes (segmentation's labels).
  const Tensor ints = randint(-50, 50, {4, 9, 17});
  CHECK(values(max(ints.to(gpu), {1}).to(Device::cpu())) == values(max(ints, {1})));
  CHECK(values(argmin(ints.to(gpu), 2).to(Device::cpu())) == values(argmin(ints, 2)));
  const Tensor halves = randn({5, 8, 3}).to(DType::f16);
  CHECK(values(max(halves.to(gpu), {1}).to(Device::cpu())) == values(max(halves, {1})));
  const Tensor logits = randn({1, 6, 7, 5, 4});
  CHECK(values(argmax(logits.to(gpu), -1).to(Device::cpu())) == values(argmax(logits, -1)));
}

TEST_CASE("fused attention on the GPU matches the CPU's composed attention, forward and every gradient") {
  // odd lengths (partial tiles and partial row blocks), different q and kv lengths and dims
  check_op("sdpa", {randn({2, 3, 37, 24}), randn({2, 3, 21, 24}), randn({2, 3, 21, 40})},
           [](auto& v) { return scaled_dot_product_attention(v[0], v[1], v[2]); }, 1e-5, 1e-5);
  check_op("sdpa, rank 3, head dim 128, a scale", {randn({1, 70, 128}), randn({1, 33, 128}), randn({1, 33, 96})},
           [](auto& v) { return scaled_dot_product_attention(v[0], v[1], v[2], {}, 0.05); }, 1e-5, 1e-5);
  check_op("sdpa, one key", {randn({2, 5, 8}), randn({2, 1, 8}), randn({2, 1, 8})},
           [](auto& v) { return scaled_dot_product_attention(v[0], v[1], v[2]); }, 1e-5, 1e-6);
  // large scores: the running maximum keeps exp from overflowing
  check_op("sdpa, sharp softmax", {mul(randn({1, 2, 19, 16}), scalar(30.0)), randn({1, 2, 45, 16}), randn({1, 2, 45, 16})},
           [](auto& v) { return scaled_dot_product_attention(v[0], v[1], v[2]); }, 1e-4, 1e-4);
  // head dims above 128 and masks take the composed path on the GPU
  check_op("sdpa, head dim 160", {randn({1, 9, 160}), randn({1, 7, 160}), randn({1, 7, 8})},
           [](auto& v) { return scaled_dot_product_attention(v[0], v[1], v[2]); }, 1e-5, 1e-5);
  const Tensor mask = gt(randn({9, 7}), scalar(-1.0));
  check_op("sdpa, bool mask", {randn({2, 9, 8}), randn({2, 7, 8}), randn({2, 7, 8})},
           [mask](auto& v) { return scaled_dot_product_attention(v[0], v[1], v[2], mask.to(v[0].device())); }, 1e-5, 1e-5);
  // the self-attention layer over a volume's voxels
  nn::MultiheadSelfAttention attention(32, 4);
  const Tensor volume = randn({1, 5, 4, 3, 32});
  const Tensor expected = attention.forward(volume);
  attention.to(gpu);
  VOX_CHECK_CLOSE(values(attention.forward(volume.to(gpu)).to(Device::cpu())), values(expected), 1e-5, 1e-5,
                  "MultiheadSelfAttention on the GPU");
  // f16 and bf16, fused with f32 arithmetic: against the f32 attention of the same rounded inputs,
  // rounded. Outputs round once; gradients also see the 16-bit output in delta = dout . out.
  for (const auto& [dtype, tolerance] : {std::pair{DType::f16, 1e-2}, std::pair{DType::bf16, 5e-2}}) {
    std::vector<Tensor> wide, narrow;
    for (const Shape& shape : {Shape{2, 2, 19, 16}, Shape{2, 2, 23, 16}, Shape{2, 2, 23, 8}}) {
      const Tensor rounded = randn(shape).to(dtype);
      wide.push_back(rounded.to(DType::f32).set_requires_grad());
      narrow.push_back(rounded.to(gpu).detach().set_requires_grad());
    }
    const Tensor g = randn({2, 2, 19, 8}).to(dtype);
    const Tensor expected = scaled_dot_product_attention(wide[0], wide[1], wide[2]);
    const Tensor got = scaled_dot_product_attention(narrow[0], narrow[1], narrow[2]);
    REQUIRE(got.dtype() == dtype);
    VOX_CHECK_CLOSE(values(got.to(Device::cpu())), values(expected.to(dtype)), tolerance, tolerance, dtype_name(dtype) << " sdpa");
    expected.backward(g.to(DType::f32));
    got.backward(g.to(gpu));
    for (size_t i = 0; i < 3; ++i)
      VOX_CHECK_CLOSE(values(narrow[i].grad().to(Device::cpu())), values(wide[i].grad()), tolerance, tolerance,
                      dtype_name(dtype) << " sdpa gradient " << i);
  }
  const auto r = gradcheck(through_gpu([](auto& v) { return scaled_dot_product_attention(v[0], v[1], v[2]); }),
                           f64_leaves({randn({2, 11, 6}), randn({2, 9, 6}), randn({2, 9, 5})}));
  CHECK_MESSAGE(r.ok, r.detail);
}

TEST_CASE("matmul on cuBLAS matches the CPU: 2-D, batched, broadcast batch, vectors") {
  check_op("2-D", {randn({17, 33}), randn({33, 9})}, [](auto& v) { return matmul(v[0], v[1]); }, 1e-5, 1e-5);
  check_op("batched", {randn({3, 8, 5}), randn({3, 5, 7})}, [](auto& v) { return matmul(v[0], v[1]); }, 1e-5, 1e-5);
  check_op("broadcast batch", {randn({2, 3, 8, 5}), randn({5, 7})}, [](auto& v) { return matmul(v[0], v[1]); }, 1e-5, 1e-5);
  check_op("vector", {randn({6}), randn({6, 4})}, [](auto& v) { return matmul(v[0], v[1]); }, 1e-5, 1e-5);
  check_op("linear", {randn({10, 12}), randn({7, 12}), randn({7})}, [](auto& v) { return linear(v[0], v[1], v[2]); }, 1e-5, 1e-5);
  // 16-bit operands accumulate in f32 and round once: the f32 product of the rounded inputs, rounded
  const Tensor a = randn({3, 17, 40}), b = randn({40, 9});
  for (const auto& [dtype, tolerance] : {std::pair{DType::f16, 2e-3}, std::pair{DType::bf16, 1e-2}}) {
    const Tensor a16 = a.to(dtype), b16 = b.to(dtype);
    const Tensor expected = matmul(a16.to(DType::f32), b16.to(DType::f32)).to(dtype);
    const Tensor got = matmul(a16.to(gpu), b16.to(gpu));
    CHECK(got.dtype() == dtype);
    VOX_CHECK_CLOSE(values(got.to(Device::cpu())), values(expected), tolerance, tolerance, dtype_name(dtype) << " matmul");
  }
}

TEST_CASE("a small MLP trains on the GPU exactly as on the CPU") {
  const Tensor x = randn({64, 16}), w1 = mul(randn({32, 16}), scalar(0.3)), w2 = mul(randn({1, 32}), scalar(0.3));
  check_op("mlp", {x, w1, w2}, [](auto& v) { return sigmoid(linear(tanh(linear(v[0], v[1], {})), v[2], {})); }, 1e-5, 1e-6);
  // a tensor used three times: its gradients are summed on the device
  check_op("reused input", {randn({7, 9})}, [](auto& v) { return add(mul(v[0], v[0]), relu(v[0])); }, 1e-6, 1e-6);
  // The weight gradient sums 64 products per element, in cuBLAS' order on the GPU and the GEMM's
  // on the CPU; f32 rounding of such sums reaches ~2e-6 absolute (the f64 run holds 1e-11).
  const Tensor w = mul(randn({16, 16}), scalar(0.2));
  check_op("residual", {x, w}, [](auto& v) { return add(v[0], tanh(linear(v[0], v[1], {}))); }, 1e-5, 1e-5);
}

TEST_CASE("devices do not mix: an op with operands on both says where each is") {
  const Tensor d = randn({2, 3}).to(gpu);
  CHECK_THROWS_WITH_AS(conv(d.reshape({1, 1, 2, 3}), randn({1, 1, 1, 3}), {}, {}), Contains("operands are on cuda:0 and cpu"), Error);
  CHECK_THROWS_WITH_AS(add(d, randn({2, 3})), Contains("is on cpu while another is on cuda:0"), Error);
  CHECK_THROWS_WITH_AS(matmul(d, randn({3, 2})), Contains("operands are on cuda:0 and cpu"), Error);
}

TEST_CASE("the caching allocator reuses freed blocks and counts what it holds") {
  auto& backend = cuda_backend("test");
  backend.synchronize(0);
  backend.empty_cache(0);
  const DeviceMemoryStats before = cuda_memory_stats();
  { const Tensor t = empty({1 << 20}, DType::f32, gpu); }  // 4 MiB, freed into the cache
  const DeviceMemoryStats after_first = cuda_memory_stats();
  { const Tensor t = empty({1 << 20}, DType::f32, gpu); }  // the same size class: served from the cache
  const DeviceMemoryStats after_second = cuda_memory_stats();
  CHECK(after_first.device_allocations == before.device_allocations + 1);
  CHECK(after_second.device_allocations == after_first.device_allocations);
  CHECK(after_second.allocated_bytes == before.allocated_bytes);
  CHECK(after_second.peak_allocated_bytes >= before.allocated_bytes + (4 << 20));
  CHECK(after_second.reserved_bytes >= after_second.allocated_bytes + (4 << 20));
  backend.empty_cache(0);
  CHECK(cuda_memory_stats().reserved_bytes == after_second.reserved_bytes - (4 << 20));
}

TEST_CASE("the allocator reports its cache: rounding, cached blocks and fragmentation") {
  auto& backend = cuda_backend("test");
  backend.synchronize(0);
  backend.empty_cache(0);
  const DeviceMemoryStats empty_cache_stats = cuda_memory_stats();
  CHECK(empty_cache_stats.cached_bytes == 0);
  CHECK(empty_cache_stats.fragmentation() == 0.0);
  {
    const Tensor odd = empty({1000}, DType::f32, gpu);  // 4000 bytes, rounded to 4096
    const DeviceMemoryStats s = cuda_memory_stats();
    CHECK(s.requested_bytes - empty_cache_stats.requested_bytes == 4000);
    CHECK(s.allocated_bytes - empty_cache_stats.allocated_bytes == 4096);
  }
  { const Tensor big = empty({3 << 20}, DType::f32, gpu); }  // 12 MiB, then cached
  const DeviceMemoryStats s = cuda_memory_stats();
  CHECK(s.cached_blocks == 2);
  CHECK(s.cached_bytes == 4096 + (12 << 20));
  CHECK(s.largest_cached_block == 12 << 20);
  CHECK(s.fragmentation() == doctest::Approx(4096.0 / (4096.0 + (12 << 20))));
  CHECK(s.reserved_bytes == s.allocated_bytes + s.cached_bytes);
  backend.empty_cache(0);
}

TEST_CASE("streams: work follows the current stream, blocks stay with their stream, record_stream defers reuse") {
  const Tensor x = randn({64, 33});
  CudaStream side(0);
  CHECK(current_cuda_stream(0) == nullptr);
  Tensor y;
  {
    CudaStreamGuard on(side);
    CHECK(current_cuda_stream(0) == side.handle());
    y = tanh(matmul(x.to(gpu), transpose(x, 0, 1).to(gpu)));  // kernels and cuBLAS on `side`
  }
  CHECK(current_cuda_stream(0) == nullptr);
  side.synchronize();
  VOX_CHECK_CLOSE(values(y.to(Device::cpu())), values(tanh(matmul(x, transpose(x, 0, 1)))), 1e-5, 1e-5, "matmul on a stream");

  // A block freed on one stream is not handed to work on another.
  auto& backend = cuda_backend("test");
  backend.synchronize(0);
  backend.empty_cache(0);
  void* freed_on_side = nullptr;
  {
    CudaStreamGuard on(side);
    const Tensor t = empty({1 << 18}, DType::f32, gpu);
    freed_on_side = t.raw_data();
  }
  {
    const Tensor u = empty({1 << 18}, DType::f32, gpu);  // the default stream: a fresh block
    CHECK(u.raw_data() != freed_on_side);
  }
  {
    CudaStreamGuard on(side);
    const Tensor again = empty({1 << 18}, DType::f32, gpu);  // `side` again: its cached block
    CHECK(again.raw_data() == freed_on_side);
  }

  // record_stream: the block waits for the other stream's queued work before it is reused.
  void* recorded = nullptr;
  {
    const Tensor t = ones({1 << 20}, DType::f32, gpu);
    cuda_synchronize(0);  // `side` does not wait for the default stream by itself
    record_stream(t, side.handle());
    recorded = t.raw_data();
    CudaStreamGuard on(side);
    const Tensor busy = mul(t, t);  // queued on `side`
    (void)busy;
  }
  side.synchronize();
  CHECK(cuda_memory_stats().pending_blocks == 0);  // the event has completed: back in the cache
  {
    const Tensor reuse = empty({1 << 20}, DType::f32, gpu);
    CHECK(reuse.raw_data() == recorded);
  }
  CHECK_THROWS_WITH_AS(record_stream(randn({2}), side.handle()), Contains("not a CUDA device"), Error);
}

TEST_CASE("pinned host tensors copy to and from the device asynchronously") {
  const Tensor x = randn({5, 7, 9});
  const Tensor pinned = x.pin_memory();
  CHECK(pinned.is_pinned());
  CHECK_FALSE(x.is_pinned());
  CHECK(pinned.pin_memory().is_same(pinned));  // already pinned: itself
  CHECK(values(pinned) == values(x));
  CudaStream copies(0);
  Tensor on_device, back;
  {
    CudaStreamGuard on(copies);
    on_device = pinned.to(gpu, /*non_blocking=*/true);
    back = exp(on_device).to(Device::cpu(), /*non_blocking=*/true);
  }
  CHECK(back.is_pinned());
  copies.synchronize();
  VOX_CHECK_CLOSE(values(back), values(exp(x)), 1e-6, 1e-6, "round trip through pinned memory");
  // A strided view is made contiguous first; pageable memory copies synchronously.
  CHECK(values(transpose(pinned, 0, 2).pin_memory()) == values(transpose(x, 0, 2)));
  CHECK(values(x.to(gpu, true).to(Device::cpu())) == values(x));
  CHECK_THROWS_WITH_AS(on_device.pin_memory(), Contains("only host tensors"), Error);
}

namespace {
// A small U-Net with dropout (drawing from the default generator), its capturable optimizer,
// and static input tensors on the GPU.
struct GraphTrainer {
  nn::models::MonaiUNet net{{.in_channels = 1, .out_channels = 3, .channels = {4, 8, 16}, .strides = {2, 2}, .dropout = 0.2}};
  optim::Adam opt;
  Tensor x = empty({2, 12, 10, 14, 1}, DType::f32, gpu), labels = empty({2, 12, 10, 14}, DType::i64, gpu), loss;

  explicit GraphTrainer(const nn::models::MonaiUNet& from) : opt(prepare(net, from), {.lr = 2e-3, .capturable = true}) {}
  static std::vector<Tensor> prepare(nn::models::MonaiUNet& net, const nn::models::MonaiUNet& from) {
    net.load_state_dict(from.state_dict());
    net.to(gpu);
    return net.parameters();
  }
  void step() {
    net.zero_grad();
    loss = losses::dice_ce_loss(net.forward(x), labels, {});
    loss.backward();
    opt.step();
  }
};
}  // namespace

TEST_CASE("a captured U-Net training step replays as eager steps do: loss, parameters, dropout and learning rate") {
  const nn::models::MonaiUNet init({.in_channels = 1, .out_channels = 3, .channels = {4, 8, 16}, .strides = {2, 2}, .dropout = 0.2});
  GraphTrainer eager(init), captured(init);
  auto batch = [](int i) {
    Generator g(100 + static_cast<uint64_t>(i));
    return std::pair{randn({2, 12, 10, 14, 1}, DType::f32, &g), randint(0, 3, {2, 12, 10, 14}, DType::i64, &g)};
  };
  auto feed = [&](GraphTrainer& t, int i) {
    const auto [x, y] = batch(i);
    t.x.copy_from(x);
    t.labels.copy_from(y);
  };
  Generator& dropout = default_generator();
  for (int i = 0; i < 2; ++i) {  // warm-up, eager on both, with the same dropout masks
    const uint64_t offset = dropout.offset();
    feed(eager, i);
    eager.step();
    dropout.set_offset(offset);
    feed(captured, i);
    captured.step();
  }
  CudaGraph graph;
  graph.capture([&] { captured.step(); });
  CHECK(graph.captured());
  for (int i = 2; i < 6; ++i) {
    if (i == 4) {  // a schedule's change between replays reaches the captured step
      eager.opt.set_learning_rate(5e-4);
      captured.opt.set_learning_rate(5e-4);
    }
    const uint64_t offset = dropout.offset();
    feed(eager, i);
    eager.step();
    const uint64_t after_eager = dropout.offset();
    dropout.set_offset(offset);  // the replay draws the masks the eager step drew
    feed(captured, i);
    graph.replay();
    CHECK(dropout.offset() == after_eager);
    CHECK(captured.loss.item<double>() == doctest::Approx(eager.loss.item<double>()).epsilon(1e-5));
  }
  const auto a = eager.net.named_parameters(), b = captured.net.named_parameters();
  for (size_t i = 0; i < a.size(); ++i)
    VOX_CHECK_CLOSE(values(b[i].tensor->to(Device::cpu())), values(a[i].tensor->to(Device::cpu())), 1e-5, 1e-4,
                    "parameter " << a[i].name << " after four replays");
  CHECK(captured.opt.state_dict().at("state.0.step").item<double>() == 6);
  CHECK(eager.opt.state_dict().at("state.0.step").item<double>() == 6);
  graph.reset();
  CHECK_FALSE(graph.captured());
  CHECK(cuda_memory_stats().graph_pool_bytes == 0);
  const uint64_t offset = dropout.offset();
  eager.step();  // the captured tensors are ordinary tensors again
  dropout.set_offset(offset);
  captured.step();
  CHECK(captured.loss.item<double>() == doctest::Approx(eager.loss.item<double>()).epsilon(1e-5));
}

TEST_CASE("captured random draws take new counters on every replay, the same as eager draws would") {
  Generator g(11);
  g.set_offset(40);
  Tensor out;
  CudaGraph graph;
  graph.capture([&] { out = add(rand({1001}, DType::f32, &g, gpu), scalar(1.0)); });
  CHECK(g.offset() == 40 + 501);  // the capture reserves, as an eager draw does
  for (int replay = 0; replay < 2; ++replay) {
    const uint64_t offset = g.offset();
    graph.replay();
    Generator same(11);
    same.set_offset(offset);
    CHECK(values(out.to(Device::cpu())) == values(add(rand({1001}, DType::f32, &same), scalar(1.0))));
    CHECK(g.offset() == offset + 501);
  }
  g.manual_seed(12);  // a new seed is read at replay too
  graph.replay();
  Generator reseeded(12);
  CHECK(values(out.to(Device::cpu())) == values(add(rand({1001}, DType::f32, &reseeded), scalar(1.0))));
}

TEST_CASE("a graph's memory serves only its replays, keeps what it reads, and goes back on reset") {
  const Tensor x = randn({1 << 16}).to(gpu);
  empty_cuda_cache(0);
  Tensor kept, before_capture = mul(x, scalar(2.0));
  void* temporary = nullptr;
  void* freed_in_capture = before_capture.raw_data();
  CudaGraph graph;
  graph.capture([&] {
    const Tensor t = exp(x);
    temporary = t.raw_data();
    kept = add(add(t, before_capture), x);
    before_capture = Tensor();  // freed during the capture, yet the graph reads it
  });
  CHECK(cuda_memory_stats().graph_pool_bytes >= 2 * (int64_t{1} << 16) * 4);
  for (int i = 0; i < 3; ++i) {  // eager work must not take the graph's blocks
    const Tensor e = empty({1 << 16}, DType::f32, gpu);
    CHECK(e.raw_data() != temporary);
    CHECK(e.raw_data() != freed_in_capture);
    e.fill(-1.0);
  }
  graph.replay();
  const Tensor h = x.to(Device::cpu());
  VOX_CHECK_CLOSE(values(kept.to(Device::cpu())), values(add(add(exp(h), mul(h, scalar(2.0))), h)), 1e-6, 1e-6, "replay");
  graph.reset();
  CHECK(cuda_memory_stats().graph_pool_bytes == 0);
  VOX_CHECK_CLOSE(values(kept.to(Device::cpu())), values(add(add(exp(h), mul(h, scalar(2.0))), h)), 1e-6, 1e-6,
                  "an output outlives its graph");
}

TEST_CASE("a capture refuses what a graph cannot do, says why, and leaves the device usable") {
  const Tensor x = randn({8, 3}).to(gpu).set_requires_grad();
  CudaGraph graph;
  CHECK_THROWS_WITH_AS(graph.replay(), Contains("nothing has been captured"), Error);
  CHECK_THROWS_WITH_AS(graph.capture([&] { (void)sum(x).item<double>(); }), Contains("being captured into a CUDA graph"), Error);
  CHECK_FALSE(graph.captured());
  CHECK_FALSE(cuda_capturing(0));
  CHECK_THROWS_WITH_AS(graph.capture([&] { cuda_synchronize(0); }), Contains("being captured"), Error);
  optim::Adam plain({x}, {});
  sum(mul(x, x)).backward();
  CHECK_THROWS_WITH_AS(graph.capture([&] { plain.step(); }), Contains("capturable = true"), Error);
  optim::Adam fresh({x}, {.capturable = true});
  CHECK_THROWS_WITH_AS(graph.capture([&] { fresh.step(); }), Contains("run one step"), Error);
  CHECK_THROWS_WITH_AS(graph.capture([&] { throw Error("from the step"); }), Contains("from the step"), Error);
  graph.capture([&] { (void)mul(x, x); });
  CHECK_THROWS_WITH_AS(graph.capture([] {}), Contains("already holds a capture"), Error);
  CHECK(values(mul(x, x).to(Device::cpu())) == values(mul(x.to(Device::cpu()), x.to(Device::cpu()))));  // eager work goes on
  CudaStream side(0);
  CudaStreamGuard on(side);  // a stream of the caller's own is captured as it is
  CudaGraph on_side;
  on_side.capture([&] {
    CHECK(cuda_capturing(0));
    (void)mul(x, x);
  });
  CHECK_FALSE(cuda_capturing(0));
  on_side.replay();
  side.synchronize();
}

TEST_CASE("the trainer on the GPU, eager and replaying a CUDA graph, takes the CPU's steps, clip included") {
  using Net = nn::Sequential<nn::Conv<3>, nn::InstanceNorm<3>, nn::PReLU, nn::Conv<3>>;
  auto make_net = [] {
    manual_seed(3);
    return Net(nn::Conv<3>(1, 4, {3}, {.padding = {1}}), nn::InstanceNorm<3>(4), nn::PReLU(), nn::Conv<3>(4, 2, {1}));
  };
  data::Random rng(4);
  std::vector<data::Sample> samples;
  for (int n = 0; n < 2; ++n) {
    data::Sample s = data::synthetic_spheres({.size = {16, 16, 16}, .spheres_per_class = 1}, rng);
    s.image.voxels = s.image.voxels.reshape({16, 16, 16, 1});
    samples.push_back(s);
  }
  const data::PatchLoader loader(samples, {.patch = {8, 8, 8}, .batch_size = 2, .augment = false, .seed = 9, .threads = 1});
  auto run = [&](Device device, bool graph, const std::string& dir) {
    Net net = make_net();
    net.to(device);
    optim::Adam adam(net.parameters(), {.lr = 1e-2, .capturable = graph});
    train::Trainer trainer(net, adam, loader, [](const Tensor& logits, const Tensor& target) { return cross_entropy(logits, target); },
                           {.epochs = 3, .iterations_per_epoch = 4, .clip_norm = 0.5, .ema_decay = 0.9, .run_dir = dir,
                            .progress = false, .device = device, .cuda_graph = graph, .graph_warmup = 2});
    trainer.set_forward([&](const Tensor& x) { return net.forward(x); });
    trainer.set_schedule([](int64_t e) { return train::poly_lr(1e-2, e, 3); });
    const auto history = trainer.fit();
    std::map<std::string, Tensor> state;
    for (const auto& [name, t] : net.state_dict()) state[name] = t.to(Device::cpu());
    return std::pair{state, history};
  };
  const std::string dir = (std::filesystem::temp_directory_path() / "vox_test_gpu_trainer").string();
  std::filesystem::remove_all(dir);
  const auto [cpu_state, cpu_history] = run(Device::cpu(), false, "");
  const auto [gpu_state, gpu_history] = run(gpu, false, dir);
  const auto [graph_state, graph_history] = run(gpu, true, "");
  for (size_t e = 0; e < cpu_history.size(); ++e) {
    CHECK(gpu_history[e].loss == doctest::Approx(cpu_history[e].loss).epsilon(1e-4));
    CHECK(graph_history[e].loss == doctest::Approx(gpu_history[e].loss).epsilon(1e-5));
  }
  for (const auto& [name, t] : cpu_state) {
    VOX_CHECK_CLOSE(values(gpu_state.at(name)), values(t), 1e-4, 1e-3, "GPU trainer, " << name);
    VOX_CHECK_CLOSE(values(graph_state.at(name)), values(gpu_state.at(name)), 1e-5, 1e-4, "CUDA graph trainer, " << name);
  }
  // checkpoints written from the GPU hold host copies: the EMA weights and the step count
  const io::Safetensors checkpoint = io::load_safetensors(dir + "/checkpoint_latest.safetensors");
  CHECK(checkpoint.tensors.count("ema.0.weight") == 1);
  CHECK(checkpoint.tensors.at("optimizer.state.0.step").item<double>() == 12);
}

int main(int argc, char** argv) { return run_gpu_tests("test_cuda", argc, argv); }
