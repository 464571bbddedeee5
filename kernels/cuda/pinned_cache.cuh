#pragma once
// Page-locked host blocks, cached as PyTorch's host allocator caches them. cudaFreeHost waits
// for the whole device, so a pinned tensor that dies right after queuing its copy (the idiom
// `batch.pin_memory().to(device, true)`) would make that copy blocking. Here a freed block is
// kept; an event recorded after each asynchronous copy that touched it says when it may be
// handed out again, and blocks go back to the driver only on release() (empty_cuda_cache, exit).
#include <cuda_runtime.h>

#include <cstddef>
#include <iterator>
#include <map>
#include <mutex>

#include "kernels/cuda/check.cuh"

namespace vox::cuda {

class PinnedHostCache {
 public:
  void* allocate(size_t nbytes) {
    const size_t size = nbytes == 0 ? 1 : nbytes;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // the smallest free block that fits and is not more than twice the request, its copies done
      for (auto it = free_.lower_bound(size); it != free_.end() && it->first <= 2 * size; ++it) {
        Block& block = blocks_.at(it->second);
        if (block.pending && cudaEventQuery(block.done) != cudaSuccess) {
          (void)cudaGetLastError();  // cudaErrorNotReady: still in use
          continue;
        }
        block.pending = false;
        void* ptr = it->second;
        free_.erase(it);
        return ptr;
      }
    }
    void* ptr = nullptr;
    const cudaError_t status = cudaHostAlloc(&ptr, size, cudaHostAllocPortable);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      fail("pin_memory", "cannot page-lock ", nbytes, " bytes of host memory");
    }
    VOX_CUDA_CHECK(status);
    Block block{size};
    VOX_CUDA_CHECK(cudaEventCreateWithFlags(&block.done, cudaEventDisableTiming));
    std::lock_guard<std::mutex> lock(mutex_);
    blocks_.emplace(ptr, block);
    return ptr;
  }

  // The block goes to the free list at once; it is reused only after its copies have run.
  void deallocate(void* ptr) {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = blocks_.find(ptr);
    if (it == blocks_.end()) return;
    free_.emplace(it->second.size, ptr);
  }

  // After queuing an asynchronous copy on `stream` that reads or writes host address `ptr`: if
  // that lies in a cached block, the block is not reused before the copy has run. A block used
  // on another stream first waits for that stream's copy (rare: one pinned buffer, two streams).
  void record_use(const void* ptr, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.upper_bound(const_cast<void*>(ptr));
    if (it == blocks_.begin()) return;
    --it;
    Block& block = it->second;
    if (static_cast<const char*>(ptr) >= static_cast<const char*>(it->first) + block.size) return;
    if (block.pending && block.stream != stream) VOX_CUDA_CHECK(cudaEventSynchronize(block.done));
    VOX_CUDA_CHECK(cudaEventRecord(block.done, stream));
    block.pending = true;
    block.stream = stream;
  }

  // Frees every free block (waiting for its copies); blocks still held by tensors stay.
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [size, ptr] : free_) {
      Block& block = blocks_.at(ptr);
      if (block.pending) (void)cudaEventSynchronize(block.done);
      (void)cudaEventDestroy(block.done);
      if (cudaFreeHost(ptr) != cudaSuccess) (void)cudaGetLastError();
      blocks_.erase(ptr);
    }
    free_.clear();
  }

  size_t cached_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t total = 0;
    for (const auto& [size, ptr] : free_) total += size;
    return total;
  }

 private:
  struct Block {
    size_t size = 0;
    cudaEvent_t done = nullptr;  // recorded after the last asynchronous copy that used the block
    bool pending = false;
    cudaStream_t stream = nullptr;
  };
  mutable std::mutex mutex_;
  std::map<void*, Block> blocks_;      // every block, held or free, by address
  std::multimap<size_t, void*> free_;  // free blocks by size
};

}  // namespace vox::cuda
