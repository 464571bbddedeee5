#pragma once
// Reference convolution: the textbook loops, one output (or one product) at a time, in double.
// Transposed convolution's reference is conv_backward_data (a scatter of each input through
// the kernel), which is its definition.
#include <vector>

#include "kernels/conv_geometry.hpp"

namespace vox::kernels::reference {

namespace conv_detail {
template <class F>
void for_each_tap(const ConvGeometry& g, F f) {  // f(n, od, oh, ow, kd, kh, kw, id, ih, iw) for in-range taps
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t od = 0; od < g.out[0]; ++od)
      for (int64_t oh = 0; oh < g.out[1]; ++oh)
        for (int64_t ow = 0; ow < g.out[2]; ++ow)
          for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
            for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
              for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
                const int64_t id = od * g.stride[0] - g.padding[0] + kd * g.dilation[0];
                const int64_t ih = oh * g.stride[1] - g.padding[1] + kh * g.dilation[1];
                const int64_t iw = ow * g.stride[2] - g.padding[2] + kw * g.dilation[2];
                if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1] || iw < 0 || iw >= g.in[2]) continue;
                f(n, od, oh, ow, kd, kh, kw, id, ih, iw);
              }
}
inline int64_t in_index(const ConvGeometry& g, int64_t n, int64_t d, int64_t h, int64_t w) {
  return ((n * g.in[0] + d) * g.in[1] + h) * g.in[2] + w;
}
inline int64_t out_index(const ConvGeometry& g, int64_t n, int64_t d, int64_t h, int64_t w) {
  return ((n * g.out[0] + d) * g.out[1] + h) * g.out[2] + w;
}
inline int64_t tap_index(const ConvGeometry& g, int64_t kd, int64_t kh, int64_t kw) {
  return (kd * g.kernel[1] + kh) * g.kernel[2] + kw;
}
}  // namespace conv_detail

template <class T>
void conv_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  using namespace conv_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume();
  std::vector<double> acc(static_cast<size_t>(g.out_positions() * g.out_channels), 0.0);
  for_each_tap(g, [&](int64_t n, int64_t od, int64_t oh, int64_t ow, int64_t kd, int64_t kh, int64_t kw, int64_t id,
                      int64_t ih, int64_t iw) {
    const int64_t o = out_index(g, n, od, oh, ow), i = in_index(g, n, id, ih, iw), t = tap_index(g, kd, kh, kw);
    for (int64_t co = 0; co < g.out_channels; ++co) {
      const int64_t grp = co / og;
      for (int64_t ci = 0; ci < cg; ++ci)
        acc[static_cast<size_t>(o * g.out_channels + co)] +=
            static_cast<double>(x[i * g.in_channels + grp * cg + ci]) * static_cast<double>(w[(co * kv + t) * cg + ci]);
    }
  });
  for (int64_t o = 0; o < g.out_positions(); ++o)
    for (int64_t co = 0; co < g.out_channels; ++co)
      y[o * g.out_channels + co] =
          static_cast<T>(acc[static_cast<size_t>(o * g.out_channels + co)] + (bias ? static_cast<double>(bias[co]) : 0.0));
}

template <class T>
void conv_backward_data(const ConvGeometry& g, const T* dy, const T* w, T* dx) {
  using namespace conv_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume();
  std::vector<double> acc(static_cast<size_t>(g.in_positions() * g.in_channels), 0.0);
  for_each_tap(g, [&](int64_t n, int64_t od, int64_t oh, int64_t ow, int64_t kd, int64_t kh, int64_t kw, int64_t id,
                      int64_t ih, int64_t iw) {
    const int64_t o = out_index(g, n, od, oh, ow), i = in_index(g, n, id, ih, iw), t = tap_index(g, kd, kh, kw);
    for (int64_t co = 0; co < g.out_channels; ++co) {
      const int64_t grp = co / og;
      for (int64_t ci = 0; ci < cg; ++ci)
        acc[static_cast<size_t>(i * g.in_channels + grp * cg + ci)] +=
            static_cast<double>(dy[o * g.out_channels + co]) * static_cast<double>(w[(co * kv + t) * cg + ci]);
    }
  });
  for (size_t k = 0; k < acc.size(); ++k) dx[k] = static_cast<T>(acc[k]);
}

