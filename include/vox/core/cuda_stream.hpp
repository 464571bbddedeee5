#pragma once
// CUDA streams for programs that overlap work: copying the next batch while this one trains, say.
// vox queues a device's work on the calling thread's current stream for that device (the
// default stream until a CudaStreamGuard selects another); the caching allocator keeps the
// blocks of each stream apart, so work on two streams never shares a block by accident.
//
//   vox::CudaStream copy_stream(0);
//   {
//     vox::CudaStreamGuard on(copy_stream);
//     next = batch.pin_memory().to(vox::Device::cuda(0), /*non_blocking=*/true);
//   }
//   ... train on the current batch ...
//   copy_stream.synchronize();
//   vox::record_stream(next, vox::current_cuda_stream(0));  // now used on the default stream too
#include <utility>

#include "vox/core/backend.hpp"
#include "vox/core/tensor.hpp"

namespace vox {

// An owned stream on one device; destroying it waits for its work.
class CudaStream {
 public:
  explicit CudaStream(int device = 0) : device_(device), handle_(cuda_backend("CudaStream").create_stream(device)) {}
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  CudaStream(CudaStream&& other) noexcept : device_(other.device_), handle_(std::exchange(other.handle_, nullptr)) {}
  CudaStream& operator=(CudaStream&& other) noexcept {
    std::swap(device_, other.device_);
    std::swap(handle_, other.handle_);
    return *this;
  }
  ~CudaStream() {
    if (!handle_) return;
    try {
      cuda_backend("CudaStream").destroy_stream(handle_, device_);
    } catch (const Error&) {  // the runtime may be shutting down; the driver reclaims the stream
    }
  }

  int device() const { return device_; }
  void* handle() const { return handle_; }  // the cudaStream_t
  void synchronize() const { cuda_backend("CudaStream").synchronize_stream(handle_, device_); }

 private:
  int device_;
  void* handle_;
};

// Makes `stream` the calling thread's current stream of its device for a scope.
class CudaStreamGuard {
 public:
  explicit CudaStreamGuard(const CudaStream& stream)
      : device_(stream.device()), previous_(cuda_backend("CudaStreamGuard").current_stream(stream.device())) {
    cuda_backend("CudaStreamGuard").set_current_stream(stream.handle(), device_);
  }
  CudaStreamGuard(const CudaStreamGuard&) = delete;
  CudaStreamGuard& operator=(const CudaStreamGuard&) = delete;
  ~CudaStreamGuard() { cuda_backend("CudaStreamGuard").set_current_stream(previous_, device_); }

 private:
  int device_;
  void* previous_;
};

// The calling thread's current stream of `device` (nullptr: the default stream).
inline void* current_cuda_stream(int device = 0) { return cuda_backend("current_cuda_stream").current_stream(device); }

// Waits for all work queued on `device`, every stream included.
inline void cuda_synchronize(int device = 0) { cuda_backend("cuda_synchronize").synchronize(device); }

// Tells the allocator that `t`'s memory is used by work on `stream` (a cudaStream_t, as
// CudaStream::handle gives), so that freeing `t` does not hand its block to other work before
// that stream's queued work has run.
inline void record_stream(const Tensor& t, void* stream) {
  VOX_CHECK(t.device().is_cuda(), "record_stream", "the tensor is on ", t.device(), ", not a CUDA device");
  cuda_backend("record_stream").record_stream(t.impl()->storage->data(), stream, t.device().index);
}

// Resets the peak counters, and returns cached blocks to the driver.
inline void reset_cuda_peak_memory(int device = 0) { cuda_backend("reset_cuda_peak_memory").reset_peak_memory(device); }
inline void empty_cuda_cache(int device = 0) { cuda_backend("empty_cuda_cache").empty_cache(device); }

}  // namespace vox
