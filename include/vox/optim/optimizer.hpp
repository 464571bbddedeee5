#pragma once
// Optimizers update leaf parameters in place from their .grad, with PyTorch's exact rules, in
// one fused pass per parameter. Parameters without a gradient are skipped, as in PyTorch.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "vox/ops.hpp"

namespace vox::optim {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
    for (size_t i = 0; i < params_.size(); ++i) {
      VOX_CHECK(params_[i].is_leaf() && params_[i].requires_grad(), "optimizer", "parameter ", i, " (shape ",
                params_[i].shape(), ") must be a leaf that requires grad");
      VOX_CHECK(params_[i].is_contiguous() && (params_[i].dtype() == DType::f32 || params_[i].dtype() == DType::f64),
                "optimizer", "parameter ", i, " must be a contiguous f32 or f64 tensor, got ", params_[i].dtype());
    }
  }
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad() {
    for (Tensor& p : params_) p.zero_grad();
  }
  double learning_rate() const { return lr_; }
  void set_learning_rate(double lr) { lr_ = lr; }
  const std::vector<Tensor>& params() const { return params_; }

  // The optimizer's state, for checkpoints: "lr" and per parameter i "state.<i>.<name>" (torch's
  // names: exp_avg, exp_avg_sq, step; momentum_buffer). load_state_dict checks every key and shape.
  virtual std::map<std::string, Tensor> state_dict() const {
    return {{"lr", full({}, lr_, DType::f64)}};
  }
  virtual void load_state_dict(const std::map<std::string, Tensor>& state) {
    lr_ = entry(state, "lr", {}).item<double>();
  }

 protected:
  // Calls update(p, g, i) with raw pointers for each parameter that has a gradient.
  template <class Update>
  void for_each_parameter(Update&& update) {
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor& p = params_[i];
      const Tensor g = p.grad();
      if (!g.defined()) continue;
      VOX_CHECK(g.shape() == p.shape(), "optimizer", "gradient shape ", g.shape(), " differs from parameter ", i, " shape ",
                p.shape());
      const Tensor gc = g.to(p.dtype()).contiguous();
      dispatch_float(p.dtype(), "optimizer", [&]<class T>() { update(p.data<T>(), gc.data<T>(), i, p.numel()); });
    }
  }
  // On a CUDA device: calls update(p, g, i) for each parameter with a gradient, g converted to
  // p's dtype and contiguous. Returns those gradients, which must outlive the launch that reads
  // them (the caller queues it before they go).
  template <class Update>
  std::vector<Tensor> for_each_device_parameter(const char* op, Update&& update) {
    const Device device = params_[0].device();
    std::vector<Tensor> grads;
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor& p = params_[i];
      const Tensor g = p.grad();
      if (!g.defined()) continue;
      VOX_CHECK(p.device() == device, op, "parameter ", i, " is on ", p.device(), ", parameter 0 on ", device);
      VOX_CHECK(g.shape() == p.shape(), op, "gradient shape ", g.shape(), " differs from parameter ", i, " shape ", p.shape());
      VOX_CHECK(p.is_contiguous(), op, "parameter ", i, " is not contiguous");
      grads.push_back(g.to(p.dtype()).contiguous());
      update(p, grads.back(), i);
    }
    return grads;
  }
  static std::string key(size_t i, const char* name) { return "state." + std::to_string(i) + "." + name; }
  static const Tensor& entry(const std::map<std::string, Tensor>& state, const std::string& name, const Shape& shape) {
    const auto it = state.find(name);
    VOX_CHECK(it != state.end(), "optimizer", "the saved state lacks ", name, "; was it saved by another optimizer or model?");
    VOX_CHECK(it->second.shape() == shape, "optimizer", name, " has shape ", it->second.shape(), ", expected ", shape);
    return it->second;
  }
  std::vector<Tensor> state_like_params() const {
    std::vector<Tensor> s;
    for (const Tensor& p : params_) s.push_back(zeros_like(p.detach()));
    return s;
  }

  std::vector<Tensor> params_;
  double lr_ = 0;
};

}  // namespace vox::optim
