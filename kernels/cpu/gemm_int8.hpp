#pragma once
// Single-threaded u8 x s8 GEMM with int32 sums and a fused f32 epilogue:
//   C[m][n] = epilogue(sum_k (A[m][k] - zero_point) * B[k][n], n)
// exactly as kernels/reference/conv_int8.hpp defines it (scale, bias, fused activation).
//
// B is packed once (weights) into panels of 16 columns, each [ceil(K / 4)][16][4]: the four
// values of a column for rows 4q..4q+3 side by side, as vpdpbusd and vpmaddubsw read them,
// zero-padded past N and past K. Packing also records each column's sum, so the zero point's
// term zero_point * sum_k B[k][n] is one subtraction per result. A's rows are read in place, four
// bytes (one 32-bit word) broadcast at a time: a row must be readable up to K rounded up to 4
// (the products past K meet zero weights, whatever those bytes hold).
//
// Four kernels, chosen by CPUID (tests can force one):
//   vnni      AVX512_VNNI's vpdpbusd: four u8 x s8 products into each int32 lane, no saturation.
//   avx512bw  vpmaddubsw + vpmaddwd, for CPUs without VNNI: vpmaddubsw adds two u8 x s8 products
//             in int16 with saturation, so weights must be 7-bit (|w| <= 63: 2 x 255 x 63 fits);
//             the quantizer makes them so on these CPUs (int8_weight_bits()).
//   avx2      the same instructions on 256-bit registers, for CPUs without AVX-512 (7-bit weights).
//   portable  plain int32 loops for any weights and any x86-64 (or weights that are not 7-bit on a
//             CPU without VNNI).
// An AVX-512 tile is 6 x 32 results (two panels, twelve accumulators) or 12 x 16 for a last
// single panel; an AVX2 tile 6 x 16 (a panel is two registers wide there).
// gemm_int8_direct is the same vpdpbusd tile over rows read at a fixed step from a padded input,
// tap after tap: a direct convolution's output row (kernels/cpu/conv_int8.hpp).
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/reference/conv_int8.hpp"

