// `vox quantize`: post-training INT8 quantization of a segmentation run. Calibrates every
// convolution's input on N volumes run through the same sliding windows as inference, measures
// the validation Dice of the float and the INT8 network, the Dice with each layer alone in INT8
// (the sensitivity report), optionally keeps the K most sensitive layers in float, and writes an
// INT8 run directory that `vox infer` takes like any other:
//   RUN_INT8/config.json             the run's config, plus what quantization did
//   RUN_INT8/model_int8.safetensors  s8 weights, their scales, input scales and zero points, the
//                                    float rest (norms, PReLU slopes, biases)
//   RUN_INT8/quantization.json       per layer: input range and parameters, sensitivity; the Dice
//   RUN_INT8/sensitivity.png         the Dice lost by each layer alone in INT8
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <vox/io/plot.hpp>
#include <vox/quant.hpp>

#include "train_command.hpp"

namespace run_commands {

inline constexpr const char* kInt8Weights = "model_int8.safetensors";

// The network a run config names, pruned as vox prune pruned it (weights still to load).
inline nn::models::AnyModel make_run_model(const RunConfig& c) {
  nn::models::AnyModel m = make_model(c);
  if (c.pruning) {
    auto* unet = dynamic_cast<nn::models::MonaiUNet*>(m.module.get());
    VOX_CHECK(unet != nullptr, "config", "a pruned run of ", c.arch, ": only monai-unet runs can be pruned");
    quant::apply_pruning(quant::channel_groups(*unet), c.pruning->kept);
  }
  return m;
}

// An INT8 run's network: its quantized layers installed, the rest of its weights loaded.
inline quant::QuantizedLayers load_int8_run(nn::Module& model, const std::string& run) {
  const std::string path = (fs::path(run) / kInt8Weights).string();
  VOX_CHECK(fs::exists(path), "infer", run, " is an INT8 run (its config.json says so) but has no ", kInt8Weights);
  return quant::load_quantized_state_dict(model, io::load_safetensors(path).tensors);
}

struct QuantizeArgs {
  std::string model, output, calib;
  bool synthetic = false;
  std::string method = "minmax";
  int64_t cases = 20;           // calibration volumes (MLPerf's 3D U-Net calibrates on 20)
  int64_t keep_float = 0;       // the most sensitive layers left in float
  bool sensitivity = true;
  int64_t threads = 0;
  double val_fraction = 0.2;    // validation cases from the training list when the data has no labelled test cases
};

namespace quantize_detail {

struct Cases {
  std::vector<data::Sample> calibration, validation;
  std::string validation_source;
};

// Calibration volumes: the first training cases; validation: the labelled held-out cases
// (labelsTs/ID.nii.gz, as vox synthetic and vox demo write them) or else the training list's last
// val_fraction, never the same cases as calibration. Preprocessed as training did.
inline Cases load_cases(const QuantizeArgs& a, const RunConfig& c, const std::string& data_dir) {
  const data::MsdDataset d = data::load_msd_dataset(data_dir);
  VOX_CHECK(!d.classification(), "quantize", data_dir, " is a classification dataset; vox quantize takes segmentation runs");
  data::PreprocessOptions pre{.spacing = c.spacing, .normalization = data::Normalization::zscore, .crop_to_nonzero = false};
  if (c.normalization == "ct") pre.normalization = data::Normalization::ct, pre.ct = c.ct;
  else if (c.normalization == "none") pre.normalization = data::Normalization::none;
  std::vector<data::DatasetCase> validation;
  for (const data::DatasetCase& t : d.test) {
    const fs::path label = fs::path(d.root) / "labelsTs" / (t.id + ".nii.gz");
    if (fs::exists(label)) validation.push_back({t.id, t.image, label.string(), -1});
  }
  std::vector<data::DatasetCase> training = d.training;
  Cases out;
  out.validation_source = std::to_string(validation.size()) + " labelled held-out cases";
  if (validation.empty()) {
    const int64_t val = std::max<int64_t>(1, std::llround(double(training.size()) * a.val_fraction));
    VOX_CHECK(static_cast<int64_t>(training.size()) > val, "quantize", data_dir, " has ", training.size(), " cases: too few to hold ", val,
              " out for validation");
    validation.assign(training.end() - val, training.end());
    training.resize(training.size() - static_cast<size_t>(val));
    out.validation_source = "the last " + std::to_string(val) + " training cases";
  }
  const size_t n = std::min<size_t>(training.size(), static_cast<size_t>(a.cases));
  std::cerr << "vox: reading " << n << " calibration and " << validation.size() << " validation cases from " << data_dir << "\n";
  for (size_t i = 0; i < n; ++i) out.calibration.push_back(data::preprocess_case(training[i], pre, c.classes));
  for (const data::DatasetCase& v : validation) out.validation.push_back(data::preprocess_case(v, pre, c.classes));
  return out;
}

inline inference::SlidingWindowOptions windows(const RunConfig& c) { return {.patch = c.patch, .overlap = 0.5}; }

// The mean foreground Dice of the network's current state over the validation cases.
inline double validation_dice(const nn::models::AnyModel& model, const RunConfig& c, const std::vector<data::Sample>& cases) {
  NoGradGuard no_grad;
  double sum = 0;
  for (const data::Sample& s : cases) {
    const inference::LabelResult r = inference::sliding_window_labels(s.image.voxels, model.forward, windows(c));
    sum += mean_foreground_dice(r.labels, s.label.voxels, c.classes);
  }
  return sum / double(cases.size());
}

struct LayerReport {
  std::string name, kind;
  std::pair<float, float> range;
  quant::ActivationParams input;
  double dice_alone = std::nan("");  // validation Dice with this layer alone in INT8
  bool kept_float = false;
  bool narrow = false;  // float for its few outputs (quant::QuantizeOptions::min_outputs)
};

inline std::string report_json(const QuantizeArgs& a, const QuantizationRecord& record, double float_dice, double int8_all, double final_dice,
                               const std::vector<LayerReport>& layers, const std::string& validation_source) {
  std::string s = "{\n  \"model\": " + json::quote(a.model) + ",\n  \"quantization\": " + record.to_json() + ",\n  \"kernel\": " +
                  json::quote(kernels::cpu::int8_kernel_name(kernels::cpu::int8_kernel())) + ",\n  \"validation\": " +
                  json::quote(validation_source) + ",\n  \"float_dice\": " + json_number(float_dice) + ",\n  \"int8_dice_all_layers\": " +
                  json_number(int8_all) + ",\n  \"int8_dice\": " + json_number(final_dice) + ",\n  \"int8_to_float\": " +
                  json_number(final_dice / float_dice) + ",\n  \"layers\": [";
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerReport& l = layers[i];
    s += std::string(i ? "," : "") + "\n    {\"name\": " + json::quote(l.name) + ", \"kind\": " + json::quote(l.kind) + ", \"input_min\": " +
         json_number(l.range.first) + ", \"input_max\": " + json_number(l.range.second) + ", \"input_scale\": " + json_number(l.input.scale) +
         ", \"input_zero_point\": " + std::to_string(l.input.zero_point) + ", \"dice_alone_int8\": " +
         (std::isnan(l.dice_alone) ? std::string("null") : json_number(l.dice_alone)) + ", \"kept_float\": " + (l.kept_float ? "true" : "false") +
         ", \"precision\": " + json::quote(l.narrow ? "f32 (too few outputs for the int8 kernels)" : l.kept_float ? "f32 (--keep-float)" : "int8") + "}";
  }
  return s + "\n  ]\n}\n";
}

}  // namespace quantize_detail

