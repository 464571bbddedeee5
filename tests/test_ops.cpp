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
