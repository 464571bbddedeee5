#pragma once
// vox's own convolution kernels: each pass of a channels-last convolution is a GEMM whose
// operands are read straight from the tensors (an implicit GEMM: no im2col buffer).
//   forward:         M = output positions, N = Cout/groups, K = taps x Cin/groups;
//   backward_data:   M = input positions,  N = Cin/groups,  K = taps x Cout/groups;
//   backward_weight: M = Cout/groups,      N = taps x Cin/groups, K = output positions.
// One kernel template serves the three: a Problem says where A(m, k), B(k, n) and C(m, n) live.
// Tiles of 64 x 64 outputs, 16 deep, 256 threads of 4 x 4 outputs each, accumulated in the data
// type (float or double). The weight gradient's K is every output position, so it is split
// over blocks (split-K) into partial sums that a second pass adds in a fixed order: the result
// is deterministic. This path serves f64, the shapes cuDNN refuses, and the tests' comparison;
// f16 and bf16 run on tensor cores (implicit_gemm_tensor_core_kernel, at the end).
#include <cstdint>

#include <mma.h>

#include "kernels/conv_geometry.hpp"

namespace vox::cuda {

// The geometry in the form the kernels index with.
struct ConvIndex {
  int64_t batch = 1;
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1}, padding[3] = {0, 0, 0}, dilation[3] = {1, 1, 1};
  int64_t cin = 1, cout = 1, cin_g = 1, cout_g = 1, taps = 1;

  static ConvIndex from(const kernels::ConvGeometry& g) {
    ConvIndex c;
    c.batch = g.batch;
    for (int i = 0; i < 3; ++i) {
      c.in[i] = g.in[i];
      c.out[i] = g.out[i];
      c.kernel[i] = g.kernel[i];
      c.stride[i] = g.stride[i];
      c.padding[i] = g.padding[i];
      c.dilation[i] = g.dilation[i];
    }
    c.cin = g.in_channels;
    c.cout = g.out_channels;
    c.cin_g = g.in_per_group();
    c.cout_g = g.out_per_group();
    c.taps = g.kernel_volume();
    return c;
  }

  // The input position that output position `o` reads through tap `t`, or -1 in the padding.
  __device__ int64_t input_of(int64_t o, int64_t t) const {
    const int64_t ow = o % out[2], oh = (o / out[2]) % out[1], od = (o / (out[2] * out[1])) % out[0];
    const int64_t n = o / (out[2] * out[1] * out[0]);
    const int64_t kw = t % kernel[2], kh = (t / kernel[2]) % kernel[1], kd = t / (kernel[2] * kernel[1]);
    const int64_t id = od * stride[0] - padding[0] + kd * dilation[0];
    const int64_t ih = oh * stride[1] - padding[1] + kh * dilation[1];
    const int64_t iw = ow * stride[2] - padding[2] + kw * dilation[2];
    if (id < 0 || id >= in[0] || ih < 0 || ih >= in[1] || iw < 0 || iw >= in[2]) return -1;
    return ((n * in[0] + id) * in[1] + ih) * in[2] + iw;
  }

  // The output position that reads input position `i` through tap `t`, or -1 if none does.
  __device__ int64_t output_of(int64_t i, int64_t t) const {
    const int64_t iw = i % in[2], ih = (i / in[2]) % in[1], id = (i / (in[2] * in[1])) % in[0];
    const int64_t n = i / (in[2] * in[1] * in[0]);
    const int64_t kw = t % kernel[2], kh = (t / kernel[2]) % kernel[1], kd = t / (kernel[2] * kernel[1]);
    const int64_t td = id + padding[0] - kd * dilation[0], th = ih + padding[1] - kh * dilation[1],
                  tw = iw + padding[2] - kw * dilation[2];
    if (td < 0 || th < 0 || tw < 0 || td % stride[0] || th % stride[1] || tw % stride[2]) return -1;
    const int64_t od = td / stride[0], oh = th / stride[1], ow = tw / stride[2];
    if (od >= out[0] || oh >= out[1] || ow >= out[2]) return -1;
    return ((n * out[0] + od) * out[1] + oh) * out[2] + ow;
  }