namespace vox::kernels::cpu {

using Int8Epilogue = reference::Int8Epilogue;

enum class Int8Kernel { automatic, vnni, avx512bw, avx2, portable };

namespace gemm_int8_detail {
constexpr int64_t kPanel = 16;

inline int64_t quads(int64_t K) { return (K + 3) / 4; }
inline int64_t panel_size(int64_t K) { return quads(K) * 4 * kPanel; }

inline std::atomic<Int8Kernel>& forced_kernel() {
  static std::atomic<Int8Kernel> forced{Int8Kernel::automatic};
  return forced;
}
inline bool cpu_has_vnni() {
  static const bool has = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
  return has;
}
inline bool cpu_has_avx512bw() {
  static const bool has = __builtin_cpu_supports("avx512bw");
  return has;
}
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
}  // namespace gemm_int8_detail

// The kernel int8 GEMMs run on: the forced one where the CPU has it, else the best this CPU has.
inline Int8Kernel int8_kernel() {
  using namespace gemm_int8_detail;
  const Int8Kernel forced = forced_kernel().load(std::memory_order_relaxed);
  if (forced == Int8Kernel::portable) return forced;
  if (forced == Int8Kernel::avx512bw && cpu_has_avx512bw()) return forced;
  if (forced == Int8Kernel::avx2 && cpu_has_avx2()) return forced;
  if (cpu_has_vnni()) return Int8Kernel::vnni;
  if (cpu_has_avx512bw()) return Int8Kernel::avx512bw;
  return cpu_has_avx2() ? Int8Kernel::avx2 : Int8Kernel::portable;
}
// Forces a kernel (automatic: CPUID decides again). Tests run every path on one machine.
inline void force_int8_kernel(Int8Kernel kernel) { gemm_int8_detail::forced_kernel().store(kernel, std::memory_order_relaxed); }
inline const char* int8_kernel_name(Int8Kernel k) {
  switch (k) {
    case Int8Kernel::vnni: return "avx512-vnni";
    case Int8Kernel::avx512bw: return "avx512bw (7-bit weights)";
    case Int8Kernel::avx2: return "avx2 (7-bit weights)";
    case Int8Kernel::portable: return "portable";
    default: return "automatic";
  }
}
// The weight width the quantizer should use here: 8 bits where vpdpbusd exists, 7 where the
// kernel is vpmaddubsw's (AVX-512BW or AVX2), whose int16 pair sums would saturate with 8-bit weights.
inline int int8_weight_bits() {
  const Int8Kernel k = int8_kernel();
  return k == Int8Kernel::avx512bw || k == Int8Kernel::avx2 ? 7 : 8;
}

// A right-hand side B[K][N] of s8, packed for the kernels, with its column sums.
struct PackedInt8 {
  int64_t N = 0, K = 0;
  bool seven_bit = true;  // every value within [-63, 63]
  std::vector<int8_t> panels;
  std::vector<int32_t> column_sums;  // [N]
  bool empty() const { return N == 0; }
};

// Packs B, element (k, n) being value(k, n).
template <class Value>
PackedInt8 pack_int8(int64_t N, int64_t K, Value value) {
  using namespace gemm_int8_detail;
  PackedInt8 p;
  p.N = N, p.K = K;
  const int64_t panels = (N + kPanel - 1) / kPanel;
  p.panels.assign(static_cast<size_t>(panels * panel_size(K)), 0);
  p.column_sums.assign(static_cast<size_t>(N), 0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) {
      const int8_t v = value(k, n);
      p.panels[static_cast<size_t>((n / kPanel) * panel_size(K) + ((k / 4) * kPanel + n % kPanel) * 4 + k % 4)] = v;
      p.column_sums[static_cast<size_t>(n)] += v;
      if (v < -63 || v > 63) p.seven_bit = false;
    }
  return p;
}

namespace gemm_int8_detail {

// Row i of a tile: A's row, or the tile's last row again where the tile is short.
template <int Rows>
inline void tile_rows(const uint8_t* A, int64_t lda, int64_t m0, int64_t rows, const uint8_t* (&a)[Rows]) {
  for (int i = 0; i < Rows; ++i) a[i] = A + (m0 + std::min<int64_t>(i, rows - 1)) * lda;
}

// Per-call column data: the zero point's correction and the epilogue's per-column values for
// the columns [n0, n0 + 16 Panels).
template <int Panels>
struct ColumnTerms {
  __m512i correction[Panels];
  __m512 scale[Panels], bias[Panels], slope[Panels];
  __mmask16 mask[Panels];
};

template <int Panels>
__attribute__((target("avx512f,avx512bw"))) inline void store_tile_row(const __m512i (&acc)[Panels], const ColumnTerms<Panels>& t,
                                                                        bool activation, float* c) {
  for (int j = 0; j < Panels; ++j) {
    const __m512 v = _mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_sub_epi32(acc[j], t.correction[j]));
    __m512 y = _mm512_fmadd_ps(v, t.scale[j], t.bias[j]);
    if (activation) y = _mm512_mask_mul_ps(y, _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_LT_OQ), y, t.slope[j]);
    _mm512_mask_storeu_ps(c + j * kPanel, t.mask[j], y);
  }
}

// The 32-bit word of A's row at quad q, to broadcast.
inline int32_t quad_word(const uint8_t* row, int64_t q) {
  int32_t word;
  std::memcpy(&word, row + 4 * q, sizeof(word));
  return word;
}

