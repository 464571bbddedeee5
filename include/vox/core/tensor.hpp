#pragma once
// Tensor: a strided view (shape, strides, offset; rank 0..8) of shared, reference-counted
// storage, with a dtype and a device. Views share storage; data operations allocate.
//
// The members here are the raw floor-2 operations. They do not record autograd: on a tensor
// that requires grad they throw, pointing at the differentiable free function (vox::permute,
// vox::reshape, ...) from vox/ops. `detach()` gives a raw view that never records.
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/cpu/strided.hpp"
#include "kernels/reference/convert.hpp"
#include "vox/core/device.hpp"
#include "vox/core/dtype.hpp"
#include "vox/core/error.hpp"
#include "vox/core/shape.hpp"
#include "vox/core/storage.hpp"

namespace vox {

namespace autograd {
struct Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  Strides strides;  // in elements
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<autograd::Node> grad_fn;  // the node that produced this tensor, if recorded
  std::shared_ptr<TensorImpl> grad;         // accumulated gradient of a leaf
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- metadata
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return checked().shape; }
  const Strides& strides() const { return checked().strides; }
  int64_t rank() const { return shape().size(); }
  int64_t size(int64_t axis) const { return shape()[normalize_axis(axis, rank(), "Tensor::size")]; }
  int64_t stride(int64_t axis) const { return strides()[normalize_axis(axis, rank(), "Tensor::stride")]; }
  int64_t numel() const { return numel_of(shape()); }
  int64_t offset() const { return checked().offset; }
  DType dtype() const { return checked().dtype; }
  Device device() const { return checked().storage->device(); }
  size_t element_size() const { return dtype_size(dtype()); }
  bool is_contiguous() const {
    const auto& s = shape();
    const auto& st = strides();
    int64_t expected = 1;
    for (int64_t i = s.size() - 1; i >= 0; --i) {
      if (s[i] != 1 && st[i] != expected) return false;
      expected *= s[i];
    }
    return true;
  }
  // True when both describe the same elements of the same storage.
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  // ---- element access
  void* raw_data() const {
    const auto& t = checked();
    return static_cast<char*>(t.storage->data()) + t.offset * static_cast<int64_t>(dtype_size(t.dtype));
  }
  template <class T>
  T* data() const {
    VOX_CHECK(dtype() == dtype_v<T>, "Tensor::data", "tensor has dtype ", dtype(),
              ", asked for ", dtype_name(dtype_v<T>));
    VOX_CHECK(device().is_cpu(), "Tensor::data", "host access to a tensor on ", device(),
              "; copy it with .to(Device::cpu()) first");
    return static_cast<T*>(raw_data());
  }
  template <class T> T item() const;
  template <class T> std::vector<T> to_vector() const;  // row-major values, converted to T

  // ---- raw views (share storage)
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor reshape(const std::vector<int64_t>& shape) const;  // a view when strides allow it
  Tensor slice(int64_t axis, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor expand(const Shape& shape) const;
  Tensor unsqueeze(int64_t axis) const;
  Tensor squeeze(int64_t axis) const;
  Tensor as_strided(const Shape& shape, const Strides& strides, int64_t offset) const;

  // ---- data operations (allocate)
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;
  Tensor to(DType dtype) const;  // itself when the dtype already matches
  Tensor to(Device device) const;
  // With non_blocking, a copy between a pinned host tensor and a device is queued on the device's
  // current stream and this returns at once (a device-to-host copy lands in a new pinned tensor);
  // synchronise the stream before the host reads or writes that data. Pageable memory copies
  // synchronously, as PyTorch does.
  Tensor to(Device device, bool non_blocking) const;
  bool is_pinned() const { return checked().storage->pinned(); }
  // A contiguous copy in page-locked host memory (itself when already pinned); needs the CUDA backend.
  Tensor pin_memory() const;
  void copy_from(const Tensor& src) const;  // src broadcast to this shape, converted to this dtype
  void fill(double value) const;

  // ---- autograd state (the engine lives in vox/autograd)
  bool requires_grad() const { return defined() && impl_->requires_grad; }
  Tensor& set_requires_grad(bool on = true) {
    VOX_CHECK(!on || is_floating(dtype()), "Tensor::set_requires_grad",
              "only floating-point tensors can require grad, this one is ", dtype());
    VOX_CHECK(is_leaf(), "Tensor::set_requires_grad", "only leaf tensors can change requires_grad");
    impl_->requires_grad = on;
    return *this;
  }
  bool is_leaf() const { return !checked().grad_fn; }
  Tensor grad() const { return Tensor(checked().grad); }
  void set_grad(const Tensor& g) const { checked().grad = g.impl_; }
  void zero_grad() const { checked().grad.reset(); }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return checked().grad_fn; }
  Tensor detach() const {  // same data, no history, does not require grad
    auto view = std::make_shared<TensorImpl>(checked());
    view->requires_grad = false;
    view->grad_fn.reset();
    view->grad.reset();
    return Tensor(view);
  }
  // Defined in vox/autograd/engine.hpp.
  void backward() const;
  void backward(const Tensor& gradient) const;

