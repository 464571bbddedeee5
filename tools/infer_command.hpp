// `vox infer`: a trained run (or PyTorch/MONAI weights) on one image. Segmentation writes the
// labels (or logits) with the input's geometry, after optional post-processing; classification
// prints the class and its probabilities as JSON.
#pragma once

#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <optional>

#include <vox/amp/autocast.hpp>
#include <vox/data/classification.hpp>
#include <vox/data/preview.hpp>
#include <vox/train/inference.hpp>
#include <vox/train/postprocess.hpp>

#include "quantize_command.hpp"

namespace run_commands {

// A case read and normalised as the run's config says: [D, H, W, C] f32 on the training spacing.
inline io::Image prepare(io::Image image, const RunConfig& c) {
  if (c.spacing[0] > 0) image = data::resample_to_spacing(image, c.spacing, data::Interpolation::linear);
  if (c.normalization == "ct") image.voxels = data::ct_normalize(image.voxels, c.ct);
  else if (c.normalization == "zscore") image.voxels = data::z_score(image.voxels);
  else image.voxels = image.voxels.to(DType::f32);
  if (image.voxels.rank() == 3) image.voxels = image.voxels.reshape({image.depth(), image.height(), image.width(), 1});
  return image;
}

struct InferArgs {
  std::string model, input, output, png, weights;
  std::string normalization;  // empty: the run's (none for --weights); or zscore, none
  double overlap = 0.5;
  int64_t windows_per_batch = 1;  // MONAI's sw_batch_size
  bool tta = false, logits = false, no_window = false;
  std::vector<int> tta_axes{0, 1, 2};  // with tta: every non-empty subset of these axes (i, j, k) is flipped
  bool gaussian = true;                // false: every window weighted alike
  bool largest_component = false;  // keep each class's largest connected component
  int64_t min_size = 0;            // remove components smaller than this many voxels
  std::string device = "cpu";      // where the network runs
  std::string precision = "f32";   // bf16 or f16: the network runs under autocast; int8: an INT8 run (vox quantize)
  RunConfig config;  // with --weights: the architecture given on the command line
  std::optional<std::array<int64_t, 3>> patch;  // with --model: windows of another size than the run's
};

struct Classification {
  int64_t label = 0;
  std::vector<double> probabilities;
};

// The model's forward under autocast in `precision` (bf16 or f16), its output widened to f32 for
// blending and softmax; left as it is for f32.
inline void run_in_precision(nn::models::AnyModel& model, std::optional<DType> precision, Device device) {
  if (!precision) return;
  model.forward = [forward = model.forward, precision, device](const Tensor& x) {
    amp::Autocast autocast(device, precision);
    return forward(x).to(DType::f32);
  };
}

inline Classification classify_one(const InferArgs& a, const InputOptions& input, const RunConfig& config,
                                   const nn::models::AnyModel& model, Device device) {
  io::Image volume = data::prepare_volume(read_image(a.input, input), config.patch);
  // PyTorch weights saw nibabel's axis order, (i, j, k): see infer_one
  if (!a.weights.empty()) volume.voxels = volume.voxels.permute({2, 1, 0, 3}).contiguous();
  const Tensor p = classify_volumes(model, {volume}, device);
  Classification c{0, p.to_vector<double>()};
  c.label = std::max_element(c.probabilities.begin(), c.probabilities.end()) - c.probabilities.begin();
  std::string json = "{\"input\": " + json::quote(a.input) + ", \"class\": " + std::to_string(c.label);
  if (static_cast<size_t>(c.label) < config.class_names.size()) json += ", \"name\": " + json::quote(config.class_names[static_cast<size_t>(c.label)]);
  json += ", \"probabilities\": " + json_list(c.probabilities) + "}\n";
  std::cout << json;
  if (!a.output.empty()) io::write_file_atomically(a.output, [&](std::ofstream& out) { out << json; });
  return c;
}

// Predicts one image; writes the labels (or logits) with the input's geometry. Returns the labels.
inline Tensor infer_one(const InferArgs& a, const InputOptions& input) {
  RunConfig config = a.weights.empty() ? RunConfig::load(a.model) : a.config;
  if (!a.weights.empty()) config.normalization = "none";  // a PyTorch model's inputs are its user's business
  if (!a.normalization.empty()) config.normalization = a.normalization;
  nn::models::AnyModel model = a.weights.empty() ? make_run_model(config) : make_model(config);
  if (a.patch) {
    for (const int64_t side : *a.patch)
      if (side % model.size_multiple != 0)
        throw UsageError{"--patch sizes must be multiples of " + std::to_string(model.size_multiple) + " for " + config.arch};
    config.patch = *a.patch;
  }
  const Device device = usable_device(a.device);
  const bool int8 = config.quantization.has_value();
  if (a.precision == "int8" && !int8)
    throw UsageError{"--precision int8 takes an INT8 run; make one with vox quantize --model " + (a.model.empty() ? std::string("RUN") : a.model) +
                     " --output RUN_INT8 (--calib DATA_DIR | --synthetic)"};
  if (int8 && a.precision != "f32" && a.precision != "int8") throw UsageError{a.model + " is an INT8 run: --precision " + a.precision + " does not apply"};
  if (int8 && !device.is_cpu()) throw UsageError{"vox's INT8 kernels run on the CPU: run " + a.model + " with --device cpu"};
  model.module->to(device);
  if (!int8) run_in_precision(model, parse_precision(a.precision, "--precision"), device);
  // --weights: a PyTorch/MONAI state_dict
  if (int8) load_int8_run(*model.module, a.model);
  else model.module->load_state_dict(a.weights.empty() ? load_run_weights(a.model) : io::load_safetensors(a.weights).tensors);
  model.module->eval();
  if (config.task == "classify") {
    classify_one(a, input, config, model, device);
    return {};
  }
  io::Image original = read_image(a.input, input);
  const io::Image image = prepare(original, config);
  const data::Index3 original_size{original.width(), original.height(), original.depth()};
  if (a.png.empty()) original.voxels = Tensor();  // only its geometry is needed from here on
  // A run of vox train saw voxels as vox stores them, [k, j, i]. A PyTorch model saw nibabel's
  // array, (i, j, k): its spatial axes are reversed, so the windows are transposed for it.
  const bool pytorch_order = !a.weights.empty();
  const auto forward = forward_on(model, device);
  const inference::Predictor predict = [&](const Tensor& x) {
    if (!pytorch_order) return forward(x);
    return forward(x.permute({0, 3, 2, 1, 4}).contiguous()).permute({0, 3, 2, 1, 4}).contiguous();
  };
  inference::SlidingWindowOptions o{.patch = config.patch, .overlap = a.overlap, .batch = a.windows_per_batch};
  if (a.no_window)
    for (int ax = 0; ax < 3; ++ax) {  // one window: the whole (padded) volume
      const int64_t multiple = model.size_multiple, n = ax == 0 ? image.width() : ax == 1 ? image.height() : image.depth();
      o.patch[ax] = (n + multiple - 1) / multiple * multiple;
    }
  o.gaussian = a.gaussian;
  if (a.tta)
    for (const auto& m : inference::all_mirrors()) {  // the flips that use only the allowed axes
      bool allowed = true;
      for (int axis = 0; axis < 3; ++axis)
        if (m[static_cast<size_t>(axis)] && std::find(a.tta_axes.begin(), a.tta_axes.end(), axis) == a.tta_axes.end()) allowed = false;
      if (allowed) o.mirrors.push_back(m);
    }
  const auto start = std::chrono::steady_clock::now();
  int64_t last_percent = -1;
  const bool terminal = isatty(fileno(stderr)) != 0;
  o.progress = [&](int64_t done, int64_t total) {
    const int64_t percent = 100 * done / total;
    if (terminal && percent / 10 != last_percent / 10)
      std::cerr << "\rvox: inference " << percent << "% (" << done << "/" << total << " windows)" << std::flush;
    last_percent = percent;
  };
  io::Image out;
  out.spacing = image.spacing, out.origin = image.origin, out.direction = image.direction;
  if (a.logits) {
    out.voxels = inference::sliding_window_logits(image.voxels, predict, o);
  } else {
    const inference::LabelResult r = inference::sliding_window_labels(image.voxels, predict, o);
    out.voxels = r.labels;
    std::cerr << (terminal ? "\r" : "") << "vox: inference of " << a.input << " done in "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s; slab accumulators peaked at "
              << r.accumulator_peak_bytes / (1 << 20) << " MiB\n";
    if (a.largest_component) out.voxels = postprocess::keep_largest_component(out.voxels);
    if (a.min_size > 0) out.voxels = postprocess::remove_small_objects(out.voxels, a.min_size);
  }
  if (config.spacing[0] > 0)  // back onto the input's grid
    out = data::resize(out, original_size, a.logits ? data::ResizeMode::linear : data::ResizeMode::nearest);
  out.spacing = original.spacing, out.origin = original.origin, out.direction = original.direction;
  io::write_nifti(a.output, out);
  if (!a.png.empty() && !a.logits) data::write_preview_png(a.png, original, &out);
  return out.voxels;
}

}  // namespace run_commands
