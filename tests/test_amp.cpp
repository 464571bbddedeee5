// Mixed precision: autocast's policy table (every rule's output dtype), its parameter cache, the
// backward pass under autocast, the op table run under autocast against the f64 reference at
// bf16's tolerances, and the loss scaler's rules.
#include <map>

#include "amp_cases.hpp"
#include "harness.hpp"
#include "op_table.hpp"
#include "vox/io/file.hpp"
#include "vox/io/json.hpp"

using namespace vox;
using namespace vox::testing;

TEST_CASE("autocast's table: each rule gives its output dtype on the CPU") {
  const auto cases = policy_cases();
  for (const AutocastRule& rule : autocast_rules()) {
    SUBCASE(std::string(rule.op).c_str()) {
      const auto it = cases.find(std::string(rule.op));
      REQUIRE_MESSAGE(it != cases.end(), "autocast rule '", rule.op, "' has no test case");
      // outside autocast a product keeps its inputs' dtype
      if (rule.cpu == CastPolicy::lower) CHECK(it->second(DType::f32).dtype() == DType::f32);
      amp::Autocast autocast;
      check_output_dtype(rule.cpu, it->second, DType::bf16);
    }
  }
  CHECK(cases.size() == autocast_rules().size());
}

TEST_CASE("autocast: the table has a CUDA column, f16 by default there, and bf16 by default on the CPU") {
  CHECK(amp::default_autocast_dtype(Device::cpu()) == DType::bf16);
  CHECK(amp::default_autocast_dtype(Device::cuda()) == DType::f16);
  for (const AutocastRule& rule : autocast_rules()) CHECK(autocast_policy(rule.op, Device::cuda()).has_value());
  {
    amp::Autocast on_cuda(Device::cuda());  // CPU tensors are left alone
    CHECK(conv(f32_input({1, 3, 3, 3, 2}, 1), f32_input({2, 1, 1, 1, 2}, 2)).dtype() == DType::f32);
    CHECK(amp::autocast_dtype(Device::cuda()) == DType::f16);
    CHECK(!amp::autocast_dtype(Device::cpu()));
  }
  CHECK_THROWS_AS(amp::Autocast(DType::f32), Error);
}

TEST_CASE("autocast: scopes nest, switch off inside, and end") {
  const Tensor a = f32_input({3, 4}, 1), b = f32_input({4, 2}, 2);
  {
    amp::Autocast outer;
    CHECK(matmul(a, b).dtype() == DType::bf16);
    {
      amp::Autocast inner(Device::cpu(), std::nullopt, false);
      CHECK(matmul(a, b).dtype() == DType::f32);
    }
    CHECK(matmul(a, b).dtype() == DType::bf16);
  }
  CHECK(matmul(a, b).dtype() == DType::f32);
}

TEST_CASE("autocast: a parameter is cast once per scope, and again after the optimizer steps") {
  Tensor w = f32_input({4, 6}, 3);
  w.set_requires_grad(true);
  const Tensor x = f32_input({2, 6}, 4);
  optim::SGD sgd({w}, {.lr = 0.1});
  amp::Autocast autocast;
  const Tensor y1 = linear(x, w);
  const Tensor y2 = linear(x, w);
  const Tensor w16 = amp::cast_cache().entries.at(w.impl())[amp::CastCache::slot(DType::bf16, true)].cast;
  REQUIRE(w16.defined());
  CHECK(w16.dtype() == DType::bf16);
  CHECK(amp::cast_cache().entries.size() == 1);  // both uses shared one copy
  add(sum(y1), sum(y2)).backward();
  REQUIRE(w.grad().defined());
  CHECK(w.grad().dtype() == DType::f32);  // the master weight's gradient is f32
  sgd.step();
  const Tensor y3 = linear(x, w);
  const Tensor fresh = amp::cast_cache().entries.at(w.impl())[amp::CastCache::slot(DType::bf16, true)].cast;
  CHECK(!fresh.is_same(w16));  // remade from the updated weight
  CHECK(values(fresh) == values(w.detach().to(DType::bf16)));
}

