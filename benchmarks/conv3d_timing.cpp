// Times conv3d forward, input gradient and weight gradient (each backward pass alone) for one
// shape, as the median of repeated runs, and prints one "vox <pass> <ms>" line per pass for benchmarks/peers scripts.
//
//   vox_conv3d_timing [--size S] [--channels C] [--batch N] [--repeats R] [--threads T]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <vox/vox.hpp>

using namespace vox;

int main(int argc, char** argv) try {
  int64_t size = 64, channels = 32, batch = 1;
  int repeats = 11, threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i];
    const std::string value = argv[i + 1];
    if (arg == "--size") size = std::stoll(value);
    else if (arg == "--channels") channels = std::stoll(value);
    else if (arg == "--batch") batch = std::stoll(value);
    else if (arg == "--repeats") repeats = std::stoi(value);
    else if (arg == "--threads") threads = std::stoi(value);
    else throw Error("vox_conv3d_timing: unknown option " + arg);
  }
  if (threads > 0) set_num_threads(threads);
  Generator gen(1);
  const Tensor x = randn({batch, size, size, size, channels}, DType::f32, &gen);
  const Tensor w = randn({channels, 3, 3, 3, channels}, DType::f32, &gen, 0.0, 0.05);
  const ConvOptions same{.padding = {1}};
  // median_ms(setup, timed): setup runs outside the timer, so each backward pass is timed alone.
  auto median_ms = [&](auto&& setup, auto&& timed) {
    std::vector<double> ms;
    for (int r = 0; r <= repeats; ++r) {
      setup();
      const auto start = std::chrono::steady_clock::now();
      timed();
      if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  const Tensor dy = randn({batch, size, size, size, channels}, DType::f32, &gen);
  const double forward = median_ms([] {}, [&] { conv(x, w, {}, same); });
  Tensor xg = x.clone(), wg = w.clone(), y;
  xg.set_requires_grad();
  wg.set_requires_grad();
  const double input_grad = median_ms([&] { xg.zero_grad(), y = conv(xg, w, {}, same); }, [&] { y.backward(dy); });
  const double weight_grad = median_ms([&] { wg.zero_grad(), y = conv(x, wg, {}, same); }, [&] { y.backward(dy); });
  const double flops = 2.0 * static_cast<double>(batch * size * size * size) * channels * channels * 27;
  std::printf("vox threads %d\n", num_threads());
  std::printf("vox forward %.3f ms %.1f GFLOP/s\n", forward, flops / forward / 1e6);
  std::printf("vox input_grad %.3f ms %.1f GFLOP/s\n", input_grad, flops / input_grad / 1e6);
  std::printf("vox weight_grad %.3f ms %.1f GFLOP/s\n", weight_grad, flops / weight_grad / 1e6);
  return 0;
} catch (const vox::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 2;
}
