#pragma once
// Scalar random draws for the data pipeline (augmentation parameters, crop centres), from the
// same Philox-4x32-10 as vox's tensors. A Random is a (seed, stream) pair and a counter, so a
// sample's draws depend only on the seed and the sample's stream: a loader with any number of
// threads gives every sample the same augmentation.
#include <cmath>
#include <cstdint>
#include <numbers>

#include "vox/core/error.hpp"
#include "vox/core/rng.hpp"

namespace vox::data {

class Random {
 public:
  explicit Random(uint64_t seed = 0, uint64_t stream = 0) : key_(seed), stream_(stream) {}

  // An independent stream, e.g. one per (epoch, sample).
  Random fork(uint64_t stream) const { return Random(key_ ^ (0x9E3779B97F4A7C15ull * (stream_ + 1)), stream); }

  uint32_t next_u32() {
    if (used_ == 4) {
      block_ = philox4x32(key_, (stream_ << 40) ^ counter_++);
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
  uint64_t key_, stream_, counter_ = 0;
  std::array<uint32_t, 4> block_{};
  int used_ = 4;
};

}  // namespace vox::data
