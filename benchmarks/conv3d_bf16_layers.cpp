// The MONAI U-Net's convolution shapes at 96^3 (batch 1), each pass timed in f32 and in bf16 on
// the CPU: GFLOP/s and the share of the machine's measured peak for that precision (f32 FMA
// chains; vdpbf16ps chains for bf16). The median of repeated runs of the op, allocation included.
//
//   vox_conv3d_bf16_layers [--repeats R] [--threads T]
#include <algorithm>
#include <functional>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <vox/vox.hpp>

#include "benchmarks/fma_peak.hpp"

using namespace vox;

namespace {
struct Layer {
  const char* name;
  int64_t size, in, out, stride;
};

// setup runs outside the timer, so that each backward pass is timed alone.
double median_ms(int repeats, const std::function<void()>& setup, const std::function<void()>& run) {
  std::vector<double> ms;
  for (int r = 0; r <= repeats; ++r) {
    setup();
    const auto start = std::chrono::steady_clock::now();
    run();
    if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}
}  // namespace

int main(int argc, char** argv) try {
  int repeats = 7, threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i], value = argv[i + 1];
    if (arg == "--repeats") repeats = std::stoi(value);
    else if (arg == "--threads") threads = std::stoi(value);
    else throw Error("vox_conv3d_bf16_layers: unknown option " + arg);
  }
  if (threads > 0) set_num_threads(threads);
  const double f32_peak = bench::measure_fma_peak(num_threads()), bf16_peak = bench::measure_bf16_peak(num_threads());
  std::printf("%d threads; measured peaks: f32 FMA %.0f GFLOP/s, bf16 vdpbf16ps %.0f GFLOP/s%s\n", num_threads(), f32_peak, bf16_peak,
              bf16_peak > 0 ? "" : " (no AVX512_BF16: bf16 runs emulated)");
  std::printf("| layer | pass | f32 ms | f32 GFLOP/s | %% f32 peak | bf16 ms | bf16 GFLOP/s | %% bf16 peak |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  const std::vector<Layer> layers{
      {"96^3 1->16 s2", 96, 1, 16, 2},   {"48^3 16->16", 48, 16, 16, 1},  {"48^3 16->32 s2", 48, 16, 32, 2},
      {"24^3 32->32", 24, 32, 32, 1},    {"12^3 64->64", 12, 64, 64, 1},  {"6^3 128->128", 6, 128, 128, 1},
      {"6^3 256->256", 6, 256, 256, 1},
  };
  Generator gen(1);
  for (const Layer& l : layers) {
    const Tensor x = randn({1, l.size, l.size, l.size, l.in}, DType::f32, &gen);
    const Tensor w = randn({l.out, 3, 3, 3, l.in}, DType::f32, &gen, 0.0, 0.05);
    const ConvOptions o{.stride = {l.stride}, .padding = {1}};
    const int64_t out_size = (l.size - 1) / l.stride + 1;
    const double flops = 2.0 * static_cast<double>(out_size * out_size * out_size) * l.out * 27 * l.in;
    const Tensor dy = randn({1, out_size, out_size, out_size, l.out}, DType::f32, &gen);
    for (const char* pass : {"forward", "data gradient", "weight gradient"}) {
      double ms[2];
      for (int p = 0; p < 2; ++p) {
        const DType t = p == 0 ? DType::f32 : DType::bf16;
        const Tensor xt = x.to(t), wt = w.to(t), dyt = dy.to(t);
        const std::string which = pass;
        Tensor xg, wg, y;
        auto setup = [&] {
          if (which == "forward") return;
          xg = xt.detach(), wg = wt.detach();
          (which == "data gradient" ? xg : wg).set_requires_grad(true);
          y = conv(xg, wg, {}, o);
        };
        ms[p] = median_ms(repeats, setup, [&] {
          if (which == "forward") (void)conv(xt, wt, {}, o);
          else y.backward(dyt);
        });
      }
      std::printf("| %s | %s | %.2f | %.0f | %.0f%% | %.2f | %.0f | %.0f%% |\n", l.name, pass, ms[0], flops / ms[0] / 1e6,
                  100 * flops / ms[0] / 1e6 / f32_peak, ms[1], flops / ms[1] / 1e6, bf16_peak > 0 ? 100 * flops / ms[1] / 1e6 / bf16_peak : 0.0);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
}
