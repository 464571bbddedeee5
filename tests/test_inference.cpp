// Sliding-window inference against MONAI 1.2.0's sliding_window_inference on the same volume and
// predictor (tests/data/make_transform_fixtures.py): Gaussian and constant blending, overlaps,
// several windows per call, an image smaller than the patch. The slab-by-slab argmax equals the
// argmax of the full result with far less memory; mirroring averages flipped predictions.
#include <cstdlib>

#include <vox/ops/reduce.hpp>
#include <vox/train/inference.hpp>

#include "transform_fixtures.hpp"

using namespace vox;
using namespace vox::testing;
using doctest::Contains;

namespace {
// MONAI's test predictor in channels-last form: [w * mean(w), 1 - w^2], mean per window.
Tensor predictor(const Tensor& w) {
  const Tensor mean = vox::mean(w, {1, 2, 3, 4}, true);
  return concat({mul(w, mean), sub(scalar(1.0), mul(w, w))}, 4);
}
}  // namespace

TEST_CASE("sliding-window logits equal MONAI's sliding_window_inference") {
  const TransformFixtures f;
  const io::Safetensors& t = f.tensors;
  const json::Value& cases = f.cases;
  const Tensor image = t.at("window.image").to(DType::f32).unsqueeze(-1);  // [13, 17, 21, 1]
  const auto& list = cases.find("window")->as_array();
  REQUIRE(list.size() == 3);
  for (size_t n = 0; n < list.size(); ++n) {
    const auto& p = list[n].find("patch")->as_array();
    inference::SlidingWindowOptions o;
    o.patch = {p[0].as_int64(), p[1].as_int64(), p[2].as_int64()};
    o.overlap = list[n].find("overlap")->as_double();
    o.gaussian = list[n].find("gaussian")->as_bool();
    o.batch = list[n].find("batch")->as_int64();
    INFO("case " << n);
    const Tensor got = inference::sliding_window_logits(image, predictor, o);
    const Tensor& want = t.at("window." + std::to_string(n));
    REQUIRE(got.shape() == want.shape());
    VOX_CHECK_CLOSE(values(got), values(want), 1e-5, 1e-5, "sliding window");
    // the slab-by-slab argmax is the argmax of the whole
    const inference::LabelResult labels = inference::sliding_window_labels(image, predictor, o);
    CHECK(values(labels.labels) == values(argmax(got, -1)));
  }
}

TEST_CASE("slab accumulation holds a patch's depth of slices, not the volume") {
  const Tensor image = rand({40, 12, 12, 1});
  inference::SlidingWindowOptions o{.patch = {8, 8, 8}, .overlap = 0.5};
  const inference::LabelResult r = inference::sliding_window_labels(image, predictor, o);
  // 8 slices of 12 x 12, 2 classes and a weight each, f32
  CHECK(r.accumulator_peak_bytes == 8 * 12 * 12 * 3 * 4);
  CHECK(r.labels.shape() == Shape{40, 12, 12});
  CHECK(values(r.labels) == values(argmax(inference::sliding_window_logits(image, predictor, o), -1)));
  int calls = 0, last_done = 0, total = 0;
  o.progress = [&](int64_t done, int64_t all) { ++calls, last_done = static_cast<int>(done), total = static_cast<int>(all); };
  inference::sliding_window_labels(image, predictor, o);
  CHECK(calls == total);
  CHECK(last_done == total);
  CHECK(total == 9 * 2 * 2);  // k: 0, 4, ..., 32; i and j: 0, 4
}

TEST_CASE("mirroring averages the flipped-back predictions") {
  const Tensor image = rand({9, 10, 11, 1});
  // a predictor that is not flip-equivariant: a ramp along i added to the input
  const Tensor ramp = arange(11, DType::f32).reshape({1, 1, 1, 11, 1});
  const inference::Predictor skewed = [&](const Tensor& w) {
    return concat({add(w, div(ramp.slice(3, 0, w.size(3)), scalar(10.0))), neg(w)}, 4);
  };
  inference::SlidingWindowOptions o{.patch = {11, 10, 9}, .overlap = 0.0};
  const Tensor plain = inference::sliding_window_logits(image, skewed, o);
  o.mirrors = {{true, false, false}};
  const Tensor mirrored = inference::sliding_window_logits(image, skewed, o);
  // with one window: (f(x) + flip(f(flip x))) / 2 = x + (ramp + reversed ramp) / 20 = x + 0.5 in channel 0
  const auto got = values(mirrored), in = values(image);
  for (size_t v = 0; v < in.size(); ++v) REQUIRE(got[2 * v] == doctest::Approx(in[v] + 0.5).epsilon(1e-6));
  CHECK(values(plain) != values(mirrored));
  CHECK(inference::all_mirrors().size() == 7);
  CHECK_THROWS_WITH_AS(inference::sliding_window_logits(rand({4, 4, 4}), skewed, o), Contains("must be [D, H, W, C]"), Error);
}
