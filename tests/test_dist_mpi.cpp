// Data parallelism across processes, run by CTest as `mpirun -np 2 test_dist_mpi` (and again
// over TCP: --mca btl self,tcp). Each rank takes its half of a batch; the references are computed
// on every rank alone, without communication.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <vox/dist.hpp>

#include "dist_test_models.hpp"
#include "harness.hpp"

using namespace vox;
using vox::testing::values;

namespace {

dist::ProcessGroup* world = nullptr;

std::map<std::string, Tensor> gradients(const nn::Module& m) {
  std::map<std::string, Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.name] = p.tensor->grad().clone();
  return out;
}

// Items of a global batch of `n` that rank r takes: r, r + W, ...
std::vector<int64_t> share(int64_t n, int rank, int world_size) {
  std::vector<int64_t> out;
  for (int64_t i = rank; i < n; i += world_size) out.push_back(i);
  return out;
}

}  // namespace

TEST_CASE("collectives: allreduce, broadcast, allgather, barrier") {
  REQUIRE(world->size() == 2);
  const int r = world->rank();
  Tensor t = from_vector(std::vector<double>{1.0 + r, 10.0 * r}, {2});
  world->allreduce(t).wait();
  CHECK(values(t) == std::vector<double>{3, 10});
  Tensor m = from_vector(std::vector<int64_t>{r, -r}, {2});
  world->allreduce(m, dist::ReduceOp::max).wait();
  CHECK(values(m) == std::vector<double>{1, 0});
  Tensor b = from_vector(std::vector<float>{float(r + 5)}, {1});
  world->broadcast(b, 1).wait();
  CHECK(values(b) == std::vector<double>{6});
  const Tensor g = world->allgather(from_vector(std::vector<int32_t>{r * 7, r}, {2}));
  CHECK(g.shape() == Shape{2, 2});
  CHECK(values(g) == std::vector<double>{0, 0, 7, 1});
  world->barrier();
  const auto history = world->history();
  REQUIRE(!history.empty());
  CHECK(history.back().kind == dist::CollectiveKind::barrier);
  CHECK(history.back().sequence == world->collectives_called());
  CHECK_THROWS_WITH_AS(world->allreduce(zeros({2}, DType::bf16)).wait(), doctest::Contains("cannot reduce bf16"), Error);
}

TEST_CASE("DataParallel: parameters and buffers start from rank 0's") {
  test::TwoConvNet model(100 + uint64_t(world->rank()));  // different on each rank
  test::TwoConvNet rank0(100);
  dist::DataParallel ddp(model, *world);
  for (const auto& [name, t] : rank0.state_dict()) CHECK_MESSAGE(values(model.state_dict().at(name)) == values(t), name);
}

TEST_CASE("DataParallel in f64: two ranks with half the batch each equal one process, bit for bit, through Adam steps") {
  const int r = world->rank();
  test::TwoConvNet model(9), reference(9);
  model.to(DType::f64), reference.to(DType::f64);
  dist::DataParallel ddp(model, *world, {.bucket_cap_mb = 0.0001, .first_bucket_mb = 0.00002});  // 3 buckets
  CHECK(ddp.buckets().size() >= 3);
  optim::Adam opt(model.parameters(), {.lr = 0.01}), ref_opt(reference.parameters(), {.lr = 0.01});
  for (int step = 0; step < 4; ++step) {
    const int64_t n = 4;
    // the reference: each half's gradient divided by 2, then summed (MPI's sum of two is exact
    // and commutative, so the order of the ranks does not matter)
    std::vector<std::map<std::string, Tensor>> halves;
    for (int rank = 0; rank < 2; ++rank) {
      reference.zero_grad();
      test::batch_loss(reference.forward(test::batch_inputs(n, DType::f64, share(n, rank, 2)))).backward();
      halves.push_back(gradients(reference));
    }
    for (const auto& p : reference.named_parameters())
      p.tensor->set_grad(add(div(halves[0].at(p.name), scalar(2, DType::f64)), div(halves[1].at(p.name), scalar(2, DType::f64))));
    ref_opt.step();
    opt.zero_grad();
    ddp.before_forward();
    test::batch_loss(model.forward(test::batch_inputs(n, DType::f64, share(n, r, 2)))).backward();
    const auto want = gradients(reference);
    for (const auto& [name, g] : gradients(model)) CHECK_MESSAGE(values(g) == values(want.at(name)), "step ", step, ": ", name);
    opt.step();
  }
  for (const auto& [name, t] : reference.state_dict()) CHECK_MESSAGE(values(model.state_dict().at(name)) == values(t), name);
  CHECK(ddp.last_reduction().buckets == int64_t(ddp.buckets().size()));
  CHECK(ddp.last_reduction().communication_seconds > 0);
}

