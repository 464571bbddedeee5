#pragma once
// A caching device allocator. cudaMalloc and cudaFree synchronise the device and cost tens of
// microseconds, so freed blocks are kept in per-device, per-stream free lists and handed out again:
//   - sizes round up to 512 bytes below 1 MiB and to 2 MiB multiples above, so that blocks of
//     nearby sizes are interchangeable (the size classes);
//   - a request takes the smallest cached block of its stream that fits and wastes at most a
//     quarter of it;
//   - on cudaErrorMemoryAllocation the cache is returned to the driver and the request retried
//     once, then refused with a vox::Error that gives the numbers.
// Streams: a block belongs to the stream that was current when it was allocated, and a freed
// block is only reused by later requests on that stream. Work on one stream runs in order, so
// whatever reuses the block runs after the block's last use there, with no event needed. A block
// also used on another stream is marked with record_stream: when it is freed, an event is recorded
// on each such stream, and the block waits in a pending list until those events have completed.
// CUDA graphs: while a stream is being captured, its requests are served from a pool private to
// the graph, and blocks freed during the capture go back to that pool, never to other work: a
// replay writes to every block the capture used. Blocks allocated before the capture and freed
// during it are kept by the graph too (its kernels may read them). The pool lives until the graph
// is destroyed; blocks of it still held by tensors then become ordinary blocks of the capture's
// stream.
#include <algorithm>
#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/stream.cuh"
#include "vox/core/backend.hpp"

namespace vox::cuda {

class CachingAllocator {
 public:
  static size_t round_size(size_t nbytes) {
    constexpr size_t small = 512, large = size_t{2} << 20, threshold = size_t{1} << 20;
    nbytes = nbytes == 0 ? 1 : nbytes;
    return nbytes < threshold ? (nbytes + small - 1) / small * small : (nbytes + large - 1) / large * large;
  }

  // A block for work on the current stream of `device`.
  void* allocate(size_t nbytes, int device) {
    const cudaStream_t stream = launch_stream(device);
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[device];
    GraphPool* graph = capturing_pool(pool, stream);
    if (!graph) collect_finished(pool);  // event queries are not allowed while capturing
    const size_t size = round_size(nbytes);
    ++pool.stats.allocations;
    void* ptr = nullptr;
    size_t block_size = size;
    auto& free_list = graph ? graph->free_blocks : pool.free_blocks[stream];
    auto it = free_list.lower_bound(size);
    if (it != free_list.end() && it->first <= size + size / 3) {
      ptr = it->second;
      block_size = it->first;
      free_list.erase(it);
    } else {
      ptr = device_malloc(pool, size, device, graph != nullptr);
    }
    pool.live[ptr] = Block{block_size, nbytes, stream, {}, graph ? graph->id : 0};
    pool.stats.allocated_bytes += static_cast<int64_t>(block_size);
    pool.stats.requested_bytes += static_cast<int64_t>(nbytes);
    pool.stats.peak_allocated_bytes = std::max(pool.stats.peak_allocated_bytes, pool.stats.allocated_bytes);
    return ptr;
  }

  void deallocate(void* ptr, int device) {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[device];
    const auto it = pool.live.find(ptr);
    if (it == pool.live.end()) return;  // not ours: never free what we did not hand out
    const Block block = it->second;
    pool.live.erase(it);
    pool.stats.allocated_bytes -= static_cast<int64_t>(block.size);
    pool.stats.requested_bytes -= static_cast<int64_t>(block.requested);
    if (block.graph != 0) {  // a graph's block serves that graph's captures only
      pool.graphs.at(block.graph).free_blocks.emplace(block.size, ptr);
      return;
    }
    if (GraphPool* graph = capturing_pool(pool, launch_stream(device))) {  // the graph may read it: keep it
      graph->retained.emplace_back(ptr, block);
      return;
    }
    if (block.other_streams.empty()) {
      pool.free_blocks[block.stream].emplace(block.size, ptr);
      return;
    }
    // Tensors free their storage in destructors, so nothing here throws: if an event cannot be
    // recorded, wait for the whole device instead, after which the block is free.
    Pending pending{ptr, block, {}};
    bool recorded = cudaSetDevice(device) == cudaSuccess;
    for (cudaStream_t use : block.other_streams) {
      cudaEvent_t done = nullptr;
      recorded = recorded && cudaEventCreateWithFlags(&done, cudaEventDisableTiming) == cudaSuccess;
      if (done) pending.events.push_back(done);
      recorded = recorded && cudaEventRecord(done, use) == cudaSuccess;
    }
    if (recorded) {
      pool.pending.push_back(std::move(pending));
      return;
    }
    (void)cudaGetLastError();
    (void)cudaDeviceSynchronize();
    for (cudaEvent_t e : pending.events) (void)cudaEventDestroy(e);
    pool.free_blocks[block.stream].emplace(block.size, ptr);
  }

