// Floor 2: half/bfloat16 rounding, shapes and views, storage, conversions, RNG, threads, printing.
#include <cstring>
#include <limits>
#include <sstream>

#include "harness.hpp"

using namespace vox;

TEST_CASE("f32 to f16 rounds to nearest even, with exact edge cases") {
  struct Case {
    float value;
    uint16_t bits;
  };
  const float tiny = std::ldexp(1.0f, -24);  // smallest f16 subnormal
  for (const Case& c : std::vector<Case>{
           {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3C00}, {-2.0f, 0xC000}, {65504.0f, 0x7BFF},
           {65519.99f, 0x7BFF},                      // below the halfway point to 2^16
           {65520.0f, 0x7C00},                       // halfway, odd mantissa: rounds up to inf
           {1e6f, 0x7C00}, {INFINITY, 0x7C00}, {-INFINITY, 0xFC00},
           {1.0f + std::ldexp(1.0f, -11), 0x3C00},   // tie, even stays
           {1.0f + 3 * std::ldexp(1.0f, -11), 0x3C02},  // tie, odd rounds up
           {std::ldexp(1.0f, -14), 0x0400},          // smallest normal
           {tiny, 0x0001}, {std::ldexp(1.0f, -25), 0x0000},  // tie to even (zero)
           {1.5f * std::ldexp(1.0f, -25) * 2, 0x0002},  // 1.5 * 2^-24: tie, rounds to even 2
           {std::ldexp(1.0f, -25) * 1.0001f, 0x0001}, {1023 * tiny, 0x03FF},
       }) {
    INFO("value " << c.value);
    CHECK(float_to_half_bits(c.value) == c.bits);
  }
  CHECK(float_to_half_bits(NAN) == 0x7E00);
  CHECK(std::isnan(half_bits_to_float(0x7E01)));
  CHECK(half_bits_to_float(0x0001) == tiny);
  CHECK(half_bits_to_float(0x7C00) == INFINITY);
  CHECK(half_bits_to_float(0x8000) == 0.0f);
  CHECK(std::signbit(half_bits_to_float(0x8000)));
}

TEST_CASE("every f16 value survives a round trip through f32") {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const auto bits = static_cast<uint16_t>(b);
    const float f = half_bits_to_float(bits);
    if (std::isnan(f)) {
      CHECK(std::isnan(half_bits_to_float(float_to_half_bits(f))));
      continue;
    }
    if (float_to_half_bits(f) != bits) FAIL_CHECK("bits " << b << " became " << float_to_half_bits(f));
  }
}

TEST_CASE("f32 to bf16 rounds to nearest even, with exact edge cases") {
  CHECK(float_to_bfloat16_bits(1.0f) == 0x3F80);
  CHECK(float_to_bfloat16_bits(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);       // tie, even stays
  CHECK(float_to_bfloat16_bits(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82);   // tie, odd rounds up
  CHECK(float_to_bfloat16_bits(1.0f + 1.5f * std::ldexp(1.0f, -8)) == 0x3F81);  // above the tie
  CHECK(float_to_bfloat16_bits(INFINITY) == 0x7F80);
  CHECK(float_to_bfloat16_bits(-INFINITY) == 0xFF80);
  CHECK(float_to_bfloat16_bits(3.4028235e38f) == 0x7F80);  // max float rounds up to inf
  CHECK(float_to_bfloat16_bits(NAN) == 0x7FC0);
  CHECK(std::isnan(bfloat16_bits_to_float(float_to_bfloat16_bits(std::bit_cast<float>(0x7F800001u)))));  // signalling NaN stays NaN
  const float subnormal = std::bit_cast<float>(0x00012345u);
  CHECK(float_to_bfloat16_bits(subnormal) == 0x0001);
  CHECK(bfloat16_bits_to_float(0x0001) == std::bit_cast<float>(0x00010000u));
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bfloat16_bits_to_float(static_cast<uint16_t>(b));
    if (!std::isnan(f) && float_to_bfloat16_bits(f) != b) FAIL_CHECK("bf16 bits " << b);
  }
}

TEST_CASE("tensors convert between every dtype") {
  const Tensor x = from_vector<float>({-2.75f, -0.5f, 0.0f, 1.5f, 3.99f}, {5});
  CHECK(x.to(DType::i32).to_vector<int32_t>() == std::vector<int32_t>{-2, 0, 0, 1, 3});  // truncation, as C++ and torch
  CHECK(x.to(DType::boolean).to_vector<bool>() == std::vector<bool>{true, true, false, true, true});
  CHECK(x.to(DType::f16).to_vector<float>() == std::vector<float>{-2.75f, -0.5f, 0.0f, 1.5f, 3.990234375f});
  CHECK(x.to(DType::bf16).to_vector<float>() == std::vector<float>{-2.75f, -0.5f, 0.0f, 1.5f, 3.984375f});
  CHECK(x.to(DType::f64).to(DType::f32).to_vector<float>() == x.to_vector<float>());
  for (DType t : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i8, DType::u8, DType::i32, DType::i64, DType::boolean}) {
    const Tensor ones_t = ones({2, 3}, t);
    CHECK(ones_t.dtype() == t);
    CHECK(sum(ones_t.to(DType::f32)).item<float>() == 6.0f);
  }
}

