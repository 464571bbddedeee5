#pragma once
// Elementwise kernels: strided copies with dtype conversion (the basis of contiguous(), to()
// and broadcasting), binary ops over broadcast operands and unary ops. Indexing is 64-bit and
// grid-stride, so any size runs with a bounded grid; operands that are contiguous and of the
// output's shape take a path without index arithmetic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/reference/convert.hpp"
#include "vox/core/backend.hpp"

namespace vox::cuda {

constexpr int kMaxRank = 8;

// Shape and the strides (in elements) of up to three operands, passed by value to kernels.
struct Indexer {
  int rank = 0;
  int64_t shape[kMaxRank];
  int64_t strides[3][kMaxRank];

  __device__ void offsets(int64_t linear, int64_t* out, int operands) const {
    for (int k = 0; k < operands; ++k) out[k] = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const int64_t i = linear % shape[d];
      linear /= shape[d];
      for (int k = 0; k < operands; ++k) out[k] += i * strides[k][d];
    }
  }
};

inline Indexer make_indexer(const Shape& shape, std::initializer_list<const Strides*> strides) {
  Indexer ix;
  ix.rank = static_cast<int>(shape.size());
  for (int d = 0; d < ix.rank; ++d) ix.shape[d] = shape[d];
  int k = 0;
  for (const Strides* s : strides) {
    for (int d = 0; d < ix.rank; ++d) ix.strides[k][d] = (*s)[d];
    ++k;
  }
  return ix;
}

// A grid for n elements: enough blocks to fill the device, no more than needed.
inline dim3 grid_for(int64_t n, int threads = 256) {
  const int64_t blocks = (n + threads - 1) / threads;
  return dim3(static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535 * 8)));
}

// ---- values in double, for the arithmetic of the ops below (exact for every floating dtype and
// for integers up to 2^53; copies and comparisons do not go through it)
template <class T>
__device__ double to_double(T v) {
  return static_cast<double>(v);
}
template <>
__device__ inline double to_double<__half>(__half v) {
  return static_cast<double>(__half2float(v));
}
template <>
__device__ inline double to_double<__nv_bfloat16>(__nv_bfloat16 v) {
  return static_cast<double>(__bfloat162float(v));
}
template <class T>
__device__ T from_double(double v) {
  return static_cast<T>(v);
}
template <>
__device__ inline __half from_double<__half>(double v) {
  return __float2half(static_cast<float>(v));  // through f32, as the CPU rounds
}
template <>
__device__ inline __nv_bfloat16 from_double<__nv_bfloat16>(double v) {
  return __float2bfloat16(static_cast<float>(v));
}
template <>
__device__ inline bool from_double<bool>(double v) {
  return v != 0.0;
}

// ---- conversion of one stored value, by the CPU's rules (vox::detail::convert_value): the same
// dtype is the same bits; integers convert among themselves exactly (wrapping where C++ does);
// floating to integer truncates, saturates and takes NaN to 0 (kernels/reference/convert.hpp);
// 16-bit floats are made from f32, as on the CPU.
template <class T>
inline constexpr bool is_half_v = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// f32 for the 16-bit floats, T otherwise: the type a value is compared and converted in.
template <class T>
__device__ auto widened(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return v;
}

template <class D, class S>
__device__ D convert(S v) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_same_v<D, bool>) {
    return widened(v) != decltype(widened(v))(0);
  } else if constexpr (std::is_same_v<D, __half>) {
    return __float2half(static_cast<float>(widened(v)));
  } else if constexpr (std::is_same_v<D, __nv_bfloat16>) {
    return __float2bfloat16(static_cast<float>(widened(v)));
  } else if constexpr (std::is_integral_v<D> && (is_half_v<S> || std::is_floating_point_v<S>)) {
    return kernels::reference::integer_from_floating<D>(widened(v));
  } else {
    return static_cast<D>(v);
  }
}

template <class D, class S>
__global__ void copy_strided_kernel(D* dst, const S* src, Indexer ix, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off, 2);
    dst[off[0]] = convert<D>(src[off[1]]);
  }
}

template <class D, class S>
__global__ void copy_same_kernel(D* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = convert<D>(src[i]);
}

