#pragma once
// bfloat16 as the kernels see it: raw 16-bit patterns (uint16_t), the top half of an f32.
// Rounding from f32 is to nearest, ties to even; NaN stays NaN (quiet). vox::bfloat16
// (vox/core/half.hpp) is a storage type over these same bits and these same rules.
//
// The dot-product step of AVX512_BF16's vdpbf16ps, which the bf16 GEMM and convolutions are
// defined by, on every CPU: each f32 lane does two fused multiply-adds, the odd element of the
// pair first, rounded to nearest even; denormal inputs (bf16 operands and the f32 accumulator)
// are read as zero and denormal results are flushed to zero, whatever MXCSR says. On a CPU
// with AVX512_BF16 this was checked against the instruction on 32 million lanes of inputs
// chosen around the denormal range (tests/test_bf16.cpp keeps a smaller check).
#include <bit>
#include <cmath>
#include <cstdint>

namespace vox::kernels {

// Without branches, so that loops of it vectorise.
inline uint16_t float_to_bf16_bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16, quiet_nan = (bits >> 16) | 0x0040u;
  return static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

inline float bf16_bits_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// Denormals to zero of the same sign (DAZ on an input, FTZ on a result).
inline float flush_denormal(float v) {
  uint32_t bits = std::bit_cast<uint32_t>(v);
  if ((bits & 0x7F800000u) == 0) bits &= 0x80000000u;
  return std::bit_cast<float>(bits);
}

// acc after one vdpbf16ps lane step on the pairs (a0, a1) and (b0, b1): element 0 is the low
// (even) one in memory.
inline float dpbf16_step(float acc, uint16_t a0, uint16_t a1, uint16_t b0, uint16_t b1) {
  auto in = [](uint16_t h) { return flush_denormal(bf16_bits_to_float(h)); };
  acc = flush_denormal(std::fma(in(a1), in(b1), flush_denormal(acc)));
  return flush_denormal(std::fma(in(a0), in(b0), acc));
}

}  // namespace vox::kernels
