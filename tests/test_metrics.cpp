// Metrics against MONAI 1.2.0 on the same label maps (tests/data/make_transform_fixtures.py):
// Dice per class, Hausdorff distance (95th percentile and maximum, undirected and directed) and
// average surface distance (one-way and symmetric) with anisotropic spacing; the empty-mask
// policy; classification accuracy, confusion matrix and ROC AUC on hand-checked cases.
#include <cmath>
#include <cstdlib>

#include <vox/train/metrics.hpp>
#include <vox/train/postprocess.hpp>

#include "transform_fixtures.hpp"

using namespace vox;
using namespace vox::testing;
using doctest::Contains;

namespace {
std::vector<double> doubles(const json::Value& v) {
  std::vector<double> out;
  for (const json::Value& x : v.as_array()) out.push_back(x.as_double());
  return out;
}
}  // namespace

TEST_CASE("Dice, Hausdorff and surface distances equal MONAI's, in mm on an anisotropic grid") {
  const TransformFixtures f;
  const io::Safetensors& t = f.tensors;
  const json::Value& cases = f.cases;
  const json::Value& m = *cases.find("metrics");
  const Tensor truth = t.at("metrics.truth").to(DType::i64), pred = t.at("metrics.pred").to(DType::i64);
  const std::vector<double> sp = doubles(*m.find("spacing"));
  const std::array<double, 3> spacing{sp[0], sp[1], sp[2]};
  // MONAI computes in f32 and omits the background in distances
  auto check = [&](const std::vector<double>& got, const std::vector<double>& want, size_t skip, const char* what) {
    REQUIRE(got.size() == want.size() + skip);
    for (size_t c = 0; c < want.size(); ++c) {
      INFO(what << " class " << c + skip);
      CHECK(got[c + skip] == doctest::Approx(want[c]).epsilon(1e-6));
    }
  };
  check(metrics::dice_per_class(pred, truth, 3), doubles(*m.find("dice")), 0, "dice");
  check(metrics::hausdorff_distance(pred, truth, 3, spacing, 95), doubles(*m.find("hd95")), 1, "hd95");
  check(metrics::hausdorff_distance(pred, truth, 3, spacing, 100), doubles(*m.find("hd")), 1, "hd");
  check(metrics::hausdorff_distance(pred, truth, 3, spacing, 95, true), doubles(*m.find("hd95_directed")), 1, "hd95 directed");
  check(metrics::average_surface_distance(pred, truth, 3, spacing), doubles(*m.find("asd")), 1, "asd");
  check(metrics::average_surface_distance(pred, truth, 3, spacing, true), doubles(*m.find("asd_symmetric")), 1, "asd symmetric");
  const auto iou = metrics::iou_per_class(pred, truth, 3), dice = metrics::dice_per_class(pred, truth, 3);
  for (size_t c = 0; c < 3; ++c) CHECK(iou[c] == doctest::Approx(dice[c] / (2 - dice[c])));
}

TEST_CASE("empty classes: NaN when the truth lacks them, infinity when one side has no surface") {
  Tensor truth = zeros({6, 6, 6}, DType::i64), pred = zeros({6, 6, 6}, DType::i64);
  truth.data<int64_t>()[(3 * 6 + 3) * 6 + 3] = 1;  // class 1 only in the truth; class 2 nowhere
  const auto dice = metrics::dice_per_class(pred, truth, 3);
  CHECK(dice[1] == 0.0);
  CHECK(std::isnan(dice[2]));
  const auto hd = metrics::hausdorff_distance(pred, truth, 3);
  CHECK(std::isinf(hd[1]));  // predicted nothing where the truth has class 1
  CHECK(std::isnan(hd[2]));  // neither has class 2
  CHECK(std::isnan(hd[0]));  // background is not a surface class
  CHECK(std::isinf(metrics::average_surface_distance(pred, truth, 3)[1]));
  CHECK(metrics::mean_ignoring_nan({0.5, std::nan(""), 1.0}) == 0.75);
  // identical masks: zero distances, Dice 1
  CHECK(metrics::hausdorff_distance(truth, truth, 2)[1] == 0.0);
  CHECK(metrics::dice_per_class(truth, truth, 2)[1] == 1.0);
  CHECK_THROWS_WITH_AS(metrics::dice_per_class(pred, full({6, 6, 6}, 5, DType::i64), 3), Contains("not one of the 3 classes"), Error);
  CHECK_THROWS_WITH_AS(metrics::dice_per_class(pred, zeros({6, 6, 5}, DType::i64), 3), Contains("differ in shape"), Error);
}

