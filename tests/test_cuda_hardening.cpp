// GPU paths that issue 17's review found could not work, each against the CPU or against what
// the fix promises: batch norm training on the device (running statistics from the variance,
// the batch count, captured in a graph), a cuBLAS handle per stream, copies and comparisons that
// keep every bit, defined float-to-integer conversion, integer arithmetic, 16-bit cross-entropy
// and draws, an optimizer state loaded under a captured graph, cuDNN tuning after a capture,
// norms past the grid's limit, and pinned copies that stay asynchronous. Label gpu: without a
// CUDA device the program says why and exits 77, which CTest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <thread>

#include <vox/vox.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::testing;
using doctest::Contains;

namespace {
const Device gpu = Device::cuda(0);
const Device cpu = Device::cpu();
}  // namespace

TEST_CASE("batch norm trains on the GPU: running statistics and batch count on the device, as the CPU's") {
  // values of spread 1e-4 (variance 1e-8, far below eps = 1e-5): 1/rstd^2 - eps would cancel
  Generator g(3);
  const Tensor x = randn({4, 5, 6, 3, 7}, DType::f32, &g) * 1e-4 + 2.0;
  nn::BatchNorm<3> on_cpu(7), on_gpu(7);
  on_gpu.to(gpu);
  for (int step = 0; step < 3; ++step) {
    (void)on_cpu.forward(x);
    (void)on_gpu.forward(x.to(gpu));
  }
  const auto a = on_cpu.state_dict(), b = on_gpu.state_dict();
  CHECK(b.at("num_batches_tracked").device() == gpu);
  CHECK(b.at("num_batches_tracked").to(cpu).item<int64_t>() == 3);
  VOX_CHECK_CLOSE(values(b.at("running_mean").to(cpu)), values(a.at("running_mean")), 1e-6, 1e-6, "running_mean");
  VOX_CHECK_CLOSE(values(b.at("running_var").to(cpu)), values(a.at("running_var")), 1e-12, 1e-3, "running_var with var << eps");
  // a training step with batch norm is captured, and its replays advance the statistics
  Tensor input = x.to(gpu), out;
  CudaGraph graph;
  graph.capture([&] { out = on_gpu.forward(input); });
  for (int r = 0; r < 2; ++r) graph.replay();
  (void)on_cpu.forward(x);
  (void)on_cpu.forward(x);
  CHECK(on_gpu.state_dict().at("num_batches_tracked").to(cpu).item<int64_t>() == 6);  // 3 eager, the capture's own, 2 replays
  const auto c = on_gpu.state_dict();
  (void)on_cpu.forward(x);  // the capture ran the step once more
  VOX_CHECK_CLOSE(values(c.at("running_mean").to(cpu)), values(on_cpu.state_dict().at("running_mean")), 1e-6, 1e-6,
                  "running_mean after replays");
}

TEST_CASE("a model with batch norm trains on the GPU as on the CPU") {
  const auto config = nn::models::resnet_config(10, {.n_input_channels = 1, .widen_factor = 0.125, .num_classes = 2});
  nn::models::ResNet3D net(config), twin(config);
  twin.load_state_dict(net.state_dict());
  twin.to(gpu);
  optim::SGD a(net.parameters(), {.lr = 0.01}), b(twin.parameters(), {.lr = 0.01});
  Generator g(5);
  const Tensor x = randn({2, 16, 16, 16, 1}, DType::f32, &g);
  const Tensor y = from_vector<int64_t>({0, 1}, {2});
  for (int step = 0; step < 2; ++step) {
    cross_entropy(net.forward(x), y).backward();
    a.step();
    a.zero_grad();
    cross_entropy(twin.forward(x.to(gpu)), y.to(gpu)).backward();
    b.step();
    b.zero_grad();
  }
  const auto sa = net.state_dict(), sb = twin.state_dict();
  for (const auto& [name, t] : sa) VOX_CHECK_CLOSE(values(sb.at(name).to(cpu)), values(t), 1e-4, 1e-3, name);
}

TEST_CASE("two threads on two streams multiply with cuBLAS at once, each on its own stream") {
  Generator g(7);
  const Tensor a = randn({96, 80}, DType::f32, &g), b = randn({80, 72}, DType::f32, &g);
  const Tensor want = matmul(a, b);
  const Tensor da = a.to(gpu), db = b.to(gpu);
  std::vector<Tensor> results(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      CudaStream stream(0);
      CudaStreamGuard guard(stream);
      Tensor sum_of = zeros({96, 72}, DType::f32, gpu);
      for (int k = 0; k < 50; ++k) sum_of = add(sum_of, matmul(da, db));
      stream.synchronize();
      results[static_cast<size_t>(t)] = sum_of.to(cpu);
    });
  for (auto& t : threads) t.join();
  for (const Tensor& r : results) VOX_CHECK_CLOSE(values(r), values(want * 50.0), 1e-3, 1e-4, "matmul on a second stream");
}

