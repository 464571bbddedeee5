#pragma once
// Runtime-shaped containers, for networks whose depth comes from a configuration (a U-Net's
// number of levels): a module with a virtual forward, and a sequence of them named "0", "1", ...
#include <memory>

#include "vox/nn/module.hpp"

namespace vox::nn {

class DynamicModule : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
};

class DynamicSequential : public DynamicModule {
 public:
  DynamicSequential& add(std::unique_ptr<DynamicModule> m) {
    items_.push_back(std::move(m));
    return *this;
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (auto& m : items_) h = m->forward(h);
    return h;
  }
  void visit_children(const ChildVisitor& visit) override {
    for (size_t i = 0; i < items_.size(); ++i) visit(std::to_string(i), *items_[i]);
  }
  size_t size() const { return items_.size(); }

 private:
  std::vector<std::unique_ptr<DynamicModule>> items_;
};

// Children "0", "1", ... of one type, as torch.nn.ModuleList; the owner decides how to run them.
template <class M>
class ModuleList : public Module {
 public:
  M& push_back(M m) {
    items_.push_back(std::make_unique<M>(std::move(m)));
    return *items_.back();
  }
  M& operator[](size_t i) { return *items_.at(i); }
  size_t size() const { return items_.size(); }
  void visit_children(const ChildVisitor& visit) override {
    for (size_t i = 0; i < items_.size(); ++i) visit(std::to_string(i), *items_[i]);
  }

 private:
  std::vector<std::unique_ptr<M>> items_;
};

}  // namespace vox::nn
