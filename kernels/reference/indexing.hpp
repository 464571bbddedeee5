#pragma once
// Reference helpers: turn a flat row-major index into a strided offset, one element at a time.
// Slow and obviously right; the oracle for tests.
#include <cstdint>
#include <vector>

namespace vox::kernels::reference {

// Offset of flat index i of `shape` in an operand with `strides` (aligned on the right; missing
// or size-1 axes broadcast).
inline int64_t broadcast_offset(int64_t i, const std::vector<int64_t>& shape, const std::vector<int64_t>& op_shape,
                                const std::vector<int64_t>& op_strides) {
  int64_t offset = 0;
  const int64_t lead = static_cast<int64_t>(shape.size()) - static_cast<int64_t>(op_shape.size());
  for (int64_t axis = static_cast<int64_t>(shape.size()) - 1; axis >= 0; --axis) {
    const int64_t idx = i % shape[static_cast<size_t>(axis)];
    i /= shape[static_cast<size_t>(axis)];
    const int64_t a = axis - lead;
    if (a >= 0 && op_shape[static_cast<size_t>(a)] != 1) offset += idx * op_strides[static_cast<size_t>(a)];
  }
  return offset;
}

// out[i] = f(a[i], b[i]) over the broadcast shape, in double.
template <class F>
void map2(const std::vector<int64_t>& shape, double* out, const double* a, const std::vector<int64_t>& a_shape,
          const std::vector<int64_t>& a_strides, const double* b, const std::vector<int64_t>& b_shape,
          const std::vector<int64_t>& b_strides, F f) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  for (int64_t i = 0; i < n; ++i)
    out[i] = f(a[broadcast_offset(i, shape, a_shape, a_strides)], b[broadcast_offset(i, shape, b_shape, b_strides)]);
}

}  // namespace vox::kernels::reference
