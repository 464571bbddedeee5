#pragma once
// Random fills on the GPU with vox's Philox-4x32-10 (vox/core/rng.hpp): element i takes lane
// i % 2 of the block for counter start + i / 2, exactly as the CPU's fill_random does, so a
// generator with the same seed and offset draws the same values on either device (up to the
// last bits of log, sqrt, sin and cos in randn).
#include <cstdint>

#include "vox/core/backend.hpp"
#include "vox/core/philox.hpp"

namespace vox::cuda {

// With `state` (a CUDA graph's draw: {key, base} in device memory, refreshed before each replay),
// the key and the counters' base are read when the kernel runs.
template <class T>
__global__ void random_kernel(RandomKind kind, T* out, int64_t n, uint64_t key, uint64_t start, const uint64_t* state, double a,
                              double b) {
  if (state) {
    key = state[0];
    start += state[1];
  }
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t block[4];
    philox::block(key, start + static_cast<uint64_t>(i / 2), block);
    const int lane = static_cast<int>(i % 2);
    double value = 0;
    switch (kind) {
      case RandomKind::uniform: value = a + (b - a) * philox::uniform_from(block[2 * lane], block[2 * lane + 1]); break;
      case RandomKind::bernoulli: value = philox::uniform_from(block[2 * lane], block[2 * lane + 1]) < a ? 1.0 : 0.0; break;
      case RandomKind::normal: {
        const double u1 = 1.0 - philox::uniform_from(block[0], block[1]);
        const double u2 = philox::uniform_from(block[2], block[3]);
        const double r = sqrt(-2.0 * log(u1));
        const double angle = 2.0 * 3.14159265358979323846 * u2;
        value = a + b * r * (lane == 0 ? cos(angle) : sin(angle));
        break;
      }
    }
    out[i] = static_cast<T>(value);
  }
}

}  // namespace vox::cuda