TEST_CASE("DataParallel in f32: two ranks with half the batch each equal one process with the whole batch, to rounding") {
  const int r = world->rank();
  test::TwoConvNet model(21, false, 8), reference(21, false, 8);
  dist::DataParallel ddp(model, *world);
  optim::Adam opt(model.parameters(), {.lr = 0.01}), ref_opt(reference.parameters(), {.lr = 0.01});
  for (int step = 0; step < 3; ++step) {
    reference.zero_grad(), opt.zero_grad();
    test::batch_loss(reference.forward(test::batch_inputs(4, DType::f32, {0, 1, 2, 3}))).backward();
    ddp.before_forward();
    test::batch_loss(model.forward(test::batch_inputs(4, DType::f32, share(4, r, 2)))).backward();
    const auto want = gradients(reference);
    for (const auto& [name, g] : gradients(model)) VOX_CHECK_CLOSE(values(g), values(want.at(name)), 1e-6, 1e-5, name);
    ref_opt.step(), opt.step();
  }
  for (const auto& [name, t] : reference.state_dict()) VOX_CHECK_CLOSE(values(model.state_dict().at(name)), values(t), 1e-5, 1e-4, name);
}

TEST_CASE("DataParallel: an unused parameter is named on every rank, and the ranks stay in step") {
  test::TwoConvNet model(4, true);
  dist::DataParallel ddp(model, *world);
  CHECK_THROWS_WITH_AS(test::batch_loss(model.forward(test::batch_inputs(2, DType::f32, {world->rank()}))).backward(),
                       doctest::Contains("received no gradient in this backward pass: unused.bias, unused.weight"), Error);
  world->barrier();  // both ranks got here: nothing hangs
}

TEST_CASE("DataParallel: ranks with different models are told so") {
  test::TwoConvNet model(4, world->rank() == 1);
  CHECK_THROWS_WITH_AS(dist::DataParallel(model, *world), doctest::Contains("differs from another rank's"), Error);
}

TEST_CASE("batch Dice over the global batch: two ranks equal one process with the whole batch") {
  const int r = world->rank();
  test::TwoConvNet model(31), reference(31);
  model.to(DType::f64), reference.to(DType::f64);
  dist::DataParallel ddp(model, *world);
  Generator g(5);
  const Tensor labels = (rand({4, 6, 5, 4}, DType::f64, &g) * 3.0).to(DType::i64);
  auto loss = [](const Tensor& logits, const Tensor& target, dist::ProcessGroup* group) {
    return losses::dice_ce_loss(logits, target,
                                {.dice = {.include_background = false, .activation = losses::Activation::softmax, .batch = true, .group = group}});
  };
  const Tensor whole = loss(reference.forward(test::batch_inputs(4, DType::f64, {0, 1, 2, 3})), labels, nullptr);
  whole.backward();
  std::vector<Tensor> mine;
  for (int64_t i : share(4, r, 2)) mine.push_back(labels.slice(0, i, i + 1));
  ddp.before_forward();
  const Tensor part = loss(model.forward(test::batch_inputs(4, DType::f64, share(4, r, 2))), concat(mine, 0), world);
  part.backward();
  // the Dice term is the global batch's on every rank; the mean cross-entropy of a half differs
  const double dice_whole = losses::dice_loss(reference.forward(test::batch_inputs(4, DType::f64, {0, 1, 2, 3})), labels,
                                              {.include_background = false, .activation = losses::Activation::softmax, .batch = true})
                                .item<double>();
  const double dice_part = losses::dice_loss(model.forward(test::batch_inputs(4, DType::f64, share(4, r, 2))), concat(mine, 0),
                                             {.include_background = false, .activation = losses::Activation::softmax, .batch = true, .group = world})
                               .item<double>();
  CHECK(dice_part == doctest::Approx(dice_whole).epsilon(1e-12));
  const auto want = gradients(reference);
  for (const auto& [name, grad] : gradients(model)) VOX_CHECK_CLOSE(values(grad), values(want.at(name)), 1e-12, 1e-9, name);
}

