#pragma once
// softmax and log_softmax over the middle axis of a contiguous [outer][n][inner] block, forward
// and backward, numerically stable (the maximum is subtracted before exp).
//   columns: one thread per (outer, inner) walks its n values, inner apart. Used when inner > 1
//            (neighbouring threads read neighbouring memory) and for short rows (n <= 32, the
//            class axis of a channels-last segmentation).
//   rows:    one warp per row of n > 32 contiguous values (inner == 1): attention scores.
// Sums are in float for f32 and double for f64.
#include <cstdint>

#include "kernels/cuda/reduce.cuh"

namespace vox::cuda {

template <class T>
__global__ void softmax_columns_kernel(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  using A = typename Accumulator<T>::type;
  for (int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; col < outer * inner;
       col += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t base = (col / inner) * n * inner + col % inner;
    A top = static_cast<A>(x[base]);
    for (int64_t k = 1; k < n; ++k) top = max(top, static_cast<A>(x[base + k * inner]));
    A total = 0;
    for (int64_t k = 0; k < n; ++k) total += exp(static_cast<A>(x[base + k * inner]) - top);
    const A log_total = ::log(total);
    for (int64_t k = 0; k < n; ++k) {
      const A shifted = static_cast<A>(x[base + k * inner]) - top;
      y[base + k * inner] = static_cast<T>(log ? shifted - log_total : exp(shifted) / total);
    }
  }
}

template <class A>
__device__ inline A warp_sum(A v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
template <class A>
__device__ inline A warp_max(A v) {
  for (int offset = 16; offset > 0; offset /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// block: 256 threads = 8 warps, one row each.
template <class T>
__global__ void softmax_rows_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  using A = typename Accumulator<T>::type;
  const int lane = threadIdx.x % 32;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    const T* xr = x + row * n;
    T* yr = y + row * n;
    A top = -INFINITY;
    for (int64_t k = lane; k < n; k += 32) top = max(top, static_cast<A>(xr[k]));
    top = warp_max(top);
    A total = 0;
    for (int64_t k = lane; k < n; k += 32) total += exp(static_cast<A>(xr[k]) - top);
    total = warp_sum(total);
    const A log_total = ::log(total);
    for (int64_t k = lane; k < n; k += 32) {
      const A shifted = static_cast<A>(xr[k]) - top;
      yr[k] = static_cast<T>(log ? shifted - log_total : exp(shifted) / total);
    }
  }
}

// softmax: dx = y (dy - sum(dy y)); log_softmax: dx = dy - exp(y) sum(dy).
template <class T>
__global__ void softmax_backward_columns_kernel(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner, bool log) {
  using A = typename Accumulator<T>::type;
  for (int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; col < outer * inner;
       col += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t base = (col / inner) * n * inner + col % inner;
    A total = 0;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = base + k * inner;
      total += log ? static_cast<A>(dy[i]) : static_cast<A>(dy[i]) * static_cast<A>(y[i]);
    }
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = base + k * inner;
      const A yi = static_cast<A>(y[i]), gi = static_cast<A>(dy[i]);
      dx[i] = static_cast<T>(log ? gi - exp(yi) * total : yi * (gi - total));
    }
  }
}

template <class T>
__global__ void softmax_backward_rows_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t n, bool log) {
  using A = typename Accumulator<T>::type;
  const int lane = threadIdx.x % 32;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x / 32) {
    const int64_t base = row * n;
    A total = 0;
    for (int64_t k = lane; k < n; k += 32)
      total += log ? static_cast<A>(dy[base + k]) : static_cast<A>(dy[base + k]) * static_cast<A>(y[base + k]);
    total = warp_sum(total);
    for (int64_t k = lane; k < n; k += 32) {
      const A yi = static_cast<A>(y[base + k]), gi = static_cast<A>(dy[base + k]);
      dx[base + k] = static_cast<T>(log ? gi - exp(yi) * total : yi * (gi - total));
    }
  }
}

}  // namespace vox::cuda
