// Bad input throws vox::Error naming the op and the shapes or dtypes involved; half-precision
// inputs compute in f32 and come back in their own dtype.
#include "harness.hpp"

using namespace vox;
using doctest::Contains;

TEST_CASE("mismatched shapes name the op and both shapes") {
  CHECK_THROWS_WITH_AS(add(ones({2, 3}), ones({4})), Contains("add: shapes [2, 3] and [4] cannot be broadcast"), Error);
  CHECK_THROWS_WITH_AS(matmul(ones({2, 3}), ones({4, 5})), Contains("matmul: inner sizes differ: shapes [2, 3] and [4, 5]"), Error);
  CHECK_THROWS_WITH_AS(linear(ones({2, 3}), ones({5, 4})), Contains("linear"), Error);
  CHECK_THROWS_WITH_AS(concat({ones({2, 3}), ones({3, 3})}, 1), Contains("concat: part 1 has shape [3, 3]"), Error);
  CHECK_THROWS_WITH_AS(split(ones({2, 5}), {2, 2}, 1), Contains("split"), Error);
  CHECK_THROWS_WITH_AS(where(ones({2}, DType::boolean), ones({3}), ones({2})), Contains("where"), Error);
  CHECK_THROWS_WITH_AS(reshape(ones({2, 3}), {4, 2}), Contains("reshape: cannot reshape [2, 3]"), Error);
}

TEST_CASE("convolution checks channels, groups, ranks and sizes") {
  CHECK_THROWS_WITH_AS(conv(ones({1, 4, 4, 4, 3}), ones({8, 3, 3, 3, 2})), Contains("conv: weight shape [8, 3, 3, 3, 2]"), Error);
  CHECK_THROWS_WITH_AS(conv(ones({1, 4, 4, 4, 4}), ones({6, 3, 3, 3, 2}), {}, {.groups = 4}), Contains("groups 4"), Error);
  CHECK_THROWS_WITH_AS(conv(ones({4, 4, 3}), ones({8, 3, 3, 3})), Contains("[N, D, H, W, C]"), Error);
  CHECK_THROWS_WITH_AS(conv(ones({1, 2, 2, 2, 1}), ones({1, 3, 3, 3, 1})), Contains("larger than the padded input"), Error);
  CHECK_THROWS_WITH_AS(conv(ones({1, 4, 4, 4, 1}), ones({1, 3, 3, 3, 1}), {}, {.stride = {1, 2}}), Contains("stride needs 1 or 3"), Error);
  CHECK_THROWS_WITH_AS(conv(ones({1, 4, 4, 4, 1}), ones({1, 3, 3, 3, 1}, DType::f64)), Contains("dtype f32 and weight dtype f64"), Error);
  CHECK_THROWS_WITH_AS(conv_transpose(ones({1, 2, 2, 2, 3}), ones({3, 2, 2, 2, 4}), {}, {.stride = {2}, .output_padding = {2}}),
                       Contains("output_padding"), Error);
  CHECK_THROWS_WITH_AS(conv(ones({1, 4, 4, 4, 1}, DType::i32), ones({1, 3, 3, 3, 1}, DType::i32)), Contains("floating"), Error);
}

