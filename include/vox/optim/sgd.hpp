#pragma once
// SGD with momentum, dampening, Nesterov momentum and L2 weight decay, as torch.optim.SGD:
//   d = g + wd p;  b = d (first step) or mu b + (1 - dampening) d;
//   d = d + mu b (Nesterov) or b;  p = p - lr d.
#include "vox/optim/optimizer.hpp"

namespace vox::optim {

struct SgdOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  // On CUDA: the learning rate in device memory, so that the step can be captured into a CUDA
  // graph (vox/core/cuda_graph.hpp).
  bool capturable = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SgdOptions o) : Optimizer(std::move(params)), o_(o) {
    VOX_CHECK(o.lr >= 0 && o.momentum >= 0 && o.weight_decay >= 0, "SGD", "lr, momentum and weight_decay must be >= 0");
    VOX_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), "SGD", "Nesterov needs momentum > 0 and dampening 0");
    lr_ = o.lr;
    buffers_ = state_like_params();
    started_.assign(params_.size(), false);
  }
  void step() override {
    if (!params_.empty() && params_[0].device().is_cuda()) return step_cuda();
    for_each_parameter([&](auto* p, const auto* g, size_t i, int64_t n) {
      using T = std::remove_pointer_t<decltype(p)>;
      T* buf = buffers_[i].template data<T>();
      const bool first = !started_[i];
      const T lr = static_cast<T>(lr_), mu = static_cast<T>(o_.momentum), wd = static_cast<T>(o_.weight_decay),
              damp = static_cast<T>(1 - o_.dampening);
      const bool momentum = o_.momentum != 0, nesterov = o_.nesterov;
      parallel_for(0, n, 32768, [&](int64_t b, int64_t e) {
        for (int64_t j = b; j < e; ++j) {
          T d = g[j] + wd * p[j];
          if (momentum) {
            buf[j] = first ? d : mu * buf[j] + damp * d;
            d = nesterov ? d + mu * buf[j] : buf[j];
          }
          p[j] -= lr * d;
        }
      });
      started_[i] = true;
    });
  }

  std::map<std::string, Tensor> state_dict() const override {
    std::map<std::string, Tensor> s = Optimizer::state_dict();
    for (size_t i = 0; i < params_.size(); ++i)
      if (started_[i]) s[key(i, "momentum_buffer")] = buffers_[i].clone();
    return s;
  }
  void load_state_dict(const std::map<std::string, Tensor>& state) override {
    Optimizer::load_state_dict(state);
    rewrite_schedule({lr_});  // a capturable schedule on the device takes the loaded rate in place
    for (size_t i = 0; i < params_.size(); ++i) {
      started_[i] = state.count(key(i, "momentum_buffer")) != 0;
      if (started_[i]) buffers_[i].copy_from(entry(state, key(i, "momentum_buffer"), buffers_[i].shape()));
    }
  }

 private:
  // On a CUDA device: every parameter with a gradient in one fused launch per dtype.
  void step_cuda() {
    check_capturable("SGD", o_.capturable);
    const double* schedule = o_.capturable ? device_schedule("SGD", {lr_}) : nullptr;
    const bool capturing = schedule && cuda_backend("SGD").capturing(params_[0].device().index);
    std::map<DType, std::vector<SgdSegment>> by_dtype;
    const std::vector<Tensor> grads = for_each_device_parameter("SGD", [&](const Tensor& p, const Tensor& g, size_t i) {
      VOX_CHECK(!capturing || started_[i] || o_.momentum == 0, "SGD", "parameter ", i, "'s first step starts its momentum "
                "buffer, which a replay must not do again: run one step eagerly (the warm-up) before capturing");
      by_dtype[p.dtype()].push_back({p.raw_data(), g.raw_data(), buffers_[i].raw_data(), p.numel(), !started_[i]});
      started_[i] = true;
    });
    const SgdHyper hyper{lr_, o_.momentum, o_.dampening, o_.weight_decay, o_.nesterov, schedule};
    for (const auto& [dtype, segments] : by_dtype) cuda_backend("SGD").sgd_step(dtype, segments, hyper, params_[0].device().index);
  }

  SgdOptions o_;
  std::vector<Tensor> buffers_;
  std::vector<bool> started_;
};

}  // namespace vox::optim
