#pragma once
// Reference matrix product: C[M][N] = A[M][K] * B[K][N], accumulated in double.
#include <cstdint>

namespace vox::kernels::reference {

template <class T>
void matmul(int64_t M, int64_t N, int64_t K, const T* A, const T* B, T* C) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(A[i * K + k]) * static_cast<double>(B[k * N + j]);
      C[i * N + j] = static_cast<T>(acc);
    }
}

}  // namespace vox::kernels::reference
