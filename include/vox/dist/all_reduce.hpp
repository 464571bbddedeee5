#pragma once
// all_reduce_sum: the sum over ranks of a tensor (same shape on every rank), as a differentiable
// op. Every rank's loss then depends on every rank's input, so the gradient that reaches a rank's
// input is the sum over ranks of the gradients of the sum: its backward is an allreduce too
// (nnU-Net's AllGatherGrad for batch Dice, PyTorch's SyncBatchNorm statistics). Both collectives
// are queued and waited for where the forward and backward passes reach them, in the same order
// on every rank.
#include "vox/autograd/node.hpp"
#include "vox/dist/process_group.hpp"

namespace vox::dist {

inline Tensor all_reduce_sum(const Tensor& x, ProcessGroup& group, const std::string& label = "all_reduce_sum") {
  if (group.size() == 1) return x;
  Tensor out = x.detach().contiguous().clone();
  group.allreduce(out, ReduceOp::sum, label).wait();
  autograd::record("AllReduceSumBackward", out, {x}, [&group, label](const Tensor& grad) {
    Tensor summed = grad.contiguous().clone();
    group.allreduce(summed, ReduceOp::sum, label + " (backward)").wait();
    return std::vector<Tensor>{summed};
  });
  return out;
}

}  // namespace vox::dist