// A tile of Rows x (16 Panels) results over all of K, by vpdpbusd.
template <int Panels, int Rows>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) inline void tile_vnni(int64_t rows, int64_t K, const uint8_t* const (&a)[Rows],
                                                                                     const int8_t* panel, int64_t panel_stride,
                                                                                     const ColumnTerms<Panels>& terms, bool activation,
                                                                                     float* C, int64_t ldc) {
  __m512i c[Rows][Panels];
  for (int i = 0; i < Rows; ++i)
    for (int j = 0; j < Panels; ++j) c[i][j] = _mm512_setzero_si512();
  for (int64_t q = 0; q < quads(K); ++q) {
    __m512i b[Panels];
    for (int j = 0; j < Panels; ++j) b[j] = _mm512_loadu_si512(panel + j * panel_stride + q * 4 * kPanel);
#pragma GCC unroll 12
    for (int i = 0; i < Rows; ++i) {
      const __m512i quad = _mm512_maskz_set1_epi32(0xFFFF, quad_word(a[i], q));  // maskz: GCC 12 warns on the unmasked form
      for (int j = 0; j < Panels; ++j) c[i][j] = _mm512_dpbusd_epi32(c[i][j], quad, b[j]);
    }
  }
  for (int64_t i = 0; i < rows; ++i) store_tile_row<Panels>(c[i], terms, activation, C + i * ldc);
}

// The same tile without VNNI: vpmaddubsw's int16 pair sums (7-bit weights: no saturation),
// widened and added by vpmaddwd against ones.
template <int Panels, int Rows>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void tile_avx512bw(int64_t rows, int64_t K, const uint8_t* const (&a)[Rows],
                                                                              const int8_t* panel, int64_t panel_stride,
                                                                              const ColumnTerms<Panels>& terms, bool activation, float* C,
                                                                              int64_t ldc) {
  __m512i c[Rows][Panels];
  for (int i = 0; i < Rows; ++i)
    for (int j = 0; j < Panels; ++j) c[i][j] = _mm512_setzero_si512();
  const __m512i ones = _mm512_set1_epi16(1);
  for (int64_t q = 0; q < quads(K); ++q) {
    __m512i b[Panels];
    for (int j = 0; j < Panels; ++j) b[j] = _mm512_loadu_si512(panel + j * panel_stride + q * 4 * kPanel);
#pragma GCC unroll 12
    for (int i = 0; i < Rows; ++i) {
      const __m512i quad = _mm512_maskz_set1_epi32(0xFFFF, quad_word(a[i], q));  // maskz: GCC 12 warns on the unmasked form
      for (int j = 0; j < Panels; ++j) c[i][j] = _mm512_add_epi32(c[i][j], _mm512_madd_epi16(_mm512_maddubs_epi16(quad, b[j]), ones));
    }
  }
  for (int64_t i = 0; i < rows; ++i) store_tile_row<Panels>(c[i], terms, activation, C + i * ldc);
}

template <bool Vnni, int Panels, int Rows>
inline void tile_avx512(int64_t rows, int64_t K, const uint8_t* const (&a)[Rows], const int8_t* panel, int64_t panel_stride,
                        const ColumnTerms<Panels>& terms, bool activation, float* C, int64_t ldc) {
  if constexpr (Vnni) tile_vnni<Panels, Rows>(rows, K, a, panel, panel_stride, terms, activation, C, ldc);
  else tile_avx512bw<Panels, Rows>(rows, K, a, panel, panel_stride, terms, activation, C, ldc);
}

