#pragma once
// Philox-4x32-10 (Salmon et al., SC'11): the block for (key, counter), and 53 uniform bits from
// two of its words. One definition for the CPU's draws (vox/core/rng.hpp) and the CUDA backend's
// (kernels/cuda/random.cuh), so both devices draw the same values from the same counters.
#include <cstdint>

#if defined(__CUDACC__)
#define VOX_HOST_DEVICE __host__ __device__
#else
#define VOX_HOST_DEVICE
#endif

namespace vox::philox {

VOX_HOST_DEVICE inline void block(uint64_t key, uint64_t counter, uint32_t out[4]) {
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
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// 53 random bits in [0, 1).
VOX_HOST_DEVICE inline double uniform_from(uint32_t hi, uint32_t lo) {
  return static_cast<double>((uint64_t{hi} << 21) ^ (lo >> 11)) * 0x1.0p-53;
}

}  // namespace vox::philox
