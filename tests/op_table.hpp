#pragma once
// The op table: every op declares, once, the inputs it is tested on (odd shapes, size-1 axes,
// broadcasting), how to run it, its reference (computed in f64 from the floor-1 reference
// kernels or the textbook formula), its FLOP count and its f32 tolerance. The op tests check
// each entry against its reference, on contiguous and non-contiguous inputs, and check its
// gradient by finite differences; the benchmarks time the same entries.
#include <cmath>
#include <functional>
#include <numbers>
#include <string>
#include <vector>

#include <vox/vox.hpp>

#include "kernels/reference/attention.hpp"
#include "kernels/reference/conv.hpp"
#include "kernels/reference/indexing.hpp"
#include "kernels/reference/loss.hpp"
#include "kernels/reference/matmul.hpp"
#include "kernels/reference/norm.hpp"
#include "kernels/reference/pool.hpp"
#include "kernels/reference/reduce.hpp"
#include "kernels/reference/softmax.hpp"

namespace vox::testing {

enum class Fill { normal, positive, away_from_zero, boolean, labels, labels_or_ignored };

struct InputSpec {
  Shape shape;
  Fill fill = Fill::normal;
  bool differentiable = true;
  int64_t classes = 0;  // for labels
};

using Values = std::vector<std::vector<double>>;

struct OpSpec {
  std::string name;
  std::vector<InputSpec> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> run;
  std::function<std::vector<double>(const Values&)> reference;
  double flops = 0;  // per call
  double atol = 2e-5, rtol = 2e-4;  // f32 against the f64 reference
  // Under bf16 autocast (tests/test_amp.cpp): ops that run in bf16 round each operand and the
  // result to 8 significant bits (2^-9 relative each), so sums of K products drift by about
  // sqrt(K) 2^-9 of their magnitude; ops kept in f32 keep f32's tolerance plus the rounding of a
  // bf16 input where one reaches them.
  double amp_atol = 0.02, amp_rtol = 0.02;
  bool gradcheck = true;
};

// amp_atol for a bf16 op summing K products of unit-variance values: each product carries its
// operands' roundings (up to 2^-9 each), so the sum drifts by about sqrt(K) 2^-9 (one standard
// deviation); three of bf16's 2^-8 steps per sqrt(K) bounds it with margin.
inline double bf16_products_atol(double K) { return 3.0 * std::sqrt(K) / 256.0; }

inline Tensor make_input(const InputSpec& s, DType dtype, Generator& gen) {
  switch (s.fill) {
    case Fill::normal: return randn(s.shape, dtype, &gen);
    case Fill::positive: return uniform(s.shape, 0.5, 2.0, dtype, &gen);
    case Fill::away_from_zero: {
      const Tensor magnitude = uniform(s.shape, 0.5, 1.5, dtype, &gen);
      const Tensor sign = bernoulli(s.shape, 0.5, dtype, &gen);
      return detail::map_binary<detail::Kinds::floating>("fill", magnitude, sign, dtype,
                                                         [](auto m, auto b) { return b > 0 ? m : -m; });
    }
    case Fill::boolean: return bernoulli(s.shape, 0.5, DType::boolean, &gen);
    case Fill::labels: return randint(0, s.classes, s.shape, DType::i64, &gen);
    case Fill::labels_or_ignored: {
      Tensor t = randint(-1, s.classes, s.shape, DType::i64, &gen);
      int64_t* p = t.data<int64_t>();
      for (int64_t i = 0; i < t.numel(); ++i)
        if (p[i] < 0) p[i] = -100;
      return t;
    }
  }
  return {};
}

namespace table_detail {
inline std::vector<int64_t> strides_of(const Shape& s) { return contiguous_strides(s).vec(); }

// Elementwise reference over the broadcast of the inputs' shapes.
inline std::function<std::vector<double>(const Values&)> binary_ref(Shape a, Shape b, double (*f)(double, double)) {
  return [a, b, f](const Values& in) {
    const Shape out = broadcast_shapes(a, b, "reference");
    std::vector<double> y(static_cast<size_t>(numel_of(out)));
    kernels::reference::map2(out.vec(), y.data(), in[0].data(), a.vec(), strides_of(a), in[1].data(), b.vec(), strides_of(b),
                             f);
    return y;
  };
}

inline std::function<std::vector<double>(const Values&)> unary_ref(double (*f)(double)) {
  return [f](const Values& in) {
    std::vector<double> y(in[0].size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = f(in[0][i]);
    return y;
  };
}

inline std::vector<bool> axis_flags(int64_t rank, const Axes& axes) {
  std::vector<bool> f(static_cast<size_t>(rank), axes.empty());
  for (int64_t a : axes) f[static_cast<size_t>(a < 0 ? a + rank : a)] = true;
  return f;
}

inline kernels::ConvGeometry conv_geometry(const Shape& x, const Shape& w, std::array<int64_t, 3> stride,
                                           std::array<int64_t, 3> padding, std::array<int64_t, 3> dilation, int64_t groups) {
  kernels::ConvGeometry g;
  const int spatial = static_cast<int>(x.size()) - 2;
  g.batch = x[0];
  for (int i = 0; i < spatial; ++i) {
    g.in[static_cast<size_t>(3 - spatial + i)] = x[1 + i];
    g.kernel[static_cast<size_t>(3 - spatial + i)] = w[1 + i];
  }
  g.stride = stride;
  g.padding = padding;
  g.dilation = dilation;
  g.groups = groups;
  g.in_channels = x.back();
  g.out_channels = w[0];
  for (size_t i = 0; i < 3; ++i)
    g.out[i] = (g.in[i] + 2 * g.padding[i] - g.dilation[i] * (g.kernel[i] - 1) - 1) / g.stride[i] + 1;
  return g;
}

inline std::vector<double> softmax_ref(const std::vector<double>& x, const Shape& s, int64_t axis, bool log) {
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= s[i];
  for (int64_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
  return kernels::reference::softmax(x, outer, s[axis], inner, log);
}
}  // namespace table_detail

inline std::vector<OpSpec> op_table() {
  using namespace table_detail;
  namespace ref = kernels::reference;
  std::vector<OpSpec> t;

  // ---------------------------------------------------------------- elementwise
  const Shape A{2, 3, 1, 5}, B{3, 4, 1};  // broadcast to [2, 3, 4, 5]
  t.push_back({"add", {{A}, {B}}, [](auto& in) { return add(in[0], in[1]); }, binary_ref(A, B, [](double a, double b) { return a + b; }), 120});
  t.push_back({"sub", {{A}, {B}}, [](auto& in) { return sub(in[0], in[1]); }, binary_ref(A, B, [](double a, double b) { return a - b; }), 120});
  t.push_back({"mul", {{A}, {B}}, [](auto& in) { return mul(in[0], in[1]); }, binary_ref(A, B, [](double a, double b) { return a * b; }), 120});
  t.push_back({"div", {{A}, {B, Fill::away_from_zero}}, [](auto& in) { return div(in[0], in[1]); },
               binary_ref(A, B, [](double a, double b) { return a / b; }), 120});
  t.push_back({"pow", {{A, Fill::positive}, {B}}, [](auto& in) { return pow(in[0], in[1]); },
               binary_ref(A, B, [](double a, double b) { return std::pow(a, b); }), 120});
  t.push_back({"where", {{B, Fill::boolean, false}, {A}, {Shape{5}}},
               [](auto& in) { return where(in[0], in[1], in[2]); },
               [A, B](const Values& in) {
                 const Shape out = broadcast_shapes(broadcast_shapes(B, A, "ref"), Shape{5}, "ref");
                 std::vector<double> y(static_cast<size_t>(numel_of(out)));
                 for (int64_t i = 0; i < numel_of(out); ++i) {
                   const double c = in[0][static_cast<size_t>(ref::broadcast_offset(i, out.vec(), B.vec(), strides_of(B)))];
                   y[static_cast<size_t>(i)] = c != 0 ? in[1][static_cast<size_t>(ref::broadcast_offset(i, out.vec(), A.vec(), strides_of(A)))]
                                                      : in[2][static_cast<size_t>(i % 5)];
                 }
                 return y;
               },
               120});
  const Shape U{3, 1, 4, 7};
  t.push_back({"neg", {{U}}, [](auto& in) { return neg(in[0]); }, unary_ref([](double v) { return -v; }), 84});
  t.push_back({"exp", {{U}}, [](auto& in) { return exp(in[0]); }, unary_ref([](double v) { return std::exp(v); }), 84});
  t.push_back({"log", {{U, Fill::positive}}, [](auto& in) { return log(in[0]); }, unary_ref([](double v) { return std::log(v); }), 84});
  t.push_back({"sqrt", {{U, Fill::positive}}, [](auto& in) { return sqrt(in[0]); }, unary_ref([](double v) { return std::sqrt(v); }), 84});
  t.push_back({"square", {{U}}, [](auto& in) { return square(in[0]); }, unary_ref([](double v) { return v * v; }), 84});
  t.push_back({"pow_scalar", {{U, Fill::positive}}, [](auto& in) { return pow(in[0], 2.5); },
               unary_ref([](double v) { return std::pow(v, 2.5); }), 84});
  t.push_back({"abs", {{U, Fill::away_from_zero}}, [](auto& in) { return abs(in[0]); }, unary_ref([](double v) { return std::abs(v); }), 84});
  t.push_back({"clamp", {{U}}, [](auto& in) { return clamp(in[0], -0.5, 0.7); },
               unary_ref([](double v) { return std::clamp(v, -0.5, 0.7); }), 84});
  t.push_back({"sigmoid", {{U}}, [](auto& in) { return sigmoid(in[0]); }, unary_ref([](double v) { return 1 / (1 + std::exp(-v)); }), 84});
  t.push_back({"tanh", {{U}}, [](auto& in) { return tanh(in[0]); }, unary_ref([](double v) { return std::tanh(v); }), 84});
  t.push_back({"relu", {{U, Fill::away_from_zero}}, [](auto& in) { return relu(in[0]); }, unary_ref([](double v) { return v > 0 ? v : 0.0; }), 84});
  t.push_back({"leaky_relu", {{U, Fill::away_from_zero}}, [](auto& in) { return leaky_relu(in[0], 0.1); },
               unary_ref([](double v) { return v > 0 ? v : 0.1 * v; }), 84});
  t.push_back({"gelu", {{U}}, [](auto& in) { return gelu(in[0]); },
               unary_ref([](double v) { return 0.5 * v * (1 + std::erf(v / std::numbers::sqrt2)); }), 84});
  t.push_back({"gelu_tanh", {{U}}, [](auto& in) { return gelu(in[0], GeluApproximation::tanh); },
               unary_ref([](double v) {
                 return 0.5 * v * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (v + 0.044715 * v * v * v)));
               }),
               84});
  const Shape P{2, 3, 1, 4};
  t.push_back({"prelu_shared", {{P, Fill::away_from_zero}, {Shape{1}, Fill::positive}}, [](auto& in) { return prelu(in[0], in[1]); },
               [](const Values& in) {
                 std::vector<double> y(in[0].size());
                 for (size_t i = 0; i < y.size(); ++i) y[i] = in[0][i] > 0 ? in[0][i] : in[1][0] * in[0][i];
                 return y;
               },
               24});
  t.push_back({"prelu_channel", {{P, Fill::away_from_zero}, {Shape{4}, Fill::positive}}, [](auto& in) { return prelu(in[0], in[1]); },
               [](const Values& in) {
                 std::vector<double> y(in[0].size());
                 for (size_t i = 0; i < y.size(); ++i) y[i] = in[0][i] > 0 ? in[0][i] : in[1][i % 4] * in[0][i];
                 return y;
               },
               24});

