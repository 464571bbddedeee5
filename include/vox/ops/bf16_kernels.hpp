#pragma once
// What the ops share about the CPU's bf16 kernels (kernels/cpu/gemm_bf16.hpp): the raw bits
// those kernels take, and a warning, once per process, where the CPU lacks AVX512_BF16 and they
// run emulated (bit for bit the same, but slower than f32: the complaint PyTorch users make of
// CPU autocast, which says nothing).
#include <atomic>
#include <cstdio>

#include "kernels/cpu/gemm_bf16.hpp"
#include "vox/core/tensor.hpp"

namespace vox::detail {

inline const uint16_t* bf16_bits(const Tensor& t) { return reinterpret_cast<const uint16_t*>(t.data<bfloat16>()); }
inline uint16_t* bf16_bits(Tensor& t) { return reinterpret_cast<uint16_t*>(t.data<bfloat16>()); }

inline void note_bf16_path() {
  static std::atomic<bool> warned{false};
  if (kernels::cpu::bf16_native() || warned.exchange(true)) return;
  std::fprintf(stderr,
               "vox: warning: this CPU has no AVX512_BF16; bf16 convolutions and matrix products run on an exact but "
               "emulated path, slower than f32 (train and infer in f32 here for speed)\n");
}

}  // namespace vox::detail
