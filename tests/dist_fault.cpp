// A job that loses a rank: two ranks allreduce in a loop with a short deadline; at the 5th
// collective rank 1 kills itself (--kill) or stops answering (--hang). Rank 0's watchdog must end
// it, naming rank 0, the collective and its sequence number (tests/cli/dist_faults.sh).
//   mpirun -np 2 dist_fault --kill|--hang
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include <vox/dist.hpp>

int main(int argc, char** argv) {
  using namespace vox;
  const bool hang = argc > 1 && std::strcmp(argv[1], "--hang") == 0;
  auto group = dist::init_process_group(dist::Backend::mpi, {.deadline = std::chrono::seconds(3)});
  for (int step = 1; step <= 8; ++step) {
    if (group->rank() == 1 && step == 5) {
      std::printf("rank 1: %s at step %d\n", hang ? "hanging" : "killing itself", step);
      std::fflush(stdout);
      if (hang) std::this_thread::sleep_for(std::chrono::hours(1));
      std::raise(SIGKILL);
    }
    Tensor t = full({1000}, 1.0);
    group->allreduce(t, dist::ReduceOp::sum, "step " + std::to_string(step)).wait();
  }
  std::printf("rank %d: finished, which it should not have\n", group->rank());
  return 0;
}
