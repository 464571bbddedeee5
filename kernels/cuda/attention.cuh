#pragma once
// Fused scaled dot-product attention, softmax(q k^T * scale) v, for f32 and f64, without the
// [Lq, Lk] score matrix: the memory-efficient ("flash") scheme.
//   forward: a warp per query row keeps the running maximum m, the running sum l and the output
//            accumulator; keys and values come through shared memory in tiles of 16 rows, shared
//            by the block's 8 warps. It writes out = acc / l and lse = m + log l per row.
//   backward: the scores are recomputed from lse (p = exp(s - lse)), so nothing of size
//            [Lq, Lk] is kept. With delta_i = dout_i . out_i and ds = p (dout_i . v_j - delta_i):
//              dq_i = scale sum_j ds k_j     (a warp per query row; it also writes delta)
//              dk_j = scale sum_i ds q_i,  dv_j = sum_i p dout_i   (a warp per key row)
//            Each gradient row is summed by one warp in a fixed order: deterministic, no atomics.
// Head dims up to kAttentionMaxDim (each lane holds kAttentionMaxDim / 32 of a row). cuDNN's
// fused attention takes f16/bf16 only, so vox's f32 and f64 attention runs here.
#include <cstdint>

#include "kernels/cuda/softmax.cuh"  // warp_sum

