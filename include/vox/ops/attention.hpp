#pragma once
// Scaled dot-product attention: softmax(q k^T * scale + mask) v, built from matmul and softmax
// (their kernels are threaded; the gradient comes from the tape). A bool mask marks what may be
// attended; a floating mask is added to the scores.
#include <cmath>
#include <limits>

#include "vox/ops/fwd.hpp"

namespace vox {

inline Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                           std::optional<double> scale) {
  constexpr const char* op = "scaled_dot_product_attention";
  VOX_CHECK(q.rank() >= 2 && k.rank() >= 2 && v.rank() >= 2, op, "q, k, v need rank >= 2, got ", q.shape(), ", ",
            k.shape(), ", ", v.shape());
  VOX_CHECK(q.size(-1) == k.size(-1), op, "q ", q.shape(), " and k ", k.shape(), " differ in embedding size");
  VOX_CHECK(k.size(-2) == v.size(-2), op, "k ", k.shape(), " and v ", v.shape(), " differ in sequence length");
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
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
