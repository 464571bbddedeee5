// Floor 5 and 6: modules, layers, the MONAI U-Net (parameter counts, state_dict keys, and
// parity with MONAI's own class in forward and backward), and the optimizers against PyTorch.
#include <cstdlib>
#include <limits>
#include <filesystem>

#include <vox/io/safetensors.hpp>
#include <vox/nn.hpp>
#include <vox/optim.hpp>

#include "model_parity.hpp"

using namespace vox;
using namespace vox::testing;
using doctest::Contains;

TEST_CASE("the MONAI U-Net has MONAI's parameter counts and state_dict keys") {
  nn::models::MonaiUNet instance;
  CHECK(instance.parameter_count() == 4806481);
  nn::models::MonaiUNet batch({.norm = nn::models::NormKind::batch});
  CHECK(batch.parameter_count() == 4808917);
  const auto names = instance.named_parameters();
  REQUIRE(names.size() == 63);
  CHECK(names[0].name == "model.0.conv.unit0.conv.weight");
  CHECK(names[2].name == "model.0.conv.unit0.adn.A.weight");
  CHECK(names.back().name == "model.2.1.conv.unit0.conv.bias");
  const auto state = batch.state_dict();
  CHECK(state.count("model.1.submodule.1.submodule.1.submodule.1.submodule.conv.unit0.adn.N.running_var") == 1);
  CHECK(state.at("model.0.conv.unit0.conv.weight").shape() == Shape{16, 1, 3, 3, 3});  // PyTorch's layout
  nn::models::MonaiUNet small({.channels = {4, 8, 16}, .strides = {2, 2}, .num_res_units = 0});
  CHECK(small.forward(randn({1, 8, 12, 16, 1})).shape() == Shape{1, 8, 12, 16, 2});
}

TEST_CASE("typed Sequential names its children like torch.nn.Sequential and runs them in order") {
  nn::Sequential<nn::Conv<3>, nn::InstanceNorm<3>, nn::PReLU, nn::Conv<3>> net(
      nn::Conv<3>(1, 4, {3}, {.padding = {1}}), nn::InstanceNorm<3>(4, true), nn::PReLU(), nn::Conv<3>(4, 2, {1}));
  const auto names = net.named_parameters();
  std::vector<std::string> keys;
  for (const auto& n : names) keys.push_back(n.name);
  CHECK(keys == std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "3.weight", "3.bias"});
  const Tensor y = net.forward(randn({2, 5, 6, 7, 1}));
  CHECK(y.shape() == Shape{2, 5, 6, 7, 2});
  sum(y).backward();
  for (const auto& n : names) CHECK(n.tensor->grad().defined());
}

TEST_CASE("state_dict round-trips through safetensors, and bad weights list every offending key") {
  nn::models::MonaiUNet a({.channels = {4, 8, 16}, .strides = {2, 2}}), b({.channels = {4, 8, 16}, .strides = {2, 2}});
  const std::string path = (std::filesystem::temp_directory_path() / "vox_unet.safetensors").string();
  io::save_safetensors(path, a.state_dict());
  b.load_state_dict(io::load_safetensors(path).tensors);
  std::filesystem::remove(path);
  const Tensor x = randn({1, 8, 8, 8, 1});
  CHECK(values(a.forward(x)) == values(b.forward(x)));

  auto state = a.state_dict();
  state.erase("model.0.conv.unit0.conv.bias");
  state["model.0.conv.unit1.conv.weight"] = zeros({4, 4, 3, 3, 2});
  state["model.0.residual.weight"] = state["model.0.residual.weight"].to(DType::f64);
  state["extra.weight"] = zeros({3});
  try {
    b.load_state_dict(state);
    FAIL("load_state_dict accepted a bad state_dict");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("4 problem(s)") != std::string::npos);
    CHECK(msg.find("missing key \"model.0.conv.unit0.conv.bias\"") != std::string::npos);
    CHECK(msg.find("\"model.0.conv.unit1.conv.weight\" has shape [4, 4, 3, 3, 2], expected [4, 4, 3, 3, 3]") != std::string::npos);
    CHECK(msg.find("\"model.0.residual.weight\" has dtype f64, expected f32") != std::string::npos);
    CHECK(msg.find("unexpected key \"extra.weight\"") != std::string::npos);
  }
}

