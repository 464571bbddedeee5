#pragma once
// Normalisation kernels. Data is viewed as [B][R][C] with the C channels split into G groups;
// statistics are taken per (b, group) over R rows x C/G channels. With channels last:
//   batch norm     B = 1, R = N * spatial, G = C
//   instance norm  B = N, R = spatial,     G = C
//   group norm     B = N, R = spatial,     G = groups
//   layer norm     B = outer, R = 1, C = normalised size, G = 1
// Sums run in f64 in a fixed chunking of R, so results do not depend on the thread count.
// Statistics are two-pass (mean, then centred squares): no cancellation for large means.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.hpp"

namespace vox::kernels::cpu {

struct NormShape {
  int64_t B = 1, R = 1, C = 1, G = 1;
  int64_t per_group() const { return C / G; }
  double group_count() const { return static_cast<double>(R) * static_cast<double>(C / G); }
};

// out[b][k][c] = sum over r of row(b, r) contributions; row(b, r, acc) adds into acc[k * C + c].
template <class Row>
void per_channel_sums(const NormShape& s, int64_t K, Row row, std::vector<double>& out) {
  const int64_t chunks = chunk_count(s.R * s.C, 16384, 32);
  std::vector<double> partial(static_cast<size_t>(s.B * chunks * K * s.C), 0.0);
  parallel_for(0, s.B * chunks, 1, [&](int64_t tb, int64_t te) {
    for (int64_t task = tb; task < te; ++task) {
      const int64_t b = task / chunks, c = task % chunks;
      double* acc = partial.data() + task * K * s.C;
      for (int64_t r = s.R * c / chunks; r < s.R * (c + 1) / chunks; ++r) row(b, r, acc);
    }
  });
  out.assign(static_cast<size_t>(s.B * K * s.C), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t i = 0; i < K * s.C; ++i)
        out[static_cast<size_t>(b * K * s.C + i)] += partial[static_cast<size_t>((b * chunks + c) * K * s.C + i)];
}

// mean and biased variance per (b, g).
template <class T>
void norm_statistics(const NormShape& s, const T* x, std::vector<double>& mean, std::vector<double>& var) {
  const int64_t cg = s.per_group();
  std::vector<double> sums;
  per_channel_sums(s, 1, [&](int64_t b, int64_t r, double* acc) {
    const T* row = x + (b * s.R + r) * s.C;
    for (int64_t c = 0; c < s.C; ++c) acc[c] += static_cast<double>(row[c]);
  }, sums);
  mean.assign(static_cast<size_t>(s.B * s.G), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < s.C; ++c) mean[static_cast<size_t>(b * s.G + c / cg)] += sums[static_cast<size_t>(b * s.C + c)];
  for (double& m : mean) m /= s.group_count();
  per_channel_sums(s, 1, [&](int64_t b, int64_t r, double* acc) {
    const T* row = x + (b * s.R + r) * s.C;
    const double* m = mean.data() + b * s.G;
    for (int64_t c = 0; c < s.C; ++c) {
      const double d = static_cast<double>(row[c]) - m[c / cg];
      acc[c] += d * d;
    }
  }, sums);
  var.assign(static_cast<size_t>(s.B * s.G), 0.0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < s.C; ++c) var[static_cast<size_t>(b * s.G + c / cg)] += sums[static_cast<size_t>(b * s.C + c)];
  for (double& v : var) v /= s.group_count();
}

// y = (x - mean) * rstd * gamma + beta, as one multiply-add per element with per-(b, c) terms.
template <class T>
void norm_apply(const NormShape& s, const T* x, const std::vector<double>& mean, const std::vector<double>& rstd,
                const T* gamma, const T* beta, T* y) {
  const int64_t cg = s.per_group();
  std::vector<T> scale(static_cast<size_t>(s.B * s.C)), shift(static_cast<size_t>(s.B * s.C));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t c = 0; c < s.C; ++c) {
      const size_t g = static_cast<size_t>(b * s.G + c / cg);
      const double k = rstd[g] * (gamma ? static_cast<double>(gamma[c]) : 1.0);
      scale[static_cast<size_t>(b * s.C + c)] = static_cast<T>(k);
      shift[static_cast<size_t>(b * s.C + c)] = static_cast<T>((beta ? static_cast<double>(beta[c]) : 0.0) - mean[g] * k);
    }
  parallel_for(0, s.B * s.R, std::max<int64_t>(1, 16384 / s.C), [&](int64_t rb, int64_t re) {
    for (int64_t row = rb; row < re; ++row) {
      const int64_t b = row / s.R;
      const T* in = x + row * s.C;
      T* out = y + row * s.C;
      const T* k = scale.data() + b * s.C;
      const T* h = shift.data() + b * s.C;
      for (int64_t c = 0; c < s.C; ++c) out[c] = in[c] * k[c] + h[c];
    }
  });
}

// Gradients of y = (x - mean) * rstd * gamma + beta. With batch statistics (constant_stats
// false) the mean and rstd depend on x; with running statistics they are constants.
// dgamma and dbeta are [C] and may be null.
template <class T>
void norm_backward(const NormShape& s, const T* x, const T* dy, const std::vector<double>& mean,
                   const std::vector<double>& rstd, const T* gamma, bool constant_stats, T* dx, T* dgamma, T* dbeta) {
  const int64_t cg = s.per_group();
  std::vector<double> sums;  // [B][2][C]: sum dy, sum dy * xhat
  per_channel_sums(s, 2, [&](int64_t b, int64_t r, double* acc) {
    const T* xr = x + (b * s.R + r) * s.C;
    const T* gr = dy + (b * s.R + r) * s.C;
    for (int64_t c = 0; c < s.C; ++c) {
      const size_t g = static_cast<size_t>(b * s.G + c / cg);
      const double d = static_cast<double>(gr[c]);
      acc[c] += d;
      acc[s.C + c] += d * (static_cast<double>(xr[c]) - mean[g]) * rstd[g];
    }
  }, sums);
  auto sum_dy = [&](int64_t b, int64_t c) { return sums[static_cast<size_t>((b * 2) * s.C + c)]; };
  auto sum_dy_xhat = [&](int64_t b, int64_t c) { return sums[static_cast<size_t>((b * 2 + 1) * s.C + c)]; };
  if (dgamma || dbeta)
    for (int64_t c = 0; c < s.C; ++c) {
      double gg = 0, gb = 0;
      for (int64_t b = 0; b < s.B; ++b) gg += sum_dy_xhat(b, c), gb += sum_dy(b, c);
      if (dgamma) dgamma[c] = static_cast<T>(gg);
      if (dbeta) dbeta[c] = static_cast<T>(gb);
    }
  if (!dx) return;
  // dx = rstd * (dxhat - mean_g(dxhat) - xhat * mean_g(dxhat * xhat)), dxhat = dy * gamma,
  // folded into dx = k_dy * dy + k_x * x + k_0 with per-(b, c) coefficients.
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
  parallel_for(0, s.B * s.R, std::max<int64_t>(1, 16384 / s.C), [&](int64_t rb, int64_t re) {
    for (int64_t row = rb; row < re; ++row) {
      const int64_t b = row / s.R;
      const T* xr = x + row * s.C;
      const T* gr = dy + row * s.C;
      T* out = dx + row * s.C;
      const T *a = k_dy.data() + b * s.C, *kx = k_x.data() + b * s.C, *k0 = k_0.data() + b * s.C;
      for (int64_t c = 0; c < s.C; ++c) out[c] = a[c] * gr[c] + kx[c] * xr[c] + k0[c];
    }
  });
}

}  // namespace vox::kernels::cpu
