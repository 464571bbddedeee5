#pragma once
// The training loop: epochs of iterations over a BatchSource (PatchLoader, VolumeLoader), validation, checkpoints, resume.
//
//   - Each iteration: the loss of a batch, backward; every `accumulate` iterations the gradients
//     are clipped to `clip_norm` (nnU-Net's 12; 0: off) and the optimizer steps. An optional EMA
//     of the weights (decay in (0, 1)) is kept and validated instead of the raw weights.
//   - The learning rate of each epoch comes from the schedule (a function of the epoch), or from
//     ReduceLROnPlateau fed with the monitored validation value.
//   - After each `validate_every` epochs, `validate` returns the metrics (name -> value); the
//     monitored one decides the best checkpoint and early stopping (patience, min_delta).
//   - The run directory holds metrics.csv and metrics.json (one row per epoch: epoch, lr, loss,
//     seconds, the validation metrics), checkpoint_latest.safetensors and
//     checkpoint_best.safetensors (model, optimizer, EMA, scheduler state, epoch; each written to a
//     temporary file and renamed) and loss.png / <monitor>.png curves.
//   - Resume: resume() loads checkpoint_latest and the epoch after it continues. Batches are a
//     pure function of (loader seed, epoch, index), so a resumed run sees the batches the
//     uninterrupted run would have, and (with deterministic kernels) follows its trajectory.
//   - A progress line on the terminal (not in logs): epoch, iteration, loss, it/s and the ETA;
//     one summary line per epoch everywhere.
//   - On a GPU (`device`; move the model there before building its optimizer): batches are
//     moved to it, checkpoints are written from host copies. With `cuda_graph`, after
//     `graph_warmup` eager iterations the iteration (zero_grad, forward, loss, backward, clip,
//     step) is captured into a CUDA graph and replayed with one launch (vox/core/cuda_graph.hpp):
//     batches must keep one shape, `accumulate` must be 1 and the optimizer capturable.
//   - Data parallel (`group` of several ranks, vox/dist): each rank trains on its share of every
//     batch (data::ShardedBatches), DataParallel averages the gradients over ranks as backward
//     runs (no_sync within gradient accumulation), and the loss is averaged over ranks. Every
//     rank runs validation (the callback may shard it over the group) and holds the same model;
//     rank 0 alone prints and writes the run directory. Resuming reads the same checkpoint on
//     every rank, whatever their number.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vox/amp/autocast.hpp"
#include "vox/amp/grad_scaler.hpp"
#include "vox/core/cuda_graph.hpp"
#include "vox/data/dataset.hpp"
#include "vox/data/shard.hpp"
#include "vox/dist/data_parallel.hpp"
#include "vox/io/json.hpp"
#include "vox/io/plot.hpp"
#include "vox/io/safetensors.hpp"
#include "vox/nn/module.hpp"
#include "vox/optim/clip.hpp"
#include "vox/optim/optimizer.hpp"
#include "vox/train/schedulers.hpp"

namespace vox::train {

struct TrainerOptions {
  int64_t epochs = 100;
  int64_t iterations_per_epoch = 250;  // nnU-Net's
  int64_t accumulate = 1;
  double clip_norm = 12.0;             // 0: no clipping
  double ema_decay = 0.0;              // 0: no EMA
  int64_t validate_every = 1;
  std::string monitor = "mean_dice";
  bool maximize = true;
  int64_t early_stopping_patience = 0;  // validations without improvement; 0: off
  double min_delta = 0.0;
  std::string run_dir;                  // empty: nothing written
  bool progress = true;                 // the terminal line
  Device device = Device::cpu();        // where the model is, and batches go
  bool cuda_graph = false;              // on CUDA: replay a captured iteration
  int64_t graph_warmup = 3;             // eager iterations before the capture
  // Mixed precision: bf16 or f16 runs the forward pass, the loss and validation under autocast
  // (vox/amp); f16 also scales the loss (GradScaler, `scaler`'s settings), whose scale and skipped
  // steps go to metrics.csv and whose state to the checkpoint. Empty: f32.
  std::optional<DType> amp;
  amp::GradScalerOptions scaler{};
  // Data parallelism: the ranks' process group (none, or a world of one: a single process).
  dist::ProcessGroup* group = nullptr;
  dist::DataParallelOptions data_parallel{};
};

struct EpochRecord {
  int64_t epoch = 0;
  double lr = 0, loss = 0, seconds = 0;
  std::map<std::string, double> metrics;
};

class Trainer {
 public:
  using LossFn = std::function<Tensor(const Tensor& logits, const Tensor& target)>;
  using Validate = std::function<std::map<std::string, double>(nn::Module& model)>;
  using Schedule = std::function<double(int64_t epoch)>;

