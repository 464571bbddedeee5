#pragma once
// Normalisation kernels. Data is viewed as [B][R][C] with the C channels split into G groups;
// statistics are taken per (b, group) over R rows x C/G channels. With channels last:
//   batch norm     B = 1, R = N * spatial, G = C
//   instance norm  B = N, R = spatial,     G = C
//   group norm     B = N, R = spatial,     G = groups
//   layer norm     B = outer, R = 1, C = normalised size, G = 1
// Sums run in f64 in a fixed chunking of R, so results do not depend on the thread count.
// The data (x, y, dy, dx, a residual) is stored as S and the parameters kept as T: S = T for f32
// and f64; bf16 data (S = uint16_t, raw bf16 bits) has f32 parameters, is computed in f32 and is
// rounded once when written (norm_lanes.hpp).
// Statistics are two-pass (mean, then centred squares): no cancellation for large means.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/norm_lanes.hpp"
#include "kernels/cpu/parallel.hpp"

namespace vox::kernels::cpu {

struct NormShape {
  int64_t B = 1, R = 1, C = 1, G = 1;
  int64_t per_group() const { return C / G; }
  double group_count() const { return static_cast<double>(R) * static_cast<double>(C / G); }
};

// out[b][k][c] = sum over rows of their contributions: rows(b, r0, r1, acc) adds rows [r0, r1)
// of batch b into acc[k * C + c].
template <class Rows>
void per_channel_sums(const NormShape& s, int64_t K, Rows rows, std::vector<double>& out) {
  const int64_t chunks = chunk_count(s.R * s.C, 16384, 32);
  std::vector<double> partial(static_cast<size_t>(s.B * chunks * K * s.C), 0.0);
  parallel_for(0, s.B * chunks, 1, [&](int64_t tb, int64_t te) {
    for (int64_t task = tb; task < te; ++task) {
      const int64_t b = task / chunks, c = task % chunks;
      rows(b, s.R * c / chunks, s.R * (c + 1) / chunks, partial.data() + task * K * s.C);
    }
  });
  out.assign(static_cast<size_t>(s.B * K * s.C), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t i = 0; i < K * s.C; ++i)
        out[static_cast<size_t>(b * K * s.C + i)] += partial[static_cast<size_t>((b * chunks + c) * K * s.C + i)];
}

// Lanes (norm_lanes.hpp: flat_lanes, lane_width, fold_lanes); replicate() is the per-lane copy of
// per-channel values.
using norm_lanes::flat_lanes;
using norm_lanes::fold_lanes;
using norm_lanes::lane_width;
template <class T>
std::vector<T> replicate(const T* per_channel, int64_t C) {
  if (!flat_lanes(C)) return std::vector<T>(per_channel, per_channel + C);
  std::vector<T> out(16);
  for (int64_t j = 0; j < 16; ++j) out[static_cast<size_t>(j)] = per_channel[j % C];
  return out;
}

// Elementwise passes: f(b, e0, e1) for element ranges [e0, e1) within batch b, in parallel, each
// starting on a row boundary, so that 16 elements from there have the channels of the
// lanes when C divides 16 (and C elements the channels 0 to C - 1 otherwise).
template <class F>
void for_each_block(const NormShape& s, F f) {
  const int64_t rows_per_block = std::max<int64_t>(16, 16384 / s.C);
  const int64_t blocks = (s.R + rows_per_block - 1) / rows_per_block;
  parallel_for(0, s.B * blocks, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t b = t / blocks, r0 = (t % blocks) * rows_per_block, r1 = std::min(s.R, r0 + rows_per_block);
      f(b, (b * s.R + r0) * s.C, (b * s.R + r1) * s.C);
    }
  });
}
// mean and biased variance per (b, g).
template <class S>
void norm_statistics(const NormShape& s, const S* x, std::vector<double>& mean, std::vector<double>& var) {
  const int64_t cg = s.per_group();
  const int64_t L = lane_width(s.C);
  std::vector<double> sums;
  per_channel_sums(s, 1, [&](int64_t b, int64_t r0, int64_t r1, double* acc) {
    std::vector<double> lanes(static_cast<size_t>(L), 0.0);
    norm_lanes::run_sums(x + (b * s.R + r0) * s.C, (r1 - r0) * s.C, L, static_cast<const double*>(nullptr), lanes.data());
    fold_lanes(1, s.C, lanes, acc);
  }, sums);
  mean.assign(static_cast<size_t>(s.B * s.G), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < s.C; ++c) mean[static_cast<size_t>(b * s.G + c / cg)] += sums[static_cast<size_t>(b * s.C + c)];
  for (double& m : mean) m /= s.group_count();
  per_channel_sums(s, 1, [&](int64_t b, int64_t r0, int64_t r1, double* acc) {
    std::vector<double> m(static_cast<size_t>(s.C));
    for (int64_t c = 0; c < s.C; ++c) m[static_cast<size_t>(c)] = mean[static_cast<size_t>(b * s.G + c / cg)];
    const std::vector<double> lane_mean = replicate(m.data(), s.C);
    std::vector<double> lanes(static_cast<size_t>(L), 0.0);
    norm_lanes::run_sums(x + (b * s.R + r0) * s.C, (r1 - r0) * s.C, L, lane_mean.data(), lanes.data());
    fold_lanes(1, s.C, lanes, acc);
  }, sums);
  var.assign(static_cast<size_t>(s.B * s.G), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < s.C; ++c) var[static_cast<size_t>(b * s.G + c / cg)] += sums[static_cast<size_t>(b * s.C + c)];
  for (double& v : var) v /= s.group_count();
}