TEST_CASE("batch norm layers switch between batch and running statistics with train() and eval()") {
  nn::BatchNorm<3> bn(3);
  const Tensor x = randn({2, 4, 4, 4, 3});
  bn.forward(x);
  CHECK(bn.state_dict().at("num_batches_tracked").item<int64_t>() == 1);
  bn.eval();
  const Tensor y = bn.forward(x);
  CHECK(bn.state_dict().at("num_batches_tracked").item<int64_t>() == 1);
  CHECK(std::abs(mean(y).item<float>()) > 1e-4);  // running statistics: not centred exactly
}

TEST_CASE("the MONAI U-Net matches MONAI's UNet forward and backward, with MONAI's weights") {
  for (const auto& [name, norm] : std::vector<std::pair<std::string, nn::models::NormKind>>{
           {"monai_unet_instance", nn::models::NormKind::instance}, {"monai_unet_batch", nn::models::NormKind::batch}}) {
    SUBCASE(name.c_str()) {
      const io::Safetensors f = model_fixture(name);
      nn::models::MonaiUNet net({.norm = norm});
      net.load_state_dict(fixture_state(f));
      const Tensor y = net.forward(from_channels_first(f.at("x")));
      const auto c = compare(values(to_channels_first(y)), values(f.at("out")), 1e-4, 0.0);
      INFO("forward: " << c.str());
      CHECK(c.ok());  // within 1e-4 max abs, on a non-cubic 32 x 48 x 64 input
      const Tensor loss = cross_entropy(y, f.at("target"));
      CHECK(loss.item<float>() == doctest::Approx(f.at("loss").item<float>()).epsilon(1e-5));
      loss.backward();
      check_gradients(net, f, 1e-3, name);  // within 1e-3 of each gradient's largest element
      for (const auto& [key, t] : net.state_dict())
        if (f.contains("after." + key) && t.dtype() != DType::i64) {
          INFO(key << " after the training pass");
          CHECK(relative_max_error(t, f.at("after." + key)) < 1e-4);
        }
    }
  }
}

TEST_CASE("SGD, Adam and AdamW match PyTorch after five steps") {
  struct Case {
    std::string name;
    std::function<std::unique_ptr<optim::Optimizer>(std::vector<Tensor>)> make;
  };
  const std::vector<Case> cases{
      {"optim_sgd_nesterov", [](auto p) { return std::make_unique<optim::SGD>(p, optim::SgdOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4, .nesterov = true}); }},
      {"optim_sgd_dampened", [](auto p) { return std::make_unique<optim::SGD>(p, optim::SgdOptions{.lr = 0.05, .momentum = 0.5, .dampening = 0.3}); }},
      {"optim_adam", [](auto p) { return std::make_unique<optim::Adam>(p, optim::AdamOptions{.lr = 1e-2, .weight_decay = 1e-3}); }},
      {"optim_adamw", [](auto p) { return std::make_unique<optim::AdamW>(p, optim::AdamOptions{.lr = 1e-2, .weight_decay = 0.05}); }},
  };
  for (const Case& c : cases) {
    SUBCASE(c.name.c_str()) {
      const io::Safetensors f = model_fixture(c.name);
      std::vector<Tensor> params{f.at("p0").clone(), f.at("p1").clone()};
      for (Tensor& p : params) p.set_requires_grad();
      auto opt = c.make(params);
      for (int step = 0; step < 5; ++step) {
        for (size_t i = 0; i < params.size(); ++i) {
          std::string key = "g";  // appended piecewise: GCC 12 warns falsely on "g" + std::string
          key += std::to_string(i);
          key += '.';
          key += std::to_string(step);
          params[i].set_grad(f.at(key));
        }
        opt->step();
      }
      for (size_t i = 0; i < params.size(); ++i)
        VOX_CHECK_CLOSE(values(params[i]), values(f.at("final" + std::to_string(i))), 1e-12, 1e-12, c.name << " parameter " << i);
    }
  }
}

TEST_CASE("optimizers refuse parameters they cannot update") {
  Tensor not_leaf = mul(ones({2}).set_requires_grad(), scalar(2.0));
  CHECK_THROWS_WITH_AS(optim::SGD({not_leaf}, {}), Contains("must be a leaf"), Error);
  Tensor p = ones({2});
  p.set_requires_grad();
  CHECK_THROWS_WITH_AS(optim::SGD({p}, {.momentum = 0, .nesterov = true}), Contains("Nesterov"), Error);
  CHECK_THROWS_WITH_AS(optim::Adam({p}, {.beta1 = 1.0}), Contains("betas"), Error);
}