  int64_t in_positions() const { return batch * in[0] * in[1] * in[2]; }
  int64_t out_positions() const { return batch * out[0] * out[1] * out[2]; }
};

template <class T>
struct ForwardProblem {
  ConvIndex c;
  const T* x;
  const T* w;
  T* y;
  __device__ T a(int64_t m, int64_t k, int64_t group) const {
    const int64_t i = c.input_of(m, k / c.cin_g);
    return i < 0 ? T(0) : x[i * c.cin + group * c.cin_g + k % c.cin_g];
  }
  __device__ T b(int64_t k, int64_t n, int64_t group) const { return w[(group * c.cout_g + n) * c.taps * c.cin_g + k]; }
  __device__ int64_t c_index(int64_t m, int64_t n, int64_t group) const { return m * c.cout + group * c.cout_g + n; }
};

template <class T>
struct BackwardDataProblem {
  ConvIndex c;
  const T* dy;
  const T* w;
  T* dx;
  __device__ T a(int64_t m, int64_t k, int64_t group) const {
    const int64_t o = c.output_of(m, k / c.cout_g);
    return o < 0 ? T(0) : dy[o * c.cout + group * c.cout_g + k % c.cout_g];
  }
  __device__ T b(int64_t k, int64_t n, int64_t group) const {
    const int64_t tap = k / c.cout_g, co = k % c.cout_g;
    return w[((group * c.cout_g + co) * c.taps + tap) * c.cin_g + n];
  }
  __device__ int64_t c_index(int64_t m, int64_t n, int64_t group) const { return m * c.cin + group * c.cin_g + n; }
};

template <class T>
struct BackwardWeightProblem {
  ConvIndex c;
  const T* x;
  const T* dy;
  T* dw;
  __device__ T a(int64_t m, int64_t k, int64_t group) const { return dy[k * c.cout + group * c.cout_g + m]; }
  __device__ T b(int64_t k, int64_t n, int64_t group) const {
    const int64_t i = c.input_of(k, n / c.cin_g);
    return i < 0 ? T(0) : x[i * c.cin + group * c.cin_g + n % c.cin_g];
  }
  __device__ int64_t c_index(int64_t m, int64_t n, int64_t group) const { return (group * c.cout_g + m) * c.taps * c.cin_g + n; }
};

constexpr int kGemmTileM = 64, kGemmTileN = 64, kGemmTileK = 16, kGemmThreads = 256;

// grid: (ceil(M / 64), ceil(N / 64), groups x splits); block: 256 threads (M, the positions in
// two of the passes, takes the grid's x, which has no 65535 limit). Split s sums
// k in [s * k_chunk, (s + 1) * k_chunk) and writes its C at out + s * split_stride (through the
// problem's c_index, offset by the split).
template <class T, class Problem>
__global__ void __launch_bounds__(kGemmThreads) implicit_gemm_kernel(Problem p, int64_t M, int64_t N, int64_t K, int64_t splits,
                                                                     int64_t k_chunk, T* out, int64_t split_stride) {
  __shared__ T a_tile[kGemmTileK][kGemmTileM];
  __shared__ T b_tile[kGemmTileK][kGemmTileN + 1];
  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % 16, ty = tid / 16;
  const int64_t group = blockIdx.z / splits, split = blockIdx.z % splits;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kGemmTileM, n0 = static_cast<int64_t>(blockIdx.y) * kGemmTileN;
  const int64_t k_begin = split * k_chunk, k_end = min(K, k_begin + k_chunk);
  T acc[4][4] = {};
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kGemmTileK) {
    // Each thread loads 4 elements of each tile; neighbouring threads take neighbouring k for A
    // (channels, contiguous in the forward pass) and neighbouring n for B.
    for (int r = 0; r < 4; ++r) {
      const int e = tid + r * kGemmThreads;
      const int kk = e % kGemmTileK, mm = e / kGemmTileK;
      const int64_t m = m0 + mm, k = k0 + kk;
      a_tile[kk][mm] = (m < M && k < k_end) ? p.a(m, k, group) : T(0);
      const int nn = e % kGemmTileN, kb = e / kGemmTileN;
      const int64_t n = n0 + nn, kb_global = k0 + kb;
      b_tile[kb][nn] = (n < N && kb_global < k_end) ? p.b(kb_global, n, group) : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kGemmTileK; ++kk) {
      T a_reg[4], b_reg[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a_reg[i] = a_tile[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b_reg[j] = b_tile[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a_reg[i] * b_reg[j];
    }
    __syncthreads();
  }
  T* target = out + split * split_stride;
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= M) continue;
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;  // columns strided by 16: neighbouring threads store neighbouring n
      if (n < N) target[p.c_index(m, n, group)] = acc[i][j];
    }
  }
}

