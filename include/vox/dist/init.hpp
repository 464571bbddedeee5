#pragma once
// The job's process group, chosen from how the program was built and launched: MPI when the
// program links vox::mpi and a launcher started several ranks (or when asked for), else a world
// of one; NCCL (GPU tensors, one GPU per rank) when asked for, bootstrapped over the former.
#include <memory>
#include <string>

#include "vox/dist/launch_environment.hpp"
#include "vox/dist/mpi_process_group.hpp"
#include "vox/dist/nccl_process_group.hpp"
#include "vox/dist/process_group.hpp"

namespace vox::dist {

enum class Backend { automatic, none, mpi, nccl };

inline Backend parse_backend(const std::string& name) {
  if (name == "auto") return Backend::automatic;
  if (name == "none") return Backend::none;
  if (name == "mpi") return Backend::mpi;
  if (name == "nccl") return Backend::nccl;
  throw Error("--dist takes auto, mpi, nccl or none, got \"" + name + "\"");
}

inline std::unique_ptr<ProcessGroup> init_process_group(Backend backend = Backend::automatic, ProcessGroupOptions options = {}) {
  const LaunchEnvironment env = launch_environment();
  if (backend == Backend::nccl) {
#ifdef VOX_HAVE_NCCL
    return std::make_unique<NcclProcessGroup>(init_process_group(Backend::automatic, options), options);
#else
    throw Error("dist: NCCL was asked for, but this program was built without it (link the CMake target vox::cuda, with NCCL beside the CUDA toolkit)");
#endif
  }
  if (backend == Backend::none) {
    VOX_CHECK(!env.several_ranks(), "dist", "--dist none, but ", env.launcher, " started ", env.world_size,
              " ranks; each would train alone on the whole data");
    return std::make_unique<SingleProcessGroup>(Device::cpu(), options);
  }
  if (backend == Backend::automatic && !env.several_ranks()) return std::make_unique<SingleProcessGroup>(Device::cpu(), options);
#ifdef VOX_HAVE_MPI
  return std::make_unique<MpiProcessGroup>(options);
#else
  throw Error(vox::detail::concat("dist: ", env.several_ranks() ? env.launcher + " started " + std::to_string(env.world_size) + " ranks, but " : "",
                             "this program was built without MPI (link the CMake target vox::mpi, with libopenmpi-dev installed)"));
#endif
}

}  // namespace vox::dist
