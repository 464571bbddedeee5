#pragma once
// Element types, their sizes and names, type promotion and dispatch from a runtime DType to a
// compile-time C++ type.
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string_view>
#include <type_traits>

#include "vox/core/error.hpp"
#include "vox/core/half.hpp"

namespace vox {

enum class DType : uint8_t { f32, f64, f16, bf16, i8, u8, i32, i64, boolean };

inline std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i8: return "i8";
    case DType::u8: return "u8";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::boolean: return "bool";
  }
  return "?";
}

inline std::ostream& operator<<(std::ostream& out, DType t) { return out << dtype_name(t); }

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64:
    case DType::i64: return 8;
    case DType::f32:
    case DType::i32: return 4;
    case DType::f16:
    case DType::bf16: return 2;
    default: return 1;
  }
}

inline bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16;
}
inline bool is_integral(DType t) { return !is_floating(t) && t != DType::boolean; }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<half> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<bfloat16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<int8_t> { static constexpr DType value = DType::i8; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::u8; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::boolean; };
template <class T> inline constexpr DType dtype_v = dtype_of<T>::value;

// The type arithmetic on T is carried out in: float for the 16-bit floats, T otherwise.
template <class T>
using compute_t =
    std::conditional_t<std::is_same_v<T, half> || std::is_same_v<T, bfloat16>, float, T>;

// PyTorch's promotion lattice, restricted to vox's dtypes: bool < integers < floats; within a
// kind the wider wins; f16 with bf16 gives f32; i8 with u8 gives i32 (vox has no i16).
inline DType promote(DType a, DType b) {
  if (a == b) return a;
  auto kind = [](DType t) { return t == DType::boolean ? 0 : is_integral(t) ? 1 : 2; };
  if (kind(a) != kind(b)) return kind(a) > kind(b) ? a : b;
  if (kind(a) == 2) {
    if ((a == DType::f16 && b == DType::bf16) || (a == DType::bf16 && b == DType::f16))
      return DType::f32;
    if (a == DType::f64 || b == DType::f64) return DType::f64;
    return DType::f32;  // one of them is f32, the other 16-bit
  }
  if ((a == DType::i8 && b == DType::u8) || (a == DType::u8 && b == DType::i8)) return DType::i32;
  return dtype_size(a) >= dtype_size(b) ? a : b;
}

// dispatch(t, op, fn): calls fn.template operator()<T>() with T the C++ type of t, limited to the
// set a kernel supports. Unsupported dtypes throw an Error naming the op.
template <class F>
decltype(auto) dispatch_float(DType t, const char* op, F&& fn) {
  switch (t) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    default: fail(op, "expected dtype f32 or f64, got ", dtype_name(t));
  }
}

template <class F>
decltype(auto) dispatch_floating(DType t, const char* op, F&& fn) {
  switch (t) {
    case DType::f16: return fn.template operator()<half>();
    case DType::bf16: return fn.template operator()<bfloat16>();
    default: return dispatch_float(t, op, std::forward<F>(fn));
  }
}

template <class F>
decltype(auto) dispatch_numeric(DType t, const char* op, F&& fn) {
  switch (t) {
    case DType::i8: return fn.template operator()<int8_t>();
    case DType::u8: return fn.template operator()<uint8_t>();
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::i64: return fn.template operator()<int64_t>();
    case DType::boolean: fail(op, "dtype bool is not supported here");
    default: return dispatch_floating(t, op, std::forward<F>(fn));
  }
}

template <class F>
decltype(auto) dispatch_all(DType t, const char* op, F&& fn) {
  if (t == DType::boolean) return fn.template operator()<bool>();
  return dispatch_numeric(t, op, std::forward<F>(fn));
}

}  // namespace vox
