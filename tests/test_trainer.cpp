// The training loop: it writes the run directory (metrics.csv/json, checkpoints, curves), a run
// stopped and resumed ends with exactly the weights of an uninterrupted run, early stopping stops,
// EMA weights are kept, accumulation and clipping run, and optimizer state round-trips.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <vox/data/synthetic.hpp>
#include <vox/train/trainer.hpp>
#include <vox/vox.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::testing;
using doctest::Contains;
namespace fs = std::filesystem;

namespace {
using Net = nn::Sequential<nn::Conv<3>, nn::InstanceNorm<3>, nn::PReLU, nn::Conv<3>>;
Net make_net() {
  manual_seed(3);
  return Net(nn::Conv<3>(1, 4, {3}, {.padding = {1}}), nn::InstanceNorm<3>(4), nn::PReLU(), nn::Conv<3>(4, 2, {1}));
}
std::vector<data::Sample> cases() {
  data::Random rng(4);
  std::vector<data::Sample> out;
  for (int n = 0; n < 2; ++n) {
    data::Sample s = data::synthetic_spheres({.size = {16, 16, 16}, .spheres_per_class = 1}, rng);
    s.image.voxels = s.image.voxels.reshape({16, 16, 16, 1});
    out.push_back(s);
  }
  return out;
}
std::string fresh(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("vox_test_" + name);
  fs::remove_all(p);
  return p.string();
}
train::Trainer::LossFn ce() {
  return [](const Tensor& logits, const Tensor& target) { return cross_entropy(logits, target); };
}
int64_t lines(const std::string& path) {
  std::ifstream in(path);
  int64_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}
}  // namespace

TEST_CASE("a run writes metrics, checkpoints and curves; a resumed run ends where an uninterrupted one does") {
  const data::PatchLoader loader(cases(), {.patch = {8, 8, 8}, .batch_size = 2, .augment = false, .seed = 9, .threads = 1});
  auto run = [&](const std::string& dir, int64_t epochs, bool resume) {
    Net net = make_net();
    optim::Adam adam(net.parameters(), {.lr = 1e-2});
    train::Trainer trainer(net, adam, loader, ce(),
                           {.epochs = epochs, .iterations_per_epoch = 3, .monitor = "score", .run_dir = dir, .progress = false});
    trainer.set_forward([&](const Tensor& x) { return net.forward(x); });
    trainer.set_schedule([](int64_t e) { return train::poly_lr(1e-2, e, 4); });
    int calls = 0;
    trainer.set_validation([&](nn::Module&) { return std::map<std::string, double>{{"score", double(++calls)}}; });
    if (resume) CHECK(trainer.resume() == 2);
    trainer.fit();
    return net.state_dict();
  };
  const std::string straight = fresh("run_straight"), stopped = fresh("run_stopped");
  const auto whole = run(straight, 4, false);
  CHECK(lines(straight + "/metrics.csv") == 5);  // header and four epochs
  CHECK(fs::exists(straight + "/metrics.json"));
  CHECK(fs::exists(straight + "/checkpoint_latest.safetensors"));
  CHECK(fs::exists(straight + "/checkpoint_best.safetensors"));
  CHECK(fs::exists(straight + "/loss.png"));
  CHECK(fs::exists(straight + "/score.png"));
  run(stopped, 2, false);
  const auto resumed = run(stopped, 4, true);
  CHECK(lines(stopped + "/metrics.csv") == 5);
  for (const auto& [name, t] : whole) {
    INFO(name);
    CHECK(values(resumed.at(name)) == values(t));
  }
  // a damaged run directory is refused with an error, not an exception from the C++ library
  std::ofstream(stopped + "/metrics.csv") << "epoch,lr,loss,seconds\nx,0.01,1,1\n";
  {
    Net net = make_net();
    optim::Adam adam(net.parameters(), {.lr = 1e-2});
    train::Trainer trainer(net, adam, loader, ce(), {.epochs = 4, .run_dir = stopped, .progress = false});
    CHECK_THROWS_WITH_AS(trainer.resume(), Contains("\"x\" is not a finite number"), Error);
  }
  // a CUDA graph needs a CUDA device and whole steps
  {
    Net net = make_net();
    optim::Adam adam(net.parameters(), {.lr = 1e-2});
    CHECK_THROWS_WITH_AS(train::Trainer(net, adam, loader, ce(), {.progress = false, .cuda_graph = true}),
                         Contains("cuda_graph needs a CUDA device"), Error);
  }
  // the learning rate followed the schedule
  std::ifstream csv(straight + "/metrics.csv");
  std::string header, first;
  std::getline(csv, header), std::getline(csv, first);
  CHECK(header == "epoch,lr,loss,seconds,score");
  CHECK(first.rfind("0,0.01,", 0) == 0);
}

