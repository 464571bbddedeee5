// The CUDA backend: each op's CUDA path against the CPU kernels on the same inputs (odd shapes,
// broadcasting, non-contiguous views), gradients through the tape on the GPU against the CPU's,
// and the caching allocator's accounting. Without a CUDA device the program says why and exits
// 77, which CTest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <functional>

#include <vox/vox.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::testing;
using doctest::Contains;

namespace {
const Device gpu = Device::cuda(0);

// CPU and GPU runs of `f` on the same inputs: outputs and input gradients must agree.
void check_op(const std::string& name, const std::vector<Tensor>& inputs, const std::function<Tensor(const std::vector<Tensor>&)>& f,
              double rtol, double atol) {
  for (DType dtype : {DType::f64, DType::f32}) {
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
  check_op("transposed operand", {randn({4, 5}), randn({5, 4})}, [](auto& v) { return add(v[0], transpose(v[1], 0, 1)); }, 1e-6, 1e-6);
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

TEST_CASE("matmul on cuBLAS matches the CPU: 2-D, batched, broadcast batch, vectors") {
  check_op("2-D", {randn({17, 33}), randn({33, 9})}, [](auto& v) { return matmul(v[0], v[1]); }, 1e-5, 1e-5);
  check_op("batched", {randn({3, 8, 5}), randn({3, 5, 7})}, [](auto& v) { return matmul(v[0], v[1]); }, 1e-5, 1e-5);
  check_op("broadcast batch", {randn({2, 3, 8, 5}), randn({5, 7})}, [](auto& v) { return matmul(v[0], v[1]); }, 1e-5, 1e-5);
  check_op("vector", {randn({6}), randn({6, 4})}, [](auto& v) { return matmul(v[0], v[1]); }, 1e-5, 1e-5);
  check_op("linear", {randn({10, 12}), randn({7, 12}), randn({7})}, [](auto& v) { return linear(v[0], v[1], v[2]); }, 1e-5, 1e-5);
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

TEST_CASE("ops without a CUDA kernel yet say so, and devices do not mix") {
  const Tensor d = randn({2, 3}).to(gpu);
  CHECK_THROWS_WITH_AS(abs(d), Contains("no CUDA kernel yet"), Error);
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

int main(int argc, char** argv) {
  if (!cuda_is_available()) {
    std::printf("test_cuda: SKIPPED: no CUDA device is visible to this program (cudaGetDeviceCount found none)\n");
    return 77;
  }
  std::printf("test_cuda: running on %s\n", cuda_backend("test").device_name(0).c_str());
  doctest::Context context(argc, argv);
  return context.run();
}
