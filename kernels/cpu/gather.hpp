#pragma once
// Axis-separable gathers: out[o_0, ..., o_k] = in[map_0[o_0], ..., map_k[o_k]], where each map
// sends an output index along one axis to an input index (-1: no source, write `fill`). Padding
// (constant, reflect, replicate) and flipping are such gathers; their backward passes are the
// matching scatter-adds.
#include <cstdint>
#include <vector>

#include "kernels/cpu/parallel.hpp"

namespace vox::kernels::cpu {

using AxisMaps = std::vector<std::vector<int64_t>>;

// in_strides in elements; out is contiguous with sizes map[i].size().
template <class T>
void gather_axes(const T* in, const std::vector<int64_t>& in_strides, const AxisMaps& maps, T fill, T* out) {
  const size_t rank = maps.size();
  if (rank == 0) {
    out[0] = in[0];
    return;
  }
  const int64_t inner = static_cast<int64_t>(maps[rank - 1].size());
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < rank; ++i) rows *= static_cast<int64_t>(maps[i].size());
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)), [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      int64_t offset = 0, rest = r;
      bool valid = true;
      for (size_t i = rank - 1; i-- > 0;) {
        const auto n = static_cast<int64_t>(maps[i].size());
        const int64_t src = maps[i][static_cast<size_t>(rest % n)];
        rest /= n;
        if (src < 0) valid = false;
        offset += src * in_strides[i];
      }
      T* dst = out + r * inner;
      const auto& last = maps[rank - 1];
      for (int64_t j = 0; j < inner; ++j) {
        const int64_t src = last[static_cast<size_t>(j)];
        dst[j] = (valid && src >= 0) ? in[offset + src * in_strides[rank - 1]] : fill;
      }
    }
  });
}

// The adjoint: in[map(o)] += out[o] for in contiguous with in_shape, zeroed first. Threads
// split axis 0 when no two outputs share an input index there; otherwise it runs serially.
template <class T>
void scatter_add_axes(const T* out, const AxisMaps& maps, const std::vector<int64_t>& in_shape, T* in) {
  const size_t rank = maps.size();
  int64_t in_count = 1;
  for (int64_t s : in_shape) in_count *= s;
  for (int64_t i = 0; i < in_count; ++i) in[i] = static_cast<T>(0.0f);
  if (rank == 0) {
    in[0] = out[0];
    return;
  }
  std::vector<int64_t> in_strides(rank, 1), out_inner(rank, 1);
  for (size_t i = rank - 1; i-- > 0;) {
    in_strides[i] = in_strides[i + 1] * in_shape[i + 1];
    out_inner[i] = out_inner[i + 1] * static_cast<int64_t>(maps[i + 1].size());
  }
  std::vector<int> hits(static_cast<size_t>(in_shape[0]), 0);
  bool injective = true;
  for (int64_t src : maps[0])
    if (src >= 0 && ++hits[static_cast<size_t>(src)] > 1) injective = false;
  auto run = [&](int64_t o0b, int64_t o0e) {
    for (int64_t o0 = o0b; o0 < o0e; ++o0) {
      if (maps[0][static_cast<size_t>(o0)] < 0) continue;
      for (int64_t rest = 0; rest < out_inner[0]; ++rest) {
        int64_t offset = maps[0][static_cast<size_t>(o0)] * in_strides[0], r = rest;
        bool valid = true;
        for (size_t i = rank; i-- > 1;) {
          const auto n = static_cast<int64_t>(maps[i].size());
          const int64_t src = maps[i][static_cast<size_t>(r % n)];
          r /= n;
          if (src < 0) valid = false;
          offset += src * in_strides[i];
        }
        if (valid) in[offset] = static_cast<T>(in[offset] + out[o0 * out_inner[0] + rest]);
      }
    }
  };
  if (injective) parallel_for(0, static_cast<int64_t>(maps[0].size()), 1, run);
  else run(0, static_cast<int64_t>(maps[0].size()));
}

}  // namespace vox::kernels::cpu