// The tensor-core variant for f16 and bf16 operands, through WMMA (mma.sync underneath): the
// same tiles, gathers and grid, with the 64 x 64 tile split into 8 warps of 16 x 32, each two
// 16 x 16 x 16 matrix products per k step, accumulated in f32. Results are written in f32 (out
// is an f32 buffer the launcher rounds into the 16-bit tensor once, after any split sum).
template <class T, class Problem>
__global__ void __launch_bounds__(kGemmThreads) implicit_gemm_tensor_core_kernel(Problem p, int64_t M, int64_t N, int64_t K,
                                                                                 int64_t splits, int64_t k_chunk, float* out,
                                                                                 int64_t split_stride) {
  namespace wmma = nvcuda::wmma;
  constexpr int kPadA = kGemmTileK + 8, kPadB = kGemmTileN + 8, kPadC = kGemmTileN + 4;  // WMMA's stride rules
  __shared__ __align__(32) T a_tile[kGemmTileM][kPadA];  // (m, k)
  __shared__ __align__(32) T b_tile[kGemmTileK][kPadB];  // (k, n)
  __shared__ __align__(32) float c_tile[kGemmTileM][kPadC];
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32;
  const int64_t group = blockIdx.z / splits, split = blockIdx.z % splits;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kGemmTileM, n0 = static_cast<int64_t>(blockIdx.y) * kGemmTileN;
  const int64_t k_begin = split * k_chunk, k_end = min(K, k_begin + k_chunk);
  const int warp_m = (warp % 4) * 16, warp_n = (warp / 4) * 32;
  const T zero = static_cast<T>(0.0f);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
  wmma::fill_fragment(acc[0], 0.0f);
  wmma::fill_fragment(acc[1], 0.0f);
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kGemmTileK) {
    for (int r = 0; r < 4; ++r) {
      const int e = tid + r * kGemmThreads;
      const int kk = e % kGemmTileK, mm = e / kGemmTileK;
      a_tile[mm][kk] = (m0 + mm < M && k0 + kk < k_end) ? p.a(m0 + mm, k0 + kk, group) : zero;
      const int nn = e % kGemmTileN, kb = e / kGemmTileN;
      b_tile[kb][nn] = (n0 + nn < N && k0 + kb < k_end) ? p.b(k0 + kb, n0 + nn, group) : zero;
    }
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_frag;
    wmma::load_matrix_sync(a_frag, &a_tile[warp_m][0], kPadA);
    for (int j = 0; j < 2; ++j) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b_frag;
      wmma::load_matrix_sync(b_frag, &b_tile[0][warp_n + 16 * j], kPadB);
      wmma::mma_sync(acc[j], a_frag, b_frag, acc[j]);
    }
    __syncthreads();
  }
  for (int j = 0; j < 2; ++j) wmma::store_matrix_sync(&c_tile[warp_m][warp_n + 16 * j], acc[j], kPadC, wmma::mem_row_major);
  __syncthreads();
  float* target = out + split * split_stride;
  for (int e = tid; e < kGemmTileM * kGemmTileN; e += kGemmThreads) {
    const int mm = e / kGemmTileN, nn = e % kGemmTileN;  // neighbouring threads store neighbouring n
    if (m0 + mm < M && n0 + nn < N) target[p.c_index(m0 + mm, n0 + nn, group)] = c_tile[mm][nn];
  }
}

}  // namespace vox::cuda
