#pragma once
// CUDA graph captures in progress, by stream, and what each graph keeps for its replays: its
// executable, its allocator pool, and the page-locked copies of host data that its uploads read
// (a replay copies them again, so they must outlive the capture's host vectors).
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <cuda_runtime.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/stream.cuh"

namespace vox::cuda {

struct GraphCapture {
  int device = 0;
  cudaStream_t stream = nullptr;  // the stream captured
  int64_t pool = 0;               // the caching allocator's graph pool
  std::vector<void*> staging;     // page-locked host buffers its uploads read
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;

  // Frees what the graph holds, its pool aside (the allocator's). Never throws: graphs are
  // destroyed from destructors.
  void release() {
    if (exec && cudaGraphExecDestroy(exec) != cudaSuccess) (void)cudaGetLastError();
    if (graph && cudaGraphDestroy(graph) != cudaSuccess) (void)cudaGetLastError();
    for (void* p : staging)
      if (cudaFreeHost(p) != cudaSuccess) (void)cudaGetLastError();
    exec = nullptr, graph = nullptr, staging.clear();
  }

  // A page-locked copy of `bytes` bytes at `src`, kept for the graph's lifetime.
  const void* keep(const void* src, size_t bytes) {
    void* copy = nullptr;
    {
      RelaxedCaptureMode relaxed(true);  // cudaHostAlloc is refused while capturing otherwise
      VOX_CUDA_CHECK(cudaHostAlloc(&copy, bytes, cudaHostAllocPortable));
    }
    std::memcpy(copy, src, bytes);
    staging.push_back(copy);
    return copy;
  }
};

// The captures in progress. Looking one up costs an atomic load when there are none.
class GraphCaptures {
 public:
  GraphCapture* find(cudaStream_t stream) const {
    if (count_.load(std::memory_order_acquire) == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = by_stream_.find(stream);
    return it == by_stream_.end() ? nullptr : it->second.get();
  }
  GraphCapture* add(std::unique_ptr<GraphCapture> capture) {
    std::lock_guard<std::mutex> lock(mutex_);
    GraphCapture* raw = capture.get();
    by_stream_[raw->stream] = std::move(capture);
    count_.store(static_cast<int>(by_stream_.size()), std::memory_order_release);
    return raw;
  }
  // Hands back the capture of `stream`, no longer in progress (null if there was none).
  std::unique_ptr<GraphCapture> remove(cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = by_stream_.find(stream);
    if (it == by_stream_.end()) return nullptr;
    std::unique_ptr<GraphCapture> capture = std::move(it->second);
    by_stream_.erase(it);
    count_.store(static_cast<int>(by_stream_.size()), std::memory_order_release);
    return capture;
  }

 private:
  mutable std::mutex mutex_;
  std::map<cudaStream_t, std::unique_ptr<GraphCapture>> by_stream_;
  std::atomic<int> count_{0};
};

struct Words {
  uint64_t value[4];
};

// dst[0 .. count) = the launch's values, so the host's copy may change as soon as it is queued.
__global__ void store_words_kernel(uint64_t* dst, Words words, int count) {
  if (threadIdx.x < count) dst[threadIdx.x] = words.value[threadIdx.x];
}

}  // namespace vox::cuda