TEST_CASE("autocast: backward runs in the forward pass's dtypes, and checkpointed blocks recompute under the same casts") {
  Tensor w = f32_input({4, 3, 3, 3, 2}, 5);
  w.set_requires_grad(true);
  Tensor x = f32_input({1, 5, 5, 5, 2}, 6);
  x.set_requires_grad(true);
  auto block = [&](const Tensor& in) { return conv(in, w, {}, {.padding = {1}}); };
  Tensor plain_grad_w, plain_grad_x;
  {
    amp::Autocast autocast;
    const Tensor y = block(x);
    CHECK(y.dtype() == DType::bf16);
    sum(y).backward();  // backward called inside the scope
    plain_grad_w = w.grad().clone();
    plain_grad_x = x.grad().clone();
  }
  CHECK(plain_grad_w.dtype() == DType::f32);
  CHECK(plain_grad_x.dtype() == DType::f32);
  w.zero_grad();
  x.zero_grad();
  {
    amp::Autocast autocast;
    sum(checkpoint(block, x)).backward();
  }
  CHECK(values(w.grad()) == values(plain_grad_w));
  CHECK(values(x.grad()) == values(plain_grad_x));
}

TEST_CASE("bf16 ops on the CPU: conv, transposed conv and matmul are the bf16 kernels, to bf16's rounding of the f32 result") {
  // The kernels are bit-exact against their references (test_bf16); here the ops around them:
  // layouts, bias, groups, and the backward pass, against f32 on the same (bf16-rounded) values.
  const Tensor x = f32_input({2, 5, 6, 7, 4}, 7).to(DType::bf16), w = f32_input({6, 3, 3, 3, 2}, 8).to(DType::bf16);
  const Tensor b = f32_input({6}, 9).to(DType::bf16);
  const ConvOptions options{.stride = {2}, .padding = {1}, .groups = 2};
  const Tensor got = conv(x, w, b, options).to(DType::f32);
  const Tensor want = conv(x.to(DType::f32), w.to(DType::f32), b.to(DType::f32), options);
  VOX_CHECK_CLOSE(values(got), values(want), 0.02, 0.01, "bf16 conv");
  const Tensor wt = f32_input({4, 3, 3, 3, 5}, 10).to(DType::bf16);
  const ConvTransposeOptions t_options{.stride = {2}, .padding = {1}, .output_padding = {1}};
  VOX_CHECK_CLOSE(values(conv_transpose(x, wt, {}, t_options).to(DType::f32)),
                  values(conv_transpose(x.to(DType::f32), wt.to(DType::f32), {}, t_options)), 0.03, 0.01, "bf16 transposed conv");
  const Tensor a = f32_input({3, 17, 33}, 11).to(DType::bf16), m = f32_input({33, 9}, 12).to(DType::bf16);
  VOX_CHECK_CLOSE(values(matmul(a, m).to(DType::f32)), values(matmul(a.to(DType::f32), m.to(DType::f32))), 0.03, 0.01, "bf16 matmul");
}

namespace {
Tensor from_bits(const json::Value& list) {
  std::vector<float> v;
  for (const json::Value& b : list.as_array()) v.push_back(std::bit_cast<float>(static_cast<uint32_t>(b.as_int64())));
  return from_vector(v, Shape{static_cast<int64_t>(v.size())});
}
const json::Value& member(const json::Value& v, const char* key) {
  const json::Value* m = v.find(key);
  REQUIRE_MESSAGE(m != nullptr, "fixture has no '", key, "'");
  return *m;
}
}  // namespace

