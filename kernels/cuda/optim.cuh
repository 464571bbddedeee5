#pragma once
// Fused multi-tensor optimizers (Adam / AdamW, SGD): one launch updates every parameter. The host
// passes a table of segments (one per parameter: its tensors' pointers, size and per-parameter
// constants) and their starting offsets in one flat index; each thread finds its segment by
// binary search.
#include <cstdint>

#include "vox/core/backend.hpp"

namespace vox::cuda {

// The last segment starting at or before flat index i.
__device__ inline int segment_of(const int64_t* starts, int count, int64_t i) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (starts[mid] <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// A capturable step (h.schedule set): each segment's parameter takes one more step, and its bias
// corrections are worked out from the count and the learning rate in device memory, so that a
// CUDA graph replay advances them as an eager step would.
__global__ void adam_schedule_kernel(AdamSegment* segments, int count, AdamHyper h) {
  const int k = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (k >= count) return;
  double* schedule = const_cast<double*>(h.schedule);
  AdamSegment& s = segments[k];
  const double t = (schedule[1 + s.step_index] += 1);
  s.step_size = schedule[0] / (1 - pow(h.beta1, t));
  s.root_correction2 = sqrt(1 - pow(h.beta2, t));
}

template <class T>
__global__ void adam_kernel(const AdamSegment* segments, const int64_t* starts, int count, int64_t total, AdamHyper h) {
  const double lr = h.schedule ? h.schedule[0] : h.lr;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int lo = segment_of(starts, count, i);
    const AdamSegment& s = segments[lo];
    const int64_t j = i - starts[lo];
    T* p = static_cast<T*>(s.param);
    T* m = static_cast<T*>(s.exp_avg);
    T* v = static_cast<T*>(s.exp_avg_sq);
    const T b1 = static_cast<T>(h.beta1), b2 = static_cast<T>(h.beta2);
    T grad = static_cast<const T*>(s.grad)[j];
    if (h.decoupled) p[j] *= static_cast<T>(1 - lr * h.weight_decay);
    else grad += static_cast<T>(h.weight_decay) * p[j];
    m[j] = b1 * m[j] + (1 - b1) * grad;
    v[j] = b2 * v[j] + (1 - b2) * grad * grad;
    p[j] -= static_cast<T>(s.step_size) * m[j] / (sqrt(v[j]) / static_cast<T>(s.root_correction2) + static_cast<T>(h.eps));
  }
}

// torch.optim.SGD: d = g + wd p; b = d (first step) or mu b + (1 - dampening) d;
// d = d + mu b (Nesterov) or b; p = p - lr d.
template <class T>
__global__ void sgd_kernel(const SgdSegment* segments, const int64_t* starts, int count, int64_t total, SgdHyper h) {
  const double lr = h.schedule ? h.schedule[0] : h.lr;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int lo = segment_of(starts, count, i);
    const SgdSegment& s = segments[lo];
    const int64_t j = i - starts[lo];
    T* p = static_cast<T*>(s.param);
    T d = static_cast<const T*>(s.grad)[j] + static_cast<T>(h.weight_decay) * p[j];
    if (h.momentum != 0) {
      T* buf = static_cast<T*>(s.momentum_buffer);
      buf[j] = s.first ? d : static_cast<T>(h.momentum) * buf[j] + static_cast<T>(1 - h.dampening) * d;
      d = h.nesterov ? d + static_cast<T>(h.momentum) * buf[j] : buf[j];
    }
    p[j] -= static_cast<T>(lr) * d;
  }
}

}  // namespace vox::cuda
