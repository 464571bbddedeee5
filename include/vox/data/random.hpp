#pragma once
// Scalar random draws for the data pipeline (augmentation parameters, crop centres), from the
// same Philox-4x32-10 as vox's tensors. A Random is a key and a counter; fork(stream) gives
// each sample its own key, so a sample's draws depend only on the seed and its stream number,
// and a loader with any number of threads gives every sample the same augmentation.
#include <cmath>
#include <cstdint>
#include <numbers>

#include "vox/core/error.hpp"
#include "vox/core/rng.hpp"

namespace vox::data {

class Random {
 public:
  explicit Random(uint64_t seed = 0) : key_(seed) {}

  // An independent generator for a sub-stream (e.g. one per epoch and sample): its key is a
  // SplitMix64 mix of this key and the stream number, so distinct streams never share draws.
  Random fork(uint64_t stream) const { return Random(mix(key_ ^ mix(stream + 0x632BE59BD9B4E019ull))); }

  uint32_t next_u32() {
    if (used_ == 4) {
      block_ = philox4x32(key_, counter_++);
      used_ = 0;
    }
    return block_[used_++];
  }
  // [0, 1) with 53 random bits.
  double uniform() {
    const uint64_t hi = next_u32(), lo = next_u32();
    return static_cast<double>((hi << 21) ^ (lo >> 11)) * 0x1.0p-53;
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // An integer in [lo, hi).
  int64_t integer(int64_t lo, int64_t hi) {
    VOX_CHECK(hi > lo, "Random::integer", "empty range [", lo, ", ", hi, ")");
    return lo + static_cast<int64_t>(uniform() * static_cast<double>(hi - lo));
  }
  bool chance(double p) { return uniform() < p; }
  double normal() {  // Box-Muller
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  static uint64_t mix(uint64_t z) {  // SplitMix64's finaliser
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  uint64_t key_, counter_ = 0;
  std::array<uint32_t, 4> block_{};
  int used_ = 4;
};

}  // namespace vox::data