TEST_CASE("Dice, DiceCE and focal losses match MONAI's, forward and gradient") {
  using namespace vox::losses;
  const Tensor weight = from_vector<double>({0.5, 1.0, 2.0, 1.5}, {4});
  struct Case {
    std::string name;
    std::function<Tensor(const Tensor&, const Tensor&)> loss;
    double rtol;  // MONAI's focal loss computes in f32 whatever its input
  };
  const std::vector<Case> cases{
      {"loss_dice_softmax", [](auto& x, auto& t) { return dice_loss(x, t, {.activation = Activation::softmax}); }, 1e-10},
      {"loss_dice_sigmoid_nobg_batch_squared",
       [](auto& x, auto& t) {
         return dice_loss(x, t, {.include_background = false, .activation = Activation::sigmoid, .squared_pred = true, .batch = true});
       },
       1e-10},
      {"loss_dice_jaccard_none",
       [](auto& x, auto& t) { return dice_loss(x, t, {.activation = Activation::softmax, .jaccard = true, .reduction = Reduction::none}); },
       1e-10},
      {"loss_dice_ce",
       [&](auto& x, auto& t) {
         return dice_ce_loss(x, t, {.dice = {.activation = Activation::softmax}, .ce_weight = weight, .lambda_dice = 0.7});
       },
       1e-10},
      {"loss_focal_sigmoid", [](auto& x, auto& t) { return focal_loss(x, t); }, 1e-5},
      {"loss_focal_softmax_alpha", [](auto& x, auto& t) { return focal_loss(x, t, {.gamma = 1.5, .alpha = 0.25, .use_softmax = true}); }, 1e-5},
      {"loss_focal_softmax_nobg", [](auto& x, auto& t) { return focal_loss(x, t, {.include_background = false, .use_softmax = true}); }, 1e-5},
      {"loss_focal_weight_sum",
       [](auto& x, auto& t) { return focal_loss(x, t, {.alpha = 0.3, .weight = {0.5, 1.0, 2.0, 1.5}, .reduction = Reduction::sum}); },
       1e-5},
  };
  for (const Case& c : cases) {
    SUBCASE(c.name.c_str()) {
      const io::Safetensors f = model_fixture(c.name);
      Tensor x = f.at("x").clone();
      x.set_requires_grad();
      const Tensor out = c.loss(from_channels_first(x), f.at("labels"));
      VOX_CHECK_CLOSE(values(out), values(f.at("out")), c.rtol * 1e-2, c.rtol, c.name << " value");
      sum(out).backward();
      VOX_CHECK_CLOSE(values(x.grad()), values(f.at("grad_x")), c.rtol * 1e-2, c.rtol * 10, c.name << " gradient");
    }
  }
  CHECK_THROWS_WITH_AS(focal_loss(randn({2, 3}), zeros({2}, DType::i64), {.include_background = false, .alpha = 0.25, .use_softmax = true}),
                       Contains("alpha with use_softmax"), Error);
}

TEST_CASE("deep supervision weights halve per level and sum to one; clipping matches torch's rule") {
  using namespace vox::losses;
  const std::vector<Tensor> outputs{full({1}, 1.0), full({1}, 10.0), full({1}, 100.0)};
  const Tensor total = deep_supervision_loss(outputs, {zeros({1}), zeros({1}), zeros({1})},
                                             [](const Tensor& o, const Tensor&) { return sum(o); });
  CHECK(total.item<float>() == doctest::Approx((1.0 + 10.0 / 2 + 100.0 / 4) / 1.75));
  Tensor a = zeros({2}), b = zeros({1});
  a.set_requires_grad();
  b.set_requires_grad();
  a.set_grad(from_vector<float>({3, 0}, {2}));
  b.set_grad(from_vector<float>({4}, {1}));
  CHECK(optim::clip_grad_norm({a, b}, 1.0) == doctest::Approx(5.0));
  CHECK(values(a.grad())[0] == doctest::Approx(3.0 / (5.0 + 1e-6)));
  CHECK(values(b.grad())[0] == doctest::Approx(4.0 / (5.0 + 1e-6)));
  CHECK(optim::clip_grad_norm({a, b}, 10.0) == doctest::Approx(1.0).epsilon(1e-5));  // under the limit: unchanged
  CHECK(values(b.grad())[0] == doctest::Approx(4.0 / (5.0 + 1e-6)));
}

