#pragma once
// Where autocast is on (vox/amp/autocast.hpp opens it), per device type and thread, like grad
// mode: the ops consult it (ops/autocast.hpp) and the backward engine suspends it, so that
// gradients keep the dtypes their forward pass gave them.
//
// It also keeps the cast cache: within one autocast scope, a parameter (a leaf that requires
// grad) is cast to the low precision once, however many ops use it. The cache empties when the
// outermost scope closes, and whenever an optimizer changes parameters (parameters_changed()).
#include <array>
#include <atomic>
#include <optional>
#include <cstdint>
#include <unordered_map>

#include "vox/core/tensor.hpp"

namespace vox::amp {

struct AutocastMode {
  bool cpu = false;   // on for tensors on the CPU ...
  DType cpu_dtype = DType::bf16;
  bool cuda = false;  // ... and for tensors on CUDA devices
  DType cuda_dtype = DType::f16;
  int depth = 0;      // open scopes on this thread
  bool suspended = false;
  // The low-precision dtype for tensors on `device`, if autocast is on for it.
  std::optional<DType> dtype_for(Device device) const {
    if (suspended) return std::nullopt;
    if (device.is_cuda()) return cuda ? std::optional<DType>(cuda_dtype) : std::nullopt;
    return cpu ? std::optional<DType>(cpu_dtype) : std::nullopt;
  }
};

inline AutocastMode& autocast_mode() {
  thread_local AutocastMode mode;
  return mode;
}

inline std::atomic<uint64_t>& parameter_generation() {
  static std::atomic<uint64_t> generation{0};
  return generation;
}
// Called by optimizers after they change parameters: casts cached before are stale.
inline void parameters_changed() { parameter_generation().fetch_add(1, std::memory_order_relaxed); }

// Parameter -> its cast, by identity, target dtype and grad mode (a cast made under no_grad is
// not on the tape, and must not stand in for one that is); the source is held so that its
// address stays unique while cached.
struct CastCache {
  struct Entry {
    Tensor source, cast;
  };
  std::unordered_map<const TensorImpl*, std::array<Entry, 4>> entries;
  uint64_t generation = 0;
  static size_t slot(DType d, bool recorded) { return (d == DType::f16 ? 0 : 1) + (recorded ? 2 : 0); }
};
inline CastCache& cast_cache() {
  thread_local CastCache cache;
  return cache;
}

// The backward engine runs inside one: gradients are computed in the dtypes of the forward pass.
class AutocastSuspend {
 public:
  AutocastSuspend() : previous_(autocast_mode().suspended) { autocast_mode().suspended = true; }
  ~AutocastSuspend() { autocast_mode().suspended = previous_; }
  AutocastSuspend(const AutocastSuspend&) = delete;
  AutocastSuspend& operator=(const AutocastSuspend&) = delete;

 private:
  bool previous_;
};

// Sets the autocast mode of an earlier forward pass (and an empty cast cache) for a scope:
// checkpointed blocks recompute under it, so that they cast as they did the first time.
class AutocastReplay {
 public:
  explicit AutocastReplay(const AutocastMode& forward) : outer_(autocast_mode()), outer_cache_(std::move(cast_cache())) {
    autocast_mode() = forward;
    autocast_mode().suspended = false;
    cast_cache() = CastCache{};
  }
  ~AutocastReplay() {
    autocast_mode() = outer_;
    cast_cache() = std::move(outer_cache_);
  }
  AutocastReplay(const AutocastReplay&) = delete;
  AutocastReplay& operator=(const AutocastReplay&) = delete;

 private:
  AutocastMode outer_;
  CastCache outer_cache_;
};

}  // namespace vox::amp
