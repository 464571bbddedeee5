// `vox train`: a segmentation network on patches (nnU-Net's loss, sampling and augmentation) or a
// classifier on whole volumes, through one Trainer. The run directory holds config.json (what is
// needed to rebuild the model and its preprocessing), train.json (the settings, reusable with
// --config), the trainer's metrics and checkpoints, and the curves. Under mpirun or srun it trains
// data-parallel (vox/dist): rank 0 writes the data, the cache and the run; every rank trains on its
// share of each batch; segmentation's validation cases are shared out among the ranks.
#pragma once

#include <cstdio>
#include <filesystem>
#include <memory>

#include <vox/data/classification.hpp>
#include <vox/data/dataset.hpp>
#include <vox/data/synthetic.hpp>
#include <vox/dist/init.hpp>
#include <vox/optim/adam.hpp>
#include <vox/quant/prune.hpp>
#include <vox/train/inference.hpp>
#include <vox/train/losses.hpp>
#include <vox/train/metrics.hpp>
#include <vox/train/trainer.hpp>

#include "run_config.hpp"

namespace run_commands {

inline double mean_foreground_dice(const Tensor& prediction, const Tensor& truth, int64_t classes) {
  const auto d = metrics::dice_per_class(prediction.to(DType::i64), truth.to(DType::i64), classes);
  return metrics::mean_ignoring_nan(std::vector<double>(d.begin() + 1, d.end()));
}

// A run's best weights (the EMA copy when the run kept one: that is what was validated).
inline std::map<std::string, Tensor> load_run_weights(const std::string& run) {
  std::string path = (fs::path(run) / "checkpoint_best.safetensors").string();
  if (!fs::exists(path)) path = (fs::path(run) / "checkpoint_latest.safetensors").string();
  VOX_CHECK(fs::exists(path), "infer", run, " has no checkpoint yet");
  const io::Safetensors st = io::load_safetensors(path);
  bool ema = false;
  for (const auto& [name, t] : st.tensors) ema = ema || name.rfind("ema.", 0) == 0;
  std::map<std::string, Tensor> state;
  for (const auto& [name, t] : st.tensors)
    if (name.rfind(ema ? "ema." : "model.", 0) == 0) state[name.substr(name.find('.') + 1)] = t;
  VOX_CHECK(!state.empty(), "infer", path, " holds no model weights; it is not a vox training checkpoint");
  return state;
}

// The network a run config names, pruned as vox prune pruned it (weights still to load).
inline nn::models::AnyModel make_run_model(const RunConfig& c) {
  nn::models::AnyModel m = make_model(c);
  if (c.pruning) quant::apply_pruning(quant::channel_groups(*m.module), c.pruning->kept);
  return m;
}

// The network training starts from: fresh, or the --init run's best weights (fine-tuning).
inline nn::models::AnyModel initial_model(const TrainArgs& a, const RunConfig& c) {
  nn::models::AnyModel m = make_run_model(c);
  if (!a.init.empty()) {
    m.module->load_state_dict(load_run_weights(a.init));
    std::printf("vox: starting from %s's weights\n", a.init.c_str());
  }
  return m;
}

// The model's forward for host tensors, run on `device`: the input goes there, the output comes back.
inline std::function<Tensor(const Tensor&)> forward_on(const nn::models::AnyModel& model, Device device) {
  if (device.is_cpu()) return model.forward;
  return [forward = model.forward, device](const Tensor& x) { return forward(x.to(device)).to(Device::cpu()); };
}

// Class probabilities [N, C] of prepared volumes, a few at a time, the model run on `device`.
inline Tensor classify_volumes(const nn::models::AnyModel& model, const std::vector<io::Image>& volumes, Device device) {
  const auto forward = forward_on(model, device);
  NoGradGuard no_grad;
  std::vector<Tensor> parts;
  constexpr size_t kBatch = 8;
  for (size_t start = 0; start < volumes.size(); start += kBatch) {
    std::vector<Tensor> items;
    for (size_t n = start; n < std::min(volumes.size(), start + kBatch); ++n) items.push_back(volumes[n].voxels.unsqueeze(0));
    parts.push_back(softmax(forward(concat(items, 0)), -1));
  }
  return concat(parts, 0);
}

// Accuracy, ROC AUC and cross-entropy of probabilities [N, C] against the classes.
inline std::map<std::string, double> classification_scores(const Tensor& probabilities, const std::vector<int64_t>& truth) {
  const int64_t n = probabilities.size(0), classes = probabilities.size(1);
  const std::vector<double> p = probabilities.to_vector<double>();
  int64_t right = 0;
  double loss = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double* row = p.data() + i * classes;
    right += std::max_element(row, row + classes) - row == truth[static_cast<size_t>(i)];
    loss -= std::log(std::max(row[truth[static_cast<size_t>(i)]], 1e-12));
  }
  return {{"accuracy", double(right) / double(n)},
          {"auc", metrics::roc_auc_of_probabilities(probabilities, truth)},
          {"val_loss", loss / double(n)}};
}

