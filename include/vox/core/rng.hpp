#pragma once
// Seeded random numbers from Philox-4x32-10, a counter-based generator: element i of a draw is a
// pure function of (seed, offset, i), so results are the same on any number of threads and
// match across the CPU and the CUDA backend, which draws from the same counters
// (kernels/cuda/random.cuh).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "vox/core/backend.hpp"
#include "vox/core/parallel.hpp"
#include "vox/core/philox.hpp"
#include "vox/core/tensor.hpp"

namespace vox {

inline std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter) {
  std::array<uint32_t, 4> out;
  philox::block(key, counter, out.data());
  return out;
}

// A seed and a running counter. Each draw reserves a block range, so successive draws differ and
// a generator with the same seed replays the same sequence.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  void manual_seed(uint64_t seed) {
    seed_ = seed;
    offset_ = 0;
  }
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }
  // Reserves `blocks` Philox blocks and returns the first counter.
  uint64_t reserve(uint64_t blocks) {
    const uint64_t start = offset_;
    offset_ += blocks;
    return start;
  }

 private:
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};

inline Generator& default_generator() {
  static Generator generator(0x5eed);
  return generator;
}
inline void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

namespace detail {
inline double uniform_from(uint32_t hi, uint32_t lo) { return philox::uniform_from(hi, lo); }

// Fills t (contiguous) with value(i, block) where block is the Philox output for counter
// start + i / per_block.
template <class T, class Value>
void fill_random(const Tensor& t, Generator* gen, int64_t per_block, Value value) {
  Generator& g = gen ? *gen : default_generator();
  const int64_t n = t.numel();
  const uint64_t start = g.reserve(static_cast<uint64_t>((n + per_block - 1) / per_block));
  const uint64_t key = g.seed();
  T* out = t.data<T>();
  parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const auto block = philox4x32(key, start + static_cast<uint64_t>(i / per_block));
      out[i] = static_cast<T>(value(i % per_block, block));
    }
  });
}

// The random draws of a CUDA graph capture (vox/core/cuda_graph.hpp). A replay must not repeat
// the captured draws' counters, so a captured draw reads its key and base counter from device
// memory, one {key, base} pair per generator, that each replay refreshes: it reserves from the
// generator as many blocks as the capture drew, exactly as the same eager draws would have.
class CapturedDraws {
 public:
  struct Draw {
    const uint64_t* state;  // device {key, base}
    uint64_t start;         // the counter relative to base
  };
  Draw reserve(Generator& g, uint64_t blocks, Device device) {
    auto it = std::find_if(sources_.begin(), sources_.end(), [&](const Source& s) { return s.generator == &g; });
    if (it == sources_.end()) {
      sources_.push_back({&g, g.offset(), 0, empty(Shape{2}, DType::i64, device)});
      it = sources_.end() - 1;
    }
    const uint64_t start = g.reserve(blocks) - it->first;
    it->consumed = g.offset() - it->first;
    return {static_cast<const uint64_t*>(it->state.raw_data()), start};
  }
  // Before a replay: each generator advances past the draws the replay will make.
  void refresh(int device) {
    for (Source& s : sources_) {
      const uint64_t base = s.generator->reserve(s.consumed);
      cuda_backend("CudaGraph::replay").store_words(s.state.raw_data(), {s.generator->seed(), base}, 2, device);
    }
  }

 private:
  struct Source {
    Generator* generator;  // must outlive the graph
    uint64_t first;        // its offset at the capture's first draw
    uint64_t consumed;     // blocks the capture drew from it
    Tensor state;
  };
  std::vector<Source> sources_;
};

// The calling thread's capture in progress on each device, if any (set by CudaGraph::capture).
inline CapturedDraws*& captured_draws(int device) {
  thread_local std::array<CapturedDraws*, 64> slots{};
  VOX_CHECK(device >= 0 && device < 64, "random", "device index ", device, " is outside [0, 64)");
  return slots[static_cast<size_t>(device)];
}

