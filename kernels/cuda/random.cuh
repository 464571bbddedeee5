#pragma once
// Random fills on the GPU with vox's Philox-4x32-10 (vox/core/rng.hpp): element i takes lane
// i % 2 of the block for counter start + i / 2, exactly as the CPU's fill_random does, so a
// generator with the same seed and offset draws the same values on either device (up to the
// last bits of log, sqrt, sin and cos in randn).
#include <cstdint>

#include "vox/core/backend.hpp"

namespace vox::cuda {

struct PhiloxBlock {
  uint32_t v[4];
};

__device__ inline PhiloxBlock philox4x32(uint64_t key, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t{0xD2511F53u} * c0;
    const uint64_t p1 = uint64_t{0xCD9E8D57u} * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c0 = n0;
    c1 = static_cast<uint32_t>(p1);
    c2 = n2;
    c3 = static_cast<uint32_t>(p0);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

__device__ inline double uniform_from(uint32_t hi, uint32_t lo) { return static_cast<double>((uint64_t{hi} << 21) ^ (lo >> 11)) * 0x1.0p-53; }

template <class T>
__global__ void random_kernel(RandomKind kind, T* out, int64_t n, uint64_t key, uint64_t start, double a, double b) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const PhiloxBlock block = philox4x32(key, start + static_cast<uint64_t>(i / 2));
    const int lane = static_cast<int>(i % 2);
    double value = 0;
    switch (kind) {
      case RandomKind::uniform: value = a + (b - a) * uniform_from(block.v[2 * lane], block.v[2 * lane + 1]); break;
      case RandomKind::bernoulli: value = uniform_from(block.v[2 * lane], block.v[2 * lane + 1]) < a ? 1.0 : 0.0; break;
      case RandomKind::normal: {
        const double u1 = 1.0 - uniform_from(block.v[0], block.v[1]);
        const double u2 = uniform_from(block.v[2], block.v[3]);
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