namespace vox::cuda {

constexpr int kAttentionMaxDim = 128;
constexpr int kAttentionRows = 8;   // warps per block, one row each
constexpr int kAttentionTile = 16;  // rows staged in shared memory at a time
constexpr int kAttentionPerLane = kAttentionMaxDim / 32;

struct AttentionDims {
  int64_t batch;       // batch x heads, flattened
  int64_t q_len, kv_len;
  int64_t qk_dim, v_dim;
  double scale;
};

// Copies rows [first, first + count) of a [rows][width] matrix into tile[.][0, width).
template <class T>
__device__ void stage_rows(T (*tile)[kAttentionMaxDim], const T* matrix, int64_t first, int count, int64_t width) {
  for (int64_t idx = threadIdx.x; idx < count * width; idx += blockDim.x)
    tile[idx / width][idx % width] = matrix[(first + idx / width) * width + idx % width];
}

// A row's elements held by this lane: e = lane + 32 t.
template <class T>
__device__ void load_row(T (&r)[kAttentionPerLane], const T* row, int64_t width, bool active, T factor) {
  const int lane = threadIdx.x % 32;
  for (int t = 0; t < kAttentionPerLane; ++t) {
    const int64_t e = lane + 32 * t;
    r[t] = active && e < width ? row[e] * factor : T(0);
  }
}

template <class T>
__device__ T row_dot(const T (&r)[kAttentionPerLane], const T* tile_row, int64_t width) {
  const int lane = threadIdx.x % 32;
  T dot = 0;
  for (int t = 0; t < kAttentionPerLane; ++t)
    if (lane + 32 * t < width) dot += r[t] * tile_row[lane + 32 * t];
  return warp_sum(dot);
}

// grid: batch * ceil(q_len / 8) blocks of 8 warps.
template <class T>
__global__ void attention_forward_kernel(AttentionDims d, const T* q, const T* k, const T* v, T* out, T* lse) {
  __shared__ T k_tile[kAttentionTile][kAttentionMaxDim];
  __shared__ T v_tile[kAttentionTile][kAttentionMaxDim];
  const int64_t row_blocks = (d.q_len + kAttentionRows - 1) / kAttentionRows;
  const int64_t b = blockIdx.x / row_blocks, i = (blockIdx.x % row_blocks) * kAttentionRows + threadIdx.x / 32;
  const bool active = i < d.q_len;  // the same for the whole warp
  const int lane = threadIdx.x % 32;
  T qr[kAttentionPerLane], acc[kAttentionPerLane] = {};
  load_row(qr, q + (b * d.q_len + (active ? i : 0)) * d.qk_dim, d.qk_dim, active, static_cast<T>(d.scale));
  T m = -INFINITY, l = 0;
  for (int64_t j0 = 0; j0 < d.kv_len; j0 += kAttentionTile) {
    const int count = static_cast<int>(d.kv_len - j0 < kAttentionTile ? d.kv_len - j0 : kAttentionTile);
    __syncthreads();
    stage_rows(k_tile, k + b * d.kv_len * d.qk_dim, j0, count, d.qk_dim);
    stage_rows(v_tile, v + b * d.kv_len * d.v_dim, j0, count, d.v_dim);
    __syncthreads();
    if (!active) continue;
    for (int jj = 0; jj < count; ++jj) {
      const T s = row_dot(qr, k_tile[jj], d.qk_dim);
      const T m_new = s > m ? s : m;
      const T correction = exp(m - m_new);  // 0 at the first key (m = -inf)
      const T p = exp(s - m_new);
      l = l * correction + p;
      for (int t = 0; t < kAttentionPerLane; ++t)
        if (lane + 32 * t < d.v_dim) acc[t] = acc[t] * correction + p * v_tile[jj][lane + 32 * t];
      m = m_new;
    }
  }
  if (!active) return;
  T* o = out + (b * d.q_len + i) * d.v_dim;
  for (int t = 0; t < kAttentionPerLane; ++t)
    if (lane + 32 * t < d.v_dim) o[lane + 32 * t] = acc[t] / l;
  if (lane == 0) lse[b * d.q_len + i] = m + ::log(l);
}

// grid as the forward. Writes dq and delta.
template <class T>
__global__ void attention_backward_query_kernel(AttentionDims d, const T* q, const T* k, const T* v, const T* out, const T* lse,
                                                const T* dout, T* dq, T* delta) {
  __shared__ T k_tile[kAttentionTile][kAttentionMaxDim];
  __shared__ T v_tile[kAttentionTile][kAttentionMaxDim];
  const int64_t row_blocks = (d.q_len + kAttentionRows - 1) / kAttentionRows;
  const int64_t b = blockIdx.x / row_blocks, i = (blockIdx.x % row_blocks) * kAttentionRows + threadIdx.x / 32;
  const bool active = i < d.q_len;
  const int lane = threadIdx.x % 32;
  const int64_t row = b * d.q_len + (active ? i : 0);
  T qr[kAttentionPerLane], dor[kAttentionPerLane], orow[kAttentionPerLane], dqr[kAttentionPerLane] = {};
  load_row(qr, q + row * d.qk_dim, d.qk_dim, active, static_cast<T>(d.scale));
  load_row(dor, dout + row * d.v_dim, d.v_dim, active, T(1));
  load_row(orow, out + row * d.v_dim, d.v_dim, active, T(1));
  T own = 0;
  for (int t = 0; t < kAttentionPerLane; ++t) own += dor[t] * orow[t];
  const T D = warp_sum(own), L = active ? lse[row] : T(0);
  for (int64_t j0 = 0; j0 < d.kv_len; j0 += kAttentionTile) {
    const int count = static_cast<int>(d.kv_len - j0 < kAttentionTile ? d.kv_len - j0 : kAttentionTile);
    __syncthreads();
    stage_rows(k_tile, k + b * d.kv_len * d.qk_dim, j0, count, d.qk_dim);
    stage_rows(v_tile, v + b * d.kv_len * d.v_dim, j0, count, d.v_dim);
    __syncthreads();
    if (!active) continue;
    for (int jj = 0; jj < count; ++jj) {
      const T p = exp(row_dot(qr, k_tile[jj], d.qk_dim) - L);
      const T ds = p * (row_dot(dor, v_tile[jj], d.v_dim) - D);
      for (int t = 0; t < kAttentionPerLane; ++t)
        if (lane + 32 * t < d.qk_dim) dqr[t] += ds * k_tile[jj][lane + 32 * t];
    }
  }
  if (!active) return;
  for (int t = 0; t < kAttentionPerLane; ++t)
    if (lane + 32 * t < d.qk_dim) dq[row * d.qk_dim + lane + 32 * t] = dqr[t] * static_cast<T>(d.scale);
  if (lane == 0) delta[row] = D;
}

// grid: batch * ceil(kv_len / 8) blocks of 8 warps, a warp per key row. Needs delta.
template <class T>
__global__ void attention_backward_key_kernel(AttentionDims d, const T* q, const T* k, const T* v, const T* lse, const T* dout,
                                              const T* delta, T* dk, T* dv) {
  __shared__ T q_tile[kAttentionTile][kAttentionMaxDim];
  __shared__ T do_tile[kAttentionTile][kAttentionMaxDim];
  __shared__ T lse_tile[kAttentionTile], delta_tile[kAttentionTile];
  const int64_t row_blocks = (d.kv_len + kAttentionRows - 1) / kAttentionRows;
  const int64_t b = blockIdx.x / row_blocks, j = (blockIdx.x % row_blocks) * kAttentionRows + threadIdx.x / 32;
  const bool active = j < d.kv_len;
  const int lane = threadIdx.x % 32;
  const int64_t row = b * d.kv_len + (active ? j : 0);
  T kr[kAttentionPerLane], vr[kAttentionPerLane], dkr[kAttentionPerLane] = {}, dvr[kAttentionPerLane] = {};
  load_row(kr, k + row * d.qk_dim, d.qk_dim, active, static_cast<T>(d.scale));
  load_row(vr, v + row * d.v_dim, d.v_dim, active, T(1));
  for (int64_t i0 = 0; i0 < d.q_len; i0 += kAttentionTile) {
    const int count = static_cast<int>(d.q_len - i0 < kAttentionTile ? d.q_len - i0 : kAttentionTile);
    __syncthreads();
    stage_rows(q_tile, q + b * d.q_len * d.qk_dim, i0, count, d.qk_dim);
    stage_rows(do_tile, dout + b * d.q_len * d.v_dim, i0, count, d.v_dim);
    if (threadIdx.x < count) {
      lse_tile[threadIdx.x] = lse[b * d.q_len + i0 + threadIdx.x];
      delta_tile[threadIdx.x] = delta[b * d.q_len + i0 + threadIdx.x];
    }
    __syncthreads();
    if (!active) continue;
    for (int ii = 0; ii < count; ++ii) {
      const T p = exp(row_dot(kr, q_tile[ii], d.qk_dim) - lse_tile[ii]);
      const T ds = p * (row_dot(vr, do_tile[ii], d.v_dim) - delta_tile[ii]);
      for (int t = 0; t < kAttentionPerLane; ++t) {
        const int64_t e = lane + 32 * t;
        if (e < d.v_dim) dvr[t] += p * do_tile[ii][e];
        if (e < d.qk_dim) dkr[t] += ds * q_tile[ii][e];
      }
    }
  }
  if (!active) return;
  for (int t = 0; t < kAttentionPerLane; ++t) {
    const int64_t e = lane + 32 * t;
    if (e < d.qk_dim) dk[row * d.qk_dim + e] = dkr[t] * static_cast<T>(d.scale);
    if (e < d.v_dim) dv[row * d.v_dim + e] = dvr[t];
  }
}

}  // namespace vox::cuda
