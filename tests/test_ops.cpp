// Every op in the op table: the CPU kernel against the f64 reference on odd shapes, the same on
// non-contiguous inputs, and a finite-difference gradient check in f64.
#include "harness.hpp"
#include "op_table.hpp"

using namespace vox;
using namespace vox::testing;

namespace {
std::vector<Tensor> inputs_for(const OpSpec& op, DType dtype, uint64_t seed) {
  Generator gen(seed);
  std::vector<Tensor> in;
  for (const auto& s : op.inputs) in.push_back(make_input(s, dtype, gen));
  return in;
}

Values as_values(const std::vector<Tensor>& in) {
  Values v;
  for (const Tensor& t : in) v.push_back(values(t));
  return v;
}
}  // namespace

TEST_CASE("every op matches its reference in f32, on contiguous and non-contiguous inputs") {
  for (const OpSpec& op : op_table()) {
    SUBCASE(op.name.c_str()) {
      const std::vector<Tensor> in = inputs_for(op, DType::f32, 7);
      const std::vector<double> want = op.reference(as_values(in));
      const Tensor out = op.run(in);
      CHECK(out.dtype() == DType::f32);
      VOX_CHECK_CLOSE(values(out), want, op.atol, op.rtol, op.name << " contiguous");
      std::vector<Tensor> strided;
      for (const Tensor& t : in) strided.push_back(noncontiguous(t));
      VOX_CHECK_CLOSE(values(op.run(strided)), want, op.atol, op.rtol, op.name << " non-contiguous");
    }
  }
}

TEST_CASE("every op's gradient matches finite differences in f64") {
  for (const OpSpec& op : op_table()) {
    if (!op.gradcheck) continue;
    SUBCASE(op.name.c_str()) {
      std::vector<Tensor> in = inputs_for(op, DType::f64, 11);
      bool any = false;
      for (size_t i = 0; i < in.size(); ++i)
        if (op.inputs[i].differentiable && is_floating(in[i].dtype())) {
          in[i].set_requires_grad(true);
          any = true;
        }
      REQUIRE(any);
      const auto result = gradcheck(op.run, in);
      INFO(op.name << ": " << result.detail);
      CHECK(result.ok);
    }
  }
}

TEST_CASE("every op also matches its reference in f64") {
  for (const OpSpec& op : op_table()) {
    SUBCASE(op.name.c_str()) {
      const std::vector<Tensor> in = inputs_for(op, DType::f64, 5);
      VOX_CHECK_CLOSE(values(op.run(in)), op.reference(as_values(in)), 1e-10, 1e-9, op.name << " f64");
    }
  }
}

