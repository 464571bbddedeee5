#pragma once
// Who launched this process, and as which rank: OpenMPI's mpirun (OMPI_COMM_WORLD_*), MPICH and
// Intel MPI's Hydra (PMI_*), or Slurm's srun (SLURM_*). Read before MPI starts, so that a program
// can decide whether to start it at all; MPI's own answer is authoritative once it runs.
#include <cstdlib>
#include <optional>
#include <string>

#include "vox/core/error.hpp"

namespace vox::dist {

struct LaunchEnvironment {
  std::string launcher = "none";  // "mpirun", "pmi", "slurm" or "none"
  int rank = 0, world_size = 1, local_rank = 0;
  bool several_ranks() const { return world_size > 1; }
};

namespace detail {
inline std::optional<int> env_int(const char* name) {
  const char* text = std::getenv(name);
  if (!text || !*text) return std::nullopt;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  VOX_CHECK(end && *end == '\0' && value >= 0 && value < (1L << 24), "dist", "the environment variable ", name, "=\"", text,
            "\" is not a rank or a count");
  return static_cast<int>(value);
}
}  // namespace detail

inline LaunchEnvironment launch_environment() {
  using detail::env_int;
  struct Names {
    const char *launcher, *rank, *size, *local_rank;
  };
  for (const Names& n : {Names{"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
                         Names{"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"},
                         Names{"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"}}) {
    const auto rank = env_int(n.rank), size = env_int(n.size);
    if (!rank || !size) continue;
    VOX_CHECK(*size >= 1 && *rank < *size, "dist", n.rank, "=", *rank, " is not below ", n.size, "=", *size);
    return {n.launcher, *rank, *size, env_int(n.local_rank).value_or(0)};
  }
  return {};
}

}  // namespace vox::dist
