#pragma once
// The backward engine: walks the tape from a root in dependency order, sums the gradients that
// reach each node, runs each node once and releases it, and accumulates into leaves' .grad. An
// observer (backward_observer.hpp) is told when each leaf's gradient is final.
#include <unordered_map>
#include <vector>

#include "vox/autograd/autocast_mode.hpp"
#include "vox/autograd/backward_observer.hpp"
#include "vox/autograd/node.hpp"

namespace vox::autograd {

namespace detail {
// a + b for same-shape floating tensors, without recording. Allocates, so no caller's tensor
// is ever modified in place.
inline Tensor add_gradients(const Tensor& a, const Tensor& b) {
  VOX_CHECK(a.shape() == b.shape(), "backward", "gradients of shapes ", a.shape(), " and ", b.shape(),
            " reach the same tensor");
  Tensor out = empty(a.shape(), a.dtype(), a.device());
  if (a.device().is_cuda()) {
    const Tensor bd = b.to(a.dtype()).to(a.device());
    cuda_backend("backward").binary(BinaryOp::add, a.dtype(), a.shape(), out.raw_data(), a.raw_data(), a.strides(), bd.raw_data(),
                                    bd.strides(), {}, a.device().index);
    return out;
  }
  auto layout = vox::detail::layout_for<3>(a.shape(), {&out, &a, &b});
  dispatch_floating(a.dtype(), "backward", [&]<class T>() {
    T* o = out.data<T>();
    const T* pa = static_cast<const T*>(a.raw_data());
    const T* pb = static_cast<const T*>(b.to(a.dtype()).raw_data());
    kernels::cpu::for_each_row<3>(layout, [&](std::array<int64_t, 3> off, int64_t n, std::array<int64_t, 3> st) {
      for (int64_t j = 0; j < n; ++j)
        o[off[0] + j * st[0]] = T(compute_t<T>(pa[off[1] + j * st[1]]) + compute_t<T>(pb[off[2] + j * st[2]]));
    });
  });
  return out;
}

inline void accumulate_leaf(TensorImpl& leaf, const Tensor& g) {
  Tensor grad = g.dtype() == leaf.dtype ? g : g.to(leaf.dtype);
  if (!leaf.grad) {
    leaf.grad = grad.detach().contiguous().impl_ptr();
  } else {
    leaf.grad = add_gradients(Tensor(leaf.grad), grad).impl_ptr();
  }
}
}  // namespace detail

inline void run_backward(const Tensor& root, const Tensor& root_grad) {
  VOX_CHECK(root.requires_grad(), "backward", "tensor of shape ", root.shape(),
            " does not require grad (no input required grad, or it was computed under no_grad)");
  VOX_CHECK(root_grad.shape() == root.shape(), "backward", "gradient of shape ", root_grad.shape(),
            " given for a tensor of shape ", root.shape());
  ObservedPass pass;
  if (!root.grad_fn()) {  // a leaf: its gradient is the given one
    detail::accumulate_leaf(*root.impl(), root_grad);
    pass.ready(*root.impl());
    pass.finish();
    return;
  }
  // Count, for each node, how many edges from other reachable nodes lead into it, and for each
  // leaf, how many edges lead into it (its gradient is final when the last one is processed).
  std::unordered_map<Node*, int> dependencies;
  std::unordered_map<TensorImpl*, int> leaf_edges;
  std::vector<Node*> stack{root.grad_fn().get()};
  dependencies[stack.back()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->inputs) {
      if (e.leaf) ++leaf_edges[e.leaf.get()];
      if (!e.node) continue;
      auto [it, inserted] = dependencies.try_emplace(e.node.get(), 0);
      ++it->second;
      if (inserted) stack.push_back(e.node.get());
    }
  }
  auto leaf_edge_done = [&](TensorImpl& leaf) {
    if (--leaf_edges[&leaf] == 0) pass.ready(leaf);
  };
  std::unordered_map<Node*, Tensor> pending;
  pending[root.grad_fn().get()] = root_grad.detach();
  std::vector<std::shared_ptr<Node>> ready{root.grad_fn()};
  NoGradGuard no_grad;
  amp::AutocastSuspend autocast_off;  // gradients keep the dtypes the forward pass chose
  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    VOX_CHECK(static_cast<bool>(node->backward), "backward", "the graph through ", node->name,
              " was already freed by an earlier backward()");
    Tensor grad = std::move(pending[node.get()]);
    pending.erase(node.get());
    std::vector<Tensor> input_grads = node->backward(grad);
    node->backward = nullptr;  // release what the op saved
    VOX_CHECK(input_grads.size() == node->inputs.size(), "backward", node->name, " returned ",
              input_grads.size(), " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      const Edge& e = node->inputs[i];
      if (!e.wanted()) continue;
      Tensor& g = input_grads[i];
      if (g.defined()) {
        VOX_CHECK(g.shape() == node->input_shapes[i], "backward", node->name, " returned a gradient of shape ",
                  g.shape(), " for input ", i, " of shape ", node->input_shapes[i]);
        if (g.dtype() != node->input_dtypes[i]) g = g.to(node->input_dtypes[i]);
      }
      if (e.leaf) {
        if (g.defined()) detail::accumulate_leaf(*e.leaf, g);
        leaf_edge_done(*e.leaf);
        continue;
      }
      Node* next = e.node.get();
      if (g.defined()) {
        auto it = pending.find(next);
        if (it == pending.end() || !it->second.defined()) {
          pending[next] = g;
        } else {
          it->second = detail::add_gradients(it->second, g);
        }
      }
      if (--dependencies[next] == 0) {
        if (pending[next].defined()) {
          ready.push_back(e.node);
        } else {  // nothing flowed into it: release it, and walk on with nothing
          pending.erase(next);
          std::vector<std::shared_ptr<Node>> silent{e.node};
          while (!silent.empty()) {
            auto s = silent.back();
            silent.pop_back();
            s->backward = nullptr;
            for (const Edge& se : s->inputs) {
              if (se.leaf) leaf_edge_done(*se.leaf);
              if (se.node && --dependencies[se.node.get()] == 0) {
                if (pending.count(se.node.get()) && pending[se.node.get()].defined()) ready.push_back(se.node);
                else silent.push_back(se.node);
              }
            }
          }
        }
      }
    }
  }
  pass.finish();
}

}  // namespace vox::autograd

namespace vox {

inline void Tensor::backward() const {
  VOX_CHECK(numel() == 1, "backward", "needs a gradient argument for a non-scalar tensor of shape ", shape(),
            " (call backward(gradient))");
  autograd::run_backward(*this, ones(shape(), dtype(), device()));
}

inline void Tensor::backward(const Tensor& gradient) const { autograd::run_backward(*this, gradient); }

}  // namespace vox