 private:
  TensorImpl& checked() const {
    if (!impl_) throw Error("Tensor: operation on an undefined tensor");
    return *impl_;
  }
  void refuse_if_tracked(const char* op, const char* replacement) const {
    if (requires_grad())
      fail(op, "tensor requires grad and raw views do not record it; use ", replacement,
           " (or call detach() first)");
  }
  Tensor view_with(const Shape& shape, const Strides& strides, int64_t offset) const {
    auto v = std::make_shared<TensorImpl>();
    v->storage = checked().storage;
    v->offset = offset;
    v->shape = shape;
    v->strides = strides;
    v->dtype = impl_->dtype;
    return Tensor(v);
  }

  std::shared_ptr<TensorImpl> impl_;
};

// ---------------------------------------------------------------- factories

inline Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
  for (int64_t d : shape) VOX_CHECK(d >= 0, "empty", "negative dimension in shape ", shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(numel_of(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

inline Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu()) {
  Tensor t = empty(shape, dtype, device);
  t.fill(value);
  return t;
}
inline Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
  Tensor t = empty(shape, dtype, device);
  if (device.is_cpu()) std::memset(t.raw_data(), 0, static_cast<size_t>(t.numel()) * dtype_size(dtype));
  else t.fill(0.0);
  return t;
}
inline Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
  return full(shape, 1.0, dtype, device);
}
// Uninitialised, contiguous, in page-locked host memory (see Tensor::pin_memory).
inline Tensor empty_pinned(const Shape& shape, DType dtype = DType::f32) {
  for (int64_t d : shape) VOX_CHECK(d >= 0, "empty_pinned", "negative dimension in shape ", shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(numel_of(shape)) * dtype_size(dtype), Device::cpu(),
                                            HostMemory::pinned);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}
inline Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }
inline Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
inline Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }
inline Tensor scalar(double value, DType dtype = DType::f32) { return full(Shape{}, value, dtype); }

// A tensor holding `values` (row-major) with the given shape; the dtype is T's.
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  VOX_CHECK(static_cast<int64_t>(values.size()) == numel_of(shape), "from_vector", values.size(),
            " values do not fill shape ", shape);
  Tensor t = empty(shape, dtype_v<T>);
  if constexpr (std::is_same_v<T, bool>) {
    for (size_t i = 0; i < values.size(); ++i) t.data<bool>()[i] = values[i];
  } else {
    std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  }
  return t;
}

inline Tensor arange(int64_t n, DType dtype = DType::i64) {
  Tensor t = empty(Shape{n}, dtype);
  dispatch_numeric(dtype, "arange", [&]<class T>() {
    T* p = t.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(static_cast<compute_t<T>>(i));
  });
  return t;
}

// ---------------------------------------------------------------- conversions