  Trainer(nn::Module& model, optim::Optimizer& optimizer, const data::BatchSource& loader, LossFn loss, TrainerOptions o)
      : model_(model), optimizer_(optimizer), loader_(loader), loss_(std::move(loss)), o_(std::move(o)) {
    VOX_CHECK(o_.epochs >= 1 && o_.iterations_per_epoch >= 1 && o_.accumulate >= 1 && o_.validate_every >= 1, "Trainer",
              "epochs, iterations_per_epoch, accumulate and validate_every must be positive");
    VOX_CHECK(o_.ema_decay == 0 || (o_.ema_decay > 0 && o_.ema_decay < 1), "Trainer", "ema_decay must be 0 or in (0, 1)");
    VOX_CHECK(!o_.cuda_graph || o_.device.is_cuda(), "Trainer", "cuda_graph needs a CUDA device, not ", o_.device);
    VOX_CHECK(!o_.cuda_graph || (o_.accumulate == 1 && o_.graph_warmup >= 1), "Trainer",
              "cuda_graph replays whole steps: it needs accumulate = 1 and graph_warmup >= 1");
    VOX_CHECK(!o_.amp || *o_.amp == DType::bf16 || *o_.amp == DType::f16, "Trainer", "amp takes bf16 or f16, got ", *o_.amp);
    VOX_CHECK(!(o_.cuda_graph && o_.amp == DType::f16), "Trainer",
              "cuda_graph cannot capture f16's loss scaler, which decides on the host whether to step; use bf16 or eager steps");
    amp::GradScalerOptions scaler_options = o_.scaler;
    scaler_options.enabled = o_.amp == DType::f16;  // bf16 has f32's range: no scaling
    scaler_ = amp::GradScaler(scaler_options);
    base_lr_ = optimizer_.learning_rate();
    if (o_.group && o_.group->size() > 1) {
      VOX_CHECK(!o_.cuda_graph, "Trainer", "cuda_graph does not capture data-parallel steps; leave it off with several ranks");
      shard_ = std::make_unique<data::ShardedBatches>(loader_, o_.group->rank(), o_.group->size());
      data_parallel_ = std::make_unique<dist::DataParallel>(model_, *o_.group, o_.data_parallel);
    }
    main_rank_ = !o_.group || o_.group->rank() == 0;
    if (!main_rank_) o_.progress = false;
    if (!o_.run_dir.empty() && main_rank_) std::filesystem::create_directories(o_.run_dir);
  }

  // DataParallel, when training on several ranks.
  const dist::DataParallel* data_parallel() const { return data_parallel_.get(); }

  void set_schedule(Schedule s) { schedule_ = std::move(s); }
  void set_plateau(ReduceLROnPlateau p) { plateau_ = std::move(p); }
  void set_validation(Validate v) { validate_ = std::move(v); }
  // The model's forward, e.g. [&](const Tensor& x) { return net.forward(x); }.
  void set_forward(std::function<Tensor(const Tensor&)> f) { forward_fn_ = std::move(f); }

  // Continues from the run directory's latest checkpoint. Returns the epoch it resumes at.
  int64_t resume() {
    const std::string path = checkpoint_path("latest");
    VOX_CHECK(std::filesystem::exists(path), "Trainer", "nothing to resume: ", path, " does not exist");
    const io::Safetensors st = io::load_safetensors(path);
    std::map<std::string, Tensor> model, optimizer, ema, scaler;
    for (const auto& [name, t] : st.tensors) {
      if (name.rfind("scaler.", 0) == 0) scaler[name.substr(7)] = t;
      else if (name.rfind("model.", 0) == 0) model[name.substr(6)] = t;
      else if (name.rfind("optimizer.", 0) == 0) optimizer[name.substr(10)] = t;
      else if (name.rfind("ema.", 0) == 0) ema[name.substr(4)] = t;
    }
    model_.load_state_dict(model);
    optimizer_.load_state_dict(optimizer);
    if (!ema.empty()) {
      ema_ = ema;
      for (auto& [name, t] : ema_) t = t.to(o_.device);
    }
    if (!scaler.empty()) scaler_.load_state_dict(scaler);  // resume keeps the loss scale
    auto meta = [&](const std::string& key, bool allow_nan = false) {
      const auto it = st.metadata.find(key);
      VOX_CHECK(it != st.metadata.end(), "Trainer", path, " lacks the metadata \"", key, "\"; it is not a vox training checkpoint");
      if (allow_nan && (it->second == "nan" || it->second == "-nan")) return std::numeric_limits<double>::quiet_NaN();
      if (allow_nan && (it->second == "inf" || it->second == "-inf")) return (it->second[0] == '-' ? -1.0 : 1.0) * std::numeric_limits<double>::infinity();
      return io::parse_number(it->second, path + " metadata " + key);
    };
    next_epoch_ = static_cast<int64_t>(meta("epoch")) + 1;
    best_ = meta("best", true);
    since_best_ = static_cast<int64_t>(meta("since_best"));
    if (plateau_) {
      std::map<std::string, double> s;
      for (const char* k : {"lr", "best", "bad", "cooldown_left"}) s[k] = meta(std::string("plateau.") + k, true);
      plateau_->load_state(s);
    }
    history_ = read_history();
    return next_epoch_;
  }

