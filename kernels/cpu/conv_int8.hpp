#pragma once
// INT8 convolution and transposed convolution on the CPU, channels-last, u8 activations x s8
// weights, int32 sums, the f32 epilogue (scale, bias, activation) fused into the GEMM's store:
// bit for bit kernels/reference/conv_int8.hpp.
//
// Taps outside the input read the zero point, which the GEMM's column-sum correction (zero point
// times each output's weight sum) cancels exactly, so borders need no special case. Weights are
// packed once (pack_conv_int8, kept by the quantized layer) for every path:
//   direct     (vpdpbusd, one group) the input copied once into a zero-point-padded volume, its
//              channels padded to a multiple of 4; each output row (n, d, h) is one GEMM that
//              reads its taps in place. A one-channel input takes quads along the kernel width.
//   narrow     (vpdpbusd, one group, at most 8 outputs) 16 positions in the lanes over a
//              quad-planar padded copy, where the direct GEMM would fill N of its 16 lanes.
//   columns    (every other case: groups, the vpmaddubsw and portable kernels) conv.hpp's passes:
//              output positions in tiles, each tile's taps gathered into a column buffer (rows
//              padded to a multiple of 4 bytes, the padding zero), one GEMM per tile and group.
// The transposed convolution works one stride phase at a time on the taps that phase uses
// (conv.hpp's strided_backward_data) on all three paths, each phase with its own packed weights.
// The entry points take a u8 input, or an f32 one that the direct and narrow paths quantize while
// they pad it.
#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "kernels/cpu/conv.hpp"
#include "kernels/cpu/gemm_int8.hpp"
#include "kernels/cpu/quantize.hpp"

namespace vox::kernels::cpu {

// Weights packed for one (transposed) convolution of a given kernel, stride, padding, dilation,
// channels and groups (the spatial sizes may change from call to call).
struct Int8ConvWeights {
  struct Phase {
    std::vector<std::array<int64_t, 4>> taps;  // kd, kh, kw, flat tap index
    std::vector<PackedInt8> groups;
    PackedInt8 direct;  // one group: [taps x channels padded to 4][out channels]
  };
  bool transposed = false;
  std::vector<PackedInt8> groups;  // convolution: per group, [taps x in_per_group][out_per_group]
  PackedInt8 direct;               // convolution, one group: [taps x in_channels padded to 4][out_channels]
  PackedInt8 direct_rows;          // convolution of one input channel, kernel width <= 4, no w dilation:
                                   // [tap rows (kd, kh) x 4 (kw, zero-padded)][out_channels]
  std::vector<Phase> phases;       // transposed: per stride phase (rd, rh, rw), row-major
};

namespace conv_int8_detail {

inline int64_t padded_row(int64_t K) { return gemm_int8_detail::quads(K) * 4; }

// The epilogue of group grp's columns.
inline Int8Epilogue group_epilogue(const Int8Epilogue& e, int64_t grp, int64_t N) {
  Int8Epilogue g = e;
  g.scale = e.scale + grp * N;
  if (e.bias) g.bias = e.bias + grp * N;
  if (e.slope) g.slope = e.slope + grp * N * e.slope_stride;
  return g;
}

}  // namespace conv_int8_detail

// Packs w ([out_channels][kD][kH][kW][in_per_group] s8, the convolution's layout; for a
// transposed convolution, that of the convolution it transposes) for g's kernel, stride,
// padding, dilation, channels and groups.
inline Int8ConvWeights pack_conv_int8(const ConvGeometry& g, const int8_t* w, bool transposed) {
  using namespace conv_int8_detail;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), kv = g.kernel_volume();
  Int8ConvWeights out;
  out.transposed = transposed;
  if (!transposed) {
    for (int64_t grp = 0; grp < g.groups; ++grp)
      out.groups.push_back(pack_int8(og, kv * cg, [&](int64_t k, int64_t co) { return w[(grp * og + co) * kv * cg + k]; }));
    if (g.groups == 1) {  // the direct convolution's: channels padded to a multiple of 4 with zero weights
      const int64_t c4 = (cg + 3) / 4 * 4;
      out.direct = pack_int8(og, kv * c4, [&](int64_t k, int64_t co) {
        const int64_t t = k / c4, c = k % c4;
        return c < cg ? w[(co * kv + t) * cg + c] : int8_t{0};
      });
    }
    if (g.groups == 1 && cg == 1 && g.kernel[2] <= 4 && g.dilation[2] == 1) {  // one input channel: quads along the kernel width
      const int64_t kw_n = g.kernel[2];
      out.direct_rows = pack_int8(og, g.kernel[0] * g.kernel[1] * 4, [&](int64_t k, int64_t co) {
        return k % 4 < kw_n ? w[co * kv + (k / 4) * kw_n + k % 4] : int8_t{0};
      });
    }
    return out;
  }
  const auto axis_taps = stride_phase_taps(g);
  for (int64_t rd = 0; rd < g.stride[0]; ++rd)
    for (int64_t rh = 0; rh < g.stride[1]; ++rh)
      for (int64_t rw = 0; rw < g.stride[2]; ++rw) {
        Int8ConvWeights::Phase phase;
        for (int64_t kd : axis_taps[0][static_cast<size_t>(rd)])
          for (int64_t kh : axis_taps[1][static_cast<size_t>(rh)])
            for (int64_t kw : axis_taps[2][static_cast<size_t>(rw)]) phase.taps.push_back({kd, kh, kw, (kd * g.kernel[1] + kh) * g.kernel[2] + kw});
        const int64_t K = static_cast<int64_t>(phase.taps.size()) * og;
        for (int64_t grp = 0; grp < g.groups; ++grp)  // row j * og + co, column ci: the weight of phase tap j from co to ci
          phase.groups.push_back(pack_int8(cg, K, [&](int64_t k, int64_t ci) {
            return w[((grp * og + k % og) * kv + phase.taps[static_cast<size_t>(k / og)][3]) * cg + ci];
          }));
        if (g.groups == 1) {
          const int64_t o4 = (og + 3) / 4 * 4;
          phase.direct = pack_int8(cg, static_cast<int64_t>(phase.taps.size()) * o4, [&](int64_t k, int64_t ci) {
            const int64_t co = k % o4;
            return co < og ? w[(co * kv + phase.taps[static_cast<size_t>(k / o4)][3]) * cg + ci] : int8_t{0};
          });
        }
        out.phases.push_back(std::move(phase));
      }
  return out;
}