struct PreparedData {
  data::MsdDataset dataset;
  std::vector<data::DatasetCase> train_cases, val_cases;
};

// The dataset (the built-in one written first with --synthetic) split into training and validation.
inline PreparedData load_training_data(const TrainArgs& a) {
  std::string dir = a.data;
  const bool classify = a.config.task == "classify";
  if (a.synthetic) {
    dir = (fs::path(a.run) / "synthetic-data").string();
    if (!fs::exists(fs::path(dir) / "dataset.json")) {
      std::cerr << "vox: writing the built-in synthetic " << (classify ? "shapes" : "spheres") << " dataset to " << dir << "\n";
      if (classify) data::write_synthetic_shapes_dataset(dir, 64, 32, {.size = a.config.patch}, a.seed);
      else data::write_synthetic_dataset(dir, 12, 4, {.size = {64, 64, 64}}, a.seed);
    }
  }
  PreparedData p{data::load_msd_dataset(dir), {}, {}};
  const data::MsdDataset& d = p.dataset;
  if (d.classification() != classify)
    fail("train", dir, "/dataset.json gives ", d.classification() ? "a class number" : "a label map", " per case; use --task ",
         d.classification() ? "classify" : "segment");
  const int64_t val = std::max<int64_t>(1, std::llround(double(d.training.size()) * a.val_fraction));
  VOX_CHECK(static_cast<int64_t>(d.training.size()) > val, "train", d.training.size(), " cases are too few to hold ", val, " out for validation");
  p.train_cases.assign(d.training.begin(), d.training.end() - val);
  p.val_cases.assign(d.training.end() - val, d.training.end());
  return p;
}

inline void write_run_files(const TrainArgs& a, const RunConfig& config) {
  fs::create_directories(a.run);
  io::write_file_atomically((fs::path(a.run) / "config.json").string(), [&](std::ofstream& out) { out << config.to_json(); });
  io::write_file_atomically((fs::path(a.run) / "train.json").string(), [&](std::ofstream& out) { out << a.to_json(); });
}

inline void print_start(const TrainArgs& a, const RunConfig& c, const nn::models::AnyModel& m, size_t train, size_t val,
                        const dist::ProcessGroup& group) {
  const std::string threads = group.size() > 1 ? std::to_string(group.size()) + " ranks (" + group.backend() + ") x " + std::to_string(num_threads())
                                               : std::to_string(num_threads());
  std::printf("vox: training %s (%lld parameters) to %s on %zu cases, validating on %zu; %lld epochs of %lld iterations, %s "
              "%lldx%lldx%lld, batch %lld, %s threads, on %s%s\n",
              c.arch.c_str(), static_cast<long long>(m.module->parameter_count()), c.task.c_str(), train, val, static_cast<long long>(a.epochs),
              static_cast<long long>(a.iterations), c.task == "classify" ? "input" : "patch", static_cast<long long>(c.patch[0]),
              static_cast<long long>(c.patch[1]), static_cast<long long>(c.patch[2]), static_cast<long long>(a.batch), threads.c_str(), a.device.c_str(),
              a.cuda_graph ? " (CUDA graph)" : "");
}

// Runs the trainer, resuming first with --resume. Returns the best monitored value.
inline double fit(const TrainArgs& a, train::Trainer& trainer, const nn::models::AnyModel& model) {
  trainer.set_forward(model.forward);
  trainer.set_schedule([&](int64_t e) { return train::poly_lr(a.lr, e, a.epochs); });
  if (a.resume) std::printf("vox: resuming at epoch %lld\n", static_cast<long long>(trainer.resume() + 1));
  trainer.fit();
  return trainer.best();
}