  // Runs the remaining epochs. Returns every epoch's record (those before a resume included).
  const std::vector<EpochRecord>& fit() {
    const auto start = std::chrono::steady_clock::now();
    int64_t done_iterations = 0;
    const int64_t total_iterations = (o_.epochs - next_epoch_) * o_.iterations_per_epoch;
    for (int64_t epoch = next_epoch_; epoch < o_.epochs; ++epoch) {
      const double lr = plateau_ ? plateau_->learning_rate() : schedule_ ? schedule_(epoch) : base_lr_;
      optimizer_.set_learning_rate(lr);
      model_.train();
      const auto epoch_start = std::chrono::steady_clock::now();
      double loss_sum = 0;
      int64_t skipped_steps = 0;
      auto batches = (shard_ ? static_cast<const data::BatchSource&>(*shard_) : loader_).epoch(epoch, o_.iterations_per_epoch);
      if (!graph_) optimizer_.zero_grad();
      for (int64_t it = 0; it < o_.iterations_per_epoch; ++it) {
        const data::Batch b = batches.next();
        const Tensor image = b.image.to(o_.device), label = b.label.to(DType::i64).to(o_.device);
        double value = 0;
        if (o_.cuda_graph && done_iterations >= o_.graph_warmup) {
          value = replay_iteration(image, label);
          check_finite(value, epoch, it);
        } else {
          Tensor loss;
          if (data_parallel_) data_parallel_->before_forward();
          {
            amp::Autocast autocast(o_.device, o_.amp, o_.amp.has_value());
            loss = loss_(forward(image), label);
          }
          value = loss.item<double>();
          if (o_.accumulate > 1) loss = div(loss, scalar(static_cast<double>(o_.accumulate)));
          const bool steps = (it + 1) % o_.accumulate == 0 || it + 1 == o_.iterations_per_epoch;
          if (data_parallel_ && !steps) {
            auto local = data_parallel_->no_sync();  // accumulate; the stepping iteration reduces the sums
            scaler_.scale(loss).backward();
          } else {
            scaler_.scale(loss).backward();
          }
          value = mean_over_ranks(value);  // every rank sees the same loss, and fails together
          check_finite(value, epoch, it);
          if (steps) {
            if (o_.clip_norm > 0) {
              scaler_.unscale(optimizer_);  // clip the true gradients
              optim::clip_grad_norm(optimizer_.params(), o_.clip_norm);
            }
            const bool stepped = scaler_.step(optimizer_);
            scaler_.update();
            if (!stepped) {
              ++skipped_steps;
              note_skipped_step(epoch, it);  // after the update: it reports the lowered scale
            }
            optimizer_.zero_grad();
            update_ema();
          }
        }
        loss_sum += value;
        ++done_iterations;
        if (o_.progress && on_terminal()) print_progress(epoch, it + 1, loss_sum / double(it + 1), start, done_iterations, total_iterations);
      }
      EpochRecord record{epoch, lr, loss_sum / double(o_.iterations_per_epoch), seconds_since(epoch_start), {}};
      bool improved = false;
      if (validate_ && ((epoch + 1) % o_.validate_every == 0 || epoch + 1 == o_.epochs)) {
        {
          amp::Autocast autocast(o_.device, o_.amp, o_.amp.has_value());
          record.metrics = validate_with_ema();
        }
        const auto found = record.metrics.find(o_.monitor);
        VOX_CHECK(found != record.metrics.end(), "Trainer", "validation returned no \"", o_.monitor, "\" to monitor");
        const double value = found->second;
        improved = std::isnan(best_) || (o_.maximize ? value > best_ + o_.min_delta : value < best_ - o_.min_delta);
        if (improved) best_ = value, since_best_ = 0;
        else ++since_best_;
        if (plateau_) plateau_->step(value);
      }
      if (scaler_.enabled()) {  // the scale's history, beside the epoch's other numbers
        record.metrics["amp_scale"] = scaler_.get_scale();
        record.metrics["amp_skipped_steps"] = static_cast<double>(skipped_steps);
      }
      history_.push_back(record);
      if (o_.progress) print_epoch(record);
      if (!o_.run_dir.empty() && main_rank_) {
        write_history();
        save_checkpoint("latest", epoch);
        if (improved) save_checkpoint("best", epoch);
        plot_curves();
      }
      if (o_.early_stopping_patience > 0 && since_best_ >= o_.early_stopping_patience) {
        if (o_.progress) std::printf("early stopping: no improvement of %s for %lld validations\n", o_.monitor.c_str(), static_cast<long long>(since_best_));
        break;
      }
    }
    return history_;
  }

