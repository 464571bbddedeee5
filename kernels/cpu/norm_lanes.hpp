#pragma once
// The per-element loops of the normalisation kernels (norm.hpp), over blocks of n elements
// walked L "lanes" at a time: element i belongs to lane i % L, and each lane has its own
// parameters (mean, scale, shift, slope) and its own accumulators. With channels last, L is 16
// when C divides 16 (lane j holds channel j % C) and C otherwise (one row per step), so the inner
// loop is always a contiguous run of independent lanes that vectorises.
//
// Each loop is one template body over the storage type S of the data and the type T it computes
// in and keeps its per-lane parameters in: S = T for f32 and f64; S = uint16_t (raw bf16 bits,
// kernels/bf16_bits.hpp) with T = float for bf16, whose values are widened as they are read and
// rounded once as they are written. The f32 and bf16 versions, which training runs, are also
// compiled for AVX-512 and AVX2+FMA and chosen at run time, like the GEMM microkernel: the library
// itself is built for baseline x86-64. The bodies are always inlined, so that each clone gets its
// own code. Per-lane sums keep their element order, so every thread count gives the same sums.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/bf16_bits.hpp"

// The lanes of one step never overlap, and no output aliases an input: said to the compiler, so
// that it vectorises each lane loop without a run-time overlap check (its restrict analysis does
// not reach these pointers once the bodies are inlined, and the checked version ran scalar).
#if defined(__clang__)
#define VOX_LANES_INDEPENDENT _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define VOX_LANES_INDEPENDENT _Pragma("GCC ivdep")
#else
#define VOX_LANES_INDEPENDENT
#endif