TEST_CASE("early stopping, EMA, accumulation and clipping") {
  const data::PatchLoader loader(cases(), {.patch = {8, 8, 8}, .batch_size = 1, .augment = false, .seed = 2, .threads = 1});
  Net net = make_net();
  optim::SGD sgd(net.parameters(), {.lr = 0.05, .momentum = 0.9});
  const std::string dir = fresh("run_early");
  train::Trainer trainer(net, sgd, loader, ce(),
                         {.epochs = 20, .iterations_per_epoch = 2, .accumulate = 2, .clip_norm = 1.0, .ema_decay = 0.9,
                          .early_stopping_patience = 2, .run_dir = dir, .progress = false});
  trainer.set_forward([&](const Tensor& x) { return net.forward(x); });
  trainer.set_validation([](nn::Module&) { return std::map<std::string, double>{{"mean_dice", 0.5}}; });
  const auto& history = trainer.fit();
  CHECK(history.size() == 3);  // the first validation sets the best; two more without improvement stop
  const io::Safetensors checkpoint = io::load_safetensors(dir + "/checkpoint_latest.safetensors");
  CHECK(checkpoint.tensors.count("ema.0.weight") == 1);
  CHECK(checkpoint.tensors.count("optimizer.state.0.momentum_buffer") == 1);
  CHECK(checkpoint.metadata.at("epoch") == "2");
}

TEST_CASE("optimizer state round-trips and is checked on load") {
  Net a = make_net(), b = make_net();
  optim::Adam adam_a(a.parameters(), {.lr = 1e-2}), adam_b(b.parameters(), {.lr = 1e-2});
  const Tensor x = rand({1, 6, 6, 6, 1}), y = zeros({1, 6, 6, 6}, DType::i64);
  for (int step = 0; step < 3; ++step) {
    cross_entropy(a.forward(x), y).backward();
    adam_a.step();
    adam_a.zero_grad();
  }
  b.load_state_dict(a.state_dict());
  adam_b.load_state_dict(adam_a.state_dict());
  cross_entropy(a.forward(x), y).backward();
  adam_a.step();
  cross_entropy(b.forward(x), y).backward();
  adam_b.step();
  const auto sa = a.state_dict(), sb = b.state_dict();
  for (const auto& [name, t] : sa) CHECK(values(sb.at(name)) == values(t));
  std::map<std::string, Tensor> broken = adam_a.state_dict();
  broken.erase("state.0.exp_avg");
  CHECK_THROWS_WITH_AS(adam_b.load_state_dict(broken), Contains("lacks state.0.exp_avg"), Error);
}

TEST_CASE("a process killed while writing a checkpoint leaves the previous one loadable") {
  const std::string dir = fresh("kill_during_write");
  fs::create_directories(dir);
  const std::string path = dir + "/checkpoint_latest.safetensors";
  const Tensor big = rand({4, 1024, 1024});  // 16 MiB: long enough to be caught mid-write
  io::save_safetensors(path, {{"weights", big}}, {{"epoch", "0"}});
  for (int delay_ms : {1, 5, 20, 60}) {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {  // keeps rewriting the checkpoint until killed
      for (int epoch = 1;; ++epoch) io::save_safetensors(path, {{"weights", big}}, {{"epoch", std::to_string(epoch)}});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFSIGNALED(status));
    INFO("killed after " << delay_ms << " ms");
    // complete, the old one or a newer one: every byte of the weights, and an epoch that was written
    const io::Safetensors back = io::load_safetensors(path);
    REQUIRE(back.at("weights").shape() == big.shape());
    CHECK(std::memcmp(back.at("weights").raw_data(), big.raw_data(), static_cast<size_t>(big.numel()) * sizeof(float)) == 0);
    const std::string epoch = back.metadata.at("epoch");
    CHECK((!epoch.empty() && epoch.find_first_not_of("0123456789") == std::string::npos));
  }
  // a truncated checkpoint is refused with an error, not loaded
  std::vector<char> bytes = io::read_file(path);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  CHECK_THROWS_AS(io::load_safetensors(path), Error);
}