  // ---------------------------------------------------------------- reductions
  const Shape R{3, 4, 1, 5};
  auto reduce_spec = [&](std::string name, Axes axes, bool keepdim, ref::ReduceKind kind, auto fn) {
    t.push_back({name, {{R}}, [axes, keepdim, fn](auto& in) { return fn(in[0], axes, keepdim); },
                 [axes, kind, R](const Values& in) { return ref::reduce(in[0], R.vec(), axis_flags(R.size(), axes), kind); },
                 60});
  };
  reduce_spec("sum_axes", {1, 3}, false, ref::ReduceKind::sum, [](const Tensor& x, Axes a, bool k) { return sum(x, a, k); });
  reduce_spec("sum_all", {}, false, ref::ReduceKind::sum, [](const Tensor& x, Axes a, bool k) { return sum(x, a, k); });
  reduce_spec("mean_keepdim", {0, 2}, true, ref::ReduceKind::mean, [](const Tensor& x, Axes a, bool k) { return mean(x, a, k); });
  reduce_spec("max_axis", {1}, false, ref::ReduceKind::max, [](const Tensor& x, Axes a, bool k) { return max(x, a, k); });
  reduce_spec("min_axes", {0, -1}, true, ref::ReduceKind::min, [](const Tensor& x, Axes a, bool k) { return min(x, a, k); });
  reduce_spec("var_axes", {1, 3}, false, ref::ReduceKind::var, [](const Tensor& x, Axes a, bool k) { return var(x, a, 1.0, k); });
  t.push_back({"std_all", {{R}}, [](auto& in) { return std_dev(in[0]); },
               [R](const Values& in) {
                 auto v = ref::reduce(in[0], R.vec(), axis_flags(R.size(), {}), ref::ReduceKind::var);
                 return std::vector<double>{std::sqrt(v[0])};
               },
               60});