namespace detail {
// One value from dtype S to dtype D, by the rules every device follows: floating to integer
// truncates, saturates and takes NaN to 0 (kernels/reference/convert.hpp); the rest is C++'s.
template <class D, class S>
inline D convert_value(S s) {
  if constexpr (std::is_same_v<D, S>) {
    return s;
  } else if constexpr (std::is_same_v<D, bool>) {
    return static_cast<compute_t<S>>(s) != compute_t<S>(0);
  } else if constexpr (std::is_same_v<D, half> || std::is_same_v<D, bfloat16>) {
    return D(static_cast<float>(static_cast<compute_t<S>>(s)));
  } else if constexpr (std::is_integral_v<D> && std::is_floating_point_v<compute_t<S>>) {
    return kernels::reference::integer_from_floating<D>(static_cast<compute_t<S>>(s));
  } else {
    return static_cast<D>(static_cast<compute_t<S>>(s));
  }
}

template <int K>
kernels::cpu::StridedLayout<K> layout_for(const Shape& shape, const std::array<const Tensor*, K>& ops) {
  kernels::cpu::StridedLayout<K> layout;
  layout.rank = static_cast<int>(shape.size());
  for (int64_t i = 0; i < shape.size(); ++i) layout.shape[static_cast<size_t>(i)] = shape[i];
  for (int k = 0; k < K; ++k) {
    const Tensor& t = *ops[static_cast<size_t>(k)];
    const int64_t lead = shape.size() - t.rank();
    for (int64_t i = 0; i < shape.size(); ++i) {
      const int64_t a = i - lead;
      layout.strides[k][static_cast<size_t>(i)] = (a < 0 || t.shape()[a] == 1) ? 0 : t.strides()[a];
    }
    layout.base[k] = 0;
  }
  return layout;
}
}  // namespace detail

namespace detail {
// `src` moved to `target` as a contiguous tensor of the same shape and dtype.
inline Tensor transfer(const Tensor& src, Device target) {
  const Tensor c = src.contiguous();  // on the source device
  Tensor out = empty(c.shape(), c.dtype(), target);
  cuda_backend("copy").copy_bytes(out.raw_data(), target, c.raw_data(), c.device(), static_cast<size_t>(c.numel()) * dtype_size(c.dtype()));
  return out;
}
// The strides of `t` seen over `shape` (zero on broadcast axes).
inline Strides broadcast_strides(const Tensor& t, const Shape& shape) {
  Strides st = Strides::filled(shape.size(), 0);
  const int64_t lead = shape.size() - t.rank();
  for (int64_t i = 0; i < t.rank(); ++i) st[lead + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  return st;
}
}  // namespace detail

inline void Tensor::copy_from(const Tensor& src) const {
  VOX_CHECK(broadcast_shapes(shape(), src.shape(), "copy") == shape(), "copy", "source shape ",
            src.shape(), " does not broadcast to destination shape ", shape());
  if (!device().is_cpu() || !src.device().is_cpu()) {
    const Tensor staged = src.device() == device() ? src : detail::transfer(src, device());
    if (device().is_cpu()) return copy_from(staged);
    cuda_backend("copy").copy_strided(raw_data(), dtype(), strides(), staged.raw_data(), staged.dtype(),
                                      detail::broadcast_strides(staged, shape()), shape(), device().index);
    return;
  }
  auto layout = detail::layout_for<2>(shape(), {this, &src});
  dispatch_all(dtype(), "copy", [&]<class D>() {
    dispatch_all(src.dtype(), "copy", [&]<class S>() {
      D* d = static_cast<D*>(raw_data());
      const S* s = static_cast<const S*>(src.raw_data());
      kernels::cpu::for_each_row<2>(layout, [&](std::array<int64_t, 2> o, int64_t n, std::array<int64_t, 2> st) {
        D* dp = d + o[0];
        const S* sp = s + o[1];
        if (st[0] == 1 && st[1] == 1) {
          for (int64_t j = 0; j < n; ++j) dp[j] = detail::convert_value<D>(sp[j]);
        } else {
          for (int64_t j = 0; j < n; ++j) dp[j * st[0]] = detail::convert_value<D>(sp[j * st[1]]);
        }
      });
    });
  });
}

inline void Tensor::fill(double value) const {
  Tensor v = empty(Shape{}, DType::f64);
  *v.data<double>() = value;
  copy_from(device().is_cpu() ? v : v.to(dtype()).to(device()));
}

inline Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape(), dtype(), device());
  out.copy_from(*this);
  return out;
}

inline Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  out.copy_from(*this);
  return out;
}

inline Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = empty(shape(), target, device());
  out.copy_from(*this);
  return out;
}