// A convolution's input: u8 with its zero point, or f32 to quantize on the way in (the
// direct kernels quantize while they pad, saving a pass over the input).
struct Int8Input {
  const uint8_t* u8 = nullptr;
  const float* f32 = nullptr;
  float inv_scale = 1.0f;
  int32_t zero_point = 0;
};

namespace conv_int8_detail {

// x ([N, dims..., C], u8, or f32 quantized on the way) copied into a volume padded by low / high
// positions per axis, the padding and the channels past C (to a multiple of channel_multiple)
// holding the zero point. Returns it; `plane` and `volume` are its strides of one D step and one batch item, in
// bytes.
inline std::vector<uint8_t> zero_point_padded(const Int8Input& x, int64_t batch, const std::array<int64_t, 3>& dims, int64_t C,
                                              const std::array<int64_t, 3>& low, const std::array<int64_t, 3>& high,
                                              std::array<int64_t, 3>& padded, int64_t& plane, int64_t& volume, int64_t channel_multiple = 4) {
  const int64_t c4 = (C + channel_multiple - 1) / channel_multiple * channel_multiple, row = dims[2] * C;
  for (int a = 0; a < 3; ++a) padded[a] = dims[a] + low[a] + high[a];
  plane = padded[1] * padded[2] * c4, volume = padded[0] * plane;
  std::vector<uint8_t> xp(static_cast<size_t>(batch * volume), static_cast<uint8_t>(x.zero_point));
  parallel_for(0, batch * dims[0] * dims[1], 16, [&](int64_t b, int64_t e) {
    std::vector<uint8_t> quantized(x.f32 && C != c4 ? static_cast<size_t>(row) : 0);
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / (dims[0] * dims[1]), d = r / dims[1] % dims[0], h = r % dims[1];
      uint8_t* dst = xp.data() + n * volume + (d + low[0]) * plane + ((h + low[1]) * padded[2] + low[2]) * c4;
      const uint8_t* src = x.u8 + r * row;
      if (x.f32) {  // quantized straight into place, or into a row to spread
        quantize_u8_serial(x.f32 + r * row, row, x.inv_scale, x.zero_point, C == c4 ? dst : quantized.data());
        if (C == c4) continue;
        src = quantized.data();
      }
      if (C == c4) std::memcpy(dst, src, static_cast<size_t>(row));
      else
        for (int64_t i = 0; i < dims[2]; ++i)  // a few channels (a first layer's 1): no library call per position
          for (int64_t c = 0; c < C; ++c) dst[i * c4 + c] = src[i * C + c];
    }
  });
  return xp;
}

// Each tap's byte offset in a padded volume (D steps of `plane` bytes, rows of `width` positions of
// `c4` bytes), kd, kh, kw in order.
inline std::vector<int64_t> tap_offsets(const ConvGeometry& g, int64_t plane, int64_t width, int64_t c4) {
  std::vector<int64_t> taps;
  for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
    for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
      for (int64_t kw = 0; kw < g.kernel[2]; ++kw)
        taps.push_back(kd * g.dilation[0] * plane + (kh * g.dilation[1] * width + kw * g.dilation[2]) * c4);
  return taps;
}