  // Marks ptr's block as used by work on `stream` too (see the header comment).
  void record_stream(void* ptr, cudaStream_t stream, int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[device];
    const auto it = pool.live.find(ptr);
    VOX_CHECK(it != pool.live.end(), "record_stream", "the pointer is not the start of a block this allocator handed out on cuda:",
              device);
    Block& block = it->second;
    if (stream != block.stream &&
        std::find(block.other_streams.begin(), block.other_streams.end(), stream) == block.other_streams.end())
      block.other_streams.push_back(stream);
  }

  // Before `stream` is destroyed, and after it has been synchronised: its free blocks, and the live
  // blocks allocated on it, pass to the default stream, so that a stream created later at the
  // same address inherits nothing.
  void forget_stream(cudaStream_t stream, int device) {
    if (!stream) return;
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[device];
    const auto it = pool.free_blocks.find(stream);
    if (it != pool.free_blocks.end()) {
      pool.free_blocks[nullptr].merge(it->second);
      pool.free_blocks.erase(it);
    }
    for (auto& [ptr, block] : pool.live) {
      if (block.stream == stream) block.stream = nullptr;
      std::erase(block.other_streams, stream);
    }
    for (Pending& p : pool.pending)
      if (p.block.stream == stream) p.block.stream = nullptr;
    for (auto& [id, graph] : pool.graphs) {
      if (graph.stream == stream) graph.stream = nullptr;
      for (auto& [ptr, block] : graph.retained)
        if (block.stream == stream) block.stream = nullptr;
    }
  }

