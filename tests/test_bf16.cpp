// bf16 kernels: vdpbf16ps's arithmetic as kernels/bf16_bits.hpp emulates it, the bf16 GEMM and
// the three convolution passes, native (AVX512_BF16) and emulated, bit for bit against the
// references on odd shapes.
#include <immintrin.h>

#include <cstring>
#include <random>

#include "harness.hpp"
#include "kernels/cpu/conv.hpp"
#include "kernels/cpu/gemm_bf16.hpp"
#include "kernels/reference/conv_bf16.hpp"
#include "kernels/reference/gemm_bf16.hpp"

using namespace vox;
using namespace vox::kernels;

namespace {

// Values that exercise the rounding: normal ones of mixed scale, and every so often a bf16
// denormal, a zero of either sign, or a value whose products underflow.
uint16_t random_bf16(std::mt19937& rng) {
  const uint16_t sign = static_cast<uint16_t>((rng() & 1u) << 15);
  switch (rng() % 16) {
    case 0: return static_cast<uint16_t>(sign | (rng() % 128));                                 // denormal or zero
    case 1: return static_cast<uint16_t>(sign | ((60 + rng() % 10) << 7) | (rng() % 128));      // ~2^-63: products near 2^-126
    default: return static_cast<uint16_t>(sign | ((120 + rng() % 12) << 7) | (rng() % 128));  // 2^-7 .. 2^4
  }
}

std::vector<uint16_t> random_bf16s(size_t n, std::mt19937& rng) {
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = random_bf16(rng);
  return v;
}

std::vector<float> widen(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_bits_to_float(v[i]);
  return out;
}
std::vector<uint16_t> round(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16_bits(v[i]);
  return out;
}

bool same_bits(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b, std::string& where) {
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) {
      where = "element " + std::to_string(i) + ": " + std::to_string(bf16_bits_to_float(a[i])) + " vs " +
              std::to_string(bf16_bits_to_float(b[i]));
      return false;
    }
  return true;
}

// Runs `body` on the native path (where the CPU has one) and on the emulated path.
template <class F>
void on_each_path(F body) {
  const bool native = cpu::bf16_native();
  if (native) {
    SUBCASE("native (AVX512_BF16)") { body(); }
  } else {
    MESSAGE("this CPU has no AVX512_BF16: the bf16 kernels are tested on their emulated path only");
  }
  SUBCASE("emulated") {
    cpu::force_emulated_bf16(true);
    body();
    cpu::force_emulated_bf16(false);
  }
}

__attribute__((target("avx512f,avx512bf16"))) void hardware_dpbf16(const float* acc, const uint32_t* a, const uint32_t* b, float* out) {
  const __m512 c = _mm512_loadu_ps(acc);
  const __m512i va = _mm512_loadu_si512(a), vb = _mm512_loadu_si512(b);
  _mm512_storeu_ps(out, _mm512_dpbf16_ps(c, (__m512bh)va, (__m512bh)vb));
}

}  // namespace

