#pragma once
// Autocast's per-op cast policy, one table per device type, kept as data, and the casting the
// ops do with it on entry. Where autocast is off (vox/amp/autocast.hpp opens it) nothing here
// changes anything.
//
//   lower:   floating inputs are cast to the low-precision dtype (bf16 on the CPU and f16 on CUDA
//            by default): the ops whose work is products, which the 16-bit kernels do at twice
//            the f32 rate and which accumulate in f32 anyway.
//   f32:     floating inputs are cast to f32, and so is the result: ops whose result needs f32's
//            range or precision (exp and log, softmax, losses, sums and means).
//   promote: floating inputs are cast to the widest of their dtypes, so that a 16-bit tensor
//            meeting an f32 one does not lose the f32 one's precision.
//   keep:    nothing is cast; the op computes 16-bit inputs in f32 internally and returns their
//            dtype (normalisation statistics, max pooling, which is exact).
// Ops not in the table run on whatever dtypes they are given.
#include <array>
#include <optional>
#include <string_view>
#include <vector>

#include "vox/autograd/autocast_mode.hpp"
#include "vox/core/tensor.hpp"
#include "vox/ops/fwd.hpp"

namespace vox {

enum class CastPolicy : uint8_t { lower, f32, promote, keep };

inline std::string_view cast_policy_name(CastPolicy p) {
  switch (p) {
    case CastPolicy::lower: return "lower";
    case CastPolicy::f32: return "f32";
    case CastPolicy::promote: return "promote";
    case CastPolicy::keep: return "keep";
  }
  return "?";
}

struct AutocastRule {
  std::string_view op;
  CastPolicy cpu, cuda;
};

// The tables (one column per device type). README's "Mixed precision" section lists them too.
inline const std::vector<AutocastRule>& autocast_rules() {
  using enum CastPolicy;
  static const std::vector<AutocastRule> rules{
      // products: the 16-bit kernels
      {"conv", lower, lower},
      {"conv_transpose", lower, lower},
      {"matmul", lower, lower},
      {"linear", lower, lower},
      {"scaled_dot_product_attention", lower, lower},
      {"prelu", lower, lower},
      // range and precision: f32
      {"softmax", f32, f32},
      {"log_softmax", f32, f32},
      {"cross_entropy", f32, f32},
      {"binary_cross_entropy_with_logits", f32, f32},
      {"sum", f32, f32},
      {"mean", f32, f32},
      {"var", f32, f32},
      {"std_dev", f32, f32},
      {"exp", f32, f32},
      {"log", f32, f32},
      {"pow", f32, f32},
      {"upsample_trilinear", f32, f32},
      {"upsample_nearest", f32, f32},
      {"avg_pool3d", f32, f32},
      {"adaptive_avg_pool3d", f32, f32},
      // mixing inputs: the widest
      {"add", promote, promote},
      {"sub", promote, promote},
      {"mul", promote, promote},
      {"div", promote, promote},
      {"concat", promote, promote},
      {"where", promote, promote},
      // statistics in f32 inside the op, storage in the input's dtype
      {"batch_norm", keep, keep},
      {"instance_norm", keep, keep},
      {"instance_norm_prelu", keep, keep},
      {"instance_norm_prelu_add", keep, keep},
      {"group_norm", keep, keep},
      {"layer_norm", keep, keep},
      {"max_pool3d", keep, keep},
  };
  return rules;
}

// The policy for `op` on `device`, if the table has the op.
inline std::optional<CastPolicy> autocast_policy(std::string_view op, Device device) {
  for (const AutocastRule& r : autocast_rules())
    if (r.op == op) return device.is_cuda() ? r.cuda : r.cpu;
  return std::nullopt;
}

namespace detail {

// `t` in dtype `to`, through autocast's cache where t is a parameter (a leaf requiring grad).
inline Tensor autocast_to(const Tensor& t, DType to) {
  if (t.dtype() == to) return t;
  if (!(t.is_leaf() && t.requires_grad()) || !is_floating(to) || (to != DType::f16 && to != DType::bf16)) return cast(t, to);
  amp::CastCache& cache = amp::cast_cache();
  const uint64_t generation = amp::parameter_generation().load(std::memory_order_relaxed);
  if (cache.generation != generation) {
    cache.entries.clear();
    cache.generation = generation;
  }
  amp::CastCache::Entry& e = cache.entries[t.impl()][amp::CastCache::slot(to, autograd::grad_enabled())];
  if (!e.cast.defined()) e = {t, cast(t, to)};
  return e.cast;
}

// The inputs of `op` cast as autocast's table says (some perhaps unchanged), or nothing where
// autocast is off for their device or the op has no rule or keeps its dtypes (then the op runs as
// called). The op then runs on them through without_autocast: once an op has been cast, the ops
// it calls inside (an f32 fallback, a composite's parts) are not cast again, as in PyTorch.
inline std::optional<std::vector<Tensor>> autocast_list(std::string_view op, const std::vector<const Tensor*>& inputs) {
  const amp::AutocastMode& mode = amp::autocast_mode();
  if (mode.depth == 0 || mode.suspended) return std::nullopt;
  std::optional<Device> device;
  for (const Tensor* t : inputs)
    if (t->defined() && is_floating(t->dtype())) {
      device = t->device();
      break;
    }
  if (!device) return std::nullopt;
  const std::optional<DType> low = mode.dtype_for(*device);
  const std::optional<CastPolicy> policy = autocast_policy(op, *device);
  if (!low || !policy || *policy == CastPolicy::keep) return std::nullopt;
  DType target = *low;
  if (*policy == CastPolicy::f32) target = DType::f32;
  if (*policy == CastPolicy::promote) {
    std::optional<DType> widest;
    for (const Tensor* t : inputs)
      if (t->defined() && is_floating(t->dtype())) widest = widest ? promote(*widest, t->dtype()) : t->dtype();
    target = *widest;
  }
  std::vector<Tensor> out;
  for (const Tensor* t : inputs)  // f64 is left alone, as PyTorch does: it was asked for
    out.push_back(t->defined() && is_floating(t->dtype()) && t->dtype() != DType::f64 ? autocast_to(*t, target) : *t);
  return out;
}

template <class F>
Tensor without_autocast(F&& run) {
  amp::AutocastSuspend off;
  return run();
}

// The same for the ops' fixed operands, costing one test where autocast is off.
inline std::optional<std::vector<Tensor>> autocast_inputs(std::string_view op, std::initializer_list<const Tensor*> inputs) {
  if (amp::autocast_mode().depth == 0) return std::nullopt;
  return autocast_list(op, std::vector<const Tensor*>(inputs));
}
// ... and for a list of tensors (concat's parts).
inline std::optional<std::vector<Tensor>> autocast_all(std::string_view op, const std::vector<Tensor>& inputs) {
  if (amp::autocast_mode().depth == 0) return std::nullopt;
  std::vector<const Tensor*> pointers;
  for (const Tensor& t : inputs) pointers.push_back(&t);
  return autocast_list(op, pointers);
}

}  // namespace detail
}  // namespace vox