// The direct convolution of a one-channel input (a network's first layer): the quad of a tap row
// (kd, kh) is its kernel-width taps side by side, 4 consecutive input bytes along w (the fourth,
// and any past the kernel width, meet zero weights), so a 3^3 kernel is 9 quads, not 27 with
// channels padded to 4, over an input padded along w alone.
inline void conv_forward_direct_rows(const ConvGeometry& g, const Int8Input& x, const Int8ConvWeights& w, const Int8Epilogue& epilogue,
                                     float* y) {
  std::array<int64_t, 3> padded, high = g.padding;
  high[2] += 4;  // the last position's quad may read past its kernel width
  int64_t plane = 0, volume = 0;
  const std::vector<uint8_t> xp = zero_point_padded(x, g.batch, g.in, 1, g.padding, high, padded, plane, volume, 1);
  std::vector<int64_t> taps;
  for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
    for (int64_t kh = 0; kh < g.kernel[1]; ++kh) taps.push_back(kd * g.dilation[0] * plane + kh * g.dilation[1] * padded[2]);
  const int64_t rows = g.batch * g.out[0] * g.out[1];
  parallel_for(0, rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / (g.out[0] * g.out[1]), od = r / g.out[1] % g.out[0], oh = r % g.out[1];
      const uint8_t* src = xp.data() + n * volume + od * g.stride[0] * plane + oh * g.stride[1] * padded[2];
      gemm_int8_direct(g.out[2], src, g.stride[2], taps.data(), static_cast<int64_t>(taps.size()), 1, x.zero_point, w.direct_rows, epilogue,
                       y + r * g.out[2] * g.out_channels, g.out_channels);
    }
  });
}

// The direct convolution (vpdpbusd, one group): x copied once into a zero-point-padded volume
// whose channels are padded to a multiple of 4, then each output row (n, d, h) is one GEMM that
// reads its taps in place: no column buffer, whose gathering cost more than the products.
inline void conv_forward_direct(const ConvGeometry& g, const Int8Input& x, const Int8ConvWeights& w, const Int8Epilogue& epilogue, float* y) {
  const int32_t x_zero_point = x.zero_point;
  if (!w.direct_rows.empty()) return conv_forward_direct_rows(g, x, w, epilogue, y);
  const int64_t c4 = (g.in_channels + 3) / 4 * 4;
  std::array<int64_t, 3> padded;
  int64_t plane = 0, volume = 0;
  const std::vector<uint8_t> xp =
      zero_point_padded(x, g.batch, g.in, g.in_channels, g.padding, g.padding, padded, plane, volume);
  const std::vector<int64_t> taps = tap_offsets(g, plane, padded[2], c4);
  const int64_t rows = g.batch * g.out[0] * g.out[1], step = g.stride[2] * c4;
  parallel_for(0, rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / (g.out[0] * g.out[1]), od = r / g.out[1] % g.out[0], oh = r % g.out[1];
      const uint8_t* src = xp.data() + n * volume + od * g.stride[0] * plane + oh * g.stride[1] * padded[2] * c4;
      gemm_int8_direct(g.out[2], src, step, taps.data(), static_cast<int64_t>(taps.size()), c4 / 4, x_zero_point, w.direct, epilogue,
                       y + r * g.out[2] * g.out_channels, g.out_channels);
    }
  });
}

// Along axis a, the input offset of phase r's tap k (an exact division for the phase's taps),
// and the number of outputs of phase r.
inline int64_t phase_offset(const ConvGeometry& g, int a, int64_t r, int64_t k) { return (r + g.padding[a] - k * g.dilation[a]) / g.stride[a]; }
inline int64_t phase_count(const ConvGeometry& g, int a, int64_t r) { return (g.in[a] - r + g.stride[a] - 1) / g.stride[a]; }
// The padding a transposed convolution's input needs on each side for every phase's taps.
inline void transpose_margins(const ConvGeometry& g, const Int8ConvWeights& w, std::array<int64_t, 3>& low, std::array<int64_t, 3>& high) {
  low = {0, 0, 0}, high = {0, 0, 0};
  for (const Int8ConvWeights::Phase& phase : w.phases)
    for (const auto& t : phase.taps)
      for (int a = 0; a < 3; ++a) {
        const int64_t r = ((t[static_cast<size_t>(a)] * g.dilation[a] - g.padding[a]) % g.stride[a] + g.stride[a]) % g.stride[a];
        if (r >= g.in[a]) continue;
        const int64_t off = phase_offset(g, a, r, t[static_cast<size_t>(a)]);
        low[a] = std::max(low[a], -off);
        high[a] = std::max(high[a], phase_count(g, a, r) - 1 + off - (g.out[a] - 1));
      }
}

