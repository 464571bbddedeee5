// `vox bench`: a named model on random data, timed per iteration. A training iteration is the
// forward pass, the loss (MONAI's DiceCELoss with softmax for segmentation, cross-entropy for
// classification), the backward pass and an Adam step; an inference iteration is the forward
// pass without the tape. Prints each iteration, the median, and last `ms_per_iter=<median>`,
// which benchmarks/peers scripts read. With --device cuda[:N] the model and data live on that GPU
// (the program must be built with the CUDA backend); each iteration ends with a device
// synchronisation, and the caching allocator's peak is printed as peak_gpu_mib. With --graph the
// iteration is captured into a CUDA graph after the warm-up and each timed iteration is a replay
// (vox/core/cuda_graph.hpp); peak_gpu_mib then also counts the graph's pool, which replays use.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <vox/amp/autocast.hpp>
#include <vox/amp/grad_scaler.hpp>
#include <vox/core/cuda_graph.hpp>
#include <vox/dist/data_parallel.hpp>
#include <vox/dist/init.hpp>
#include <vox/nn/models/registry.hpp>
#include <vox/optim/adam.hpp>
#include <vox/quant.hpp>
#include <vox/train/losses.hpp>

#include "cli_common.hpp"

namespace bench_command {

struct BenchArgs {
  std::string model = "monai-unet", mode = "train";
  std::vector<int64_t> channels;  // empty: the model's default
  int64_t size = 96, batch = 1, iterations = 10, warmup = 2, threads = 0, classes = 2, in_channels = 1;
  std::string device = "cpu";
  bool graph = false;  // replay a CUDA graph of the iteration
  std::optional<DType> precision;  // bf16 or f16: autocast (and, training in f16, loss scaling)
  bool int8 = false;               // inference with every convolution in INT8, calibrated on the input
  std::string dist = "auto";        // under mpirun: each rank trains on --batch, DataParallel averages
};

inline double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

inline int run(const BenchArgs& a) {
  if (a.mode != "train" && a.mode != "infer") throw UsageError{"--mode takes train or infer, got " + a.mode};
  if (a.size < 1 || a.batch < 1 || a.iterations < 1) throw UsageError{"--size, --batch and --iters must be at least 1"};
  const auto group = dist::init_process_group(dist::parse_backend(a.dist));
  if (group->size() > 1 && (a.mode != "train" || a.graph || a.int8))
    throw UsageError{"with several ranks, vox bench times data-parallel training: --mode train, without --graph or int8"};
  if (a.threads > 0) set_num_threads(static_cast<int>(a.threads));
  else if (group->local_size() > 1) set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / group->local_size()));
  if (group->rank() != 0) std::freopen("/dev/null", "w", stdout);  // rank 0 reports
  const Device device = usable_device(a.device);
  if (a.graph && !device.is_cuda()) throw UsageError{"--graph needs --device cuda[:N]"};
  if (a.graph && a.warmup < 1) throw UsageError{"--graph needs --warmup of at least 1: the capture replays a warmed-up step"};
  auto synchronize = [&] {
    if (device.is_cuda()) cuda_backend("bench").synchronize(device.index);
  };
  manual_seed(0);
  nn::models::AnyModel model = nn::models::make_model({.arch = a.model, .in_channels = a.in_channels, .classes = a.classes, .channels = a.channels});
  if (a.size % model.size_multiple != 0)
    throw UsageError{"--size must be a multiple of " + std::to_string(model.size_multiple) + " for " + a.model};
  const bool classify = model.task == nn::models::Task::classify;
  Generator gen(1);
  model.module->to(device);
  const Tensor x = randn({a.batch, a.size, a.size, a.size, a.in_channels}, DType::f32, &gen).to(device);
  const Tensor target = (classify ? randint(0, a.classes, {a.batch}, DType::i64, &gen)
                                  : randint(0, a.classes, {a.batch, a.size, a.size, a.size}, DType::i64, &gen))
                            .to(device);
  if (a.int8 && (a.mode != "infer" || !device.is_cpu()))
    throw UsageError{"--precision int8 times inference on the CPU: use --mode infer and --device cpu"};
  if (a.graph && a.precision == DType::f16 && a.mode == "train")
    throw UsageError{"--graph cannot capture f16's loss scaler (it decides on the host whether to step); use --precision bf16"};
  std::unique_ptr<dist::DataParallel> data_parallel;
  if (group->size() > 1) data_parallel = std::make_unique<dist::DataParallel>(*model.module, *group);
  optim::Adam adam(model.module->parameters(), {.lr = 1e-4, .capturable = a.graph});
  amp::GradScaler scaler({.enabled = a.precision == DType::f16});
  Tensor output;  // kept, so that a graph's output block is not reused inside the capture
  auto step = [&] {
    amp::Autocast autocast(device, a.precision, a.precision.has_value());
    if (a.mode == "infer") {
      NoGradGuard no_grad;
      output = model.forward(x);
      return;
    }
    adam.zero_grad();
    if (data_parallel) data_parallel->before_forward();
    const Tensor logits = model.forward(x);
    // MONAI's DiceCELoss(to_onehot_y=True, softmax=True): Dice over every class, plus cross-entropy
    Tensor loss = classify ? cross_entropy(logits, target, {}) : losses::dice_ce_loss(logits, target, {.dice = {.activation = losses::Activation::softmax}});
    scaler.scale(loss).backward();
    scaler.step(adam);
    scaler.update();
  };
  if (a.mode == "infer") model.module->eval();
  if (a.int8) {  // min-max calibration on the input itself, then every convolution in INT8
    NoGradGuard no_grad;
    quant::Calibration calibration(*model.module);
    model.forward(x);
    const auto inputs = calibration.inputs();
    calibration.detach();
    quant::quantize(*model.module, inputs);
  }
  std::printf("vox bench: %s (%lld parameters), %s in %s, input %lldx%lld^3x%lld, on %s, %d threads\n", a.model.c_str(),
              static_cast<long long>(model.module->parameter_count()), a.mode.c_str(),
              a.int8 ? "int8" : a.precision ? std::string(dtype_name(*a.precision)).c_str() : "f32", static_cast<long long>(a.batch),
              static_cast<long long>(a.size), static_cast<long long>(a.in_channels),
              device.is_cuda() ? cuda_backend("bench").device_name(device.index).c_str() : "cpu", num_threads());
  if (data_parallel)
    std::printf("data parallel: %d ranks (%s), global batch %lld, %zu gradient buckets\n", group->size(), group->backend().c_str(),
                static_cast<long long>(a.batch * group->size()), data_parallel->buckets().size());
  for (int64_t w = 0; w < a.warmup; ++w) step();
  synchronize();
  CudaGraph graph(device.is_cuda() ? device.index : 0);
  if (a.graph) {
    const auto start = std::chrono::steady_clock::now();
    graph.capture(step);
    std::printf("captured the iteration into a CUDA graph in %.1f ms\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  if (device.is_cuda()) cuda_backend("bench").reset_peak_memory(device.index);
  std::vector<double> ms, communication, exposed;
  for (int64_t i = 0; i < a.iterations; ++i) {
    if (data_parallel) group->barrier("iteration start");  // every rank's clock starts together
    const auto start = std::chrono::steady_clock::now();
    if (a.graph) graph.replay();
    else step();
    synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    std::printf("iteration %lld: %.1f ms", static_cast<long long>(i + 1), ms.back());
    if (data_parallel) {
      const dist::ReductionTiming& t = data_parallel->last_reduction();
      communication.push_back(t.communication_seconds * 1e3), exposed.push_back(t.exposed_seconds * 1e3);
      std::printf(" (allreduce %.1f ms, %.1f ms of it after backward)", communication.back(), exposed.back());
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  auto median_of = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };
  if (data_parallel) {
    const double c = median_of(communication), e = median_of(exposed);
    std::printf("communication: median %.1f ms per step in allreduces, %.1f ms of it after backward (%.0f%% hidden behind it)\n", c, e,
                c > 0 ? 100.0 * (1.0 - std::min(1.0, e / c)) : 100.0);
    std::printf("comm_ms=%.3f\nexposed_comm_ms=%.3f\n", c, e);
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  std::printf("min %.1f ms, median %.1f ms, max %.1f ms over %zu iterations\n", ms.front(), median, ms.back(), ms.size());
  std::printf("peak_rss_mib=%.0f\n", peak_rss_mib());
  if (device.is_cuda()) {
    // A replay allocates nothing: the memory it uses is the live tensors plus the graph's pool.
    const DeviceMemoryStats m = cuda_memory_stats(device.index);
    const int64_t peak = std::max(m.peak_allocated_bytes, m.allocated_bytes + m.graph_pool_bytes);
    std::printf("peak_gpu_mib=%.0f\n", static_cast<double>(peak) / (1024.0 * 1024.0));
  }
  std::printf("ms_per_iter=%.3f\n", median);
  return 0;
}

}  // namespace bench_command