inline double train_segmentation(const TrainArgs& a, const PreparedData& p, RunConfig config, dist::ProcessGroup& group) {
  const bool main_rank = group.rank() == 0;
  const data::MsdDataset& d = p.dataset;
  std::string modality = d.channels.empty() ? "" : d.channels[0];
  for (char& ch : modality) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  data::PreprocessOptions pre{.spacing = config.spacing, .normalization = data::Normalization::zscore, .crop_to_nonzero = false};
  if (modality == "CT") {
    config.normalization = "ct";
    std::vector<Tensor> images, labels;
    for (const auto& c : p.train_cases) images.push_back(io::read_nifti(c.image).image.voxels), labels.push_back(io::read_nifti(c.label).image.voxels);
    config.ct = data::foreground_intensities(images, labels);
    pre.normalization = data::Normalization::ct, pre.ct = config.ct;
  }
  manual_seed(a.seed);
  const nn::models::AnyModel model = initial_model(a, config);
  config.channels = model.channels;
  if (main_rank) write_run_files(a, config);
  const Device device = usable_device(a.device);
  model.module->to(device);  // before the optimizer takes the parameters
  data::PreprocessCache cache((fs::path(d.root) / ".vox-cache").string(), pre);
  if (main_rank) std::cerr << "vox: preprocessing " << d.training.size() << " cases (cached in " << cache.directory() << ")\n";
  std::vector<data::Sample> train_samples, val_samples;
  // rank 0 fills the cache; the others read it after
  if (!main_rank) group.barrier("the preprocessing cache is filled");
  for (const auto& c : p.train_cases) train_samples.push_back(cache.get(c, config.classes));
  for (const auto& c : p.val_cases) val_samples.push_back(cache.get(c, config.classes));
  if (main_rank && group.size() > 1) group.barrier("the preprocessing cache is filled");
  const data::PatchLoader loader(train_samples, {.patch = config.patch, .batch_size = a.batch, .augment = a.augment, .seed = a.seed});
  optim::Adam adam(model.module->parameters(), {.lr = a.lr, .weight_decay = 3e-5, .capturable = a.cuda_graph});
  train::Trainer trainer(*model.module, adam, loader,
                         [&group](const Tensor& logits, const Tensor& target) {
                           // nnU-Net's DC_and_CE: softmax, batch Dice over the foreground classes (of the
                           // global batch), plus cross-entropy
                           return losses::dice_ce_loss(logits, target,
                                                       {.dice = {.include_background = false, .activation = losses::Activation::softmax,
                                                                 .batch = true, .group = &group}});
                         },
                         {.epochs = a.epochs, .iterations_per_epoch = a.iterations, .run_dir = a.run, .device = device,
                          .cuda_graph = a.cuda_graph, .amp = parse_precision(a.amp, "--amp"), .group = &group});
  trainer.set_validation([&](nn::Module&) {
    // each rank its share of the cases; the sum and count over ranks
    double sum = 0, count = 0;
    const auto forward = forward_on(model, device);
    for (size_t n = static_cast<size_t>(group.rank()); n < val_samples.size(); n += static_cast<size_t>(group.size())) {
      const data::Sample& s = val_samples[n];
      const inference::LabelResult r = inference::sliding_window_labels(s.image.voxels, forward, {.patch = config.patch, .overlap = 0.5});
      sum += mean_foreground_dice(r.labels, s.label.voxels, config.classes), count += 1;
    }
    Tensor totals = from_vector(std::vector<double>{sum, count}, {2}).to(group.device());
    group.allreduce(totals, dist::ReduceOp::sum, "validation Dice").wait();
    const std::vector<double> t = totals.to(Device::cpu()).to_vector<double>();
    return std::map<std::string, double>{{"mean_dice", t[0] / t[1]}};
  });
  print_start(a, config, model, train_samples.size(), val_samples.size(), group);
  const double best = fit(a, trainer, model);
  std::printf("vox: best validation mean Dice %.4f; run in %s (metrics.csv, checkpoint_best.safetensors, loss.png)\n", best, a.run.c_str());
  return best;
}

