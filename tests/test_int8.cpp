// INT8 kernels: u8 quantization and the u8 x s8 convolutions, transposed convolutions and GEMM,
// on every kernel (vpdpbusd, vpmaddubsw with 7-bit weights, portable), bit for bit against the
// integer references on odd shapes.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "harness.hpp"
#include "kernels/cpu/conv_int8.hpp"
#include "kernels/cpu/quantize.hpp"
#include "kernels/reference/conv_int8.hpp"

using namespace vox;
using namespace vox::kernels;

namespace {

std::vector<uint8_t> random_u8(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(rng() % 256);
  return v;
}
// Weights of `bits` bits: symmetric, within +-(2^(bits - 1) - 1), the extremes frequent.
std::vector<int8_t> random_s8(size_t n, int bits, std::mt19937& rng) {
  const int top = (1 << (bits - 1)) - 1;
  std::vector<int8_t> v(n);
  for (auto& x : v) {
    const uint32_t r = rng() % 8;
    x = static_cast<int8_t>(r == 0 ? top : r == 1 ? -top : static_cast<int>(rng() % (2 * top + 1)) - top);
  }
  return v;
}
std::vector<float> random_floats(size_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b, std::string& where) {
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      where = "element " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " + std::to_string(b[i]);
      return false;
    }
  return true;
}

struct KernelCase {
  cpu::Int8Kernel kernel;
  int weight_bits;
};
// The kernels this CPU can run, with the weight width each takes.
std::vector<KernelCase> kernels_here() {
  std::vector<KernelCase> out{{cpu::Int8Kernel::portable, 8}};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back({cpu::Int8Kernel::avx2, 7});
  else MESSAGE("this CPU has no AVX2: the 256-bit vpmaddubsw kernel is not tested here");
  if (__builtin_cpu_supports("avx512bw")) out.push_back({cpu::Int8Kernel::avx512bw, 7});
  else MESSAGE("this CPU has no AVX-512BW: the vpmaddubsw kernel is not tested here");
  if (__builtin_cpu_supports("avx512vnni")) out.push_back({cpu::Int8Kernel::vnni, 8});
  else MESSAGE("this CPU has no AVX512_VNNI: the vpdpbusd kernel is not tested here");
  return out;
}

struct ScopedKernel {
  explicit ScopedKernel(cpu::Int8Kernel k) { cpu::force_int8_kernel(k); }
  ~ScopedKernel() { cpu::force_int8_kernel(cpu::Int8Kernel::automatic); }
};

struct EpilogueData {
  std::vector<float> scale, bias, slope;
  reference::Int8Epilogue epilogue(bool with_bias, int activation) const {
    reference::Int8Epilogue e;
    e.scale = scale.data();
    e.bias = with_bias ? bias.data() : nullptr;
    if (activation == 1) e.slope = slope.data(), e.slope_stride = 0;  // LeakyReLU / one PReLU slope
    if (activation == 2) e.slope = slope.data(), e.slope_stride = 1;  // PReLU per channel
    return e;
  }
};
EpilogueData random_epilogue(int64_t channels, std::mt19937& rng) {
  EpilogueData d;
  d.scale = random_floats(static_cast<size_t>(channels), 1e-5f, 1e-3f, rng);
  d.bias = random_floats(static_cast<size_t>(channels), -0.5f, 0.5f, rng);
  d.slope = random_floats(static_cast<size_t>(channels), 0.0f, 0.3f, rng);
  return d;
}

ConvGeometry random_geometry(std::mt19937& rng, bool transposed) {
  ConvGeometry g;
  g.batch = 1 + rng() % 2;
  g.groups = rng() % 5 == 0 ? 2 : 1;
  const int64_t per_in = 1 + rng() % 21, per_out = 1 + rng() % 37;
  g.in_channels = per_in * g.groups, g.out_channels = per_out * g.groups;
  for (int a = 0; a < 3; ++a) {
    g.kernel[a] = 1 + rng() % 3;
    g.stride[a] = 1 + rng() % 2;
    g.dilation[a] = rng() % 6 == 0 ? 2 : 1;
    g.padding[a] = rng() % (g.kernel[a] + (transposed ? 0 : 1));
    g.in[a] = 1 + rng() % 9;
    const int64_t span = (g.kernel[a] - 1) * g.dilation[a] + 1;
    if (g.in[a] + 2 * g.padding[a] < span) g.in[a] = span;
    g.out[a] = (g.in[a] + 2 * g.padding[a] - span) / g.stride[a] + 1;
  }
  return g;
}

}  // namespace