// A draw on a CUDA device: the same counters as fill_random, filled by the backend's Philox.
inline Tensor device_random(RandomKind kind, const Shape& shape, DType dtype, Generator* gen, Device device, double a, double b) {
  if (dtype != DType::f32 && dtype != DType::f64) {
    // The CPU rounds each draw to f32 before it stores a 16-bit float (and bernoulli's 0 or 1 is
    // exact in every dtype), so drawing in f32 and converting gives the CPU's values.
    VOX_CHECK(dtype == DType::f16 || dtype == DType::bf16 || kind == RandomKind::bernoulli, "random",
              "uniform and normal draws are floating, got ", dtype);
    return device_random(kind, shape, DType::f32, gen, device, a, b).to(dtype);
  }
  Generator& g = gen ? *gen : default_generator();
  Tensor t = empty(shape, dtype, device);
  const auto blocks = static_cast<uint64_t>((t.numel() + 1) / 2);
  if (CapturedDraws* capture = captured_draws(device.index)) {
    const CapturedDraws::Draw draw = capture->reserve(g, blocks, device);
    cuda_backend("random").random(kind, dtype, t.numel(), 0, draw.start, a, b, t.raw_data(), device.index, draw.state);
    return t;
  }
  const uint64_t start = g.reserve(blocks);
  cuda_backend("random").random(kind, dtype, t.numel(), g.seed(), start, a, b, t.raw_data(), device.index);
  return t;
}
}  // namespace detail

// Uniform on [low, high), on `device` (CUDA draws use the same counters, so the same values).
inline Tensor uniform(const Shape& shape, double low, double high, DType dtype = DType::f32, Generator* gen = nullptr,
                      Device device = Device::cpu()) {
  if (device.is_cuda()) return detail::device_random(RandomKind::uniform, shape, dtype, gen, device, low, high);
  Tensor t = empty(shape, dtype);
  dispatch_floating(dtype, "uniform", [&]<class T>() {
    detail::fill_random<T>(t, gen, 2, [&](int64_t lane, const std::array<uint32_t, 4>& b) {
      const double u = detail::uniform_from(b[2 * lane], b[2 * lane + 1]);
      return static_cast<compute_t<T>>(low + (high - low) * u);
    });
  });
  return t;
}

inline Tensor rand(const Shape& shape, DType dtype = DType::f32, Generator* gen = nullptr, Device device = Device::cpu()) {
  return uniform(shape, 0.0, 1.0, dtype, gen, device);
}

// Standard normal (Box-Muller on one Philox block per pair of outputs), scaled to N(mean, std^2).
inline Tensor randn(const Shape& shape, DType dtype = DType::f32, Generator* gen = nullptr, double mean = 0.0,
                    double std = 1.0, Device device = Device::cpu()) {
  if (device.is_cuda()) return detail::device_random(RandomKind::normal, shape, dtype, gen, device, mean, std);
  Tensor t = empty(shape, dtype);
  dispatch_floating(dtype, "randn", [&]<class T>() {
    detail::fill_random<T>(t, gen, 2, [&](int64_t lane, const std::array<uint32_t, 4>& b) {
      const double u1 = 1.0 - detail::uniform_from(b[0], b[1]);  // (0, 1]: log is finite
      const double u2 = detail::uniform_from(b[2], b[3]);
      const double r = std::sqrt(-2.0 * std::log(u1));
      const double angle = 2.0 * std::numbers::pi * u2;
      return static_cast<compute_t<T>>(mean + std * r * (lane == 0 ? std::cos(angle) : std::sin(angle)));
    });
  });
  return t;
}

// Integers uniform on [low, high).
inline Tensor randint(int64_t low, int64_t high, const Shape& shape, DType dtype = DType::i64, Generator* gen = nullptr) {
  VOX_CHECK(high > low, "randint", "empty range [", low, ", ", high, ")");
  Tensor t = empty(shape, dtype);
  const auto range = static_cast<unsigned __int128>(high - low);
  dispatch_numeric(dtype, "randint", [&]<class T>() {
    detail::fill_random<T>(t, gen, 2, [&](int64_t lane, const std::array<uint32_t, 4>& b) {
      const uint64_t bits = (uint64_t{b[2 * lane]} << 32) | b[2 * lane + 1];
      const auto v = static_cast<int64_t>((static_cast<unsigned __int128>(bits) * range) >> 64);
      return static_cast<compute_t<T>>(low + v);
    });
  });
  return t;
}

// 1 with probability p, else 0.
inline Tensor bernoulli(const Shape& shape, double p, DType dtype = DType::f32, Generator* gen = nullptr,
                        Device device = Device::cpu()) {
  VOX_CHECK(p >= 0.0 && p <= 1.0, "bernoulli", "probability ", p, " is outside [0, 1]");
  if (device.is_cuda()) return detail::device_random(RandomKind::bernoulli, shape, dtype, gen, device, p, 0.0);
  Tensor t = empty(shape, dtype);
  dispatch_all(dtype, "bernoulli", [&]<class T>() {
    detail::fill_random<T>(t, gen, 2, [&](int64_t lane, const std::array<uint32_t, 4>& b) {
      return static_cast<compute_t<T>>(detail::uniform_from(b[2 * lane], b[2 * lane + 1]) < p ? 1 : 0);
    });
  });
  return t;
}

}  // namespace vox