TEST_CASE("clipping on the gradients' device (no host read) matches clip_grad_norm for every norm type") {
  for (double norm_type : {2.0, 1.0, 3.0, std::numeric_limits<double>::infinity()})
    for (double max_norm : {0.5, 1e6}) {
      std::vector<Tensor> host, device;
      for (const Shape& shape : {Shape{3, 4}, Shape{5}, Shape{2, 1, 3}}) {
        const Tensor g = randn(shape);
        host.push_back(zeros(shape).set_requires_grad());
        device.push_back(zeros(shape).set_requires_grad());
        host.back().set_grad(g.clone());
        device.back().set_grad(g.clone());
      }
      device.push_back(zeros({2}).set_requires_grad());  // no gradient: skipped by both
      const double expected = optim::clip_grad_norm(host, max_norm, norm_type);
      const Tensor norm = optim::clip_grad_norm_on_device(device, max_norm, norm_type);
      CHECK(norm.dtype() == DType::f64);
      CHECK(norm.item<double>() == doctest::Approx(expected).epsilon(1e-12));
      for (size_t i = 0; i < host.size(); ++i)
        VOX_CHECK_CLOSE(values(device[i].grad()), values(host[i].grad()), 1e-7, 1e-6, "norm " << norm_type << ", max " << max_norm);
      CHECK_FALSE(device.back().grad().defined());
    }
  CHECK_FALSE(optim::clip_grad_norm_on_device({zeros({2}).set_requires_grad()}, 1.0).defined());
}

TEST_CASE("gradient accumulation over two half-batches equals one full batch") {
  nn::Conv<3> layer(1, 2, {3}, {.padding = {1}});
  const Tensor x = randn({4, 5, 5, 5, 1});
  const Tensor t = randint(0, 2, {4, 5, 5, 5});
  cross_entropy(layer.forward(x), t).backward();
  const auto full_batch = values(layer.weight().grad());
  layer.zero_grad();
  for (int half = 0; half < 2; ++half)
    mul(cross_entropy(layer.forward(x.slice(0, 2 * half, 2 * half + 2)), t.slice(0, 2 * half, 2 * half + 2)), scalar(0.5)).backward();
  VOX_CHECK_CLOSE(values(layer.weight().grad()), full_batch, 1e-6, 1e-5, "accumulated gradient");
}

TEST_CASE("GroupNorm, LayerNorm, Residual and SkipConcat modules") {
  nn::GroupNorm gn(2, 6);
  CHECK(gn.named_parameters().size() == 2);
  const Tensor x = randn({2, 3, 4, 6});
  VOX_CHECK_CLOSE(values(gn.forward(x)), values(group_norm(x, 2, ones({6}), zeros({6}))), 0.0, 0.0, "group norm module");
  nn::LayerNorm ln(Shape{4, 6});
  CHECK(ln.state_dict().at("weight").shape() == Shape{4, 6});
  VOX_CHECK_CLOSE(values(ln.forward(x)), values(layer_norm(x, 2)), 1e-6, 1e-6, "layer norm module");

  nn::Residual<nn::Conv<3>, nn::PReLU> res(nn::Conv<3>(3, 3, {3}, {.padding = {1}}), nn::PReLU());
  CHECK(res.named_parameters()[0].name == "body.0.weight");
  const Tensor v = randn({1, 4, 4, 4, 3});
  VOX_CHECK_CLOSE(values(res.forward(v)), values(add(v, res.body().forward(v))), 0.0, 0.0, "residual");
  nn::Residual<nn::Conv<3>> widening(nn::Conv<3>(3, 5, {1}));
  CHECK_THROWS_WITH_AS(widening.forward(v), Contains("identity residual"), Error);

  nn::SkipConcat<nn::Conv<3>> skip(nn::Conv<3>(3, 2, {1}));
  CHECK(skip.named_parameters()[0].name == "submodule.0.weight");
  CHECK(skip.forward(v).shape() == Shape{1, 4, 4, 4, 5});
}