TEST_CASE("floating to integer conversion truncates, saturates and takes NaN to 0") {
  // C++ leaves out-of-range conversions undefined (x86 gives the minimum); vox defines them, the
  // same on every device (kernels/reference/convert.hpp; test_cuda_hardening checks the GPU's)
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor f = from_vector<double>({nan, inf, -inf, 1e30, -1e30, 2.9, -2.9, 255.5, -0.5, 3e9}, {10});
  const int32_t i32_max = 2147483647, i32_min = -2147483647 - 1;
  CHECK(f.to(DType::i32).to_vector<int32_t>() == std::vector<int32_t>{0, i32_max, i32_min, i32_max, i32_min, 2, -2, 255, 0, i32_max});
  const int64_t i64_max = std::numeric_limits<int64_t>::max(), i64_min = std::numeric_limits<int64_t>::min();
  CHECK(f.to(DType::i64).to_vector<int64_t>() ==
        std::vector<int64_t>{0, i64_max, i64_min, i64_max, i64_min, 2, -2, 255, 0, 3000000000});
  CHECK(f.to(DType::u8).to_vector<uint8_t>() == std::vector<uint8_t>{0, 255, 0, 255, 0, 2, 0, 255, 0, 255});
  CHECK(f.to(DType::i8).to_vector<int8_t>() == std::vector<int8_t>{0, 127, -128, 127, -128, 2, -2, 127, 0, 127});
  // f32 and the 16-bit floats follow the same rule; the bounds themselves are exact powers of two
  CHECK(f.to(DType::f32).to(DType::i32).to_vector<int32_t>() == f.to(DType::i32).to_vector<int32_t>());
  CHECK(f.to(DType::bf16).to(DType::i8).to_vector<int8_t>() == f.to(DType::i8).to_vector<int8_t>());
  CHECK(kernels::reference::integer_from_floating<int64_t>(9223372036854775807.0) == i64_max);  // 2^63 rounds up: saturates
  CHECK(kernels::reference::integer_from_floating<int64_t>(-9223372036854775808.0) == i64_min);
  CHECK(kernels::reference::integer_from_floating<int32_t>(2147483647.5) == i32_max);
  CHECK(kernels::reference::integer_from_floating<int32_t>(-2147483648.9) == i32_min);
}

TEST_CASE("storage is 64-byte aligned and counted") {
  const int64_t before = cpu_memory_stats().current_bytes;
  {
    const Tensor t = empty({3, 5, 7});
    CHECK(reinterpret_cast<uintptr_t>(t.raw_data()) % 64 == 0);
    CHECK(cpu_memory_stats().current_bytes >= before + 3 * 5 * 7 * 4);
  }
  CHECK(cpu_memory_stats().current_bytes == before);
}