// A tile of Rows x (16 Panels) results of a direct convolution, by vpdpbusd: row i's taps are
// read in place at src + i * step + taps[t] (a zero-point-padded input, channels padded to a
// multiple of 4), each tap `quads_per_tap` quads of the packed B, in order.
template <int Panels, int Rows>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) inline void tile_direct_vnni(
    int64_t rows, const uint8_t* src, int64_t step, const int64_t* taps, int64_t tap_count, int64_t quads_per_tap, const int8_t* panel,
    int64_t panel_stride, const ColumnTerms<Panels>& terms, bool activation, float* C, int64_t ldc) {
  __m512i c[Rows][Panels];
  for (int i = 0; i < Rows; ++i)
    for (int j = 0; j < Panels; ++j) c[i][j] = _mm512_setzero_si512();
  int64_t offset[Rows];
  for (int i = 0; i < Rows; ++i) offset[i] = std::min<int64_t>(i, rows - 1) * step;  // short tiles repeat their last row
  for (int64_t t = 0; t < tap_count; ++t) {
    const uint8_t* base = src + taps[t];
    const int8_t* bt = panel + t * quads_per_tap * 4 * kPanel;
    for (int64_t q = 0; q < quads_per_tap; ++q) {
      __m512i b[Panels];
      for (int j = 0; j < Panels; ++j) b[j] = _mm512_loadu_si512(bt + j * panel_stride + q * 4 * kPanel);
#pragma GCC unroll 12
      for (int i = 0; i < Rows; ++i) {
        const __m512i quad = _mm512_maskz_set1_epi32(0xFFFF, quad_word(base + offset[i], q));
        for (int j = 0; j < Panels; ++j) c[i][j] = _mm512_dpbusd_epi32(c[i][j], quad, b[j]);
      }
    }
  }
  for (int64_t i = 0; i < rows; ++i) store_tile_row<Panels>(c[i], terms, activation, C + i * ldc);
}

template <int Panels>
__attribute__((target("avx512f,avx512bw"))) inline ColumnTerms<Panels> column_terms(const PackedInt8& B, int32_t zero_point,
                                                                                     const Int8Epilogue& e, int64_t n0) {
  ColumnTerms<Panels> t;
  for (int j = 0; j < Panels; ++j) {
    alignas(64) int32_t corr[kPanel] = {};
    alignas(64) float scale[kPanel] = {}, bias[kPanel] = {}, slope[kPanel] = {};
    int64_t valid = 0;
    for (int64_t l = 0; l < kPanel; ++l) {
      const int64_t n = n0 + j * kPanel + l;
      if (n >= B.N) break;
      ++valid;
      corr[l] = zero_point * B.column_sums[static_cast<size_t>(n)];
      scale[l] = e.scale[n];
      bias[l] = e.bias ? e.bias[n] : 0.0f;
      slope[l] = e.slope ? e.slope[n * e.slope_stride] : 0.0f;
    }
    t.correction[j] = _mm512_load_si512(corr);
    t.scale[j] = _mm512_load_ps(scale), t.bias[j] = _mm512_load_ps(bias), t.slope[j] = _mm512_load_ps(slope);
    t.mask[j] = static_cast<__mmask16>((1u << valid) - 1u);
  }
  return t;
}

template <bool Vnni>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void gemm_avx512(int64_t M, const uint8_t* A, int64_t lda, int32_t zero_point, const PackedInt8& B, const Int8Epilogue& e, float* C,
                        int64_t ldc) {
  const int64_t panels = (B.N + kPanel - 1) / kPanel, stride = panel_size(B.K);
  for (int64_t p = 0; p < panels; p += 2) {
    const int8_t* panel = B.panels.data() + p * stride;
    const int64_t n0 = p * kPanel;
    if (p + 1 < panels) {
      const ColumnTerms<2> terms = column_terms<2>(B, zero_point, e, n0);
      for (int64_t m0 = 0; m0 < M; m0 += 6) {
        const int64_t rows = std::min<int64_t>(6, M - m0);
        const uint8_t* a[6];
        tile_rows(A, lda, m0, rows, a);
        tile_avx512<Vnni, 2, 6>(rows, B.K, a, panel, stride, terms, e.slope != nullptr, C + m0 * ldc + n0, ldc);
      }
    } else {
      const ColumnTerms<1> terms = column_terms<1>(B, zero_point, e, n0);
      for (int64_t m0 = 0; m0 < M; m0 += 12) {
        const int64_t rows = std::min<int64_t>(12, M - m0);
        const uint8_t* a[12];
        tile_rows(A, lda, m0, rows, a);
        tile_avx512<Vnni, 1, 12>(rows, B.K, a, panel, stride, terms, e.slope != nullptr, C + m0 * ldc + n0, ldc);
      }
    }
  }
}

