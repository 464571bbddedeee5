#pragma once
// Fused scaled dot-product attention, softmax(q k^T * scale) v, without the [Lq, Lk] score
// matrix: the memory-efficient ("flash") scheme. f32 and f64 compute in their own type; f16 and
// bf16 are widened to f32 as they are staged, and only the output is rounded back.
//   forward: a warp per query row keeps the running maximum m, the running sum l and the output
//            accumulator; keys and values come through shared memory in tiles of 16 rows, shared
//            by the block's 8 warps. It writes out = acc / l and lse = m + log l per row.
//   backward: the scores are recomputed from lse (p = exp(s - lse)), so nothing of size
//            [Lq, Lk] is kept. With delta_i = dout_i . out_i and ds = p (dout_i . v_j - delta_i):
//              dq_i = scale sum_j ds k_j     (a warp per query row; it also writes delta)
//              dk_j = scale sum_i ds q_i,  dv_j = sum_i p dout_i   (a warp per key row)
//            Each gradient row is summed by one warp in a fixed order: deterministic, no atomics.
// Head dims up to kAttentionMaxDim (each lane holds kAttentionMaxDim / 32 of a row). lse and
// delta are kept in the compute type A (f32, or f64 for f64).
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

// Copies rows [first, first + count) of a [rows][width] matrix into tile[.][0, width), widened to A.
template <class A, class T>
__device__ void stage_rows(A (*tile)[kAttentionMaxDim], const T* matrix, int64_t first, int count, int64_t width) {
  for (int64_t idx = threadIdx.x; idx < count * width; idx += blockDim.x)
    tile[idx / width][idx % width] = static_cast<A>(matrix[(first + idx / width) * width + idx % width]);
}

// The row this warp owns: row `index` of problem `problem` (8 rows a block, blocks flattened over
// the problems); `flat` is problem * rows + index, row 0's for a warp past the end (inactive,
// which holds for the whole warp).
struct WarpRow {
  int64_t problem, index, flat;
  bool active;
};
__device__ inline WarpRow warp_row(int64_t rows) {
  const int64_t row_blocks = (rows + kAttentionRows - 1) / kAttentionRows;
  WarpRow r;
  r.problem = blockIdx.x / row_blocks;
  r.index = (blockIdx.x % row_blocks) * kAttentionRows + threadIdx.x / 32;
  r.active = r.index < rows;
  r.flat = r.problem * rows + (r.active ? r.index : 0);
  return r;
}

// Waits until the block has finished with the previous tiles, then stages rows [first, first +
// 16) (fewer at the end) of two matrices with matching rows, a [rows][a_width] and b
// [rows][b_width]; returns how many. The caller syncs again before reading the tiles.
template <class A, class T>
__device__ int stage_tiles(A (*tile_a)[kAttentionMaxDim], const T* a, int64_t a_width, A (*tile_b)[kAttentionMaxDim], const T* b,
                           int64_t b_width, int64_t first, int64_t rows) {
  const int count = static_cast<int>(rows - first < kAttentionTile ? rows - first : kAttentionTile);
  __syncthreads();
  stage_rows(tile_a, a, first, count, a_width);
  stage_rows(tile_b, b, first, count, b_width);
  return count;
}

// Calls visit(k_row, v_row) for every key of problem b on an active warp, the keys passing
// through shared memory a tile at a time. Every warp of the block calls it (it holds barriers).
template <class A, class T, class Visit>
__device__ void for_each_key(const AttentionDims& d, int64_t b, const T* k, const T* v, A (*k_tile)[kAttentionMaxDim],
                             A (*v_tile)[kAttentionMaxDim], bool active, Visit&& visit) {
  for (int64_t j0 = 0; j0 < d.kv_len; j0 += kAttentionTile) {
    const int count = stage_tiles(k_tile, k + b * d.kv_len * d.qk_dim, d.qk_dim, v_tile, v + b * d.kv_len * d.v_dim, d.v_dim, j0,
                                  d.kv_len);
    __syncthreads();
    if (active)
      for (int jj = 0; jj < count; ++jj) visit(k_tile[jj], v_tile[jj]);
  }
}

// A row's elements held by this lane, e = lane + 32 t, widened to A and multiplied by factor.
template <class A, class T>
__device__ void load_row(A (&r)[kAttentionPerLane], const T* row, int64_t width, bool active, A factor) {
  const int lane = threadIdx.x % 32;
  for (int t = 0; t < kAttentionPerLane; ++t) {
    const int64_t e = lane + 32 * t;
    r[t] = active && e < width ? static_cast<A>(row[e]) * factor : A(0);
  }
}

template <class A>
__device__ A row_dot(const A (&r)[kAttentionPerLane], const A* tile_row, int64_t width) {
  const int lane = threadIdx.x % 32;
  A dot = 0;
  for (int t = 0; t < kAttentionPerLane; ++t)
    if (lane + 32 * t < width) dot += r[t] * tile_row[lane + 32 * t];
  return warp_sum(dot);
}

