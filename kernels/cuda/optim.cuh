#pragma once
// Fused multi-tensor Adam / AdamW: one launch updates every parameter. The host passes a table of
// segments (one per parameter: its p, g, m, v pointers, size and bias corrections) and their
// starting offsets in one flat index; each thread finds its segment by binary search.
#include <cstdint>

#include "vox/core/backend.hpp"

namespace vox::cuda {

template <class T>
__global__ void adam_kernel(const AdamSegment* segments, const int64_t* starts, int count, int64_t total, AdamHyper h) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int lo = 0, hi = count - 1;  // the last segment starting at or before i
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (starts[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    const AdamSegment& s = segments[lo];
    const int64_t j = i - starts[lo];
    T* p = static_cast<T*>(s.param);
    T* m = static_cast<T*>(s.exp_avg);
    T* v = static_cast<T*>(s.exp_avg_sq);
    const T b1 = static_cast<T>(h.beta1), b2 = static_cast<T>(h.beta2);
    T grad = static_cast<const T*>(s.grad)[j];
    if (h.decoupled) p[j] *= static_cast<T>(1 - h.lr * h.weight_decay);
    else grad += static_cast<T>(h.weight_decay) * p[j];
    m[j] = b1 * m[j] + (1 - b1) * grad;
    v[j] = b2 * v[j] + (1 - b2) * grad * grad;
    p[j] -= static_cast<T>(s.step_size) * m[j] / (sqrt(v[j]) / static_cast<T>(s.root_correction2) + static_cast<T>(h.eps));
  }
}

}  // namespace vox::cuda