// ---- binary and unary ops, computed in T (f32 or f64)
template <class T>
__device__ T gelu_erf_grad(T v) {
  const T cdf = T(0.5) * (T(1) + erf(v * T(0.70710678118654752440)));
  const T pdf = exp(T(-0.5) * v * v) * T(0.39894228040143267794);  // 1 / sqrt(2 pi)
  return cdf + v * pdf;
}
template <class T>
__device__ T gelu_tanh_grad(T v) {
  const T k = T(0.79788456080286535588);  // sqrt(2 / pi)
  const T t = tanh(k * (v + T(0.044715) * v * v * v));
  return T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * k * (T(1) + T(3 * 0.044715) * v * v);
}

template <class T>
__device__ T apply_binary(BinaryOp op, T a, T b, const OpParams& p) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
    case BinaryOp::relu_backward: return b > T(0) ? a : T(0);
    case BinaryOp::nonpositive_part: return b > T(0) ? T(0) : a;
    case BinaryOp::abs_backward: return b > T(0) ? a : b < T(0) ? -a : T(0);
    case BinaryOp::square_backward: return T(2) * a * b;
    case BinaryOp::pow_scalar_backward: return p.a == 0.0 ? T(0) : a * T(p.a) * pow(b, T(p.a - 1.0));
    case BinaryOp::clamp_backward: return (static_cast<double>(b) >= p.a && static_cast<double>(b) <= p.b) ? a : T(0);
    case BinaryOp::leaky_relu_backward: return b > T(0) ? a : T(p.a) * a;
    case BinaryOp::gelu_erf_backward: return a * gelu_erf_grad(b);
    case BinaryOp::gelu_tanh_backward: return a * gelu_tanh_grad(b);
    case BinaryOp::prelu: return a > T(0) ? a : b * a;
    case BinaryOp::pow: return pow(a, b);
  }
  return T(0);
}

template <class T>
__device__ T apply_unary(UnaryOp op, T v, const OpParams& p) {
  switch (op) {
    case UnaryOp::neg: return -v;
    case UnaryOp::exp: return exp(v);
    case UnaryOp::log: return log(v);
    case UnaryOp::sqrt: return sqrt(v);
    case UnaryOp::relu: return v > T(0) ? v : T(0);
    case UnaryOp::sigmoid: return T(1) / (T(1) + exp(-v));
    case UnaryOp::tanh: return tanh(v);
    case UnaryOp::abs: return v < T(0) ? -v : v;
    case UnaryOp::square: return v * v;
    case UnaryOp::pow_scalar: return pow(v, T(p.a));
    case UnaryOp::clamp: {
      if (v != v) return v;
      const double d = static_cast<double>(v);
      return d < p.a ? T(p.a) : d > p.b ? T(p.b) : v;
    }
    case UnaryOp::leaky_relu: return v > T(0) ? v : T(p.a) * v;
    case UnaryOp::gelu_erf: return T(0.5) * v * (T(1) + erf(v * T(0.70710678118654752440)));
    case UnaryOp::gelu_tanh: return T(0.5) * v * (T(1) + tanh(T(0.79788456080286535588) * (v + T(0.044715) * v * v * v)));
  }
  return T(0);
}

template <class T>
__global__ void binary_strided_kernel(BinaryOp op, OpParams p, T* dst, const T* a, const T* b, Indexer ix, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t off[3];
    ix.offsets(i, off, 3);
    dst[off[0]] = apply_binary(op, a[off[1]], b[off[2]], p);
  }
}

// ---- integer arithmetic, exact at every width: add, sub and mul wrap as two's complement (done
// in the unsigned type, where C++ defines the wrap); neg, abs and square likewise. The host
// refuses every other op on integers (integer_op_supported) before a launch.
inline bool integer_op_supported(BinaryOp op) { return op == BinaryOp::add || op == BinaryOp::sub || op == BinaryOp::mul; }
inline bool integer_op_supported(UnaryOp op) { return op == UnaryOp::neg || op == UnaryOp::abs || op == UnaryOp::square; }

