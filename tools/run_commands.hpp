// `vox train`, `vox infer` and `vox demo`: a run directory holds config.json (what is needed to
// rebuild the model and its preprocessing), the trainer's metrics and checkpoints, and curves.
#pragma once

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>

#include <vox/data/dataset.hpp>
#include <vox/data/preview.hpp>
#include <vox/data/synthetic.hpp>
#include <vox/nn/models/monai_unet.hpp>
#include <vox/optim/adam.hpp>
#include <vox/train/inference.hpp>
#include <vox/train/losses.hpp>
#include <vox/train/metrics.hpp>
#include <vox/train/trainer.hpp>

#include "cli_common.hpp"

namespace run_commands {

namespace fs = std::filesystem;

// What a run needs to rebuild its model and preprocessing.
struct RunConfig {
  std::string arch = "monai-unet";
  std::vector<int64_t> channels{16, 32, 64, 128, 256};
  int64_t in_channels = 1, classes = 2;
  data::Index3 patch{48, 48, 48};
  std::array<double, 3> spacing{0, 0, 0};  // 0: the data's own
  std::string normalization = "zscore";    // zscore, ct, or none
  data::ForegroundIntensities ct;

  std::string to_json() const {
    auto list = [](const auto& v) {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + json_number(double(v[i]));
      return s + "]";
    };
    return "{\n  \"arch\": " + json::quote(arch) + ",\n  \"channels\": " + list(channels) + ",\n  \"in_channels\": " +
           std::to_string(in_channels) + ",\n  \"classes\": " + std::to_string(classes) + ",\n  \"patch\": " + list(patch) +
           ",\n  \"spacing\": " + list(spacing) + ",\n  \"normalization\": " + json::quote(normalization) + ",\n  \"ct\": [" +
           json_number(ct.mean) + ", " + json_number(ct.std) + ", " + json_number(ct.percentile_00_5) + ", " +
           json_number(ct.percentile_99_5) + "]\n}\n";
  }
  static RunConfig load(const std::string& run) {
    const std::string path = (fs::path(run) / "config.json").string();
    VOX_CHECK(fs::exists(path), "infer", run, " is not a run directory of vox train (no config.json)");
    const std::vector<char> bytes = io::read_file(path);
    const json::Value v = json::parse(std::string(bytes.begin(), bytes.end()), path);
    auto get = [&](const char* key) -> const json::Value& {
      const json::Value* f = v.find(key);
      VOX_CHECK(f != nullptr, "infer", path, " lacks \"", key, "\"");
      return *f;
    };
    RunConfig c;
    c.arch = get("arch").as_string();
    c.channels.clear();
    for (const json::Value& x : get("channels").as_array()) c.channels.push_back(x.as_int64());
    c.in_channels = get("in_channels").as_int64();
    c.classes = get("classes").as_int64();
    for (int a = 0; a < 3; ++a) c.patch[a] = get("patch").as_array().at(static_cast<size_t>(a)).as_int64();
    for (int a = 0; a < 3; ++a) c.spacing[a] = get("spacing").as_array().at(static_cast<size_t>(a)).as_double();
    c.normalization = get("normalization").as_string();
    const auto& ct = get("ct").as_array();
    c.ct.mean = ct.at(0).as_double(), c.ct.std = ct.at(1).as_double(), c.ct.percentile_00_5 = ct.at(2).as_double(),
    c.ct.percentile_99_5 = ct.at(3).as_double();
    return c;
  }
};

inline std::unique_ptr<nn::models::MonaiUNet> make_model(const RunConfig& c) {
  if (c.arch != "monai-unet") throw UsageError{"--arch takes monai-unet (more architectures arrive with later work), got " + c.arch};
  nn::models::MonaiUNetConfig m;
  m.in_channels = c.in_channels, m.out_channels = c.classes, m.channels = c.channels;
  m.strides.assign(c.channels.size() - 1, 2);
  const int64_t multiple = int64_t{1} << m.strides.size();
  for (int a = 0; a < 3; ++a)
    if (c.patch[a] % multiple != 0)
      throw UsageError{"the patch must be a multiple of " + std::to_string(multiple) + " along each axis for " +
                       std::to_string(m.strides.size()) + " downsamplings"};
  return std::make_unique<nn::models::MonaiUNet>(m);
}

// A case read and normalised as the run's config says: [D, H, W, C] f32 on the training spacing.
inline io::Image prepare(io::Image image, const RunConfig& c) {
  if (c.spacing[0] > 0) image = data::resample_to_spacing(image, c.spacing, data::Interpolation::linear);
  if (c.normalization == "ct") image.voxels = data::ct_normalize(image.voxels, c.ct);
  else if (c.normalization == "zscore") image.voxels = data::z_score(image.voxels);
  else image.voxels = image.voxels.to(DType::f32);
  if (image.voxels.rank() == 3) image.voxels = image.voxels.reshape({image.depth(), image.height(), image.width(), 1});
  return image;
}

inline double mean_foreground_dice(const Tensor& prediction, const Tensor& truth, int64_t classes) {
  const auto d = metrics::dice_per_class(prediction.to(DType::i64), truth.to(DType::i64), classes);
  return metrics::mean_ignoring_nan(std::vector<double>(d.begin() + 1, d.end()));
}

struct TrainArgs {
  std::string data, run;
  bool synthetic = false, resume = false, augment = true;
  RunConfig config;
  int64_t epochs = 20, iterations = 50, batch = 2, threads = 0;
  double lr = 1e-3, val_fraction = 0.2;
  uint64_t seed = 0;
};

// Trains; returns the best validation mean Dice.
inline double train_run(const TrainArgs& a) {
  if (a.threads > 0) set_num_threads(a.threads);
  std::string data_dir = a.data;
  if (a.synthetic) {
    data_dir = (fs::path(a.run) / "synthetic-data").string();
    if (!fs::exists(fs::path(data_dir) / "dataset.json")) {
      std::cerr << "vox: writing the built-in synthetic dataset to " << data_dir << "\n";
      data::write_synthetic_dataset(data_dir, 12, 4, {.size = {64, 64, 64}}, a.seed);
    }
  }
  if (data_dir.empty()) throw UsageError{"train needs --data DIR or --synthetic"};
  const data::MsdDataset d = data::load_msd_dataset(data_dir);
  RunConfig config = a.config;
  config.classes = d.classes();
  config.in_channels = static_cast<int64_t>(d.channels.size());
  const int64_t val = std::max<int64_t>(1, std::llround(double(d.training.size()) * a.val_fraction));
  VOX_CHECK(static_cast<int64_t>(d.training.size()) > val, "train", d.training.size(), " cases are too few to hold ", val, " out for validation");
  const std::vector<data::DatasetCase> train_cases(d.training.begin(), d.training.end() - val), val_cases(d.training.end() - val, d.training.end());
  std::string modality = d.channels.empty() ? "" : d.channels[0];
  for (char& ch : modality) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  data::PreprocessOptions pre{.spacing = config.spacing, .normalization = data::Normalization::zscore, .crop_to_nonzero = false};
  if (modality == "CT") {
    config.normalization = "ct";
    std::vector<Tensor> images, labels;
    for (const auto& c : train_cases) images.push_back(io::read_nifti(c.image).image.voxels), labels.push_back(io::read_nifti(c.label).image.voxels);
    config.ct = data::foreground_intensities(images, labels);
    pre.normalization = data::Normalization::ct, pre.ct = config.ct;
  }
  fs::create_directories(a.run);
  io::write_file_atomically((fs::path(a.run) / "config.json").string(), [&](std::ofstream& out) { out << config.to_json(); });
  data::PreprocessCache cache((fs::path(data_dir) / ".vox-cache").string(), pre);
  std::cerr << "vox: preprocessing " << d.training.size() << " cases (cached in " << cache.directory() << ")\n";
  std::vector<data::Sample> train_samples, val_samples;
  for (const auto& c : train_cases) train_samples.push_back(cache.get(c, config.classes));
  for (const auto& c : val_cases) val_samples.push_back(cache.get(c, config.classes));
  data::LoaderOptions lo{.patch = config.patch, .batch_size = a.batch, .augment = a.augment, .seed = a.seed};
  const data::PatchLoader loader(train_samples, lo);
  manual_seed(a.seed);
  auto model = make_model(config);
  optim::Adam adam(model->parameters(), {.lr = a.lr, .weight_decay = 3e-5});
  train::Trainer trainer(*model, adam, loader,
                         [](const Tensor& logits, const Tensor& target) {
                           // nnU-Net's DC_and_CE: softmax, batch Dice over the foreground classes, plus cross-entropy
                           return losses::dice_ce_loss(
                               logits, target, {.dice = {.include_background = false, .activation = losses::Activation::softmax, .batch = true}});
                         },
                         {.epochs = a.epochs, .iterations_per_epoch = a.iterations, .run_dir = a.run});
  trainer.set_forward([&](const Tensor& x) { return model->forward(x); });
  trainer.set_schedule([&](int64_t e) { return train::poly_lr(a.lr, e, a.epochs); });
  trainer.set_validation([&](nn::Module&) {
    double sum = 0;
    for (const data::Sample& s : val_samples) {
      const inference::LabelResult r = inference::sliding_window_labels(
          s.image.voxels, [&](const Tensor& x) { return model->forward(x); }, {.patch = config.patch, .overlap = 0.5});
      sum += mean_foreground_dice(r.labels, s.label.voxels, config.classes);
    }
    return std::map<std::string, double>{{"mean_dice", sum / double(val_samples.size())}};
  });
  std::printf("vox: training %s (%lld parameters) on %zu cases, validating on %zu; %lld epochs of %lld iterations, patch %lldx%lldx%lld, batch %lld, %d threads\n",
              config.arch.c_str(), static_cast<long long>(model->parameter_count()), train_samples.size(), val_samples.size(),
              static_cast<long long>(a.epochs), static_cast<long long>(a.iterations), static_cast<long long>(config.patch[0]),
              static_cast<long long>(config.patch[1]), static_cast<long long>(config.patch[2]), static_cast<long long>(a.batch), num_threads());
  if (a.resume) std::printf("vox: resuming at epoch %lld\n", static_cast<long long>(trainer.resume() + 1));
  trainer.fit();
  std::printf("vox: best validation mean Dice %.4f; run in %s (metrics.csv, checkpoint_best.safetensors, loss.png)\n", trainer.best(), a.run.c_str());
  return trainer.best();
}

struct InferArgs {
  std::string model, input, output, png, weights;
  std::string normalization;  // empty: the run's (none for --weights); or zscore, none
  double overlap = 0.5;
  bool tta = false, logits = false, no_window = false;
  RunConfig config;  // with --weights: the architecture given on the command line
};

// Predicts one image; writes the labels (or logits) with the input's geometry. Returns the labels.
inline Tensor infer_one(const InferArgs& a, const InputOptions& input) {
  RunConfig config = a.weights.empty() ? RunConfig::load(a.model) : a.config;
  if (!a.weights.empty()) config.normalization = "none";  // a PyTorch model's inputs are its user's business
  if (!a.normalization.empty()) config.normalization = a.normalization;
  auto model = make_model(config);
  std::map<std::string, Tensor> state;
  if (!a.weights.empty()) {
    state = io::load_safetensors(a.weights).tensors;  // a PyTorch/MONAI state_dict
  } else {
    std::string path = (fs::path(a.model) / "checkpoint_best.safetensors").string();
    if (!fs::exists(path)) path = (fs::path(a.model) / "checkpoint_latest.safetensors").string();
    VOX_CHECK(fs::exists(path), "infer", a.model, " has no checkpoint yet");
    const io::Safetensors st = io::load_safetensors(path);
    bool ema = false;  // the EMA weights, when the run kept them, are the ones validated
    for (const auto& [name, t] : st.tensors) ema = ema || name.rfind("ema.", 0) == 0;
    for (const auto& [name, t] : st.tensors)
      if (name.rfind(ema ? "ema." : "model.", 0) == 0) state[name.substr(name.find('.') + 1)] = t;
  }
  model->load_state_dict(state);
  model->eval();
  const io::Image original = read_image(a.input, input);
  const io::Image image = prepare(original, config);
  // A run of vox train saw voxels as vox stores them, [k, j, i]. A PyTorch model saw nibabel's
  // array, (i, j, k): its spatial axes are reversed, so the windows are transposed for it.
  const bool pytorch_order = !a.weights.empty();
  const inference::Predictor predict = [&](const Tensor& x) {
    if (!pytorch_order) return model->forward(x);
    return model->forward(x.permute({0, 3, 2, 1, 4}).contiguous()).permute({0, 3, 2, 1, 4}).contiguous();
  };
  inference::SlidingWindowOptions o{.patch = config.patch, .overlap = a.overlap};
  if (a.no_window)
    for (int ax = 0; ax < 3; ++ax) {  // one window: the whole (padded) volume
      const int64_t multiple = int64_t{1} << (config.channels.size() - 1), n = ax == 0 ? image.width() : ax == 1 ? image.height() : image.depth();
      o.patch[ax] = (n + multiple - 1) / multiple * multiple;
    }
  if (a.tta) o.mirrors = inference::all_mirrors();
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
    std::cerr << (terminal ? "\r" : "") << "vox: inference of " << a.input << " done in " << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
              << " s; slab accumulators peaked at " << r.accumulator_peak_bytes / (1 << 20) << " MiB\n";
  }
  if (config.spacing[0] > 0)  // back onto the input's grid
    out = data::resize(out, {original.width(), original.height(), original.depth()}, a.logits ? data::ResizeMode::linear : data::ResizeMode::nearest);
  out.spacing = original.spacing, out.origin = original.origin, out.direction = original.direction;
  io::write_nifti(a.output, out);
  if (!a.png.empty() && !a.logits) data::write_preview_png(a.png, original, &out);
  return out.voxels;
}

}  // namespace run_commands
