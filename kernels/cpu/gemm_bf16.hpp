#pragma once
// Single-threaded bf16 GEMM with f32 results: C[M][N] (+)= A[M][K] * B[K][N], A and B raw bf16
// bits, computed exactly as kernels/reference/gemm_bf16.hpp defines it (vdpbf16ps's pairs,
// rounding and denormal flushing).
//
// B is packed into panels of 16 columns, each [ceil(K / 2)][16][2]: for every pair of rows
// (k, k + 1) the two values of a column sit side by side, as vdpbf16ps reads them, zero-padded
// past N and past K. A's rows are read in place, a pair of values (one 32-bit word) broadcast at
// a time. On a CPU with AVX512_BF16 a 6 x 32 tile of accumulators (two panels, 12 registers), or
// 12 x 16 for a last single panel, streams over the pairs of K (70-95% of the measured
// vdpbf16ps peak on one core for N of 16 to 64 and K of 432 to 864); elsewhere an emulated kernel computes the same bits
// with fused multiply-adds and explicit flushing, at a fraction of the speed (callers warn once).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/bf16_bits.hpp"

namespace vox::kernels::cpu {

namespace gemm_bf16_detail {
constexpr int kRows = 6;        // rows per tile of the emulated kernel
constexpr int64_t kPanel = 16;  // columns per packed panel: one 512-bit register of f32 results

inline int64_t pairs(int64_t K) { return (K + 1) / 2; }
inline int64_t panel_size(int64_t K) { return pairs(K) * 2 * kPanel; }
inline int64_t packed_size(int64_t N, int64_t K) { return (N + kPanel - 1) / kPanel * panel_size(K); }

// Row i of a tile: A's row, or the tile's last row again where the tile is short (its results
// are not stored).
template <int Rows>
inline void tile_rows(const uint16_t* A, int64_t lda, int64_t m0, int64_t rows, const uint16_t* (&a)[Rows]) {
  for (int i = 0; i < Rows; ++i) a[i] = A + (m0 + std::min<int64_t>(i, rows - 1)) * lda;
}

// The 32-bit word of pair kp of row a: a[2 kp] low, a[2 kp + 1] high (zero past K).
inline uint32_t pair_word(const uint16_t* a, int64_t kp, int64_t K) {
  if (2 * kp + 1 < K) {
    uint32_t word;
    std::memcpy(&word, a + 2 * kp, sizeof(word));
    return word;
  }
  return a[2 * kp];
}

// A tile of Rows x (16 Panels) results: 6 x 32 or 12 x 16, twelve independent accumulators either
// way, enough to cover vdpbf16ps's latency.
template <int Panels, int Rows>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) inline void tile_native(
    int64_t rows, int64_t K, const uint16_t* const (&a)[Rows], const uint16_t* panel, int64_t panel_stride, float* C,
    int64_t ldc, int64_t width, bool accumulate) {
  __mmask16 mask[Panels];
  for (int j = 0; j < Panels; ++j) {
    const int64_t valid = std::clamp<int64_t>(width - j * kPanel, 0, kPanel);
    mask[j] = static_cast<__mmask16>((1u << valid) - 1u);
  }
  __m512 c[Rows][Panels];
  for (int i = 0; i < Rows; ++i)
    for (int j = 0; j < Panels; ++j)
      c[i][j] = accumulate && i < rows ? _mm512_maskz_loadu_ps(mask[j], C + i * ldc + j * kPanel) : _mm512_setzero_ps();
  const int64_t full = K / 2;
  for (int64_t kp = 0; kp < full; ++kp) {
    __m512i b[Panels];
    for (int j = 0; j < Panels; ++j) b[j] = _mm512_loadu_si512(panel + j * panel_stride + kp * 2 * kPanel);
#pragma GCC unroll 12
    for (int i = 0; i < Rows; ++i) {
      uint32_t word;
      std::memcpy(&word, a[i] + 2 * kp, sizeof(word));
      const __m512i pair = _mm512_set1_epi32(static_cast<int>(word));
      for (int j = 0; j < Panels; ++j) c[i][j] = _mm512_dpbf16_ps(c[i][j], (__m512bh)pair, (__m512bh)b[j]);
    }
  }
  if (K % 2) {  // the last pair: A's last value and a zero
    __m512i b[Panels];
    for (int j = 0; j < Panels; ++j) b[j] = _mm512_loadu_si512(panel + j * panel_stride + full * 2 * kPanel);
    for (int i = 0; i < Rows; ++i) {
      const __m512i pair = _mm512_set1_epi32(a[i][K - 1]);
      for (int j = 0; j < Panels; ++j) c[i][j] = _mm512_dpbf16_ps(c[i][j], (__m512bh)pair, (__m512bh)b[j]);
    }
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int j = 0; j < Panels; ++j) _mm512_mask_storeu_ps(C + i * ldc + j * kPanel, mask[j], c[i][j]);
}

// Rows [0, M) of one or two panels starting at column n0, in tiles of Rows.
template <int Panels, int Rows>
inline void panel_rows_native(int64_t M, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* panel, int64_t stride, float* C,
                              int64_t ldc, int64_t width, bool accumulate) {
  for (int64_t m0 = 0; m0 < M; m0 += Rows) {
    const int64_t rows = std::min<int64_t>(Rows, M - m0);
    const uint16_t* a[Rows];
    tile_rows(A, lda, m0, rows, a);
    tile_native<Panels, Rows>(rows, K, a, panel, stride, C + m0 * ldc, ldc, width, accumulate);
  }
}

inline void gemm_native(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* packed, float* C,
                        int64_t ldc, bool accumulate) {
  const int64_t panels = (N + kPanel - 1) / kPanel, stride = panel_size(K);
  for (int64_t p = 0; p < panels; p += 2) {
    const uint16_t* panel = packed + p * stride;
    const int64_t n0 = p * kPanel, width = std::min<int64_t>(2 * kPanel, N - n0);
    if (p + 1 < panels) panel_rows_native<2, 6>(M, K, A, lda, panel, stride, C + n0, ldc, width, accumulate);
    else panel_rows_native<1, 12>(M, K, A, lda, panel, stride, C + n0, ldc, width, accumulate);
  }
}

// The same products with fused multiply-adds and explicit flushing, for CPUs without
// AVX512_BF16; built for x86-64-v4, v3 (FMA in hardware) and the baseline (fma from libm).
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) inline void gemm_emulated(
    int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* packed, float* C, int64_t ldc,
    bool accumulate) {
  const int64_t panels = (N + kPanel - 1) / kPanel, stride = panel_size(K), kpairs = pairs(K);
  for (int64_t p = 0; p < panels; ++p) {
    const uint16_t* panel = packed + p * stride;
    const int64_t n0 = p * kPanel, width = std::min<int64_t>(kPanel, N - n0);
    for (int64_t m0 = 0; m0 < M; m0 += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, M - m0);
      float c[kRows][kPanel];
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < kPanel; ++j) c[i][j] = accumulate && j < width ? flush_denormal(C[(m0 + i) * ldc + n0 + j]) : 0.0f;
      for (int64_t kp = 0; kp < kpairs; ++kp) {
        float b0[kPanel], b1[kPanel];
        for (int64_t j = 0; j < kPanel; ++j) {
          b0[j] = flush_denormal(bf16_bits_to_float(panel[(kp * kPanel + j) * 2]));
          b1[j] = flush_denormal(bf16_bits_to_float(panel[(kp * kPanel + j) * 2 + 1]));
        }
        for (int64_t i = 0; i < rows; ++i) {
          const uint32_t word = pair_word(A + (m0 + i) * lda, kp, K);
          const float a0 = flush_denormal(bf16_bits_to_float(static_cast<uint16_t>(word)));
          const float a1 = flush_denormal(bf16_bits_to_float(static_cast<uint16_t>(word >> 16)));
          for (int64_t j = 0; j < kPanel; ++j) c[i][j] = flush_denormal(std::fma(a0, b0[j], flush_denormal(std::fma(a1, b1[j], c[i][j]))));
        }
      }
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < width; ++j) C[(m0 + i) * ldc + n0 + j] = c[i][j];
    }
  }
}