template <class T>
__device__ T apply_integer(BinaryOp op, T a, T b) {
  using U = std::make_unsigned_t<T>;
  const U x = static_cast<U>(a), y = static_cast<U>(b);
  switch (op) {
    case BinaryOp::add: return static_cast<T>(static_cast<U>(x + y));
    case BinaryOp::sub: return static_cast<T>(static_cast<U>(x - y));
    default: return static_cast<T>(static_cast<U>(x * y));  // mul
  }
}
template <class T>
__device__ T apply_integer(UnaryOp op, T v) {
  using U = std::make_unsigned_t<T>;
  const U x = static_cast<U>(v);
  switch (op) {
    case UnaryOp::neg: return static_cast<T>(static_cast<U>(U(0) - x));
    case UnaryOp::abs:
      if constexpr (std::is_signed_v<T>) return v < T(0) ? static_cast<T>(static_cast<U>(U(0) - x)) : v;
      else return v;
    default: return static_cast<T>(static_cast<U>(x * x));  // square
  }
}
template <class T>
__global__ void binary_integer_kernel(BinaryOp op, T* dst, const T* a, const T* b, Indexer ix, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t off[3];
    ix.offsets(i, off, 3);
    dst[off[0]] = apply_integer(op, a[off[1]], b[off[2]]);
  }
}
template <class T>
__global__ void unary_integer_kernel(UnaryOp op, T* dst, const T* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = apply_integer(op, src[i]);
}

template <class T>
__global__ void binary_contiguous_kernel(BinaryOp op, OpParams p, T* dst, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = apply_binary(op, a[i], b[i], p);
}

template <class T>
__global__ void unary_kernel(UnaryOp op, OpParams p, T* dst, const T* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = apply_unary(op, src[i], p);
}

// 16-bit storage (f16, bf16): each element is widened to float, computed, and rounded once on
// the way back, as on the CPU.
template <class S>
__global__ void binary_half_kernel(BinaryOp op, OpParams p, S* dst, const S* a, const S* b, Indexer ix, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t off[3];
    ix.offsets(i, off, 3);
    const float x = static_cast<float>(to_double(a[off[1]])), y = static_cast<float>(to_double(b[off[2]]));
    dst[off[0]] = from_double<S>(apply_binary(op, x, y, p));
  }
}

template <class S>
__global__ void unary_half_kernel(UnaryOp op, OpParams p, S* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = from_double<S>(apply_unary(op, static_cast<float>(to_double(src[i])), p));
}

// Four elements per thread through one 16-byte (f32) or 32-byte (f64) access: fewer, wider
// memory transactions. For n a multiple of 4 and 16-byte-aligned pointers (the launcher checks).
template <class T>
struct alignas(4 * sizeof(T)) Vec4 {
  T v[4];
};

template <class T>
__global__ void binary_vec4_kernel(BinaryOp op, OpParams p, Vec4<T>* dst, const Vec4<T>* a, const Vec4<T>* b, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4; i += int64_t{gridDim.x} * blockDim.x) {
    const Vec4<T> x = a[i], y = b[i];
    Vec4<T> out;
#pragma unroll
    for (int k = 0; k < 4; ++k) out.v[k] = apply_binary(op, x.v[k], y.v[k], p);
    dst[i] = out;
  }
}

template <class T>
__global__ void unary_vec4_kernel(UnaryOp op, OpParams p, Vec4<T>* dst, const Vec4<T>* src, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4; i += int64_t{gridDim.x} * blockDim.x) {
    const Vec4<T> x = src[i];
    Vec4<T> out;
#pragma unroll
    for (int k = 0; k < 4; ++k) out.v[k] = apply_unary(op, x.v[k], p);
    dst[i] = out;
  }
}

// Comparisons in the operands' own type (integers compare exactly, 64-bit ones too; 16-bit
// floats in f32, which holds them exactly), into bool.
template <class T>
__global__ void compare_kernel(CompareOp op, bool* dst, const T* a, const T* b, Indexer ix, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t off[3];
    ix.offsets(i, off, 3);
    const auto x = widened(a[off[1]]), y = widened(b[off[2]]);
    bool r = false;
    switch (op) {
      case CompareOp::eq: r = x == y; break;
      case CompareOp::ne: r = x != y; break;
      case CompareOp::lt: r = x < y; break;
      case CompareOp::le: r = x <= y; break;
      case CompareOp::gt: r = x > y; break;
      case CompareOp::ge: r = x >= y; break;
    }
    dst[off[0]] = r;
  }
}

// dst (contiguous) = condition ? a : b; the indexer holds the strides of condition, a and b.
template <class T>
__global__ void where_kernel(T* dst, const bool* condition, const T* a, const T* b, Indexer ix, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t off[3];
    ix.offsets(i, off, 3);
    dst[i] = condition[off[0]] ? a[off[1]] : b[off[2]];
  }
}

template <class T>
bool vec4_ready(int64_t n, std::initializer_list<const void*> pointers) {
  if (n % 4 != 0) return false;
  for (const void* p : pointers)
    if (reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) != 0) return false;
  return true;
}

}  // namespace vox::cuda
