#pragma once
// Integer labels [...] to one-hot [..., classes]: classes on the last axis, as vox's layout has
// channels last. Labels outside [0, classes) are an error that names the first one.
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

inline Tensor one_hot(const Tensor& labels, int64_t classes, DType dtype) {
  detail::check_cpu("one_hot", {&labels});
  VOX_CHECK(is_integral(labels.dtype()), "one_hot", "labels must be integers, got ", labels.dtype());
  VOX_CHECK(classes >= 1, "one_hot", "classes must be >= 1, got ", classes);
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
