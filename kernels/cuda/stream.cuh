#pragma once
// The stream vox queues a device's work on: per calling thread and device, the device's legacy
// default stream until a vox::CudaStreamGuard (vox/core/cuda_stream.hpp) selects another, the
// rule PyTorch users know as the "current stream". Every kernel launch, copy, cuBLAS call and
// cuDNN plan of the backend goes to it, and the caching allocator hands out blocks per stream.
#include <array>

#include <cuda_runtime.h>

#include "vox/core/error.hpp"

namespace vox::cuda {

inline constexpr int kMaxDevices = 64;

inline cudaStream_t& current_stream_slot(int device) {
  thread_local std::array<cudaStream_t, kMaxDevices> streams{};
  VOX_CHECK(device >= 0 && device < kMaxDevices, "current stream", "device index ", device, " is outside [0, ", kMaxDevices, ")");
  return streams[static_cast<size_t>(device)];
}

inline cudaStream_t launch_stream(int device) { return current_stream_slot(device); }

// While one of the calling thread's streams is being captured into a CUDA graph, calls that may
// synchronise (cudaMalloc, cudaHostAlloc) are refused. Those that enqueue nothing are safe, and
// run inside one of these scopes, which relaxes the thread's capture mode.
class RelaxedCaptureMode {
 public:
  explicit RelaxedCaptureMode(bool active) : active_(active) {
    if (active_ && cudaThreadExchangeStreamCaptureMode(&mode_) != cudaSuccess) active_ = false;
  }
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;
  ~RelaxedCaptureMode() {
    if (active_) (void)cudaThreadExchangeStreamCaptureMode(&mode_);
  }

 private:
  bool active_;
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

}  // namespace vox::cuda