// The transposed convolution by direct GEMMs (vpdpbusd, one group), one stride phase at a time.
// Along each axis, output r + stride * i of phase r reads input i + (r + padding - k * dilation)
// / stride through tap k (an exact division for the phase's taps): a unit-stride correlation of
// the zero-point-padded input with the phase's taps, each output row one GEMM, its results
// written every stride-th position.
inline void conv_transpose_direct(const ConvGeometry& g, const Int8Input& x, const Int8ConvWeights& w, const Int8Epilogue& epilogue,
                                  float* y) {
  const int32_t x_zero_point = x.zero_point;
  const int64_t X = g.out_channels, x4 = (X + 3) / 4 * 4, Y = g.in_channels;
  auto offset = [&](int a, int64_t r, int64_t k) { return phase_offset(g, a, r, k); };
  auto count = [&](int a, int64_t r) { return phase_count(g, a, r); };
  std::array<int64_t, 3> low, high;
  transpose_margins(g, w, low, high);
  std::array<int64_t, 3> padded;
  int64_t plane = 0, volume = 0;
  const std::vector<uint8_t> xp =
      zero_point_padded(x, g.batch, g.out, X, low, high, padded, plane, volume);
  for (int64_t rd = 0; rd < std::min(g.stride[0], g.in[0]); ++rd)
    for (int64_t rh = 0; rh < std::min(g.stride[1], g.in[1]); ++rh)
      for (int64_t rw = 0; rw < std::min(g.stride[2], g.in[2]); ++rw) {
        const Int8ConvWeights::Phase& phase = w.phases[static_cast<size_t>((rd * g.stride[1] + rh) * g.stride[2] + rw)];
        const std::array<int64_t, 3> counts{count(0, rd), count(1, rh), count(2, rw)};
        std::vector<int64_t> taps;
        for (const auto& t : phase.taps)
          taps.push_back((offset(0, rd, t[0]) + low[0]) * plane + ((offset(1, rh, t[1]) + low[1]) * padded[2] + offset(2, rw, t[2]) + low[2]) * x4);
        const int64_t rows = g.batch * counts[0] * counts[1], ldc = g.stride[2] * Y;
        parallel_for(0, rows, 1, [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r) {
            const int64_t n = r / (counts[0] * counts[1]), i = r / counts[1] % counts[0], j = r % counts[1];
            float* out = y + (((n * g.in[0] + rd + g.stride[0] * i) * g.in[1] + rh + g.stride[1] * j) * g.in[2] + rw) * Y;
            if (taps.empty()) {  // no tap reaches these outputs (a kernel smaller than the stride): the bias alone
              for (int64_t m = 0; m < counts[2]; ++m)
                for (int64_t c = 0; c < Y; ++c) out[m * ldc + c] = epilogue(0, c);
              continue;
            }
            gemm_int8_direct(counts[2], xp.data() + n * volume + i * plane + j * padded[2] * x4, x4, taps.data(),
                             static_cast<int64_t>(taps.size()), x4 / 4, x_zero_point, phase.direct, epilogue, out, ldc);
          }
        });
      }
}

// Narrow layers (at most 8 outputs: a segmentation head, the transposed convolution into the
// classes) would fill only N of the direct GEMM's 16 lanes. They put 16 consecutive output
// positions in the lanes instead, over an input padded into quad-planar rows: each (n, d, h) row
// holds, quad by quad of channels, its positions' 4 bytes side by side, so that a tap's quad for
// 16 positions is one load; one vpdpbusd per tap, quad and output, against those 4 weights
// broadcast.
constexpr int64_t kNarrowOutputs = 8;

// x ([N, dims..., C], u8 or f32 quantized on the way) in quad-planar rows padded by low / high
// positions per axis (the padding and the channels past C holding the zero point): row (n, d, h)
// at ((n * padded[0] + d) * padded[1] + h) * row bytes, quad q of position w at q * padded[2] * 4 +
// w * 4.
struct QuadPlanar {
  std::vector<uint8_t> bytes;
  std::array<int64_t, 3> padded;
  int64_t quads, row, plane, volume;
};
// A row of `width` positions of C channels (a multiple of 4, or 1 or 2: the rest of the quad is
// the zero point) into its quads.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void spread_quads_avx512(const uint8_t* src, int64_t width, int64_t C, int64_t quads,
                                                                            int64_t quad_stride, uint8_t zero_point, uint8_t* dst) {
  if (C <= 2) {  // widen each position's 1 or 2 bytes to a quad, the zero point above them
    const uint32_t fill = C == 1 ? 0x01010100u * zero_point : 0x01010000u * zero_point;
    const __m512i high = _mm512_maskz_set1_epi32(0xFFFF, static_cast<int>(fill));
    for (int64_t w0 = 0; w0 < width; w0 += 16) {
      const int64_t n = std::min<int64_t>(16, width - w0);
      const __mmask16 mask = static_cast<__mmask16>((1u << n) - 1u);
      const __m512i v = C == 1 ? _mm512_maskz_cvtepu8_epi32(mask, _mm_maskz_loadu_epi8(mask, src + w0))
                               : _mm512_maskz_cvtepu16_epi32(mask, _mm256_maskz_loadu_epi16(mask, src + 2 * w0));
      _mm512_mask_storeu_epi32(dst + w0 * 4, mask, _mm512_or_si512(v, high));
    }
    return;
  }
  const __m512i index = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_maskz_set1_epi32(0xFFFF, static_cast<int>(C)));
  for (int64_t q = 0; q < quads; ++q)
    for (int64_t w0 = 0; w0 < width; w0 += 16) {
      const __mmask16 mask = static_cast<__mmask16>((1u << std::min<int64_t>(16, width - w0)) - 1u);
      const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, index, src + w0 * C + 4 * q, 1);
      _mm512_mask_storeu_epi32(dst + q * quad_stride + w0 * 4, mask, v);
    }
}
inline QuadPlanar quad_planar(const Int8Input& x, int64_t batch, const std::array<int64_t, 3>& dims, int64_t C,
                              const std::array<int64_t, 3>& low, const std::array<int64_t, 3>& high) {
  QuadPlanar p;
  for (int a = 0; a < 3; ++a) p.padded[a] = dims[a] + low[a] + high[a];
  p.quads = (C + 3) / 4, p.row = p.quads * p.padded[2] * 4, p.plane = p.padded[1] * p.row, p.volume = p.padded[0] * p.plane;
  p.bytes.assign(static_cast<size_t>(batch * p.volume), static_cast<uint8_t>(x.zero_point));
  const int64_t length = dims[2] * C, quad_stride = p.padded[2] * 4;
  parallel_for(0, batch * dims[0] * dims[1], 16, [&](int64_t b, int64_t e) {
    std::vector<uint8_t> line(static_cast<size_t>(length + 4));  // gathers of the last quad may read 3 bytes past
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / (dims[0] * dims[1]), d = r / dims[1] % dims[0], h = r % dims[1];
      if (x.f32) quantize_u8_serial(x.f32 + r * length, length, x.inv_scale, x.zero_point, line.data());
      else std::memcpy(line.data(), x.u8 + r * length, static_cast<size_t>(length));
      uint8_t* dst = p.bytes.data() + n * p.volume + (d + low[0]) * p.plane + (h + low[1]) * p.row + low[2] * 4;
      if ((C % 4 == 0 || C <= 2) && gemm_int8_detail::cpu_has_avx512bw()) {
        spread_quads_avx512(line.data(), dims[2], C, p.quads, quad_stride, static_cast<uint8_t>(x.zero_point), dst);
        continue;
      }
      for (int64_t w = 0; w < dims[2]; ++w)
        for (int64_t c = 0; c < C; ++c) dst[(c / 4) * quad_stride + w * 4 + c % 4] = line[static_cast<size_t>(w * C + c)];
    }
  });
  return p;
}

