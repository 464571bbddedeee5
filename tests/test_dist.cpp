// Data parallelism in one process: the backward observer, bucket assignment, DataParallel's
// reduction order and overlap (instrumented through a recording process group), unused
// parameters, no_sync, and the distributed sampler. The multi-rank tests are in
// test_dist_mpi.cpp (mpirun -np 2).
#include <doctest/doctest.h>

#include <vox/dist.hpp>
#include <vox/data/shard.hpp>
#include <vox/data/synthetic.hpp>

#include "dist_test_models.hpp"
#include "harness.hpp"

using namespace vox;
using vox::testing::values;

namespace {

// A world of one that records, for each collective, its label and what `probe` said when the
// collective was queued.
class RecordingGroup final : public dist::ProcessGroup {
 public:
  explicit RecordingGroup(std::function<int()> probe = [] { return 0; }) : ProcessGroup(0, 1, 0, {}), probe_(std::move(probe)) {}
  std::string backend() const override { return "recording"; }
  std::vector<std::pair<std::string, int>> calls;

 protected:
  void enqueue(dist::Collective c, std::shared_ptr<dist::detail::WorkState> state) override {
    calls.push_back({c.label, probe_()});
    state->record.started = std::chrono::steady_clock::now();
    finish(*state);
  }

 private:
  std::function<int()> probe_;
};

// Parameters of the given sizes (f32 elements), registered in order.
struct Sized : nn::Module {
  explicit Sized(const std::vector<int64_t>& sizes) {
    for (size_t i = 0; i < sizes.size(); ++i) register_parameter("p" + std::to_string(i), zeros({sizes[i]}));
  }
};

std::map<std::string, Tensor> gradients(const nn::Module& m) {
  std::map<std::string, Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.name] = p.tensor->grad().clone();
  return out;
}

}  // namespace

TEST_CASE("backward observer: a leaf used twice is ready once, after both contributions") {
  struct Watch : autograd::BackwardObserver {
    std::vector<std::pair<TensorImpl*, double>> ready;
    int begins = 0, ends = 0;
    void begin() override { ++begins; }
    void leaf_ready(TensorImpl& leaf) override { ready.push_back({&leaf, Tensor(leaf.grad).to_vector<double>()[0]}); }
    void end(bool completed) override { ends += completed; }
  } watch;
  Tensor w = from_vector(std::vector<float>{3}, {1}), v = from_vector(std::vector<float>{5}, {1});
  w.set_requires_grad(true), v.set_requires_grad(true);
  {
    autograd::ObserveBackward observe(watch);
    sum(add(mul(w, w), mul(w, v))).backward();  // d/dw = 2w + v = 11, d/dv = w = 3
  }
  CHECK(watch.begins == 1);
  CHECK(watch.ends == 1);
  REQUIRE(watch.ready.size() == 2);
  for (const auto& [leaf, value] : watch.ready) CHECK(value == (leaf == w.impl_ptr().get() ? 11 : 3));
  sum(mul(w, w)).backward();  // no observer now
  CHECK(watch.ready.size() == 2);
}

TEST_CASE("buckets: reverse registration order, the first up to 1 MiB, then 25 MiB, closed once full") {
  const int64_t mib = 1 << 18;  // f32 elements in 1 MiB
  // p0 4 MiB, p1 16 MiB, p2..p21 1 KiB each, p22 10 MiB, p23 20 MiB, p24..p43 1 KiB each, p44 0.5 MiB
  std::vector<int64_t> sizes{4 * mib, 16 * mib};
  for (int i = 0; i < 20; ++i) sizes.push_back(256);
  sizes.push_back(10 * mib);
  sizes.push_back(20 * mib);
  for (int i = 0; i < 20; ++i) sizes.push_back(256);
  sizes.push_back(mib / 2);
  Sized model(sizes);
  std::vector<size_t> order;
  for (size_t i = sizes.size(); i-- > 0;) order.push_back(i);
  const auto buckets = dist::assign_buckets(model.named_parameters(), order, 1u << 20, 25u << 20);
  REQUIRE(buckets.size() == 3);
  // bucket 0: p44 and p43..p24 stay under 1 MiB; p23 takes it past, and closes it
  CHECK(buckets[0].names.front() == "p44");
  CHECK(buckets[0].names[1] == "p43");
  CHECK(buckets[0].names.back() == "p23");
  CHECK(buckets[0].parameters.size() == 22);
  // bucket 1: p22 and p21..p2 stay under 25 MiB; p1 takes it past
  CHECK(buckets[1].names.front() == "p22");
  CHECK(buckets[1].names.back() == "p1");
  CHECK(buckets[1].parameters.size() == 22);
  // bucket 2: what is left, under its cap
  CHECK(buckets[2].names == std::vector<std::string>{"p0"});
  int64_t total = 0;
  for (const auto& b : buckets) {
    total += b.numel;
    for (size_t s = 1; s < b.offsets.size(); ++s) CHECK(b.offsets[s] > b.offsets[s - 1]);
  }
  int64_t expected = 0;
  for (int64_t s : sizes) expected += s;
  CHECK(total == expected);
}

