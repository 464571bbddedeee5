#pragma once
// Reference bf16 matrix product: C[M][N] (+)= A[M][K] * B[K][N] with bf16 operands (raw bits)
// and f32 results, defined as vdpbf16ps computes it (kernels/bf16_bits.hpp): along K, pairs
// (k, k + 1) from k = 0, an odd K's last pair completed by a zero; one f32 accumulator per
// result, starting from C when accumulating (else from +0).
#include <cstdint>

#include "kernels/bf16_bits.hpp"

namespace vox::kernels::reference {

// sum_k a[k * a_step] * b[k * b_step] chained onto acc, pair by pair, as vdpbf16ps does.
inline float dot_bf16(float acc, int64_t K, const uint16_t* a, int64_t a_step, const uint16_t* b, int64_t b_step) {
  for (int64_t k = 0; k < K; k += 2) {
    const bool pair = k + 1 < K;
    acc = dpbf16_step(acc, a[k * a_step], pair ? a[(k + 1) * a_step] : uint16_t{0}, b[k * b_step],
                      pair ? b[(k + 1) * b_step] : uint16_t{0});
  }
  return acc;
}

inline void gemm_bf16(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* C,
                      int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      float& c = C[i * ldc + j];
      c = dot_bf16(accumulate ? c : 0.0f, K, A + i * lda, 1, B + j, ldb);
    }
}

}  // namespace vox::kernels::reference