// Per-(b, c) scale and shift with (x - mean) * rstd * gamma + beta = x * scale + shift.
template <class T>
void norm_coefficients(const NormShape& s, const std::vector<double>& mean, const std::vector<double>& rstd, const T* gamma,
                       const T* beta, std::vector<T>& scale, std::vector<T>& shift) {
  const int64_t cg = s.per_group();
  scale.resize(static_cast<size_t>(s.B * s.C)), shift.resize(static_cast<size_t>(s.B * s.C));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < s.C; ++c) {
      const size_t g = static_cast<size_t>(b * s.G + c / cg);
      const double k = rstd[g] * (gamma ? static_cast<double>(gamma[c]) : 1.0);
      scale[static_cast<size_t>(b * s.C + c)] = static_cast<T>(k);
      shift[static_cast<size_t>(b * s.C + c)] = static_cast<T>((beta ? static_cast<double>(beta[c]) : 0.0) - mean[g] * k);
    }
}

// PReLU slopes per channel: slope[c * stride] (stride 0: one slope for every channel).
template <class T>
std::vector<T> slopes_per_channel(int64_t C, const T* slope, int64_t stride) {
  std::vector<T> out(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) out[static_cast<size_t>(c)] = slope[c * stride];
  return out;
}

// y = (x - mean) * rstd * gamma + beta, as one multiply-add per element with per-(b, c) terms,
// followed, when `slope` is given, by PReLU (y = z > 0 ? z : slope_c * z) in the same pass, and
// when `addend` is given (a residual branch laid out as x), by y += addend.
template <class T, class S = T>
void norm_apply(const NormShape& s, const S* x, const std::vector<double>& mean, const std::vector<double>& rstd,
                const T* gamma, const T* beta, S* y, const T* slope = nullptr, int64_t slope_stride = 0,
                const S* addend = nullptr) {
  std::vector<T> scale, shift;
  norm_coefficients(s, mean, rstd, gamma, beta, scale, shift);
  const std::vector<T> a = slope ? slopes_per_channel(s.C, slope, slope_stride) : std::vector<T>();
  const std::vector<T> lane_slope = slope ? replicate(a.data(), s.C) : std::vector<T>();
  for_each_block(s, [&](int64_t b, int64_t e0, int64_t e1) {
    const std::vector<T> k = replicate(scale.data() + b * s.C, s.C), h = replicate(shift.data() + b * s.C, s.C);
    norm_lanes::run_apply(x + e0, y + e0, e1 - e0, lane_width(s.C), k.data(), h.data(), slope ? lane_slope.data() : nullptr,
                          addend ? addend + e0 : nullptr);
  });
}