inline int quantize_run(const QuantizeArgs& a) {
  using namespace quantize_detail;
  if (a.model.empty() || a.output.empty()) throw UsageError{"quantize needs --model RUN and --output RUN_INT8"};
  if (a.synthetic == !a.calib.empty()) throw UsageError{"quantize needs exactly one of --calib DATA_DIR and --synthetic"};
  if (a.cases < 1) throw UsageError{"--cases must be at least 1"};
  if (fs::weakly_canonical(a.model) == fs::weakly_canonical(a.output)) throw UsageError{"--output must be a new directory, not the float run"};
  const quant::CalibrationMethod method = [&] {
    try {
      return quant::parse_calibration_method(a.method);
    } catch (const Error&) {
      throw UsageError{"--method takes minmax, percentile or entropy, got " + a.method};
    }
  }();
  if (a.threads > 0) set_num_threads(static_cast<int>(a.threads));
  const auto start = std::chrono::steady_clock::now();
  RunConfig config = RunConfig::load(a.model);
  if (config.quantization) throw UsageError{a.model + " is already an INT8 run; quantize its float run"};
  if (config.task != "segment") throw UsageError{"vox quantize takes segmentation runs; " + a.model + " is a classifier"};
  nn::models::AnyModel model = make_run_model(config);
  model.module->load_state_dict(load_run_weights(a.model));
  model.module->eval();

  std::string data_dir = a.calib;
  fs::path scratch;
  if (a.synthetic) {  // the built-in spheres, as vox train --synthetic saw them
    scratch = fs::temp_directory_path() / ("vox-quantize-" + std::to_string(::getpid()));
    data::write_synthetic_dataset(scratch.string(), a.cases, 4, {.size = {64, 64, 64}, .classes = config.classes}, 2026);
    data_dir = scratch.string();
  }
  const Cases cases = load_cases(a, config, data_dir);
  if (!scratch.empty()) fs::remove_all(scratch);

  const std::vector<quant::QuantizableLayer> found = quant::quantizable_layers(*model.module);
  std::printf("vox: quantizing %s (%s, %zu convolution layers) to INT8 on the %s kernel: %s calibration on %zu volumes, validation on %s\n",
              a.model.c_str(), config.arch.c_str(), found.size(), kernels::cpu::int8_kernel_name(kernels::cpu::int8_kernel()),
              a.method.c_str(), cases.calibration.size(), cases.validation_source.c_str());
  std::fflush(stdout);
  const double float_dice = validation_dice(model, config, cases.validation);
  std::printf("vox: float validation Dice %.4f\n", float_dice);
  std::fflush(stdout);

  std::map<std::string, std::pair<float, float>> ranges;
  std::map<std::string, quant::ActivationParams> inputs;
  {
    quant::Calibration calibration(*model.module, {.method = method});
    NoGradGuard no_grad;
    const bool terminal = isatty(fileno(stderr)) != 0;
    for (size_t i = 0; i < cases.calibration.size(); ++i) {
      inference::sliding_window_labels(cases.calibration[i].image.voxels, model.forward, windows(config));
      if (terminal) std::fprintf(stderr, "\rvox: calibrating on volume %zu/%zu", i + 1, cases.calibration.size());
    }
    std::fprintf(stderr, "%svox: calibrated on %zu volumes\n", terminal ? "\r" : "", cases.calibration.size());
    ranges = calibration.ranges();
    inputs = calibration.inputs();
  }
  const quant::QuantizedLayers all = quant::quantize(*model.module, inputs);
  const double int8_all = validation_dice(model, config, cases.validation);
  std::printf("vox: INT8 validation Dice %.4f with every layer in INT8 (%.2f%% of float)\n", int8_all, 100.0 * int8_all / float_dice);

  std::vector<LayerReport> layers;
  for (const quant::QuantizableLayer& l : found)
    layers.push_back({l.name, quant::layer_kind_name(l.spec.kind), ranges.at(l.name), inputs.at(l.name), std::nan(""), false, !all.count(l.name)});
  for (const LayerReport& l : layers)
    if (l.narrow) std::printf("vox: %s stays in float: too few outputs for the int8 kernels' 16 lanes\n", l.name.c_str());
  const bool sensitivity = a.sensitivity || a.keep_float > 0;
  if (sensitivity) {
    std::printf("vox: sensitivity: the validation Dice with each layer alone in INT8\n");
    for (size_t i = 0; i < found.size(); ++i) {
      if (layers[i].narrow) continue;
      quant::restore_float(*model.module);
      quant::install(found[i], all.at(found[i].name));
      layers[i].dice_alone = validation_dice(model, config, cases.validation);
      std::printf("  [%2zu/%zu] %-40s Dice %.4f (%+.4f)\n", i + 1, found.size(), found[i].name.c_str(), layers[i].dice_alone,
                  layers[i].dice_alone - float_dice);
      std::fflush(stdout);
    }
  }
  QuantizationRecord record{.method = a.method, .weight_bits = kernels::cpu::int8_weight_bits(),
                            .calibration_cases = static_cast<int64_t>(cases.calibration.size())};
  quant::restore_float(*model.module);
  quant::QuantizeOptions options;
  if (a.keep_float > 0) {
    std::vector<size_t> order;  // the INT8 layers, most sensitive first
    for (size_t i = 0; i < layers.size(); ++i)
      if (!layers[i].narrow) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return layers[x].dice_alone < layers[y].dice_alone; });
    for (size_t i = 0; i < std::min<size_t>(order.size(), static_cast<size_t>(a.keep_float)); ++i) {
      layers[order[i]].kept_float = true;
      options.keep_float.insert(layers[order[i]].name);
      record.kept_float.push_back(layers[order[i]].name);
    }
  }
  const quant::QuantizedLayers final_layers = quant::quantize(*model.module, inputs, options);
  const double final_dice = a.keep_float > 0 ? validation_dice(model, config, cases.validation) : int8_all;
  if (a.keep_float > 0)
    std::printf("vox: INT8 validation Dice %.4f with the %zu most sensitive layers in float (%.2f%% of float)\n", final_dice,
                record.kept_float.size(), 100.0 * final_dice / float_dice);

  fs::create_directories(a.output);
  config.quantization = record;
  io::write_file_atomically((fs::path(a.output) / "config.json").string(), [&](std::ofstream& out) { out << config.to_json(); });
  const std::string weights = (fs::path(a.output) / kInt8Weights).string();
  io::save_safetensors(weights, quant::quantized_state_dict(*model.module, final_layers));
  io::write_file_atomically((fs::path(a.output) / "quantization.json").string(), [&](std::ofstream& out) {
    out << report_json(a, record, float_dice, int8_all, final_dice, layers, cases.validation_source);
  });
  if (sensitivity) {
    std::vector<std::pair<double, double>> drops;
    for (size_t i = 0; i < layers.size(); ++i) drops.push_back({double(i), float_dice - layers[i].dice_alone});  // NaN (float layers): no bar
    io::write_bar_plot((fs::path(a.output) / "sensitivity.png").string(), drops,
                       {.title = "dice lost with one layer in int8", .x_label = "layer - quantization.json order"});
  }
  std::printf("vox: INT8 run in %s (%s: %.1f MiB) in %.0f s; float Dice %.4f, INT8 Dice %.4f = %.2f%% of float (MLPerf's 99.9%% rule: %s)\n",
              a.output.c_str(), kInt8Weights, double(fs::file_size(weights)) / (1 << 20),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), float_dice, final_dice,
              100.0 * final_dice / float_dice, final_dice >= 0.999 * float_dice ? "met" : "not met");
  return 0;
}

}  // namespace run_commands