inline Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  return detail::transfer(*this, target);  // one copy across, not a staged copy and a second pass
}

inline Tensor Tensor::pin_memory() const {
  VOX_CHECK(device().is_cpu(), "pin_memory", "only host tensors can be pinned; this one is on ", device());
  if (is_pinned() && is_contiguous()) return *this;
  Tensor out = empty_pinned(shape(), dtype());
  out.copy_from(*this);
  return out;
}

inline Tensor Tensor::to(Device target, bool non_blocking) const {
  const bool host_to_device = device().is_cpu() && target.is_cuda() && is_pinned() && is_contiguous();
  const bool device_to_host = device().is_cuda() && target.is_cpu();
  if (!non_blocking || target == device() || !(host_to_device || device_to_host)) return to(target);
  const Tensor c = contiguous();
  Tensor out = target.is_cpu() ? empty_pinned(shape(), dtype()) : empty(shape(), dtype(), target);
  cuda_backend("to").copy_bytes_async(out.raw_data(), target, c.raw_data(), c.device(),
                                      static_cast<size_t>(c.numel()) * dtype_size(c.dtype()));
  return out;
}

template <class T>
T Tensor::item() const {
  VOX_CHECK(numel() == 1, "Tensor::item", "needs exactly one element, tensor has shape ", shape());
  return to_vector<T>()[0];
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = to(Device::cpu()).to(dtype_v<T>).contiguous();
  std::vector<T> out(static_cast<size_t>(numel()));
  const T* p = c.data<T>();
  for (size_t i = 0; i < out.size(); ++i) out[i] = p[i];
  return out;
}

// ---------------------------------------------------------------- raw views

inline Tensor Tensor::as_strided(const Shape& s, const Strides& st, int64_t off) const {
  VOX_CHECK(s.size() == st.size(), "as_strided", "shape ", s, " and strides ", st, " differ in rank");
  return view_with(s, st, off);
}

inline Tensor Tensor::permute(const std::vector<int64_t>& order) const {
  refuse_if_tracked("Tensor::permute", "vox::permute");
  VOX_CHECK(static_cast<int64_t>(order.size()) == rank(), "permute", "order has ", order.size(),
            " axes, tensor of shape ", shape(), " has ", rank());
  Shape s = Shape::filled(rank(), 0);
  Strides st = Strides::filled(rank(), 0);
  std::vector<bool> seen(static_cast<size_t>(rank()), false);
  for (int64_t i = 0; i < rank(); ++i) {
    const int64_t a = normalize_axis(order[static_cast<size_t>(i)], rank(), "permute");
    VOX_CHECK(!seen[static_cast<size_t>(a)], "permute", "axis ", a, " repeated in the order");
    seen[static_cast<size_t>(a)] = true;
    s[i] = shape()[a];
    st[i] = strides()[a];
  }
  return view_with(s, st, offset());
}

inline Tensor Tensor::transpose(int64_t a, int64_t b) const {
  a = normalize_axis(a, rank(), "transpose");
  b = normalize_axis(b, rank(), "transpose");
  std::vector<int64_t> order(static_cast<size_t>(rank()));
  for (int64_t i = 0; i < rank(); ++i) order[static_cast<size_t>(i)] = i;
  std::swap(order[static_cast<size_t>(a)], order[static_cast<size_t>(b)]);
  return permute(order);
}

namespace detail {
// Resolves one -1 and checks the element count.
inline Shape infer_shape(const std::vector<int64_t>& requested, int64_t numel, const Shape& from) {
  Shape s(requested);
  int64_t known = 1, infer = -1;
  for (int64_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      VOX_CHECK(infer < 0, "reshape", "more than one -1 in ", s);
      infer = i;
    } else {
      VOX_CHECK(s[i] >= 0, "reshape", "negative size in ", s);
      known *= s[i];
    }
  }
  if (infer >= 0) {
    VOX_CHECK(known > 0 && numel % known == 0, "reshape", "cannot reshape ", from, " into ", s);
    s[infer] = numel / known;
  }
  VOX_CHECK(numel_of(s) == numel, "reshape", "cannot reshape ", from, " (", numel, " elements) into ", s);
  return s;
}