// A 6 x 16 tile (one panel) on 256-bit registers: vpmaddubsw + vpmaddwd as tile_avx512bw, the
// panel's 16 columns in two registers, and the same epilogue in the same order (exact int32 sums,
// vcvtdq2ps, one fused multiply-add) so that its results are the reference's bits.
__attribute__((target("avx2,fma"))) inline void tile_avx2(int64_t rows, int64_t K, const uint8_t* const (&a)[6], const int8_t* panel,
                                                          const int32_t* correction, const float* scale, const float* bias,
                                                          const float* slope, int64_t width, float* C, int64_t ldc) {
  __m256i c[6][2];
  for (auto& row : c) row[0] = row[1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t q = 0; q < quads(K); ++q) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + q * 4 * kPanel));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + q * 4 * kPanel + 32));
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {
      const __m256i quad = _mm256_set1_epi32(quad_word(a[i], q));
      c[i][0] = _mm256_add_epi32(c[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(quad, b0), ones));
      c[i][1] = _mm256_add_epi32(c[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(quad, b1), ones));
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    alignas(32) float out[kPanel];
    for (int h = 0; h < 2; ++h) {
      const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(correction + 8 * h));
      const __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(c[i][h], corr));
      __m256 y = _mm256_fmadd_ps(v, _mm256_loadu_ps(scale + 8 * h), _mm256_loadu_ps(bias + 8 * h));
      if (slope) y = _mm256_blendv_ps(y, _mm256_mul_ps(y, _mm256_loadu_ps(slope + 8 * h)), _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_LT_OQ));
      _mm256_store_ps(out + 8 * h, y);
    }
    std::memcpy(C + i * ldc, out, static_cast<size_t>(width) * sizeof(float));
  }
}

inline void gemm_avx2(int64_t M, const uint8_t* A, int64_t lda, int32_t zero_point, const PackedInt8& B, const Int8Epilogue& e, float* C,
                      int64_t ldc) {
  const int64_t panels = (B.N + kPanel - 1) / kPanel, stride = panel_size(B.K);
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * kPanel, width = std::min<int64_t>(kPanel, B.N - n0);
    int32_t correction[kPanel] = {};
    float scale[kPanel] = {}, bias[kPanel] = {}, slope[kPanel] = {};
    for (int64_t l = 0; l < width; ++l) {
      correction[l] = zero_point * B.column_sums[static_cast<size_t>(n0 + l)];
      scale[l] = e.scale[n0 + l];
      bias[l] = e.bias ? e.bias[n0 + l] : 0.0f;
      slope[l] = e.slope ? e.slope[(n0 + l) * e.slope_stride] : 0.0f;
    }
    for (int64_t m0 = 0; m0 < M; m0 += 6) {
      const int64_t rows = std::min<int64_t>(6, M - m0);
      const uint8_t* a[6];
      tile_rows(A, lda, m0, rows, a);
      tile_avx2(rows, B.K, a, B.panels.data() + p * stride, correction, scale, bias, e.slope ? slope : nullptr, width, C + m0 * ldc + n0, ldc);
    }
  }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) inline void gemm_portable(
    int64_t M, const uint8_t* A, int64_t lda, int32_t zero_point, const PackedInt8& B, const Int8Epilogue& e, float* C, int64_t ldc) {
  const int64_t panels = (B.N + kPanel - 1) / kPanel, stride = panel_size(B.K), nq = quads(B.K);
  for (int64_t p = 0; p < panels; ++p) {
    const int8_t* panel = B.panels.data() + p * stride;
    const int64_t n0 = p * kPanel, width = std::min<int64_t>(kPanel, B.N - n0);
    for (int64_t m = 0; m < M; ++m) {
      int32_t acc[kPanel] = {};
      const uint8_t* a = A + m * lda;
      for (int64_t q = 0; q < nq; ++q)
        for (int64_t l = 0; l < kPanel; ++l)
          for (int64_t s = 0; s < 4; ++s) acc[l] += int32_t{a[4 * q + s]} * int32_t{panel[(q * kPanel + l) * 4 + s]};
      for (int64_t l = 0; l < width; ++l)
        C[m * ldc + n0 + l] = e(acc[l] - zero_point * B.column_sums[static_cast<size_t>(n0 + l)], n0 + l);
    }
  }
}

}  // namespace gemm_int8_detail