TEST_CASE("wrong dtypes and out-of-range axes are refused") {
  CHECK_THROWS_WITH_AS(sum(ones({2, 3}), {2}), Contains("sum: axis 2 is out of range for rank 2"), Error);
  CHECK_THROWS_WITH_AS(softmax(ones({2, 3}), -3), Contains("softmax: axis -3"), Error);
  CHECK_THROWS_WITH_AS(permute(ones({2, 3}), {0, 0}), Contains("repeated"), Error);
  CHECK_THROWS_WITH_AS(add(ones({2}, DType::boolean), ones({2}, DType::boolean)), Contains("add: bool"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(ones({2, 3}), ones({2})), Contains("integer class indices"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(ones({2, 3}), zeros({3}, DType::i64)), Contains("target shape [3]"), Error);
  CHECK_THROWS_WITH_AS(one_hot(from_vector<int64_t>({0, 3}, {2}), 3), Contains("label 3 at flat index 1"), Error);
  CHECK_THROWS_WITH_AS(group_norm(ones({2, 4, 6}), 4), Contains("groups 4 must divide the channels 6"), Error);
  CHECK_THROWS_WITH_AS(instance_norm(ones({2, 4, 6}), ones({5})), Contains("weight and bias need 6"), Error);
  CHECK_THROWS_WITH_AS(prelu(ones({2, 4, 6}), ones({4})), Contains("prelu"), Error);
  CHECK_THROWS_WITH_AS(pad(ones({2, 3}), {{0, 0}, {3, 0}}, PadMode::reflect), Contains("reflect padding"), Error);
  CHECK_THROWS_WITH_AS(pad(ones({2, 3}), {{0, 0}}), Contains("one (before, after) pair per axis"), Error);
  CHECK_THROWS_WITH_AS(dropout(ones({2}), 1.5, true), Contains("dropout"), Error);
  CHECK_THROWS_WITH_AS(clamp(ones({2}), 1.0, 0.0), Contains("clamp"), Error);
}

TEST_CASE("empty tensors where values are needed are refused") {
  CHECK_THROWS_WITH_AS(max(zeros({0, 3})), Contains("empty tensor of shape [0, 3]"), Error);
  CHECK_THROWS_WITH_AS(argmax(zeros({3, 0}), 1), Contains("axis 1 of shape [3, 0] is empty"), Error);
  CHECK_THROWS_WITH_AS(mean(zeros({0})), Contains("mean over an empty set"), Error);
  CHECK_THROWS_WITH_AS(instance_norm(zeros({0, 2, 2, 3})), Contains("empty input"), Error);
  CHECK_THROWS_WITH_AS(var(ones({1})), Contains("var: needs more than 1 elements"), Error);
  CHECK(sum(zeros({0, 3})).item<float>() == 0.0f);  // a sum of nothing is zero, as in PyTorch
  CHECK(concat({zeros({0, 3}), ones({2, 3})}, 0).shape() == Shape{2, 3});
}

TEST_CASE("16-bit floats compute in f32 and keep their dtype") {
  Generator gen(5);
  const Tensor x = randn({1, 5, 4, 3, 4}, DType::f32, &gen), w = randn({3, 3, 3, 3, 4}, DType::f32, &gen);
  for (DType t : {DType::f16, DType::bf16}) {
    // The reference: the f32 convolution of the rounded inputs, rounded once. f32 sums in another
    // order may move a result across one rounding boundary, so one unit in the last place is
    // allowed (2^-10 relative for f16, 2^-7 for bf16); accumulating 108 products in 16 bits
    // would be off by several.
    const Tensor xt = x.to(t), wt = w.to(t);
    const Tensor ref = conv(xt.to(DType::f32), wt.to(DType::f32), {}, {.padding = {1}}).to(t);
    const Tensor y = conv(xt, wt, {}, {.padding = {1}});
    CHECK(y.dtype() == t);
    VOX_CHECK_CLOSE(testing::values(y), testing::values(ref), 1e-5, t == DType::f16 ? 1.0 / 1024 : 1.0 / 128, "conv " << dtype_name(t));
    const Tensor s = softmax(x.to(t), -1);
    CHECK(s.dtype() == t);
    VOX_CHECK_CLOSE(testing::values(s), testing::values(softmax(x, -1)), 1e-2, 1e-2, "softmax " << dtype_name(t));
    Tensor xl = x.to(t);
    xl.set_requires_grad();
    sum(instance_norm(xl)).backward();
    CHECK(xl.grad().dtype() == t);
  }
  CHECK(add(ones({2}, DType::f16), ones({2}, DType::bf16)).dtype() == DType::f32);
  CHECK(add(ones({2}, DType::i8), ones({2}, DType::u8)).dtype() == DType::i32);
  CHECK((ones({2}, DType::i32) * 2.5).dtype() == DType::f32);
  CHECK((ones({2}, DType::i32) * 2.0).dtype() == DType::i32);
  CHECK(div(ones({2}, DType::i32), ones({2}, DType::i32)).dtype() == DType::f32);
  CHECK(sum(ones({3}, DType::u8)).dtype() == DType::i64);
}

TEST_CASE("comparisons, argmax and integer arithmetic") {
  const Tensor a = from_vector<int32_t>({1, 5, 3, 5}, {2, 2});
  CHECK(gt(a, scalar(2, DType::i32)).to_vector<bool>() == std::vector<bool>{false, true, true, true});
  CHECK(eq(a, scalar(5, DType::i32)).to_vector<bool>() == std::vector<bool>{false, true, false, true});
  CHECK(argmax(a, 1).to_vector<int64_t>() == std::vector<int64_t>{1, 1});  // first of the ties
  CHECK(argmin(a, 0).to_vector<int64_t>() == std::vector<int64_t>{0, 0});
  CHECK(add(a, a).to_vector<int32_t>() == std::vector<int32_t>{2, 10, 6, 10});
  CHECK(argmax(from_vector<float>({1.0f, NAN, 3.0f}, {3}), 0).item<int64_t>() == 1);  // NaN wins, as in torch
}

TEST_CASE("dropout zeroes about p of the elements and scales the rest") {
  Generator gen(1);
  Tensor x = ones({100000});
  x.set_requires_grad();
  Tensor y = dropout(x, 0.3, true, &gen);
  const auto v = testing::values(y);
  const double zeros_fraction = static_cast<double>(std::count(v.begin(), v.end(), 0.0)) / static_cast<double>(v.size());
  CHECK(zeros_fraction == doctest::Approx(0.3).epsilon(0.03));
  for (double e : v) REQUIRE((e == 0.0 || e == doctest::Approx(1.0 / 0.7)));
  sum(y).backward();
  CHECK(testing::values(x.grad()) == v);
  CHECK(dropout(x, 0.3, false).is_same(x));
}

TEST_CASE("batch norm updates its running statistics like PyTorch, and uses them in eval mode") {
  Generator gen(2);
  const Tensor x = randn({4, 3, 5}, DType::f64, &gen);
  Tensor rm = zeros({5}, DType::f64), rv = ones({5}, DType::f64);
  batch_norm(x, rm, rv, {}, {}, true, 0.1);
  const auto m = testing::values(mean(x, {0, 1}));
  const auto v = testing::values(var(x, {0, 1}));  // unbiased
  for (size_t c = 0; c < 5; ++c) {
    CHECK(rm.to_vector<double>()[c] == doctest::Approx(0.1 * m[c]));
    CHECK(rv.to_vector<double>()[c] == doctest::Approx(0.9 + 0.1 * v[c]));
  }
  const Tensor y = batch_norm(x, rm, rv, {}, {}, false);
  const auto yv = testing::values(y), xv = testing::values(x);
  for (size_t i = 0; i < xv.size(); ++i) {
    const size_t c = i % 5;
    REQUIRE(yv[i] == doctest::Approx((xv[i] - rm.to_vector<double>()[c]) / std::sqrt(rv.to_vector<double>()[c] + 1e-5)));
  }
}