  // ---------------------------------------------------------------- linear algebra
  const Shape MA{2, 1, 3, 4}, MB{3, 4, 5};
  t.push_back({"matmul_batched", {{MA}, {MB}}, [](auto& in) { return matmul(in[0], in[1]); },
               [MA, MB](const Values& in) {
                 std::vector<double> y(2 * 3 * 3 * 5);
                 for (int64_t b0 = 0; b0 < 2; ++b0)
                   for (int64_t b1 = 0; b1 < 3; ++b1)
                     ref::matmul<double>(3, 5, 4, in[0].data() + b0 * 12, in[1].data() + b1 * 20, y.data() + (b0 * 3 + b1) * 15);
                 return y;
               },
               2.0 * 6 * 3 * 5 * 4});
  t.push_back({"matmul_vector", {{Shape{4}}, {Shape{2, 4, 3}}}, [](auto& in) { return matmul(in[0], in[1]); },
               [](const Values& in) {
                 std::vector<double> y(6);
                 for (int64_t b = 0; b < 2; ++b) ref::matmul<double>(1, 3, 4, in[0].data(), in[1].data() + b * 12, y.data() + b * 3);
                 return y;
               },
               48});
  t.push_back({"linear", {{Shape{2, 3, 7}}, {Shape{5, 7}}, {Shape{5}}}, [](auto& in) { return linear(in[0], in[1], in[2]); },
               [](const Values& in) {
                 std::vector<double> y(30);
                 for (int64_t r = 0; r < 6; ++r)
                   for (int64_t o = 0; o < 5; ++o) {
                     double acc = in[2][static_cast<size_t>(o)];
                     for (int64_t i = 0; i < 7; ++i) acc += in[0][static_cast<size_t>(r * 7 + i)] * in[1][static_cast<size_t>(o * 7 + i)];
                     y[static_cast<size_t>(r * 5 + o)] = acc;
                   }
                 return y;
               },
               2.0 * 6 * 5 * 7});

