#pragma once
// Max, min, argmax and argmin over the middle axis of a contiguous [A][R][B] block.
// Every element is a candidate (value, r). The CPU scans r in order and keeps the first best
// value, with the first NaN beating everything; here that rule is made associative:
//   a NaN beats a number, the better value beats the worse, and a tie goes to the smaller r.
// So partial winners can be combined in any order and still give the CPU's answer.
// Pass 1 splits R into S chunks like the sums (reduce.cuh) and writes one candidate per
// (chunk, a, b); pass 2 folds the S candidates of each output and stores its value and index.
#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/reduce.cuh"

namespace vox::cuda {

// The type candidates are compared in: 16-bit floats widen to float, the rest compare as stored.
template <class T>
struct Comparable {
  using type = T;
};
template <>
struct Comparable<__half> {
  using type = float;
};
template <>
struct Comparable<__nv_bfloat16> {
  using type = float;
};

template <class V>
struct Candidate {
  V value;
  int64_t index;  // -1: no candidate (an empty chunk)
};

template <class V>
__device__ bool is_nan_value(V v) {
  if constexpr (std::is_floating_point_v<V>) return v != v;
  else return false;
}

template <class V>
__device__ Candidate<V> better_of(Candidate<V> x, Candidate<V> y, bool want_max) {
  if (y.index < 0) return x;
  if (x.index < 0) return y;
  const bool x_nan = is_nan_value(x.value), y_nan = is_nan_value(y.value);
  if (x_nan || y_nan) return (x_nan && (!y_nan || x.index < y.index)) ? x : y;
  if (x.value == y.value) return x.index < y.index ? x : y;
  return (want_max ? x.value > y.value : x.value < y.value) ? x : y;
}

template <class T>
__device__ typename Comparable<T>::type comparable(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return v;
}

// pass 1 with B >= 16: grid (A * ceil(B / 32), S); block (32, 8); warps read 32 consecutive b.
template <class T>
__global__ void extremum_columns_kernel(Candidate<typename Comparable<T>::type>* partial, const T* src, int64_t A, int64_t R,
                                        int64_t B, int64_t chunk, bool want_max) {
  using V = typename Comparable<T>::type;
  __shared__ Candidate<V> best[kRowsPerBlock][kLanes + 1];
  const int64_t tiles = (B + kLanes - 1) / kLanes;
  const int64_t a = blockIdx.x / tiles, b = (blockIdx.x % tiles) * kLanes + threadIdx.x;
  const int64_t r_begin = blockIdx.y * chunk, r_end = min(R, r_begin + chunk);
  Candidate<V> mine{V{}, -1};
  if (b < B)
    for (int64_t r = r_begin + threadIdx.y; r < r_end; r += kRowsPerBlock)
      mine = better_of(mine, Candidate<V>{comparable(src[(a * R + r) * B + b]), r}, want_max);
  best[threadIdx.y][threadIdx.x] = mine;
  __syncthreads();
  if (threadIdx.y == 0 && b < B) {
    for (int y = 1; y < kRowsPerBlock; ++y) mine = better_of(mine, best[y][threadIdx.x], want_max);
    partial[(blockIdx.y * A + a) * B + b] = mine;
  }
}

// pass 1 with B < 16: grid (A * B, S); block Threads; the threads read consecutive r.
template <class T, int Threads>
__global__ void extremum_rows_kernel(Candidate<typename Comparable<T>::type>* partial, const T* src, int64_t A, int64_t R,
                                     int64_t B, int64_t chunk, bool want_max) {
  using V = typename Comparable<T>::type;
  __shared__ Candidate<V> best[Threads];
  const int64_t a = blockIdx.x / B, b = blockIdx.x % B;
  const int64_t r_begin = blockIdx.y * chunk, r_end = min(R, r_begin + chunk);
  Candidate<V> mine{V{}, -1};
  for (int64_t r = r_begin + threadIdx.x; r < r_end; r += Threads)
    mine = better_of(mine, Candidate<V>{comparable(src[(a * R + r) * B + b]), r}, want_max);
  best[threadIdx.x] = mine;
  __syncthreads();
  for (int width = Threads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) best[threadIdx.x] = better_of(best[threadIdx.x], best[threadIdx.x + width], want_max);
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[(blockIdx.y * A + a) * B + b] = best[0];
}

// pass 2: one thread per output folds its S candidates; values and indices may each be null.
// The winning value is stored back in T (the widening was exact).
template <class T>
__global__ void extremum_finish_kernel(T* values, int64_t* indices, const Candidate<typename Comparable<T>::type>* partial,
                                       int64_t outputs, int64_t splits, bool want_max) {
  using V = typename Comparable<T>::type;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < outputs; i += int64_t{gridDim.x} * blockDim.x) {
    Candidate<V> winner = partial[i];
    for (int64_t s = 1; s < splits; ++s) winner = better_of(winner, partial[s * outputs + i], want_max);
    if (values) {
      if constexpr (std::is_same_v<T, __half>) values[i] = __float2half(winner.value);
      else if constexpr (std::is_same_v<T, __nv_bfloat16>) values[i] = __float2bfloat16(winner.value);
      else values[i] = winner.value;
    }
    if (indices) indices[i] = winner.index;
  }
}

}  // namespace vox::cuda
