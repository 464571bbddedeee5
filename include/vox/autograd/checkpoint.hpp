#pragma once
// Gradient checkpointing: run a block without keeping its activations, and recompute them in
// the backward pass. Peak memory of a deep 3D net then holds one block's activations at a time
// instead of all of them, for the price of a second forward through each checkpointed block.
#include <functional>

#include "vox/autograd/engine.hpp"
#include "vox/core/rng.hpp"

namespace vox::autograd {

using Block = std::function<Tensor(const std::vector<Tensor>&)>;

// Returns block(inputs). Parameters that the block captures and that are leaves requiring grad
// receive their gradients during the recomputation. Random ops inside the block draw from the
// default generator; its counter is rewound for the recomputation, so dropout masks replay.
inline Tensor checkpoint(const Block& block, const std::vector<Tensor>& inputs) {
  const uint64_t rng_offset = default_generator().offset();
  const amp::AutocastMode autocast = amp::autocast_mode();  // the recomputation casts as this pass does
  Tensor output;
  {
    NoGradGuard no_grad;
    output = block(inputs);
  }
  VOX_CHECK(output.defined(), "checkpoint", "the block returned an undefined tensor");
  if (!grad_enabled()) return output;
  // The block may reach parameters the inputs do not show, so record even when no input
  // requires grad: mark the output as needing grad whenever grad mode is on.
  output = output.detach();
  auto node = std::make_shared<Node>();
  node->name = "CheckpointBackward";
  for (const Tensor& t : inputs) {
    node->inputs.push_back(edge_to(t));
    node->input_shapes.push_back(t.shape());
    node->input_dtypes.push_back(t.dtype());
  }
  node->backward = [block, inputs, rng_offset, autocast](const Tensor& grad) {
    std::vector<Tensor> detached;
    for (const Tensor& t : inputs) {
      Tensor d = t.detach();
      if (t.requires_grad()) d.set_requires_grad(true);
      detached.push_back(d);
    }
    Generator& gen = default_generator();
    const uint64_t now = gen.offset();
    gen.set_offset(rng_offset);
    Tensor recomputed;
    {
      EnableGradGuard enable;
      amp::AutocastReplay replay(autocast);
      recomputed = block(detached);
    }
    gen.set_offset(now);
    if (recomputed.requires_grad()) run_backward(recomputed, grad);
    std::vector<Tensor> grads;
    for (const Tensor& d : detached) grads.push_back(d.requires_grad() ? d.grad() : Tensor());
    return grads;
  };
  output.impl()->requires_grad = true;
  output.impl()->grad_fn = std::move(node);
  return output;
}

inline Tensor checkpoint(const std::function<Tensor(const Tensor&)>& block, const Tensor& input) {
  return checkpoint([block](const std::vector<Tensor>& in) { return block(in[0]); }, std::vector<Tensor>{input});
}

}  // namespace vox::autograd

namespace vox {
using autograd::checkpoint;
}
