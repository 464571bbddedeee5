#pragma once
// Dynamic loss scaling for f16 training, with torch.amp.GradScaler's semantics and defaults:
// the loss is multiplied by the scale before backward, so that small f16 gradients do not
// flush to zero; before the optimizer steps, the gradients are divided back (unscale) and
// checked; a step whose gradients hold an inf or a NaN is skipped and the scale halves; after
// growth_interval steps in a row without one, the scale doubles (never to inf).
//
//   amp::GradScaler scaler;
//   scaler.scale(loss).backward();
//   scaler.unscale(optimizer);            // optional: clip the true gradients here
//   optim::clip_grad_norm(params, 1.0);
//   scaler.step(optimizer);               // skipped when a gradient is not finite
//   scaler.update();
//
// Beyond PyTorch, a skipped step says which parameter's gradient was the first non-finite one.
// bf16 has f32's range and needs no scaler.
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "vox/ops.hpp"
#include "vox/optim/optimizer.hpp"

namespace vox::amp {

struct GradScalerOptions {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;  // a disabled scaler passes everything through: scale 1, every step taken
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {}) : options_(options), scale_(static_cast<float>(options.init_scale)) {
    VOX_CHECK(options.init_scale > 0 && std::isfinite(options.init_scale), "GradScaler", "init_scale must be positive and finite, got ",
              options.init_scale);
    VOX_CHECK(options.growth_factor > 1.0, "GradScaler", "growth_factor must be > 1, got ", options.growth_factor);
    VOX_CHECK(options.backoff_factor > 0 && options.backoff_factor < 1.0, "GradScaler", "backoff_factor must be in (0, 1), got ",
              options.backoff_factor);
    VOX_CHECK(options.growth_interval >= 1, "GradScaler", "growth_interval must be >= 1, got ", options.growth_interval);
  }

  bool enabled() const { return options_.enabled; }
  // The current scale (1 when disabled), and the count of consecutive steps without an overflow.
  double get_scale() const { return options_.enabled ? scale_ : 1.0; }
  int64_t growth_tracker() const { return growth_tracker_; }

  // loss * scale, in f32 at least (a 16-bit loss is widened first, as PyTorch's 0-dim promotion does).
  Tensor scale(const Tensor& loss) const {
    if (!options_.enabled) return loss;
    const Tensor wide = loss.dtype() == DType::f16 || loss.dtype() == DType::bf16 ? cast(loss, DType::f32) : loss;
    return mul(wide, full({}, scale_, wide.dtype(), wide.device()));
  }

