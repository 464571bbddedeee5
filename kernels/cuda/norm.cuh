#pragma once
// Normalisation on the GPU: x viewed as [B][R][C], C split into G groups, statistics per
// (b, group) over R rows x C/G channels (batch, instance, group and layer norm; see
// kernels/cpu/norm.hpp for the mapping), optionally followed by PReLU (one slope or one per
// channel) and a residual sum in the same pass.
//   statistics: blocks of 32 channels x 8 rows walk a chunk of R each, keeping Welford's
//               (count, mean, M2) per thread; the block merges its rows, then one thread per
//               (b, group) merges the chunks' partials and channels into mean and rstd.
//   apply:      one elementwise pass.
//   backward:   the same blocks sum dz, dz * xhat and dy * min(z, 0) per (b, chunk, channel),
//               where z is the pre-activation and dz the gradient through PReLU; small passes
//               fold those into the per-group means and the parameter gradients; one
//               elementwise pass writes dx.
// Each chunk is summed in a fixed order, so results do not depend on timing.
#include <cstdint>

#include "kernels/cuda/reduce.cuh"
#include "vox/core/backend.hpp"

namespace vox::cuda {

struct NormLaunch {
  int64_t B, R, C, G, Cg;
  int64_t chunks, chunk;  // R split into `chunks` pieces of `chunk` rows
  int64_t slope_stride;
  bool fixed_stats;
  double eps;

  __host__ __device__ int64_t rows_in(int64_t s) const {
    const int64_t begin = s * chunk, end = begin + chunk < R ? begin + chunk : R;
    return end > begin ? end - begin : 0;
  }
};

// Enough chunks for about four blocks per multiprocessor; each at least 64 rows.
inline NormLaunch make_norm_launch(const NormParams& p, int multiprocessors) {
  NormLaunch l{p.B, p.R, p.C, p.G, p.C / p.G, 1, p.R, p.slope_stride, p.fixed_stats, p.eps};
  const int64_t tiles = p.B * ((p.C + kLanes - 1) / kLanes);
  const int64_t wanted = (4 * static_cast<int64_t>(multiprocessors) + tiles - 1) / tiles;
  l.chunks = std::max<int64_t>(1, std::min<int64_t>(wanted, (p.R + 63) / 64));
  l.chunk = (p.R + l.chunks - 1) / l.chunks;
  l.chunks = (p.R + l.chunk - 1) / l.chunk;
  return l;
}

template <class A>
struct Welford {
  A count = 0, mean = 0, m2 = 0;
  __device__ void add(A v) {
    count += 1;
    const A d = v - mean;
    mean += d / count;
    m2 += d * (v - mean);
  }
  __device__ void merge(const Welford& o) {
    if (o.count == 0) return;
    const A n = count + o.count, d = o.mean - mean;
    mean += d * (o.count / n);
    m2 += o.m2 + d * d * (count * o.count / n);
    count = n;
  }
};

// grid: (ceil(C / 32) x B, chunks); block: (32, 8). Writes the chunk's mean and M2 per channel
// into part_mean / part_m2 [B][chunks][C].
template <class T>
__global__ void norm_partial_stats_kernel(NormLaunch l, const T* x, typename Accumulator<T>::type* part_mean,
                                          typename Accumulator<T>::type* part_m2) {
  using A = typename Accumulator<T>::type;
  __shared__ A row_count[kRowsPerBlock][kLanes], row_mean[kRowsPerBlock][kLanes], row_m2[kRowsPerBlock][kLanes];
  const int64_t tiles = (l.C + kLanes - 1) / kLanes, b = blockIdx.x / tiles, s = blockIdx.y;
  const int64_t c = (blockIdx.x % tiles) * kLanes + threadIdx.x;
  Welford<A> w;
  if (c < l.C) {
    const int64_t r_end = min(l.R, (s + 1) * l.chunk);
    for (int64_t r = s * l.chunk + threadIdx.y; r < r_end; r += kRowsPerBlock) w.add(static_cast<A>(x[(b * l.R + r) * l.C + c]));
  }
  row_count[threadIdx.y][threadIdx.x] = w.count;
  row_mean[threadIdx.y][threadIdx.x] = w.mean;
  row_m2[threadIdx.y][threadIdx.x] = w.m2;
  __syncthreads();
  if (threadIdx.y == 0 && c < l.C) {
    for (int i = 1; i < kRowsPerBlock; ++i) {
      Welford<A> row;
      row.count = row_count[i][threadIdx.x];
      row.mean = row_mean[i][threadIdx.x];
      row.m2 = row_m2[i][threadIdx.x];
      w.merge(row);
    }
    const int64_t at = (b * l.chunks + s) * l.C + c;
    part_mean[at] = w.mean;
    part_m2[at] = w.m2;
  }
}

// One thread per (b, group): merges its chunks and channels; mean and rstd (and, where asked, the
// biased variance itself, which 1/rstd^2 - eps would lose when it is far below eps) are [B][G].
template <class T>
__global__ void norm_finish_stats_kernel(NormLaunch l, const typename Accumulator<T>::type* part_mean,
                                         const typename Accumulator<T>::type* part_m2, T* mean, T* rstd, T* variance) {
  using A = typename Accumulator<T>::type;
  // grid-stride: grid_for() caps the grid, so a thread may own several (b, group) pairs
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < l.B * l.G;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / l.G, g = i % l.G;
    Welford<A> total;
    for (int64_t s = 0; s < l.chunks; ++s)
      for (int64_t c = g * l.Cg; c < (g + 1) * l.Cg; ++c) {
        const int64_t at = (b * l.chunks + s) * l.C + c;
        Welford<A> part;
        part.count = static_cast<A>(l.rows_in(s));
        part.mean = part_mean[at];
        part.m2 = part_m2[at];
        total.merge(part);
      }
    const A var = total.count > 0 ? total.m2 / total.count : A(0);
    mean[i] = static_cast<T>(total.mean);
    rstd[i] = static_cast<T>(A(1) / sqrt(var + static_cast<A>(l.eps)));
    if (variance) variance[i] = static_cast<T>(var);
  }
}