TEST_CASE("GradScaler against torch.amp.GradScaler: scale, skipped steps, growth and parameters, with clipping of unscaled gradients") {
  const std::string path = fixture_dir("VOX_AMP_DIR", "amp") + "/scaler.json";
  const std::vector<char> text = io::read_file(path);
  const json::Value fixture = json::parse(std::string_view(text.data(), text.size()), path);
  MESSAGE("reference: torch ", member(fixture, "torch").as_string());
  const json::Value& options = member(fixture, "options");
  amp::GradScaler scaler({.init_scale = member(options, "init_scale").as_double(),
                          .growth_factor = member(options, "growth_factor").as_double(),
                          .backoff_factor = member(options, "backoff_factor").as_double(),
                          .growth_interval = member(options, "growth_interval").as_int64()});
  Tensor p0 = from_bits(member(fixture, "p0")), p1 = from_bits(member(fixture, "p1"));
  p0.set_requires_grad(true);
  p1.set_requires_grad(true);
  optim::SGD sgd({p0, p1}, {.lr = member(fixture, "lr").as_double(), .momentum = member(fixture, "momentum").as_double()});
  const double max_norm = member(fixture, "clip_max_norm").as_double();
  int step = 0, skipped = 0;
  for (const json::Value& s : member(fixture, "steps").as_array()) {
    INFO("step " << step);
    CHECK(scaler.get_scale() == member(s, "scale_before").as_double());
    sgd.zero_grad();
    const Tensor c0 = from_bits(member(s, "c0")), c1 = from_bits(member(s, "c1"));
    scaler.scale(add(sum(mul(p0, c0)), sum(mul(p1, c1)))).backward();
    if (member(s, "clip").as_bool()) {
      scaler.unscale(sgd);
      // clipping sees the true gradients: c itself, wherever they are finite
      const std::vector<double> g0 = values(p0.grad()), want0 = values(c0);
      for (size_t i = 0; i < g0.size(); ++i)
        if (std::isfinite(want0[i]) && std::abs(want0[i]) < 1e30) CHECK(g0[i] == doctest::Approx(want0[i]).epsilon(1e-6));
      optim::clip_grad_norm({p0, p1}, max_norm);
    }
    const bool stepped = scaler.step(sgd);
    CHECK(stepped == !member(s, "skipped").as_bool());
    CHECK(scaler.last_step_skipped() == member(s, "skipped").as_bool());
    scaler.update();
    CHECK(scaler.get_scale() == member(s, "scale_after").as_double());
    CHECK(scaler.growth_tracker() == member(s, "growth_tracker").as_int64());
    VOX_CHECK_CLOSE(values(p0), values(from_bits(member(s, "p0"))), 1e-6, 1e-6, "p0 after step " << step);
    VOX_CHECK_CLOSE(values(p1), values(from_bits(member(s, "p1"))), 1e-6, 1e-6, "p1 after step " << step);
    if (step == 4) CHECK(scaler.first_nonfinite_parameter() == std::optional<size_t>(1));  // the inf injected into p1's
    if (step == 8) CHECK(scaler.first_nonfinite_parameter() == std::optional<size_t>(0));  // the NaN injected into p0's
    skipped += !stepped;
    ++step;
  }
  CHECK(step == 14);
  CHECK(skipped == 3);  // an inf, a NaN and a natural overflow
  // torch's defaults and state_dict keys
  const json::Value& defaults = member(fixture, "defaults");
  const auto state = amp::GradScaler().state_dict();
  for (const json::Value::Member& m : defaults.as_object()) {
    INFO(m.first);
    REQUIRE(state.count(m.first) == 1);
    CHECK(state.at(m.first).to(DType::f64).item<double>() == m.second.as_double());
  }
  CHECK(state.size() == defaults.as_object().size());
}

TEST_CASE("GradScaler: an overflow halves the scale and skips the step; the scale never grows to inf; state round-trips") {
  Tensor p = full({4}, 1.0);
  p.set_requires_grad(true);
  optim::SGD sgd({p}, {.lr = 1.0});
  amp::GradScaler scaler;
  CHECK(scaler.get_scale() == 65536.0);
  scaler.scale(sum(mul(p, full({4}, 1e35)))).backward();  // 1e35 * 65536 overflows f32
  CHECK_FALSE(scaler.step(sgd));
  scaler.update();
  CHECK(scaler.get_scale() == 32768.0);
  CHECK(values(p) == std::vector<double>{1, 1, 1, 1});
  CHECK_THROWS_AS(scaler.update(), Error);  // nothing recorded since
  sgd.zero_grad();
  scaler.scale(sum(p)).backward();
  scaler.unscale(sgd);
  CHECK_THROWS_AS(scaler.unscale(sgd), Error);
  CHECK(scaler.step(sgd));
  scaler.update();
  CHECK(values(p) == std::vector<double>{0, 0, 0, 0});

  amp::GradScaler near_max({.init_scale = 3.0e38, .growth_interval = 1});
  sgd.zero_grad();
  near_max.scale(sum(p)).backward();
  near_max.step(sgd);
  near_max.update();
  CHECK(near_max.get_scale() == static_cast<double>(3.0e38f));  // 6e38 is not finite in f32: kept

  amp::GradScaler restored({.init_scale = 2.0});
  restored.load_state_dict(scaler.state_dict());
  CHECK(restored.get_scale() == scaler.get_scale());
  CHECK(restored.growth_tracker() == scaler.growth_tracker());
  CHECK_THROWS_AS(amp::GradScaler({.growth_factor = 0.5}), Error);
}

