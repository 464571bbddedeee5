// Learning-rate schedules against torch.optim.lr_scheduler (tests/train/make_scheduler_fixtures.py,
// Debian's torch at test time): the rate after each epoch's step() is the rate vox computes for
// the next epoch. ReduceLROnPlateau's state round-trips for resume.
#include <cstdlib>

#include <vox/io/file.hpp>
#include <vox/io/json.hpp>
#include <vox/train/schedulers.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::train;
using doctest::Contains;

namespace {
std::vector<double> doubles(const json::Value& doc, const char* key) {
  std::vector<double> out;
  for (const json::Value& x : doc.find(key)->as_array()) out.push_back(x.as_double());
  return out;
}
json::Value fixtures() {
  const std::vector<char> bytes = io::read_file(testing::fixture_dir("VOX_SCHEDULER_DIR", "schedulers") + "/schedulers.json");
  return json::parse(std::string(bytes.begin(), bytes.end()));
}
}  // namespace

TEST_CASE("poly, step and cosine schedules equal torch's PolynomialLR, StepLR and CosineAnnealingLR") {
  const json::Value f = fixtures();
  const auto poly = doubles(f, "poly"), step = doubles(f, "step"), cosine = doubles(f, "cosine");
  for (size_t e = 0; e < poly.size(); ++e) CHECK(poly_lr(0.1, int64_t(e) + 1, 20, 0.9) == doctest::Approx(poly[e]).epsilon(1e-12));
  for (size_t e = 0; e < step.size(); ++e) CHECK(step_lr(0.1, int64_t(e) + 1, 7, 0.3) == doctest::Approx(step[e]).epsilon(1e-12));
  // torch updates the cosine recursively; its closed form agrees to rounding
  for (size_t e = 0; e < cosine.size(); ++e) CHECK(cosine_lr(0.1, int64_t(e) + 1, 15, 1e-4) == doctest::Approx(cosine[e]).epsilon(1e-9));
  // warm-up: linear from the start value to the base
  CHECK(cosine_lr(0.1, 0, 20, 0, 4, 0.02) == doctest::Approx(0.02));
  CHECK(cosine_lr(0.1, 2, 20, 0, 4, 0.02) == doctest::Approx(0.06));
  CHECK(cosine_lr(0.1, 4, 20, 0, 4, 0.02) == doctest::Approx(0.1));
  CHECK(cosine_lr(0.1, 20, 20, 0, 4, 0.02) == doctest::Approx(0.0).scale(1));
  CHECK_THROWS_WITH_AS(cosine_lr(0.1, 1, 4, 0, 4), Contains("must exceed warmup"), Error);
}

TEST_CASE("ReduceLROnPlateau equals torch's in both modes, and resumes from its state") {
  const json::Value f = fixtures();
  const auto metrics = doubles(f, "metrics"), min_rel = doubles(f, "plateau_min_rel"), max_abs = doubles(f, "plateau_max_abs");
  ReduceLROnPlateau a(0.1, {.factor = 0.5, .patience = 2, .cooldown = 1, .min_lr = 0.01});
  ReduceLROnPlateau b(0.1, {.maximize = true, .factor = 0.3, .patience = 1, .threshold = 0.01, .relative = false});
  for (size_t e = 0; e < metrics.size(); ++e) {
    INFO("epoch " << e);
    CHECK(a.step(metrics[e]) == doctest::Approx(min_rel[e]).epsilon(1e-12));
    CHECK(b.step(metrics[e]) == doctest::Approx(max_abs[e]).epsilon(1e-12));
  }
  // stop half way, restore into a fresh scheduler, continue: the same rates
  ReduceLROnPlateau first(0.1, {.factor = 0.5, .patience = 2, .cooldown = 1, .min_lr = 0.01});
  for (size_t e = 0; e < 15; ++e) first.step(metrics[e]);
  ReduceLROnPlateau resumed(0.1, {.factor = 0.5, .patience = 2, .cooldown = 1, .min_lr = 0.01});
  resumed.load_state(first.state());
  for (size_t e = 15; e < metrics.size(); ++e) CHECK(resumed.step(metrics[e]) == doctest::Approx(min_rel[e]).epsilon(1e-12));
}
