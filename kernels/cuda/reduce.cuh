#pragma once
// Sums over the middle axis of a contiguous [A][R][B] block, accumulating in double for f64 and
// in float for f32:
//   B >= 32: one thread per output (a, b), threads of a warp on consecutive b, so every load of
//            the R loop is coalesced; each thread sums its R values in order;
//   B <  32: one block per output, its threads striding over R, then a shared-memory tree (so the
//            rounding error grows with R / threads + log(threads), not with R).
#include <cstdint>

namespace vox::cuda {

template <class T>
struct Accumulator {
  using type = float;
};
template <>
struct Accumulator<double> {
  using type = double;
};

template <class T>
__global__ void sum_columns_kernel(T* dst, const T* src, int64_t A, int64_t R, int64_t B, double scale) {
  using Acc = typename Accumulator<T>::type;
  const int64_t total = A * B;
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < total; o += int64_t{gridDim.x} * blockDim.x) {
    const int64_t a = o / B, b = o % B;
    const T* p = src + a * R * B + b;
    Acc acc = 0;
    for (int64_t r = 0; r < R; ++r) acc += static_cast<Acc>(p[r * B]);
    dst[o] = static_cast<T>(acc * static_cast<Acc>(scale));
  }
}

template <class T, int Threads>
__global__ void sum_rows_kernel(T* dst, const T* src, int64_t A, int64_t R, int64_t B, double scale) {
  using Acc = typename Accumulator<T>::type;
  __shared__ Acc partial[Threads];
  for (int64_t o = blockIdx.x; o < A * B; o += gridDim.x) {
    const int64_t a = o / B, b = o % B;
    const T* p = src + a * R * B + b;
    Acc acc = 0;
    for (int64_t r = threadIdx.x; r < R; r += Threads) acc += static_cast<Acc>(p[r * B]);
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int width = Threads / 2; width > 0; width /= 2) {
      if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
      __syncthreads();
    }
    if (threadIdx.x == 0) dst[o] = static_cast<T>(partial[0] * static_cast<Acc>(scale));
    __syncthreads();  // partial is reused by the next output
  }
}

}  // namespace vox::cuda
