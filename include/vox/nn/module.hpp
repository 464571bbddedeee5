#pragma once
// Module: the runtime half of vox's layers. A module owns named parameters and buffers and
// named children, so every tensor has a hierarchical name ("model.0.conv.unit0.conv.weight")
// that is exactly its key in the equivalent PyTorch state_dict. Layers derive from it; their
// structure and options are template parameters (Conv<3>, Sequential<A, B, C>), their sizes
// runtime values.
//
// Children are members of their parent and are named by the parent's visit_children(), so a
// module can be moved like any value. Guarantees: named_parameters() lists a module's own
// tensors in registration order, then each child's, depth-first, as PyTorch does.
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "vox/ops.hpp"

namespace vox::nn {

// How a tensor's layout differs from PyTorch's: conv and transposed-conv weights are stored
// channels-last here, so state_dicts convert them with from_channels_first / to_channels_first.
enum class TorchLayout { same, channels_first };

struct NamedTensor {
  std::string name;
  Tensor* tensor;
  TorchLayout layout;
};

class Module;
using ChildVisitor = std::function<void(const std::string& name, Module& child)>;

class Module {
 public:
  Module() = default;
  Module(Module&&) = default;
  Module& operator=(Module&&) = default;
  virtual ~Module() = default;

  // Calls visit(name, child) for each direct child, in PyTorch's registration order.
  virtual void visit_children(const ChildVisitor& visit) { (void)visit; }

  // Parameters (trainable) and buffers (running statistics and counters), with full names.
  std::vector<NamedTensor> named_parameters(const std::string& prefix = "") const {
    std::vector<NamedTensor> out;
    collect(prefix, out, true);
    return out;
  }
  std::vector<NamedTensor> named_buffers(const std::string& prefix = "") const {
    std::vector<NamedTensor> out;
    collect(prefix, out, false);
    return out;
  }
  std::vector<Tensor> parameters() const {
    std::vector<Tensor> out;
    for (const auto& p : named_parameters()) out.push_back(*p.tensor);
    return out;
  }
  int64_t parameter_count() const {
    int64_t n = 0;
    for (const auto& p : named_parameters()) n += p.tensor->numel();
    return n;
  }

  // train(true) / train(false) = eval(), for this module and every child.
  void train(bool on = true) {
    training_ = on;
    visit_children([on](const std::string&, Module& child) { child.train(on); });
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Converts every floating parameter and buffer to `dtype` (PyTorch's module.to(dtype)), e.g.
  // f64 for reference runs. Integer buffers (counters) keep their type; gradients are dropped.
  void to(DType dtype) {
    VOX_CHECK(is_floating(dtype), "Module::to", "needs a floating dtype, got ", dtype_name(dtype));
    for (const auto& list : {named_parameters(), named_buffers()})
      for (const auto& t : list) {
        if (!is_floating(t.tensor->dtype()) || t.tensor->dtype() == dtype) continue;
        const bool trainable = t.tensor->requires_grad();
        *t.tensor = t.tensor->detach().to(dtype);
        if (trainable) t.tensor->set_requires_grad(true);
      }
  }

  // Moves every parameter and buffer to `device` (PyTorch's module.to(device)); gradients are
  // dropped. Optimizers hold the tensors they were given: build them after the move.
  void to(Device device) {
    for (const auto& list : {named_parameters(), named_buffers()})
      for (const auto& t : list) {
        if (t.tensor->device() == device) continue;
        const bool trainable = t.tensor->requires_grad();
        *t.tensor = t.tensor->detach().to(device);
        if (trainable) t.tensor->set_requires_grad(true);
      }
  }

  void zero_grad() {
    for (const auto& p : named_parameters()) p.tensor->zero_grad();
  }

  // The state_dict in PyTorch's layout and names: parameters and buffers.
  std::map<std::string, Tensor> state_dict() const {
    std::map<std::string, Tensor> out;
    for (const auto& list : {named_parameters(), named_buffers()})
      for (const auto& t : list)
        out[t.name] = t.layout == TorchLayout::channels_first ? to_channels_first(t.tensor->detach()) : t.tensor->detach();
    return out;
  }

  // Loads a PyTorch state_dict (names and layouts as PyTorch has them). Every missing key,
  // unexpected key, wrong shape and wrong dtype is collected and reported in one vox::Error.
  // With strict = false, missing and unexpected keys are allowed; mismatches still throw.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true) {
    std::vector<std::string> problems;
    std::set<std::string> used;
    std::vector<std::pair<Tensor*, Tensor>> assignments;
    for (const auto& list : {named_parameters(), named_buffers()})
      for (const auto& t : list) {
        const auto it = state.find(t.name);
        if (it == state.end()) {
          if (strict) problems.push_back("missing key \"" + t.name + "\" (shape " + expected_torch_shape(t).str() + ")");
          continue;
        }
        used.insert(t.name);
        const Tensor& given = it->second;
        if (given.dtype() != t.tensor->dtype()) {
          problems.push_back(detail::concat("\"", t.name, "\" has dtype ", dtype_name(given.dtype()), ", expected ",
                                            dtype_name(t.tensor->dtype())));
          continue;
        }
        if (given.shape() != expected_torch_shape(t)) {
          problems.push_back(detail::concat("\"", t.name, "\" has shape ", given.shape(), ", expected ", expected_torch_shape(t)));
          continue;
        }
        assignments.push_back({t.tensor, t.layout == TorchLayout::channels_first ? from_channels_first(given.detach()) : given});
      }
    if (strict)
      for (const auto& [name, tensor] : state)
        if (!used.count(name)) problems.push_back("unexpected key \"" + name + "\" (shape " + tensor.shape().str() + ")");
    if (!problems.empty()) {
      std::ostringstream out;
      out << "load_state_dict: " << problems.size() << " problem(s):";
      for (const auto& p : problems) out << "\n  " << p;
      throw Error(out.str());
    }
    NoGradGuard no_grad;
    for (auto& [target, value] : assignments) target->detach().copy_from(value.detach());
  }

 protected:
  // Registers a parameter (requires grad) under `name`; returns the stored tensor.
  Tensor& register_parameter(const std::string& name, Tensor value, TorchLayout layout = TorchLayout::same) {
    value.set_requires_grad(true);
    parameters_.push_back({name, std::make_unique<Tensor>(std::move(value)), layout});
    return *parameters_.back().tensor;
  }
  Tensor& register_buffer(const std::string& name, Tensor value) {
    buffers_.push_back({name, std::make_unique<Tensor>(std::move(value)), TorchLayout::same});
    return *buffers_.back().tensor;
  }

 private:
  struct Owned {
    std::string name;
    std::unique_ptr<Tensor> tensor;
    TorchLayout layout;
  };

  static Shape expected_torch_shape(const NamedTensor& t) {
    if (t.layout == TorchLayout::same) return t.tensor->shape();
    Shape s = t.tensor->shape();  // channels-last [A, k..., B] is PyTorch's [A, B, k...]
    Shape out{s[0], s.back()};
    for (int64_t i = 1; i + 1 < s.size(); ++i) out.push_back(s[i]);
    return out;
  }

  void collect(const std::string& prefix, std::vector<NamedTensor>& out, bool parameters) const {
    for (const auto& p : parameters ? parameters_ : buffers_) out.push_back({prefix + p.name, p.tensor.get(), p.layout});
    const_cast<Module*>(this)->visit_children(
        [&](const std::string& name, Module& child) { child.collect(prefix + name + ".", out, parameters); });
  }

  std::vector<Owned> parameters_, buffers_;
  bool training_ = true;
};

}  // namespace vox::nn
