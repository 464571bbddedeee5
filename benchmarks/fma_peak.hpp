#pragma once
// Measures the machine's f32 FMA peak (GFLOP/s) with independent chains of fused multiply-adds,
// built for the best vector ISA the CPU has (same clones as the GEMM), on every thread.
#include <algorithm>
#include <chrono>
#include <cstdint>

#include <vox/core/parallel.hpp>

namespace vox::bench {

namespace peak_detail {
typedef float f32x16 __attribute__((vector_size(64)));

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) inline float fma_chains(int64_t iterations) {
  f32x16 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = f32x16{} + static_cast<float>(i) * 1e-3f;
  const f32x16 a = f32x16{} + 0.999999f, b = f32x16{} + 1e-7f;
  for (int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = acc[i] * a + b;
  float total = 0;
  for (int i = 0; i < 12; ++i)
    for (int l = 0; l < 16; ++l) total += acc[i][l];
  return total;
}
}  // namespace peak_detail

// GFLOP/s of multiply-add on `threads` threads (one FMA = 2 FLOPs), one trial.
inline double fma_trial(int threads) {
  const int64_t iterations = 4'000'000;
  const auto start = std::chrono::steady_clock::now();
  volatile float sink = 0;
  const int previous = num_threads();
  set_num_threads(threads);
  parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) sink = sink + peak_detail::fma_chains(iterations);
  });
  set_num_threads(previous);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return 2.0 * 12 * 16 * static_cast<double>(iterations) * threads / seconds / 1e9;
}

// The best of five trials: a shared machine only ever slows the probe down.
inline double measure_fma_peak(int threads) {
  double best = 0;
  for (int trial = 0; trial < 5; ++trial) best = std::max(best, fma_trial(threads));
  return best;
}

}  // namespace vox::bench
