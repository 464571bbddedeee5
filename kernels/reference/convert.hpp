#pragma once
// The one rule for turning a floating value into an integer dtype, on every device. C++ leaves a
// conversion undefined when the truncated value does not fit (x86 gives the "integer
// indefinite" minimum, CUDA saturates), so vox defines it, the same on the CPU and the GPU:
//   - truncation toward zero, as static_cast does where it is defined;
//   - NaN becomes 0;
//   - values beyond the integer type's range saturate to its minimum or maximum.
// The other conversions are defined by C++ already and need no rule: integer to integer wraps
// (two's complement), anything to bool is "not zero", and to a floating type is the nearest value.
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define VOX_CONVERT_HOST_DEVICE __host__ __device__
#else
#define VOX_CONVERT_HOST_DEVICE
#endif

namespace vox::kernels::reference {

template <class D, class F>
VOX_CONVERT_HOST_DEVICE inline D integer_from_floating(F v) {
  static_assert(std::is_integral_v<D> && !std::is_same_v<D, bool> && std::is_floating_point_v<F>,
                "integer_from_floating converts a float or double to a non-bool integer type");
  constexpr bool is_signed = std::is_signed_v<D>;
  constexpr int bits = static_cast<int>(sizeof(D)) * 8;
  // the range's ends as integers, and as the powers of two that bound it (exact in F)
  constexpr uint64_t max_bits = is_signed ? (uint64_t{1} << (bits - 1)) - 1 : (bits == 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1);
  constexpr D max_value = static_cast<D>(max_bits);
  constexpr D min_value = is_signed ? static_cast<D>(-static_cast<D>(max_bits) - 1) : D(0);
  constexpr F upper = is_signed ? F(2) * static_cast<F>(uint64_t{1} << (bits - 2)) : F(2) * static_cast<F>(max_bits / 2 + 1);
  constexpr F lower = is_signed ? -upper : F(0);
  if (v != v) return D(0);
  if (v >= upper) return max_value;
  if (v <= lower) return min_value;  // (for a signed type, lower itself truncates to the minimum)
  return static_cast<D>(v);
}

}  // namespace vox::kernels::reference