template <class T>
__device__ inline T prelu_slope(const T* slope, int64_t stride, int64_t c) {
  return slope[c * stride];
}

// y = prelu((x - mean) * rstd * gamma + beta) + residual, over all B * R * C elements.
template <class T>
__global__ void norm_apply_kernel(NormLaunch l, const T* x, const T* mean, const T* rstd, const T* gamma, const T* beta,
                                  const T* slope, const T* residual, T* y) {
  const int64_t n = l.B * l.R * l.C;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % l.C, b = i / (l.R * l.C), stat = b * l.G + c / l.Cg;
    T z = (x[i] - mean[stat]) * rstd[stat];
    if (gamma) z *= gamma[c];
    if (beta) z += beta[c];
    if (slope && !(z > T(0))) z *= prelu_slope(slope, l.slope_stride, c);
    if (residual) z += residual[i];
    y[i] = z;
  }
}

// The pre-activation z and the gradient dz that reaches it through PReLU.
template <class T>
struct NormPoint {
  T xhat, z, dz;
  __device__ NormPoint(const NormLaunch& l, int64_t c, T x, T dy, T m, T r, const T* gamma, const T* beta, const T* slope) {
    xhat = (x - m) * r;
    z = xhat * (gamma ? gamma[c] : T(1)) + (beta ? beta[c] : T(0));
    dz = (slope && !(z > T(0))) ? dy * prelu_slope(slope, l.slope_stride, c) : dy;
  }
};

// grid and block as norm_partial_stats_kernel. Per (b, chunk, channel): sums of dz, dz * xhat and
// dy * min(z, 0) (the slope's gradient) into part [3][B][chunks][C].
template <class T>
__global__ void norm_backward_partial_kernel(NormLaunch l, const T* x, const T* dy, const T* mean, const T* rstd, const T* gamma,
                                             const T* beta, const T* slope, typename Accumulator<T>::type* part) {
  using A = typename Accumulator<T>::type;
  __shared__ A rows[3][kRowsPerBlock][kLanes];
  const int64_t tiles = (l.C + kLanes - 1) / kLanes, b = blockIdx.x / tiles, s = blockIdx.y;
  const int64_t c = (blockIdx.x % tiles) * kLanes + threadIdx.x;
  A sum_dz = 0, sum_dz_xhat = 0, sum_dy_z = 0;
  if (c < l.C) {
    const int64_t stat = b * l.G + c / l.Cg;
    const T m = mean[stat], r = rstd[stat];
    const int64_t r_end = min(l.R, (s + 1) * l.chunk);
    for (int64_t row = s * l.chunk + threadIdx.y; row < r_end; row += kRowsPerBlock) {
      const int64_t i = (b * l.R + row) * l.C + c;
      const NormPoint<T> p(l, c, x[i], dy[i], m, r, gamma, beta, slope);
      sum_dz += static_cast<A>(p.dz);
      sum_dz_xhat += static_cast<A>(p.dz) * static_cast<A>(p.xhat);
      if (!(p.z > T(0))) sum_dy_z += static_cast<A>(dy[i]) * static_cast<A>(p.z);
    }
  }
  rows[0][threadIdx.y][threadIdx.x] = sum_dz;
  rows[1][threadIdx.y][threadIdx.x] = sum_dz_xhat;
  rows[2][threadIdx.y][threadIdx.x] = sum_dy_z;
  __syncthreads();
  if (threadIdx.y == 0 && c < l.C) {
    const int64_t plane = l.B * l.chunks * l.C, at = (b * l.chunks + s) * l.C + c;
    for (int k = 0; k < 3; ++k) {
      A total = 0;
      for (int i = 0; i < kRowsPerBlock; ++i) total += rows[k][i][threadIdx.x];
      part[k * plane + at] = total;
    }
  }
}

