#pragma once
// Reference-counted, 64-byte-aligned buffers, with counters of live and peak bytes so that
// memory plans (checkpointing, buffer reuse) can be measured rather than guessed. Large CPU
// buffers come from, and go back to, the block cache (cpu_block_cache.hpp).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "vox/core/backend.hpp"
#include "vox/core/cpu_block_cache.hpp"
#include "vox/core/device.hpp"
#include "vox/core/error.hpp"

namespace vox {

struct MemoryStats {
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t allocations = 0;
};

namespace detail {
struct MemoryCounters {
  std::atomic<int64_t> current{0}, peak{0}, allocations{0};
};
inline MemoryCounters& cpu_counters() {
  static MemoryCounters counters;
  return counters;
}
}  // namespace detail

inline MemoryStats cpu_memory_stats() {
  auto& c = detail::cpu_counters();
  return {c.current.load(), c.peak.load(), c.allocations.load()};
}

// Sets the peak to what is live now, so the next peak measures one phase of work.
inline void reset_cpu_peak_memory() {
  auto& c = detail::cpu_counters();
  c.peak.store(c.current.load());
}

inline constexpr size_t kCpuAlignment = detail::CpuBlockCache::kAlignment;

// Where a CPU buffer lives: ordinary pageable memory, or page-locked memory from the CUDA backend
// (Tensor::pin_memory), which the device copies from and to asynchronously.
enum class HostMemory : uint8_t { pageable, pinned };

class Storage {
 public:
  Storage(size_t nbytes, Device device, HostMemory host = HostMemory::pageable) : nbytes_(nbytes), device_(device) {
    if (device.is_cuda()) {  // the backend's caching allocator keeps its own counters
      DeviceBackend& backend = cuda_backend("Storage");
      VOX_CHECK(device.index >= 0 && device.index < backend.device_count(), "Storage", "device ", device, " does not exist (",
                backend.device_count(), " CUDA device(s) found)");
      data_ = backend.allocate(nbytes, device.index);
      return;
    }
    if (host == HostMemory::pinned) {
      data_ = cuda_backend("pin_memory").allocate_pinned(nbytes);
      pinned_ = true;
      account(nbytes);
      return;
    }
    const size_t rounded = detail::CpuBlockCache::rounded_size(nbytes);
    data_ = detail::CpuBlockCache::instance().allocate(rounded);
    if (!data_) throw Error(detail::concat("Storage: out of memory allocating ", nbytes, " bytes"));
    account(rounded);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    if (device_.is_cuda()) {
      cuda_backend("Storage").deallocate(data_, nbytes_, device_.index);
      return;
    }
    if (pinned_) cuda_backend("Storage").deallocate_pinned(data_);
    else detail::CpuBlockCache::instance().release(data_, accounted_);
    detail::cpu_counters().current.fetch_sub(static_cast<int64_t>(accounted_));
  }

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  bool pinned() const { return pinned_; }

 private:
  // CPU buffers, pinned ones included, count in cpu_memory_stats().
  void account(size_t bytes) {
    auto& c = detail::cpu_counters();
    const int64_t now = c.current.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
    int64_t peak = c.peak.load();
    while (now > peak && !c.peak.compare_exchange_weak(peak, now)) {
    }
    c.allocations.fetch_add(1);
    accounted_ = bytes;
  }

  void* data_ = nullptr;
  size_t nbytes_ = 0;
  size_t accounted_ = 0;
  Device device_;
  bool pinned_ = false;
};

}  // namespace vox