// grid: batch * ceil(q_len / 8) blocks of 8 warps.
template <class T, class A = typename Accumulator<T>::type>
__global__ void attention_forward_kernel(AttentionDims d, const T* q, const T* k, const T* v, T* out, A* lse) {
  __shared__ A k_tile[kAttentionTile][kAttentionMaxDim];
  __shared__ A v_tile[kAttentionTile][kAttentionMaxDim];
  const WarpRow r = warp_row(d.q_len);
  const int64_t b = r.problem;
  const bool active = r.active;
  const int lane = threadIdx.x % 32;
  A qr[kAttentionPerLane], acc[kAttentionPerLane] = {};
  load_row(qr, q + r.flat * d.qk_dim, d.qk_dim, active, static_cast<A>(d.scale));
  A m = -INFINITY, l = 0;
  for_each_key(d, b, k, v, k_tile, v_tile, active, [&](const A* k_row, const A* v_row) {
    const A s = row_dot(qr, k_row, d.qk_dim);
    const A m_new = s > m ? s : m;
    const A correction = exp(m - m_new);  // 0 at the first key (m = -inf)
    const A p = exp(s - m_new);
    l = l * correction + p;
    for (int t = 0; t < kAttentionPerLane; ++t)
      if (lane + 32 * t < d.v_dim) acc[t] = acc[t] * correction + p * v_row[lane + 32 * t];
    m = m_new;
  });
  if (!active) return;
  T* o = out + r.flat * d.v_dim;
  for (int t = 0; t < kAttentionPerLane; ++t)
    if (lane + 32 * t < d.v_dim) o[lane + 32 * t] = static_cast<T>(acc[t] / l);
  if (lane == 0) lse[r.flat] = m + ::log(l);
}

// grid as the forward. Writes dq and delta.
template <class T, class A = typename Accumulator<T>::type>
__global__ void attention_backward_query_kernel(AttentionDims d, const T* q, const T* k, const T* v, const T* out, const A* lse,
                                                const T* dout, T* dq, A* delta) {
  __shared__ A k_tile[kAttentionTile][kAttentionMaxDim];
  __shared__ A v_tile[kAttentionTile][kAttentionMaxDim];
  const WarpRow r = warp_row(d.q_len);
  const int64_t b = r.problem, row = r.flat;
  const bool active = r.active;
  const int lane = threadIdx.x % 32;
  A qr[kAttentionPerLane], dor[kAttentionPerLane], orow[kAttentionPerLane], dqr[kAttentionPerLane] = {};
  load_row(qr, q + row * d.qk_dim, d.qk_dim, active, static_cast<A>(d.scale));
  load_row(dor, dout + row * d.v_dim, d.v_dim, active, A(1));
  load_row(orow, out + row * d.v_dim, d.v_dim, active, A(1));
  A own = 0;
  for (int t = 0; t < kAttentionPerLane; ++t) own += dor[t] * orow[t];
  const A D = warp_sum(own), L = active ? lse[row] : A(0);
  for_each_key(d, b, k, v, k_tile, v_tile, active, [&](const A* k_row, const A* v_row) {
    const A p = exp(row_dot(qr, k_row, d.qk_dim) - L);
    const A ds = p * (row_dot(dor, v_row, d.v_dim) - D);
    for (int t = 0; t < kAttentionPerLane; ++t)
      if (lane + 32 * t < d.qk_dim) dqr[t] += ds * k_row[lane + 32 * t];
  });
  if (!active) return;
  for (int t = 0; t < kAttentionPerLane; ++t)
    if (lane + 32 * t < d.qk_dim) dq[row * d.qk_dim + lane + 32 * t] = static_cast<T>(dqr[t] * static_cast<A>(d.scale));
  if (lane == 0) delta[row] = D;
}

// grid: batch * ceil(kv_len / 8) blocks of 8 warps, a warp per key row. Needs delta.
template <class T, class A = typename Accumulator<T>::type>
__global__ void attention_backward_key_kernel(AttentionDims d, const T* q, const T* k, const T* v, const A* lse, const T* dout,
                                              const A* delta, T* dk, T* dv) {
  __shared__ A q_tile[kAttentionTile][kAttentionMaxDim];
  __shared__ A do_tile[kAttentionTile][kAttentionMaxDim];
  __shared__ A lse_tile[kAttentionTile], delta_tile[kAttentionTile];
  const WarpRow r = warp_row(d.kv_len);
  const int64_t b = r.problem, row = r.flat;
  const bool active = r.active;
  const int lane = threadIdx.x % 32;
  A kr[kAttentionPerLane], vr[kAttentionPerLane], dkr[kAttentionPerLane] = {}, dvr[kAttentionPerLane] = {};
  load_row(kr, k + row * d.qk_dim, d.qk_dim, active, static_cast<A>(d.scale));
  load_row(vr, v + row * d.v_dim, d.v_dim, active, A(1));
  for (int64_t i0 = 0; i0 < d.q_len; i0 += kAttentionTile) {
    const int count = stage_tiles(q_tile, q + b * d.q_len * d.qk_dim, d.qk_dim, do_tile, dout + b * d.q_len * d.v_dim, d.v_dim,
                                  i0, d.q_len);
    if (threadIdx.x < count) {
      lse_tile[threadIdx.x] = lse[b * d.q_len + i0 + threadIdx.x];
      delta_tile[threadIdx.x] = delta[b * d.q_len + i0 + threadIdx.x];
    }
    __syncthreads();
    if (!active) continue;
    for (int ii = 0; ii < count; ++ii) {
      const A p = exp(row_dot(kr, q_tile[ii], d.qk_dim) - lse_tile[ii]);
      const A ds = p * (row_dot(vr, do_tile[ii], d.v_dim) - delta_tile[ii]);
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
    if (e < d.qk_dim) dk[row * d.qk_dim + e] = static_cast<T>(dkr[t] * static_cast<A>(d.scale));
    if (e < d.v_dim) dv[row * d.v_dim + e] = static_cast<T>(dvr[t]);
  }
}

}  // namespace vox::cuda
