// PyTorch parity: each case's fixture (made at test time by parity/make_fixtures.py with
// Debian's python3-torch) holds inputs in PyTorch's layout, the output, an upstream gradient
// and the inputs' gradients. vox converts layouts with its public from_channels_first /
// to_channels_first, runs the op, and must agree in f64 to ~1e-10.
// Built with VOX_PARITY_ON_GPU (test_parity_cuda, label gpu), every case runs with its inputs on
// the GPU, reached through the differentiable to_device so that the gradients come back to the
// host leaves; without a CUDA device that program says why and exits 77 (skipped).
#ifdef VOX_PARITY_ON_GPU
#define DOCTEST_CONFIG_IMPLEMENT
#endif
#include <cstdlib>
#include <filesystem>

#include <vox/io/safetensors.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::testing;

namespace {

enum class L { plain, channels };  // channels: PyTorch's axis 1 is vox's last axis

struct ParityCase {
  std::string name;
  std::vector<L> inputs;
  L output;
  std::function<Tensor(const std::vector<Tensor>&)> run;
};

Tensor to_vox(const Tensor& t, L layout) { return layout == L::channels ? from_channels_first(t) : t; }
Tensor to_torch(const Tensor& t, L layout) { return layout == L::channels ? to_channels_first(t) : t; }

std::vector<ParityCase> cases() {
  const L P = L::plain, C = L::channels;
  auto bin = [P](std::string name, Tensor (*f)(const Tensor&, const Tensor&)) {
    return ParityCase{name, {P, P}, P, [f](auto& in) { return f(in[0], in[1]); }};
  };
  auto un = [P](std::string name, std::function<Tensor(const Tensor&)> f) {
    return ParityCase{name, {P}, P, [f](auto& in) { return f(in[0]); }};
  };
  ConvOptions strided;
  strided.stride = {2, 1, 2};
  strided.padding = {1, 0, 2};
  strided.dilation = {1, 2, 1};
  strided.groups = 2;
  return {
      bin("add", add), bin("sub", sub), bin("mul", mul), bin("div", div),
      bin("pow", [](const Tensor& a, const Tensor& b) { return pow(a, b); }), bin("eq", eq), bin("lt", lt), bin("ge", ge),
      {"where", {P, P, P}, P, [](auto& in) { return where(in[0], in[1], in[2]); }},
      un("neg", [](const Tensor& x) { return neg(x); }), un("exp", [](const Tensor& x) { return exp(x); }),
      un("log", [](const Tensor& x) { return log(x); }), un("sqrt", [](const Tensor& x) { return sqrt(x); }),
      un("abs", [](const Tensor& x) { return abs(x); }), un("pow_scalar", [](const Tensor& x) { return pow(x, 2.5); }),
      un("clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); }), un("sigmoid", [](const Tensor& x) { return sigmoid(x); }),
      un("tanh", [](const Tensor& x) { return tanh(x); }), un("relu", [](const Tensor& x) { return relu(x); }),
      un("leaky_relu", [](const Tensor& x) { return leaky_relu(x, 0.1); }), un("gelu", [](const Tensor& x) { return gelu(x); }),
      un("gelu_tanh", [](const Tensor& x) { return gelu(x, GeluApproximation::tanh); }),
      un("sum_axes", [](const Tensor& x) { return sum(x, {1, 3}); }), un("sum_all", [](const Tensor& x) { return sum(x); }),
      un("mean_keepdim", [](const Tensor& x) { return mean(x, {0, 2}, true); }),
      un("amax", [](const Tensor& x) { return max(x, {1}); }), un("amin", [](const Tensor& x) { return min(x, {0, 3}, true); }),
      un("amax_ties", [](const Tensor& x) { return max(x, {1}); }), un("argmax", [](const Tensor& x) { return argmax(x, 1); }),
      un("var", [](const Tensor& x) { return var(x, {1, 3}); }), un("std", [](const Tensor& x) { return std_dev(x); }),
      bin("matmul", matmul), bin("matmul_vector", matmul),
      {"linear", {P, P, P}, P, [](auto& in) { return linear(in[0], in[1], in[2]); }},
      {"conv3d", {C, C, P}, C, [](auto& in) { return conv(in[0], in[1], in[2], {.padding = {1}}); }},
      {"conv3d_strided_dilated_grouped", {C, C, P}, C, [strided](auto& in) { return conv(in[0], in[1], in[2], strided); }},
      {"conv2d", {C, C, P}, C, [](auto& in) { return conv(in[0], in[1], in[2], {.stride = {2, 1}, .padding = {1, 0}, .groups = 2}); }},
      {"conv_transpose3d", {C, C, P}, C,
       [](auto& in) { return conv_transpose(in[0], in[1], in[2], {.stride = {2}, .padding = {1}, .output_padding = {1}}); }},
      {"conv_transpose3d_k2", {C, C, P}, C, [](auto& in) { return conv_transpose(in[0], in[1], in[2], {.stride = {2}}); }},
      {"conv_transpose2d_grouped", {C, C, P}, C,
       [](auto& in) {
         return conv_transpose(in[0], in[1], in[2],
                               {.stride = {2, 3}, .padding = {1, 0}, .output_padding = {1, 2}, .dilation = {2, 1}, .groups = 2});
       }},
      {"max_pool3d", {C}, C, [](auto& in) { return max_pool3d(in[0], {{3}, {2}, {1}}); }},
      {"avg_pool3d_include_pad", {C}, C, [](auto& in) { return avg_pool3d(in[0], {{3, 2, 3}, {2, 1, 2}, {1}, true}); }},
      {"avg_pool3d_exclude_pad", {C}, C, [](auto& in) { return avg_pool3d(in[0], {{3}, {2}, {1}, false}); }},
      {"adaptive_avg_pool3d", {C}, C, [](auto& in) { return adaptive_avg_pool3d(in[0], {3, 4, 2}); }},
      {"upsample_nearest", {C}, C, [](auto& in) { return upsample_nearest(in[0], {7, 12, 5}); }},
      {"upsample_trilinear", {C}, C, [](auto& in) { return upsample_trilinear(in[0], {7, 12, 5}, false); }},
      {"upsample_trilinear_align", {C}, C, [](auto& in) { return upsample_trilinear(in[0], {7, 12, 5}, true); }},
      {"upsample_trilinear_down", {C}, C, [](auto& in) { return upsample_trilinear(in[0], {3, 4, 2}, false); }},
      {"batch_norm_train", {C, P, P}, C, [](auto& in) { return batch_norm(in[0], {}, {}, in[1], in[2], true); }},
      {"batch_norm_eval", {C, P, P, P, P}, C, [](auto& in) { return batch_norm(in[0], in[1], in[2], in[3], in[4], false); }},
      {"instance_norm_affine", {C, P, P}, C, [](auto& in) { return instance_norm(in[0], in[1], in[2]); }},
      {"instance_norm", {C}, C, [](auto& in) { return instance_norm(in[0]); }},
      {"group_norm", {C, P, P}, C, [](auto& in) { return group_norm(in[0], 3, in[1], in[2]); }},
      {"layer_norm", {P, P, P}, P, [](auto& in) { return layer_norm(in[0], 2, in[1], in[2]); }},
      {"prelu_shared", {C, P}, C, [](auto& in) { return prelu(in[0], in[1]); }},
      {"prelu_channel", {C, P}, C, [](auto& in) { return prelu(in[0], in[1]); }},
      {"softmax_channels", {C}, C, [](auto& in) { return softmax(in[0], -1); }},
      {"log_softmax_last", {P}, P, [](auto& in) { return log_softmax(in[0], -1); }},
      {"concat", {P, P}, P, [](auto& in) { return concat({in[0], in[1]}, 1); }},
      {"split", {P}, P, [](auto& in) { return split(in[0], {2, 4, 1}, 1)[1]; }},
      {"pad_constant", {C}, C, [](auto& in) { return pad(in[0], {{0, 0}, {0, 3}, {2, 1}, {1, 0}, {0, 0}}, PadMode::constant, 0.5); }},
      {"pad_reflect", {C}, C, [](auto& in) { return pad(in[0], {{0, 0}, {0, 3}, {2, 1}, {1, 2}, {0, 0}}, PadMode::reflect); }},
      {"pad_replicate", {C}, C, [](auto& in) { return pad(in[0], {{0, 0}, {0, 3}, {2, 1}, {1, 0}, {0, 0}}, PadMode::replicate); }},
      {"flip", {P}, P, [](auto& in) { return flip(in[0], {0, 2}); }},
      {"one_hot", {P}, P, [](auto& in) { return one_hot(in[0], 4, DType::i64); }},
      {"cross_entropy_seg", {C, P, P}, P, [](auto& in) { return cross_entropy(in[0], in[1], {.weight = in[2]}); }},
      {"cross_entropy_smoothing_ignore", {C, P, P}, P,
       [](auto& in) { return cross_entropy(in[0], in[1], {.weight = in[2], .ignore_index = -100, .label_smoothing = 0.1}); }},
      {"cross_entropy_smoothing_unweighted", {P, P}, P, [](auto& in) { return cross_entropy(in[0], in[1], {.label_smoothing = 0.2}); }},
      {"cross_entropy_sum", {P, P}, P, [](auto& in) { return cross_entropy(in[0], in[1], {.reduction = Reduction::sum}); }},
      {"cross_entropy_none", {P, P}, P, [](auto& in) { return cross_entropy(in[0], in[1], {.reduction = Reduction::none}); }},
      {"bce_with_logits", {P, P, P, P}, P,
       [](auto& in) { return binary_cross_entropy_with_logits(in[0], in[1], in[2], in[3]); }},
      {"sdpa_bool_mask", {P, P, P, P}, P, [](auto& in) { return scaled_dot_product_attention(in[0], in[1], in[2], in[3]); }},
      {"sdpa_additive_mask", {P, P, P, P}, P, [](auto& in) { return scaled_dot_product_attention(in[0], in[1], in[2], in[3]); }},
  };
}

#ifdef VOX_PARITY_ON_GPU
const Device parity_device = Device::cuda(0);
#else
const Device parity_device = Device::cpu();
#endif

std::string fixture_dir() {
  const char* dir = std::getenv("VOX_PARITY_DIR");
  return dir ? dir : "parity";
}

}  // namespace

TEST_CASE("every op agrees with PyTorch, forward and backward") {
  const std::string dir = fixture_dir();
  INFO("fixtures from " << dir << " (made by tests/parity/make_fixtures.py)");
  REQUIRE(std::filesystem::is_directory(dir));
  size_t checked = 0;
  for (const ParityCase& c : cases()) {
    SUBCASE(c.name.c_str()) {
      const io::Safetensors f = io::load_safetensors(dir + "/" + c.name + ".safetensors");
      std::vector<Tensor> leaves, inputs;
      for (size_t i = 0; i < c.inputs.size(); ++i) {
        Tensor x = f.at("x" + std::to_string(i)).clone();
        if (f.contains("grad_x" + std::to_string(i))) x.set_requires_grad();
        leaves.push_back(x);
        inputs.push_back(to_vox(to_device(x, parity_device), c.inputs[i]));
      }
      const Tensor on_device = c.run(inputs);
      CHECK(on_device.device() == parity_device);
      const Tensor out = to_device(on_device, Device::cpu());
      const Tensor want = f.at("out");
      REQUIRE(to_torch(out, c.output).shape() == want.shape());
      CHECK(out.dtype() == want.dtype());
      VOX_CHECK_CLOSE(values(to_torch(out, c.output)), values(want), 1e-10, 1e-9, c.name << " output");
      if (f.contains("grad_out")) {
        out.backward(to_vox(f.at("grad_out"), c.output));
        for (size_t i = 0; i < leaves.size(); ++i) {
          const std::string key = "grad_x" + std::to_string(i);
          if (!f.contains(key)) continue;
          REQUIRE(leaves[i].grad().defined());
          VOX_CHECK_CLOSE(values(leaves[i].grad()), values(f.at(key)), 1e-10, 1e-9, c.name << " gradient of input " << i);
        }
      }
      ++checked;
    }
  }
  // every fixture the script wrote has a case here, and the other way round
  size_t fixtures = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) fixtures += entry.path().extension() == ".safetensors";
  CHECK(fixtures == cases().size());
}

#ifdef VOX_PARITY_ON_GPU
int main(int argc, char** argv) { return run_gpu_tests("test_parity_cuda", argc, argv); }
#endif
