#pragma once
// Axis-separable gathers (pad, flip): output coordinate o on axis a reads input coordinate
// maps[a][o], or takes `fill` where any axis maps to -1. The backward pass adds each output's
// gradient at its source (atomically: reflect and replicate padding read one input many times).
// The maps of all axes travel in one device buffer: offsets[a] is where axis a's map starts.
#include <cstdint>

#include "kernels/cuda/elementwise.cuh"

namespace vox::cuda {

struct GatherMaps {
  int rank = 0;
  int64_t out_shape[kMaxRank];
  int64_t offsets[kMaxRank];
  int64_t in_strides[kMaxRank];  // in elements (the backward pass: the contiguous input's)
  const int64_t* maps = nullptr;

  // The input offset of output element `linear`, or -1 where it is padding.
  __device__ int64_t source(int64_t linear) const {
    int64_t offset = 0;
    for (int a = rank - 1; a >= 0; --a) {
      const int64_t o = linear % out_shape[a];
      linear /= out_shape[a];
      const int64_t i = maps[offsets[a] + o];
      if (i < 0) return -1;
      offset += i * in_strides[a];
    }
    return offset;
  }
};

template <class T>
__global__ void gather_axes_kernel(GatherMaps m, const T* in, T fill, T* out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = m.source(i);
    out[i] = s < 0 ? fill : in[s];
  }
}

// gx zeroed beforehand.
template <class T>
__global__ void scatter_add_axes_kernel(GatherMaps m, const T* g, T* gx, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = m.source(i);
    if (s >= 0) atomicAdd(gx + s, g[i]);
  }
}

}  // namespace vox::cuda
