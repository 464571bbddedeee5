#pragma once
// Kernels on integer labels [rows] (i64) against values [rows][classes]:
//   one_hot:      out[r][labels[r]] = 1 (out zeroed first);
//   pick_classes: the cross-entropy's gather: picked[r] = values[r][labels[r]], the label's
//                 weight, and whether the row counts (labels equal to ignore_index do not);
//   its backward: dvalues[r][labels[r]] = dpicked[r] (dvalues zeroed first).
// A label outside [0, classes) (other than ignore_index) is reported through `bad`, which keeps
// the smallest such row; the host turns it into a vox::Error.
#include <cstdint>

namespace vox::cuda {

__device__ inline bool label_in_range(int64_t label, int64_t classes, unsigned long long* bad, int64_t row) {
  if (label >= 0 && label < classes) return true;
  atomicMin(bad, static_cast<unsigned long long>(row));
  return false;
}

template <class T>
__global__ void one_hot_kernel(const int64_t* labels, int64_t rows, int64_t classes, T* out, unsigned long long* bad) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (label_in_range(labels[r], classes, bad, r)) out[r * classes + labels[r]] = T(1);
}

template <class T>
__global__ void pick_classes_kernel(const T* values, const int64_t* labels, int64_t rows, int64_t classes, const T* weight,
                                    int64_t ignore_index, T* picked, T* target_weight, T* valid, unsigned long long* bad) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t label = labels[r];
    const bool counts = label != ignore_index && label_in_range(label, classes, bad, r);
    picked[r] = counts ? values[r * classes + label] : T(0);
    target_weight[r] = counts ? (weight ? weight[label] : T(1)) : T(0);
    valid[r] = counts ? T(1) : T(0);
  }
}

template <class T>
__global__ void pick_classes_backward_kernel(const T* dpicked, const int64_t* labels, int64_t rows, int64_t classes,
                                             int64_t ignore_index, T* dvalues) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t label = labels[r];
    if (label != ignore_index && label >= 0 && label < classes) dvalues[r * classes + label] = dpicked[r];
  }
}

}  // namespace vox::cuda
