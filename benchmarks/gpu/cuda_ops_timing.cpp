// Median times of vox's CUDA ops, one line each: "vox <op> <median ms> <rate> <unit>".
// Every timed call is followed by a device synchronisation, so a time covers the whole op
// (launches, allocation from the cache, the kernel). Inputs are random, never zeros.
//   vox_cuda_ops_timing [--iters N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include <vox/vox.hpp>

using namespace vox;

namespace {
double median_ms(int iters, const std::function<void()>& op) {
  auto& backend = cuda_backend("timing");
  for (int i = 0; i < 3; ++i) op();  // warm-up: handles, the allocator's cache
  backend.synchronize(0);
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    op();
    backend.synchronize(0);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  int iters = 30;
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
  if (!cuda_is_available()) {
    std::fprintf(stderr, "vox_cuda_ops_timing: no CUDA device\n");
    return 1;
  }
  const Device gpu = Device::cuda(0);
  std::printf("# device: %s\n", cuda_backend("timing").device_name(0).c_str());
  NoGradGuard no_grad;

  const int64_t n = int64_t{1} << 26;
  const Tensor a = randn({n}).to(gpu), b = randn({n}).to(gpu);
  double t = median_ms(iters, [&] { (void)add(a, b); });
  std::printf("vox add_f32_2^26 %.4f %.1f GB/s\n", t, 3.0 * 4 * n / (t * 1e6));
  t = median_ms(iters, [&] { (void)relu(a); });
  std::printf("vox relu_f32_2^26 %.4f %.1f GB/s\n", t, 2.0 * 4 * n / (t * 1e6));
  const Tensor rows = randn({1024, 1024, 3}).to(gpu);
  t = median_ms(iters, [&] { (void)add(rows, randn({3}).to(gpu)); });
  std::printf("vox add_broadcast_f32_3M %.4f %.1f GB/s\n", t, 2.0 * 4 * rows.numel() / (t * 1e6));
  t = median_ms(iters, [&] { (void)sum(a); });
  std::printf("vox sum_f32_2^26 %.4f %.1f GB/s\n", t, 4.0 * n / (t * 1e6));
  const Tensor channels = randn({64, 64, 64, 32}).to(gpu);  // an NDHWC activation: per-channel sums
  t = median_ms(iters, [&] { (void)sum(channels, {0, 1, 2}); });
  std::printf("vox sum_channels_last_64^3x32 %.4f %.1f GB/s\n", t, 4.0 * channels.numel() / (t * 1e6));
  for (int64_t s : {1024, 4096}) {
    const Tensor x = randn({s, s}).to(gpu), y = randn({s, s}).to(gpu);
    t = median_ms(iters, [&] { (void)matmul(x, y); });
    std::printf("vox matmul_f32_%lld %.4f %.2f TFLOP/s\n", static_cast<long long>(s), t, 2.0 * s * s * s / (t * 1e9));
  }
  // conv3d passes at the MONAI U-Net's layer shapes (128^3 input, batch 2, 16-256 channels), f32,
  // each pass called on the backend directly; cuDNN plans are tuned in the warm-up calls.
  struct ConvShape {
    const char* name;
    int64_t cin, size, cout, stride;
  };
  auto& backend = cuda_backend("timing");
  for (const ConvShape& c : {ConvShape{"1x128^3->16_s2", 1, 128, 16, 2}, ConvShape{"16x64^3->16", 16, 64, 16, 1},
                             ConvShape{"16x64^3->32_s2", 16, 64, 32, 2}, ConvShape{"32x32^3->32", 32, 32, 32, 1},
                             ConvShape{"64x16^3->64", 64, 16, 64, 1}, ConvShape{"128x8^3->256", 128, 8, 256, 1}}) {
    kernels::ConvGeometry g;
    g.batch = 2;
    g.in = {c.size, c.size, c.size};
    g.kernel = {3, 3, 3};
    g.stride = {c.stride, c.stride, c.stride};
    g.padding = {1, 1, 1};
    g.in_channels = c.cin;
    g.out_channels = c.cout;
    for (size_t i = 0; i < 3; ++i) g.out[i] = (g.in[i] + 2 - 3) / g.stride[i] + 1;
    // Each shape in f32 and f16, on cuDNN (the default engine) and on vox's implicit GEMM (f32
    // CUDA cores, f16 tensor cores): rows "conv3d_<pass>_<shape>[_f16][_implicit_gemm]".
    for (const DType dtype : {DType::f32, DType::f16}) {
      const Tensor x = randn({2, c.size, c.size, c.size, c.cin}).to(dtype).to(gpu), w = randn({c.cout, 3, 3, 3, c.cin}).to(dtype).to(gpu);
      const Tensor y = randn({2, g.out[0], g.out[1], g.out[2], c.cout}).to(dtype).to(gpu);
      Tensor dx = empty(x.shape(), dtype, gpu), dw = empty(w.shape(), dtype, gpu), out = empty(y.shape(), dtype, gpu);
      const std::pair<const char*, std::function<void()>> passes[] = {
          {"fwd", [&] { backend.conv(ConvPass::forward, dtype, g, x.raw_data(), w.raw_data(), out.raw_data(), 0); }},
          {"dgrad", [&] { backend.conv(ConvPass::backward_data, dtype, g, y.raw_data(), w.raw_data(), dx.raw_data(), 0); }},
          {"wgrad", [&] { backend.conv(ConvPass::backward_weight, dtype, g, x.raw_data(), y.raw_data(), dw.raw_data(), 0); }}};
      const ConvSettings automatic = backend.conv_settings();
      for (const ConvEngine engine : {ConvEngine::automatic, ConvEngine::implicit_gemm}) {
        ConvSettings settings = automatic;
        settings.engine = engine;
        backend.set_conv_settings(settings);
        for (const auto& [pass, run] : passes) {
          t = median_ms(iters, run);
          std::printf("vox conv3d_%s_%s%s%s %.4f %.2f TFLOP/s\n", pass, c.name, dtype == DType::f16 ? "_f16" : "",
                      engine == ConvEngine::implicit_gemm ? "_implicit_gemm" : "", t, g.flops() / (t * 1e9));
        }
      }
      backend.set_conv_settings(automatic);
    }
  }
  // Self-attention over a 16^3 volume's voxels (4096 tokens), 8 heads of 32: fused, the score
  // matrix never stored. Forward alone, then forward and backward.
  {
    const Tensor q = randn({2, 8, 4096, 32}).to(gpu), k = randn({2, 8, 4096, 32}).to(gpu), v = randn({2, 8, 4096, 32}).to(gpu);
    const double flops = 4.0 * 2 * 8 * 4096.0 * 4096.0 * 32;  // two matmuls of the forward
    t = median_ms(iters, [&] { (void)scaled_dot_product_attention(q, k, v); });
    std::printf("vox sdpa_fwd_2x8x4096x32 %.4f %.2f TFLOP/s\n", t, flops / (t * 1e9));
    autograd::EnableGradGuard grad;
    const Tensor ql = q.detach().set_requires_grad(), kl = k.detach().set_requires_grad(), vl = v.detach().set_requires_grad();
    t = median_ms(iters, [&] { sum(scaled_dot_product_attention(ql, kl, vl)).backward(); });
    std::printf("vox sdpa_fwd_bwd_2x8x4096x32 %.4f %.2f TFLOP/s\n", t, 3.5 * flops / (t * 1e9));
  }
  const DeviceMemoryStats m = cuda_memory_stats();
  std::printf("# allocator: peak allocated %.1f MiB, reserved %.1f MiB, %lld requests, %lld reached cudaMalloc\n",
              m.peak_allocated_bytes / 1048576.0, m.reserved_bytes / 1048576.0, static_cast<long long>(m.allocations),
              static_cast<long long>(m.device_allocations));
}