template <class T>
void conv_backward_weight(const ConvGeometry& g, const T* x, const T* dy, T* dw) {
  using namespace conv_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume();
  std::vector<double> acc(static_cast<size_t>(g.weight_size()), 0.0);
  for_each_tap(g, [&](int64_t n, int64_t od, int64_t oh, int64_t ow, int64_t kd, int64_t kh, int64_t kw, int64_t id,
                      int64_t ih, int64_t iw) {
    const int64_t o = out_index(g, n, od, oh, ow), i = in_index(g, n, id, ih, iw), t = tap_index(g, kd, kh, kw);
    for (int64_t co = 0; co < g.out_channels; ++co) {
      const int64_t grp = co / og;
      for (int64_t ci = 0; ci < cg; ++ci)
        acc[static_cast<size_t>((co * kv + t) * cg + ci)] +=
            static_cast<double>(dy[o * g.out_channels + co]) * static_cast<double>(x[i * g.in_channels + grp * cg + ci]);
    }
  });
  for (size_t k = 0; k < acc.size(); ++k) dw[k] = static_cast<T>(acc[k]);
}

}  // namespace vox::kernels::reference

namespace vox::kernels::reference {

// Transposed convolution by its definition: every input voxel scatters through the kernel.
// Here g.in / g.in_channels describe this op's input and g.out / g.out_channels its output;
// w is [in_channels][kD][kH][kW][out_channels / groups].
template <class T>
void conv_transpose_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  const int64_t cin_g = g.in_channels / g.groups, cout_g = g.out_channels / g.groups;
  std::vector<double> acc(static_cast<size_t>(g.out_positions() * g.out_channels), 0.0);
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t d = 0; d < g.in[0]; ++d)
      for (int64_t h = 0; h < g.in[1]; ++h)
        for (int64_t w0 = 0; w0 < g.in[2]; ++w0)
          for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
            for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
              for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
                const int64_t od = d * g.stride[0] - g.padding[0] + kd * g.dilation[0];
                const int64_t oh = h * g.stride[1] - g.padding[1] + kh * g.dilation[1];
                const int64_t ow = w0 * g.stride[2] - g.padding[2] + kw * g.dilation[2];
                if (od < 0 || od >= g.out[0] || oh < 0 || oh >= g.out[1] || ow < 0 || ow >= g.out[2]) continue;
                const int64_t tap = (kd * g.kernel[1] + kh) * g.kernel[2] + kw;
                const int64_t i = ((n * g.in[0] + d) * g.in[1] + h) * g.in[2] + w0;
                const int64_t o = ((n * g.out[0] + od) * g.out[1] + oh) * g.out[2] + ow;
                for (int64_t ci = 0; ci < g.in_channels; ++ci) {
                  const int64_t grp = ci / cin_g;
                  for (int64_t co = 0; co < cout_g; ++co)
                    acc[static_cast<size_t>(o * g.out_channels + grp * cout_g + co)] +=
                        static_cast<double>(x[i * g.in_channels + ci]) *
                        static_cast<double>(w[(ci * g.kernel_volume() + tap) * cout_g + co]);
                }
              }
  for (int64_t o = 0; o < g.out_positions(); ++o)
    for (int64_t c = 0; c < g.out_channels; ++c)
      y[o * g.out_channels + c] =
          static_cast<T>(acc[static_cast<size_t>(o * g.out_channels + c)] + (bias ? static_cast<double>(bias[c]) : 0.0));
}

}  // namespace vox::kernels::reference
