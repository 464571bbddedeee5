// What `vox train` is asked to do (TrainArgs: flags or a JSON config, the same keys), and what a
// run directory records to rebuild its model and preprocessing (RunConfig, config.json).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <vox/data/intensity.hpp>
#include <vox/io/file.hpp>
#include <vox/io/json.hpp>
#include <vox/nn/models/registry.hpp>

#include "cli_common.hpp"

namespace run_commands {

namespace fs = std::filesystem;

inline std::string json_list(const auto& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + json_number(double(values[i]));
  return s + "]";
}

inline const json::Value& json_field(const json::Value& object, const char* key, const std::string& path) {
  const json::Value* f = object.find(key);
  VOX_CHECK(f != nullptr, "config", path, " lacks \"", key, "\"");
  return *f;
}

inline json::Value read_json_file(const std::string& path) {
  VOX_CHECK(fs::is_regular_file(path), "config", path, " does not exist or is not a file");
  const std::vector<char> bytes = io::read_file(path);
  return json::parse(std::string(bytes.begin(), bytes.end()), path);
}

// How `vox quantize` made an INT8 run: its weights are model_int8.safetensors.
struct QuantizationRecord {
  std::string method = "minmax";   // calibration
  int64_t weight_bits = 8;         // 8, or 7 for CPUs without VNNI
  int64_t calibration_cases = 0;
  std::vector<std::string> kept_float;  // layers left in float

  std::string to_json() const {
    std::string kept = "[";
    for (size_t i = 0; i < kept_float.size(); ++i) kept += (i ? ", " : "") + json::quote(kept_float[i]);
    return "{\"scheme\": \"weights s8 symmetric per output channel, activations u8 asymmetric per tensor, int32 sums\", \"method\": " +
           json::quote(method) + ", \"weight_bits\": " + std::to_string(weight_bits) + ", \"calibration_cases\": " +
           std::to_string(calibration_cases) + ", \"kept_float\": " + kept + "]}";
  }
  static QuantizationRecord from_json(const json::Value& v, const std::string& path) {
    QuantizationRecord r;
    r.method = json_field(v, "method", path).as_string("method");
    r.weight_bits = json_field(v, "weight_bits", path).as_int64("weight_bits");
    VOX_CHECK(r.weight_bits == 7 || r.weight_bits == 8, "config", path, ": quantization weight_bits must be 7 or 8, got ", r.weight_bits);
    r.calibration_cases = json_field(v, "calibration_cases", path).as_int64("calibration_cases");
    for (const json::Value& x : json_field(v, "kept_float", path).as_array("kept_float")) r.kept_float.push_back(x.as_string("kept_float"));
    return r;
  }
};

// How `vox prune` made a pruned run: the channels each of the network's channel groups kept
// (quant::channel_groups' order), which rebuild its smaller network.
struct PruningRecord {
  std::string norm = "l1";
  double amount = 0.3;
  bool global = false;
  std::vector<std::vector<int64_t>> kept;

  std::string to_json() const {
    std::string groups = "[";
    for (size_t i = 0; i < kept.size(); ++i) groups += (i ? ", " : "") + json_list(kept[i]);
    return "{\"norm\": " + json::quote(norm) + ", \"amount\": " + json_number(amount) + ", \"global\": " + (global ? "true" : "false") +
           ", \"kept\": " + groups + "]}";
  }
  static PruningRecord from_json(const json::Value& v, const std::string& path) {
    PruningRecord r;
    r.norm = json_field(v, "norm", path).as_string("norm");
    r.amount = json_field(v, "amount", path).as_double("amount");
    r.global = json_field(v, "global", path).as_bool("global");
    for (const json::Value& g : json_field(v, "kept", path).as_array("kept")) {
      r.kept.emplace_back();
      for (const json::Value& c : g.as_array("kept")) r.kept.back().push_back(c.as_int64("kept"));
    }
    return r;
  }
};

// What a run needs to rebuild its model and preprocessing.
struct RunConfig {
  std::string arch = "monai-unet";
  std::string task = "segment";        // segment or classify
  std::vector<int64_t> channels;       // empty: the architecture's default
  int64_t in_channels = 1, classes = 2;
  std::vector<std::string> class_names;
  data::Index3 patch{48, 48, 48};      // segmentation: the window; classification: the input size
  std::array<double, 3> spacing{0, 0, 0};  // 0: the data's own
  std::string normalization = "zscore";    // zscore, ct, or none
  data::ForegroundIntensities ct;
  std::optional<QuantizationRecord> quantization;  // an INT8 run of vox quantize
  std::optional<PruningRecord> pruning;            // a run of vox prune: its network is smaller

