// Mixed precision on the GPU: autocast's CUDA column (each rule's output dtype, f16 by default),
// 16-bit convolutions under autocast against f32 on the same device, and a MONAI U-Net training
// step under f16 autocast with the loss scaler and under bf16 autocast: finite, f32 master
// gradients, a loss that falls. Label gpu: without a CUDA device the program says why and exits
// 77, which CTest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <vox/vox.hpp>

#include "amp_cases.hpp"
#include "harness.hpp"

using namespace vox;
using namespace vox::testing;

namespace {
const Device gpu = Device::cuda(0);
}  // namespace

TEST_CASE("autocast's CUDA column: each rule gives its output dtype on the GPU, f16 by default") {
  const auto cases = policy_cases(gpu);
  for (const AutocastRule& rule : autocast_rules()) {
    SUBCASE(std::string(rule.op).c_str()) {
      const auto it = cases.find(std::string(rule.op));
      REQUIRE_MESSAGE(it != cases.end(), "autocast rule '", rule.op, "' has no test case");
      amp::Autocast autocast(gpu);
      check_output_dtype(rule.cuda, it->second, DType::f16);
    }
  }
}

TEST_CASE("f16 and bf16 convolutions under autocast on the GPU, against f32 there") {
  const Tensor x = f32_input({2, 12, 10, 9, 16}, 1, gpu), w = f32_input({32, 3, 3, 3, 16}, 2, gpu) * 0.1;
  const Tensor want = conv(x, w, {}, {.padding = {1}}).to(Device::cpu());
  for (const DType low : {DType::f16, DType::bf16}) {
    amp::Autocast autocast(low, gpu);
    const Tensor got = conv(x, w, {}, {.padding = {1}});
    CHECK(got.dtype() == low);
    // K = 432 products of N(0, 1) x N(0, 0.01): bf16_products_atol's rule, at this scale
    VOX_CHECK_CLOSE(values(got.to(DType::f32).to(Device::cpu())), values(want), 0.3 * 3.0 * std::sqrt(432.0) / 256.0, 0.02,
                    dtype_name(low) << " conv");
  }
}

TEST_CASE("a MONAI U-Net trains on the GPU under f16 autocast with the loss scaler, and under bf16") {
  for (const DType low : {DType::f16, DType::bf16}) {
    INFO(dtype_name(low));
    manual_seed(0);
    nn::models::AnyModel model = nn::models::make_model({.arch = "monai-unet", .in_channels = 1, .classes = 2, .channels = {8, 16, 32}});
    model.module->to(gpu);
    optim::Adam adam(model.module->parameters(), {.lr = 1e-3});
    amp::GradScaler scaler({.enabled = low == DType::f16});
    Generator g(1);
    const Tensor x = randn({2, 32, 32, 32, 1}, DType::f32, &g).to(gpu);
    const Tensor y = gt(x, zeros({}).to(gpu)).to(DType::i64).reshape({2, 32, 32, 32});
    double first = 0, last = 0;
    for (int step = 0; step < 30; ++step) {
      adam.zero_grad();
      Tensor loss;
      {
        amp::Autocast autocast(low, gpu);
        const Tensor logits = model.forward(x);
        CHECK(logits.dtype() == low);
        loss = losses::dice_ce_loss(logits, y, {.dice = {.activation = losses::Activation::softmax}});
      }
      CHECK(loss.dtype() == DType::f32);
      scaler.scale(loss).backward();
      for (const Tensor& p : model.module->parameters()) REQUIRE(p.grad().dtype() == DType::f32);
      scaler.step(adam);
      scaler.update();
      (step == 0 ? first : last) = loss.item<double>();
    }
    CHECK(std::isfinite(last));
    CHECK(last < 0.7 * first);
  }
}

int main(int argc, char** argv) { return run_gpu_tests("test_amp_cuda", argc, argv); }