TEST_CASE("classification: accuracy, confusion matrix, ROC AUC with ties") {
  const Tensor truth = from_vector<int64_t>({0, 1, 1, 0, 2, 2}, {6}), pred = from_vector<int64_t>({0, 1, 0, 0, 2, 1}, {6});
  CHECK(metrics::accuracy(pred, truth) == doctest::Approx(4.0 / 6));
  const auto cm = metrics::confusion_matrix(pred, truth, 3);
  CHECK(cm[0] == std::vector<int64_t>{2, 0, 0});
  CHECK(cm[1] == std::vector<int64_t>{1, 1, 0});
  CHECK(cm[2] == std::vector<int64_t>{0, 1, 1});
  // negatives 0.1 and 0.4, positives 0.35, 0.8, 0.4, 0.9: of the 8 pairs, 6 rank the positive
  // higher and one ties (counted half): 6.5 / 8
  CHECK(metrics::roc_auc({0.1, 0.4, 0.35, 0.8, 0.4, 0.9}, {0, 0, 1, 1, 1, 1}) == doctest::Approx(6.5 / 8));
  CHECK(metrics::roc_auc({0.1, 0.2, 0.3, 0.4}, {0, 0, 1, 1}) == 1.0);
  CHECK_THROWS_WITH_AS(metrics::roc_auc({0.1, 0.2}, {1, 1}), Contains("both positive and negative"), Error);
}

TEST_CASE("post-processing: the largest component per class, small objects removed, connectivity honoured") {
  Tensor labels = zeros({4, 5, 6}, DType::u8);
  uint8_t* l = labels.data<uint8_t>();
  auto at = [&](int k, int j, int i) -> uint8_t& { return l[(k * 5 + j) * 6 + i]; };
  for (int k = 0; k < 2; ++k)
    for (int j = 0; j < 2; ++j)
      for (int i = 0; i < 2; ++i) at(k, j, i) = 1;  // class 1: a 2x2x2 cube (8 voxels)
  at(2, 2, 2) = 1;                                   // touches the cube only at a corner
  at(3, 4, 5) = 1;                                   // alone
  at(3, 0, 5) = 2, at(3, 1, 5) = 2;                  // class 2: one component of 2
  const auto count = [](const Tensor& t, double value) {
    const auto v = values(t);
    return std::count(v.begin(), v.end(), value);
  };
  const Tensor largest26 = postprocess::keep_largest_component(labels);
  CHECK(count(largest26, 1) == 9);  // the corner voxel joins the cube with 26-connectivity
  CHECK(count(largest26, 2) == 2);
  CHECK(largest26.dtype() == DType::u8);
  const Tensor largest6 = postprocess::keep_largest_component(labels, 6);
  CHECK(count(largest6, 1) == 8);
  CHECK(values(largest6)[(3 * 5 + 4) * 6 + 5] == 0);
  const Tensor big = postprocess::remove_small_objects(labels, 2, 6);
  CHECK(count(big, 1) == 8);
  CHECK(count(big, 2) == 2);
  CHECK_THROWS_WITH_AS(postprocess::keep_largest_component(labels, 18), Contains("connectivity must be 6 or 26"), Error);
}
