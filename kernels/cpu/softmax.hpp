#pragma once
// Softmax and log-softmax over the middle axis of a contiguous [outer][n][inner] block, and
// their backward passes. Each (outer, inner-block) task walks n rows of contiguous inner
// values, so the channels-last case (inner = 1, rows contiguous) and reductions over a leading
// axis (inner large) both stream memory in order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.hpp"

namespace vox::kernels::cpu {

namespace softmax_detail {
template <class F>
void for_each_block(int64_t outer, int64_t n, int64_t inner, F f) {
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
  parallel_for(0, outer * blocks, std::max<int64_t>(1, 8192 / std::max<int64_t>(n * std::min(inner, kBlock), 1)),
               [&](int64_t tb, int64_t te) {
                 for (int64_t t = tb; t < te; ++t) {
                   const int64_t o = t / blocks, i0 = (t % blocks) * kBlock, i1 = std::min(inner, i0 + kBlock);
                   f(o * n * inner, i0, i1);
                 }
               });
}
// f(r0, r1) over ranges of contiguous rows of n values (the inner == 1 case), in parallel.
// Calling f once per row, as for_each_block would, costs more than the row's arithmetic.
template <class F>
void for_each_row_range(int64_t rows, int64_t n, F f) {
  parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(n, 1)), f);
}
}  // namespace softmax_detail

// y = softmax(x) or log_softmax(x) along n.
template <class T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (inner == 1) {  // channels last: each row of n values is contiguous; the same arithmetic row by row
    softmax_detail::for_each_row_range(outer, n, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* row = x + r * n;
        T* out = y + r * n;
        T m = -INFINITY;
        for (int64_t k = 0; k < n; ++k) m = std::max(m, row[k]);
        double s = 0.0;
        for (int64_t k = 0; k < n; ++k) {
          const T e = std::exp(row[k] - m);
          s += e;
          if (!log) out[k] = e;
        }
        if (log) {
          const T log_s = static_cast<T>(std::log(s));
          for (int64_t k = 0; k < n; ++k) out[k] = row[k] - m - log_s;
        } else {
          for (int64_t k = 0; k < n; ++k) out[k] = static_cast<T>(out[k] / s);
        }
      }
    });
    return;
  }
  softmax_detail::for_each_block(outer, n, inner, [&](int64_t base, int64_t i0, int64_t i1) {
    const int64_t w = i1 - i0;
    std::vector<T> m(static_cast<size_t>(w), -INFINITY);
    std::vector<double> s(static_cast<size_t>(w), 0.0);
    for (int64_t k = 0; k < n; ++k) {
      const T* row = x + base + k * inner + i0;
      for (int64_t i = 0; i < w; ++i) m[static_cast<size_t>(i)] = std::max(m[static_cast<size_t>(i)], row[i]);
    }
    for (int64_t k = 0; k < n; ++k) {
      const T* row = x + base + k * inner + i0;
      T* out = y + base + k * inner + i0;
      for (int64_t i = 0; i < w; ++i) {
        const T e = std::exp(row[i] - m[static_cast<size_t>(i)]);
        s[static_cast<size_t>(i)] += e;
        if (!log) out[i] = e;
      }
    }
    for (int64_t k = 0; k < n; ++k) {
      const T* row = x + base + k * inner + i0;
      T* out = y + base + k * inner + i0;
      for (int64_t i = 0; i < w; ++i) {
        if (log) out[i] = row[i] - m[static_cast<size_t>(i)] - static_cast<T>(std::log(s[static_cast<size_t>(i)]));
        else out[i] = static_cast<T>(out[i] / s[static_cast<size_t>(i)]);
      }
    }
  });
}

// dx from dy and the forward output y: softmax dx = y (dy - sum dy y); log-softmax
// dx = dy - exp(y) sum dy.
template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (inner == 1) {
    softmax_detail::for_each_row_range(outer, n, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* yr = y + r * n;
        const T* gr = dy + r * n;
        T* out = dx + r * n;
        double dot = 0.0;
        for (int64_t k = 0; k < n; ++k) dot += log ? gr[k] : gr[k] * yr[k];
        const T d = static_cast<T>(dot);
        for (int64_t k = 0; k < n; ++k) out[k] = log ? gr[k] - std::exp(yr[k]) * d : yr[k] * (gr[k] - d);
      }
    });
    return;
  }
  softmax_detail::for_each_block(outer, n, inner, [&](int64_t base, int64_t i0, int64_t i1) {
    const int64_t w = i1 - i0;
    std::vector<double> dot(static_cast<size_t>(w), 0.0);
    for (int64_t k = 0; k < n; ++k) {
      const T* yr = y + base + k * inner + i0;
      const T* gr = dy + base + k * inner + i0;
      for (int64_t i = 0; i < w; ++i) dot[static_cast<size_t>(i)] += log ? gr[i] : gr[i] * yr[i];
    }
    for (int64_t k = 0; k < n; ++k) {
      const T* yr = y + base + k * inner + i0;
      const T* gr = dy + base + k * inner + i0;
      T* out = dx + base + k * inner + i0;
      for (int64_t i = 0; i < w; ++i) {
        const T d = static_cast<T>(dot[static_cast<size_t>(i)]);
        out[i] = log ? gr[i] - std::exp(yr[i]) * d : yr[i] * (gr[i] - d);
      }
    }
  });
}

}  // namespace vox::kernels::cpu