inline std::atomic<bool>& emulation_forced() {
  static std::atomic<bool> forced{false};
  return forced;
}
}  // namespace gemm_bf16_detail

// dst[j] = bf16(src[j] + bias[j]) (no bias where null) for j < n.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) inline void round_to_bf16(const float* src,
                                                                                                       const uint16_t* bias, int64_t n,
                                                                                                       uint16_t* dst) {
  if (bias)
    for (int64_t j = 0; j < n; ++j) dst[j] = float_to_bf16_bits(src[j] + bf16_bits_to_float(bias[j]));
  else
    for (int64_t j = 0; j < n; ++j) dst[j] = float_to_bf16_bits(src[j]);
}

// True where the bf16 kernels run on AVX512_BF16 (and are not forced onto the emulated path).
inline bool bf16_native() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has && !gemm_bf16_detail::emulation_forced().load(std::memory_order_relaxed);
}
// Runs the bf16 kernels on the emulated path even where AVX512_BF16 exists (tests compare the
// two; the results are the same bits).
inline void force_emulated_bf16(bool on) { gemm_bf16_detail::emulation_forced().store(on, std::memory_order_relaxed); }

// Packs a [K][N] right-hand side, element (k, n) being value(k, n), into `packed`
// (gemm_bf16_detail::packed_size(N, K) values) for panels [begin, end).
template <class Value>
void pack_bf16_panels(int64_t N, int64_t K, Value value, uint16_t* packed, int64_t begin, int64_t end) {
  using namespace gemm_bf16_detail;
  const int64_t kpairs = pairs(K);
  for (int64_t p = begin; p < end; ++p) {
    uint16_t* panel = packed + p * panel_size(K);
    for (int64_t kp = 0; kp < kpairs; ++kp)
      for (int64_t j = 0; j < kPanel; ++j) {
        const int64_t n = p * kPanel + j, k = 2 * kp;
        panel[(kp * kPanel + j) * 2] = n < N ? value(k, n) : uint16_t{0};
        panel[(kp * kPanel + j) * 2 + 1] = n < N && k + 1 < K ? value(k + 1, n) : uint16_t{0};
      }
  }
}