// C[m][n] = e(sum_k (A[m][k] - zero_point) * B[k][n], n) for m < M, n < B.N, on the calling thread.
// A's rows (stride lda) must be readable for quads(B.K) * 4 bytes.
inline void gemm_int8_packed(int64_t M, const uint8_t* A, int64_t lda, int32_t zero_point, const PackedInt8& B, const Int8Epilogue& e,
                             float* C, int64_t ldc) {
  if (M <= 0 || B.N <= 0) return;
  switch (int8_kernel()) {
    case Int8Kernel::vnni: return gemm_int8_detail::gemm_avx512<true>(M, A, lda, zero_point, B, e, C, ldc);
    case Int8Kernel::avx512bw:
      if (B.seven_bit) return gemm_int8_detail::gemm_avx512<false>(M, A, lda, zero_point, B, e, C, ldc);
      break;
    case Int8Kernel::avx2:
      if (B.seven_bit) return gemm_int8_detail::gemm_avx2(M, A, lda, zero_point, B, e, C, ldc);
      break;
    default: break;
  }
  gemm_int8_detail::gemm_portable(M, A, lda, zero_point, B, e, C, ldc);
}

// C[m][n] = e(sum over taps t and channels k of (A_t[m][k] - zero_point) * B[t * K_t + k][n], n)
// for m < M, where A_t's row m is src + m * step + taps[t], K_t = 4 quads_per_tap: a direct
// convolution's row of outputs, reading a zero-point-padded input in place (no column buffer).
// vpdpbusd only (int8_kernel() == vnni).
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void gemm_int8_direct(int64_t M, const uint8_t* src, int64_t step,
                                                                                  const int64_t* taps, int64_t tap_count,
                                                                                  int64_t quads_per_tap, int32_t zero_point,
                                                                                  const PackedInt8& B, const Int8Epilogue& e, float* C,
                                                                                  int64_t ldc) {
  using namespace gemm_int8_detail;
  const int64_t panels = (B.N + kPanel - 1) / kPanel, stride = panel_size(B.K);
  for (int64_t p = 0; p < panels; p += 2) {
    const int8_t* panel = B.panels.data() + p * stride;
    const int64_t n0 = p * kPanel;
    if (p + 1 < panels) {
      const ColumnTerms<2> terms = column_terms<2>(B, zero_point, e, n0);
      for (int64_t m0 = 0; m0 < M; m0 += 6)
        tile_direct_vnni<2, 6>(std::min<int64_t>(6, M - m0), src + m0 * step, step, taps, tap_count, quads_per_tap, panel, stride, terms,
                               e.slope != nullptr, C + m0 * ldc + n0, ldc);
    } else {
      const ColumnTerms<1> terms = column_terms<1>(B, zero_point, e, n0);
      for (int64_t m0 = 0; m0 < M; m0 += 12)
        tile_direct_vnni<1, 12>(std::min<int64_t>(12, M - m0), src + m0 * step, step, taps, tap_count, quads_per_tap, panel, stride, terms,
                                e.slope != nullptr, C + m0 * ldc + n0, ldc);
    }
  }
}

}  // namespace vox::kernels::cpu