// Strides that let `to` view the same elements as (from, st), or false when it needs a copy.
// Walks the source in chunks whose axes are laid out as one run, and maps target axes onto them.
inline bool view_strides(const Shape& from, const Strides& st, const Shape& to, Strides& out) {
  out = Strides::filled(to.size(), 0);
  if (from.size() == 0) return false;
  int64_t view_d = to.size() - 1;
  int64_t chunk_base_stride = st[from.size() - 1];
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = from.size() - 1; d >= 0; --d) {
    tensor_numel *= from[d];
    const bool chunk_ends = d == 0 || (from[d - 1] != 1 && st[d - 1] != tensor_numel * chunk_base_stride);
    if (!chunk_ends) continue;
    while (view_d >= 0 && (view_numel < tensor_numel || to[view_d] == 1)) {
      out[view_d] = view_numel * chunk_base_stride;
      view_numel *= to[view_d];
      --view_d;
    }
    if (view_numel != tensor_numel) return false;
    if (d > 0) {
      chunk_base_stride = st[d - 1];
      tensor_numel = 1;
      view_numel = 1;
    }
  }
  return view_d == -1;
}
}  // namespace detail

inline Tensor Tensor::reshape(const std::vector<int64_t>& requested) const {
  refuse_if_tracked("Tensor::reshape", "vox::reshape");
  const Shape target = detail::infer_shape(requested, numel(), shape());
  if (is_contiguous() || numel() == 0) return view_with(target, contiguous_strides(target), offset());
  Strides st;
  if (detail::view_strides(shape(), strides(), target, st)) return view_with(target, st, offset());
  Tensor c = contiguous();
  return c.view_with(target, contiguous_strides(target), c.offset());
}

inline Tensor Tensor::slice(int64_t axis, int64_t start, int64_t end, int64_t step) const {
  refuse_if_tracked("Tensor::slice", "vox::slice");
  axis = normalize_axis(axis, rank(), "slice");
  VOX_CHECK(step > 0, "slice", "step must be positive, got ", step);
  const int64_t n = shape()[axis];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = shape();
  Strides st = strides();
  s[axis] = (end - start + step - 1) / step;
  st[axis] = strides()[axis] * step;
  return view_with(s, st, offset() + start * strides()[axis]);
}

inline Tensor Tensor::expand(const Shape& target) const {
  refuse_if_tracked("Tensor::expand", "vox::expand");
  VOX_CHECK(target.size() >= rank(), "expand", "cannot expand shape ", shape(), " to fewer axes ", target);
  Shape s = target;
  Strides st = Strides::filled(target.size(), 0);
  const int64_t lead = target.size() - rank();
  for (int64_t i = 0; i < target.size(); ++i) {
    if (i < lead) {
      VOX_CHECK(target[i] >= 0, "expand", "new leading axis ", i, " needs a size, got ", target[i]);
      continue;
    }
    const int64_t have = shape()[i - lead];
    if (target[i] == -1 || target[i] == have) {
      s[i] = have;
      st[i] = strides()[i - lead];
    } else {
      VOX_CHECK(have == 1, "expand", "cannot expand shape ", shape(), " to ", target, " (axis ", i, ")");
      st[i] = 0;
    }
  }
  return view_with(s, st, offset());
}

inline Tensor Tensor::unsqueeze(int64_t axis) const {
  refuse_if_tracked("Tensor::unsqueeze", "vox::unsqueeze");
  axis = normalize_axis(axis, rank() + 1, "unsqueeze");
  Shape s = shape();
  Strides st = strides();
  s.insert(axis, 1);
  st.insert(axis, axis < rank() ? strides()[axis] * shape()[axis] : 1);
  return view_with(s, st, offset());
}

inline Tensor Tensor::squeeze(int64_t axis) const {
  refuse_if_tracked("Tensor::squeeze", "vox::squeeze");
  axis = normalize_axis(axis, rank(), "squeeze");
  VOX_CHECK(shape()[axis] == 1, "squeeze", "axis ", axis, " of shape ", shape(), " is not 1");
  Shape s = shape();
  Strides st = strides();
  s.erase(axis);
  st.erase(axis);
  return view_with(s, st, offset());
}

}  // namespace vox
