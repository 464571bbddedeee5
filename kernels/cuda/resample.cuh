#pragma once
// Separable resampling and max pooling of channels-last volumes [N][D][H][W][C].
//   resample: y[n][od][oh][ow][c] = sum over each axis table's entries for (od, oh, ow) of
//             wd * wh * ww * x[n][id][ih][iw][c]. The tables (one per axis, rows of (index,
//             weight) pairs; see kernels/cpu/resample.hpp) describe average and adaptive
//             pooling, nearest and trilinear upsampling, and, transposed, their backward passes.
//   max pool: the largest value of each window and its flat input position (NaN wins, as on the
//             CPU); the backward pass adds each gradient at its position (atomically: windows
//             may overlap).
// One thread per output element; neighbouring threads take neighbouring channels.
#include <cstdint>

#include "kernels/cuda/reduce.cuh"

namespace vox::cuda {

struct DeviceAxis {
  int64_t in_size, out_size;
  const int64_t* begin;  // out_size + 1 offsets
  const int64_t* index;
  const double* weight;
};

template <class T>
__global__ void resample_kernel(int64_t N, int64_t C, DeviceAxis d, DeviceAxis h, DeviceAxis w, const T* x, T* y) {
  using A = typename Accumulator<T>::type;
  const int64_t total = N * d.out_size * h.out_size * w.out_size * C;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % C, p = i / C;
    const int64_t ow = p % w.out_size, oh = (p / w.out_size) % h.out_size, od = (p / (w.out_size * h.out_size)) % d.out_size;
    const int64_t n = p / (w.out_size * h.out_size * d.out_size);
    A acc = 0;
    for (int64_t kd = d.begin[od]; kd < d.begin[od + 1]; ++kd)
      for (int64_t kh = h.begin[oh]; kh < h.begin[oh + 1]; ++kh) {
        const A wdh = static_cast<A>(d.weight[kd] * h.weight[kh]);
        const int64_t row = ((n * d.in_size + d.index[kd]) * h.in_size + h.index[kh]) * w.in_size;
        for (int64_t kw = w.begin[ow]; kw < w.begin[ow + 1]; ++kw)
          acc += wdh * static_cast<A>(w.weight[kw]) * static_cast<A>(x[(row + w.index[kw]) * C + c]);
      }
    y[i] = static_cast<T>(acc);
  }
}

// windows: [3][out][2] (begin, end) per axis, D's first, then H's, then W's.
template <class T>
__global__ void max_pool_kernel(int64_t N, int64_t C, int64_t in_d, int64_t in_h, int64_t in_w, int64_t out_d, int64_t out_h,
                                int64_t out_w, const int64_t* windows, const T* x, T* y, int64_t* argmax) {
  const int64_t total = N * out_d * out_h * out_w * C;
  const int64_t* wd = windows;
  const int64_t* wh = wd + 2 * out_d;
  const int64_t* ww = wh + 2 * out_h;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % C, p = i / C;
    const int64_t ow = p % out_w, oh = (p / out_w) % out_h, od = (p / (out_w * out_h)) % out_d, n = p / (out_w * out_h * out_d);
    T best = T(0);
    int64_t where = 0;
    bool first = true;
    for (int64_t d = wd[2 * od]; d < wd[2 * od + 1]; ++d)
      for (int64_t hh = wh[2 * oh]; hh < wh[2 * oh + 1]; ++hh)
        for (int64_t w = ww[2 * ow]; w < ww[2 * ow + 1]; ++w) {
          const int64_t flat = (d * in_h + hh) * in_w + w;
          const T v = x[(n * in_d * in_h * in_w + flat) * C + c];
          if (first || v > best || (v != v && best == best)) {
            best = v;
            where = flat;
          }
          first = false;
        }
    y[i] = best;
    argmax[i] = where;
  }
}

// gx zeroed beforehand; g and argmax [N][out_volume][C].
template <class T>
__global__ void max_pool_backward_kernel(int64_t N, int64_t C, int64_t in_volume, int64_t out_volume, const T* g,
                                         const int64_t* argmax, T* gx) {
  const int64_t total = N * out_volume * C;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % C, n = i / (out_volume * C);
    atomicAdd(gx + (n * in_volume + argmax[i]) * C + c, g[i]);
  }
}

}  // namespace vox::cuda
