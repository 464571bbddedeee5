// The allreduce's latency and bandwidth between this machine's ranks, for docs/distributed.md's
// model: f32 sums of 4 KiB to 64 MiB through vox's MPI process group, median of 20 after 3
// warm-ups. Prints per size the time, the algorithm bandwidth (bytes / time) and the bus
// bandwidth (2 (p - 1) / p of it, NCCL's definition, which does not depend on the rank count for
// a ring).
//   mpirun -np 2 vox_allreduce_sizes [--mca btl self,tcp for the TCP path]
#include <algorithm>
#include <cstdio>
#include <vector>

#include <vox/dist.hpp>

int main() {
  using namespace vox;
  auto group = dist::init_process_group(dist::Backend::mpi);
  const double p = group->size();
  if (group->rank() == 0) std::printf("%d ranks (%s)\n%12s %10s %12s %12s\n", group->size(), group->backend().c_str(), "bytes", "ms", "algbw GB/s", "busbw GB/s");
  for (int64_t bytes = 4 << 10; bytes <= (64 << 20); bytes *= 4) {
    Tensor t = full({bytes / 4}, 1.0);
    std::vector<double> ms;
    for (int i = 0; i < 23; ++i) {
      group->barrier();
      const auto start = std::chrono::steady_clock::now();
      group->allreduce(t).wait();
      if (i >= 3) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(ms.begin(), ms.end());
    const double median = 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]), algbw = double(bytes) / (median * 1e6);
    if (group->rank() == 0) std::printf("%12lld %10.3f %12.2f %12.2f\n", static_cast<long long>(bytes), median, algbw, algbw * 2 * (p - 1) / p);
  }
  return 0;
}
