#pragma once
// Adam and AdamW, as torch.optim.Adam / AdamW (amsgrad off):
//   Adam:  g = g + wd p.   AdamW: p = p (1 - lr wd).
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
#include <cmath>

#include "vox/optim/optimizer.hpp"

namespace vox::optim {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;  // true: AdamW
  // On CUDA: step counts and learning rate in device memory, so that the step can be captured
  // into a CUDA graph (vox/core/cuda_graph.hpp). Results are those of the eager step.
  bool capturable = false;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions o) : Optimizer(std::move(params)), o_(o) {
    VOX_CHECK(o.lr >= 0 && o.eps >= 0 && o.weight_decay >= 0, "Adam", "lr, eps and weight_decay must be >= 0");
    VOX_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "Adam", "betas must be in [0, 1), got ", o.beta1,
              " and ", o.beta2);
    lr_ = o.lr;
    m_ = state_like_params();
    v_ = state_like_params();
    steps_.assign(params_.size(), 0);
  }
  void step() override {
    if (!params_.empty() && params_[0].device().is_cuda()) return step_cuda();
    for_each_parameter([&](auto* p, const auto* g, size_t i, int64_t n) {
      using T = std::remove_pointer_t<decltype(p)>;
      const int64_t t = ++steps_[i];
      T* m = m_[i].template data<T>();
      T* v = v_[i].template data<T>();
      const double correction1 = 1 - std::pow(o_.beta1, static_cast<double>(t));
      const double correction2 = 1 - std::pow(o_.beta2, static_cast<double>(t));
      const T step_size = static_cast<T>(lr_ / correction1), root2 = static_cast<T>(std::sqrt(correction2));
      const T b1 = static_cast<T>(o_.beta1), b2 = static_cast<T>(o_.beta2), eps = static_cast<T>(o_.eps);
      const T wd = static_cast<T>(o_.weight_decay), decay = static_cast<T>(1 - lr_ * o_.weight_decay);
      const bool decoupled = o_.decoupled_weight_decay;
      parallel_for(0, n, 32768, [&](int64_t b, int64_t e) {
        for (int64_t j = b; j < e; ++j) {
          T grad = g[j];
          if (decoupled) p[j] *= decay;
          else grad += wd * p[j];
          m[j] = b1 * m[j] + (1 - b1) * grad;
          v[j] = b2 * v[j] + (1 - b2) * grad * grad;
          p[j] -= step_size * m[j] / (std::sqrt(v[j]) / root2 + eps);
        }
      });
    });
  }

  std::map<std::string, Tensor> state_dict() const override {
    std::map<std::string, Tensor> s = Optimizer::state_dict();
    const std::vector<int64_t> steps = step_counts();
    for (size_t i = 0; i < params_.size(); ++i) {
      s[key(i, "exp_avg")] = m_[i].clone();
      s[key(i, "exp_avg_sq")] = v_[i].clone();
      s[key(i, "step")] = full({}, static_cast<double>(steps[i]), DType::f64);
    }
    return s;
  }
  void load_state_dict(const std::map<std::string, Tensor>& state) override {
    Optimizer::load_state_dict(state);
    for (size_t i = 0; i < params_.size(); ++i) {
      m_[i].copy_from(entry(state, key(i, "exp_avg"), m_[i].shape()));
      v_[i].copy_from(entry(state, key(i, "exp_avg_sq"), v_[i].shape()));
      steps_[i] = static_cast<int64_t>(entry(state, key(i, "step"), {}).item<double>());
    }
    std::vector<double> schedule{lr_};  // a capturable schedule on the device takes the loaded state in place
    for (int64_t t : steps_) schedule.push_back(static_cast<double>(t));
    rewrite_schedule(schedule);
  }

 private:
  // The step counts: a capturable optimizer's, once it has stepped on the GPU, are on the device.
  std::vector<int64_t> step_counts() const {
    if (!schedule_.defined()) return steps_;
    const std::vector<double> schedule = schedule_.to(Device::cpu()).to_vector<double>();
    std::vector<int64_t> steps;
    for (size_t i = 0; i < params_.size(); ++i) steps.push_back(static_cast<int64_t>(schedule[i + 1]));
    return steps;
  }

  // On a CUDA device: every parameter with a gradient in one fused launch per dtype. Capturable,
  // the step counts and bias corrections are kept and worked out on the device.
  void step_cuda() {
    check_capturable("Adam", o_.capturable);
    const double* schedule = nullptr;
    if (o_.capturable) {
      std::vector<double> initial{lr_};
      for (int64_t t : steps_) initial.push_back(static_cast<double>(t));
      schedule = device_schedule("Adam", initial);
    }
    std::map<DType, std::vector<AdamSegment>> by_dtype;
    const std::vector<Tensor> grads = for_each_device_parameter("Adam", [&](const Tensor& p, const Tensor& g, size_t i) {
      AdamSegment segment{p.raw_data(), g.raw_data(), m_[i].raw_data(), v_[i].raw_data(), p.numel(), 0, 0,
                          static_cast<int64_t>(i)};
      if (!schedule) {
        const int64_t t = ++steps_[i];
        const double correction1 = 1 - std::pow(o_.beta1, static_cast<double>(t));
        const double correction2 = 1 - std::pow(o_.beta2, static_cast<double>(t));
        segment.step_size = lr_ / correction1;
        segment.root_correction2 = std::sqrt(correction2);
      }
      by_dtype[p.dtype()].push_back(segment);
    });
    const AdamHyper hyper{lr_, o_.beta1, o_.beta2, o_.eps, o_.weight_decay, o_.decoupled_weight_decay, schedule};
    for (const auto& [dtype, segments] : by_dtype) cuda_backend("Adam").adam_step(dtype, segments, hyper, params_[0].device().index);
  }

  AdamOptions o_;
  std::vector<Tensor> m_, v_;
  std::vector<int64_t> steps_;
};

// AdamW: Adam with decoupled weight decay (default 0.01, as torch.optim.AdamW).
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamOptions o = {.weight_decay = 0.01}) : Adam(std::move(params), with_decoupled(o)) {}

 private:
  static AdamOptions with_decoupled(AdamOptions o) {
    o.decoupled_weight_decay = true;
    return o;
  }
};

}  // namespace vox::optim