TEST_CASE("quantize_u8: the fast kernel gives the reference's bytes, NaN, infinities and ties included") {
  std::mt19937 rng(3);
  std::vector<float> x = random_floats(100003, -40.0f, 40.0f, rng);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 0.0f, -0.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 1e30f, -1e30f};
  for (size_t i = 0; i < std::size(specials); ++i) x[i * 7] = specials[i];
  for (size_t i = 100; i < 400; ++i) x[i] = 0.1f * static_cast<float>(static_cast<int>(i) - 250) + 0.05f;  // halves after scaling
  for (int32_t zero_point : {0, 17, 128, 255}) {
    const float inv = 10.0f;
    std::vector<uint8_t> fast(x.size());
    cpu::quantize_u8(x.data(), static_cast<int64_t>(x.size()), inv, zero_point, fast.data());
    for (size_t i = 0; i < x.size(); ++i)
      REQUIRE_MESSAGE(fast[i] == reference::quantize_u8(x[i], inv, zero_point), "x = ", x[i], ", zero point ", zero_point);
  }
  CHECK(reference::quantize_u8(std::numeric_limits<float>::quiet_NaN(), 1.0f, 37) == 37);
  CHECK(reference::quantize_u8(0.0f, 123.0f, 99) == 99);  // the real 0 is exactly the zero point
  CHECK(reference::quantize_u8(2.5f, 1.0f, 0) == 2);      // ties to even
  CHECK(reference::quantize_u8(3.5f, 1.0f, 0) == 4);
  CHECK(reference::quantize_u8(1e30f, 1.0f, 0) == 255);
  CHECK(reference::quantize_u8(-1e30f, 1.0f, 255) == 0);
}

TEST_CASE("int8 GEMM: every kernel equals the reference on odd sizes, with the zero point's correction and a fused activation") {
  std::mt19937 rng(11);
  for (const KernelCase kc : kernels_here()) {
    CAPTURE(cpu::int8_kernel_name(kc.kernel));
    ScopedKernel scoped(kc.kernel);
    for (int trial = 0; trial < 40; ++trial) {
      const int64_t M = 1 + rng() % 40, N = 1 + rng() % 70, K = 1 + rng() % 300;
      const int64_t lda = (K + 3) / 4 * 4 + (rng() % 3) * 4;
      CAPTURE(M);
      CAPTURE(N);
      CAPTURE(K);
      std::vector<uint8_t> a = random_u8(static_cast<size_t>(M * lda), rng);
      const std::vector<int8_t> w = random_s8(static_cast<size_t>(N * K), kc.weight_bits, rng);  // [N][K]
      const int32_t zero_point = static_cast<int32_t>(rng() % 256);
      const EpilogueData ed = random_epilogue(N, rng);
      const reference::Int8Epilogue e = ed.epilogue(trial % 2 == 0, trial % 3);
      std::vector<uint8_t> dense(static_cast<size_t>(M * K));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) dense[static_cast<size_t>(m * K + k)] = a[static_cast<size_t>(m * lda + k)];
      std::vector<float> expected(static_cast<size_t>(M * N)), got(static_cast<size_t>(M * N));
      reference::linear_int8(M, N, K, dense.data(), zero_point, w.data(), e, expected.data());
      const cpu::PackedInt8 packed = cpu::pack_int8(N, K, [&](int64_t k, int64_t n) { return w[static_cast<size_t>(n * K + k)]; });
      CHECK(packed.seven_bit == (kc.weight_bits == 7));
      cpu::gemm_int8_packed(M, a.data(), lda, zero_point, packed, e, got.data(), N);
      std::string where;
      REQUIRE_MESSAGE(same_bits(got, expected, where), where);
    }
  }
}