TEST_CASE("mixed precision: f16 scales the loss, logs the scale and resumes it; bf16 needs no scaler; a resumed f16 run ends as an uninterrupted one") {
  const data::PatchLoader loader(cases(), {.patch = {8, 8, 8}, .batch_size = 2, .augment = false, .seed = 9, .threads = 1});
  auto run = [&](const std::string& dir, int64_t epochs, bool resume, DType amp) {
    Net net = make_net();
    optim::Adam adam(net.parameters(), {.lr = 1e-2});
    // a growth interval of 2 so that the scale moves within the run, and resume has to restore it
    train::Trainer trainer(net, adam, loader, ce(),
                           {.epochs = epochs, .iterations_per_epoch = 3, .monitor = "score", .run_dir = dir, .progress = false,
                            .amp = amp, .scaler = {.init_scale = 256.0, .growth_interval = 2}});
    trainer.set_forward([&](const Tensor& x) {
      const Tensor y = net.forward(x);
      CHECK(y.dtype() == amp);  // the forward ran under autocast
      return y;
    });
    trainer.set_validation([&](nn::Module&) { return std::map<std::string, double>{{"score", 1.0}}; });
    if (resume) CHECK(trainer.resume() == 2);
    trainer.fit();
    for (const Tensor& p : net.parameters()) CHECK(p.dtype() == DType::f32);  // the master weights
    return std::pair{net.state_dict(), trainer.history()};
  };
  const std::string straight = fresh("amp_straight"), stopped = fresh("amp_stopped");
  const auto [whole, history] = run(straight, 4, false, DType::f16);
  // 12 steps without overflow from 256 with growth every 2: 256 * 2^6 at the end
  REQUIRE(history.back().metrics.count("amp_scale") == 1);
  CHECK(history.back().metrics.at("amp_scale") == 256.0 * 64);
  CHECK(history.back().metrics.at("amp_skipped_steps") == 0);
  std::ifstream csv(straight + "/metrics.csv");
  std::string header;
  std::getline(csv, header);
  CHECK(header == "epoch,lr,loss,seconds,amp_scale,amp_skipped_steps,score");
  run(stopped, 2, false, DType::f16);
  const auto [resumed, resumed_history] = run(stopped, 4, true, DType::f16);
  CHECK(resumed_history.back().metrics.at("amp_scale") == 256.0 * 64);  // the scale came back with the checkpoint
  for (const auto& [name, t] : whole) {
    INFO(name);
    CHECK(values(resumed.at(name)) == values(t));
  }
  {  // gradients beyond f16's range: every step skipped, the scale halved each time, the weights untouched
    Net net = make_net();
    const auto before = net.state_dict();
    optim::Adam adam(net.parameters(), {.lr = 1e-2});
    train::Trainer trainer(net, adam, loader,
                           [](const Tensor& logits, const Tensor& target) { return mul(cross_entropy(logits, target), scalar(1e30)); },
                           {.epochs = 1, .iterations_per_epoch = 3, .progress = false, .amp = DType::f16, .scaler = {.init_scale = 256.0}});
    trainer.set_forward([&](const Tensor& x) { return net.forward(x); });
    const auto& h = trainer.fit();
    CHECK(h.back().metrics.at("amp_skipped_steps") == 3);
    CHECK(h.back().metrics.at("amp_scale") == 32.0);
    for (const auto& [name, t] : net.state_dict())
      if (is_floating(t.dtype())) CHECK(values(t) == values(before.at(name)));
  }
  const auto [bf16_state, bf16_history] = run(fresh("amp_bf16"), 2, false, DType::bf16);
  CHECK(bf16_history.back().metrics.count("amp_scale") == 0);
  {
    Net net = make_net();
    optim::Adam adam(net.parameters(), {.lr = 1e-2});
    CHECK_THROWS_WITH_AS(train::Trainer(net, adam, loader, ce(), {.progress = false, .amp = DType::i8}), Contains("amp takes bf16 or f16"),
                         Error);
  }
}