TEST_CASE("large CPU buffers are reused through the block cache, within its limit") {
  using detail::CpuBlockCache;
  CHECK(CpuBlockCache::rounded_size(100) == 128);
  CHECK(CpuBlockCache::rounded_size(size_t{1} << 20) == size_t{1} << 20);
  CHECK(CpuBlockCache::rounded_size((size_t{1} << 20) + 1) == (size_t{5} << 18));  // next quarter of the octave
  CHECK(CpuBlockCache::rounded_size(size_t{7} << 20) == size_t{7} << 20);
  const int64_t elements = 3 << 18;  // 3 MiB of f32
  const int64_t default_limit = cpu_cache_stats().limit_bytes;  // 0 under AddressSanitizer
  set_cpu_cache_limit(int64_t{64} << 20);
  release_cpu_cache();
  const int64_t live_before = cpu_memory_stats().current_bytes;
  const void* first = nullptr;
  {
    const Tensor t = empty({elements});
    first = t.raw_data();
  }
  CHECK(cpu_memory_stats().current_bytes == live_before);  // cached bytes are not live
  CHECK(cpu_cache_stats().cached_bytes == elements * 4);
  const int64_t hits = cpu_cache_stats().hits;
  {
    const Tensor again = empty({elements});
    CHECK(again.raw_data() == first);
    CHECK(cpu_cache_stats().hits == hits + 1);
    CHECK(cpu_cache_stats().cached_bytes == 0);
  }
  {
    const Tensor too_large = empty({int64_t{5} << 20});  // 20 MiB: above a quarter of the limit
  }
  CHECK(cpu_cache_stats().cached_bytes == elements * 4);
  set_cpu_cache_limit(0);  // off: the held block goes back, nothing new is kept
  CHECK(cpu_cache_stats().cached_bytes == 0);
  {
    const Tensor t = empty({elements});
  }
  CHECK(cpu_cache_stats().cached_bytes == 0);
  set_cpu_cache_limit(default_limit);
}

TEST_CASE("views share storage and index correctly") {
  const Tensor x = arange(24, DType::f32).reshape({2, 3, 4});
  SUBCASE("permute") {
    const Tensor p = x.permute({2, 0, 1});
    CHECK(p.shape() == Shape{4, 2, 3});
    CHECK(!p.is_contiguous());
    CHECK(p.contiguous().to_vector<float>()[1] == 4.0f);  // p[0][0][1] = x[0][1][0]
    CHECK(p.raw_data() == x.raw_data());
  }
  SUBCASE("reshape is a view when strides allow and a copy otherwise") {
    const Tensor merged = x.permute({1, 0, 2}).reshape({3, 8});  // axes 0, 2 are not adjacent: copy
    CHECK(merged.raw_data() != x.raw_data());
    CHECK(merged.to_vector<float>()[4] == 12.0f);
    const Tensor split = x.reshape({2, 3, 2, 2});
    CHECK(split.raw_data() == x.raw_data());
    const Tensor v = x.permute({2, 0, 1}).reshape({4, 6});  // axes 0 and 1 of the permuted view are one run
    CHECK(v.raw_data() == x.raw_data());
    CHECK(v.contiguous().to_vector<float>()[7] == 5.0f);
    CHECK(x.reshape({-1, 4}).shape() == Shape{6, 4});
  }
  SUBCASE("slice with a step, negative indices and clamping") {
    const Tensor s = x.slice(2, 1, 4, 2);
    CHECK(s.shape() == Shape{2, 3, 2});
    CHECK(s.contiguous().to_vector<float>() == std::vector<float>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23});
    CHECK(x.slice(1, -1, 100).shape() == Shape{2, 1, 4});
  }
  SUBCASE("expand, unsqueeze, squeeze") {
    const Tensor col = arange(3, DType::f32).reshape({3, 1});
    const Tensor e = col.expand({2, 3, 4});
    CHECK(e.strides() == Strides{0, 1, 0});
    CHECK(e.contiguous().to_vector<float>()[5] == 1.0f);
    CHECK(col.unsqueeze(0).shape() == Shape{1, 3, 1});
    CHECK(col.squeeze(1).shape() == Shape{3});
    CHECK_THROWS_AS(col.squeeze(0), Error);
    CHECK_THROWS_AS(col.expand({2, 2}), Error);  // 3 cannot become 2
  }
  SUBCASE("raw views refuse tensors that record gradients") {
    Tensor leaf = ones({2, 2});
    leaf.set_requires_grad();
    CHECK_THROWS_WITH_AS(leaf.permute({1, 0}), doctest::Contains("vox::permute"), Error);
    CHECK(leaf.detach().permute({1, 0}).shape() == Shape{2, 2});
  }
}

