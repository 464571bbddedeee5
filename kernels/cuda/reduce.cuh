#pragma once
// Sums over the middle axis of a contiguous [A][R][B] block, in two passes so that every shape
// fills the GPU, a full sum (A = B = 1) and a per-channel sum of a channels-last volume (A = 1,
// B = C) alike:
//   pass 1 splits R into S chunks; each block sums one chunk for one (a, tile of b) into
//          partial[s][a][b];
//   pass 2 sums the S partials (S is at most a few hundred).
// Two mappings keep loads coalesced: with B >= 16 a warp reads 32 consecutive b of one row
// (columns); with smaller B, the block's threads read consecutive elements of the chunk, which
// for B = 1 are consecutive r (rows). Accumulation is in float for f32 and double for f64, each
// thread over at most chunk / 8 values before a tree over the block.
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

constexpr int kLanes = 32, kRowsPerBlock = 8;

// grid: (A * ceil(B / 32), S); block: (32, 8).
template <class T>
__global__ void sum_columns_kernel(T* dst, const T* src, int64_t A, int64_t R, int64_t B, int64_t chunk, double scale) {
  using Acc = typename Accumulator<T>::type;
  __shared__ Acc partial[kRowsPerBlock][kLanes + 1];
  const int64_t tiles = (B + kLanes - 1) / kLanes;
  const int64_t a = blockIdx.x / tiles, b = (blockIdx.x % tiles) * kLanes + threadIdx.x;
  const int64_t r_begin = blockIdx.y * chunk, r_end = min(R, r_begin + chunk);
  Acc acc = 0;
  if (b < B)
    for (int64_t r = r_begin + threadIdx.y; r < r_end; r += kRowsPerBlock) acc += static_cast<Acc>(src[(a * R + r) * B + b]);
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && b < B) {
    for (int y = 1; y < kRowsPerBlock; ++y) acc += partial[y][threadIdx.x];
    dst[(blockIdx.y * A + a) * B + b] = static_cast<T>(acc * static_cast<Acc>(scale));
  }
}

// grid: (A * B, S); block: Threads. Each block sums src[a, r, b] over its chunk of r.
template <class T, int Threads>
__global__ void sum_rows_kernel(T* dst, const T* src, int64_t A, int64_t R, int64_t B, int64_t chunk, double scale) {
  using Acc = typename Accumulator<T>::type;
  __shared__ Acc partial[Threads];
  const int64_t a = blockIdx.x / B, b = blockIdx.x % B;
  const int64_t r_begin = blockIdx.y * chunk, r_end = min(R, r_begin + chunk);
  Acc acc = 0;
  for (int64_t r = r_begin + threadIdx.x; r < r_end; r += Threads) acc += static_cast<Acc>(src[(a * R + r) * B + b]);
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int width = Threads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) dst[(blockIdx.y * A + a) * B + b] = static_cast<T>(partial[0] * static_cast<Acc>(scale));
}

}  // namespace vox::cuda