// Gradients of y = (x - mean) * rstd * gamma + beta. With batch statistics (constant_stats
// false) the mean and rstd depend on x; with running statistics they are constants.
// dgamma and dbeta are [C] and may be null. With `slope`, y is PReLU of that (norm_apply with a
// slope): the PReLU's input is recomputed from x rather than stored, its gradient folded into
// dy on the fly, and dslope ([C], or [1] for a shared slope) summed in the same pass.
template <class T, class S = T>
void norm_backward(const NormShape& s, const S* x, const S* dy, const std::vector<double>& mean,
                   const std::vector<double>& rstd, const T* gamma, bool constant_stats, S* dx, T* dgamma, T* dbeta,
                   const T* beta = nullptr, const T* slope = nullptr, int64_t slope_stride = 0, T* dslope = nullptr) {
  const int64_t cg = s.per_group();
  std::vector<T> scale, shift, a;
  if (slope) {
    norm_coefficients(s, mean, rstd, gamma, beta, scale, shift);
    a = slopes_per_channel(s.C, slope, slope_stride);
  }
  // mean and rstd per (b, c), so that the loops below index by channel only
  std::vector<double> mean_c(static_cast<size_t>(s.B * s.C)), rstd_c(static_cast<size_t>(s.B * s.C));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < s.C; ++c)
      mean_c[static_cast<size_t>(b * s.C + c)] = mean[static_cast<size_t>(b * s.G + c / cg)],
      rstd_c[static_cast<size_t>(b * s.C + c)] = rstd[static_cast<size_t>(b * s.G + c / cg)];
  std::vector<double> sums;  // [B][3][C]: sum dz, sum dz * xhat, sum dy * z where z <= 0
  const std::vector<T> lane_slope = slope ? replicate(a.data(), s.C) : std::vector<T>();
  const int64_t L = lane_width(s.C);
  per_channel_sums(s, 3, [&](int64_t b, int64_t r0, int64_t r1, double* acc) {
    const std::vector<double> m = replicate(mean_c.data() + b * s.C, s.C), rs = replicate(rstd_c.data() + b * s.C, s.C);
    const std::vector<T> k = slope ? replicate(scale.data() + b * s.C, s.C) : std::vector<T>(),
                         h = slope ? replicate(shift.data() + b * s.C, s.C) : std::vector<T>();
    std::vector<double> lanes(static_cast<size_t>(3 * L), 0.0);
    norm_lanes::run_backward_sums(x + (b * s.R + r0) * s.C, dy + (b * s.R + r0) * s.C, (r1 - r0) * s.C, L, m.data(), rs.data(),
                                  k.data(), h.data(), slope ? lane_slope.data() : nullptr, lanes.data());
    fold_lanes(3, s.C, lanes, acc);
  }, sums);
  auto sum_dy = [&](int64_t b, int64_t c) { return sums[static_cast<size_t>((b * 3) * s.C + c)]; };
  auto sum_dy_xhat = [&](int64_t b, int64_t c) { return sums[static_cast<size_t>((b * 3 + 1) * s.C + c)]; };
  if (dslope) {
    for (int64_t c = 0; c < (slope_stride == 0 ? 1 : s.C); ++c) dslope[c] = T(0);
    std::vector<double> total(static_cast<size_t>(s.C), 0.0);
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t c = 0; c < s.C; ++c) total[static_cast<size_t>(c)] += sums[static_cast<size_t>((b * 3 + 2) * s.C + c)];
    double shared = 0;
    for (int64_t c = 0; c < s.C; ++c) {
      if (slope_stride == 0) shared += total[static_cast<size_t>(c)];
      else dslope[c] = static_cast<T>(total[static_cast<size_t>(c)]);
    }
    if (slope_stride == 0) dslope[0] = static_cast<T>(shared);
  }
  if (dgamma || dbeta)
    for (int64_t c = 0; c < s.C; ++c) {
      double gg = 0, gb = 0;
      for (int64_t b = 0; b < s.B; ++b) gg += sum_dy_xhat(b, c), gb += sum_dy(b, c);
      if (dgamma) dgamma[c] = static_cast<T>(gg);
      if (dbeta) dbeta[c] = static_cast<T>(gb);
    }
  if (!dx) return;
  // dx = rstd * (dxhat - mean_g(dxhat) - xhat * mean_g(dxhat * xhat)), dxhat = dz * gamma,
  // folded into dx = k_dy * dz + k_x * x + k_0 with per-(b, c) coefficients.
  std::vector<double> mean_dxhat(static_cast<size_t>(s.B * s.G), 0.0), mean_dxhat_xhat(static_cast<size_t>(s.B * s.G), 0.0);
  if (!constant_stats) {
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t c = 0; c < s.C; ++c) {
        const double gm = gamma ? static_cast<double>(gamma[c]) : 1.0;
        mean_dxhat[static_cast<size_t>(b * s.G + c / cg)] += gm * sum_dy(b, c);
        mean_dxhat_xhat[static_cast<size_t>(b * s.G + c / cg)] += gm * sum_dy_xhat(b, c);
      }
    for (size_t i = 0; i < mean_dxhat.size(); ++i) {
      mean_dxhat[i] /= s.group_count();
      mean_dxhat_xhat[i] /= s.group_count();
    }
  }
  std::vector<T> k_dy(static_cast<size_t>(s.B * s.C)), k_x(static_cast<size_t>(s.B * s.C)), k_0(static_cast<size_t>(s.B * s.C));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < s.C; ++c) {
      const size_t g = static_cast<size_t>(b * s.G + c / cg), i = static_cast<size_t>(b * s.C + c);
      const double r = rstd[g], gm = gamma ? static_cast<double>(gamma[c]) : 1.0;
      k_dy[i] = static_cast<T>(r * gm);
      k_x[i] = static_cast<T>(-r * r * mean_dxhat_xhat[g]);
      k_0[i] = static_cast<T>(r * r * mean_dxhat_xhat[g] * mean[g] - r * mean_dxhat[g]);
    }
  for_each_block(s, [&](int64_t b, int64_t e0, int64_t e1) {
    const std::vector<T> kd = replicate(k_dy.data() + b * s.C, s.C), kx = replicate(k_x.data() + b * s.C, s.C),
                         k0 = replicate(k_0.data() + b * s.C, s.C);
    const std::vector<T> k = slope ? replicate(scale.data() + b * s.C, s.C) : std::vector<T>(),
                         h = slope ? replicate(shift.data() + b * s.C, s.C) : std::vector<T>();
    norm_lanes::run_data_gradient(x + e0, dy + e0, dx + e0, e1 - e0, lane_width(s.C), kd.data(), kx.data(), k0.data(), k.data(),
                                  h.data(), slope ? lane_slope.data() : nullptr);
  });
}

}  // namespace vox::kernels::cpu
