#pragma once
// Measures the machine's f32 FMA peak (GFLOP/s) with independent chains of fused multiply-adds,
// built for the best vector ISA the CPU has (same clones as the GEMM), on every thread; the bf16
// peak, with chains of vdpbf16ps (4 FLOPs per f32 lane), where the CPU has AVX512_BF16; and the
// INT8 peak, with chains of vpdpbusd (4 multiply-adds, 8 operations, per int32 lane), where the
// CPU has AVX512_VNNI.
#include <immintrin.h>

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
__attribute__((target("avx512f,avx512bf16"))) inline float dpbf16_chains(int64_t iterations) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m512i a = _mm512_set1_epi32(0x3F803F80), b = _mm512_set1_epi32(0x33D633D6);  // pairs of 1.0 and 1e-7
  for (int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)a, (__m512bh)b);
  float total = 0, lanes[16];
  for (int i = 0; i < 12; ++i) {
    _mm512_storeu_ps(lanes, acc[i]);
    for (float v : lanes) total += v;
  }
  return total;
}
__attribute__((target("avx512f,avx512bw,avx512vnni"))) inline float dpbusd_chains(int64_t iterations) {
  __m512i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x01FF01FF);  // u8 ones against s8 1 and -1: sums stay small
  for (int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  int32_t total = 0, lanes[16];
  for (int i = 0; i < 12; ++i) {
    _mm512_storeu_si512(lanes, acc[i]);
    for (int32_t v : lanes) total += v;
  }
  return static_cast<float>(total);
}
}  // namespace peak_detail

// GFLOP/s of `chains` (12 chains of 16 lanes, flops_per_lane per lane and iteration) run on
// `threads` threads at once, one trial.
inline double chains_trial(int threads, float (*chains)(int64_t), double flops_per_lane) {
  const int64_t iterations = 4'000'000;
  const auto start = std::chrono::steady_clock::now();
  volatile float sink = 0;
  const int previous = num_threads();
  set_num_threads(threads);
  parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) sink = sink + chains(iterations);
  });
  set_num_threads(previous);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return flops_per_lane * 12 * 16 * static_cast<double>(iterations) * threads / seconds / 1e9;
}

// The f32 FMA peak (an FMA is 2 FLOPs a lane) and the bf16 vdpbf16ps peak (2 products and 2
// sums a lane; 0 where the CPU has no AVX512_BF16), each the best of five trials: a shared
// machine only ever slows the probe down.
inline double measure_fma_peak(int threads) {
  double best = 0;
  for (int trial = 0; trial < 5; ++trial) best = std::max(best, chains_trial(threads, peak_detail::fma_chains, 2.0));
  return best;
}
inline double measure_bf16_peak(int threads) {
  if (!__builtin_cpu_supports("avx512bf16")) return 0;
  double best = 0;
  for (int trial = 0; trial < 5; ++trial) best = std::max(best, chains_trial(threads, peak_detail::dpbf16_chains, 4.0));
  return best;
}

// The INT8 vpdpbusd peak in GOP/s (a multiply and an add each of 4 products a lane; 0 where the
// CPU has no AVX512_VNNI), the best of five trials.
inline double measure_vnni_peak(int threads) {
  if (!__builtin_cpu_supports("avx512vnni")) return 0;
  double best = 0;
  for (int trial = 0; trial < 5; ++trial) best = std::max(best, chains_trial(threads, peak_detail::dpbusd_chains, 8.0));
  return best;
}

}  // namespace vox::bench
