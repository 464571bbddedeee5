#pragma once
// pad (constant, reflect, replicate) and flip: axis-separable gathers whose backward passes are
// the matching scatter-adds (kernels/cpu/gather.hpp; on a CUDA device kernels/cuda/gather.cuh).
#include "kernels/cpu/gather.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

namespace detail {
inline Tensor gather_op_cuda(const char* op, const char* node, const Tensor& x, const kernels::cpu::AxisMaps& maps, double fill,
                             const Shape& shape) {
  const Device device = x.device();
  Tensor out = empty(shape, x.dtype(), device);
  const Tensor xd = x.detach();
  cuda_backend(op).gather_axes(x.dtype(), maps, xd.raw_data(), xd.strides(), fill, out.raw_data(), device.index);
  if (!is_floating(x.dtype())) return out;
  autograd::record(node, out, {x}, [maps, in_shape = x.shape(), op](const Tensor& g) {
    const Tensor gc = g.contiguous();
    Tensor gx = empty(in_shape, g.dtype(), g.device());
    cuda_backend(op).scatter_add_axes(g.dtype(), maps, in_shape, gc.raw_data(), gx.raw_data(), g.device().index);
    return std::vector<Tensor>{gx};
  });
  return out;
}

inline Tensor gather_op(const char* op, const char* node, const Tensor& x, const kernels::cpu::AxisMaps& maps, double fill) {
  Shape shape;
  for (const auto& m : maps) shape.push_back(static_cast<int64_t>(m.size()));
  if (x.device().is_cuda()) return gather_op_cuda(op, node, x, maps, fill, shape);
  Tensor out = empty(shape, x.dtype());
  const Tensor xd = x.detach();
  dispatch_all(x.dtype(), op, [&]<class T>() {
    kernels::cpu::gather_axes<T>(static_cast<const T*>(xd.raw_data()), xd.strides().vec(), maps,
                                 static_cast<T>(static_cast<compute_t<T>>(fill)), out.data<T>());
  });
  if (!is_floating(x.dtype())) return out;
  autograd::record(node, out, {x}, [maps, in_shape = x.shape(), op](const Tensor& g) {
    const Tensor gc = g.contiguous();
    Tensor gx = empty(in_shape, g.dtype());
    dispatch_floating(g.dtype(), op, [&]<class T>() {
      kernels::cpu::scatter_add_axes<T>(gc.data<T>(), maps, in_shape.vec(), gx.data<T>());
    });
    return std::vector<Tensor>{gx};
  });
  return out;
}
}  // namespace detail

inline Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, PadMode mode, double value) {
  constexpr const char* op = "pad";
  VOX_CHECK(static_cast<int64_t>(pads.size()) == x.rank(), op, "needs one (before, after) pair per axis: ", pads.size(),
            " pairs for shape ", x.shape());
  kernels::cpu::AxisMaps maps(pads.size());
  for (size_t a = 0; a < pads.size(); ++a) {
    const auto [before, after] = pads[a];
    const int64_t n = x.size(static_cast<int64_t>(a));
    VOX_CHECK(n + before + after >= 0, op, "padding (", before, ", ", after, ") leaves axis ", a, " of shape ", x.shape(),
              " with a negative size");
    if (mode == PadMode::reflect)
      VOX_CHECK(before < n && after < n && before >= 0 && after >= 0, op, "reflect padding (", before, ", ", after,
                ") must be non-negative and smaller than axis ", a, " of shape ", x.shape());
    if (mode == PadMode::replicate && (before > 0 || after > 0))
      VOX_CHECK(n > 0, op, "cannot replicate-pad empty axis ", a, " of shape ", x.shape());
    for (int64_t o = 0; o < n + before + after; ++o) {
      int64_t src = o - before;
      if (src < 0 || src >= n) {
        if (mode == PadMode::constant) src = -1;
        else if (mode == PadMode::replicate) src = std::clamp<int64_t>(src, 0, n - 1);
        else src = src < 0 ? -src : 2 * (n - 1) - src;
      }
      maps[a].push_back(src);
    }
  }
  return detail::gather_op(op, "PadBackward", x, maps, value);
}

inline Tensor flip(const Tensor& x, const Axes& axes) {
  kernels::cpu::AxisMaps maps(static_cast<size_t>(x.rank()));
  std::vector<bool> flipped(static_cast<size_t>(x.rank()), false);
  for (int64_t a : axes) {
    const auto i = static_cast<size_t>(normalize_axis(a, x.rank(), "flip"));
    VOX_CHECK(!flipped[i], "flip", "axis ", a, " given twice");
    flipped[i] = true;
  }
  for (size_t a = 0; a < maps.size(); ++a) {
    const int64_t n = x.size(static_cast<int64_t>(a));
    for (int64_t o = 0; o < n; ++o) maps[a].push_back(flipped[a] ? n - 1 - o : o);
  }
  return detail::gather_op("flip", "FlipBackward", x, maps, 0.0);
}

}  // namespace vox
