// Floor 3: the tape, the engine, no_grad, detach, release of saved tensors, checkpointing, and
// that the test harness itself can fail.
#include "harness.hpp"

using namespace vox;
using namespace vox::testing;

TEST_CASE("backward from a scalar, with a gradient, and accumulation") {
  Tensor x = from_vector<double>({1.0, 2.0, 3.0}, {3});
  x.set_requires_grad();
  Tensor y = sum(mul(x, x));
  y.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{2, 4, 6});
  sum(mul(x, x)).backward();  // accumulates
  CHECK(x.grad().to_vector<double>() == std::vector<double>{4, 8, 12});
  x.zero_grad();
  Tensor z = mul(x, scalar(3.0, DType::f64));
  z.backward(from_vector<double>({1.0, 0.5, 0.0}, {3}));
  CHECK(x.grad().to_vector<double>() == std::vector<double>{3, 1.5, 0});
}

TEST_CASE("a tensor used twice sums its gradients (diamond graph)") {
  Tensor x = from_vector<double>({0.5, -1.0}, {2});
  x.set_requires_grad();
  const Tensor a = exp(x);
  const Tensor b = mul(a, a);  // exp(2x)
  const Tensor c = add(b, a);
  sum(c).backward();
  const auto g = x.grad().to_vector<double>();
  CHECK(g[0] == doctest::Approx(2 * std::exp(1.0) + std::exp(0.5)));
  CHECK(g[1] == doctest::Approx(2 * std::exp(-2.0) + std::exp(-1.0)));
}

TEST_CASE("no_grad and detach stop recording") {
  Tensor x = ones({2});
  x.set_requires_grad();
  {
    NoGradGuard guard;
    CHECK(!mul(x, x).requires_grad());
  }
  CHECK(mul(x, x).requires_grad());
  CHECK(!mul(x.detach(), x.detach()).requires_grad());
  CHECK_THROWS_WITH_AS(sum(x.detach()).backward(), doctest::Contains("does not require grad"), Error);
}

TEST_CASE("backward needs a gradient for non-scalars and refuses a freed graph") {
  Tensor x = ones({2, 2});
  x.set_requires_grad();
  Tensor y = exp(x);
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("[2, 2]"), Error);
  CHECK_THROWS_WITH_AS(y.backward(ones({3})), doctest::Contains("[3]"), Error);
  Tensor loss = sum(y);
  loss.backward();
  CHECK_THROWS_WITH_AS(loss.backward(), doctest::Contains("already freed"), Error);
}

TEST_CASE("integer tensors cannot require grad") {
  Tensor labels = zeros({3}, DType::i64);
  CHECK_THROWS_AS(labels.set_requires_grad(), Error);
}

TEST_CASE("a node frees what it saved as soon as its backward has run") {
  Tensor x = randn({256, 1024});  // 1 MiB
  x.set_requires_grad();
  Tensor loss;
  {
    // Intermediates live only in the graph: exp saves its 1 MiB output, mul saves both inputs.
    const Tensor h = exp(x);
    loss = sum(mul(h, h));
  }
  const int64_t before = cpu_memory_stats().current_bytes;
  loss.backward();
  const int64_t after = cpu_memory_stats().current_bytes;
  // x.grad (1 MiB) was added; the saved activations (>= 1 MiB) are gone.
  CHECK(after <= before);
}

namespace {
Tensor deep_block(const Tensor& x, const Tensor& w) {
  Tensor h = x;
  for (int i = 0; i < 8; ++i) h = tanh(mul(h, w));
  return h;
}
}  // namespace

TEST_CASE("checkpointing gives the same gradients with a lower peak memory") {
  Generator gen(3);
  const Tensor input = randn({64, 64, 64}, DType::f32, &gen);  // 1 MiB per activation
  Tensor w_plain = randn({64}, DType::f32, &gen);
  Tensor w_ckpt = w_plain.clone();
  w_plain.set_requires_grad();
  w_ckpt.set_requires_grad();
  Tensor x_plain = input.clone(), x_ckpt = input.clone();
  x_plain.set_requires_grad();
  x_ckpt.set_requires_grad();

  reset_cpu_peak_memory();
  const int64_t base_plain = cpu_memory_stats().current_bytes;
  {
    Tensor h = x_plain;
    for (int b = 0; b < 4; ++b) h = deep_block(h, w_plain);
    sum(h).backward();
  }
  const int64_t peak_plain = cpu_memory_stats().peak_bytes - base_plain;

  reset_cpu_peak_memory();
  const int64_t base_ckpt = cpu_memory_stats().current_bytes;
  {
    Tensor h = x_ckpt;
    for (int b = 0; b < 4; ++b) h = checkpoint([&](const Tensor& in) { return deep_block(in, w_ckpt); }, h);
    sum(h).backward();
  }
  const int64_t peak_ckpt = cpu_memory_stats().peak_bytes - base_ckpt;

  VOX_CHECK_CLOSE(values(x_ckpt.grad()), values(x_plain.grad()), 1e-6, 1e-5, "input gradient");
  VOX_CHECK_CLOSE(values(w_ckpt.grad()), values(w_plain.grad()), 1e-4, 1e-5, "parameter gradient");
  INFO("peak without checkpointing " << peak_plain << " bytes, with " << peak_ckpt);
  CHECK(peak_ckpt * 2 < peak_plain);
}

TEST_CASE("checkpointing replays dropout masks in the recomputation") {
  manual_seed(9);
  Tensor x = ones({1000});
  x.set_requires_grad();
  Tensor y = checkpoint([](const Tensor& in) { return dropout(in, 0.5, true); }, x);
  sum(y).backward();
  // The gradient is the mask the forward pass used, scaled by 2.
  CHECK(values(x.grad()) == values(y));
}

TEST_CASE("the harness fails on a wrong gradient and on wrong values") {
  // An op whose backward is off by a factor of two.
  auto wrong = [](const std::vector<Tensor>& in) {
    Tensor out = in[0].detach().clone();
    autograd::record("WrongBackward", out, {in[0]}, [](const Tensor& g) { return std::vector<Tensor>{mul(g, scalar(2.0, g.dtype()))}; });
    return out;
  };
  Tensor x = randn({5}, DType::f64);
  x.set_requires_grad();
  CHECK_FALSE(gradcheck(wrong, {x}).ok);
  auto right = [](const std::vector<Tensor>& in) { return mul(in[0], in[0]); };
  Tensor y = randn({5}, DType::f64);
  y.set_requires_grad();
  CHECK(gradcheck(right, {y}).ok);
  CHECK_FALSE(compare({1.0, 2.0}, {1.0, 2.01}, 1e-6, 1e-6).ok());
  CHECK_FALSE(compare({1.0, NAN}, {1.0, 2.0}, 1e-6, 1e-6).ok());
  CHECK(compare({1.0, 2.0}, {1.0, 2.0 + 1e-9}, 1e-6, 1e-6).ok());
}
