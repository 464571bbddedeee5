#pragma once
// Integer labels [...] to one-hot [..., classes]: classes on the last axis, as vox's layout has
// channels last. Labels outside [0, classes) are an error that names the first one. On a CUDA
// device the labels stay there (one kernel; one synchronisation to learn whether all were valid).
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

inline Tensor one_hot(const Tensor& labels, int64_t classes, DType dtype) {
  VOX_CHECK(is_integral(labels.dtype()), "one_hot", "labels must be integers, got ", labels.dtype());
  VOX_CHECK(classes >= 1, "one_hot", "classes must be >= 1, got ", classes);
  if (labels.device().is_cuda()) {
    const Tensor l64 = labels.detach().to(DType::i64).contiguous();
    Shape shape = labels.shape();
    shape.push_back(classes);
    Tensor out = empty(shape, dtype, labels.device());
    cuda_backend("one_hot").one_hot(dtype, l64.numel(), classes, static_cast<const int64_t*>(l64.raw_data()), out.raw_data(), labels.device().index);
    return out;
  }
  const std::vector<int64_t> values = labels.to_vector<int64_t>();
  for (size_t i = 0; i < values.size(); ++i)
    VOX_CHECK(values[i] >= 0 && values[i] < classes, "one_hot", "label ", values[i], " at flat index ", i, " of shape ",
              labels.shape(), " is outside [0, ", classes, ")");
  Shape shape = labels.shape();
  shape.push_back(classes);
  Tensor out = zeros(shape, dtype);
  dispatch_all(dtype, "one_hot", [&]<class T>() {
    T* p = out.data<T>();
    const auto n = static_cast<int64_t>(values.size());
    parallel_for(0, n, 65536, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i * classes + values[static_cast<size_t>(i)]] = static_cast<T>(static_cast<compute_t<T>>(1));
    });
  });
  return out;
}

}  // namespace vox
