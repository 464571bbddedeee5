#pragma once
// Shared by the model parity tests (test_nn, test_models): fixtures made at test time by
// tests/parity/make_model_fixtures.py, and the comparisons of whole tensors and of every
// parameter gradient against the original's.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <string>

#include <vox/io/safetensors.hpp>
#include <vox/nn/module.hpp>

#include "harness.hpp"

namespace vox::testing {

inline io::Safetensors model_fixture(const std::string& name) {
  const char* dir = std::getenv("VOX_MODEL_PARITY_DIR");
  return io::load_safetensors(std::string(dir ? dir : "parity-models") + "/" + name + ".safetensors");
}

// The fixture's "state.<key>" tensors, keyed by <key>: the original's state_dict.
inline std::map<std::string, Tensor> fixture_state(const io::Safetensors& f) {
  std::map<std::string, Tensor> state;
  for (const auto& [key, t] : f.tensors)
    if (key.rfind("state.", 0) == 0) state[key.substr(6)] = t;
  return state;
}

inline double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : values(t)) m = std::max(m, std::abs(v));
  return m;
}

// Max |got - want| relative to max |want|, over a whole tensor.
inline double relative_max_error(const Tensor& got, const Tensor& want) {
  const auto g = values(got), w = values(want);
  REQUIRE(g.size() == w.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    diff = std::max(diff, std::abs(g[i] - w[i]));
    scale = std::max(scale, std::abs(w[i]));
  }
  return diff / std::max(scale, 1e-30);
}

// Every parameter's gradient against the fixture's "grad.<name>", within `tol` of its largest
// element. A conv bias right before a norm that removes per-channel constants has an exactly
// zero gradient, where both sides hold rounding noise; such vanishing gradients (below 1e-6 of
// the largest of all) must vanish in vox too.
inline void check_gradients(const nn::Module& net, const io::Safetensors& f, double tol, const std::string& label) {
  double largest = 0;
  for (const auto& p : net.named_parameters()) largest = std::max(largest, max_abs(f.at("grad." + p.name)));
  for (const auto& p : net.named_parameters()) {
    Tensor g = p.tensor->grad();
    REQUIRE_MESSAGE(g.defined(), label << " " << p.name << " has no gradient");
    if (p.layout == nn::TorchLayout::channels_first) g = to_channels_first(g);
    const Tensor& want = f.at("grad." + p.name);
    if (max_abs(want) < 1e-6 * largest) {
      INFO(label << " " << p.name << ": the original's gradient vanishes (" << max_abs(want) << "), vox's is " << max_abs(g));
      CHECK(max_abs(g) < 1e-6 * largest);
      continue;
    }
    const double err = relative_max_error(g, want);
    INFO(label << " " << p.name << " gradient: max error " << err << " of the largest element");
    CHECK(err < tol);
  }
}

}  // namespace vox::testing
