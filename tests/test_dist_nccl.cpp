// The NCCL process group on GPUs (label gpu): collectives on device tensors and DataParallel on a
// model on the GPU, against the same model's local gradients. Run alone it is a world of one GPU;
// under `mpirun -np N` (one GPU per rank) the ranks reduce over NCCL, bootstrapped over MPI.
// Without a CUDA device it says why and exits 77, which CTest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <vox/vox.hpp>

#include "dist_test_models.hpp"
#include "harness.hpp"

using namespace vox;
using vox::testing::values;

namespace {
dist::ProcessGroup* world = nullptr;
}

TEST_CASE("NCCL collectives on device tensors") {
  const int r = world->rank(), n = world->size();
  const Device gpu = world->device();
  REQUIRE(gpu.is_cuda());
  Tensor t = from_vector(std::vector<float>{1.0f + float(r), 2.0f}, {2}).to(gpu);
  world->allreduce(t).wait();
  CHECK(values(t.to(Device::cpu())) == std::vector<double>{n * (n + 1) / 2.0, 2.0 * n});
  Tensor b = from_vector(std::vector<int64_t>{r + 7}, {1}).to(gpu);
  world->broadcast(b, 0).wait();
  CHECK(values(b.to(Device::cpu())) == std::vector<double>{7});
  const Tensor g = world->allgather(from_vector(std::vector<double>{double(r)}, {1}).to(gpu));
  CHECK(g.shape() == Shape{n, 1});
  world->barrier();
  CHECK(world->history().back().kind == dist::CollectiveKind::barrier);
}

TEST_CASE("DataParallel on the GPU: each rank's gradients are the average of the ranks' local ones") {
  test::TwoConvNet model(12), reference(12);
  model.to(world->device()), reference.to(world->device());
  dist::DataParallel ddp(model, *world, {.bucket_cap_mb = 0.0001, .first_bucket_mb = 0.00002});
  const Tensor x = test::batch_inputs(2 * world->size(), DType::f32, {2 * world->rank(), 2 * world->rank() + 1}).to(world->device());
  test::batch_loss(reference.forward(x)).backward();
  ddp.before_forward();
  test::batch_loss(model.forward(x)).backward();
  for (const auto& p : reference.named_parameters()) {
    Tensor mean = p.tensor->grad().clone();
    world->allreduce(mean).wait();
    const Tensor want = div(mean, scalar(double(world->size())));
    for (const auto& q : model.named_parameters())
      if (q.name == p.name) VOX_CHECK_CLOSE(values(q.tensor->grad().to(Device::cpu())), values(want.to(Device::cpu())), 1e-6, 1e-5, p.name);
  }
  CHECK(ddp.last_reduction().buckets == int64_t(ddp.buckets().size()));
}

int main(int argc, char** argv) {
  if (!cuda_is_available()) {
    std::printf("test_dist_nccl: skipped, no CUDA device on this machine\n");
    return 77;
  }
  auto group = dist::init_process_group(dist::Backend::nccl, {.deadline = std::chrono::seconds(120)});
  world = group.get();
  doctest::Context context(argc, argv);
  return context.run();
}
