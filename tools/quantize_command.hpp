// `vox quantize`: post-training INT8 quantization of a segmentation or classification run.
// Calibrates every convolution's (and linear layer's) input on N volumes run as inference runs
// them (a segmenter's sliding windows, a classifier's whole volumes), measures the validation
// Dice (or accuracy) of the float and the INT8 network, the same with each layer alone in INT8
// (the sensitivity report), optionally keeps the K most sensitive layers in float, and writes an
// INT8 run directory that `vox infer` takes like any other:
//   RUN_INT8/config.json             the run's config, plus what quantization did
//   RUN_INT8/model_int8.safetensors  s8 weights, their scales, input scales and zero points, the
//                                    float rest (norms, PReLU slopes, biases)
//   RUN_INT8/quantization.json       per layer: input range and parameters, sensitivity; the Dice
//   RUN_INT8/sensitivity.png         the Dice (accuracy) lost by each layer alone in INT8
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

// Without held-out cases, validation takes the training list's last val_fraction (and calibration
// never sees them). Returns "the last N".
inline std::string hold_out(const QuantizeArgs& a, const std::string& data_dir, std::vector<data::DatasetCase>& training,
                            std::vector<data::DatasetCase>& validation) {
  const int64_t val = std::max<int64_t>(1, std::llround(double(training.size()) * a.val_fraction));
  VOX_CHECK(static_cast<int64_t>(training.size()) > val, "quantize", data_dir, " has ", training.size(), " cases: too few to hold ", val,
            " out for validation");
  validation.assign(training.end() - val, training.end());
  training.resize(training.size() - static_cast<size_t>(val));
  return "the last " + std::to_string(val);
}

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
  if (validation.empty()) out.validation_source = hold_out(a, data_dir, training, validation) + " training cases";
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

// What quantization is judged by, and what calibration runs: a segmenter's sliding windows and
// mean foreground Dice, or a classifier's whole volumes and accuracy.
struct Evaluation {
  std::string metric;  // "dice" or "accuracy"
  std::string validation_source;
  size_t calibration_cases = 0;
  std::function<void(size_t)> calibrate;  // runs calibration case i through the network
  std::function<double()> validate;       // the metric of the network as it now is
  const char* label() const { return metric == "dice" ? "Dice" : "accuracy"; }
};

inline Evaluation segmentation_evaluation(const QuantizeArgs& a, const RunConfig& c, const nn::models::AnyModel& model,
                                          const std::string& data_dir) {
  auto cases = std::make_shared<Cases>(load_cases(a, c, data_dir));
  Evaluation e{"dice", cases->validation_source, cases->calibration.size(), {}, {}};
  e.calibrate = [cases, c, forward = model.forward](size_t i) {
    inference::sliding_window_labels(cases->calibration[i].image.voxels, forward, windows(c));
  };
  e.validate = [cases, c, &model] { return validation_dice(model, c, cases->validation); };
  return e;
}

// A classification dataset's volumes, prepared as training prepared them: calibration from the
// first training cases, validation on the held-out cases that have a class (or else the training
// list's last val_fraction, never the calibration cases).
inline Evaluation classification_evaluation(const QuantizeArgs& a, const RunConfig& c, const nn::models::AnyModel& model,
                                            const std::string& data_dir) {
  const data::MsdDataset d = data::load_msd_dataset(data_dir);
  VOX_CHECK(d.classification(), "quantize", data_dir, " gives a label map per case; a classifier's run needs a class per case");
  std::vector<data::DatasetCase> training = d.training, validation;
  for (const data::DatasetCase& t : d.test)
    if (t.class_index >= 0) validation.push_back(t);
  std::string source = std::to_string(validation.size()) + " held-out volumes with a class";
  if (validation.empty()) source = hold_out(a, data_dir, training, validation) + " training volumes";
  const size_t n = std::min<size_t>(training.size(), static_cast<size_t>(a.cases));
  std::cerr << "vox: reading " << n << " calibration and " << validation.size() << " validation volumes from " << data_dir << "\n";
  auto calibration = std::make_shared<std::vector<io::Image>>();
  auto volumes = std::make_shared<std::vector<io::Image>>();
  auto classes = std::make_shared<std::vector<int64_t>>();
  for (size_t i = 0; i < n; ++i) calibration->push_back(data::prepare_volume(io::read_nifti(training[i].image).image, c.patch));
  for (const data::DatasetCase& v : validation)
    volumes->push_back(data::prepare_volume(io::read_nifti(v.image).image, c.patch)), classes->push_back(v.class_index);
  Evaluation e{"accuracy", source, n, {}, {}};
  e.calibrate = [calibration, &model](size_t i) { classify_volumes(model, {(*calibration)[i]}, Device::cpu()); };
  e.validate = [volumes, classes, &model] {
    return classification_scores(classify_volumes(model, *volumes, Device::cpu()), *classes).at("accuracy");
  };
  return e;
}

