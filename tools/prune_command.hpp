// `vox prune`: structured channel pruning of a MONAI U-Net or MLPerf U-Net run (quant/prune.hpp).
// Ranks the channels by the L1 or L2 norm of their filters, per layer or globally, removes them
// from the network (and from every layer that reads them), optionally fine-tunes the smaller
// network with the trainer, and prints the parameter count, the convolutions' operations per
// window, the time of one window's forward pass and the validation Dice before and after. Writes
// a run directory that `vox infer` and `vox quantize` take: its config.json records which
// channels each group kept.
#pragma once

#include <chrono>
#include <filesystem>

#include "quantize_command.hpp"

namespace run_commands {

struct PruneArgs {
  std::string model, output, data;
  bool synthetic = false;
  double amount = 0.3;
  bool global = false;
  std::string norm = "l1";
  int64_t finetune_epochs = 0;  // 0: no fine-tuning
  double finetune_lr = 0;       // 0: a tenth of the run's learning rate
  int64_t threads = 0;
};

namespace prune_detail {

// Operations (2 per multiply-add) of the network's convolutions and linear layers for one input.
inline double network_operations(nn::models::AnyModel& model, const Tensor& x) {
  double ops = 0;
  const std::vector<quant::QuantizableLayer> layers = quant::quantizable_layers(*model.module);
  for (const quant::QuantizableLayer& l : layers)
    l.slot->set_interceptor([&ops, weight = l.weight, kind = l.spec.kind](const Tensor& v, const std::function<Tensor(const Tensor&)>& own) {
      const Tensor y = own(v);
      const Tensor& positions = kind == quant::LayerKind::conv_transpose ? v : y;  // one weight product per input position when transposed
      ops += 2.0 * static_cast<double>(positions.numel() / positions.size(-1)) * static_cast<double>(weight.numel());
      return y;
    });
  {
    NoGradGuard no_grad;
    model.forward(x);
  }
  for (const quant::QuantizableLayer& l : layers) l.slot->set_interceptor({});
  return ops;
}

inline double forward_ms(nn::models::AnyModel& model, const Tensor& x) {
  NoGradGuard no_grad;
  model.forward(x);
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    model.forward(x);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[2];
}

// Trains the pruned run in place: the original run's settings (its train.json: iterations, batch,
// augmentation, seed), E epochs from the pruned weights, a tenth of its learning rate unless told.
inline void finetune(const PruneArgs& a, const RunConfig& pruned, const std::string& data_dir) {
  TrainArgs t;
  const fs::path settings = fs::path(a.model) / "train.json";
  if (fs::exists(settings)) t.apply_json(settings.string());
  t.data = data_dir, t.synthetic = false, t.resume = false;
  t.run = a.output, t.init = a.output;
  t.config = pruned, t.arch_given = t.patch_given = true, t.classes_given = false;
  t.epochs = a.finetune_epochs;
  t.lr = a.finetune_lr > 0 ? a.finetune_lr : t.lr / 10;
  t.device = "cpu", t.cuda_graph = false;
  if (a.threads > 0) t.threads = a.threads;
  std::printf("vox: fine-tuning the pruned network: %lld epochs of %lld iterations, lr %g\n", static_cast<long long>(t.epochs),
              static_cast<long long>(t.iterations), t.lr);
  train_run(t);
}

}  // namespace prune_detail

inline int prune_run(const PruneArgs& a) {
  using namespace prune_detail;
  if (a.model.empty() || a.output.empty()) throw UsageError{"prune needs --model RUN and --output RUN_PRUNED"};
  if (a.synthetic == !a.data.empty()) throw UsageError{"prune needs exactly one of --data DATA_DIR and --synthetic (the validation cases)"};
  if (!(a.amount > 0 && a.amount < 1)) throw UsageError{"--amount must be in (0, 1)"};
  if (a.norm != "l1" && a.norm != "l2") throw UsageError{"--norm takes l1 or l2, got " + a.norm};
  if (fs::weakly_canonical(a.model) == fs::weakly_canonical(a.output)) throw UsageError{"--output must be a new directory, not the run"};
  if (a.threads > 0) set_num_threads(static_cast<int>(a.threads));
  RunConfig config = RunConfig::load(a.model);
  if (config.quantization) throw UsageError{a.model + " is an INT8 run; prune its float run, then quantize the pruned one"};
  if (config.pruning) throw UsageError{a.model + " is already pruned; prune its original run with a larger --amount"};
  if (config.arch != "monai-unet" && config.arch != "unet3d")
    throw UsageError{"vox prune takes monai-unet and unet3d runs; " + a.model + " is " + config.arch};
  if (a.finetune_lr < 0) throw UsageError{"--finetune-lr must be positive"};
  nn::models::AnyModel model = make_run_model(config);
  model.module->load_state_dict(load_run_weights(a.model));
  model.module->eval();

  QuantizeArgs cases_args;  // validation cases only
  cases_args.cases = 0;
  std::string data_dir = a.data;
  if (a.synthetic) {  // vox train --synthetic's dataset, in the pruned run as there
    data_dir = (fs::path(a.output) / "synthetic-data").string();
    std::printf("vox: writing the built-in synthetic dataset to %s\n", data_dir.c_str());
    data::write_synthetic_dataset(data_dir, 12, 4, {.size = {64, 64, 64}, .classes = config.classes}, 2026);
  }
  const quantize_detail::Cases cases = quantize_detail::load_cases(cases_args, config, data_dir);

  Generator gen(0);
  const Tensor window = randn({1, config.patch[2], config.patch[1], config.patch[0], config.in_channels}, DType::f32, &gen);
  const int64_t params_before = model.module->parameter_count();
  const double ops_before = network_operations(model, window), ms_before = forward_ms(model, window);
  const double dice_before = quantize_detail::validation_dice(model, config, cases.validation);
  std::printf("vox: %s: %lld parameters, %.2f GOP and %.1f ms per %lldx%lldx%lld window, validation Dice %.4f on %s\n", a.model.c_str(),
              static_cast<long long>(params_before), ops_before / 1e9, ms_before, static_cast<long long>(config.patch[0]),
              static_cast<long long>(config.patch[1]), static_cast<long long>(config.patch[2]), dice_before, cases.validation_source.c_str());
  std::fflush(stdout);

  const std::vector<quant::ChannelGroup> groups = quant::channel_groups(*model.module);
  const quant::PrunePlan plan = quant::plan_pruning(
      groups, {.amount = a.amount, .norm = a.norm == "l2" ? quant::FilterNorm::l2 : quant::FilterNorm::l1, .global = a.global});
  quant::apply_pruning(groups, plan);
  for (size_t i = 0; i < groups.size(); ++i)
    std::printf("  %-60s %3lld -> %3zu channels\n", groups[i].name.c_str(), static_cast<long long>(groups[i].channels), plan[i].size());
  const int64_t params_after = model.module->parameter_count();
  const double ops_after = network_operations(model, window), ms_after = forward_ms(model, window);
  const double dice_after = quantize_detail::validation_dice(model, config, cases.validation);
  std::printf("vox: pruned (%s, %s, amount %.2f): %lld parameters (%.1f%%), %.2f GOP (%.1f%%) and %.1f ms per window (%.2fx faster), "
              "validation Dice %.4f (before: %.4f)%s\n",
              a.norm.c_str(), a.global ? "global" : "per layer", a.amount, static_cast<long long>(params_after),
              100.0 * double(params_after) / double(params_before), ops_after / 1e9, 100.0 * ops_after / ops_before, ms_after,
              ms_before / ms_after, dice_after, dice_before, a.finetune_epochs > 0 ? "; fine-tuning next" : "; no fine-tuning");

  fs::create_directories(a.output);
  config.pruning = PruningRecord{a.norm, a.amount, a.global, plan};
  io::write_file_atomically((fs::path(a.output) / "config.json").string(), [&](std::ofstream& out) { out << config.to_json(); });
  std::map<std::string, Tensor> state;
  for (const auto& [name, t] : model.module->state_dict()) state["model." + name] = t;
  io::save_safetensors((fs::path(a.output) / "checkpoint_best.safetensors").string(), state);
  std::fflush(stdout);
  if (a.finetune_epochs > 0) {
    finetune(a, config, data_dir);
    model.module->load_state_dict(load_run_weights(a.output));
    model.module->eval();
    const double dice_tuned = quantize_detail::validation_dice(model, config, cases.validation);
    std::printf("vox: fine-tuned %lld epoch%s: validation Dice %.4f (pruned: %.4f, before pruning: %.4f)\n",
                static_cast<long long>(a.finetune_epochs), a.finetune_epochs == 1 ? "" : "s", dice_tuned, dice_after, dice_before);
  }
  std::printf("vox: pruned run in %s (for vox infer and vox quantize)\n", a.output.c_str());
  return 0;
}

}  // namespace run_commands
