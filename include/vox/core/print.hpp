#pragma once
// Printing for debugging: a header line (shape, dtype, device, strides when not contiguous,
// autograd state) and the values, summarised with "..." past a few thousand elements.
#include <iomanip>
#include <ostream>

#include "vox/core/tensor.hpp"

namespace vox {

namespace detail {
inline void print_values(std::ostream& out, const std::vector<double>& v, const Shape& s, int64_t axis,
                         int64_t base, bool summarise, int indent) {
  const int64_t n = s[axis];
  int64_t inner = 1;
  for (int64_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
  out << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (summarise && n > 6 && i == 3) {
      out << "...";
      i = n - 3;
      out << (axis + 1 == s.size() ? ", " : ",\n" + std::string(static_cast<size_t>(indent + 1), ' '));
    }
    if (axis + 1 == s.size()) {
      out << std::setw(10) << v[static_cast<size_t>(base + i)];
    } else {
      print_values(out, v, s, axis + 1, base + i * inner, summarise, indent + 1);
    }
    if (i + 1 < n) out << (axis + 1 == s.size() ? ", " : ",\n" + std::string(static_cast<size_t>(indent + 1), ' '));
  }
  out << ']';
}
}  // namespace detail

inline std::ostream& operator<<(std::ostream& out, const Tensor& t) {
  if (!t.defined()) return out << "Tensor(undefined)";
  out << "Tensor(shape=" << t.shape() << ", dtype=" << t.dtype() << ", device=" << t.device();
  if (!t.is_contiguous()) out << ", strides=" << t.strides();
  if (t.requires_grad()) out << ", requires_grad" << (t.is_leaf() ? "" : ", recorded");
  out << ")\n";
  const std::vector<double> values = t.detach().to_vector<double>();
  if (t.rank() == 0) return out << values[0];
  const auto flags = out.flags();
  const auto precision = out.precision();
  out << std::setprecision(5);
  detail::print_values(out, values, t.shape(), 0, 0, t.numel() > 1000, 0);
  out.flags(flags);
  out.precision(precision);
  return out;
}

}  // namespace vox
