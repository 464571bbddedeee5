#pragma once
// f32 activations to u8 and back, per tensor: exactly reference/conv_int8.hpp's quantize_u8
// (x * inv_scale, NaN to 0, clamped to [-512, 512], rounded to nearest even, plus the zero
// point, saturated to [0, 255]) and dequantize_u8.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/parallel.hpp"
#include "kernels/reference/conv_int8.hpp"

namespace vox::kernels::cpu {

namespace quantize_detail {
__attribute__((target("avx512f,avx512bw"))) inline void quantize_u8_avx512(const float* x, int64_t n, float inv_scale, int32_t zero_point,
                                                                           uint8_t* q) {
  const __m512 inv = _mm512_set1_ps(inv_scale), lo = _mm512_set1_ps(-512.0f), hi = _mm512_set1_ps(512.0f);
  const __m512i zp = _mm512_set1_epi32(zero_point), zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(255);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), inv);
    v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_setzero_ps());
    v = _mm512_maskz_min_ps(0xFFFF, _mm512_maskz_max_ps(0xFFFF, v, lo), hi);  // maskz forms: GCC 12 warns on the others
    __m512i r = _mm512_add_epi32(_mm512_maskz_cvtps_epi32(0xFFFF, v), zp);  // the current rounding mode: to nearest even
    r = _mm512_maskz_min_epi32(0xFFFF, _mm512_maskz_max_epi32(0xFFFF, r, zero), top);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_maskz_cvtepi32_epi8(0xFFFF, r));
  }
  for (; i < n; ++i) q[i] = reference::quantize_u8(x[i], inv_scale, zero_point);
}
}  // namespace quantize_detail

// q[i] = quantize_u8(x[i]) for i < n on the calling thread.
inline void quantize_u8_serial(const float* x, int64_t n, float inv_scale, int32_t zero_point, uint8_t* q) {
  static const bool avx512 = __builtin_cpu_supports("avx512bw");
  if (avx512) return quantize_detail::quantize_u8_avx512(x, n, inv_scale, zero_point, q);
  for (int64_t i = 0; i < n; ++i) q[i] = reference::quantize_u8(x[i], inv_scale, zero_point);
}

// q[i] = quantize_u8(x[i]) for i < n, in parallel.
inline void quantize_u8(const float* x, int64_t n, float inv_scale, int32_t zero_point, uint8_t* q) {
  parallel_for(0, n, 1 << 16, [&](int64_t b, int64_t e) { quantize_u8_serial(x + b, e - b, inv_scale, zero_point, q + b); });
}

// x[i] = (q[i] - zero_point) * scale for i < n, in parallel.
inline void dequantize_u8(const uint8_t* q, int64_t n, float scale, int32_t zero_point, float* x) {
  parallel_for(0, n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = reference::dequantize_u8(q[i], scale, zero_point);
  });
}

}  // namespace vox::kernels::cpu
