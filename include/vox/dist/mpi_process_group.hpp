#pragma once
// The CPU process group on MPI (OpenMPI from Debian: libopenmpi-dev, openmpi-bin). MPI starts
// the ranks (mpirun -np N, with a hostfile across machines, or Slurm's srun) and carries the
// tensors; vox only orders, polls and times the collectives. Compiled where VOX_HAVE_MPI is
// defined (the CMake target vox::mpi). MPI runs with MPI_THREAD_SERIALIZED: after MPI_Init, only
// the communication thread calls MPI, until MPI_Finalize when the group is destroyed.
#ifdef VOX_HAVE_MPI
// (vox calls MPI's C API: keep mpi.h from pulling in the deprecated C++ bindings and their library)
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <string>

#include "vox/dist/launch_environment.hpp"
#include "vox/dist/process_group.hpp"

namespace vox::dist {

namespace detail {
inline std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, static_cast<size_t>(length));
}
inline void mpi_check(int code, const char* call) {
  VOX_CHECK(code == MPI_SUCCESS, "MPI", call, " failed: ", mpi_error_text(code));
}
inline MPI_Datatype mpi_type(DType t, CollectiveKind kind) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    case DType::u8: return MPI_UINT8_T;
    case DType::i8: return MPI_INT8_T;
    case DType::boolean: return MPI_UINT8_T;
    default:
      // 16-bit floats move as raw bits, but MPI cannot add them
      VOX_CHECK(kind != CollectiveKind::allreduce, "MPI allreduce", "cannot reduce ", dtype_name(t), " tensors; reduce them in f32");
      return MPI_UINT16_T;
  }
}
inline MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::sum ? MPI_SUM : op == ReduceOp::max ? MPI_MAX : MPI_MIN; }
}  // namespace detail

class MpiProcessGroup final : public ThreadedProcessGroup {
 public:
  // Starts MPI (unless the program already did) and the communication thread.
  explicit MpiProcessGroup(ProcessGroupOptions options = {}) : ThreadedProcessGroup(0, 1, 0, options) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      detail::mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
      owns_mpi_ = true;
      VOX_CHECK(provided >= MPI_THREAD_SERIALIZED, "MPI", "this MPI library gives thread level ", provided,
                ", vox needs MPI_THREAD_SERIALIZED (its collectives run on a communication thread)");
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);  // errors become vox::Error, not aborts
    detail::mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    detail::mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
    MPI_Comm local;  // the ranks on this machine, for the local rank (one GPU each)
    detail::mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local), "MPI_Comm_split_type");
    detail::mpi_check(MPI_Comm_rank(local, &local_rank_), "MPI_Comm_rank");
    detail::mpi_check(MPI_Comm_size(local, &local_size_), "MPI_Comm_size");
    MPI_Comm_free(&local);
    launch_thread();
  }
  ~MpiProcessGroup() override {
    stop();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_mpi_ && !finalized) MPI_Finalize();
  }
  MpiProcessGroup(const MpiProcessGroup&) = delete;
  MpiProcessGroup& operator=(const MpiProcessGroup&) = delete;

  std::string backend() const override { return "mpi"; }

 protected:
  // (called on the communication thread, the only one that calls MPI)
  void abort_job(int status) override {
    MPI_Abort(MPI_COMM_WORLD, status);
    std::_Exit(status);
  }

  struct MpiFlight final : InFlight {
    MPI_Request request = MPI_REQUEST_NULL;
    const char* call = "";
    bool test() override {
      int flag = 0;
      detail::mpi_check(MPI_Test(&request, &flag, MPI_STATUS_IGNORE), call);
      return flag != 0;
    }
  };

  std::unique_ptr<InFlight> start(Collective& c) override {
    auto flight = std::make_unique<MpiFlight>();
    const int count = c.tensor.defined() ? static_cast<int>(c.tensor.numel()) : 0;
    VOX_CHECK(!c.tensor.defined() || c.tensor.numel() <= INT32_MAX, "MPI", collective_name(c.kind), " of ", c.tensor.numel(),
              " elements exceeds MPI's int count; split the tensor");
    switch (c.kind) {
      case CollectiveKind::allreduce:
        flight->call = "MPI_Iallreduce";
        detail::mpi_check(MPI_Iallreduce(MPI_IN_PLACE, c.tensor.raw_data(), count, detail::mpi_type(c.tensor.dtype(), c.kind),
                                         detail::mpi_op(c.op), MPI_COMM_WORLD, &flight->request),
                          flight->call);
        break;
      case CollectiveKind::broadcast:
        flight->call = "MPI_Ibcast";
        detail::mpi_check(MPI_Ibcast(c.tensor.raw_data(), count, detail::mpi_type(c.tensor.dtype(), c.kind), c.root, MPI_COMM_WORLD,
                                     &flight->request),
                          flight->call);
        break;
      case CollectiveKind::allgather: {
        flight->call = "MPI_Iallgather";
        const MPI_Datatype t = detail::mpi_type(c.tensor.dtype(), c.kind);
        detail::mpi_check(MPI_Iallgather(c.tensor.raw_data(), count, t, c.output.raw_data(), count, t, MPI_COMM_WORLD, &flight->request),
                          flight->call);
        break;
      }
      case CollectiveKind::barrier:
        flight->call = "MPI_Ibarrier";
        detail::mpi_check(MPI_Ibarrier(MPI_COMM_WORLD, &flight->request), flight->call);
        break;
    }
    return flight;
  }

 private:
  bool owns_mpi_ = false;
};

}  // namespace vox::dist
#endif  // VOX_HAVE_MPI