TEST_CASE("DataParallel: buckets reduced in order while backward still runs, gradients unchanged in a world of one") {
  test::TwoConvNet reference(7), model(7);
  const Tensor x = test::batch_inputs(2, DType::f32, {0, 1});
  test::batch_loss(reference.forward(x)).backward();
  // Each parameter its own bucket: probe how many parameters already hold a gradient when each
  // bucket is queued. conv2's come first (reverse order), before conv1's gradients exist.
  RecordingGroup group([&] {
    int n = 0;
    for (const auto& p : model.named_parameters()) n += p.tensor->grad().defined();
    return n;
  });
  dist::DataParallel ddp(model, group, {.bucket_cap_mb = 1e-9, .first_bucket_mb = 1e-9});
  REQUIRE(ddp.buckets().size() == 4);
  CHECK(ddp.buckets()[0].names == std::vector<std::string>{"conv2.bias"});
  CHECK(ddp.buckets()[3].names == std::vector<std::string>{"conv1.weight"});
  group.calls.clear();  // (the construction's fingerprint check)
  ddp.before_forward();
  test::batch_loss(model.forward(x)).backward();
  REQUIRE(group.calls.size() == 4);
  for (size_t b = 0; b < 4; ++b) CHECK(group.calls[b].first.find("gradient bucket " + std::to_string(b) + " of 4") == 0);
  // conv2's weight and bias get their gradients from one node, and both buckets are queued
  // before conv1's backward has run: the reduction overlaps the rest of the pass.
  CHECK(group.calls[0].second == 2);
  CHECK(group.calls[1].second == 2);
  CHECK(group.calls[3].second == 4);
  const auto want = gradients(reference), got = gradients(model);
  for (const auto& [name, g] : want) CHECK_MESSAGE(values(got.at(name)) == values(g), name);
  CHECK(ddp.last_reduction().buckets == 4);
}

TEST_CASE("DataParallel: a parameter without gradient is named, or reduced as zero with find_unused_parameters") {
  test::TwoConvNet model(3, true);
  RecordingGroup group;
  const Tensor x = test::batch_inputs(2, DType::f32, {0, 1});
  {
    dist::DataParallel ddp(model, group);
    CHECK_THROWS_WITH_AS(test::batch_loss(model.forward(x)).backward(),
                         doctest::Contains("2 parameter(s) received no gradient in this backward pass: unused.bias, unused.weight"), Error);
  }
  model.zero_grad();
  dist::DataParallel ddp(model, group, {.find_unused_parameters = true});
  test::batch_loss(model.forward(x)).backward();
  CHECK(model.unused.weight().grad().defined());
  CHECK(sum(abs(model.unused.weight().grad()), {}, false).item<double>() == 0);
  CHECK(model.conv1.named_parameters()[0].tensor->grad().defined());
}

TEST_CASE("DataParallel: no_sync accumulates locally; the next pass reduces the sums once") {
  test::TwoConvNet reference(5), model(5);
  const Tensor a = test::batch_inputs(4, DType::f64, {0, 1}).to(DType::f32), b = test::batch_inputs(4, DType::f64, {2, 3}).to(DType::f32);
  test::batch_loss(reference.forward(a)).backward();
  test::batch_loss(reference.forward(b)).backward();
  RecordingGroup group;
  dist::DataParallel ddp(model, group);
  const size_t after_construction = group.calls.size();
  {
    auto local = ddp.no_sync();
    test::batch_loss(model.forward(a)).backward();
  }
  CHECK(group.calls.size() == after_construction);
  test::batch_loss(model.forward(b)).backward();
  CHECK(group.calls.size() == after_construction + ddp.buckets().size());
  const auto want = gradients(reference), got = gradients(model);
  for (const auto& [name, g] : want) VOX_CHECK_CLOSE(values(got.at(name)), values(g), 1e-6, 1e-5, name);
}

