#pragma once
// Scaled dot-product attention: softmax(q k^T * scale + mask) v, built from matmul and softmax
// (their kernels are threaded; the gradient comes from the tape). A bool mask marks what may be
// attended; a floating mask is added to the scores.
// On a CUDA device, without a mask, attention with head dims up to 128 runs fused
// (kernels/cuda/attention.cuh; f16 and bf16 computed in f32): no [Lq, Lk] score matrix is
// stored, forward or backward.
#include <cmath>
#include <limits>
#include <optional>

#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"

namespace vox {

namespace detail {
// The fused CUDA path, when it applies: q, k, v share their leading (batch, head) axes.
inline std::optional<Tensor> fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
  if (!q.device().is_cuda() || k.device() != q.device() || v.device() != q.device()) return std::nullopt;
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype() || q.rank() != k.rank() || q.rank() != v.rank()) return std::nullopt;
  for (int64_t i = 0; i + 2 < q.rank(); ++i)
    if (k.size(i) != q.size(i) || v.size(i) != q.size(i)) return std::nullopt;
  AttentionShape s;
  s.q_len = q.size(-2);
  s.kv_len = k.size(-2);
  s.qk_dim = q.size(-1);
  s.v_dim = v.size(-1);
  for (int64_t i = 0; i + 2 < q.rank(); ++i) s.batch *= q.size(i);
  s.scale = scale;
  const Tensor qc = q.detach().contiguous(), kc = k.detach().contiguous(), vc = v.detach().contiguous();
  Shape out_shape = q.shape();
  out_shape[q.rank() - 1] = s.v_dim;
  Shape lse_shape = q.shape();
  lse_shape[q.rank() - 1] = 1;
  // lse in the kernels' compute type: f64 for f64, else f32 (16-bit inputs are widened)
  const DType lse_dtype = q.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor out = empty(out_shape, q.dtype(), q.device()), lse = empty(lse_shape, lse_dtype, q.device());
  const int index = q.device().index;
  if (!cuda_backend("scaled_dot_product_attention")
           .attention_forward(q.dtype(), s, qc.raw_data(), kc.raw_data(), vc.raw_data(), out.raw_data(), lse.raw_data(), index))
    return std::nullopt;
  autograd::record("ScaledDotProductAttentionBackward", out, {q, k, v},
                   [qc, kc, vc, o = out.detach(), lse, s, index](const Tensor& g) {
                     const Tensor gc = g.contiguous();
                     Tensor dq = empty_like(qc), dk = empty_like(kc), dv = empty_like(vc);
                     cuda_backend("scaled_dot_product_attention backward")
                         .attention_backward(qc.dtype(), s, qc.raw_data(), kc.raw_data(), vc.raw_data(), o.raw_data(),
                                             lse.raw_data(), gc.raw_data(), dq.raw_data(), dk.raw_data(), dv.raw_data(), index);
                     return std::vector<Tensor>{dq, dk, dv};
                   });
  return out;
}
}  // namespace detail

inline Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                           std::optional<double> scale) {
  if (const auto c = detail::autocast_inputs("scaled_dot_product_attention", {&q, &k, &v, &mask}))
    return detail::without_autocast([&] { return scaled_dot_product_attention((*c)[0], (*c)[1], (*c)[2], (*c)[3], scale); });
  constexpr const char* op = "scaled_dot_product_attention";
  VOX_CHECK(q.rank() >= 2 && k.rank() >= 2 && v.rank() >= 2, op, "q, k, v need rank >= 2, got ", q.shape(), ", ",
            k.shape(), ", ", v.shape());
  VOX_CHECK(q.size(-1) == k.size(-1), op, "q ", q.shape(), " and k ", k.shape(), " differ in embedding size");
  VOX_CHECK(k.size(-2) == v.size(-2), op, "k ", k.shape(), " and v ", v.shape(), " differ in sequence length");
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  if (!mask.defined())
    if (auto fused = detail::fused_attention(q, k, v, s)) return *fused;
  Tensor scores = mul(matmul(q, transpose(k, -1, -2)), scalar(s, q.dtype()));
  if (mask.defined()) {
    if (mask.dtype() == DType::boolean) {
      scores = where(mask, scores, scalar(-std::numeric_limits<double>::infinity(), q.dtype()));
    } else {
      scores = add(scores, mask);
    }
  }
  return matmul(softmax(scores, -1), v);
}

}  // namespace vox