// The per-output terms of a narrow layer.
struct NarrowTerms {
  int64_t outputs, quads, quad_stride;
  std::vector<int32_t> weights;  // [tap][quad][output]: 4 weights as one word
  float scale[kNarrowOutputs], bias[kNarrowOutputs], slope[kNarrowOutputs];
  int32_t correction[kNarrowOutputs];
  bool activation;

  // From B packed for the direct kernels ([taps x quads x 4][outputs]), the input's zero point and
  // the epilogue.
  NarrowTerms(const PackedInt8& B, int64_t taps, int64_t quads_, int64_t quad_stride_, int32_t zero_point, const Int8Epilogue& e)
      : outputs(B.N), quads(quads_), quad_stride(quad_stride_), weights(static_cast<size_t>(taps * quads_ * B.N)), activation(e.slope != nullptr) {
    for (int64_t k = 0; k < taps * quads; ++k)  // quad k of the packing, column n
      for (int64_t n = 0; n < outputs; ++n)
        std::memcpy(&weights[static_cast<size_t>(k * outputs + n)], B.panels.data() + (k * gemm_int8_detail::kPanel + n) * 4, 4);
    for (int64_t n = 0; n < outputs; ++n) {
      scale[n] = e.scale[n], bias[n] = e.bias ? e.bias[n] : 0.0f;
      slope[n] = e.slope ? e.slope[n * e.slope_stride] : 0.0f;
      correction[n] = zero_point * B.column_sums[static_cast<size_t>(n)];
    }
  }
};

// Blocks of 16 positions at a time: enough independent accumulators (Blocks x N) to hide
// vpdpbusd's latency, which N chains alone (a head's 2 outputs) could not.
template <int N, int Blocks>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) inline void narrow_blocks(const uint8_t* src, const int64_t* taps, int64_t kv,
                                                                                         int64_t w0, int64_t width, const NarrowTerms& k,
                                                                                         float* out, int64_t out_step) {
  const int64_t Q = k.quads;
  const __m512i where = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_maskz_set1_epi32(0xFFFF, static_cast<int>(out_step)));
  __mmask16 mask[Blocks];
  for (int b = 0; b < Blocks; ++b) mask[b] = static_cast<__mmask16>((1u << std::clamp<int64_t>(width - w0 - 16 * b, 0, 16)) - 1u);
  __m512i acc[Blocks][N];
  for (int b = 0; b < Blocks; ++b)
    for (int n = 0; n < N; ++n) acc[b][n] = _mm512_setzero_si512();
  for (int64_t t = 0; t < kv; ++t)
    for (int64_t q = 0; q < Q; ++q) {
      const uint8_t* base = src + taps[t] + q * k.quad_stride + w0 * 4;
      const int32_t* wq = k.weights.data() + (t * Q + q) * N;
      __m512i a[Blocks];
      for (int b = 0; b < Blocks; ++b) a[b] = _mm512_maskz_loadu_epi32(mask[b], base + 64 * b);
      for (int n = 0; n < N; ++n) {
        const __m512i weight = _mm512_maskz_set1_epi32(0xFFFF, wq[n]);
        for (int b = 0; b < Blocks; ++b) acc[b][n] = _mm512_dpbusd_epi32(acc[b][n], a[b], weight);
      }
    }
  for (int b = 0; b < Blocks; ++b)
    for (int n = 0; n < N; ++n) {
      if (!mask[b]) continue;
      const __m512 v = _mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_sub_epi32(acc[b][n], _mm512_maskz_set1_epi32(0xFFFF, k.correction[n])));
      __m512 o = _mm512_fmadd_ps(v, _mm512_maskz_broadcastss_ps(0xFFFF, _mm_set_ss(k.scale[n])), _mm512_maskz_broadcastss_ps(0xFFFF, _mm_set_ss(k.bias[n])));
      if (k.activation)
        o = _mm512_mask_mul_ps(o, _mm512_cmp_ps_mask(o, _mm512_setzero_ps(), _CMP_LT_OQ), o, _mm512_maskz_broadcastss_ps(0xFFFF, _mm_set_ss(k.slope[n])));
      _mm512_mask_i32scatter_ps(out + (w0 + 16 * b) * out_step + n, mask[b], where, o, 4);
    }
}