  // Divides the gradients of `optimizer`'s parameters by the scale, in place, and records
  // whether any was not finite. Once per optimizer between updates.
  void unscale(optim::Optimizer& optimizer) {
    if (!options_.enabled) return;
    PerOptimizer& state = per_optimizer_[&optimizer];
    VOX_CHECK(!state.unscaled, "GradScaler.unscale", "already called on this optimizer since the last update()");
    VOX_CHECK(!state.stepped, "GradScaler.unscale", "called after step() on this optimizer; call update() first");
    const float inverse = static_cast<float>(1.0 / static_cast<double>(scale_));  // as PyTorch: f64 reciprocal, to f32
    std::vector<Tensor> counts;  // per parameter with a gradient: how many of its values are not finite
    std::vector<size_t> which;
    const std::vector<Tensor>& params = optimizer.params();
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor g = params[i].grad();
      if (!g.defined()) continue;
      VOX_CHECK(g.dtype() != DType::f16, "GradScaler.unscale", "parameter ", i,
                " has an f16 gradient; keep parameters (the master weights) in f32 and let autocast cast them");
      NoGradGuard no_grad;
      const Tensor nan = ne(g, g);
      const Tensor inf = eq(abs(g), full({}, std::numeric_limits<double>::infinity(), g.dtype(), g.device()));
      counts.push_back(reshape(add(sum(cast(nan, DType::f32)), sum(cast(inf, DType::f32))), {1}));
      which.push_back(i);
      g.copy_from(mul(g, full({}, inverse, g.dtype(), g.device())));
    }
    state.unscaled = true;
    state.found_inf = false;
    state.first_nonfinite.reset();
    if (counts.empty()) return;
    const std::vector<double> host = concat(counts, 0).to_vector<double>();  // one read for all parameters
    for (size_t k = 0; k < host.size(); ++k)
      if (host[k] != 0) {
        state.found_inf = true;
        state.first_nonfinite = which[k];
        break;
      }
  }

  // Unscales (if unscale was not called) and steps the optimizer unless a gradient was not
  // finite. Returns whether it stepped.
  bool step(optim::Optimizer& optimizer) {
    if (!options_.enabled) {
      optimizer.step();
      return true;
    }
    PerOptimizer& state = per_optimizer_[&optimizer];
    VOX_CHECK(!state.stepped, "GradScaler.step", "already called on this optimizer since the last update()");
    if (!state.unscaled) unscale(optimizer);
    state.stepped = true;
    last_skipped_ = state.found_inf;
    last_nonfinite_ = state.first_nonfinite;
    if (state.found_inf) return false;
    optimizer.step();
    return true;
  }

  // Adjusts the scale from the steps since the last update (torch's _amp_update_scale_).
  void update() {
    if (!options_.enabled) return;
    bool found_inf = false, recorded = false;
    for (const auto& [optimizer, state] : per_optimizer_) {
      recorded = recorded || state.unscaled;
      found_inf = found_inf || state.found_inf;
    }
    VOX_CHECK(recorded, "GradScaler.update", "no inf checks were recorded before update(): call step() (or unscale()) first");
    if (found_inf) {
      scale_ = static_cast<float>(scale_ * options_.backoff_factor);
      growth_tracker_ = 0;
    } else if (growth_tracker_ + 1 == options_.growth_interval) {
      const float grown = static_cast<float>(scale_ * options_.growth_factor);
      if (std::isfinite(grown)) scale_ = grown;
      growth_tracker_ = 0;
    } else {
      ++growth_tracker_;
    }
    per_optimizer_.clear();
  }

  // Whether the last step() skipped its optimizer step, and the index (in the optimizer's
  // parameters) of the first parameter whose gradient was not finite.
  bool last_step_skipped() const { return last_skipped_; }
  std::optional<size_t> first_nonfinite_parameter() const { return last_nonfinite_; }

  // torch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker.
  std::map<std::string, Tensor> state_dict() const {
    return {{"scale", scalar(scale_, DType::f32)},
            {"growth_factor", scalar(options_.growth_factor, DType::f64)},
            {"backoff_factor", scalar(options_.backoff_factor, DType::f64)},
            {"growth_interval", scalar(static_cast<double>(options_.growth_interval), DType::i64)},
            {"_growth_tracker", scalar(static_cast<double>(growth_tracker_), DType::i64)}};
  }
  void load_state_dict(const std::map<std::string, Tensor>& state) {
    auto value = [&](const char* key) {
      const auto it = state.find(key);
      VOX_CHECK(it != state.end(), "GradScaler.load_state_dict", "missing key '", key, "'");
      VOX_CHECK(it->second.numel() == 1, "GradScaler.load_state_dict", "'", key, "' must hold one value, got shape ", it->second.shape());
      return it->second.to(DType::f64).item<double>();
    };
    GradScalerOptions o = options_;
    o.init_scale = value("scale");
    o.growth_factor = value("growth_factor");
    o.backoff_factor = value("backoff_factor");
    o.growth_interval = static_cast<int64_t>(value("growth_interval"));
    const double tracker = value("_growth_tracker");
    *this = GradScaler(o);
    growth_tracker_ = static_cast<int64_t>(tracker);
  }

 private:
  struct PerOptimizer {
    bool unscaled = false, stepped = false, found_inf = false;
    std::optional<size_t> first_nonfinite;
  };
  GradScalerOptions options_;
  float scale_;
  int64_t growth_tracker_ = 0;
  std::map<const optim::Optimizer*, PerOptimizer> per_optimizer_;
  bool last_skipped_ = false;
  std::optional<size_t> last_nonfinite_;
};

}  // namespace vox::amp
