#pragma once
// Internal helpers for elementwise ops: broadcast the operands, convert them to one input dtype,
// dispatch to a compute type, and run a functor over the kernels in kernels/cpu/elementwise.hpp.
// These do not record autograd; the ops that use them do.
#include <optional>

#include "kernels/cpu/elementwise.hpp"
#include "vox/autograd/node.hpp"
#include "vox/core/backend.hpp"
#include "vox/core/tensor.hpp"

namespace vox::detail {

enum class Kinds { floating, numeric, all };

template <Kinds K, class F>
decltype(auto) dispatch_kind(DType t, const char* op, F&& f) {
  if constexpr (K == Kinds::floating) return dispatch_floating(t, op, std::forward<F>(f));
  else if constexpr (K == Kinds::numeric) return dispatch_numeric(t, op, std::forward<F>(f));
  else return dispatch_all(t, op, std::forward<F>(f));
}

inline void check_cpu(const char* op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    if (t->defined())
      VOX_CHECK(t->device().is_cpu(), op, "tensor of shape ", t->shape(), " is on ", t->device(),
                t->device().is_cuda() ? "; this op has no CUDA kernel yet" : "; the CPU kernel needs every operand on cpu");
}

// The one device all defined operands are on (CPU or one CUDA device); any mix is refused.
inline Device device_of(const char* op, std::initializer_list<const Tensor*> tensors) {
  std::optional<Device> device;
  for (const Tensor* t : tensors)
    if (t->defined()) {
      VOX_CHECK(!device || *device == t->device(), op, "operands are on ", *device, " and ", t->device(),
                "; move them to one device with .to()");
      device = t->device();
    }
  return device.value_or(Device::cpu());
}

inline Tensor as_dtype(const Tensor& t, DType d) { return t.dtype() == d ? t : t.detach().to(d); }

// ---- the CUDA path of elementwise ops
// The CUDA device the operands are on, if any. A one-element CPU tensor (a scalar) may join CUDA
// operands, as in PyTorch; any other mix of devices is refused.
inline std::optional<Device> cuda_device_of(const char* op, std::initializer_list<const Tensor*> tensors) {
  std::optional<Device> device;
  for (const Tensor* t : tensors)
    if (t->defined() && t->device().is_cuda()) {
      VOX_CHECK(!device || *device == t->device(), op, "operands are on ", *device, " and ", t->device());
      device = t->device();
    }
  if (device)
    for (const Tensor* t : tensors)
      VOX_CHECK(!t->defined() || t->device().is_cuda() || t->numel() == 1, op, "operand of shape ", t->shape(),
                " is on cpu while another is on ", *device, "; move it with .to(", *device, ")");
  return device;
}

inline Tensor on_device(const Tensor& t, DType d, Device device) { return as_dtype(t, d).to(device); }

inline Tensor cuda_binary(const char* op, std::optional<CudaBinary> code, const Tensor& a, const Tensor& b, DType in, Device device) {
  VOX_CHECK(code.has_value(), op, "this op has no CUDA kernel yet; its operands are on ", device);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  const Tensor ad = on_device(a, in, device), bd = on_device(b, in, device);
  Tensor out = empty(shape, in, device);
  cuda_backend(op).binary(code->op, in, shape, out.raw_data(), ad.raw_data(), broadcast_strides(ad, shape), bd.raw_data(),
                          broadcast_strides(bd, shape), code->params, device.index);
  return out;
}

inline Tensor cuda_unary(const char* op, std::optional<CudaUnary> code, const Tensor& a, DType in, Device device) {
  VOX_CHECK(code.has_value(), op, "this op has no CUDA kernel yet; its operand is on ", device);
  const Tensor ad = on_device(a, in, device).contiguous();
  Tensor out = empty(a.shape(), in, device);
  cuda_backend(op).unary(code->op, in, ad.numel(), out.raw_data(), ad.raw_data(), code->params, device.index);
  return out;
}

// The result dtype of a map: the input dtype, or bool (comparisons). A compile-time choice, so
// each op instantiates only the kernels it can reach.
enum class Out { same, boolean };

// out = f(a) computed in dtype `in`.
// With a CUDA operand, `cuda_op` names the backend kernel (none: the op has no CUDA kernel yet).
template <Kinds K, Out O = Out::same, class F>
Tensor map_unary(const char* op, const Tensor& a, DType in, F f, std::optional<CudaUnary> cuda_op = std::nullopt) {
  if (const auto device = cuda_device_of(op, {&a})) {
    VOX_CHECK(O == Out::same, op, "this op has no CUDA kernel yet; its operand is on ", *device);
    return cuda_unary(op, cuda_op, a, in, *device);
  }
  const Tensor ain = as_dtype(a, in);
  Tensor result = empty(a.shape(), O == Out::same ? in : DType::boolean);
  auto layout = layout_for<2>(a.shape(), {&result, &ain});
  dispatch_kind<K>(in, op, [&]<class T>() {
    using TO = std::conditional_t<O == Out::same, T, bool>;
    kernels::cpu::map1<compute_t<T>>(layout, result.data<TO>(), static_cast<const T*>(ain.raw_data()), f);
  });
  return result;
}

// out = f(a, b) over the broadcast shape, computed in dtype `in`.
template <Kinds K, Out O = Out::same, class F>
Tensor map_binary(const char* op, const Tensor& a, const Tensor& b, DType in, F f, std::optional<CudaBinary> cuda_op = std::nullopt) {
  if (const auto device = cuda_device_of(op, {&a, &b})) {
    VOX_CHECK(O == Out::same, op, "this op has no CUDA kernel yet; its operands are on ", *device);
    return cuda_binary(op, cuda_op, a, b, in, *device);
  }
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  const Tensor ain = as_dtype(a, in), bin = as_dtype(b, in);
  Tensor result = empty(shape, O == Out::same ? in : DType::boolean);
  auto layout = layout_for<3>(shape, {&result, &ain, &bin});
  dispatch_kind<K>(in, op, [&]<class T>() {
    using TO = std::conditional_t<O == Out::same, T, bool>;
    kernels::cpu::map2<compute_t<T>>(layout, result.data<TO>(), static_cast<const T*>(ain.raw_data()),
                                     static_cast<const T*>(bin.raw_data()), f);
  });
  return result;
}

// out = f(a, b, c), all in dtype `in`, output the same dtype.
template <Kinds K, class F>
Tensor map_ternary(const char* op, const Tensor& a, const Tensor& b, const Tensor& c, DType in, F f) {
  check_cpu(op, {&a, &b, &c});
  const Shape shape = broadcast_shapes(broadcast_shapes(a.shape(), b.shape(), op), c.shape(), op);
  const Tensor ain = as_dtype(a, in), bin = as_dtype(b, in), cin = as_dtype(c, in);
  Tensor result = empty(shape, in);
  auto layout = layout_for<4>(shape, {&result, &ain, &bin, &cin});
  dispatch_kind<K>(in, op, [&]<class T>() {
    kernels::cpu::map3<compute_t<T>>(layout, result.data<T>(), static_cast<const T*>(ain.raw_data()),
                                     static_cast<const T*>(bin.raw_data()), static_cast<const T*>(cin.raw_data()), f);
  });
  return result;
}

// The dtype floating ops compute in: floating inputs keep theirs, others become f32.
inline DType floating_of(DType t) { return is_floating(t) ? t : DType::f32; }

}  // namespace vox::detail