TEST_CASE("int8 convolution: every kernel equals the reference on odd shapes (strides, padding, dilation, groups)") {
  std::mt19937 rng(21);
  for (const KernelCase kc : kernels_here()) {
    CAPTURE(cpu::int8_kernel_name(kc.kernel));
    ScopedKernel scoped(kc.kernel);
    for (int trial = 0; trial < 30; ++trial) {
      const ConvGeometry g = random_geometry(rng, false);
      CAPTURE(trial);
      const std::vector<uint8_t> x = random_u8(static_cast<size_t>(g.in_positions() * g.in_channels), rng);
      const std::vector<int8_t> w = random_s8(static_cast<size_t>(g.weight_size()), kc.weight_bits, rng);
      const int32_t zero_point = static_cast<int32_t>(rng() % 256);
      const EpilogueData ed = random_epilogue(g.out_channels, rng);
      const reference::Int8Epilogue e = ed.epilogue(trial % 2 == 1, trial % 3);
      std::vector<float> expected(static_cast<size_t>(g.out_positions() * g.out_channels)), got(expected.size());
      reference::conv_forward_int8(g, x.data(), zero_point, w.data(), e, expected.data());
      const cpu::Int8ConvWeights packed = cpu::pack_conv_int8(g, w.data(), false);
      cpu::conv_forward_int8(g, x.data(), zero_point, packed, e, got.data());
      std::string where;
      REQUIRE_MESSAGE(same_bits(got, expected, where), where, " in=", g.in_channels, " out=", g.out_channels, " groups=", g.groups);
    }
  }
}

TEST_CASE("int8 convolution: pointwise layers, layers of U-Net width, first layers (1 channel in) and narrow heads (<= 4 channels in, <= 8 out) match too") {
  std::mt19937 rng(31);
  for (const KernelCase kc : kernels_here()) {
    CAPTURE(cpu::int8_kernel_name(kc.kernel));
    ScopedKernel scoped(kc.kernel);
    int activation = 0;
    for (const auto& [k, cin, cout, size] : std::vector<std::array<int64_t, 4>>{
             {1, 16, 32, 7}, {1, 12, 5, 5}, {3, 32, 32, 6}, {3, 16, 64, 5}, {3, 2, 2, 9}, {3, 1, 5, 6}, {3, 3, 8, 17}, {3, 4, 1, 4},
             {3, 1, 16, 7}, {2, 1, 24, 5}}) {  // one input channel: quads along the kernel width
      ConvGeometry g;
      g.in_channels = cin, g.out_channels = cout;
      g.kernel = {k, k, k}, g.padding = {k / 2, k / 2, k / 2};
      g.in = g.out = {size, size + 1, size + 2};
      const std::vector<uint8_t> x = random_u8(static_cast<size_t>(g.in_positions() * cin), rng);
      const std::vector<int8_t> w = random_s8(static_cast<size_t>(g.weight_size()), kc.weight_bits, rng);
      const EpilogueData ed = random_epilogue(cout, rng);
      const reference::Int8Epilogue e = ed.epilogue(true, activation++ % 3);
      std::vector<float> expected(static_cast<size_t>(g.out_positions() * cout)), got(expected.size());
      reference::conv_forward_int8(g, x.data(), 77, w.data(), e, expected.data());
      cpu::conv_forward_int8(g, x.data(), 77, cpu::pack_conv_int8(g, w.data(), false), e, got.data());
      std::string where;
      REQUIRE_MESSAGE(same_bits(got, expected, where), where, " kernel ", k, ", ", cin, " -> ", cout);
    }
  }
}

TEST_CASE("int8 transposed convolution: every kernel equals the reference on odd shapes, one stride phase at a time") {
  std::mt19937 rng(41);
  for (const KernelCase kc : kernels_here()) {
    CAPTURE(cpu::int8_kernel_name(kc.kernel));
    ScopedKernel scoped(kc.kernel);
    for (int trial = 0; trial < 30; ++trial) {
      ConvGeometry g = random_geometry(rng, true);
      if (trial == 0) {  // MONAI's up-sampling: kernel 3, stride 2, padding 1, output padding 1
        g.kernel = {3, 3, 3}, g.stride = {2, 2, 2}, g.padding = {1, 1, 1}, g.dilation = {1, 1, 1};
        g.out = {3, 4, 5}, g.in = {6, 8, 10};
      }
      CAPTURE(trial);
      const std::vector<uint8_t> x = random_u8(static_cast<size_t>(g.out_positions() * g.out_channels), rng);
      const std::vector<int8_t> w = random_s8(static_cast<size_t>(g.weight_size()), kc.weight_bits, rng);
      const int32_t zero_point = static_cast<int32_t>(rng() % 256);
      const EpilogueData ed = random_epilogue(g.in_channels, rng);
      const reference::Int8Epilogue e = ed.epilogue(trial % 2 == 0, trial % 3);
      std::vector<float> expected(static_cast<size_t>(g.in_positions() * g.in_channels)), got(expected.size());
      reference::conv_transpose_int8(g, x.data(), zero_point, w.data(), e, expected.data());
      cpu::conv_transpose_int8(g, x.data(), zero_point, cpu::pack_conv_int8(g, w.data(), true), e, got.data());
      std::string where;
      REQUIRE_MESSAGE(same_bits(got, expected, where), where, " in=", g.in_channels, " out=", g.out_channels, " groups=", g.groups);
    }
  }
}