  // ---------------------------------------------------------------- convolution
  struct ConvCase {
    std::string name;
    Shape x, w;
    std::array<int64_t, 3> stride, padding, dilation;
    int64_t groups;
  };
  for (const ConvCase& c : std::vector<ConvCase>{
           {"conv3d", {2, 5, 4, 6, 3}, {4, 3, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1},
           {"conv3d_strided_dilated", {1, 7, 6, 5, 4}, {6, 3, 2, 3, 2}, {2, 1, 2}, {1, 0, 2}, {1, 2, 1}, 2},
           {"conv3d_pointwise", {2, 3, 1, 4, 5}, {3, 1, 1, 1, 5}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1},
           // unit stride, one group: whole tap runs inside, per-tap copies at the w borders
           {"conv3d_wide_w_padding", {1, 3, 3, 7, 2}, {3, 1, 2, 5, 2}, {1, 1, 1}, {0, 1, 3}, {1, 1, 1}, 1},
           {"conv3d_dilated_w", {1, 5, 4, 9, 3}, {2, 2, 3, 3, 3}, {1, 1, 1}, {0, 1, 2}, {1, 1, 2}, 1},
           // more than 4 outputs (the GEMM path; 4 or fewer take the planar one) both ways
           {"conv3d_wide", {1, 4, 3, 5, 3}, {6, 3, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1},
           {"conv3d_many_inputs", {1, 3, 4, 5, 6}, {5, 3, 1, 3, 6}, {1, 1, 1}, {1, 0, 2}, {1, 1, 1}, 1},
           {"conv2d", {2, 7, 6, 4}, {6, 3, 3, 2}, {1, 2, 1}, {0, 1, 0}, {1, 1, 1}, 2},
           // one channel per tap (a first layer; depthwise): the gathers' single-load path
           {"conv3d_one_channel_strided", {1, 7, 6, 9, 1}, {6, 3, 3, 3, 1}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1},
           {"conv3d_depthwise", {1, 4, 5, 6, 3}, {3, 3, 3, 3, 1}, {1, 1, 2}, {1, 1, 1}, {1, 1, 1}, 3},
       }) {
    const auto g = conv_geometry(c.x, c.w, c.stride, c.padding, c.dilation, c.groups);
    const int spatial = static_cast<int>(c.x.size()) - 2;
    ConvOptions o;
    o.stride = o.padding = o.dilation = {};
    for (int i = 0; i < spatial; ++i) {
      o.stride.push_back(c.stride[static_cast<size_t>(3 - spatial + i)]);
      o.padding.push_back(c.padding[static_cast<size_t>(3 - spatial + i)]);
      o.dilation.push_back(c.dilation[static_cast<size_t>(3 - spatial + i)]);
    }
    o.groups = c.groups;
    t.push_back({c.name, {{c.x}, {c.w}, {Shape{c.w[0]}}}, [o](auto& in) { return conv(in[0], in[1], in[2], o); },
                 [g](const Values& in) {
                   std::vector<double> y(static_cast<size_t>(g.out_positions() * g.out_channels));
                   ref::conv_forward<double>(g, in[0].data(), in[1].data(), in[2].data(), y.data());
                   return y;
                 },
                 g.flops(), 1e-4, 1e-4});
    t.back().amp_atol = std::max(t.back().amp_atol, bf16_products_atol(static_cast<double>(g.kernel_volume() * g.in_per_group())));
  }
  struct ConvTCase {
    std::string name;
    Shape x, w;  // w: [Cin, k..., Cout/groups]
    std::array<int64_t, 3> stride, padding, output_padding, dilation;
    int64_t groups;
  };
  for (const ConvTCase& c : std::vector<ConvTCase>{
           {"conv_transpose3d", {2, 3, 4, 2, 4}, {4, 3, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1},
           {"conv_transpose3d_k2", {1, 3, 2, 3, 2}, {2, 2, 2, 2, 5}, {2, 2, 2}, {0, 0, 0}, {0, 0, 0}, {1, 1, 1}, 1},
           {"conv_transpose3d_wide", {1, 3, 2, 3, 4}, {4, 3, 3, 3, 6}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1},
           // a kernel smaller than the stride: odd output positions have no tap at all
           {"conv_transpose3d_k1_s3", {1, 2, 3, 2, 3}, {3, 1, 1, 1, 2}, {2, 3, 2}, {0, 0, 0}, {1, 2, 0}, {1, 1, 1}, 1},
           // stride 3 with a 5^3 kernel, padding 2: phases of one and two taps per axis
           {"conv_transpose3d_s3_k5", {1, 3, 2, 4, 2}, {2, 5, 5, 5, 3}, {3, 3, 3}, {2, 2, 2}, {2, 0, 1}, {1, 1, 1}, 1},
           {"conv_transpose2d_grouped", {2, 3, 4, 4}, {4, 3, 2, 3}, {1, 2, 3}, {0, 1, 0}, {0, 1, 2}, {1, 2, 1}, 2},
       }) {
    const int spatial = static_cast<int>(c.x.size()) - 2;
    kernels::ConvGeometry g;
    g.batch = c.x[0];
    for (int i = 0; i < spatial; ++i) {
      const auto a = static_cast<size_t>(3 - spatial + i);
      g.in[a] = c.x[1 + i];
      g.kernel[a] = c.w[1 + i];
    }
    g.stride = c.stride;
    g.padding = c.padding;
    g.dilation = c.dilation;
    g.groups = c.groups;
    g.in_channels = c.x.back();
    g.out_channels = c.w.back() * c.groups;
    for (size_t i = 0; i < 3; ++i)
      g.out[i] = (g.in[i] - 1) * g.stride[i] - 2 * g.padding[i] + g.dilation[i] * (g.kernel[i] - 1) + c.output_padding[i] + 1;
    ConvTransposeOptions o;
    o.stride = o.padding = o.output_padding = o.dilation = {};
    for (int i = 0; i < spatial; ++i) {
      const auto a = static_cast<size_t>(3 - spatial + i);
      o.stride.push_back(c.stride[a]);
      o.padding.push_back(c.padding[a]);
      o.output_padding.push_back(c.output_padding[a]);
      o.dilation.push_back(c.dilation[a]);
    }
    o.groups = c.groups;
    t.push_back({c.name, {{c.x}, {c.w}, {Shape{g.out_channels}}}, [o](auto& in) { return conv_transpose(in[0], in[1], in[2], o); },
                 [g](const Values& in) {
                   std::vector<double> y(static_cast<size_t>(g.out_positions() * g.out_channels));
                   ref::conv_transpose_forward<double>(g, in[0].data(), in[1].data(), in[2].data(), y.data());
                   return y;
                 },
                 2.0 * static_cast<double>(g.in_positions()) * g.in_channels * g.kernel_volume() * (g.out_channels / g.groups),
                 1e-4, 1e-4});
    t.back().amp_atol = std::max(t.back().amp_atol, bf16_products_atol(static_cast<double>(g.kernel_volume() * (g.out_channels / g.groups))));
  }

  // ---------------------------------------------------------------- pooling and resampling
  const Shape V{2, 5, 6, 3, 3};
  const ref::Volume vol{2, 5, 6, 3, 3};
  t.push_back({"max_pool3d", {{V}}, [](auto& in) { return max_pool3d(in[0], {{3}, {2}, {1}}); },
               [vol](const Values& in) {
                 ref::Volume out;
                 return ref::max_pool3d(in[0], vol, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, out);
               },
               540});
  t.push_back({"avg_pool3d_include_pad", {{V}}, [](auto& in) { return avg_pool3d(in[0], {{3, 2, 3}, {2, 1, 2}, {1, 1, 1}, true}); },
               [vol](const Values& in) {
                 ref::Volume out;
                 return ref::avg_pool3d(in[0], vol, {3, 2, 3}, {2, 1, 2}, {1, 1, 1}, true, out);
               },
               540});
  t.push_back({"avg_pool3d_exclude_pad", {{V}}, [](auto& in) { return avg_pool3d(in[0], {{3}, {2}, {1}, false}); },
               [vol](const Values& in) {
                 ref::Volume out;
                 return ref::avg_pool3d(in[0], vol, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, false, out);
               },
               540});
  t.push_back({"adaptive_avg_pool3d", {{V}}, [](auto& in) { return adaptive_avg_pool3d(in[0], {3, 4, 2}); },
               [](const Values& in) {
                 // PyTorch: window [floor(o * in / out), ceil((o + 1) * in / out)).
                 const std::array<int64_t, 3> isz{5, 6, 3}, osz{3, 4, 2};
                 std::vector<double> y(static_cast<size_t>(2 * 3 * 4 * 2 * 3), 0.0);
                 for (int64_t n = 0; n < 2; ++n)
                   for (int64_t a = 0; a < 3; ++a)
                     for (int64_t b = 0; b < 4; ++b)
                       for (int64_t c = 0; c < 2; ++c)
                         for (int64_t ch = 0; ch < 3; ++ch) {
                           double total = 0, count = 0;
                           for (int64_t z = a * isz[0] / osz[0]; z < ((a + 1) * isz[0] + osz[0] - 1) / osz[0]; ++z)
                             for (int64_t yy = b * isz[1] / osz[1]; yy < ((b + 1) * isz[1] + osz[1] - 1) / osz[1]; ++yy)
                               for (int64_t xx = c * isz[2] / osz[2]; xx < ((c + 1) * isz[2] + osz[2] - 1) / osz[2]; ++xx)
                                 total += in[0][static_cast<size_t>((((n * 5 + z) * 6 + yy) * 3 + xx) * 3 + ch)], count += 1;
                           y[static_cast<size_t>((((n * 3 + a) * 4 + b) * 2 + c) * 3 + ch)] = total / count;
                         }
                 return y;
               },
               540});
  for (const auto& [name, linear, align] : std::vector<std::tuple<std::string, bool, bool>>{
           {"upsample_nearest", false, false}, {"upsample_trilinear", true, false}, {"upsample_trilinear_align", true, true}}) {
    t.push_back({name, {{V}},
                 [linear, align](auto& in) {
                   return linear ? upsample_trilinear(in[0], {7, 12, 5}, align) : upsample_nearest(in[0], {7, 12, 5});
                 },
                 [vol, linear, align](const Values& in) { return ref::upsample3d(in[0], vol, {7, 12, 5}, linear, align); },
                 2 * 7 * 12 * 5 * 3 * 8.0});
  }

  // ---------------------------------------------------------------- normalisation
  const Shape N5{2, 3, 2, 4, 6};
  t.push_back({"batch_norm_train", {{N5}, {Shape{6}, Fill::positive}, {Shape{6}}},
               [](auto& in) { return batch_norm(in[0], {}, {}, in[1], in[2], true); },
               [](const Values& in) { return ref::normalize(in[0], 1, 48, 6, 6, in[1].data(), in[2].data(), 1e-5); }, 288 * 8.0});
  t.push_back({"instance_norm_affine", {{N5}, {Shape{6}, Fill::positive}, {Shape{6}}},
               [](auto& in) { return instance_norm(in[0], in[1], in[2]); },
               [](const Values& in) { return ref::normalize(in[0], 2, 24, 6, 6, in[1].data(), in[2].data(), 1e-5); }, 288 * 8.0});
  t.push_back({"instance_norm", {{N5}}, [](auto& in) { return instance_norm(in[0]); },
               [](const Values& in) { return ref::normalize(in[0], 2, 24, 6, 6, nullptr, nullptr, 1e-5); }, 288 * 8.0});
  // the fused PReLU(instance_norm(x)): the reference composes the two
  auto prelu_of = [](std::vector<double> z, const std::vector<double>& slope) {
    for (size_t i = 0; i < z.size(); ++i) z[i] = z[i] > 0 ? z[i] : slope[slope.size() == 1 ? 0 : i % slope.size()] * z[i];
    return z;
  };
  t.push_back({"instance_norm_prelu_affine", {{N5}, {Shape{6}, Fill::positive}, {Shape{6}}, {Shape{6}, Fill::positive}},
               [](auto& in) { return instance_norm_prelu(in[0], in[1], in[2], in[3]); },
               [prelu_of](const Values& in) { return prelu_of(ref::normalize(in[0], 2, 24, 6, 6, in[1].data(), in[2].data(), 1e-5), in[3]); },
               288 * 10.0});
  t.push_back({"instance_norm_prelu", {{N5}, {Shape{1}, Fill::positive}}, [](auto& in) { return instance_norm_prelu(in[0], {}, {}, in[1]); },
               [prelu_of](const Values& in) { return prelu_of(ref::normalize(in[0], 2, 24, 6, 6, nullptr, nullptr, 1e-5), in[1]); },
               288 * 10.0});
  auto plus = [](std::vector<double> y, const std::vector<double>& residual) {
    for (size_t i = 0; i < y.size(); ++i) y[i] += residual[i];
    return y;
  };
  t.push_back({"instance_norm_prelu_add", {{N5}, {Shape{6}, Fill::positive}, {N5}},
               [](auto& in) { return instance_norm_prelu_add(in[0], {}, {}, in[1], in[2]); },
               [prelu_of, plus](const Values& in) { return plus(prelu_of(ref::normalize(in[0], 2, 24, 6, 6, nullptr, nullptr, 1e-5), in[1]), in[2]); },
               288 * 11.0});
  // channel counts that divide 16 take the flat 16-lane loops (105 rows of 4: a tail of 4 elements)
  t.push_back({"instance_norm_c4", {{Shape{2, 3, 5, 7, 4}}, {Shape{4}, Fill::positive}, {Shape{4}}},
               [](auto& in) { return instance_norm(in[0], in[1], in[2]); },
               [](const Values& in) { return ref::normalize(in[0], 2, 105, 4, 4, in[1].data(), in[2].data(), 1e-5); }, 840 * 8.0});
  t.push_back({"group_norm_c8", {{Shape{2, 3, 4, 5, 8}}, {Shape{8}, Fill::positive}, {Shape{8}}},
               [](auto& in) { return group_norm(in[0], 2, in[1], in[2]); },
               [](const Values& in) { return ref::normalize(in[0], 2, 60, 8, 2, in[1].data(), in[2].data(), 1e-5); }, 960 * 8.0});
  t.push_back({"instance_norm_prelu_c2", {{Shape{2, 4, 3, 5, 2}}, {Shape{2}, Fill::positive}},
               [](auto& in) { return instance_norm_prelu(in[0], {}, {}, in[1]); },
               [prelu_of](const Values& in) { return prelu_of(ref::normalize(in[0], 2, 60, 2, 2, nullptr, nullptr, 1e-5), in[1]); },
               240 * 10.0});
  t.push_back({"instance_norm_prelu_add_c16", {{Shape{1, 3, 2, 3, 16}}, {Shape{16}, Fill::positive}, {Shape{1, 3, 2, 3, 16}}},
               [](auto& in) { return instance_norm_prelu_add(in[0], {}, {}, in[1], in[2]); },
               [prelu_of, plus](const Values& in) { return plus(prelu_of(ref::normalize(in[0], 1, 18, 16, 16, nullptr, nullptr, 1e-5), in[1]), in[2]); },
               288 * 11.0});
  t.push_back({"group_norm", {{N5}, {Shape{6}, Fill::positive}, {Shape{6}}},
               [](auto& in) { return group_norm(in[0], 3, in[1], in[2]); },
               [](const Values& in) { return ref::normalize(in[0], 2, 24, 6, 3, in[1].data(), in[2].data(), 1e-5); }, 288 * 8.0});
  t.push_back({"layer_norm", {{Shape{3, 4, 5}}, {Shape{4, 5}, Fill::positive}, {Shape{4, 5}}},
               [](auto& in) { return layer_norm(in[0], 2, in[1], in[2]); },
               [](const Values& in) { return ref::normalize(in[0], 3, 1, 20, 1, in[1].data(), in[2].data(), 1e-5); }, 60 * 8.0});

  // ---------------------------------------------------------------- softmax
  const Shape S{2, 5, 3};
  t.push_back({"softmax_middle", {{S}}, [](auto& in) { return softmax(in[0], 1); },
               [S](const Values& in) { return softmax_ref(in[0], S, 1, false); }, 30 * 5.0});
  t.push_back({"log_softmax_last", {{S}}, [](auto& in) { return log_softmax(in[0], -1); },
               [S](const Values& in) { return softmax_ref(in[0], S, 2, true); }, 30 * 5.0});
  // the last axis (rows contiguous) and a middle axis take different kernel paths
  t.push_back({"softmax_last", {{S}}, [](auto& in) { return softmax(in[0], -1); },
               [S](const Values& in) { return softmax_ref(in[0], S, 2, false); }, 30 * 5.0});
  t.push_back({"log_softmax_middle", {{S}}, [](auto& in) { return log_softmax(in[0], 1); },
               [S](const Values& in) { return softmax_ref(in[0], S, 1, true); }, 30 * 5.0});

  // ---------------------------------------------------------------- assembly
  t.push_back({"concat", {{Shape{2, 1, 3}}, {Shape{2, 4, 3}}}, [](auto& in) { return concat({in[0], in[1]}, 1); },
               [](const Values& in) {
                 std::vector<double> y;
                 for (int64_t n = 0; n < 2; ++n) {
                   y.insert(y.end(), in[0].begin() + n * 3, in[0].begin() + n * 3 + 3);
                   y.insert(y.end(), in[1].begin() + n * 12, in[1].begin() + n * 12 + 12);
                 }
                 return y;
               },
               30});
  t.push_back({"split_second", {{Shape{3, 7}}}, [](auto& in) { return split(in[0], {2, 4, 1}, 1)[1]; },
               [](const Values& in) {
                 std::vector<double> y;
                 for (int64_t r = 0; r < 3; ++r) y.insert(y.end(), in[0].begin() + r * 7 + 2, in[0].begin() + r * 7 + 6);
                 return y;
               },
               12});
  for (const auto& [name, mode] : std::vector<std::pair<std::string, PadMode>>{
           {"pad_constant", PadMode::constant}, {"pad_reflect", PadMode::reflect}, {"pad_replicate", PadMode::replicate}}) {
    t.push_back({name, {{Shape{2, 3, 4, 2}}},
                 [mode](auto& in) { return pad(in[0], {{0, 0}, {2, 1}, {1, 3}, {0, 0}}, mode, 0.5); },
                 [mode](const Values& in) {
                   auto source = [mode](int64_t o, int64_t before, int64_t n) -> int64_t {
                     const int64_t s = o - before;
                     if (s >= 0 && s < n) return s;
                     if (mode == PadMode::constant) return -1;
                     if (mode == PadMode::replicate) return std::clamp<int64_t>(s, 0, n - 1);
                     return s < 0 ? -s : 2 * (n - 1) - s;
                   };
                   std::vector<double> y;
                   for (int64_t n = 0; n < 2; ++n)
                     for (int64_t a = 0; a < 6; ++a)
                       for (int64_t b = 0; b < 8; ++b)
                         for (int64_t c = 0; c < 2; ++c) {
                           const int64_t sa = source(a, 2, 3), sb = source(b, 1, 4);
                           y.push_back(sa < 0 || sb < 0 ? 0.5 : in[0][static_cast<size_t>(((n * 3 + sa) * 4 + sb) * 2 + c)]);
                         }
                   return y;
                 },
                 96});
  }
  t.push_back({"flip", {{Shape{2, 3, 4}}}, [](auto& in) { return flip(in[0], {0, 2}); },
               [](const Values& in) {
                 std::vector<double> y;
                 for (int64_t a = 0; a < 2; ++a)
                   for (int64_t b = 0; b < 3; ++b)
                     for (int64_t c = 0; c < 4; ++c) y.push_back(in[0][static_cast<size_t>(((1 - a) * 3 + b) * 4 + (3 - c))]);
                 return y;
               },
               24});

  // ---------------------------------------------------------------- losses
  t.push_back({"cross_entropy", {{Shape{2, 3, 5}}, {Shape{2, 3}, Fill::labels_or_ignored, false, 5}, {Shape{5}, Fill::positive, false}},
               [](auto& in) {
                 CrossEntropyOptions o;
                 o.weight = in[2];
                 o.label_smoothing = 0.1;
                 return cross_entropy(in[0], in[1], o);
               },
               [](const Values& in) {
                 std::vector<int64_t> target(in[1].begin(), in[1].end());
                 return std::vector<double>{ref::cross_entropy_mean(in[0], target, 5, in[2], -100, 0.1)};
               },
               30 * 6.0});
  t.push_back({"bce_with_logits", {{Shape{3, 4}}, {Shape{3, 4}, Fill::positive, false}, {Shape{4}, Fill::positive, false}, {Shape{4}, Fill::positive, false}},
               [](auto& in) {
                 // targets in (0, 1): scale the positive draws down
                 return binary_cross_entropy_with_logits(in[0], mul(in[1], scalar(0.4, in[1].dtype())), in[2], in[3]);
               },
               [](const Values& in) {
                 std::vector<double> y(12), w(12), pw(12);
                 for (size_t i = 0; i < 12; ++i) y[i] = 0.4 * in[1][i], w[i] = in[2][i % 4], pw[i] = in[3][i % 4];
                 return std::vector<double>{ref::bce_with_logits_mean(in[0], y, w, pw)};
               },
               12 * 10.0});

  // ---------------------------------------------------------------- attention
  t.push_back({"sdpa_masked", {{Shape{2, 3, 4}}, {Shape{2, 5, 4}}, {Shape{2, 5, 3}}, {Shape{3, 5}, Fill::boolean, false}},
               [](auto& in) {
                 // keep column 0 attendable so no row is fully masked
                 Tensor mask = in[3].clone();
                 for (int64_t r = 0; r < 3; ++r) mask.data<bool>()[r * 5] = true;
                 return scaled_dot_product_attention(in[0], in[1], in[2], mask);
               },
               [](const Values& in) {
                 std::vector<bool> attend(15);
                 for (size_t i = 0; i < 15; ++i) attend[i] = i % 5 == 0 || in[3][i] != 0;
                 std::vector<double> y;
                 for (int64_t b = 0; b < 2; ++b) {
                   const auto part = ref::attention(in[0].data() + b * 12, in[1].data() + b * 20, in[2].data() + b * 15, 3, 5, 4, 3, 0.5, attend);
                   y.insert(y.end(), part.begin(), part.end());
                 }
                 return y;
               },
               2 * 3 * 5 * (4 + 3) * 2.0});
  return t;
}

}  // namespace vox::testing