  std::string to_json() const {
    std::string names = "[";
    for (size_t i = 0; i < class_names.size(); ++i) names += (i ? ", " : "") + json::quote(class_names[i]);
    return "{\n  \"arch\": " + json::quote(arch) + ",\n  \"task\": " + json::quote(task) + ",\n  \"channels\": " + json_list(channels) +
           ",\n  \"in_channels\": " + std::to_string(in_channels) + ",\n  \"classes\": " + std::to_string(classes) +
           ",\n  \"class_names\": " + names + "],\n  \"patch\": " + json_list(patch) + ",\n  \"spacing\": " + json_list(spacing) +
           ",\n  \"normalization\": " + json::quote(normalization) + ",\n  \"ct\": [" + json_number(ct.mean) + ", " + json_number(ct.std) +
           ", " + json_number(ct.percentile_00_5) + ", " + json_number(ct.percentile_99_5) + "]" +
           (quantization ? ",\n  \"quantization\": " + quantization->to_json() : std::string()) +
           (pruning ? ",\n  \"pruning\": " + pruning->to_json() : std::string()) + "\n}\n";
  }
  static RunConfig load(const std::string& run) {
    const std::string path = (fs::path(run) / "config.json").string();
    VOX_CHECK(fs::exists(path), "infer", run, " is not a run directory of vox train (no config.json)");
    const json::Value v = read_json_file(path);
    auto get = [&](const char* key) -> const json::Value& { return json_field(v, key, path); };
    RunConfig c;
    c.arch = get("arch").as_string("arch");
    if (const json::Value* task = v.find("task")) c.task = task->as_string("task");  // runs before classification: segment
    for (const json::Value& x : get("channels").as_array("channels")) c.channels.push_back(x.as_int64("channels"));
    c.in_channels = get("in_channels").as_int64("in_channels");
    c.classes = get("classes").as_int64("classes");
    if (const json::Value* names = v.find("class_names"))
      for (const json::Value& x : names->as_array("class_names")) c.class_names.push_back(x.as_string("class_names"));
    const auto& patch = get("patch").as_array("patch");
    const auto& spacing = get("spacing").as_array("spacing");
    const auto& ct = get("ct").as_array("ct");
    VOX_CHECK(patch.size() == 3 && spacing.size() == 3 && ct.size() == 4, "infer", path, ": patch and spacing need 3 numbers, ct 4");
    for (size_t a = 0; a < 3; ++a) c.patch[a] = patch[a].as_int64("patch"), c.spacing[a] = spacing[a].as_double("spacing");
    c.normalization = get("normalization").as_string("normalization");
    c.ct.mean = ct[0].as_double(), c.ct.std = ct[1].as_double(), c.ct.percentile_00_5 = ct[2].as_double(), c.ct.percentile_99_5 = ct[3].as_double();
    if (const json::Value* q = v.find("quantization")) c.quantization = QuantizationRecord::from_json(*q, path);
    if (const json::Value* q = v.find("pruning")) c.pruning = PruningRecord::from_json(*q, path);
    return c;
  }
};

// The model a run config names; its window must suit the architecture's downsamplings.
inline nn::models::AnyModel make_model(const RunConfig& c) {
  const std::vector<std::string> names = nn::models::architecture_names();
  if (nn::models::default_channels(c.arch).empty()) {
    std::string list;
    for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
    throw UsageError{"--arch takes " + list + "; got " + c.arch};
  }
  const bool classify = nn::models::task_of(c.arch) == nn::models::Task::classify;
  if (classify != (c.task == "classify"))
    throw UsageError{c.arch + (classify ? " is a classifier; use it with --task classify" : " is a segmentation network; use a resnet3d-N with --task classify")};
  nn::models::AnyModel m = nn::models::make_model({.arch = c.arch, .in_channels = c.in_channels, .classes = c.classes, .channels = c.channels});
  for (int a = 0; a < 3; ++a)
    if (c.patch[a] % m.size_multiple != 0)
      throw UsageError{"the patch must be a multiple of " + std::to_string(m.size_multiple) + " along each axis for " + c.arch + " with " +
                       std::to_string(m.channels.size()) + " levels"};
  return m;
}

// `vox train`'s settings. Flags and a JSON config (--config FILE) use the same names; flags given
// after --config override it. The run directory keeps them as train.json, so that
// `vox train --config RUN/train.json` repeats a run.
struct TrainArgs {
  std::string data, run = "runs/latest";
  bool synthetic = false, resume = false, augment = true;
  // classification defaults to resnet3d-18 and a 32^3 input; segmentation to monai-unet, 48^3
  bool arch_given = false, patch_given = false, classes_given = false;
  RunConfig config;
  int64_t epochs = 20, iterations = 50, batch = 2, threads = 0;
  double lr = 1e-3, val_fraction = 0.2;
  uint64_t seed = 0;
  std::string device = "cpu";
  bool cuda_graph = false;  // replay the training iteration from a CUDA graph
  std::string amp = "f32";  // mixed precision: bf16 or f16 autocast (f16 with loss scaling)
  std::string init;         // fine-tuning: start from this run's best weights and network (pruned or not)
  std::string dist = "auto";  // data parallelism: auto (MPI when launched with several ranks), mpi, nccl or none
  double dist_timeout = 600;  // seconds a collective may take before the watchdog ends the job

