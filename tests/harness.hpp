#pragma once
// Test helpers shared by every test program: random inputs, non-contiguous copies, closeness
// checks that report the worst element, and a finite-difference gradient check.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <vox/vox.hpp>

namespace vox::testing {

// The folder of fixtures a CTest fixture step made: $env, else `fallback` (relative to the cwd).
// An empty folder vox_test_<name> in the temporary directory (emptied if it was there).
inline std::string fresh_dir(const std::string& name) {
  const std::filesystem::path p = std::filesystem::temp_directory_path() / ("vox_test_" + name);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

inline std::string fixture_dir(const char* env, const char* fallback) {
  const char* dir = std::getenv(env);
  return dir ? dir : fallback;
}

// Same values, laid out with a stride of 2 on the last axis (and an offset), so kernels that
// assume contiguity would read the wrong elements.
inline Tensor noncontiguous(const Tensor& t) {
  if (t.rank() == 0) return t;
  Shape wide = t.shape();
  wide[wide.size() - 1] = wide.back() * 2 + 1;
  Tensor big = zeros(wide, t.dtype());
  Tensor view = big.slice(-1, 1, wide.back(), 2);
  view.copy_from(t.detach());
  return view;
}

struct Closeness {
  double worst = 0;   // largest |got - want| - (atol + rtol |want|)
  int64_t index = -1;
  double got = 0, want = 0;
  bool ok() const { return worst <= 0; }
  std::string str() const {
    std::ostringstream out;
    out << "worst element " << index << ": got " << got << ", want " << want;
    return out.str();
  }
};

inline Closeness compare(const std::vector<double>& got, const std::vector<double>& want, double atol, double rtol) {
  Closeness c;
  c.worst = -INFINITY;
  if (got.size() != want.size()) {
    c.worst = INFINITY;
    return c;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
    const bool same_inf = std::isinf(got[i]) && got[i] == want[i];
    const double excess = (both_nan || same_inf) ? -1.0 : std::abs(got[i] - want[i]) - (atol + rtol * std::abs(want[i]));
    if (std::isnan(excess) || excess > c.worst) {
      c.worst = std::isnan(excess) ? INFINITY : excess;
      c.index = static_cast<int64_t>(i);
      c.got = got[i];
      c.want = want[i];
    }
  }
  if (got.empty()) c.worst = 0;
  return c;
}

#define VOX_CHECK_CLOSE(got_vec, want_vec, atol, rtol, what)                                    \
  do {                                                                                          \
    const auto vox_c = ::vox::testing::compare((got_vec), (want_vec), (atol), (rtol));          \
    INFO(what << ": " << vox_c.str() << " (sizes " << (got_vec).size() << " vs " << (want_vec).size() << ")"); \
    CHECK(vox_c.ok());                                                                          \
  } while (0)

inline std::vector<double> values(const Tensor& t) { return t.detach().to_vector<double>(); }

// Checks d(sum(f(inputs) * r))/d(input) against central differences, in f64, for every input
// that requires grad. r is a fixed random weighting so every output element matters.
struct GradcheckResult {
  bool ok = true;
  std::string detail;
};

inline GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                                 double eps = 1e-6, double atol = 1e-6, double rtol = 1e-4, int64_t max_elements = 400) {
  for (auto& t : inputs) REQUIRE((t.dtype() == DType::f64 || !t.requires_grad()));
  Tensor out = f(inputs);
  Generator gen(1234);
  const Tensor r = randn(out.shape(), DType::f64, &gen);
  for (auto& t : inputs)
    if (t.requires_grad()) t.zero_grad();
  sum(mul(out, r)).backward();
  auto objective = [&]() {
    NoGradGuard no_grad;
    const Tensor o = f(inputs);
    const auto ov = o.to_vector<double>(), rv = r.to_vector<double>();
    double total = 0;
    for (size_t i = 0; i < ov.size(); ++i) total += ov[i] * rv[i];
    return total;
  };
  GradcheckResult result;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& t = inputs[k];
    if (!t.requires_grad()) continue;
    REQUIRE(t.is_contiguous());
    const Tensor g = t.grad();
    if (!g.defined()) {
      result.ok = false;
      result.detail += "input " + std::to_string(k) + " received no gradient; ";
      continue;
    }
    const auto analytic = g.to_vector<double>();
    double* p = t.data<double>();
    const int64_t n = t.numel();
    const int64_t step = std::max<int64_t>(1, n / max_elements);
    for (int64_t i = 0; i < n; i += step) {
      const double saved = p[i];
      p[i] = saved + eps;
      const double up = objective();
      p[i] = saved - eps;
      const double down = objective();
      p[i] = saved;
      const double numeric = (up - down) / (2 * eps);
      const double a = analytic[static_cast<size_t>(i)];
      if (!(std::abs(a - numeric) <= atol + rtol * std::abs(numeric))) {
        result.ok = false;
        std::ostringstream out;
        out << "input " << k << " element " << i << ": analytic " << a << ", numeric " << numeric << "; ";
        result.detail += out.str();
        break;
      }
    }
  }
  return result;
}

// main() of a program whose tests need a CUDA device (define DOCTEST_CONFIG_IMPLEMENT before
// including doctest): without one it says why and returns 77, which CTest reports as skipped.
inline int run_gpu_tests(const char* program, int argc, char** argv) {
  if (!cuda_is_available()) {
    std::printf("%s: SKIPPED: no CUDA device is visible to this program (cudaGetDeviceCount found none)\n", program);
    return 77;
  }
  std::printf("%s: running on %s\n", program, cuda_backend("test").device_name(0).c_str());
  doctest::Context context(argc, argv);
  return context.run();
}

}  // namespace vox::testing