TEST_CASE("copies keep every bit, and conversions and comparisons follow the CPU's rules") {
  // i64 beyond 2^53: a clone, a strided copy and a comparison are exact
  const int64_t big = (int64_t{1} << 60) + 1;
  const Tensor i = from_vector<int64_t>({big, big - 1, -big, 7}, {2, 2});
  CHECK(i.to(gpu).clone().to(cpu).to_vector<int64_t>() == i.to_vector<int64_t>());
  CHECK(i.to(gpu).transpose(0, 1).contiguous().to(cpu).to_vector<int64_t>() == i.transpose(0, 1).contiguous().to_vector<int64_t>());
  CHECK(gt(i.to(gpu), full({}, static_cast<double>(big - 1), DType::i64, gpu)).to(cpu).to_vector<bool>() ==
        gt(i, full({}, static_cast<double>(big - 1), DType::i64)).to_vector<bool>());
  const Tensor j = from_vector<int64_t>({big, big - 1}, {2});
  CHECK(eq(j.to(gpu), from_vector<int64_t>({big - 1, big - 1}, {2}).to(gpu)).to(cpu).to_vector<bool>() == std::vector<bool>{false, true});
  // floating to integer: truncation, NaN to 0, saturation; the same on both devices
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor f = from_vector<double>({nan, inf, -inf, 1e30, -1e30, 2.9, -2.9, 255.5, -0.5, 3e9}, {10});
  for (DType to : {DType::i8, DType::u8, DType::i32, DType::i64, DType::boolean}) {
    for (DType from : {DType::f64, DType::f32, DType::f16, DType::bf16}) {
      INFO(dtype_name(from), " -> ", dtype_name(to));
      const Tensor source = f.to(from);
      CHECK(values(source.to(gpu).to(to).to(cpu)) == values(source.to(to)));
    }
  }
  CHECK(f.to(DType::i32).to_vector<int32_t>() ==
        std::vector<int32_t>{0, 2147483647, -2147483647 - 1, 2147483647, -2147483647 - 1, 2, -2, 255, 0, 2147483647});
}

TEST_CASE("integer arithmetic on the GPU is exact, and what it does not take is refused by name") {
  const Tensor a = from_vector<int64_t>({(int64_t{1} << 60) + 3, -5, 7}, {3}), b = from_vector<int64_t>({1, 9, -4}, {3});
  CHECK(add(a.to(gpu), b.to(gpu)).to(cpu).to_vector<int64_t>() == add(a, b).to_vector<int64_t>());
  CHECK(sub(a.to(gpu), b.to(gpu)).to(cpu).to_vector<int64_t>() == sub(a, b).to_vector<int64_t>());
  CHECK(mul(a.to(gpu), b.to(gpu)).to(cpu).to_vector<int64_t>() == mul(a, b).to_vector<int64_t>());
  CHECK(neg(a.to(gpu)).to(cpu).to_vector<int64_t>() == neg(a).to_vector<int64_t>());
  const Tensor c = from_vector<int32_t>({100, -100, 27}, {3});
  CHECK(mul(c.to(gpu), c.to(gpu)).to(cpu).to_vector<int32_t>() == mul(c, c).to_vector<int32_t>());
  CHECK(add(c.to(gpu).to(DType::u8), c.to(gpu).to(DType::u8)).to(cpu).to_vector<uint8_t>() ==
        add(c.to(DType::u8), c.to(DType::u8)).to_vector<uint8_t>());
  CHECK_THROWS_WITH_AS(exp(c.to(gpu)), Contains("integer tensors on CUDA take neg, abs and square"), Error);
}

TEST_CASE("16-bit cross-entropy and random draws run on the GPU, as on the CPU") {
  Generator g(9);
  const Tensor logits = randn({6, 5, 4}, DType::f32, &g);
  const Tensor target = randint(0, 4, {6, 5}, DType::i64, &g);
  for (DType t : {DType::f16, DType::bf16}) {
    INFO(dtype_name(t));
    Tensor on_cpu = logits.to(t).detach().set_requires_grad(), on_gpu = logits.to(t).to(gpu).detach().set_requires_grad();
    const Tensor l_cpu = cross_entropy(on_cpu, target), l_gpu = cross_entropy(on_gpu, target.to(gpu));
    CHECK(l_gpu.dtype() == t);
    CHECK(l_gpu.to(cpu).item<double>() == doctest::Approx(l_cpu.item<double>()).epsilon(t == DType::f16 ? 2e-3 : 1e-2));
    l_cpu.backward();
    l_gpu.backward();
    VOX_CHECK_CLOSE(values(on_gpu.grad().to(cpu)), values(on_cpu.grad()), 1e-3, 2e-2, "16-bit cross-entropy gradient");
    // draws: the same counters give the CPU's values
    Generator a(21), b(21);
    CHECK(values(rand({1001}, t, &a, gpu).to(cpu)) == values(rand({1001}, t, &b)));
    CHECK(values(randn({999}, t, &a, 0.0, 1.0, gpu).to(cpu)) == values(randn({999}, t, &b)));
    CHECK(values(bernoulli({777}, 0.3, t, &a, gpu).to(cpu)) == values(bernoulli({777}, 0.3, t, &b)));
  }
}