  std::string to_json() const {
    return "{\n  \"data\": " + json::quote(data) + ",\n  \"synthetic\": " + (synthetic ? "true" : "false") + ",\n  \"run\": " + json::quote(run) +
           ",\n  \"task\": " + json::quote(config.task) + ",\n  \"arch\": " + json::quote(config.arch) + ",\n  \"channels\": " +
           json_list(config.channels) + ",\n  \"patch\": " + json_list(config.patch) + ",\n  \"spacing\": " + json_number(config.spacing[0]) +
           ",\n  \"epochs\": " + std::to_string(epochs) + ",\n  \"iterations\": " + std::to_string(iterations) + ",\n  \"batch\": " +
           std::to_string(batch) + ",\n  \"lr\": " + json_number(lr) + ",\n  \"val_fraction\": " + json_number(val_fraction) +
           ",\n  \"augment\": " + (augment ? "true" : "false") + ",\n  \"seed\": " + std::to_string(seed) + ",\n  \"threads\": " +
           std::to_string(threads) + ",\n  \"device\": " + json::quote(device) + ",\n  \"cuda_graph\": " + (cuda_graph ? "true" : "false") +
           ",\n  \"amp\": " + json::quote(amp) + ",\n  \"init\": " + json::quote(init) + ",\n  \"dist\": " + json::quote(dist) +
           ",\n  \"dist_timeout\": " + json_number(dist_timeout) + "\n}\n";
  }

