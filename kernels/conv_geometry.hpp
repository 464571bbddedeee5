#pragma once
// The shape of one 3-D convolution, channels-last. 2-D convolutions use depth 1 (kernel 1,
// stride 1, padding 0 on that axis). Transposed convolution is the data gradient of the
// convolution whose input is the transposed convolution's output.
#include <array>
#include <cstdint>

namespace vox::kernels {

struct ConvGeometry {
  int64_t batch = 1;
  std::array<int64_t, 3> in{1, 1, 1};   // input D, H, W
  std::array<int64_t, 3> out{1, 1, 1};  // output D, H, W
  std::array<int64_t, 3> kernel{1, 1, 1};
  std::array<int64_t, 3> stride{1, 1, 1};
  std::array<int64_t, 3> padding{0, 0, 0};
  std::array<int64_t, 3> dilation{1, 1, 1};
  int64_t in_channels = 1;   // C of the input (all groups)
  int64_t out_channels = 1;  // C of the output (all groups)
  int64_t groups = 1;

  int64_t in_per_group() const { return in_channels / groups; }
  int64_t out_per_group() const { return out_channels / groups; }
  int64_t kernel_volume() const { return kernel[0] * kernel[1] * kernel[2]; }
  int64_t in_positions() const { return batch * in[0] * in[1] * in[2]; }
  int64_t out_positions() const { return batch * out[0] * out[1] * out[2]; }
  // Weight layout: [out_channels][kD][kH][kW][in_per_group].
  int64_t weight_size() const { return out_channels * kernel_volume() * in_per_group(); }
  double flops() const { return 2.0 * static_cast<double>(out_positions()) * out_channels * kernel_volume() * in_per_group(); }
};

}  // namespace vox::kernels