  // Starts serving `stream`'s requests from a new graph pool; returns the pool's id.
  int64_t begin_graph_pool(cudaStream_t stream, int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[device];
    const int64_t id = ++pool.last_graph;
    pool.graphs[id].id = id;
    pool.graphs[id].stream = stream;
    pool.capturing[stream] = id;
    return id;
  }
  // The capture on `stream` has ended: its pool stays with the graph, but serves no one else.
  void end_graph_capture(cudaStream_t stream, int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    pools_[device].capturing.erase(stream);
  }
  // The graph is gone and the device idle (the caller synchronised it): its free blocks return to
  // the driver, the blocks it retained to their streams, and its blocks still held by tensors
  // become ordinary blocks of the capture's stream.
  void release_graph_pool(int64_t id, int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[device];
    const auto it = pool.graphs.find(id);
    if (it == pool.graphs.end()) return;
    GraphPool& graph = it->second;
    for (const auto& [size, ptr] : graph.free_blocks) {
      if (cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();  // runs from destructors: never throws
      pool.stats.reserved_bytes -= static_cast<int64_t>(size);
    }
    for (const auto& [ptr, block] : graph.retained) pool.free_blocks[block.stream].emplace(block.size, ptr);
    for (auto& [ptr, block] : pool.live)
      if (block.graph == id) block.graph = 0, block.stream = graph.stream;
    pool.graphs.erase(it);  // its capture has ended (end_graph_capture), so no stream still maps to it
  }

  // Returns every cached (free or pending) block of `device` to the driver.
  void empty_cache(int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached(pools_[device], device);
  }

  DeviceMemoryStats stats(int device) const {
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_[device];
    if (pool.capturing.empty()) collect_finished(pool);
    DeviceMemoryStats s = pool.stats;
    auto count = [&s](size_t size) {
      s.cached_bytes += static_cast<int64_t>(size);
      s.largest_cached_block = std::max(s.largest_cached_block, static_cast<int64_t>(size));
      ++s.cached_blocks;
    };
    for (const auto& [stream, list] : pool.free_blocks)
      for (const auto& [size, ptr] : list) count(size);
    for (const Pending& p : pool.pending) count(p.block.size);
    s.pending_blocks = static_cast<int64_t>(pool.pending.size());
    for (const auto& [id, graph] : pool.graphs) {
      for (const auto& [size, ptr] : graph.free_blocks) s.graph_pool_bytes += static_cast<int64_t>(size);
      for (const auto& [ptr, block] : graph.retained) s.graph_pool_bytes += static_cast<int64_t>(block.size);
    }
    return s;
  }

  void reset_peak(int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& s = pools_[device].stats;
    s.peak_allocated_bytes = s.allocated_bytes;
    s.peak_reserved_bytes = s.reserved_bytes;
  }

 private:
  struct Block {
    size_t size;       // rounded
    size_t requested;  // as asked
    cudaStream_t stream;
    std::vector<cudaStream_t> other_streams;  // from record_stream
    int64_t graph = 0;                        // the graph pool it belongs to; 0: none
  };
  struct Pending {
    void* ptr;
    Block block;
    std::vector<cudaEvent_t> events;
  };
  struct GraphPool {
    int64_t id = 0;
    cudaStream_t stream = nullptr;  // the stream it was captured on
    std::multimap<size_t, void*> free_blocks;
    std::vector<std::pair<void*, Block>> retained;  // allocated before the capture, freed during it
  };
  struct Pool {
    std::map<cudaStream_t, std::multimap<size_t, void*>> free_blocks;
    std::unordered_map<void*, Block> live;
    std::vector<Pending> pending;
    std::map<int64_t, GraphPool> graphs;
    std::map<cudaStream_t, int64_t> capturing;  // streams being captured, and their graph pools
    int64_t last_graph = 0;
    DeviceMemoryStats stats;
  };

  static GraphPool* capturing_pool(Pool& pool, cudaStream_t stream) {
    if (pool.capturing.empty()) return nullptr;
    const auto it = pool.capturing.find(stream);
    return it == pool.capturing.end() ? nullptr : &pool.graphs.at(it->second);
  }

  // Pending blocks whose other streams have finished with them go back to their stream's list.
  static void collect_finished(Pool& pool) {
    auto finished = [](const Pending& p) {
      for (cudaEvent_t e : p.events) {
        const cudaError_t status = cudaEventQuery(e);
        if (status == cudaErrorNotReady) return false;
        VOX_CUDA_CHECK(status);
      }
      return true;
    };
    for (auto it = pool.pending.begin(); it != pool.pending.end();) {
      if (!finished(*it)) {
        ++it;
        continue;
      }
      for (cudaEvent_t e : it->events) VOX_CUDA_CHECK(cudaEventDestroy(e));
      pool.free_blocks[it->block.stream].emplace(it->block.size, it->ptr);
      it = pool.pending.erase(it);
    }
  }

  // During a capture, cudaMalloc runs in relaxed capture mode (it enqueues nothing), and an
  // out-of-memory is not retried: returning the cache would synchronise the device.
  void* device_malloc(Pool& pool, size_t size, int device, bool capturing) {
    VOX_CUDA_CHECK(cudaSetDevice(device));
    void* ptr = nullptr;
    cudaError_t status = cudaSuccess;
    {
      RelaxedCaptureMode relaxed(capturing);
      status = cudaMalloc(&ptr, size);
    }
    if (status == cudaErrorMemoryAllocation && !capturing) {
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
    if (pool.free_blocks.empty() && pool.pending.empty()) return;
    VOX_CUDA_CHECK(cudaSetDevice(device));
    VOX_CUDA_CHECK(cudaDeviceSynchronize());  // every stream's work is done: pending blocks are free
    collect_finished(pool);
    for (auto& [stream, list] : pool.free_blocks)
      for (auto& [size, ptr] : list) {
        VOX_CUDA_CHECK(cudaFree(ptr));
        pool.stats.reserved_bytes -= static_cast<int64_t>(size);
      }
    pool.free_blocks.clear();
  }

  mutable std::mutex mutex_;
  mutable std::map<int, Pool> pools_;  // stats() collects finished pending blocks
};

}  // namespace vox::cuda