TEST_CASE("convolution kernels match the reference on layer-sized shapes that change their work split") {
  // Shapes chosen to reach each path: planar (<= 4 channels) and GEMM, unit and stride 2, one
  // chunk and several, one output-channel block and several (64 outputs), in f64 so that only
  // the summation order differs from the reference.
  struct Case {
    const char* name;
    int64_t batch, cin, cout;
    std::array<int64_t, 3> in, kernel, stride, padding;
  };
  for (const Case& c : std::vector<Case>{{"64 outputs, one tile", 1, 2, 64, {3, 4, 5}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
                                         {"many tiles and chunks", 2, 8, 8, {10, 12, 14}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
                                         {"large weight, one chunk, channel blocks", 1, 64, 96, {4, 3, 4}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
                                         {"stride 2, wide", 1, 12, 6, {9, 8, 7}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}},
                                         {"stride 2, 2 channels in", 1, 2, 40, {9, 10, 11}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}},
                                         {"few outputs, large volume", 1, 3, 2, {17, 19, 23}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}}}) {
    CAPTURE(c.name);
    kernels::ConvGeometry g;
    g.batch = c.batch, g.in = c.in, g.kernel = c.kernel, g.stride = c.stride, g.padding = c.padding;
    g.in_channels = c.cin, g.out_channels = c.cout;
    for (int a = 0; a < 3; ++a) g.out[a] = (g.in[a] + 2 * g.padding[a] - g.kernel[a]) / g.stride[a] + 1;
    Generator gen(7);
    const std::vector<double> x = values(randn({g.in_positions() * g.in_channels}, DType::f64, &gen));
    const std::vector<double> w = values(randn({g.weight_size()}, DType::f64, &gen));
    const std::vector<double> dy = values(randn({g.out_positions() * g.out_channels}, DType::f64, &gen));
    std::vector<double> got(dy.size()), want(dy.size());
    kernels::cpu::conv_forward(g, x.data(), w.data(), static_cast<const double*>(nullptr), got.data());
    kernels::reference::conv_forward(g, x.data(), w.data(), static_cast<const double*>(nullptr), want.data());
    for (size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == doctest::Approx(want[i]).epsilon(1e-10));
    std::vector<double> dx(x.size()), dx_ref(x.size());
    kernels::cpu::conv_backward_data(g, dy.data(), w.data(), dx.data());
    kernels::reference::conv_backward_data(g, dy.data(), w.data(), dx_ref.data());
    for (size_t i = 0; i < dx.size(); ++i) REQUIRE(dx[i] == doctest::Approx(dx_ref[i]).epsilon(1e-10));
    std::vector<double> dw(w.size()), dw_ref(w.size());
    kernels::cpu::conv_backward_weight(g, x.data(), dy.data(), dw.data());
    kernels::reference::conv_backward_weight(g, x.data(), dy.data(), dw_ref.data());
    for (size_t i = 0; i < dw.size(); ++i) REQUIRE(dw[i] == doctest::Approx(dw_ref[i]).epsilon(1e-10));
  }
}

TEST_CASE("element-wise ops on tensors longer than one parallel piece (32768 elements): every element, once") {
  // a contiguous tensor coalesces into one row, which for_each_row cuts into pieces for the threads
  Generator gen(3);
  for (const int64_t n : {int64_t{32768}, int64_t{32769}, int64_t{100003}, int64_t{3 * 65536 + 7}}) {
    CAPTURE(n);
    const Tensor a = randn({n}, DType::f32, &gen), b = randn({n}, DType::f32, &gen);
    const std::vector<float> av = a.to_vector<float>(), bv = b.to_vector<float>();
    const std::vector<float> r = relu(a).to_vector<float>(), s = add(a, b).to_vector<float>(), c = a.to(DType::f64).to_vector<float>();
    bool same = true;
    for (size_t i = 0; i < av.size(); ++i) same = same && r[i] == (av[i] > 0 ? av[i] : 0.0f) && s[i] == av[i] + bv[i] && c[i] == av[i];
    CHECK(same);
    // a broadcast row against a long one, and a strided view
    const Tensor rows = randn({3, n}, DType::f32, &gen);
    const Tensor sum = add(rows, a);
    const std::vector<float> rv = rows.to_vector<float>(), sv = sum.to_vector<float>();
    bool broadcast = true;
    for (int64_t k = 0; k < 3 * n; ++k) broadcast = broadcast && sv[static_cast<size_t>(k)] == rv[static_cast<size_t>(k)] + av[static_cast<size_t>(k % n)];
    CHECK(broadcast);
  }
}

TEST_CASE("max_pool3d gives the same values whether or not it records the positions of its maxima, NaN included") {
  Generator gen(4);
  Tensor x = randn({2, 9, 8, 7, 5}, DType::f32, &gen);
  x.data<float>()[17] = std::nanf("");
  x.data<float>()[400] = std::nanf("");
  const PoolOptions options{{3}, {2}, {1}};
  Tensor values_only;
  {
    NoGradGuard no_grad;
    values_only = max_pool3d(x, options);
  }
  Tensor leaf = x.detach();
  leaf.set_requires_grad(true);
  const Tensor recorded = max_pool3d(leaf, options);
  const std::vector<float> a = values_only.to_vector<float>(), b = recorded.to_vector<float>();
  REQUIRE(a.size() == b.size());
  int nans = 0;
  bool same = true;
  for (size_t i = 0; i < a.size(); ++i) {
    nans += std::isnan(a[i]);
    same = same && (a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])));
  }
  CHECK(same);
  CHECK(nans > 0);
}