// One thread per (b, group): the group means of dxhat = dz * gamma and of dxhat * xhat, into
// group_terms [2][B][G].
template <class T>
__global__ void norm_backward_groups_kernel(NormLaunch l, const typename Accumulator<T>::type* part, const T* gamma,
                                            typename Accumulator<T>::type* group_terms) {
  using A = typename Accumulator<T>::type;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < l.B * l.G;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / l.G, g = i % l.G, plane = l.B * l.chunks * l.C;
    A d = 0, dx = 0;
    for (int64_t s = 0; s < l.chunks; ++s)
      for (int64_t c = g * l.Cg; c < (g + 1) * l.Cg; ++c) {
        const int64_t at = (b * l.chunks + s) * l.C + c;
        const A w = gamma ? static_cast<A>(gamma[c]) : A(1);
        d += w * part[at];
        dx += w * part[plane + at];
      }
    const A count = static_cast<A>(l.R) * static_cast<A>(l.Cg);
    group_terms[i] = d / count;
    group_terms[l.B * l.G + i] = dx / count;
  }
}

// One thread per channel: dgamma, dbeta and the per-channel slope gradient (any may be null).
template <class T>
__global__ void norm_backward_params_kernel(NormLaunch l, const typename Accumulator<T>::type* part, T* dgamma, T* dbeta,
                                            typename Accumulator<T>::type* dslope_per_channel) {
  using A = typename Accumulator<T>::type;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < l.C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t plane = l.B * l.chunks * l.C;
    A d = 0, dx = 0, dz = 0;
    for (int64_t b = 0; b < l.B; ++b)
      for (int64_t s = 0; s < l.chunks; ++s) {
        const int64_t at = (b * l.chunks + s) * l.C + c;
        d += part[at];
        dx += part[plane + at];
        dz += part[2 * plane + at];
      }
    if (dgamma) dgamma[c] = static_cast<T>(dx);
    if (dbeta) dbeta[c] = static_cast<T>(d);
    if (dslope_per_channel) dslope_per_channel[c] = dz;
  }
}

// dslope[0] = the sum over channels (one slope shared by all); one thread, C values.
template <class T>
__global__ void norm_shared_slope_kernel(int64_t C, const typename Accumulator<T>::type* per_channel, T* dslope) {
  typename Accumulator<T>::type total = 0;
  for (int64_t c = 0; c < C; ++c) total += per_channel[c];
  dslope[0] = static_cast<T>(total);
}

template <class T>
__global__ void norm_slope_copy_kernel(int64_t C, const typename Accumulator<T>::type* per_channel, T* dslope) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dslope[c] = static_cast<T>(per_channel[c]);
}

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), or rstd * dxhat with fixed
// statistics.
template <class T>
__global__ void norm_backward_data_kernel(NormLaunch l, const T* x, const T* dy, const T* mean, const T* rstd, const T* gamma,
                                          const T* beta, const T* slope, const typename Accumulator<T>::type* group_terms, T* dx) {
  using A = typename Accumulator<T>::type;
  const int64_t n = l.B * l.R * l.C;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % l.C, b = i / (l.R * l.C), stat = b * l.G + c / l.Cg;
    const NormPoint<T> p(l, c, x[i], dy[i], mean[stat], rstd[stat], gamma, beta, slope);
    const A dxhat = static_cast<A>(p.dz) * (gamma ? static_cast<A>(gamma[c]) : A(1));
    const A r = static_cast<A>(rstd[stat]);
    dx[i] = l.fixed_stats ? static_cast<T>(dxhat * r)
                          : static_cast<T>(r * (dxhat - group_terms[stat] -
                                                static_cast<A>(p.xhat) * group_terms[l.B * l.G + stat]));
  }
}

}  // namespace vox::cuda