// One row of a narrow layer: `width` positions, position i's tap t at src + taps[t] + 4 i (quad q
// a further q * quad_stride bytes on), its outputs at out + i * out_step.
template <int N>
inline void narrow_row_n(const uint8_t* src, const int64_t* taps, int64_t kv, int64_t width, const NarrowTerms& k, float* out, int64_t out_step) {
  constexpr int Blocks = N <= 2 ? 4 : N <= 4 ? 2 : 1;
  for (int64_t w0 = 0; w0 < width; w0 += 16 * Blocks) narrow_blocks<N, Blocks>(src, taps, kv, w0, width, k, out, out_step);
}
inline void narrow_row(const uint8_t* src, const int64_t* taps, int64_t kv, int64_t width, const NarrowTerms& k, float* out, int64_t out_step) {
  switch (k.outputs) {
    case 1: return narrow_row_n<1>(src, taps, kv, width, k, out, out_step);
    case 2: return narrow_row_n<2>(src, taps, kv, width, k, out, out_step);
    case 3: return narrow_row_n<3>(src, taps, kv, width, k, out, out_step);
    case 4: return narrow_row_n<4>(src, taps, kv, width, k, out, out_step);
    case 5: return narrow_row_n<5>(src, taps, kv, width, k, out, out_step);
    case 6: return narrow_row_n<6>(src, taps, kv, width, k, out, out_step);
    case 7: return narrow_row_n<7>(src, taps, kv, width, k, out, out_step);
    default: return narrow_row_n<8>(src, taps, kv, width, k, out, out_step);
  }
}

// A narrow convolution with unit stride along w.
inline void conv_forward_narrow(const ConvGeometry& g, const Int8Input& x, const Int8ConvWeights& w, const Int8Epilogue& epilogue, float* y) {
  const QuadPlanar p = quad_planar(x, g.batch, g.in, g.in_channels, g.padding, g.padding);
  std::vector<int64_t> taps;
  for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
    for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
      for (int64_t kw = 0; kw < g.kernel[2]; ++kw) taps.push_back(kd * g.dilation[0] * p.plane + kh * g.dilation[1] * p.row + kw * g.dilation[2] * 4);
  const int64_t kv = static_cast<int64_t>(taps.size()), N = g.out_channels;
  const NarrowTerms k(w.direct, kv, p.quads, p.padded[2] * 4, x.zero_point, epilogue);
  parallel_for(0, g.batch * g.out[0] * g.out[1], 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / (g.out[0] * g.out[1]), od = r / g.out[1] % g.out[0], oh = r % g.out[1];
      narrow_row(p.bytes.data() + n * p.volume + od * g.stride[0] * p.plane + oh * g.stride[1] * p.row, taps.data(), kv, g.out[2], k,
                 y + r * g.out[2] * N, N);
    }
  });
}

// A narrow transposed convolution, one stride phase at a time (as conv_transpose_direct).
inline void conv_transpose_narrow(const ConvGeometry& g, const Int8Input& x, const Int8ConvWeights& w, const Int8Epilogue& epilogue, float* y) {
  const int64_t Y = g.in_channels;
  std::array<int64_t, 3> low, high;
  transpose_margins(g, w, low, high);
  const QuadPlanar p = quad_planar(x, g.batch, g.out, g.out_channels, low, high);
  for (int64_t rd = 0; rd < std::min(g.stride[0], g.in[0]); ++rd)
    for (int64_t rh = 0; rh < std::min(g.stride[1], g.in[1]); ++rh)
      for (int64_t rw = 0; rw < std::min(g.stride[2], g.in[2]); ++rw) {
        const Int8ConvWeights::Phase& phase = w.phases[static_cast<size_t>((rd * g.stride[1] + rh) * g.stride[2] + rw)];
        const std::array<int64_t, 3> counts{phase_count(g, 0, rd), phase_count(g, 1, rh), phase_count(g, 2, rw)};
        std::vector<int64_t> taps;
        for (const auto& t : phase.taps)
          taps.push_back((phase_offset(g, 0, rd, t[0]) + low[0]) * p.plane + (phase_offset(g, 1, rh, t[1]) + low[1]) * p.row +
                         (phase_offset(g, 2, rw, t[2]) + low[2]) * 4);
        const int64_t kv = static_cast<int64_t>(taps.size());
        const NarrowTerms k(phase.direct, kv, p.quads, p.padded[2] * 4, x.zero_point, epilogue);
        parallel_for(0, g.batch * counts[0] * counts[1], 1, [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r) {
            const int64_t n = r / (counts[0] * counts[1]), i = r / counts[1] % counts[0], j = r % counts[1];
            float* out = y + (((n * g.in[0] + rd + g.stride[0] * i) * g.in[1] + rh + g.stride[1] * j) * g.in[2] + rw) * Y;
            if (taps.empty()) {  // no tap reaches these outputs (a kernel smaller than the stride): the bias alone
              for (int64_t m = 0; m < counts[2]; ++m)
                for (int64_t c = 0; c < Y; ++c) out[m * g.stride[2] * Y + c] = epilogue(0, c);
              continue;
            }
            narrow_row(p.bytes.data() + n * p.volume + i * p.plane + j * p.row, taps.data(), kv, counts[2], k, out, g.stride[2] * Y);
          }
        });
      }
}