TEST_CASE("dpbf16_step is vdpbf16ps, bit for bit, denormals included") {
  if (!__builtin_cpu_supports("avx512bf16")) {
    MESSAGE("this CPU has no AVX512_BF16: the emulation of vdpbf16ps cannot be checked against it here");
    return;
  }
  std::mt19937 rng(11);
  int64_t mismatches = 0;
  for (int round = 0; round < 20000; ++round) {
    float acc[16], out[16];
    uint32_t a[16], b[16];
    for (int i = 0; i < 16; ++i) {
      const uint32_t kind = rng() % 4, sign = rng() & 0x80000000u;
      const uint32_t bits = kind == 0 ? sign | (rng() % 0x800000u)                               // denormal accumulator
                            : kind == 1 ? sign | ((1 + rng() % 3) << 23) | (rng() % 0x800000u)  // near the smallest normal
                                        : sign | ((110 + rng() % 30) << 23) | (rng() % 0x800000u);
      acc[i] = std::bit_cast<float>(bits);
      a[i] = random_bf16(rng) | static_cast<uint32_t>(random_bf16(rng)) << 16;
      b[i] = random_bf16(rng) | static_cast<uint32_t>(random_bf16(rng)) << 16;
    }
    hardware_dpbf16(acc, a, b, out);
    for (int i = 0; i < 16; ++i) {
      const float want = dpbf16_step(acc[i], static_cast<uint16_t>(a[i]), static_cast<uint16_t>(a[i] >> 16),
                                     static_cast<uint16_t>(b[i]), static_cast<uint16_t>(b[i] >> 16));
      if (std::bit_cast<uint32_t>(want) != std::bit_cast<uint32_t>(out[i])) ++mismatches;
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("bf16 GEMM equals its reference bit for bit on odd shapes") {
  on_each_path([] {
    std::mt19937 rng(5);
    for (int trial = 0; trial < 200; ++trial) {
      const int64_t M = 1 + rng() % 19, N = 1 + rng() % 70, K = rng() % 41, lda = K + rng() % 3, ldb = N + rng() % 3;
      const bool accumulate = rng() % 2;
      const std::vector<uint16_t> A = random_bf16s(static_cast<size_t>(M * lda), rng), B = random_bf16s(static_cast<size_t>(K * ldb), rng);
      std::vector<float> got(static_cast<size_t>(M * N));
      for (float& c : got) c = std::normal_distribution<float>()(rng);
      std::vector<float> want = got;
      std::vector<uint16_t> scratch;
      cpu::gemm_bf16(M, N, K, A.data(), lda, B.data(), ldb, got.data(), N, accumulate, scratch);
      reference::gemm_bf16(M, N, K, A.data(), lda, B.data(), ldb, want.data(), N, accumulate);
      INFO("M " << M << " N " << N << " K " << K << " accumulate " << accumulate);
      REQUIRE(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
    }
  });
}

namespace {
struct ConvCase {
  const char* name;
  ConvGeometry g;
};

ConvGeometry geometry(int64_t batch, std::array<int64_t, 3> in, int64_t cin, int64_t cout, std::array<int64_t, 3> kernel,
                      std::array<int64_t, 3> stride, std::array<int64_t, 3> padding, std::array<int64_t, 3> dilation, int64_t groups) {
  ConvGeometry g;
  g.batch = batch;
  g.in = in;
  g.in_channels = cin;
  g.out_channels = cout;
  g.kernel = kernel;
  g.stride = stride;
  g.padding = padding;
  g.dilation = dilation;
  g.groups = groups;
  for (size_t i = 0; i < 3; ++i) g.out[i] = (in[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) / stride[i] + 1;
  return g;
}

std::vector<ConvCase> conv_cases() {
  return {
      {"3^3, 5 -> 7 channels", geometry(2, {5, 6, 7}, 5, 7, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1)},
      {"3^3 stride 2, 3 -> 18", geometry(1, {7, 5, 9}, 3, 18, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1)},
      {"one input channel, 3 outputs (through f32 both ways)", geometry(1, {6, 5, 4}, 1, 3, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1)},
      {"2 -> 2 (a segmentation head, through f32)", geometry(1, {7, 6, 5}, 2, 2, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1)},
      {"16 -> 2, stride 2: the data gradient (a transposed conv into 2 classes) through f32",
       geometry(1, {8, 7, 6}, 2, 16, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1)},
      {"pointwise, 9 -> 33", geometry(2, {3, 4, 5}, 9, 33, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1)},
      {"groups 3, dilation 2", geometry(1, {7, 6, 7}, 6, 9, {3, 2, 3}, {1, 1, 1}, {2, 1, 2}, {2, 1, 2}, 3)},
      {"kernel 2 stride 2 (MLPerf's up path)", geometry(1, {6, 4, 5}, 4, 6, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}, 1)},
      {"mixed strides 1, 2, 3", geometry(2, {5, 7, 8}, 5, 4, {3, 3, 2}, {1, 2, 3}, {1, 1, 0}, {1, 1, 1}, 1)},
      {"many positions (several chunks)", geometry(2, {12, 12, 12}, 3, 5, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1)},
  };
}
}  // namespace

TEST_CASE("bf16 convolution passes equal the reference bit for bit") {
  on_each_path([] {
    std::mt19937 rng(17);
    for (const ConvCase& c : conv_cases()) {
      const ConvGeometry& g = c.g;
      INFO(c.name);
      const std::vector<uint16_t> x = random_bf16s(static_cast<size_t>(g.in_positions() * g.in_channels), rng);
      const std::vector<uint16_t> w = random_bf16s(static_cast<size_t>(g.weight_size()), rng);
      const std::vector<uint16_t> bias = random_bf16s(static_cast<size_t>(g.out_channels), rng);
      const std::vector<uint16_t> dy = random_bf16s(static_cast<size_t>(g.out_positions() * g.out_channels), rng);
      std::string where;
      // Passes with at most 4 outputs per position are the f32 kernel's on the widened values,
      // rounded once; the others follow the vdpbf16ps reference.
      const bool few_outputs = g.groups == 1 && g.out_channels <= cpu::kPlanarMaxOutputs && g.stride == std::array<int64_t, 3>{1, 1, 1};
      const bool few_inputs = g.groups == 1 && g.in_channels <= cpu::kPlanarMaxOutputs;
      std::vector<uint16_t> got(static_cast<size_t>(g.out_positions() * g.out_channels)), want(got.size());
      for (const bool with_bias : {true, false}) {
        const uint16_t* b = with_bias ? bias.data() : nullptr;
        cpu::conv_forward<uint16_t>(g, x.data(), w.data(), b, got.data());
        if (few_outputs) {
          std::vector<float> y32(got.size());
          const std::vector<float> b32 = widen(bias);
          cpu::conv_forward<float>(g, widen(x).data(), widen(w).data(), with_bias ? b32.data() : nullptr, y32.data());
          want = round(y32);
        } else {
          reference::conv_forward_bf16(g, x.data(), w.data(), b, want.data());
        }
        CHECK_MESSAGE(same_bits(got, want, where), "forward", with_bias ? "" : " without bias", ", ", where);
      }
      std::vector<uint16_t> dx(x.size()), dx_want(x.size());
      cpu::conv_backward_data<uint16_t>(g, dy.data(), w.data(), dx.data());
      if (few_inputs) {
        std::vector<float> dx32(x.size());
        cpu::conv_backward_data<float>(g, widen(dy).data(), widen(w).data(), dx32.data());
        dx_want = round(dx32);
      } else {
        reference::conv_backward_data_bf16(g, dy.data(), w.data(), dx_want.data());
      }
      CHECK_MESSAGE(same_bits(dx, dx_want, where), "data gradient, ", where);
      std::vector<uint16_t> dw(w.size()), dw_want(w.size());
      cpu::conv_backward_weight<uint16_t>(g, x.data(), dy.data(), dw.data());
      reference::conv_backward_weight_bf16(g, x.data(), dy.data(), dw_want.data());
      CHECK_MESSAGE(same_bits(dw, dw_want, where), "weight gradient, ", where);
    }
  });
}

TEST_CASE("the bf16 convolution is the f32 convolution of the same values, to bf16's rounding") {
  // A check on the reference itself: the pair order changes the last bits only.
  std::mt19937 rng(23);
  const ConvGeometry g = conv_cases()[0].g;
  const std::vector<uint16_t> x = random_bf16s(static_cast<size_t>(g.in_positions() * g.in_channels), rng);
  const std::vector<uint16_t> w = random_bf16s(static_cast<size_t>(g.weight_size()), rng);
  std::vector<float> x32(x.size()), w32(w.size()), y32(static_cast<size_t>(g.out_positions() * g.out_channels));
  for (size_t i = 0; i < x.size(); ++i) x32[i] = flush_denormal(bf16_bits_to_float(x[i]));
  for (size_t i = 0; i < w.size(); ++i) w32[i] = flush_denormal(bf16_bits_to_float(w[i]));
  cpu::conv_forward<float>(g, x32.data(), w32.data(), nullptr, y32.data());
  std::vector<uint16_t> y(y32.size());
  reference::conv_forward_bf16(g, x.data(), w.data(), nullptr, y.data());
  double worst = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double scale = std::max(1.0, std::abs(static_cast<double>(y32[i])));
    worst = std::max(worst, std::abs(bf16_bits_to_float(y[i]) - y32[i]) / scale);
  }
  CHECK(worst <= 1.0 / 128);  // one bf16 rounding (2^-8 relative) plus f32 reassociation
}
