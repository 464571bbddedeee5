#pragma once
// Differentiable views and layout changes. Each output is a fresh view of the input's storage;
// the backward maps the gradient back through the inverse view.
#include <numeric>

#include "vox/ops/fwd.hpp"

namespace vox {

inline Tensor permute(const Tensor& x, const Axes& order) {
  Tensor out = x.detach().permute(order);
  autograd::record("PermuteBackward", out, {x}, [order](const Tensor& g) {
    Axes inverse(order.size());
    for (size_t i = 0; i < order.size(); ++i)
      inverse[static_cast<size_t>(normalize_axis(order[i], static_cast<int64_t>(order.size()), "permute"))] =
          static_cast<int64_t>(i);
    return std::vector<Tensor>{g.permute(inverse)};
  });
  return out;
}

inline Tensor transpose(const Tensor& x, int64_t a, int64_t b) {
  Axes order(static_cast<size_t>(x.rank()));
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[static_cast<size_t>(normalize_axis(a, x.rank(), "transpose"))],
            order[static_cast<size_t>(normalize_axis(b, x.rank(), "transpose"))]);
  return permute(x, order);
}

inline Tensor reshape(const Tensor& x, const std::vector<int64_t>& shape) {
  Tensor out = x.detach().reshape(shape);
  const Shape in_shape = x.shape();
  autograd::record("ReshapeBackward", out, {x},
                   [in_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(in_shape.vec())}; });
  return out;
}

inline Tensor flatten(const Tensor& x, int64_t start, int64_t end) {
  if (x.rank() == 0) return reshape(x, {1});
  start = normalize_axis(start, x.rank(), "flatten");
  end = normalize_axis(end, x.rank(), "flatten");
  VOX_CHECK(start <= end, "flatten", "start axis ", start, " is after end axis ", end);
  std::vector<int64_t> shape;
  for (int64_t i = 0; i < start; ++i) shape.push_back(x.size(i));
  int64_t merged = 1;
  for (int64_t i = start; i <= end; ++i) merged *= x.size(i);
  shape.push_back(merged);
  for (int64_t i = end + 1; i < x.rank(); ++i) shape.push_back(x.size(i));
  return reshape(x, shape);
}

inline Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step) {
  Tensor out = x.detach().slice(axis, start, end, step);
  // Recover the clamped start the view used, from its offset.
  axis = normalize_axis(axis, x.rank(), "slice");
  const int64_t stride = x.stride(axis);
  const int64_t begin = stride == 0 ? 0 : (out.offset() - x.offset()) / stride;
  const Shape in_shape = x.shape();
  const DType dtype = x.dtype();
  autograd::record("SliceBackward", out, {x}, [=](const Tensor& g) {
    Tensor full = zeros(in_shape, dtype);
    full.slice(axis, begin, in_shape[axis], step).slice(axis, 0, g.size(axis)).copy_from(g);
    return std::vector<Tensor>{full};
  });
  return out;
}

inline Tensor expand(const Tensor& x, const Shape& shape) {
  Tensor out = x.detach().expand(shape);
  const Shape in_shape = x.shape();
  autograd::record("ExpandBackward", out, {x},
                   [in_shape](const Tensor& g) { return std::vector<Tensor>{sum_to(g, in_shape)}; });
  return out;
}

inline Tensor unsqueeze(const Tensor& x, int64_t axis) {
  Shape s = x.shape();
  s.insert(normalize_axis(axis, x.rank() + 1, "unsqueeze"), 1);
  return reshape(x, s.vec());
}

inline Tensor squeeze(const Tensor& x, int64_t axis) {
  axis = normalize_axis(axis, x.rank(), "squeeze");
  VOX_CHECK(x.size(axis) == 1, "squeeze", "axis ", axis, " of shape ", x.shape(), " is not 1");
  Shape s = x.shape();
  s.erase(axis);
  return reshape(x, s.vec());
}

inline Tensor contiguous(const Tensor& x) {
  Tensor out = x.detach().contiguous();
  autograd::record("ContiguousBackward", out, {x}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

inline Tensor cast(const Tensor& x, DType dtype) {
  Tensor out = x.detach().to(dtype);
  if (!is_floating(dtype)) return out;  // integers carry no gradient
  const DType from = x.dtype();
  autograd::record("CastBackward", out, {x}, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
  return out;
}

// x on `device`, differentiable: the gradient goes back to x's device (Tensor::to is not recorded).
inline Tensor to_device(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  Tensor out = x.detach().to(device);
  const Device from = x.device();
  autograd::record("ToDeviceBackward", out, {x}, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
  return out;
}

inline Tensor from_channels_first(const Tensor& x) {
  VOX_CHECK(x.rank() >= 3, "from_channels_first", "needs [N, C, spatial...] (rank >= 3), got shape ", x.shape());
  Axes order{0};
  for (int64_t i = 2; i < x.rank(); ++i) order.push_back(i);
  order.push_back(1);
  return contiguous(permute(x, order));
}

inline Tensor to_channels_first(const Tensor& x) {
  VOX_CHECK(x.rank() >= 3, "to_channels_first", "needs [N, spatial..., C] (rank >= 3), got shape ", x.shape());
  Axes order{0, x.rank() - 1};
  for (int64_t i = 1; i + 1 < x.rank(); ++i) order.push_back(i);
  return contiguous(permute(x, order));
}

}  // namespace vox