// True where the direct vpdpbusd kernels take the (transposed) convolution: one group, VNNI.
inline bool runs_direct(const ConvGeometry& g, const Int8ConvWeights& w) {
  if (g.groups != 1 || int8_kernel() != Int8Kernel::vnni) return false;
  return w.transposed ? !w.phases.empty() && !w.phases.front().direct.empty() : !w.direct.empty();
}
inline void conv_forward_direct_or_narrow(const ConvGeometry& g, const Int8Input& x, const Int8ConvWeights& w, const Int8Epilogue& epilogue,
                                          float* y) {
  if (g.stride[2] == 1 && g.out_channels <= kNarrowOutputs && w.direct_rows.empty()) return conv_forward_narrow(g, x, w, epilogue, y);
  conv_forward_direct(g, x, w, epilogue, y);
}
inline void conv_transpose_direct_or_narrow(const ConvGeometry& g, const Int8Input& x, const Int8ConvWeights& w, const Int8Epilogue& epilogue,
                                            float* y) {
  if (g.in_channels <= kNarrowOutputs) return conv_transpose_narrow(g, x, w, epilogue, y);
  conv_transpose_direct(g, x, w, epilogue, y);
}

}  // namespace conv_int8_detail

// y = conv(x) for x [N, g.in..., in_channels] u8 with zero point x_zero_point, y [N, g.out...,
// out_channels] f32; w from pack_conv_int8(g, ..., false).
inline void conv_forward_int8(const ConvGeometry& g, const uint8_t* x, int32_t x_zero_point, const Int8ConvWeights& w,
                              const Int8Epilogue& epilogue, float* y) {
  using namespace conv_detail;
  using conv_int8_detail::padded_row;
  const int64_t cg = g.in_per_group(), og = g.out_per_group(), K = g.kernel_volume() * cg, lda = padded_row(K);
  const int64_t positions = g.out_positions();
  const bool direct = is_pointwise(g) && g.groups == 1 && g.in_channels % 4 == 0;
  if (!direct && conv_int8_detail::runs_direct(g, w)) return conv_int8_detail::conv_forward_direct_or_narrow(g, {.u8 = x, .zero_point = x_zero_point}, w, epilogue, y);
  const uint8_t outside = static_cast<uint8_t>(x_zero_point);
  const int64_t tile = balanced_tile(positions, lda), tiles = (positions + tile - 1) / tile;
  parallel_for(0, tiles, 1, [&](int64_t tb, int64_t te) {
    std::vector<uint8_t> col(direct ? 0 : static_cast<size_t>(tile * lda), 0);  // the padding past K stays zero
    for (int64_t ti = tb; ti < te; ++ti) {
      const int64_t p0 = ti * tile, rows = std::min(tile, positions - p0);
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        if (!direct)
          for (int64_t r = 0; r < rows; ++r) gather_taps(g, x, p0 + r, grp, col.data() + r * lda, outside);
        gemm_int8_packed(rows, direct ? x + p0 * g.in_channels : col.data(), direct ? g.in_channels : lda, x_zero_point,
                         w.groups[static_cast<size_t>(grp)], conv_int8_detail::group_epilogue(epilogue, grp, og),
                         y + p0 * g.out_channels + grp * og, g.out_channels);
      }
    }
  });
}