  // Takes the keys of a JSON config; an unknown key is an error, as an unknown flag is.
  void apply_json(const std::string& path) {
    const json::Value doc = read_json_file(path);
    auto count = [&](const json::Value& v, const std::string& key) {
      const int64_t n = v.as_int64(key.c_str());
      VOX_CHECK(n >= 0, "config", path, ": \"", key, "\" must not be negative, got ", n);
      return n;
    };
    for (const auto& [key, v] : doc.as_object("config")) {
      const char* k = key.c_str();
      if (key == "data") data = v.as_string(k);
      else if (key == "synthetic") synthetic = v.as_bool(k);
      else if (key == "run") run = v.as_string(k);
      else if (key == "task") config.task = v.as_string(k);
      else if (key == "arch") config.arch = v.as_string(k), arch_given = true;
      else if (key == "channels") {
        config.channels.clear();
        for (const json::Value& c : v.as_array(k)) config.channels.push_back(count(c, key));
      } else if (key == "patch") {
        const auto& p = v.as_array(k);
        VOX_CHECK(p.size() == 3 || p.size() == 1, "config", path, ": \"patch\" takes 1 or 3 sizes, got ", p.size());
        for (size_t a = 0; a < 3; ++a) config.patch[a] = count(p[p.size() == 1 ? 0 : a], key);
        patch_given = true;
      } else if (key == "spacing") {
        const double s = v.as_double(k);
        VOX_CHECK(s >= 0, "config", path, ": \"spacing\" must not be negative");
        config.spacing = {s, s, s};
      } else if (key == "epochs") epochs = count(v, key);
      else if (key == "iterations") iterations = count(v, key);
      else if (key == "batch") batch = count(v, key);
      else if (key == "threads") threads = count(v, key);
      else if (key == "seed") seed = static_cast<uint64_t>(count(v, key));
      else if (key == "lr") lr = v.as_double(k);
      else if (key == "val_fraction") val_fraction = v.as_double(k);
      else if (key == "augment") augment = v.as_bool(k);
      else if (key == "device") device = v.as_string(k);
      else if (key == "cuda_graph") cuda_graph = v.as_bool(k);
      else if (key == "amp") amp = v.as_string(k);
      else if (key == "init") init = v.as_string(k);
      else if (key == "dist") dist = v.as_string(k);
      else if (key == "dist_timeout") dist_timeout = v.as_double(k);
      else fail("config", path, ": unknown key \"", key, "\"");
    }
  }

  // The settings' own consistency, after flags and config are both in.
  void check() {
    if (synthetic == !data.empty()) throw UsageError{"train needs exactly one of --data DIR and --synthetic"};
    if (config.task != "segment" && config.task != "classify") throw UsageError{"--task takes segment or classify, got " + config.task};
    if (config.task == "classify" && !arch_given) config.arch = "resnet3d-18";
    if (config.task == "classify" && !patch_given) config.patch = {32, 32, 32};
    // the built-in shapes need no ImageNet-sized widths: a quarter of MONAI's trains in minutes on a CPU
    if (config.task == "classify" && synthetic && config.channels.empty()) config.channels = {16, 32, 64, 128};
    if (epochs < 1 || iterations < 1 || batch < 1) throw UsageError{"--epochs, --iterations and --batch must be at least 1"};
    if (!(lr > 0)) throw UsageError{"--lr must be positive"};
    if (!(val_fraction > 0 && val_fraction < 1)) throw UsageError{"the validation fraction must be in (0, 1)"};
    for (int64_t p : config.patch)
      if (p < 1) throw UsageError{"--patch sizes must be positive"};
    if (cuda_graph && !parse_device(device).is_cuda()) throw UsageError{"--cuda-graph needs --device cuda[:N]"};
    if (dist != "auto" && dist != "mpi" && dist != "nccl" && dist != "none") throw UsageError{"--dist takes auto, mpi, nccl or none, got " + dist};
    if (dist == "nccl" && !parse_device(device).is_cuda()) throw UsageError{"--dist nccl reduces GPU gradients: it needs --device cuda"};
    if (!(dist_timeout > 0)) throw UsageError{"--dist-timeout must be a positive number of seconds"};
    if (parse_precision(amp, "--amp") == DType::f16 && cuda_graph)
      throw UsageError{"--amp f16 scales the loss, deciding on the host whether to step: it cannot run in --cuda-graph; use --amp bf16"};
  }
};

}  // namespace run_commands
