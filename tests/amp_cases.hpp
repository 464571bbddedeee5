#pragma once
// One call of each op in autocast's table (vox/ops/autocast.hpp), on inputs on device d: f32
// ones for the ops that lower, bf16 ones for those that widen or keep, and for `promote` a bf16
// one beside one of dtype `second`. test_amp runs them on the CPU, test_amp_cuda on a GPU.
#include <doctest/doctest.h>

#include <functional>
#include <map>
#include <string>

#include <vox/vox.hpp>

namespace vox::testing {

inline Tensor f32_input(const Shape& shape, uint64_t seed, Device device = Device::cpu()) {
  Generator gen(seed);
  return randn(shape, DType::f32, &gen).to(device);
}


inline std::map<std::string, std::function<Tensor(DType second)>> policy_cases(Device d = Device::cpu()) {
  const Tensor x = f32_input({1, 4, 4, 4, 3}, 1, d), w = f32_input({5, 3, 3, 3, 3}, 2, d), b = f32_input({5}, 3, d);
  const Tensor m = f32_input({4, 6}, 4, d), wt = f32_input({3, 2, 2, 2, 5}, 5, d), mw = f32_input({7, 6}, 6, d);
  const Tensor slope = full({1}, 0.25, DType::f32, d), ones = full({3}, 1.0, DType::f32, d), zero = zeros({3}).to(d);
  const Tensor labels = randint(0, 3, {1, 4, 4, 4}, DType::i64).to(d);
  const Tensor positive = add(abs(x), scalar(0.5));
  return {
      {"conv", [=](DType) { return conv(x, w, b, {.padding = {1}}); }},
      {"conv_transpose", [=](DType) { return conv_transpose(x, wt, {}, {.stride = {2}}); }},
      {"matmul", [=](DType) { return matmul(m, transpose(m, 0, 1)); }},
      {"linear", [=](DType) { return linear(m, mw, {}); }},
      {"scaled_dot_product_attention", [=](DType) { return scaled_dot_product_attention(m.reshape({1, 4, 6}), m.reshape({1, 4, 6}), m.reshape({1, 4, 6})); }},
      {"prelu", [=](DType) { return prelu(x, slope); }},
      {"softmax", [=](DType) { return softmax(x.to(DType::bf16), -1); }},
      {"log_softmax", [=](DType) { return log_softmax(x.to(DType::bf16), -1); }},
      {"cross_entropy", [=](DType) { return cross_entropy(x.to(DType::bf16), labels); }},
      {"binary_cross_entropy_with_logits", [=](DType) { return binary_cross_entropy_with_logits(x.to(DType::bf16), sigmoid(x)); }},
      {"sum", [=](DType) { return sum(x.to(DType::bf16)); }},
      {"mean", [=](DType) { return mean(x.to(DType::bf16), {1, 2}); }},
      {"var", [=](DType) { return var(x.to(DType::bf16), {1}); }},
      {"std_dev", [=](DType) { return std_dev(x.to(DType::bf16), {1}); }},
      {"exp", [=](DType) { return exp(x.to(DType::bf16)); }},
      {"log", [=](DType) { return log(positive.to(DType::bf16)); }},
      {"pow", [=](DType) { return pow(positive.to(DType::bf16), 1.5); }},
      {"upsample_trilinear", [=](DType) { return upsample_trilinear(x.to(DType::bf16), {8, 8, 8}, false); }},
      {"upsample_nearest", [=](DType) { return upsample_nearest(x.to(DType::bf16), {8, 8, 8}); }},
      {"avg_pool3d", [=](DType) { return avg_pool3d(x.to(DType::bf16), {}); }},
      {"adaptive_avg_pool3d", [=](DType) { return adaptive_avg_pool3d(x.to(DType::bf16), {1, 1, 1}); }},
      {"add", [=](DType second) { return add(x.to(DType::bf16), x.to(second)); }},
      {"sub", [=](DType second) { return sub(x.to(DType::bf16), x.to(second)); }},
      {"mul", [=](DType second) { return mul(x.to(DType::bf16), x.to(second)); }},
      {"div", [=](DType second) { return div(x.to(DType::bf16), positive.to(second)); }},
      {"concat", [=](DType second) { return concat({x.to(DType::bf16), x.to(second)}, -1); }},
      {"where", [=](DType second) { return where(gt(x, zeros({}).to(d)), x.to(DType::bf16), x.to(second)); }},
      {"batch_norm", [=](DType) { return batch_norm(x.to(DType::bf16), {}, {}, ones, zero, true); }},
      {"instance_norm", [=](DType) { return instance_norm(x.to(DType::bf16), ones, zero); }},
      {"instance_norm_prelu", [=](DType) { return instance_norm_prelu(x.to(DType::bf16), {}, {}, slope); }},
      {"instance_norm_prelu_add", [=](DType) { return instance_norm_prelu_add(x.to(DType::bf16), {}, {}, slope, x); }},
      {"group_norm", [=](DType) { return group_norm(x.to(DType::bf16), 3, ones, zero); }},
      {"layer_norm", [=](DType) { return layer_norm(x.to(DType::bf16), 1, ones, zero); }},
      {"max_pool3d", [=](DType) { return max_pool3d(x.to(DType::bf16), {}); }},
  };
}


// Checks the output dtype of one case under `policy`, inside an autocast scope whose low
// precision is `low`: products in `low`; f32 ops in f32; promote to the widest input; keep the
// input's dtype (the cases give those ops bf16).
inline void check_output_dtype(CastPolicy policy, const std::function<Tensor(DType second)>& run, DType low) {
  switch (policy) {
    case CastPolicy::lower: CHECK(run(DType::f32).dtype() == low); break;
    case CastPolicy::f32: CHECK(run(DType::f32).dtype() == DType::f32); break;
    case CastPolicy::promote:
      CHECK(run(DType::f32).dtype() == DType::f32);
      CHECK(run(DType::bf16).dtype() == DType::bf16);
      break;
    case CastPolicy::keep: CHECK(run(DType::f32).dtype() == DType::bf16); break;
  }
}

}  // namespace vox::testing