// The best checkpoint on the held-out cases that have a class: accuracy, AUC and the confusion
// matrix, printed and written to the run's test_metrics.json.
inline void evaluate_held_out(const TrainArgs& a, const RunConfig& config, const nn::models::AnyModel& model,
                              const std::vector<data::DatasetCase>& cases, Device device) {
  model.module->load_state_dict(load_run_weights(a.run));
  model.module->eval();
  std::vector<io::Image> volumes;
  std::vector<int64_t> truth;
  for (const data::DatasetCase& c : cases)
    volumes.push_back(data::prepare_volume(io::read_nifti(c.image).image, config.patch)), truth.push_back(c.class_index);
  const Tensor probabilities = classify_volumes(model, volumes, device);
  const auto scores = classification_scores(probabilities, truth);
  const Tensor predicted = argmax(probabilities, -1, false);
  const auto matrix = metrics::confusion_matrix(predicted, from_vector(truth, {static_cast<int64_t>(truth.size())}), config.classes);
  std::string rows;
  std::printf("vox: %zu held-out volumes: accuracy %.4f, AUC %.4f; confusion matrix (rows: truth, columns: prediction):\n", cases.size(),
              scores.at("accuracy"), scores.at("auc"));
  for (size_t t = 0; t < matrix.size(); ++t) {
    std::printf("  %-10s", t < config.class_names.size() ? config.class_names[t].c_str() : std::to_string(t).c_str());
    for (int64_t n : matrix[t]) std::printf(" %5lld", static_cast<long long>(n));
    std::printf("\n");
    rows += std::string(t ? ", " : "") + json_list(matrix[t]);
  }
  io::write_file_atomically((fs::path(a.run) / "test_metrics.json").string(), [&](std::ofstream& out) {
    out << "{\"cases\": " << cases.size() << ", \"accuracy\": " << json_number(scores.at("accuracy")) << ", \"auc\": "
        << json_number(scores.at("auc")) << ", \"confusion_matrix\": [" << rows << "]}\n";
  });
}

inline double train_classifier(const TrainArgs& a, const PreparedData& p, RunConfig config, dist::ProcessGroup& group) {
  const bool main_rank = group.rank() == 0;
  config.normalization = "zscore";
  manual_seed(a.seed);
  const nn::models::AnyModel model = initial_model(a, config);
  config.channels = model.channels;
  if (main_rank) write_run_files(a, config);
  const Device device = usable_device(a.device);
  model.module->to(device);  // before the optimizer takes the parameters
  auto prepare = [&](const std::vector<data::DatasetCase>& cases, std::vector<io::Image>& volumes, std::vector<int64_t>& classes) {
    for (const data::DatasetCase& c : cases) {
      volumes.push_back(data::prepare_volume(io::read_nifti(c.image).image, config.patch));
      classes.push_back(c.class_index);
    }
  };
  if (main_rank) std::cerr << "vox: reading " << p.dataset.training.size() << " volumes at " << config.patch[0] << "x" << config.patch[1] << "x"
            << config.patch[2] << "\n";
  std::vector<io::Image> train_volumes, val_volumes;
  std::vector<int64_t> train_classes, val_classes;
  prepare(p.train_cases, train_volumes, train_classes);
  prepare(p.val_cases, val_volumes, val_classes);
  data::VolumeLoaderOptions lo{.batch_size = a.batch, .augment = a.augment, .seed = a.seed};
  lo.augmentation.p_rot90 = config.patch[0] == config.patch[1] ? 0.5 : 0.0;  // shapes do not care how they are turned
  const data::VolumeLoader loader(train_volumes, train_classes, lo);
  optim::Adam adam(model.module->parameters(), {.lr = a.lr, .weight_decay = 1e-5, .capturable = a.cuda_graph});
  train::Trainer trainer(*model.module, adam, loader,
                         [](const Tensor& logits, const Tensor& target) { return cross_entropy(logits, target, {}); },
                         {.epochs = a.epochs, .iterations_per_epoch = a.iterations, .monitor = "accuracy", .run_dir = a.run,
                          .device = device, .cuda_graph = a.cuda_graph, .amp = parse_precision(a.amp, "--amp"), .group = &group});
  // (every rank scores every validation volume: the AUC needs them all, and the set is small)
  trainer.set_validation(
      [&](nn::Module&) { return classification_scores(classify_volumes(model, val_volumes, device), val_classes); });
  print_start(a, config, model, train_volumes.size(), val_volumes.size(), group);
  const double best = fit(a, trainer, model);
  std::printf("vox: best validation accuracy %.4f; run in %s (metrics.csv, checkpoint_best.safetensors, loss.png)\n", best, a.run.c_str());
  std::vector<data::DatasetCase> held_out;
  for (const data::DatasetCase& c : p.dataset.test)
    if (c.class_index >= 0) held_out.push_back(c);
  if (!held_out.empty() && main_rank) evaluate_held_out(a, config, model, held_out, device);
  return best;
}

