#pragma once
// Single-threaded GEMM, C[M][N] (+)= A[M][K] * B[K][N], row-major with leading dimensions.
// B is packed into zero-padded panels of NR columns; a 6 x NR register tile of accumulators
// streams over K. The kernel is built three times (x86-64-v4, x86-64-v3 with AVX2+FMA, and the
// baseline) and the loader picks the best one for the CPU it runs on, so one binary runs on any
// x86-64 machine. The tuned, cache-blocked microkernels belong to the CPU-performance work; this
// one is the honest default that convolution and matmul build on.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace vox::kernels::cpu {

namespace gemm_detail {
typedef float f32x8 __attribute__((vector_size(32)));
typedef double f64x4 __attribute__((vector_size(32)));
template <class T> struct Vec;
template <> struct Vec<float> { using type = f32x8; static constexpr int lanes = 8; };
template <> struct Vec<double> { using type = f64x4; static constexpr int lanes = 4; };

constexpr int kRows = 6;

// Vectors pass by reference: by value, GCC notes an ABI difference between the clones.
template <class V, class T>
[[gnu::always_inline]] inline void load(V& v, const T* p) {
  __builtin_memcpy(&v, p, sizeof(v));
}
template <class V, class T>
[[gnu::always_inline]] inline void store(T* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// Packs B[K][N] into ceil(N / NR) panels of [K][NR], zero-padded on the right.
template <class T>
[[gnu::always_inline]] inline void pack_b(int64_t N, int64_t K, const T* B, int64_t ldb, T* packed) {
  constexpr int64_t NR = 2 * Vec<T>::lanes;
  for (int64_t n0 = 0; n0 < N; n0 += NR) {
    const int64_t width = std::min<int64_t>(NR, N - n0);
    T* panel = packed + (n0 / NR) * K * NR;
    for (int64_t k = 0; k < K; ++k) {
      const T* src = B + k * ldb + n0;
      T* dst = panel + k * NR;
      for (int64_t j = 0; j < width; ++j) dst[j] = src[j];
      for (int64_t j = width; j < NR; ++j) dst[j] = T(0);
    }
  }
}

// Panels of B as pack_b lays them out: ceil(N / NR) panels of [K][NR].
template <class T>
constexpr int64_t panel_width() {
  return 2 * Vec<T>::lanes;
}
template <class T>
inline int64_t packed_size(int64_t N, int64_t K) {
  return (N + panel_width<T>() - 1) / panel_width<T>() * K * panel_width<T>();
}

template <class T>
[[gnu::always_inline]] inline void gemm_packed_impl(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
                                                    const T* packed, T* C, int64_t ldc, bool accumulate) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::lanes;
  constexpr int64_t NR = 2 * L;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
    return;
  }
  const int64_t panels = (N + NR - 1) / NR;
  for (int64_t p = 0; p < panels; ++p) {
    const T* panel = packed + p * K * NR;
    const int64_t n0 = p * NR, width = std::min<int64_t>(NR, N - n0);
    for (int64_t m0 = 0; m0 < M; m0 += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, M - m0);
      const T* a[kRows];
      for (int i = 0; i < kRows; ++i) a[i] = A + (m0 + std::min<int64_t>(i, rows - 1)) * lda;
      V c[kRows][2];
      for (int i = 0; i < kRows; ++i) c[i][0] = c[i][1] = V{};
      for (int64_t k = 0; k < K; ++k) {
        V b0, b1;
        load(b0, panel + k * NR);
        load(b1, panel + k * NR + L);
#pragma GCC unroll 6
        for (int i = 0; i < kRows; ++i) {
          const V ab = a[i][k] - V{};  // broadcast
          c[i][0] += ab * b0;
          c[i][1] += ab * b1;
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        T* out = C + (m0 + i) * ldc + n0;
        if (width == NR) {
          if (accumulate) {
            V o0, o1;
            load(o0, out);
            load(o1, out + L);
            store(out, o0 + c[i][0]);
            store(out + L, o1 + c[i][1]);
          } else {
            store(out, c[i][0]);
            store(out + L, c[i][1]);
          }
        } else {
          T tmp[NR];
          store(tmp, c[i][0]);
          store(tmp + L, c[i][1]);
          for (int64_t j = 0; j < width; ++j) out[j] = accumulate ? out[j] + tmp[j] : tmp[j];
        }
      }
    }
  }
}
}  // namespace gemm_detail

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) inline void gemm_packed_f32(
    int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* packed, float* C, int64_t ldc, bool accumulate) {
  gemm_detail::gemm_packed_impl<float>(M, N, K, A, lda, packed, C, ldc, accumulate);
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) inline void gemm_packed_f64(
    int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* packed, double* C, int64_t ldc,
    bool accumulate) {
  gemm_detail::gemm_packed_impl<double>(M, N, K, A, lda, packed, C, ldc, accumulate);
}

// B[K][N] repacked for gemm_packed; callers that multiply many A by one B pack it once.
template <class T>
std::vector<T> pack_b(int64_t N, int64_t K, const T* B, int64_t ldb) {
  std::vector<T> packed(static_cast<size_t>(gemm_detail::packed_size<T>(N, K)));
  gemm_detail::pack_b(N, K, B, ldb, packed.data());
  return packed;
}

// C[M][N] (+)= A[M][K] * B, with B already packed by pack_b. Runs on the calling thread.
template <class T>
void gemm_packed(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* packed, T* C, int64_t ldc,
                 bool accumulate) {
  if constexpr (std::is_same_v<T, float>) gemm_packed_f32(M, N, K, A, lda, packed, C, ldc, accumulate);
  else gemm_packed_f64(M, N, K, A, lda, packed, C, ldc, accumulate);
}

// C[M][N] (+)= A[M][K] * B[K][N] on the calling thread. `scratch` holds the packed B; callers
// that loop keep one per thread so nothing is allocated in the loop.
template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
          bool accumulate, std::vector<T>& scratch) {
  scratch.resize(static_cast<size_t>(gemm_detail::packed_size<T>(N, K)));
  if (K > 0) gemm_detail::pack_b(N, K, B, ldb, scratch.data());
  gemm_packed<T>(M, N, K, A, lda, scratch.data(), C, ldc, accumulate);
}

}  // namespace vox::kernels::cpu
