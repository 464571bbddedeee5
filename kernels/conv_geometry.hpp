#pragma once
// The shape of one 3-D convolution, channels-last. 2-D convolutions use depth 1 (kernel 1,
// stride 1, padding 0 on that axis). Transposed convolution is the data gradient of the
// convolution whose input is the transposed convolution's output.
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

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

// The data gradient (transposed convolution) by stride phase: along each axis, the kernel taps
// that reach an input of each residue modulo the stride.
inline std::array<std::vector<std::vector<int64_t>>, 3> stride_phase_taps(const ConvGeometry& g) {
  std::array<std::vector<std::vector<int64_t>>, 3> taps;
  for (int a = 0; a < 3; ++a) {
    taps[a].resize(static_cast<size_t>(g.stride[a]));
    for (int64_t r = 0; r < g.stride[a]; ++r)
      for (int64_t k = 0; k < g.kernel[a]; ++k)
        if (((r + g.padding[a] - k * g.dilation[a]) % g.stride[a] + g.stride[a]) % g.stride[a] == 0)
          taps[a][static_cast<size_t>(r)].push_back(k);
  }
  return taps;
}

// Rows per tile of the CPU convolutions: the column buffer of a tile stays around 384 KiB
// (L2-resident next to the packed weights), in whole multiples of the GEMM's 6-row register tile.
inline int64_t conv_tile_rows(int64_t row_length) {
  const int64_t rows = std::clamp<int64_t>(98304 / std::max<int64_t>(row_length, 1), 6, 768);
  return rows / 6 * 6;
}

// How the CPU weight gradient partitions the output positions, by sizes only, so that its result
// is the same on any number of threads: tiles of `tile` positions, grouped into `chunks` runs of
// consecutive tiles, each summed into its own copy of the gradient (at most 16 copies, and at most
// 4 Mi elements of copies: large weights get few chunks), the copies then added in order. bf16
// results depend on this partition, so the reference follows it too.
struct WeightGradientSplit {
  int64_t tile, tiles, chunks;
  // Tiles [first_tile(c), first_tile(c + 1)) make chunk c.
  int64_t first_tile(int64_t chunk) const { return tiles * chunk / chunks; }
};
inline WeightGradientSplit weight_gradient_split(const ConvGeometry& g) {
  const int64_t tile = conv_tile_rows(g.kernel_volume() * g.in_per_group());
  const int64_t tiles = (g.out_positions() + tile - 1) / tile;
  const int64_t weight = g.weight_size();
  const int64_t chunks = std::clamp<int64_t>(std::min<int64_t>(tiles, (int64_t{4} << 20) / std::max<int64_t>(weight, 1)), 1, 16);
  return {tile, tiles, chunks};
}

}  // namespace vox::kernels
