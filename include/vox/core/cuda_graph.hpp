#pragma once
// CUDA graphs: a training step's hundreds of kernel launches, captured once and replayed with
// one launch, for fixed shapes. The rules are PyTorch's (torch.cuda.CUDAGraph):
//   - warm up first: run the step eagerly a few times, so that cuDNN plans are tuned, the
//     optimizer's state exists and the allocator's cache is warm;
//   - the captured step's tensors keep their addresses: copy each new batch into the same
//     input tensors (copy_from) before replay(), and read the outputs (the loss, the gradients)
//     from the tensors the capture returned, which every replay overwrites;
//   - nothing in the step may wait for the device or read a value on the host (item(), a copy to
//     the host); vox refuses these with an error, and checks labels on eager runs only (batch
//     norm's running statistics and batch count stay on the device, so they are captured);
//   - optimizers must be constructed with `capturable = true`, so that a replay advances their
//     step counts and reads their learning rate from device memory (set_learning_rate between
//     replays works);
//   - random draws (dropout) take new counters on every replay, from the generator they
//     were captured from, which must outlive the graph;
//   - zero the gradients inside the step (zero_grad()), or every replay accumulates into them.
//
//   vox::Tensor x = ..., y = ...;                  // static inputs on cuda:0
//   auto step = [&] { opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step(); };
//   for (int i = 0; i < 3; ++i) step();           // warm-up
//   vox::CudaGraph graph;
//   graph.capture(step);
//   for (auto& batch : loader) { x.copy_from(batch.image); y.copy_from(batch.label); graph.replay(); }
//
// Memory: the capture allocates from a pool private to the graph, which each replay reuses; the
// pool goes back when the graph is reset or destroyed.
#include <optional>
#include <utility>

#include "vox/core/backend.hpp"
#include "vox/core/cuda_stream.hpp"
#include "vox/core/rng.hpp"

namespace vox {

class CudaGraph {
 public:
  explicit CudaGraph(int device = 0) : device_(device) {}
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  ~CudaGraph() { reset(); }

  // Runs `step` once, capturing (not running) the device work it queues on this graph's device.
  // The capture uses the current stream, or an internal one where that is the legacy default
  // stream, which cannot be captured. If `step` throws, the capture is discarded and the error
  // passed on.
  template <class Step>
  void capture(Step&& step) {
    VOX_CHECK(!handle_, "CudaGraph::capture", "this graph already holds a capture; reset() it first");
    DeviceBackend& backend = cuda_backend("CudaGraph::capture");
    std::optional<CudaStreamGuard> on_own_stream;
    if (!backend.current_stream(device_)) {
      stream_.emplace(device_);
      on_own_stream.emplace(*stream_);
    }
    backend.begin_capture(device_);
    detail::CapturedDraws draws;
    detail::captured_draws(device_) = &draws;
    try {
      step();
    } catch (...) {
      detail::captured_draws(device_) = nullptr;
      try {
        backend.destroy_graph(backend.end_capture(device_), device_);
      } catch (const Error&) {  // the capture was already broken: the first error is the one to report
      }
      throw;
    }
    detail::captured_draws(device_) = nullptr;
    handle_ = backend.end_capture(device_);
    draws_ = std::move(draws);
  }

  // Runs the captured work again on the current stream, after moving the random draws on.
  void replay() {
    VOX_CHECK(handle_, "CudaGraph::replay", "nothing has been captured");
    draws_.refresh(device_);
    cuda_backend("CudaGraph::replay").replay_graph(handle_, device_);
  }

  // Waits for the device, then frees the graph and its memory pool.
  void reset() {
    if (handle_) cuda_backend("CudaGraph").destroy_graph(handle_, device_);
    handle_ = nullptr;
    draws_ = detail::CapturedDraws();
    stream_.reset();
  }

  bool captured() const { return handle_ != nullptr; }
  int device() const { return device_; }

 private:
  int device_;
  void* handle_ = nullptr;
  detail::CapturedDraws draws_;
  std::optional<CudaStream> stream_;  // the capture's own stream, where the caller had none
};

// Whether the calling thread's current stream of `device` is being captured.
inline bool cuda_capturing(int device = 0) {
  const DeviceBackend* backend = detail::cuda_backend_slot();
  return backend && backend->capturing(device);
}

}  // namespace vox