namespace vox::kernels::cpu::norm_lanes {

// The lanes of C channels: with C dividing 16 a block is walked as one flat array 16 elements at a
// time (lane j holds channel j % C), which vectorises whatever C is; otherwise row by row (lane =
// channel).
inline bool flat_lanes(int64_t C) { return C <= 16 && 16 % C == 0; }
inline int64_t lane_width(int64_t C) { return flat_lanes(C) ? 16 : C; }
// Adds K per-lane sums (lanes[k * L + j]) into per-channel sums acc[k * C + c].
inline void fold_lanes(int K, int64_t C, const std::vector<double>& lanes, double* acc) {
  const int64_t L = lane_width(C);
  for (int k = 0; k < K; ++k)
    for (int64_t j = 0; j < L; ++j) acc[k * C + j % C] += lanes[static_cast<size_t>(k * L + j)];
}

// z > 0 for every z but NaN, as an integer test of the bits: GCC will not turn a floating
// comparison into a vector select under its default -ftrapping-math, and the PReLU loops would
// stay scalar, with a branch on the sign of each element.
template <class T>
inline bool is_positive(T z) {
  if constexpr (sizeof(T) == 4) return std::bit_cast<int32_t>(z) > 0;
  else return std::bit_cast<int64_t>(z) > 0;
}

// A stored value as the compute type reads it, and a computed value as it is stored.
template <class T, class S>
[[gnu::always_inline]] inline T load(S v) {
  if constexpr (std::is_same_v<S, uint16_t>) return bf16_bits_to_float(v);
  else return v;
}
template <class S, class T>
[[gnu::always_inline]] inline S store(T v) {
  if constexpr (std::is_same_v<S, uint16_t>) return float_to_bf16_bits(v);
  else return v;
}

// acc[j] += x, or (x - centre[j])^2 when centre is given, in f64, for the elements of lane j.
template <class S>
[[gnu::always_inline]] inline void sums(const S* __restrict x, int64_t n, int64_t L, const double* __restrict centre, double* __restrict acc) {
  for (int64_t i = 0; i < n; i += L) {
    const int64_t w = std::min(L, n - i);
    const S* __restrict xi = x + i;
    if (centre) {
      VOX_LANES_INDEPENDENT
      for (int64_t j = 0; j < w; ++j) {
        const double d = static_cast<double>(load<double>(xi[j])) - centre[j];
        acc[j] += d * d;
      }
    } else {
      VOX_LANES_INDEPENDENT
      for (int64_t j = 0; j < w; ++j) acc[j] += static_cast<double>(load<double>(xi[j]));
    }
  }
}

// The backward pass's sums for lane j, with dz the gradient reaching the normalisation and
// xhat = (x - mean) * rstd: acc[j] += dz, acc[L + j] += dz * xhat, and with a PReLU
// (z = x * k + h, dz = z > 0 ? dy : slope * dy) acc[2L + j] += dy * z where z <= 0.
template <class S, class T>
[[gnu::always_inline]] inline void backward_sums(const S* __restrict x, const S* __restrict dy, int64_t n, int64_t L, const double* __restrict mean,
                          const double* __restrict rstd, const T* __restrict k, const T* __restrict h, const T* __restrict slope,
                          double* __restrict acc) {
  double* __restrict sum_dz = acc;
  double* __restrict sum_dz_xhat = acc + L;
  double* __restrict sum_dy_z = acc + 2 * L;
  for (int64_t i = 0; i < n; i += L) {
    const int64_t w = std::min(L, n - i);
    const S* __restrict xi = x + i;
    const S* __restrict gi = dy + i;
    if (slope) {
      VOX_LANES_INDEPENDENT
      for (int64_t j = 0; j < w; ++j) {
        // the PReLU's two sides blended by a 0/1 factor (exact: one term is zero): GCC if-converts
        // a select between float values here but not into the f64 sums that follow
        const T xv = load<T>(xi[j]), g = load<T>(gi[j]), z = xv * k[j] + h[j], g_slope = slope[j] * g;
        const T on = is_positive(z) ? T(1) : T(0), off = T(1) - on;
        const T dz = on * g + off * g_slope, z_negative = off * z;
        const double d = static_cast<double>(dz);
        sum_dz[j] += d;
        sum_dz_xhat[j] += d * (static_cast<double>(xv) - mean[j]) * rstd[j];
        sum_dy_z[j] += static_cast<double>(g) * static_cast<double>(z_negative);
      }
    } else {
      VOX_LANES_INDEPENDENT
      for (int64_t j = 0; j < w; ++j) {
        const double d = static_cast<double>(load<T>(gi[j]));
        sum_dz[j] += d;
        sum_dz_xhat[j] += d * (static_cast<double>(load<T>(xi[j])) - mean[j]) * rstd[j];
      }
    }
  }
}

// y = x * k + h, followed by PReLU (y = z > 0 ? z : slope * z) when slope is given, plus
// addend (a residual branch, same layout as x) when that is given.
template <class S, class T>
[[gnu::always_inline]] inline void apply(const S* __restrict x, S* __restrict y, int64_t n, int64_t L, const T* __restrict k, const T* __restrict h,
                  const T* __restrict slope, const S* __restrict addend) {
  for (int64_t i = 0; i < n; i += L) {
    const int64_t w = std::min(L, n - i);
    const S* __restrict xi = x + i;
    S* __restrict yi = y + i;
    [[maybe_unused]] const S* __restrict ai = addend ? addend + i : nullptr;
    // the residual is added in the compute type and the sum rounded once (for S = T, a second
    // pass over the block just written, while it is in cache, as before)
    if (slope) {
      VOX_LANES_INDEPENDENT
      for (int64_t j = 0; j < w; ++j) {
        const T z = load<T>(xi[j]) * k[j] + h[j];
        const T v = is_positive(z) ? z : slope[j] * z;
        if constexpr (std::is_same_v<S, T>) yi[j] = v;
        else yi[j] = store<S>(ai ? v + load<T>(ai[j]) : v);
      }
    } else {
      VOX_LANES_INDEPENDENT
      for (int64_t j = 0; j < w; ++j) {
        const T v = load<T>(xi[j]) * k[j] + h[j];
        if constexpr (std::is_same_v<S, T>) yi[j] = v;
        else yi[j] = store<S>(ai ? v + load<T>(ai[j]) : v);
      }
    }
  }
  if (std::is_same_v<S, T> && addend) {
    for (int64_t i = 0; i < n; i += L) {
      const int64_t w = std::min(L, n - i);
      const S* __restrict ai = addend + i;
      S* __restrict yi = y + i;
      VOX_LANES_INDEPENDENT
      for (int64_t j = 0; j < w; ++j) yi[j] += ai[j];
    }
  }
}

// dx = k_dy * dz + k_x * x + k_0, with dz = dy, or with a PReLU of z = x * k + h,
// dz = z > 0 ? dy : slope * dy.
template <class S, class T>
[[gnu::always_inline]] inline void data_gradient(const S* __restrict x, const S* __restrict dy, S* __restrict dx, int64_t n, int64_t L,
                          const T* __restrict k_dy, const T* __restrict k_x, const T* __restrict k_0, const T* __restrict k,
                          const T* __restrict h, const T* __restrict slope) {
  for (int64_t i = 0; i < n; i += L) {
    const int64_t w = std::min(L, n - i);
    const S* __restrict xi = x + i;
    const S* __restrict gi = dy + i;
    S* __restrict out = dx + i;
    if (slope) {
      VOX_LANES_INDEPENDENT
      for (int64_t j = 0; j < w; ++j) {
        const T xv = load<T>(xi[j]), g = load<T>(gi[j]), z = xv * k[j] + h[j], g_slope = slope[j] * g;
        const T dz = is_positive(z) ? g : g_slope;
        out[j] = store<S>(k_dy[j] * dz + k_x[j] * xv + k_0[j]);
      }
    } else {
      VOX_LANES_INDEPENDENT
      for (int64_t j = 0; j < w; ++j) out[j] = store<S>(k_dy[j] * load<T>(gi[j]) + k_x[j] * load<T>(xi[j]) + k_0[j]);
    }
  }
}

#define VOX_NORM_LANES_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
VOX_NORM_LANES_CLONES inline void sums_f32(const float* x, int64_t n, int64_t L, const double* centre, double* acc) {
  sums<float>(x, n, L, centre, acc);
}
VOX_NORM_LANES_CLONES inline void backward_sums_f32(const float* x, const float* dy, int64_t n, int64_t L, const double* mean,
                                                    const double* rstd, const float* k, const float* h, const float* slope,
                                                    double* acc) {
  backward_sums<float, float>(x, dy, n, L, mean, rstd, k, h, slope, acc);
}
VOX_NORM_LANES_CLONES inline void apply_f32(const float* x, float* y, int64_t n, int64_t L, const float* k, const float* h,
                                            const float* slope, const float* addend) {
  apply<float, float>(x, y, n, L, k, h, slope, addend);
}
VOX_NORM_LANES_CLONES inline void data_gradient_f32(const float* x, const float* dy, float* dx, int64_t n, int64_t L,
                                                    const float* k_dy, const float* k_x, const float* k_0, const float* k,
                                                    const float* h, const float* slope) {
  data_gradient<float, float>(x, dy, dx, n, L, k_dy, k_x, k_0, k, h, slope);
}
VOX_NORM_LANES_CLONES inline void sums_bf16(const uint16_t* x, int64_t n, int64_t L, const double* centre, double* acc) {
  sums<uint16_t>(x, n, L, centre, acc);
}
VOX_NORM_LANES_CLONES inline void backward_sums_bf16(const uint16_t* x, const uint16_t* dy, int64_t n, int64_t L, const double* mean,
                                                     const double* rstd, const float* k, const float* h, const float* slope,
                                                     double* acc) {
  backward_sums<uint16_t, float>(x, dy, n, L, mean, rstd, k, h, slope, acc);
}
VOX_NORM_LANES_CLONES inline void apply_bf16(const uint16_t* x, uint16_t* y, int64_t n, int64_t L, const float* k, const float* h,
                                             const float* slope, const uint16_t* addend) {
  apply<uint16_t, float>(x, y, n, L, k, h, slope, addend);
}
VOX_NORM_LANES_CLONES inline void data_gradient_bf16(const uint16_t* x, const uint16_t* dy, uint16_t* dx, int64_t n, int64_t L,
                                                     const float* k_dy, const float* k_x, const float* k_0, const float* k,
                                                     const float* h, const float* slope) {
  data_gradient<uint16_t, float>(x, dy, dx, n, L, k_dy, k_x, k_0, k, h, slope);
}
#undef VOX_NORM_LANES_CLONES
#undef VOX_LANES_INDEPENDENT

// The clones for f32 and bf16 storage, the template body for other types.
template <class S>
void run_sums(const S* x, int64_t n, int64_t L, const double* centre, double* acc) {
  if constexpr (std::is_same_v<S, float>) sums_f32(x, n, L, centre, acc);
  else if constexpr (std::is_same_v<S, uint16_t>) sums_bf16(x, n, L, centre, acc);
  else sums<S>(x, n, L, centre, acc);
}
template <class S, class T>
void run_backward_sums(const S* x, const S* dy, int64_t n, int64_t L, const double* mean, const double* rstd, const T* k,
                       const T* h, const T* slope, double* acc) {
  if constexpr (std::is_same_v<S, float>) backward_sums_f32(x, dy, n, L, mean, rstd, k, h, slope, acc);
  else if constexpr (std::is_same_v<S, uint16_t>) backward_sums_bf16(x, dy, n, L, mean, rstd, k, h, slope, acc);
  else backward_sums<S, T>(x, dy, n, L, mean, rstd, k, h, slope, acc);
}
template <class S, class T>
void run_apply(const S* x, S* y, int64_t n, int64_t L, const T* k, const T* h, const T* slope, const S* addend) {
  if constexpr (std::is_same_v<S, float>) apply_f32(x, y, n, L, k, h, slope, addend);
  else if constexpr (std::is_same_v<S, uint16_t>) apply_bf16(x, y, n, L, k, h, slope, addend);
  else apply<S, T>(x, y, n, L, k, h, slope, addend);
}
template <class S, class T>
void run_data_gradient(const S* x, const S* dy, S* dx, int64_t n, int64_t L, const T* k_dy, const T* k_x, const T* k_0,
                       const T* k, const T* h, const T* slope) {
  if constexpr (std::is_same_v<S, float>) data_gradient_f32(x, dy, dx, n, L, k_dy, k_x, k_0, k, h, slope);
  else if constexpr (std::is_same_v<S, uint16_t>) data_gradient_bf16(x, dy, dx, n, L, k_dy, k_x, k_0, k, h, slope);
  else data_gradient<S, T>(x, dy, dx, n, L, k_dy, k_x, k_0, k, h, slope);
}

}  // namespace vox::kernels::cpu::norm_lanes
