#pragma once
// The tape: each recorded op leaves a Node that knows where its inputs' gradients go and how to
// compute them. A node's backward closure owns what the op saved; the engine destroys the
// closure as soon as it has run, which frees those tensors during the backward pass.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "vox/autograd/grad_mode.hpp"
#include "vox/core/tensor.hpp"

namespace vox::autograd {

struct Node;

// Where one input's gradient goes: into another node, into a leaf's .grad, or nowhere.
struct Edge {
  std::shared_ptr<Node> node;
  std::shared_ptr<TensorImpl> leaf;
  bool wanted() const { return node || leaf; }
};

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  std::string name;
  std::vector<Edge> inputs;
  std::vector<Shape> input_shapes;  // to check what backward returns
  std::vector<DType> input_dtypes;
  BackwardFn backward;  // empty once run: the saved tensors are gone
};

inline Edge edge_to(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  if (t.grad_fn()) return {t.grad_fn(), nullptr};
  return {nullptr, t.impl_ptr()};
}

inline bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

// Whether an op with these inputs should record: grad mode is on and some input requires grad.
inline bool should_record(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

// Makes `output` (a fresh tensor produced by the op) the result of a node named `name` whose
// backward maps the output's gradient to one gradient per input (undefined where not needed).
// Does nothing when nothing requires grad or grad mode is off.
inline void record(const char* name, const Tensor& output, const std::vector<Tensor>& inputs, BackwardFn backward) {
  if (!should_record(inputs)) return;
  auto node = std::make_shared<Node>();
  node->name = name;
  for (const Tensor& t : inputs) {
    node->inputs.push_back(edge_to(t));
    node->input_shapes.push_back(t.defined() ? t.shape() : Shape{});
    node->input_dtypes.push_back(t.defined() ? t.dtype() : DType::f32);
  }
  node->backward = std::move(backward);
  output.impl()->requires_grad = true;
  output.impl()->grad_fn = std::move(node);
}

}  // namespace vox::autograd
