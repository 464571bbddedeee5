#pragma once
// A caching device allocator. cudaMalloc and cudaFree synchronise the device and cost tens of
// microseconds, so freed blocks are kept in per-device free lists and handed out again:
//   - sizes round up to 512 bytes below 1 MiB and to 2 MiB multiples above, so that blocks of
//     nearby sizes are interchangeable (the size classes);
//   - a request takes the smallest cached block that fits and wastes at most a quarter of it;
//   - on cudaErrorMemoryAllocation the cache is returned to the driver and the request retried
//     once, then refused with a vox::Error that gives the numbers.
// Stream order: vox runs all work of a device on its default stream, so a freed block is only
// reused by work queued after its last use; this is what makes reuse without events safe. Work
// on other streams must synchronise before freeing.
#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "vox/core/backend.hpp"

namespace vox::cuda {

class CachingAllocator {
 public:
  static size_t round_size(size_t nbytes) {
    constexpr size_t small = 512, large = size_t{2} << 20, threshold = size_t{1} << 20;
    nbytes = nbytes == 0 ? 1 : nbytes;
    return nbytes < threshold ? (nbytes + small - 1) / small * small : (nbytes + large - 1) / large * large;
  }

  void* allocate(size_t nbytes, int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[device];
    const size_t size = round_size(nbytes);
    ++pool.stats.allocations;
    void* ptr = nullptr;
    auto it = pool.free_blocks.lower_bound(size);
    if (it != pool.free_blocks.end() && it->first <= size + size / 3) {
      ptr = it->second;
      pool.live[ptr] = it->first;
      pool.stats.allocated_bytes += static_cast<int64_t>(it->first);
      pool.free_blocks.erase(it);
    } else {
      ptr = device_malloc(pool, size, device);
      pool.live[ptr] = size;
      pool.stats.allocated_bytes += static_cast<int64_t>(size);
    }
    pool.stats.peak_allocated_bytes = std::max(pool.stats.peak_allocated_bytes, pool.stats.allocated_bytes);
    return ptr;
  }

  void deallocate(void* ptr, int device) {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[device];
    const auto it = pool.live.find(ptr);
    if (it == pool.live.end()) return;  // not ours: never free what we did not hand out
    pool.stats.allocated_bytes -= static_cast<int64_t>(it->second);
    pool.free_blocks.emplace(it->second, ptr);
    pool.live.erase(it);
  }

  // Returns every cached (free) block of `device` to the driver.
  void empty_cache(int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached(pools_[device], device);
  }

  DeviceMemoryStats stats(int device) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = pools_.find(device);
    return it == pools_.end() ? DeviceMemoryStats{} : it->second.stats;
  }

  void reset_peak(int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& s = pools_[device].stats;
    s.peak_allocated_bytes = s.allocated_bytes;
    s.peak_reserved_bytes = s.reserved_bytes;
  }

 private:
  struct Pool {
    std::multimap<size_t, void*> free_blocks;
    std::unordered_map<void*, size_t> live;
    DeviceMemoryStats stats;
  };

  void* device_malloc(Pool& pool, size_t size, int device) {
    VOX_CUDA_CHECK(cudaSetDevice(device));
    void* ptr = nullptr;
    cudaError_t status = cudaMalloc(&ptr, size);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the sticky-free error before retrying
      release_cached(pool, device);
      status = cudaMalloc(&ptr, size);
    }
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      throw Error(detail::concat("CUDA out of memory: cannot allocate ", size, " bytes on cuda:", device, " (", free_bytes,
                                 " of ", total_bytes, " bytes free; vox holds ", pool.stats.allocated_bytes,
                                 " bytes in live tensors and ", pool.stats.reserved_bytes, " reserved)"));
    }
    VOX_CUDA_CHECK(status);
    pool.stats.reserved_bytes += static_cast<int64_t>(size);
    pool.stats.peak_reserved_bytes = std::max(pool.stats.peak_reserved_bytes, pool.stats.reserved_bytes);
    ++pool.stats.device_allocations;
    return ptr;
  }

  static void release_cached(Pool& pool, int device) {
    if (pool.free_blocks.empty()) return;
    VOX_CUDA_CHECK(cudaSetDevice(device));
    VOX_CUDA_CHECK(cudaDeviceSynchronize());
    for (auto& [size, ptr] : pool.free_blocks) {
      VOX_CUDA_CHECK(cudaFree(ptr));
      pool.stats.reserved_bytes -= static_cast<int64_t>(size);
    }
    pool.free_blocks.clear();
  }

  mutable std::mutex mutex_;
  std::map<int, Pool> pools_;
};

}  // namespace vox::cuda