struct LayerReport {
  std::string name, kind;
  std::pair<float, float> range;
  quant::ActivationParams input;
  double alone = std::nan("");  // the validation metric with this layer alone in INT8
  bool kept_float = false;
  bool narrow = false;  // float for its few outputs (quant::QuantizeOptions::min_outputs)
};

// The report; its keys name the metric: float_dice, int8_dice, dice_alone_int8 (or accuracy).
inline std::string report_json(const QuantizeArgs& a, const QuantizationRecord& record, const Evaluation& e, double float_score,
                               double int8_all, double final_score, const std::vector<LayerReport>& layers) {
  const std::string& m = e.metric;
  std::string s = "{\n  \"model\": " + json::quote(a.model) + ",\n  \"quantization\": " + record.to_json() + ",\n  \"kernel\": " +
                  json::quote(kernels::cpu::int8_kernel_name(kernels::cpu::int8_kernel())) + ",\n  \"validation\": " +
                  json::quote(e.validation_source) + ",\n  \"metric\": " + json::quote(m) + ",\n  \"float_" + m + "\": " +
                  json_number(float_score) + ",\n  \"int8_" + m + "_all_layers\": " + json_number(int8_all) + ",\n  \"int8_" + m +
                  "\": " + json_number(final_score) + ",\n  \"int8_to_float\": " + json_number(final_score / float_score) +
                  ",\n  \"layers\": [";
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerReport& l = layers[i];
    s += std::string(i ? "," : "") + "\n    {\"name\": " + json::quote(l.name) + ", \"kind\": " + json::quote(l.kind) + ", \"input_min\": " +
         json_number(l.range.first) + ", \"input_max\": " + json_number(l.range.second) + ", \"input_scale\": " + json_number(l.input.scale) +
         ", \"input_zero_point\": " + std::to_string(l.input.zero_point) + ", \"" + m + "_alone_int8\": " +
         (std::isnan(l.alone) ? std::string("null") : json_number(l.alone)) + ", \"kept_float\": " + (l.kept_float ? "true" : "false") +
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
  nn::models::AnyModel model = make_run_model(config);
  model.module->load_state_dict(load_run_weights(a.model));
  model.module->eval();

  const bool classify = config.task == "classify";
  std::string data_dir = a.calib;
  fs::path scratch;
  if (a.synthetic) {  // the built-in spheres (or shapes), as vox train --synthetic saw them
    scratch = fs::temp_directory_path() / ("vox-quantize-" + std::to_string(::getpid()));
    if (classify) data::write_synthetic_shapes_dataset(scratch.string(), a.cases, 32, {.size = config.patch}, 2026);
    else data::write_synthetic_dataset(scratch.string(), a.cases, 4, {.size = {64, 64, 64}, .classes = config.classes}, 2026);
    data_dir = scratch.string();
  }
  const Evaluation evaluation = classify ? classification_evaluation(a, config, model, data_dir) : segmentation_evaluation(a, config, model, data_dir);
  if (!scratch.empty()) fs::remove_all(scratch);
  const char* metric = evaluation.label();

  const std::vector<quant::QuantizableLayer> found = quant::quantizable_layers(*model.module);
  std::printf("vox: quantizing %s (%s, %zu convolution and linear layers) to INT8 on the %s kernel: %s calibration on %zu volumes, "
              "validation on %s\n",
              a.model.c_str(), config.arch.c_str(), found.size(), kernels::cpu::int8_kernel_name(kernels::cpu::int8_kernel()),
              a.method.c_str(), evaluation.calibration_cases, evaluation.validation_source.c_str());
  std::fflush(stdout);
  const double float_score = evaluation.validate();
  std::printf("vox: float validation %s %.4f\n", metric, float_score);
  std::fflush(stdout);

  std::map<std::string, std::pair<float, float>> ranges;
  std::map<std::string, quant::ActivationParams> inputs;
  {
    quant::Calibration calibration(*model.module, {.method = method});
    NoGradGuard no_grad;
    const bool terminal = isatty(fileno(stderr)) != 0;
    for (size_t i = 0; i < evaluation.calibration_cases; ++i) {
      evaluation.calibrate(i);
      if (terminal) std::fprintf(stderr, "\rvox: calibrating on volume %zu/%zu", i + 1, evaluation.calibration_cases);
    }
    std::fprintf(stderr, "%svox: calibrated on %zu volumes\n", terminal ? "\r" : "", evaluation.calibration_cases);
    ranges = calibration.ranges();
    inputs = calibration.inputs();
  }
  const quant::QuantizedLayers all = quant::quantize(*model.module, inputs);
  const double int8_all = evaluation.validate();
  std::printf("vox: INT8 validation %s %.4f with every layer in INT8 (%.2f%% of float)\n", metric, int8_all, 100.0 * int8_all / float_score);

  std::vector<LayerReport> layers;
  for (const quant::QuantizableLayer& l : found)
    layers.push_back({l.name, quant::layer_kind_name(l.spec.kind), ranges.at(l.name), inputs.at(l.name), std::nan(""), false, !all.count(l.name)});
  for (const LayerReport& l : layers)
    if (l.narrow) std::printf("vox: %s stays in float: too few outputs for the int8 kernels' 16 lanes\n", l.name.c_str());
  const bool sensitivity = a.sensitivity || a.keep_float > 0;
  if (sensitivity) {
    std::printf("vox: sensitivity: the validation %s with each layer alone in INT8\n", metric);
    for (size_t i = 0; i < found.size(); ++i) {
      if (layers[i].narrow) continue;
      quant::restore_float(*model.module);
      quant::install_alone(*model.module, found[i], all.at(found[i].name));
      layers[i].alone = evaluation.validate();
      std::printf("  [%2zu/%zu] %-40s %s %.4f (%+.4f)\n", i + 1, found.size(), found[i].name.c_str(), metric, layers[i].alone,
                  layers[i].alone - float_score);
      std::fflush(stdout);
    }
  }
  QuantizationRecord record{.method = a.method, .weight_bits = kernels::cpu::int8_weight_bits(),
                            .calibration_cases = static_cast<int64_t>(evaluation.calibration_cases)};
  quant::restore_float(*model.module);
  quant::QuantizeOptions options;
  if (a.keep_float > 0) {
    std::vector<size_t> order;  // the INT8 layers, most sensitive first
    for (size_t i = 0; i < layers.size(); ++i)
      if (!layers[i].narrow) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return layers[x].alone < layers[y].alone; });
    for (size_t i = 0; i < std::min<size_t>(order.size(), static_cast<size_t>(a.keep_float)); ++i) {
      layers[order[i]].kept_float = true;
      options.keep_float.insert(layers[order[i]].name);
      record.kept_float.push_back(layers[order[i]].name);
    }
  }
  const quant::QuantizedLayers final_layers = quant::quantize(*model.module, inputs, options);
  const double final_score = a.keep_float > 0 ? evaluation.validate() : int8_all;
  if (a.keep_float > 0)
    std::printf("vox: INT8 validation %s %.4f with the %zu most sensitive layers in float (%.2f%% of float)\n", metric, final_score,
                record.kept_float.size(), 100.0 * final_score / float_score);

  fs::create_directories(a.output);
  config.quantization = record;
  io::write_file_atomically((fs::path(a.output) / "config.json").string(), [&](std::ofstream& out) { out << config.to_json(); });
  const std::string weights = (fs::path(a.output) / kInt8Weights).string();
  io::save_safetensors(weights, quant::quantized_state_dict(*model.module, final_layers));
  io::write_file_atomically((fs::path(a.output) / "quantization.json").string(), [&](std::ofstream& out) {
    out << report_json(a, record, evaluation, float_score, int8_all, final_score, layers);
  });
  if (sensitivity) {
    std::vector<std::pair<double, double>> drops;
    for (size_t i = 0; i < layers.size(); ++i) drops.push_back({double(i), float_score - layers[i].alone});  // NaN (float layers): no bar
    io::write_bar_plot((fs::path(a.output) / "sensitivity.png").string(), drops,
                       {.title = evaluation.metric + " lost with one layer in int8", .x_label = "layer - quantization.json order"});
  }
  std::printf("vox: INT8 run in %s (%s: %.1f MiB) in %.0f s; float %s %.4f, INT8 %s %.4f = %.2f%% of float%s\n", a.output.c_str(),
              kInt8Weights, double(fs::file_size(weights)) / (1 << 20),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), metric, float_score, metric, final_score,
              100.0 * final_score / float_score,
              classify ? "" : final_score >= 0.999 * float_score ? " (MLPerf's 99.9% rule: met)" : " (MLPerf's 99.9% rule: not met)");
  return 0;
}

}  // namespace run_commands
