#pragma once
// Optimizers update leaf parameters in place from their .grad, with PyTorch's exact rules, in
// one fused pass per parameter. Parameters without a gradient are skipped, as in PyTorch.
#include <algorithm>
#include <array>
#include <bit>
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
  // On a capturable optimizer the new rate is also queued to device memory, where CUDA graph
  // replays of its step read it.
  void set_learning_rate(double lr) {
    lr_ = lr;
    if (schedule_.defined())
      cuda_backend("set_learning_rate").store_words(schedule_.raw_data(), {std::bit_cast<uint64_t>(lr)}, 1, schedule_.device().index);
  }
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
    amp::parameters_changed();  // autocast's 16-bit copies of them are stale from here on
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
    amp::parameters_changed();
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

  // A capturable optimizer's schedule on the parameters' device: f64 {lr, then what the
  // optimizer adds (Adam: each parameter's step count)}. Made from `initial` on the first CUDA
  // step, which must run eagerly: made inside a capture, a replay would reset it.
  const double* device_schedule(const char* op, const std::vector<double>& initial) {
    const Device device = params_[0].device();
    if (!schedule_.defined()) {
      VOX_CHECK(!cuda_backend(op).capturing(device.index), op, "a capturable optimizer keeps its learning rate",
                initial.size() > 1 ? " and step counts" : "", " in device memory from its first step, which must run "
                "eagerly: run one step (the warm-up) before capturing it into a CUDA graph");
      schedule_ = from_vector(initial, Shape{static_cast<int64_t>(initial.size())}).to(device);
    }
    return static_cast<const double*>(schedule_.raw_data());
  }
  // After load_state_dict: a schedule already on the device is rewritten where it is, in stream
  // order (at most 4 words a launch), never freed or moved, because a CUDA graph captured before
  // the load still reads and advances that memory on every replay.
  void rewrite_schedule(const std::vector<double>& values) {
    if (!schedule_.defined()) return;
    VOX_CHECK(static_cast<int64_t>(values.size()) == schedule_.numel(), "optimizer", "the schedule holds ", schedule_.numel(),
              " values, ", values.size(), " given");
    auto* words = static_cast<uint64_t*>(schedule_.raw_data());
    for (size_t first = 0; first < values.size(); first += 4) {
      std::array<uint64_t, 4> chunk{};
      const int count = static_cast<int>(std::min<size_t>(4, values.size() - first));
      for (int k = 0; k < count; ++k) chunk[static_cast<size_t>(k)] = std::bit_cast<uint64_t>(values[first + static_cast<size_t>(k)]);
      cuda_backend("load_state_dict").store_words(words + first, chunk, count, schedule_.device().index);
    }
  }
  // Refuses a step captured into a CUDA graph by an optimizer that is not capturable: its replays
  // would repeat this step's learning rate (and Adam's bias corrections).
  void check_capturable(const char* op, bool capturable) const {
    VOX_CHECK(capturable || !cuda_backend(op).capturing(params_[0].device().index), op,
              "the step is being captured into a CUDA graph, whose replays would repeat this step's learning rate and "
              "bias corrections: construct the optimizer with capturable = true");
  }

  std::vector<Tensor> params_;
  double lr_ = 0;
  Tensor schedule_;
};

}  // namespace vox::optim