TEST_CASE("the distributed sampler: disjoint shares that together are the whole batch, a pure function of (seed, epoch, rank)") {
  data::Random rng(8);
  std::vector<data::Sample> cases;
  for (int n = 0; n < 3; ++n) {
    data::Sample c = data::synthetic_spheres({.size = {14, 12, 10}, .spheres_per_class = 1}, rng);
    c.image.voxels = c.image.voxels.reshape({10, 12, 14, 1});
    cases.push_back(c);
  }
  data::PatchLoader loader(cases, {.patch = {6, 6, 6}, .batch_size = 6, .seed = 11, .threads = 2});
  const data::Batch whole = loader.batch(3, 2);
  for (int world : {1, 2, 3, 6}) {
    std::vector<int> seen(6, 0);
    for (int rank = 0; rank < world; ++rank) {
      data::ShardedBatches shard(loader, rank, world);
      CHECK(shard.batch_size() == 6 / world);
      const data::Batch mine = shard.batch(3, 2);
      const auto items = shard.share();
      for (size_t j = 0; j < items.size(); ++j) {
        ++seen[static_cast<size_t>(items[j])];
        CHECK(values(mine.image.slice(0, int64_t(j), int64_t(j) + 1)) == values(whole.image.slice(0, items[j], items[j] + 1)));
        CHECK(values(mine.label.slice(0, int64_t(j), int64_t(j) + 1)) == values(whole.label.slice(0, items[j], items[j] + 1)));
      }
      CHECK(values(shard.batch(3, 2).image) == values(mine.image));  // again: the same
    }
    for (int count : seen) CHECK(count == 1);
  }
  CHECK_THROWS_WITH_AS(data::ShardedBatches(loader, 0, 4), doctest::Contains("a batch of 6 does not divide among 4 ranks"), Error);
}

TEST_CASE("SyncBatchNorm in a world of one: batch norm's output, gradients and running statistics; finite differences in f64") {
  dist::SingleProcessGroup group;
  Generator g(3);
  const Tensor x0 = randn({3, 4, 3, 2, 5}, DType::f64, &g);
  nn::BatchNorm<3> plain(5), synced(5);
  plain.to(DType::f64), synced.to(DType::f64);
  CHECK(dist::convert_sync_batch_norm(synced, group) == 1);
  Tensor a = x0.clone(), b = x0.clone();
  a.set_requires_grad(true), b.set_requires_grad(true);
  const Tensor r = randn(x0.shape(), DType::f64, &g);
  const Tensor ya = plain.forward(a), yb = synced.forward(b);
  VOX_CHECK_CLOSE(values(yb), values(ya), 1e-12, 1e-12, "output");
  sum(mul(ya, r)).backward(), sum(mul(yb, r)).backward();
  VOX_CHECK_CLOSE(values(b.grad()), values(a.grad()), 1e-12, 1e-10, "input gradient");
  VOX_CHECK_CLOSE(values(synced.weight().grad()), values(plain.weight().grad()), 1e-12, 1e-10, "weight gradient");
  VOX_CHECK_CLOSE(values(synced.running_mean()), values(plain.running_mean()), 1e-12, 1e-12, "running mean");
  VOX_CHECK_CLOSE(values(synced.running_var()), values(plain.running_var()), 1e-12, 1e-12, "running variance");
  CHECK(values(synced.state_dict().at("num_batches_tracked")) == std::vector<double>{1});
  synced.eval(), plain.eval();
  VOX_CHECK_CLOSE(values(synced.forward(x0)), values(plain.forward(x0)), 1e-12, 1e-12, "evaluation");
  Tensor rm = zeros({5}, DType::f64), rv = ones({5}, DType::f64);
  const Tensor w = randn({5}, DType::f64, &g), bias = randn({5}, DType::f64, &g);
  std::vector<Tensor> inputs{randn({2, 3, 2, 5}, DType::f64, &g).contiguous(), w.clone(), bias.clone()};
  for (Tensor& t : inputs) t.set_requires_grad(true);
  const auto check = testing::gradcheck(
      [&](const std::vector<Tensor>& in) { return dist::sync_batch_norm(in[0], rm.clone(), rv.clone(), in[1], in[2], 0.1, 1e-5, group); }, inputs);
  CHECK_MESSAGE(check.ok, check.detail);
}