  const std::vector<EpochRecord>& history() const { return history_; }
  double best() const { return best_; }
  std::string checkpoint_path(const std::string& which) const {
    return (std::filesystem::path(o_.run_dir) / ("checkpoint_" + which + ".safetensors")).string();
  }

 private:
  // A step the loss scaler skipped: which parameter's gradient was the first not finite.
  void note_skipped_step(int64_t epoch, int64_t it) const {
    if (!o_.progress) return;
    std::string name = "?";
    if (const auto index = scaler_.first_nonfinite_parameter()) {
      const Tensor& p = optimizer_.params()[*index];
      name = "parameter " + std::to_string(*index);
      for (const auto& named : model_.named_parameters())
        if (named.tensor->is_same(p)) name = named.name;
    }
    if (on_terminal()) std::fprintf(stderr, "\n");
    std::printf("epoch %lld, iteration %lld: step skipped, the gradient of %s is not finite; loss scale now %g\n",
                static_cast<long long>(epoch + 1), static_cast<long long>(it + 1), name.c_str(), scaler_.get_scale());
    std::fflush(stdout);
  }

  double mean_over_ranks(double value) const {
    if (!data_parallel_) return value;
    Tensor t = from_vector(std::vector<double>{value}, {1}).to(o_.group->device());
    o_.group->allreduce(t, dist::ReduceOp::sum, "loss").wait();
    return t.to(Device::cpu()).to_vector<double>()[0] / double(o_.group->size());
  }

  static void check_finite(double loss, int64_t epoch, int64_t it) {
    VOX_CHECK(std::isfinite(loss), "Trainer", "the loss is ", loss, " at epoch ", epoch, ", iteration ", it,
              "; lower the learning rate or check the data");
  }

  // One iteration replayed from a CUDA graph, captured on the first call: the batch is copied
  // into the captured input tensors, the graph runs zero_grad, forward, loss, backward, the clip
  // and the optimizer's step, and the loss is read from the captured loss tensor.
  double replay_iteration(const Tensor& image, const Tensor& label) {
    if (!graph_) {
      graph_ = std::make_unique<CudaGraph>(o_.device.index);
      graph_image_ = image.clone();  // allocated before the capture: their addresses stay put
      graph_label_ = label.clone();
      graph_->capture([&] {  // the eager iteration before it left the gradients zeroed
        optimizer_.zero_grad();
        {
          amp::Autocast autocast(o_.device, o_.amp, o_.amp.has_value());
          graph_loss_ = loss_(forward(graph_image_), graph_label_);
        }
        graph_loss_.backward();
        if (o_.clip_norm > 0) optim::clip_grad_norm_on_device(optimizer_.params(), o_.clip_norm);
        optimizer_.step();
      });
      if (o_.progress) std::printf("captured the training iteration into a CUDA graph; replaying it from here on\n");
    } else {
      VOX_CHECK(image.shape() == graph_image_.shape() && label.shape() == graph_label_.shape(), "Trainer",
                "cuda_graph replays one batch shape: captured image ", graph_image_.shape(), " and label ", graph_label_.shape(),
                ", got ", image.shape(), " and ", label.shape());
      graph_image_.copy_from(image);
      graph_label_.copy_from(label);
    }
    graph_->replay();
    update_ema();
    return graph_loss_.item<double>();
  }

