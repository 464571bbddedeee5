// The MONAI U-Net's convolution shapes at 96^3 (batch 1), each timed as an f32 convolution and as
// a quantized layer (quant::QuantizedLayer: the f32 input quantized on the way in, the INT8
// kernel, f32 out): GOP/s and the share of the machine's measured peak for each (f32 FMA chains;
// vpdpbusd chains for INT8). The median of repeated runs, allocation included.
//
//   vox_conv3d_int8_layers [--repeats R] [--threads T] [--kernel vnni|avx512bw|avx2|portable]
// (--kernel forces an INT8 kernel this CPU has, with the weight width it takes; the share of the
// peak stays that of vpdpbusd, this CPU's best.)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <vox/vox.hpp>

#include "benchmarks/fma_peak.hpp"

using namespace vox;

namespace {
struct Layer {
  const char* name;
  int64_t size, in, out, stride;
  bool transposed;
};

double median_ms(int repeats, const std::function<void()>& run) {
  std::vector<double> ms;
  for (int r = 0; r <= repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    run();
    if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}
}  // namespace

int main(int argc, char** argv) try {
  int repeats = 9, threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i], value = argv[i + 1];
    if (arg == "--repeats") repeats = std::stoi(value);
    else if (arg == "--threads") threads = std::stoi(value);
    else if (arg == "--kernel") {
      const std::vector<std::pair<std::string, kernels::cpu::Int8Kernel>> names{{"vnni", kernels::cpu::Int8Kernel::vnni},
                                                                                {"avx512bw", kernels::cpu::Int8Kernel::avx512bw},
                                                                                {"avx2", kernels::cpu::Int8Kernel::avx2},
                                                                                {"portable", kernels::cpu::Int8Kernel::portable}};
      const auto it = std::find_if(names.begin(), names.end(), [&](const auto& n) { return n.first == value; });
      if (it == names.end()) throw Error("vox_conv3d_int8_layers: --kernel takes vnni, avx512bw, avx2 or portable, got " + value);
      kernels::cpu::force_int8_kernel(it->second);
      if (kernels::cpu::int8_kernel() != it->second) throw Error("vox_conv3d_int8_layers: this CPU cannot run the " + value + " kernel");
    }
    else throw Error("vox_conv3d_int8_layers: unknown option " + arg);
  }
  if (threads > 0) set_num_threads(threads);
  const double f32_peak = bench::measure_fma_peak(num_threads()), int8_peak = bench::measure_vnni_peak(num_threads());
  std::printf("%d threads; measured peaks: f32 FMA %.0f GFLOP/s, INT8 vpdpbusd %.0f GOP/s%s; int8 kernel: %s\n", num_threads(), f32_peak,
              int8_peak, int8_peak > 0 ? "" : " (no AVX512_VNNI)", kernels::cpu::int8_kernel_name(kernels::cpu::int8_kernel()));
  std::printf("| layer | f32 ms | f32 GFLOP/s | %% f32 peak | INT8 ms | INT8 GOP/s | %% INT8 peak | speed-up |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  const std::vector<Layer> layers{
      {"96^3 1->16 s2", 96, 1, 16, 2, false},       {"48^3 16->16", 48, 16, 16, 1, false},      {"48^3 16->32 s2", 48, 16, 32, 2, false},
      {"24^3 32->32", 24, 32, 32, 1, false},        {"12^3 64->64", 12, 64, 64, 1, false},      {"6^3 128->128", 6, 128, 128, 1, false},
      {"6^3 256->256", 6, 256, 256, 1, false},      {"24^3 64->16 up", 24, 64, 16, 2, true},    {"48^3 32->2 up", 48, 32, 2, 2, true},
      {"96^3 2->2 head", 96, 2, 2, 1, false},
  };
  Generator gen(1);
  NoGradGuard no_grad;
  for (const Layer& l : layers) {
    const Tensor x = randn({1, l.size, l.size, l.size, l.in}, DType::f32, &gen);
    const Tensor w = l.transposed ? randn({l.in, 3, 3, 3, l.out}, DType::f32, &gen, 0.0, 0.05) : randn({l.out, 3, 3, 3, l.in}, DType::f32, &gen, 0.0, 0.05);
    quant::LayerSpec spec;
    if (l.transposed) spec.kind = quant::LayerKind::conv_transpose, spec.transpose = {.stride = {2}, .padding = {1}, .output_padding = {1}};
    else spec.conv = {.stride = {l.stride}, .padding = {1}};
    const quant::QuantizedLayer q(spec, quant::quantize_weight(w, spec.channel_axis(), kernels::cpu::int8_weight_bits()), Tensor(),
                                  quant::activation_params(-4.0f, 4.0f));
    Tensor y;
    const double f32_ms = median_ms(repeats, [&] { y = l.transposed ? conv_transpose(x, w, Tensor(), spec.transpose) : conv(x, w, Tensor(), spec.conv); });
    const double int8_ms = median_ms(repeats, [&] { y = q.forward(x); });
    // operations: 2 per multiply-add of the convolution (the transposed one's: of the convolution it transposes)
    const int64_t out_positions = y.numel() / y.size(-1);
    const double ops = l.transposed ? 2.0 * double(x.numel() / l.in) * l.out * 27 * l.in : 2.0 * double(out_positions) * l.out * 27 * l.in;
    const double f32_g = ops / f32_ms / 1e6, int8_g = ops / int8_ms / 1e6;
    std::printf("| %s | %.2f | %.0f | %.0f%% | %.2f | %.0f | %.0f%% | %.1fx |\n", l.name, f32_ms, f32_g, 100 * f32_g / f32_peak, int8_ms, int8_g,
                int8_peak > 0 ? 100 * int8_g / int8_peak : 0.0, f32_ms / int8_ms);
    std::fflush(stdout);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
}
