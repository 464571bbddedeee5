#pragma once
// softmax and log_softmax along any axis, numerically stable (max subtracted, f64 sums).
#include "kernels/cpu/softmax.hpp"
#include "vox/ops/autocast.hpp"
#include "vox/ops/fwd.hpp"
#include "vox/ops/map.hpp"

namespace vox {

namespace detail {
inline Tensor softmax_impl(const char* op, const char* node, const Tensor& x, int64_t axis, bool log) {
  VOX_CHECK(is_floating(x.dtype()), op, "needs a floating tensor, got ", x.dtype());
  if (x.dtype() == DType::f16 || x.dtype() == DType::bf16) return cast(softmax_impl(op, node, cast(x, DType::f32), axis, log), x.dtype());
  if (x.rank() == 0) return softmax_impl(op, node, reshape(x, {1}), 0, log).reshape({});
  axis = normalize_axis(axis, x.rank(), op);
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= x.size(i);
  for (int64_t i = axis + 1; i < x.rank(); ++i) inner *= x.size(i);
  const int64_t n = x.size(axis);
  const Tensor xc = x.detach().contiguous();
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  if (x.device().is_cuda()) {
    cuda_backend(op).softmax(x.dtype(), outer, n, inner, xc.raw_data(), out.raw_data(), log, x.device().index);
    autograd::record(node, out, {x}, [y = out.detach(), outer, n, inner, log](const Tensor& g) {
      const Tensor gc = g.contiguous();
      Tensor gx = empty(y.shape(), y.dtype(), y.device());
      cuda_backend("softmax backward")
          .softmax_backward(y.dtype(), outer, n, inner, y.raw_data(), gc.raw_data(), gx.raw_data(), log, y.device().index);
      return std::vector<Tensor>{gx};
    });
    return out;
  }
  dispatch_float(x.dtype(), op, [&]<class T>() {
    kernels::cpu::softmax_forward<T>(xc.data<T>(), out.data<T>(), outer, n, inner, log);
  });
  autograd::record(node, out, {x}, [y = out.detach(), outer, n, inner, log](const Tensor& g) {
    const Tensor gc = g.contiguous();
    Tensor gx = empty(y.shape(), y.dtype());
    dispatch_float(y.dtype(), "softmax backward", [&]<class T>() {
      kernels::cpu::softmax_backward<T>(y.data<T>(), gc.data<T>(), gx.data<T>(), outer, n, inner, log);
    });
    return std::vector<Tensor>{gx};
  });
  return out;
}
}  // namespace detail

inline Tensor softmax(const Tensor& x, int64_t axis) {
  if (const auto c = detail::autocast_inputs("softmax", {&x}))
    return detail::without_autocast([&] { return softmax((*c)[0], axis); });
  return detail::softmax_impl("softmax", "SoftmaxBackward", x, axis, false);
}
inline Tensor log_softmax(const Tensor& x, int64_t axis) {
  if (const auto c = detail::autocast_inputs("log_softmax", {&x}))
    return detail::without_autocast([&] { return log_softmax((*c)[0], axis); });
  return detail::softmax_impl("log_softmax", "LogSoftmaxBackward", x, axis, true);
}

}  // namespace vox