TEST_CASE("the RNG is seeded and independent of the thread count") {
  const int threads = num_threads();
  Generator a(42), b(42), c(43);
  set_num_threads(1);
  const auto one_thread = randn({1000, 37}, DType::f32, &a).to_vector<float>();
  set_num_threads(std::max(2, threads));
  const auto many_threads = randn({1000, 37}, DType::f32, &b).to_vector<float>();
  set_num_threads(threads);
  CHECK(one_thread == many_threads);
  CHECK(randn({10}, DType::f32, &c).to_vector<float>() != std::vector<float>(one_thread.begin(), one_thread.begin() + 10));
  const auto second_draw = randn({1000, 37}, DType::f32, &a).to_vector<float>();
  CHECK(second_draw != one_thread);  // the counter moved on
}

TEST_CASE("the RNG's distributions have the right moments") {
  Generator gen(7);
  const Tensor n = randn({200000}, DType::f64, &gen);
  CHECK(mean(n).item<double>() == doctest::Approx(0.0).epsilon(0.01).scale(1.0));
  CHECK(var(n).item<double>() == doctest::Approx(1.0).epsilon(0.02));
  const Tensor u = rand({200000}, DType::f32, &gen);
  CHECK(min(u).item<float>() >= 0.0f);
  CHECK(max(u).item<float>() < 1.0f);
  CHECK(mean(u).item<float>() == doctest::Approx(0.5).epsilon(0.01));
  const Tensor k = randint(-3, 4, {100000}, DType::i64, &gen);
  CHECK(min(k).item<int64_t>() == -3);
  CHECK(max(k).item<int64_t>() == 3);
  const Tensor bern = bernoulli({100000}, 0.3, DType::f32, &gen);
  CHECK(mean(bern).item<float>() == doctest::Approx(0.3).epsilon(0.03));
}

TEST_CASE("parallel_for covers the range exactly once") {
  std::vector<int> hits(10007, 0);
  parallel_for(0, 10007, 100, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)] += 1;
  });
  CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
  int calls = 0;
  parallel_for(5, 5, 1, [&](int64_t, int64_t) { ++calls; });
  CHECK(calls == 0);
}

TEST_CASE("printing shows shape, dtype, device, layout and values") {
  std::ostringstream out;
  out << arange(6, DType::f32).reshape({2, 3}).permute({1, 0});
  const std::string s = out.str();
  CHECK(s.find("shape=[3, 2]") != std::string::npos);
  CHECK(s.find("dtype=f32") != std::string::npos);
  CHECK(s.find("device=cpu") != std::string::npos);
  CHECK(s.find("strides=[1, 3]") != std::string::npos);
  CHECK(s.find("5") != std::string::npos);
  std::ostringstream big;
  big << zeros({40, 40});
  CHECK(big.str().find("...") != std::string::npos);
}

TEST_CASE("tensors on a device this build lacks are refused with a clear error") {
  CHECK_FALSE(cuda_is_available());  // this program does not link vox::cuda
  CHECK_THROWS_WITH_AS(empty({2}, DType::f32, Device::cuda(0)), doctest::Contains("link the CMake target vox::cuda"), Error);
  CHECK_THROWS_WITH_AS(ones({2}).to(Device::cuda(0)), doctest::Contains("built without the CUDA backend"), Error);
  // pinned host memory comes from the CUDA runtime too
  CHECK_THROWS_WITH_AS(ones({2}).pin_memory(), doctest::Contains("built without the CUDA backend"), Error);
  CudaGraph graph;
  CHECK_THROWS_WITH_AS(graph.capture([] {}), doctest::Contains("built without the CUDA backend"), Error);
  CHECK_FALSE(graph.captured());
  CHECK_FALSE(cuda_capturing(0));
  CHECK_FALSE(ones({2}).is_pinned());
  CHECK(ones({2}).to(Device::cpu(), /*non_blocking=*/true).to_vector<double>() == std::vector<double>{1, 1});
}
