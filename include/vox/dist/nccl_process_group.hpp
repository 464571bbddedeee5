#pragma once
// The GPU process group on NCCL (it ships with the CUDA toolkit; compiled where VOX_HAVE_NCCL is
// defined: programs that link vox::cuda with NCCL found). One GPU per rank, the local rank's by
// default; the communicator is bootstrapped over another group (MPI's: rank 0's ncclUniqueId is
// broadcast), which starts the ranks. Collectives run on the group's own CUDA stream, after the
// work the calling thread had queued on its current stream when it called them (an event), so
// that a bucket's allreduce overlaps the rest of the backward pass; Work::wait() returns once it
// has finished on the device. At a missed deadline the communicator is aborted
// (ncclCommAbort) before the job ends.
#if defined(VOX_HAVE_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "vox/core/cuda_stream.hpp"
#include "vox/dist/process_group.hpp"

namespace vox::dist {

namespace detail {
inline void nccl_check(ncclResult_t r, const char* call) {
  VOX_CHECK(r == ncclSuccess, "NCCL", call, " failed: ", ncclGetErrorString(r));
}
inline void cuda_check(cudaError_t e, const char* call) { VOX_CHECK(e == cudaSuccess, "NCCL group", call, " failed: ", cudaGetErrorString(e)); }
inline ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::f16: return ncclFloat16;
    case DType::bf16: return ncclBfloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u8: return ncclUint8;
    case DType::i8: return ncclInt8;
    case DType::boolean: return ncclUint8;
  }
  return ncclFloat32;
}
inline ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::sum ? ncclSum : op == ReduceOp::max ? ncclMax : ncclMin; }
}  // namespace detail

class NcclProcessGroup final : public ThreadedProcessGroup {
 public:
  // `bootstrap`: the CPU group that started the ranks (a SingleProcessGroup for one GPU).
  // device < 0: the local rank's GPU.
  explicit NcclProcessGroup(ProcessGroup& bootstrap, int device = -1, ProcessGroupOptions options = {})
      : ThreadedProcessGroup(bootstrap.rank(), bootstrap.size(), bootstrap.local_rank(), options),
        device_(device >= 0 ? device : bootstrap.local_rank()) {
    local_size_ = bootstrap.local_size();
    int devices = 0;
    detail::cuda_check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    VOX_CHECK(device_ < devices, "NCCL group", "rank ", rank_, " wants GPU ", device_, " but this machine has ", devices,
              "; start at most one rank per GPU");
    detail::cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id{};
    if (rank_ == 0) detail::nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    Tensor bytes = from_vector(std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&id), reinterpret_cast<uint8_t*>(&id) + sizeof(id)),
                               {static_cast<int64_t>(sizeof(id))});
    bootstrap.broadcast(bytes, 0, "ncclUniqueId").wait();
    std::memcpy(&id, bytes.raw_data(), sizeof(id));
    detail::nccl_check(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
    detail::cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    launch_thread();
  }
  // Owning its bootstrap group (init_process_group's way).
  NcclProcessGroup(std::unique_ptr<ProcessGroup> bootstrap, ProcessGroupOptions options)
      : NcclProcessGroup(*bootstrap, -1, options) {
    bootstrap_ = std::move(bootstrap);
  }
  ~NcclProcessGroup() override {
    stop();
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  NcclProcessGroup(const NcclProcessGroup&) = delete;
  NcclProcessGroup& operator=(const NcclProcessGroup&) = delete;

  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::cuda(device_); }

 protected:
  // On the calling thread: mark where its stream is, so the collective waits for that work.
  void enqueue(Collective c, std::shared_ptr<vox::dist::detail::WorkState> state) override {
    cudaEvent_t ready = nullptr;
    detail::cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    detail::cuda_check(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate");
    detail::cuda_check(cudaEventRecord(ready, static_cast<cudaStream_t>(current_cuda_stream(device_))), "cudaEventRecord");
    {
      std::lock_guard<std::mutex> lock(ready_mutex_);
      ready_[c.sequence] = ready;
    }
    ThreadedProcessGroup::enqueue(std::move(c), std::move(state));
  }

  struct NcclFlight final : InFlight {
    cudaEvent_t done = nullptr;
    ncclComm_t comm = nullptr;
    ~NcclFlight() override {
      if (done) cudaEventDestroy(done);
    }
    bool test() override {
      const cudaError_t e = cudaEventQuery(done);
      if (e == cudaSuccess) return true;
      VOX_CHECK(e == cudaErrorNotReady, "NCCL group", "cudaEventQuery failed: ", cudaGetErrorString(e));
      ncclResult_t async = ncclSuccess;
      detail::nccl_check(ncclCommGetAsyncError(comm, &async), "ncclCommGetAsyncError");
      detail::nccl_check(async, "a collective");
      return false;
    }
  };

  std::unique_ptr<InFlight> start(Collective& c) override {
    detail::cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    cudaEvent_t ready = nullptr;
    {
      std::lock_guard<std::mutex> lock(ready_mutex_);
      ready = ready_.at(c.sequence);
      ready_.erase(c.sequence);
    }
    detail::cuda_check(cudaStreamWaitEvent(stream_, ready, 0), "cudaStreamWaitEvent");
    cudaEventDestroy(ready);
    const size_t count = c.tensor.defined() ? static_cast<size_t>(c.tensor.numel()) : 0;
    switch (c.kind) {
      case CollectiveKind::allreduce:
        detail::nccl_check(ncclAllReduce(c.tensor.raw_data(), c.tensor.raw_data(), count, detail::nccl_type(c.tensor.dtype()),
                                         detail::nccl_op(c.op), comm_, stream_),
                           "ncclAllReduce");
        break;
      case CollectiveKind::broadcast:
        detail::nccl_check(ncclBroadcast(c.tensor.raw_data(), c.tensor.raw_data(), count, detail::nccl_type(c.tensor.dtype()), c.root, comm_,
                                         stream_),
                           "ncclBroadcast");
        break;
      case CollectiveKind::allgather:
        detail::nccl_check(ncclAllGather(c.tensor.raw_data(), c.output.raw_data(), count, detail::nccl_type(c.tensor.dtype()), comm_, stream_),
                           "ncclAllGather");
        break;
      case CollectiveKind::barrier: {  // NCCL has none: a one-element allreduce
        if (!barrier_.defined()) barrier_ = zeros({1}, DType::f32, device());
        detail::nccl_check(ncclAllReduce(barrier_.raw_data(), barrier_.raw_data(), 1, ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce");
        break;
      }
    }
    auto flight = std::make_unique<NcclFlight>();
    flight->comm = comm_;
    detail::cuda_check(cudaEventCreateWithFlags(&flight->done, cudaEventDisableTiming), "cudaEventCreate");
    detail::cuda_check(cudaEventRecord(flight->done, stream_), "cudaEventRecord");
    return flight;
  }

  void abort_job(int status) override {
    ncclCommAbort(comm_);  // frees the peers' kernels that wait on this rank
    comm_ = nullptr;
    std::_Exit(status);
  }

 private:
  int device_;
  std::unique_ptr<ProcessGroup> bootstrap_;  // (destroyed after the communicator)
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  Tensor barrier_;
  std::mutex ready_mutex_;
  std::map<uint64_t, cudaEvent_t> ready_;
};

}  // namespace vox::dist
#endif  // VOX_HAVE_NCCL
