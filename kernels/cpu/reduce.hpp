#pragma once
// Reductions of a contiguous [A][R][B] block over R, into [A][B]. Every set of adjacent axes of
// a contiguous tensor has this form: B = 1 is a row reduction, A = 1 a column reduction (the
// channels-last case: reducing N, D, H, W keeps C innermost). R is split into a number of chunks
// that depends only on the sizes, so results are identical on any thread count.
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/norm_lanes.hpp"
#include "kernels/cpu/parallel.hpp"

namespace vox::kernels::cpu {

template <class Acc>
struct SumReducer {
  using acc_type = Acc;
  static Acc identity() { return Acc(0); }
  static Acc combine(Acc a, Acc b) { return a + b; }
};

template <class Acc>
struct MaxReducer {
  using acc_type = Acc;
  static Acc identity() {
    if constexpr (std::numeric_limits<Acc>::has_infinity) return -std::numeric_limits<Acc>::infinity();
    else return std::numeric_limits<Acc>::lowest();
  }
  static Acc combine(Acc acc, Acc v) { return (v > acc || v != v) ? v : acc; }  // NaN wins
};

template <class Acc>
struct MinReducer {
  using acc_type = Acc;
  static Acc identity() {
    if constexpr (std::numeric_limits<Acc>::has_infinity) return std::numeric_limits<Acc>::infinity();
    else return std::numeric_limits<Acc>::max();
  }
  static Acc combine(Acc acc, Acc v) { return (v < acc || v != v) ? v : acc; }
};

// out[a][b] = fold over r of in[a][r][b]; Reducer works in its acc_type.
template <class Reducer, class T, class TO>
void reduce_middle(const T* in, TO* out, int64_t A, int64_t R, int64_t B) {
  using Acc = typename Reducer::acc_type;
  const int64_t chunks = chunk_count(R * B, 32768);
  std::vector<Acc> partial(static_cast<size_t>(A * chunks * B), Reducer::identity());
  parallel_for(0, A * chunks, 1, [&](int64_t tb, int64_t te) {
    for (int64_t task = tb; task < te; ++task) {
      const int64_t a = task / chunks, c = task % chunks;
      const int64_t r0 = R * c / chunks, r1 = R * (c + 1) / chunks;
      Acc* acc = partial.data() + task * B;
      const T* base = in + a * R * B;
      if (B == 1) {  // independent accumulators so the loop pipelines
        Acc lanes[8];
        for (Acc& l : lanes) l = Reducer::identity();
        int64_t r = r0;
        for (; r + 8 <= r1; r += 8)
          for (int k = 0; k < 8; ++k) lanes[k] = Reducer::combine(lanes[k], static_cast<Acc>(base[r + k]));
        for (; r < r1; ++r) lanes[0] = Reducer::combine(lanes[0], static_cast<Acc>(base[r]));
        Acc total = lanes[0];
        for (int k = 1; k < 8; ++k) total = Reducer::combine(total, lanes[k]);
        acc[0] = total;
      } else if constexpr (std::is_same_v<Reducer, SumReducer<double>> && std::is_floating_point_v<T>) {
        // f64 sums of columns (a conv bias's gradient, the Dice loss's per-class sums): the block
        // walked as lanes, 16 at a time when B divides 16, by the vectorised, AVX-cloned loop
        std::vector<double> lanes(static_cast<size_t>(norm_lanes::lane_width(B)), 0.0);
        norm_lanes::run_sums(base + r0 * B, (r1 - r0) * B, norm_lanes::lane_width(B), static_cast<const double*>(nullptr), lanes.data());
        norm_lanes::fold_lanes(1, B, lanes, acc);
      } else {
        for (int64_t r = r0; r < r1; ++r) {
          const T* row = base + r * B;
          for (int64_t b = 0; b < B; ++b) acc[b] = Reducer::combine(acc[b], static_cast<Acc>(row[b]));
        }
      }
    }
  });
  parallel_for(0, A * B, 4096, [&](int64_t ib, int64_t ie) {
    for (int64_t i = ib; i < ie; ++i) {
      const int64_t a = i / B, b = i % B;
      Acc total = partial[static_cast<size_t>(a * chunks * B + b)];
      for (int64_t c = 1; c < chunks; ++c) total = Reducer::combine(total, partial[static_cast<size_t>((a * chunks + c) * B + b)]);
      out[i] = static_cast<TO>(total);
    }
  });
}

// Index along R of the largest (want_max) or smallest value of in[a][:][b]; the first one on
// ties, and the first NaN if there is one (as PyTorch does).
template <class T>
void arg_reduce_middle(const T* in, int64_t* out, int64_t A, int64_t R, int64_t B, bool want_max) {
  parallel_for(0, A * B, 256, [&](int64_t ib, int64_t ie) {
    for (int64_t i = ib; i < ie; ++i) {
      const int64_t a = i / B, b = i % B;
      const T* p = in + a * R * B + b;
      auto best = p[0];
      int64_t best_r = 0;
      for (int64_t r = 1; r < R; ++r) {
        const auto v = p[r * B];
        if (best != best) break;
        if (v != v || (want_max ? v > best : v < best)) {
          best = v;
          best_r = r;
        }
      }
      out[i] = best_r;
    }
  });
}

}  // namespace vox::kernels::cpu