TEST_CASE("int8 kernels: 8-bit weights on the vpmaddubsw kernels go to the portable one rather than saturate") {
  for (const KernelCase kc : kernels_here()) {
    if (kc.weight_bits != 7) continue;
    CAPTURE(cpu::int8_kernel_name(kc.kernel));
    ScopedKernel scoped(kc.kernel);
    const int64_t M = 6, N = 16, K = 64;
    std::vector<uint8_t> a(static_cast<size_t>(M * K), 255);
    std::vector<int8_t> w(static_cast<size_t>(N * K), -128);  // 2 x 255 x -128 saturates int16
    std::vector<float> scale(N, 1.0f), expected(static_cast<size_t>(M * N)), got(expected.size());
    reference::Int8Epilogue e;
    e.scale = scale.data();
    reference::linear_int8(M, N, K, a.data(), 0, w.data(), e, expected.data());
    const cpu::PackedInt8 packed = cpu::pack_int8(N, K, [&](int64_t k, int64_t n) { return w[static_cast<size_t>(n * K + k)]; });
    REQUIRE_FALSE(packed.seven_bit);
    cpu::gemm_int8_packed(M, a.data(), K, 0, packed, e, got.data(), N);
    CHECK(got == expected);
    CHECK(got[0] == -255.0f * 128.0f * 64.0f);
  }
}

TEST_CASE("int8 (transposed) convolution of an f32 input, quantized on the way in, equals quantizing first") {
  std::mt19937 rng(51);
  for (const KernelCase kc : kernels_here()) {
    CAPTURE(cpu::int8_kernel_name(kc.kernel));
    ScopedKernel scoped(kc.kernel);
    for (int trial = 0; trial < 24; ++trial) {
      const bool transposed = trial % 2 == 1;
      ConvGeometry g = random_geometry(rng, transposed);
      if (trial % 4 == 0) g.in_channels = g.groups * (1 + rng() % 3), g.out_channels = g.groups * (1 + rng() % 3);  // narrow
      CAPTURE(trial);
      const int64_t inputs = transposed ? g.out_positions() * g.out_channels : g.in_positions() * g.in_channels;
      const int64_t outputs = transposed ? g.in_positions() * g.in_channels : g.out_positions() * g.out_channels;
      const std::vector<float> x = random_floats(static_cast<size_t>(inputs), -3.0f, 5.0f, rng);
      const std::vector<int8_t> w = random_s8(static_cast<size_t>(g.weight_size()), kc.weight_bits, rng);
      const float inv_scale = 31.0f;
      const int32_t zero_point = static_cast<int32_t>(rng() % 256);
      const EpilogueData ed = random_epilogue(transposed ? g.in_channels : g.out_channels, rng);
      const reference::Int8Epilogue e = ed.epilogue(true, trial % 3);
      std::vector<uint8_t> q(x.size());
      for (size_t i = 0; i < x.size(); ++i) q[i] = reference::quantize_u8(x[i], inv_scale, zero_point);
      const cpu::Int8ConvWeights packed = cpu::pack_conv_int8(g, w.data(), transposed);
      std::vector<float> expected(static_cast<size_t>(outputs)), got(expected.size());
      if (transposed) {
        cpu::conv_transpose_int8(g, q.data(), zero_point, packed, e, expected.data());
        cpu::conv_transpose_int8(g, x.data(), inv_scale, zero_point, packed, e, got.data());
      } else {
        cpu::conv_forward_int8(g, q.data(), zero_point, packed, e, expected.data());
        cpu::conv_forward_int8(g, x.data(), inv_scale, zero_point, packed, e, got.data());
      }
      std::string where;
      REQUIRE_MESSAGE(same_bits(got, expected, where), where);
    }
  }
}
