#pragma once
// Learning-rate schedules with PyTorch's formulas (torch.optim.lr_scheduler), as functions of the
// epoch (or step) count, so that a resumed run recomputes them exactly:
//   - poly_lr: base * (1 - min(t, total) / total)^power, torch's PolynomialLR and nnU-Net's
//     PolyLRScheduler (power 0.9);
//   - step_lr: base * gamma^floor(t / step_size), torch's StepLR;
//   - cosine_lr: a linear warm-up from warmup_start to base over `warmup` steps, then torch's
//     CosineAnnealingLR closed form from base to eta_min over the remaining steps;
//   - ReduceLROnPlateau: torch's, with its state (best, bad epochs, cooldown) saved and restored
//     for resume.
#include <cmath>
#include <limits>
#include <map>
#include <numbers>
#include <string>

#include "vox/core/error.hpp"

namespace vox::train {

inline double poly_lr(double base, int64_t t, int64_t total, double power = 0.9) {
  VOX_CHECK(total > 0, "poly_lr", "total must be positive, got ", total);
  const double done = static_cast<double>(std::min(std::max<int64_t>(t, 0), total)) / static_cast<double>(total);
  return base * std::pow(1.0 - done, power);
}

inline double step_lr(double base, int64_t t, int64_t step_size, double gamma = 0.1) {
  VOX_CHECK(step_size > 0, "step_lr", "step_size must be positive, got ", step_size);
  return base * std::pow(gamma, static_cast<double>(t / step_size));
}

inline double cosine_lr(double base, int64_t t, int64_t total, double eta_min = 0, int64_t warmup = 0, double warmup_start = 0) {
  VOX_CHECK(total > warmup && warmup >= 0, "cosine_lr", "total (", total, ") must exceed warmup (", warmup, ")");
  if (t < warmup) return warmup_start + (base - warmup_start) * static_cast<double>(t) / static_cast<double>(warmup);
  const double progress = static_cast<double>(std::min(t, total) - warmup) / static_cast<double>(total - warmup);
  return eta_min + (base - eta_min) * (1 + std::cos(std::numbers::pi * progress)) / 2;
}

struct PlateauOptions {
  bool maximize = false;  // mode "max" (a metric) or "min" (a loss)
  double factor = 0.1;
  int64_t patience = 10;
  double threshold = 1e-4;
  bool relative = true;   // threshold_mode "rel" or "abs"
  int64_t cooldown = 0;
  double min_lr = 0;
  double eps = 1e-8;
};

class ReduceLROnPlateau {
 public:
  ReduceLROnPlateau(double lr, PlateauOptions o = {}) : o_(o), lr_(lr) {
    VOX_CHECK(o.factor < 1 && o.factor > 0, "ReduceLROnPlateau", "factor must be in (0, 1), got ", o.factor);
    best_ = o.maximize ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  }
  // One epoch's metric; returns the learning rate to use next.
  double step(double metric) {
    if (better(metric)) {
      best_ = metric;
      bad_ = 0;
    } else {
      ++bad_;
    }
    if (cooldown_left_ > 0) {
      --cooldown_left_;
      bad_ = 0;
    }
    if (bad_ > o_.patience) {
      const double reduced = std::max(lr_ * o_.factor, o_.min_lr);
      if (lr_ - reduced > o_.eps) lr_ = reduced;
      cooldown_left_ = o_.cooldown;
      bad_ = 0;
    }
    return lr_;
  }
  double learning_rate() const { return lr_; }

  std::map<std::string, double> state() const {
    return {{"lr", lr_}, {"best", best_}, {"bad", double(bad_)}, {"cooldown_left", double(cooldown_left_)}};
  }
  void load_state(const std::map<std::string, double>& s) {
    lr_ = s.at("lr"), best_ = s.at("best"), bad_ = static_cast<int64_t>(s.at("bad")), cooldown_left_ = static_cast<int64_t>(s.at("cooldown_left"));
  }

 private:
  bool better(double a) const {
    if (o_.maximize) return o_.relative ? a > best_ * (1 + o_.threshold) : a > best_ + o_.threshold;
    return o_.relative ? a < best_ * (1 - o_.threshold) : a < best_ - o_.threshold;
  }
  PlateauOptions o_;
  double lr_, best_;
  int64_t bad_ = 0, cooldown_left_ = 0;
};

}  // namespace vox::train