inline double train_ranks(const TrainArgs& a, dist::ProcessGroup& group);

// Trains; returns the best validation mean Dice (segmentation) or accuracy (classification).
inline double train_run(TrainArgs a) {
  a.check();
  (void)usable_device(a.device);  // an unusable device is refused before any data is read
  dist::Backend backend = dist::parse_backend(a.dist);
  // the choice follows the tensors' device: several ranks training on GPUs reduce over NCCL
  if (backend == dist::Backend::automatic && parse_device(a.device).is_cuda() && dist::launch_environment().several_ranks())
    backend = dist::Backend::nccl;
  const auto group = dist::init_process_group(backend, {.deadline = std::chrono::milliseconds(static_cast<int64_t>(a.dist_timeout * 1000))});
  const bool main_rank = group->rank() == 0;
  if (group->device().is_cuda()) a.device = group->device().str();  // NCCL: each rank its local GPU
  if (group->size() > 1 && a.batch % group->size() != 0)
    throw UsageError{"--batch " + std::to_string(a.batch) + " is the global batch: it must be a multiple of the " + std::to_string(group->size()) +
                     " ranks"};
  if (a.threads > 0) set_num_threads(a.threads);
  else if (group->local_size() > 1)  // the ranks on this machine share its cores
    set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / group->local_size()));
  if (!main_rank) std::freopen("/dev/null", "w", stdout);  // rank 0 reports; errors still reach stderr
  if (group->size() == 1) return train_ranks(a, *group);
  try {
    return train_ranks(a, *group);
  } catch (const std::exception& e) {
    // One rank's failure would leave its peers waiting in their next collective until the
    // deadline: end the job now (mpirun then stops the other ranks), saying which rank failed.
    std::fprintf(stderr, "vox train: rank %d of %d: %s\nvox train: ending the job\n", group->rank(), group->size(), e.what());
    std::fflush(stderr);
    std::_Exit(1);
  }
}

// Training on this rank of `group` (a world of one without a launcher).
inline double train_ranks(const TrainArgs& a, dist::ProcessGroup& group) {
  const bool main_rank = group.rank() == 0;
  // rank 0 writes the built-in data; the others read it after
  if (!main_rank) group.barrier("the training data is written");
  const PreparedData p = load_training_data(a);
  if (main_rank && group.size() > 1) group.barrier("the training data is written");
  RunConfig config = a.config;
  if (a.classes_given && a.config.classes != p.dataset.classes())
    throw UsageError{"--classes " + std::to_string(a.config.classes) + " disagrees with the dataset, whose labels give " +
                     std::to_string(p.dataset.classes()) + " classes (background included); leave --classes out"};
  config.classes = p.dataset.classes();
  config.class_names = p.dataset.label_names;
  config.in_channels = static_cast<int64_t>(p.dataset.channels.size());
  if (!a.init.empty()) {  // the network is the --init run's, pruned or not
    const RunConfig from = RunConfig::load(a.init);
    if (from.quantization) throw UsageError{"--init takes a float run; " + a.init + " is an INT8 run"};
    if (from.task != config.task || from.classes != config.classes || from.in_channels != config.in_channels)
      throw UsageError{"--init " + a.init + " is a " + from.task + " network of " + std::to_string(from.in_channels) + " input channels and " +
                       std::to_string(from.classes) + " classes; the data needs " + config.task + ", " + std::to_string(config.in_channels) +
                       " and " + std::to_string(config.classes)};
    config.arch = from.arch, config.channels = from.channels, config.pruning = from.pruning;
  }
  return config.task == "classify" ? train_classifier(a, p, config, group) : train_segmentation(a, p, config, group);
}

}  // namespace run_commands