  Tensor forward(const Tensor& x) {
    VOX_CHECK(forward_fn_ != nullptr, "Trainer", "call set_forward first (models are class templates without a virtual forward)");
    return forward_fn_(x);
  }

  void update_ema() {
    if (o_.ema_decay == 0) return;
    NoGradGuard no_grad;
    const auto state = model_.state_dict();
    if (ema_.empty()) {
      for (const auto& [name, t] : state) ema_[name] = t.detach().clone();
      return;
    }
    for (const auto& [name, t] : state) {
      Tensor& e = ema_[name];
      if (!is_floating(t.dtype())) {
        e = t.detach().clone();  // counters (batch norm's num_batches_tracked) are copied
        continue;
      }
      e = add(mul(e, scalar(o_.ema_decay, e.dtype())), mul(t.detach(), scalar(1 - o_.ema_decay, e.dtype())));
    }
  }

  std::map<std::string, double> validate_with_ema() {
    model_.eval();
    NoGradGuard no_grad;
    if (ema_.empty()) {
      auto m = validate_(model_);
      model_.train();
      return m;
    }
    const auto raw = model_.state_dict();
    model_.load_state_dict(ema_);
    auto m = validate_(model_);
    model_.load_state_dict(raw);
    model_.train();
    return m;
  }

  void save_checkpoint(const std::string& which, int64_t epoch) {
    std::map<std::string, Tensor> tensors;
    for (const auto& [name, t] : model_.state_dict()) tensors["model." + name] = t.to(Device::cpu());
    for (const auto& [name, t] : optimizer_.state_dict()) tensors["optimizer." + name] = t.to(Device::cpu());
    for (const auto& [name, t] : ema_) tensors["ema." + name] = t.to(Device::cpu());
    if (scaler_.enabled())
      for (const auto& [name, t] : scaler_.state_dict()) tensors["scaler." + name] = t;
    std::map<std::string, std::string> meta{{"epoch", std::to_string(epoch)}, {"best", number(best_)}, {"since_best", std::to_string(since_best_)},
                                            {"monitor", o_.monitor}, {"amp", o_.amp ? std::string(dtype_name(*o_.amp)) : "f32"}};
    if (plateau_)
      for (const auto& [k, v] : plateau_->state()) meta["plateau." + k] = number(v);
    io::save_safetensors(checkpoint_path(which), tensors, meta);  // written to a temporary file, then renamed
  }

  static std::string number(double v) {
    char text[40];
    std::snprintf(text, sizeof(text), "%.17g", v);
    return text;
  }

  std::vector<std::string> metric_names() const {
    std::vector<std::string> names;
    for (const EpochRecord& r : history_)
      for (const auto& [k, v] : r.metrics)
        if (std::find(names.begin(), names.end(), k) == names.end()) names.push_back(k);
    return names;
  }

  void write_history() const {
    const auto names = metric_names();
    io::write_file_atomically((std::filesystem::path(o_.run_dir) / "metrics.csv").string(), [&](std::ofstream& out) {
      out << "epoch,lr,loss,seconds";
      for (const auto& n : names) out << "," << n;
      out << "\n";
      for (const EpochRecord& r : history_) {
        out << r.epoch << "," << number(r.lr) << "," << number(r.loss) << "," << number(r.seconds);
        for (const auto& n : names) {
          const auto it = r.metrics.find(n);
          out << "," << (it == r.metrics.end() ? std::string() : number(it->second));
        }
        out << "\n";
      }
    });
    io::write_file_atomically((std::filesystem::path(o_.run_dir) / "metrics.json").string(), [&](std::ofstream& out) {
      out << "[\n";
      for (size_t i = 0; i < history_.size(); ++i) {
        const EpochRecord& r = history_[i];
        out << "  {\"epoch\": " << r.epoch << ", \"lr\": " << number(r.lr) << ", \"loss\": " << number(r.loss) << ", \"seconds\": " << number(r.seconds);
        for (const auto& [k, v] : r.metrics) out << ", " << json::quote(k) << ": " << (std::isfinite(v) ? number(v) : std::string("null"));
        out << "}" << (i + 1 < history_.size() ? "," : "") << "\n";
      }
      out << "]\n";
    });
  }