TEST_CASE("f16 autocast with the scaler trains on the CPU") {
  // f16 has no CPU kernels of its own (computed in f32, rounded), so this is the scaler's logic
  // on 16-bit gradients, in CI without a GPU: a small regression that must learn.
  Generator gen(3);
  const Tensor x = randn({64, 8}, DType::f32, &gen);
  const Tensor true_w = randn({1, 8}, DType::f32, &gen);
  const Tensor y = matmul(x, transpose(true_w, 0, 1));
  Tensor w = zeros({1, 8});
  w.set_requires_grad(true);
  optim::SGD sgd({w}, {.lr = 0.05});
  amp::GradScaler scaler;
  double first = 0, last = 0;
  for (int step = 0; step < 200; ++step) {
    sgd.zero_grad();
    Tensor loss;
    {
      amp::Autocast autocast(DType::f16);
      const Tensor pred = linear(x, w);
      CHECK(pred.dtype() == DType::f16);
      loss = mean(square(sub(pred, y)));
      CHECK(loss.dtype() == DType::f32);
    }
    scaler.scale(loss).backward();
    CHECK(w.grad().dtype() == DType::f32);
    scaler.step(sgd);
    scaler.update();
    (step == 0 ? first : last) = loss.item<double>();
  }
  CHECK(last < 0.01 * first);
}

TEST_CASE("the op table under bf16 autocast: f32 inputs, against the f64 reference at bf16's tolerances") {
  for (const OpSpec& op : op_table()) {
    SUBCASE(op.name.c_str()) {
      Generator gen(7);
      std::vector<Tensor> in;
      for (const auto& s : op.inputs) in.push_back(make_input(s, DType::f32, gen));
      Values v;
      for (const Tensor& t : in) v.push_back(values(t));
      const std::vector<double> want = op.reference(v);
      amp::Autocast autocast;
      const Tensor out = op.run(in);
      VOX_CHECK_CLOSE(values(out), want, op.amp_atol, op.amp_rtol, op.name << " under autocast (output " << dtype_name(out.dtype()) << ")");
    }
  }
}

TEST_CASE("bf16 norms on the CPU read and write bf16 and compute in f32: exactly the f32 op on the widened values, rounded once") {
  Generator gen(21);
  const Tensor x16 = randn({2, 5, 4, 6, 16}, DType::f32, &gen).to(DType::bf16);
  const Tensor r16 = randn({2, 5, 4, 6, 16}, DType::f32, &gen).to(DType::bf16);
  const Tensor dy16 = randn({2, 5, 4, 6, 16}, DType::f32, &gen).to(DType::bf16);
  Tensor weight = randn({16}, DType::f32, &gen), bias = randn({16}, DType::f32, &gen), slope = full({16}, 0.25);
  for (Tensor* p : {&weight, &bias, &slope}) p->set_requires_grad(true);
  auto run = [&](const Tensor& x, const Tensor& r, const Tensor& dy) {
    Tensor xg = x.detach();
    xg.set_requires_grad(true);
    for (Tensor* p : {&weight, &bias, &slope}) p->zero_grad();
    const Tensor y = instance_norm_prelu_add(xg, weight, bias, slope, r);
    y.backward(dy);
    return std::vector<Tensor>{y, xg.grad(), weight.grad(), bias.grad(), slope.grad()};
  };
  const auto got = run(x16, r16, dy16);
  const auto want = run(x16.to(DType::f32), r16.to(DType::f32), dy16.to(DType::f32));
  CHECK(got[0].dtype() == DType::bf16);
  CHECK(got[1].dtype() == DType::bf16);
  CHECK(values(got[0]) == values(want[0].to(DType::bf16)));  // the output
  CHECK(values(got[1]) == values(want[1].to(DType::bf16)));  // the input's gradient
  for (int i = 2; i < 5; ++i) {  // the parameters' gradients: f32, the same sums
    CHECK(got[static_cast<size_t>(i)].dtype() == DType::f32);
    CHECK(values(got[static_cast<size_t>(i)]) == values(want[static_cast<size_t>(i)]));
  }
  // group and batch norm take the same path
  const Tensor g16 = group_norm(x16, 4, weight.detach(), bias.detach());
  CHECK(values(g16) == values(group_norm(x16.to(DType::f32), 4, weight.detach(), bias.detach()).to(DType::bf16)));
}