TEST_CASE("an optimizer state loaded after a capture is what the captured step replays from") {
  Generator g(13);
  const Tensor init = randn({33}, DType::f32, &g);
  Tensor p = init.to(gpu).detach().set_requires_grad();
  optim::Adam adam({p}, {.lr = 1e-2, .capturable = true});
  Tensor loss;
  auto step = [&] {
    adam.zero_grad();
    loss = sum(mul(p, p));
    loss.backward();
    adam.step();
  };
  step();  // warm-up: the schedule is made on the device
  const std::map<std::string, Tensor> saved = adam.state_dict();
  const Tensor p_saved = p.detach().clone();
  CudaGraph graph;
  graph.capture(step);
  graph.replay();
  graph.replay();
  // back to the saved state, then replays: the same as two eager steps from it
  adam.load_state_dict(saved);
  p.detach().copy_from(p_saved);
  graph.replay();
  graph.replay();
  Tensor q = p_saved.to(cpu).detach().set_requires_grad();
  optim::Adam eager({q}, {.lr = 1e-2});
  std::map<std::string, Tensor> on_cpu;
  for (const auto& [k, v] : saved) on_cpu[k] = v.to(cpu);
  eager.load_state_dict(on_cpu);
  for (int s = 0; s < 2; ++s) {
    eager.zero_grad();
    sum(mul(q, q)).backward();
    eager.step();
  }
  VOX_CHECK_CLOSE(values(p.to(cpu)), values(q), 1e-6, 1e-5, "replays after load_state_dict");
  CHECK(adam.state_dict().at("state.0.step").item<double>() == saved.at("state.0.step").item<double>() + 2);
}

TEST_CASE("tuning a convolution after a graph captured it leaves the graph's plan alive") {
  Generator g(17);
  const Tensor x = randn({1, 9, 11, 10, 3}, DType::f32, &g).to(gpu), w = randn({5, 3, 3, 3, 3}, DType::f32, &g).to(gpu);
  Tensor out;
  CudaGraph graph;
  graph.capture([&] { out = conv(x, w, {}, {.padding = {1}}); });  // untuned: cuDNN's first choice, untimed
  const Tensor eager = conv(x, w, {}, {.padding = {1}});            // eager: tunes this shape
  graph.replay();
  cuda_synchronize(0);
  VOX_CHECK_CLOSE(values(out.to(cpu)), values(eager.to(cpu)), 1e-4, 1e-4, "the captured convolution after tuning");
}

TEST_CASE("norms past the grid's limit (2^27 channels of statistics) normalise every channel") {
  const int64_t channels = (int64_t{1} << 27) + 3;  // grid_for() caps a launch at 2^27 threads
  const Tensor x = arange(2 * channels, DType::f32).to(gpu).reshape({1, 2, channels});
  const Tensor y = instance_norm(x.reshape({1, 1, 2, channels}));
  // each channel holds two values: normalised they are -1 and +1 (up to eps)
  const Tensor last = y.reshape({2, channels}).slice(1, channels - 4, channels).to(cpu);
  const auto v = values(last);
  for (size_t k = 0; k < 4; ++k) {
    CHECK(v[k] == doctest::Approx(-1.0).epsilon(1e-3));
    CHECK(v[4 + k] == doctest::Approx(1.0).epsilon(1e-3));
  }
}

TEST_CASE("a non-blocking copy from a temporary pinned tensor returns before the device is done") {
  // keep the device busy (some 14 TFLOP of GEMMs), then queue the copy from a pinned tensor that
  // dies at once; a first pinned tensor of the size is made and freed beforehand, so the timed
  // one comes from the cache rather than from cudaHostAlloc
  Generator g(19);
  const Tensor host = randn({1 << 20}, DType::f32, &g);
  { const Tensor warm = host.pin_memory(); }
  const Tensor big = randn({4096, 4096}, DType::f32, &g).to(gpu);
  cuda_synchronize(0);
  Tensor busy = big;
  for (int k = 0; k < 100; ++k) busy = matmul(busy, big);
  const auto start = std::chrono::steady_clock::now();
  const Tensor on_device = host.pin_memory().to(gpu, /*non_blocking=*/true);  // the pinned temporary goes here
  const double queued_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  cuda_synchronize(0);
  const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  INFO("queued in " << queued_ms << " ms, done in " << total_ms << " ms");
  CHECK(queued_ms < total_ms / 2);  // freeing the pinned block did not wait for the device
  CHECK(values(on_device.to(cpu)) == values(host));
}

int main(int argc, char** argv) { return run_gpu_tests("test_cuda_hardening", argc, argv); }
