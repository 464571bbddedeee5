#pragma once
// 16-bit floats: IEEE binary16 (`half`) and bfloat16 (`bfloat16`). Conversions from float round
// to nearest, ties to even; NaN stays NaN (quiet), infinities and subnormals are exact.
#include <bit>
#include <cstdint>
#include <type_traits>

#include "kernels/bf16_bits.hpp"

namespace vox {

inline uint16_t float_to_half_bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude >= 0x7F800000u) {  // inf or NaN; NaN keeps its top payload bits and is quieted
    if (magnitude == 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u);
    return static_cast<uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  }
  if (magnitude >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 2^16
  if (magnitude < 0x38800000u) {  // below the smallest normal half, 2^-14: subnormal or zero
    if (magnitude < 0x33000000u) return static_cast<uint16_t>(sign);  // <= 2^-25 rounds to 0
    const uint32_t exponent = magnitude >> 23;
    const uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - exponent;  // 14..24: value / 2^-24
    uint32_t q = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rest > halfway || (rest == halfway && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t h = (magnitude - (112u << 23)) >> 13;  // rebias 127 -> 15
  const uint32_t rest = magnitude & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry may reach inf: correct
  return static_cast<uint16_t>(sign | h);
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1Fu) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal half: normalise
    uint32_t e = 113u;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

// bfloat16's rules live with the kernels, which compute on its raw bits (kernels/bf16_bits.hpp).
inline uint16_t float_to_bfloat16_bits(float value) { return kernels::float_to_bf16_bits(value); }
inline float bfloat16_bits_to_float(uint16_t b) { return kernels::bf16_bits_to_float(b); }

// Storage types. Arithmetic happens in float: they convert implicitly both ways.
struct half {
  uint16_t bits = 0;
  half() = default;
  template <class U>
    requires std::is_arithmetic_v<U>
  half(U v) : bits(float_to_half_bits(static_cast<float>(v))) {}  // NOLINT: implicit by design
  static half from_bits(uint16_t b) {
    half h;
    h.bits = b;
    return h;
  }
  operator float() const { return half_bits_to_float(bits); }
};

struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  template <class U>
    requires std::is_arithmetic_v<U>
  bfloat16(U v) : bits(float_to_bfloat16_bits(static_cast<float>(v))) {}  // NOLINT: implicit by design
  static bfloat16 from_bits(uint16_t b) {
    bfloat16 h;
    h.bits = b;
    return h;
  }
  operator float() const { return bfloat16_bits_to_float(bits); }
};

}  // namespace vox
