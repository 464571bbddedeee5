// Google Benchmark entries for vox's ops: every op in the op table (tests/op_table.hpp, the
// same declarations the tests use) at its test shapes, and the 3-D U-Net's convolution shapes,
// forward and backward. Each reports GFLOP/s and the percentage of the machine's FMA peak,
// which the program measures itself at start-up.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "fma_peak.hpp"
#include "tests/op_table.hpp"

using namespace vox;

namespace {

double peak_gflops = 1.0;

// Runs body() once per benchmark iteration, timing the loop itself, and reports GFLOP/s and the
// percentage of the measured peak as plain numbers.
template <class Body>
void run_and_count(benchmark::State& state, double flops_per_iteration, Body&& body) {
  int64_t iterations = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    body();
    ++iterations;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double gflops = flops_per_iteration * static_cast<double>(iterations) / std::max(seconds, 1e-12) / 1e9;
  state.counters["GFLOP/s"] = gflops;
  state.counters["%peak"] = 100.0 * gflops / peak_gflops;
}

void register_op_table() {
  for (const testing::OpSpec& op : testing::op_table()) {
    benchmark::RegisterBenchmark(("op/" + op.name).c_str(), [op](benchmark::State& state) {
      Generator gen(1);
      std::vector<Tensor> in;
      for (const auto& s : op.inputs) in.push_back(testing::make_input(s, DType::f32, gen));
      NoGradGuard no_grad;
      run_and_count(state, op.flops, [&] { benchmark::DoNotOptimize(op.run(in)); });
    });
  }
}

// conv3d 3x3x3, padding 1, channels-last, at the shapes a 3-D U-Net runs.
void conv_benchmark(benchmark::State& state, int64_t size, int64_t cin, int64_t cout, int64_t stride, int pass) {
  Generator gen(1);
  const Tensor x = randn({1, size, size, size, cin}, DType::f32, &gen);
  const Tensor w = randn({cout, 3, 3, 3, cin}, DType::f32, &gen, 0.0, 0.05);
  const ConvOptions o{.stride = {stride}, .padding = {1}};
  const int64_t out = (size + 2 - 3) / stride + 1;
  const double flops = 2.0 * static_cast<double>(out * out * out) * cout * cin * 27;
  const Tensor dy = randn({1, out, out, out, cout}, DType::f32, &gen);
  Tensor xg = x.clone(), wg = w.clone();
  if (pass == 1) xg.set_requires_grad();
  if (pass == 2) wg.set_requires_grad();
  run_and_count(state, pass == 0 ? flops : 2 * flops, [&] {
    if (pass == 0) {
      NoGradGuard no_grad;
      benchmark::DoNotOptimize(conv(x, w, {}, o));
    } else {
      conv(xg, wg, {}, o).backward(dy);  // includes one forward
      xg.zero_grad();
      wg.zero_grad();
    }
  });
}

void register_convs() {
  struct Shape3 {
    int64_t size, cin, cout, stride;
  };
  const char* passes[] = {"forward", "forward+input_grad", "forward+weight_grad"};
  for (const Shape3& s : {Shape3{64, 32, 32, 1}, Shape3{96, 16, 16, 1}, Shape3{48, 32, 64, 2}, Shape3{24, 64, 64, 1},
                          Shape3{12, 128, 128, 1}, Shape3{6, 256, 256, 1}})
    for (int pass = 0; pass < 3; ++pass) {
      const std::string name = "conv3d/" + std::to_string(s.size) + "^3/" + std::to_string(s.cin) + "to" +
                               std::to_string(s.cout) + "/stride" + std::to_string(s.stride) + "/" + passes[pass];
      benchmark::RegisterBenchmark(name.c_str(), [s, pass](benchmark::State& state) {
        conv_benchmark(state, s.size, s.cin, s.cout, s.stride, pass);
      })->Unit(benchmark::kMillisecond)->UseRealTime();
    }
}

}  // namespace

int main(int argc, char** argv) {
  peak_gflops = bench::measure_fma_peak(num_threads());
  std::printf("vox: measured f32 FMA peak %.1f GFLOP/s on %d threads (single thread %.1f)\n", peak_gflops, num_threads(),
              bench::measure_fma_peak(1));
  register_op_table();
  register_convs();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