// The transposed convolution of g (its data gradient): x [N, g.out..., out_channels] u8, y [N,
// g.in..., in_channels] f32; w from pack_conv_int8(g, ..., true).
inline void conv_transpose_int8(const ConvGeometry& g, const uint8_t* x, int32_t x_zero_point, const Int8ConvWeights& w,
                                const Int8Epilogue& epilogue, float* y) {
  using namespace conv_detail;
  using conv_int8_detail::padded_row;
  if (conv_int8_detail::runs_direct(g, w))
    return conv_int8_detail::conv_transpose_direct_or_narrow(g, {.u8 = x, .zero_point = x_zero_point}, w, epilogue, y);
  const int64_t cg = g.in_per_group(), og = g.out_per_group();
  const uint8_t outside = static_cast<uint8_t>(x_zero_point);
  for (int64_t rd = 0; rd < std::min(g.stride[0], g.in[0]); ++rd)
    for (int64_t rh = 0; rh < std::min(g.stride[1], g.in[1]); ++rh)
      for (int64_t rw = 0; rw < std::min(g.stride[2], g.in[2]); ++rw) {
        const Int8ConvWeights::Phase& phase = w.phases[static_cast<size_t>((rd * g.stride[1] + rh) * g.stride[2] + rw)];
        const std::array<int64_t, 3> first{rd, rh, rw};
        std::array<int64_t, 3> counts;
        for (int a = 0; a < 3; ++a) counts[a] = (g.in[a] - first[a] + g.stride[a] - 1) / g.stride[a];
        const int64_t K = static_cast<int64_t>(phase.taps.size()) * og, lda = padded_row(K);
        const int64_t positions = g.batch * counts[0] * counts[1] * counts[2];
        auto output_row = [&](int64_t p) {  // the phase's p-th output position, as a row of y
          const Position i = unravel(p, counts);
          return ((i.n * g.in[0] + first[0] + i.d * g.stride[0]) * g.in[1] + first[1] + i.h * g.stride[1]) * g.in[2] + first[2] +
                 i.w * g.stride[2];
        };
        const int64_t tile = balanced_tile(positions, std::max<int64_t>(lda, 4)), tiles = (positions + tile - 1) / tile;
        parallel_for(0, tiles, 1, [&](int64_t tb, int64_t te) {
          std::vector<uint8_t> col(static_cast<size_t>(tile * std::max<int64_t>(lda, 4)), 0);
          std::vector<float> result(static_cast<size_t>(tile * cg));
          std::vector<int64_t> rows_of_y(static_cast<size_t>(tile));
          for (int64_t ti = tb; ti < te; ++ti) {
            const int64_t p0 = ti * tile, rows = std::min(tile, positions - p0);
            for (int64_t r = 0; r < rows; ++r) rows_of_y[static_cast<size_t>(r)] = output_row(p0 + r);
            for (int64_t grp = 0; grp < g.groups; ++grp) {
              const Int8Epilogue e = conv_int8_detail::group_epilogue(epilogue, grp, cg);
              if (K == 0) {  // no tap reaches these outputs (a kernel smaller than the stride): the bias alone
                for (int64_t r = 0; r < rows; ++r)
                  for (int64_t c = 0; c < cg; ++c) y[rows_of_y[static_cast<size_t>(r)] * g.in_channels + grp * cg + c] = e(0, c);
                continue;
              }
              for (int64_t r = 0; r < rows; ++r) {
                const Position i = unravel(rows_of_y[static_cast<size_t>(r)], g.in);
                uint8_t* row = col.data() + r * lda;
                for (size_t j = 0; j < phase.taps.size(); ++j) {
                  const int64_t td = i.d + g.padding[0] - phase.taps[j][0] * g.dilation[0];
                  const int64_t th = i.h + g.padding[1] - phase.taps[j][1] * g.dilation[1];
                  const int64_t tw = i.w + g.padding[2] - phase.taps[j][2] * g.dilation[2];
                  // exact divisions: the phase guarantees divisibility
                  const int64_t od = td / g.stride[0], oh = th / g.stride[1], ow = tw / g.stride[2];
                  uint8_t* dst = row + static_cast<int64_t>(j) * og;
                  if (td < 0 || th < 0 || tw < 0 || od >= g.out[0] || oh >= g.out[1] || ow >= g.out[2]) fill_run(og, outside, dst);
                  else copy_run(x + (((i.n * g.out[0] + od) * g.out[1] + oh) * g.out[2] + ow) * g.out_channels + grp * og, og, dst);
                }
              }
              gemm_int8_packed(rows, col.data(), lda, x_zero_point, phase.groups[static_cast<size_t>(grp)], e, result.data(), cg);
              for (int64_t r = 0; r < rows; ++r)
                copy_run(result.data() + r * cg, cg, y + rows_of_y[static_cast<size_t>(r)] * g.in_channels + grp * cg);
            }
          }
        });
      }
}

// The same passes on an f32 input, quantized on the way in (quantize_u8 with inv_scale and
// x_zero_point): by the direct kernels while they pad, otherwise into a u8 copy first. The
// results are those of quantize_u8 followed by conv_forward_int8 / conv_transpose_int8.
inline void conv_forward_int8(const ConvGeometry& g, const float* x, float inv_scale, int32_t x_zero_point, const Int8ConvWeights& w,
                              const Int8Epilogue& epilogue, float* y) {
  if (conv_int8_detail::runs_direct(g, w) && !conv_detail::is_pointwise(g))
    return conv_int8_detail::conv_forward_direct_or_narrow(g, {.f32 = x, .inv_scale = inv_scale, .zero_point = x_zero_point}, w, epilogue, y);
  std::vector<uint8_t> q(static_cast<size_t>(g.in_positions() * g.in_channels));
  quantize_u8(x, static_cast<int64_t>(q.size()), inv_scale, x_zero_point, q.data());
  conv_forward_int8(g, q.data(), x_zero_point, w, epilogue, y);
}
inline void conv_transpose_int8(const ConvGeometry& g, const float* x, float inv_scale, int32_t x_zero_point, const Int8ConvWeights& w,
                                const Int8Epilogue& epilogue, float* y) {
  if (conv_int8_detail::runs_direct(g, w))
    return conv_int8_detail::conv_transpose_direct_or_narrow(g, {.f32 = x, .inv_scale = inv_scale, .zero_point = x_zero_point}, w, epilogue, y);
  std::vector<uint8_t> q(static_cast<size_t>(g.out_positions() * g.out_channels));
  quantize_u8(x, static_cast<int64_t>(q.size()), inv_scale, x_zero_point, q.data());
  conv_transpose_int8(g, q.data(), x_zero_point, w, epilogue, y);
}

}  // namespace vox::kernels::cpu