TEST_CASE("SyncBatchNorm: two ranks with half the batch each equal batch norm over the whole batch") {
  const int r = world->rank();
  Generator g(17);
  const Tensor x = randn({4, 3, 2, 3, 5}, DType::f64, &g), weights = randn(x.shape(), DType::f64, &g);
  nn::BatchNorm<3> whole(5), synced(5);
  whole.to(DType::f64), synced.to(DType::f64);
  CHECK(dist::convert_sync_batch_norm(synced, *world) == 1);
  Tensor all = x.clone();
  all.set_requires_grad(true);
  const Tensor y_all = whole.forward(all);
  sum(mul(y_all, weights)).backward();
  std::vector<Tensor> xs, ws;
  for (int64_t i : share(4, r, 2)) xs.push_back(x.slice(0, i, i + 1)), ws.push_back(weights.slice(0, i, i + 1));
  Tensor local = concat(xs, 0).contiguous();
  local.set_requires_grad(true);
  const Tensor y = synced.forward(local);
  sum(mul(y, concat(ws, 0))).backward();
  std::vector<Tensor> want_y, want_grad;
  for (int64_t i : share(4, r, 2)) want_y.push_back(y_all.detach().slice(0, i, i + 1)), want_grad.push_back(all.grad().slice(0, i, i + 1));
  VOX_CHECK_CLOSE(values(y), values(concat(want_y, 0)), 1e-12, 1e-10, "output");
  VOX_CHECK_CLOSE(values(local.grad()), values(concat(want_grad, 0)), 1e-12, 1e-9, "input gradient");
  Tensor weight_grad = synced.weight().grad().clone();  // each rank's share; their sum is the whole batch's
  world->allreduce(weight_grad).wait();
  VOX_CHECK_CLOSE(values(weight_grad), values(whole.weight().grad()), 1e-12, 1e-9, "weight gradient");
  VOX_CHECK_CLOSE(values(synced.running_mean()), values(whole.running_mean()), 1e-12, 1e-10, "running mean");
  VOX_CHECK_CLOSE(values(synced.running_var()), values(whole.running_var()), 1e-12, 1e-10, "running variance");
}

TEST_CASE("the loss scaler agrees across ranks: one rank's overflow skips the step on every rank") {
  test::TwoConvNet model(41);
  dist::DataParallel ddp(model, *world);
  optim::Adam adam(model.parameters(), {.lr = 0.01});
  amp::GradScaler scaler({.init_scale = 1024.0});
  const auto before = model.state_dict();
  ddp.before_forward();
  Tensor loss = test::batch_loss(model.forward(test::batch_inputs(2, DType::f32, {world->rank()})));
  if (world->rank() == 1) loss = mul(loss, scalar(std::numeric_limits<double>::infinity()));  // rank 1 overflows
  scaler.scale(loss).backward();
  CHECK_FALSE(scaler.step(adam));  // skipped on rank 0 too: the averaged gradients are not finite there either
  scaler.update();
  CHECK(scaler.get_scale() == 512.0);
  for (const auto& [name, t] : before) CHECK_MESSAGE(values(model.state_dict().at(name)) == values(t), name);
}

int main(int argc, char** argv) {
  int status = 0;
  {
    auto group = dist::init_process_group(dist::Backend::mpi, {.deadline = std::chrono::seconds(120)});
    world = group.get();
    doctest::Context context(argc, argv);
    status = context.run();
    Tensor worst = from_vector(std::vector<int32_t>{status}, {1});  // any rank's failure fails every rank
    group->allreduce(worst, dist::ReduceOp::max, "test status").wait();
    status = worst.to_vector<int32_t>()[0];
  }
  return status;
}