// C[M][N] (+)= A[M][K] * B with B packed by pack_bf16_panels. Runs on the calling thread.
inline void gemm_bf16_packed(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* packed, float* C,
                             int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  if (bf16_native()) gemm_bf16_detail::gemm_native(M, N, K, A, lda, packed, C, ldc, accumulate);
  else gemm_bf16_detail::gemm_emulated(M, N, K, A, lda, packed, C, ldc, accumulate);
}

namespace gemm_bf16_detail {
// The full panels [0, N / 16) of a row-major B[K][N], panel by panel, so that each panel is
// written in order: for each pair of rows, the 16 values of each interleaved by one permute.
__attribute__((target("avx512f,avx512bw"))) inline void pack_full_panels_avx512(int64_t N, int64_t K, const uint16_t* B, int64_t ldb,
                                                                               uint16_t* packed) {
  // element 2j from row 2 kp's j, 2j + 1 from row 2 kp + 1's j: indices into (a | b at 32)
  alignas(64) static constexpr uint16_t order[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                     8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i index = _mm512_load_si512(order);
  const int64_t full = K / 2, stride = panel_size(K);
  for (int64_t p = 0; p < N / kPanel; ++p) {
    uint16_t* dst = packed + p * stride;
    const uint16_t* column = B + p * kPanel;
    for (int64_t kp = 0; kp < full; ++kp) {
      const __m512i a = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(column + 2 * kp * ldb)));
      const __m512i b = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(column + (2 * kp + 1) * ldb)));
      _mm512_storeu_si512(dst + kp * 2 * kPanel, _mm512_permutex2var_epi16(a, index, b));
    }
    if (K % 2) {  // an odd K's last pair: its second row is zero
      const __m512i a = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(column + (K - 1) * ldb)));
      _mm512_storeu_si512(dst + full * 2 * kPanel, _mm512_permutex2var_epi16(a, index, _mm512_setzero_si512()));
    }
  }
}
}  // namespace gemm_bf16_detail

// pack_bf16_panels for a row-major B[K][N], with the full panels by AVX-512 permutes where the
// CPU has them. The weight gradient packs a whole column buffer per tile: with its few output
// rows, element-by-element packing took as long as the products.
inline void pack_bf16_matrix(int64_t N, int64_t K, const uint16_t* B, int64_t ldb, uint16_t* packed) {
  using namespace gemm_bf16_detail;
  static const bool avx512bw = __builtin_cpu_supports("avx512bw");
  const int64_t panels = (N + kPanel - 1) / kPanel, full_panels = avx512bw ? N / kPanel : 0;
  if (full_panels > 0) pack_full_panels_avx512(N, K, B, ldb, packed);
  pack_bf16_panels(N, K, [&](int64_t k, int64_t n) { return B[k * ldb + n]; }, packed, full_panels, panels);
}

// C[M][N] (+)= A[M][K] * B[K][N] on the calling thread; `scratch` holds the packed B.
inline void gemm_bf16(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* C,
                      int64_t ldc, bool accumulate, std::vector<uint16_t>& scratch) {
  scratch.resize(static_cast<size_t>(gemm_bf16_detail::packed_size(N, K)));
  pack_bf16_matrix(N, K, B, ldb, scratch.data());
  gemm_bf16_packed(M, N, K, A, lda, scratch.data(), C, ldc, accumulate);
}

}  // namespace vox::kernels::cpu