  // metrics.csv back into records (for resume).
  std::vector<EpochRecord> read_history() const {
    std::vector<EpochRecord> out;
    std::ifstream in((std::filesystem::path(o_.run_dir) / "metrics.csv").string());
    std::string line;
    if (!std::getline(in, line)) return out;
    std::vector<std::string> header = split(line);
    while (std::getline(in, line)) {
      const std::vector<std::string> cells = split(line);
      const std::string where = o_.run_dir + "/metrics.csv";
      VOX_CHECK(cells.size() >= 4, "Trainer", where, ": the row \"", line, "\" has fewer than 4 cells");
      EpochRecord r;
      r.epoch = static_cast<int64_t>(io::parse_number(cells[0], where + " epoch"));
      r.lr = io::parse_number(cells[1], where + " lr"), r.loss = io::parse_number(cells[2], where + " loss");
      r.seconds = io::parse_number(cells[3], where + " seconds");
      for (size_t c = 4; c < cells.size() && c < header.size(); ++c)
        if (!cells[c].empty()) r.metrics[header[c]] = io::parse_number(cells[c], where + " " + header[c]);
      if (r.epoch < next_epoch_) out.push_back(r);
    }
    return out;
  }
  static std::vector<std::string> split(const std::string& line) {
    std::vector<std::string> cells;
    size_t start = 0;
    while (true) {
      const size_t comma = line.find(',', start);
      cells.push_back(line.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return cells;
  }

  // loss.png and <monitor>.png, against the epoch counted from 1 as printed
  void plot_curves() const {
    std::vector<std::pair<double, double>> loss, monitored;
    for (const EpochRecord& r : history_) {
      loss.push_back({double(r.epoch + 1), r.loss});
      const auto it = r.metrics.find(o_.monitor);
      if (it != r.metrics.end()) monitored.push_back({double(r.epoch + 1), it->second});
    }
    for (const auto& [name, points] : {std::pair{std::string("loss"), loss}, std::pair{o_.monitor, monitored}})
      if (points.size() >= 2)
        io::write_line_plot((std::filesystem::path(o_.run_dir) / (name + ".png")).string(), points,
                            {.title = (name == "loss" ? "training loss" : "validation " + name)});
  }

  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }

  void print_progress(int64_t epoch, int64_t it, double loss, std::chrono::steady_clock::time_point start, int64_t done, int64_t total) const {
    const double elapsed = seconds_since(start), rate = double(done) / std::max(elapsed, 1e-9);
    std::fprintf(stderr, "\repoch %lld/%lld  it %lld/%lld  loss %.4f  %.2f it/s  eta %.0f s   ", static_cast<long long>(epoch + 1),
                 static_cast<long long>(o_.epochs), static_cast<long long>(it), static_cast<long long>(o_.iterations_per_epoch), loss, rate,
                 double(total - done) / std::max(rate, 1e-9));
    std::fflush(stderr);
  }

  // The per-iteration line redraws itself: only on a terminal, not into logs.
  static bool on_terminal() { return isatty(fileno(stderr)) != 0; }

  void print_epoch(const EpochRecord& r) const {
    if (on_terminal()) std::fprintf(stderr, "\n");
    std::printf("epoch %lld: loss %.4f, lr %.3g, %.1f s", static_cast<long long>(r.epoch + 1), r.loss, r.lr, r.seconds);
    for (const auto& [k, v] : r.metrics) std::printf(", %s %.4f", k.c_str(), v);
    std::printf("\n");
    std::fflush(stdout);
  }

  nn::Module& model_;
  optim::Optimizer& optimizer_;
  const data::BatchSource& loader_;
  LossFn loss_;
  TrainerOptions o_;
  Schedule schedule_;
  std::optional<ReduceLROnPlateau> plateau_;
  Validate validate_;
  std::function<Tensor(const Tensor&)> forward_fn_;
  std::map<std::string, Tensor> ema_;
  amp::GradScaler scaler_;            // enabled for f16 only
  std::unique_ptr<CudaGraph> graph_;  // with cuda_graph, once captured
  Tensor graph_image_, graph_label_, graph_loss_;
  std::unique_ptr<data::ShardedBatches> shard_;           // with several ranks
  std::unique_ptr<dist::DataParallel> data_parallel_;  // with several ranks
  bool main_rank_ = true;
  std::vector<EpochRecord> history_;
  double base_lr_ = 0, best_ = std::numeric_limits<double>::quiet_NaN();
  int64_t next_epoch_ = 0, since_best_ = 0;
};

}  // namespace vox::train
