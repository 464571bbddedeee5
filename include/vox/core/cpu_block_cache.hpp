#pragma once
// Large CPU buffers kept for reuse after their tensors die.
//
// A training step allocates the same activation and gradient sizes every iteration. glibc serves
// blocks above its mmap threshold (at most 32 MiB) with fresh mappings, so each step would fault
// in and zero every page of those buffers again. Freed blocks of 1 MiB and more are kept here,
// binned by size class (four classes per power of two), and handed back to the next allocation
// of that class. The pages of a class's unused tail are never touched, so rounding up costs
// address space, not resident memory.
//
// The cache holds at most `limit` bytes (default 512 MiB; VOX_CPU_CACHE_MIB overrides it at
// start-up, 0 turns caching off) and never a block larger than a quarter of that, so that one
// huge volume read at start-up is not held for the rest of the run. Under AddressSanitizer the
// default is 0, so that every dead buffer is freed where the sanitizer can watch its use.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

namespace vox {

struct CpuCacheStats {
  int64_t cached_bytes = 0;  // freed blocks held for reuse
  int64_t hits = 0;          // allocations served from the cache
  int64_t misses = 0;        // cacheable allocations that went to the system
  int64_t limit_bytes = 0;
};

namespace detail {

class CpuBlockCache {
 public:
  static constexpr size_t kMinCached = size_t{1} << 20;
  static constexpr size_t kAlignment = 64;

  static CpuBlockCache& instance() {  // never destroyed: tensors in static storage may die after it
    static CpuBlockCache* cache = new CpuBlockCache;
    return *cache;
  }

  // The size actually allocated for a request of nbytes (64-byte multiple, or the size class).
  static size_t rounded_size(size_t nbytes) {
    const size_t bytes = (std::max<size_t>(nbytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
    if (bytes < kMinCached) return bytes;
    size_t octave = kMinCached;
    while (octave * 2 <= bytes) octave *= 2;
    const size_t step = octave / 4;
    return (bytes + step - 1) / step * step;
  }

  // A block of rounded_size(nbytes) bytes, or null when the system has none.
  void* allocate(size_t rounded) {
    if (rounded >= kMinCached) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(rounded);
      if (it != free_.end() && !it->second.empty()) {
        void* block = it->second.back();
        it->second.pop_back();
        cached_ -= rounded;
        ++hits_;
        return block;
      }
      ++misses_;
    }
    return std::aligned_alloc(kAlignment, rounded);
  }

  void release(void* block, size_t rounded) {
    if (rounded >= kMinCached) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (rounded <= limit_ / 4 && cached_ + rounded <= limit_) {
        free_[rounded].push_back(block);
        cached_ += rounded;
        return;
      }
    }
    std::free(block);
  }

  // Whether this program is built with AddressSanitizer (then nothing is cached by default).
  static constexpr bool address_sanitizer() {
#if defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
  }

  // Returns every cached block to the system.
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [size, blocks] : free_)
      for (void* block : blocks) std::free(block);
    free_.clear();
    cached_ = 0;
  }

  void set_limit(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
    }
    if (cached_over_limit()) clear();
  }

  CpuCacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(cached_), hits_, misses_, static_cast<int64_t>(limit_)};
  }

 private:
  CpuBlockCache() {
    if (address_sanitizer()) limit_ = 0;
    if (const char* mib = std::getenv("VOX_CPU_CACHE_MIB")) limit_ = static_cast<size_t>(std::strtoull(mib, nullptr, 10)) << 20;
  }
  bool cached_over_limit() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_ > limit_;
  }

  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
  size_t limit_ = size_t{512} << 20;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace detail

inline CpuCacheStats cpu_cache_stats() { return detail::CpuBlockCache::instance().stats(); }
// Frees the cached blocks (their memory goes back to the system allocator).
inline void release_cpu_cache() { detail::CpuBlockCache::instance().clear(); }
// Caps the bytes held for reuse; 0 turns caching off.
inline void set_cpu_cache_limit(int64_t bytes) { detail::CpuBlockCache::instance().set_limit(static_cast<size_t>(std::max<int64_t>(bytes, 0))); }

}  // namespace vox
