#pragma once
// N-d iteration over several operands that share one shape but have their own element strides
// (broadcast operands have stride 0). Dimensions are coalesced first, so contiguous tensors
// become one long row and the innermost loop is a plain vectorisable loop.
#include <algorithm>
#include <array>
#include <cstdint>

#include "kernels/cpu/parallel.hpp"

namespace vox::kernels::cpu {

template <int K>
struct StridedLayout {
  int rank = 0;
  std::array<int64_t, 8> shape{};
  std::array<std::array<int64_t, 8>, K> strides{};
  std::array<int64_t, K> base{};  // element offset of each operand

  // Drops size-1 dimensions and merges neighbours that are laid out as one.
  void coalesce() {
    int out = 0;
    for (int i = 0; i < rank; ++i) {
      if (shape[i] == 1) continue;
      if (out > 0) {
        bool mergeable = true;
        for (int k = 0; k < K; ++k)
          if (strides[k][out - 1] != strides[k][i] * shape[i]) mergeable = false;
        if (mergeable) {
          shape[out - 1] *= shape[i];
          for (int k = 0; k < K; ++k) strides[k][out - 1] = strides[k][i];
          continue;
        }
      }
      shape[out] = shape[i];
      for (int k = 0; k < K; ++k) strides[k][out] = strides[k][i];
      ++out;
    }
    rank = out;
  }
};

// Calls row(offsets, n, inner_strides) for each innermost row, or piece of one: operand k's
// elements are at offsets[k] + j * inner_strides[k] for j < n. Rows longer than `grain` are cut
// into pieces of about `grain` elements, so that a contiguous tensor (one long row after
// coalescing) runs on every thread too; rows and pieces run in parallel. Element-wise callers
// only: a row is not always whole.
template <int K, class Row>
void for_each_row(StridedLayout<K> layout, Row&& row, int64_t grain = 32768) {
  layout.coalesce();
  if (layout.rank == 0) {
    std::array<int64_t, K> ones{};
    row(layout.base, int64_t{1}, ones);
    return;
  }
  const int last = layout.rank - 1;
  const int64_t inner = layout.shape[last];
  int64_t rows = 1;
  for (int i = 0; i < last; ++i) rows *= layout.shape[i];
  std::array<int64_t, K> inner_strides;
  for (int k = 0; k < K; ++k) inner_strides[k] = layout.strides[k][last];
  const int64_t pieces = std::max<int64_t>(1, (inner + grain - 1) / std::max<int64_t>(grain, 1));
  const int64_t piece = (inner + pieces - 1) / pieces;
  const int64_t unit_grain = pieces > 1 ? 1 : std::max<int64_t>(1, grain / std::max<int64_t>(inner, 1));
  parallel_for(0, rows * pieces, unit_grain, [&](int64_t ub, int64_t ue) {
    for (int64_t u = ub; u < ue; ++u) {
      const int64_t r = u / pieces, begin = u % pieces * piece;
      std::array<int64_t, K> offsets = layout.base;
      int64_t rest = r;
      for (int i = last - 1; i >= 0; --i) {
        const int64_t idx = rest % layout.shape[i];
        rest /= layout.shape[i];
        for (int k = 0; k < K; ++k) offsets[k] += idx * layout.strides[k][i];
      }
      for (int k = 0; k < K; ++k) offsets[k] += begin * inner_strides[k];
      row(offsets, std::min(piece, inner - begin), inner_strides);
    }
  });
}

}  // namespace vox::kernels::cpu
