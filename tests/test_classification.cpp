// Whole-volume classification: the built-in shapes task (seeded, equal volumes so that only shape
// tells the classes apart), classification datasets on disk and their errors, the volume loader's
// determinism, the macro ROC AUC, and every named architecture building and running.
#include <filesystem>
#include <fstream>
#include <numbers>
#include <numeric>

#include <vox/data/classification.hpp>
#include <vox/nn/models/registry.hpp>
#include <vox/train/metrics.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::data;
using namespace vox::testing;
using doctest::Contains;
namespace fs = std::filesystem;

TEST_CASE("synthetic shapes are seeded, of one volume whatever the class, and differ in shape") {
  const ShapeOptions o{.size = {30, 32, 34}, .classes = 3, .min_radius = 5, .max_radius = 5, .noise = 0};
  Random a(4), b(4);
  CHECK(values(synthetic_shape(1, o, a).voxels) == values(synthetic_shape(1, o, b).voxels));
  // With no noise, the solid is where the image departs from the smooth background by about the
  // contrast; equal radii give equal volumes (within the voxelisation of a turned solid).
  std::vector<int64_t> inside;
  for (int64_t shape = 0; shape < 3; ++shape) {
    Random rng(11);
    const io::Image im = synthetic_shape(shape, o, rng);
    CHECK(im.voxels.shape() == Shape{34, 32, 30});
    const auto v = values(im.voxels);
    int64_t n = 0;
    const double mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
    for (double x : v) n += std::abs(x - mean) > 0.3;  // contrast >= 0.6; the background's std is about 0.03
    inside.push_back(n);
  }
  const double sphere = 4.0 / 3.0 * std::numbers::pi * 125;
  for (int64_t n : inside) CHECK(double(n) == doctest::Approx(sphere).epsilon(0.25));
  CHECK_THROWS_WITH_AS(synthetic_shape(2, {.classes = 2}, a), Contains("shape 2 is not below classes 2"), Error);
  CHECK_THROWS_WITH_AS(synthetic_shape(0, {.size = {16, 16, 16}}, a), Contains("must exceed"), Error);
}

TEST_CASE("a classification dataset round-trips through dataset.json; bad classes are refused") {
  const std::string root = fresh_dir("shapes");
  write_synthetic_shapes_dataset(root, 6, 2, {.size = {32, 32, 32}}, 3);
  const MsdDataset d = load_msd_dataset(root);
  CHECK(d.classification());
  CHECK(d.label_names == std::vector<std::string>{"sphere", "cube"});
  REQUIRE(d.training.size() == 6);
  REQUIRE(d.test.size() == 2);
  for (size_t n = 0; n < 6; ++n) {
    CHECK(d.training[n].class_index == static_cast<int64_t>(n % 2));
    CHECK(d.training[n].label.empty());
  }
  CHECK(d.test[1].class_index == 1);
  const io::Image v = prepare_volume(io::read_nifti(d.training[0].image).image, {16, 12, 8});
  CHECK(v.voxels.shape() == Shape{8, 12, 16, 1});
  const auto x = values(v.voxels);
  CHECK(std::accumulate(x.begin(), x.end(), 0.0) / double(x.size()) == doctest::Approx(0).epsilon(0.2));

  const std::string broken = fresh_dir("shapes_broken");
  fs::copy(root + "/imagesTr", broken + "/imagesTr");
  std::ofstream(broken + "/dataset.json") << R"({"modality": {"0": "CT"}, "labels": {"0": "a", "1": "b"},
      "training": [{"image": "./imagesTr/shape_000.nii.gz", "label": 2}]})";
  CHECK_THROWS_WITH_AS(load_msd_dataset(broken), Contains("shape_000 has class 2 but \"labels\" names 2 classes"), Error);
  std::ofstream(broken + "/dataset.json") << R"({"modality": {"0": "CT"}, "labels": {"0": "a", "1": "b"},
      "training": [{"image": "./imagesTr/shape_000.nii.gz", "label": 1},
                   {"image": "./imagesTr/shape_001.nii.gz", "label": "./imagesTr/shape_002.nii.gz"}]})";
  CHECK_THROWS_WITH_AS(load_msd_dataset(broken), Contains("mix label maps and class numbers"), Error);
}

TEST_CASE("the volume loader gives the same batches for any thread count, with each volume's class") {
  Random rng(5);
  std::vector<io::Image> volumes;
  std::vector<int64_t> classes;
  for (int64_t n = 0; n < 4; ++n) {
    volumes.push_back(prepare_volume(synthetic_shape(n % 2, {.size = {24, 24, 24}, .min_radius = 3, .max_radius = 4}, rng), {24, 24, 24}));
    classes.push_back(n % 2);
  }
  VolumeLoaderOptions o{.batch_size = 5, .seed = 9, .threads = 1};
  const VolumeLoader one(volumes, classes, o);
  o.threads = 3;
  const VolumeLoader three(volumes, classes, o);
  const Batch a = one.batch(1, 2), b = three.batch(1, 2);
  CHECK(a.image.shape() == Shape{5, 24, 24, 24, 1});
  CHECK(a.label.shape() == Shape{5});
  CHECK(values(a.image) == values(b.image));
  CHECK(values(a.label) == values(b.label));
  CHECK(values(one.batch(1, 3).image) != values(a.image));
  // without augmentation each item is one of the volumes, with that volume's class
  o.augment = false;
  const VolumeLoader plain(volumes, classes, o);
  const Batch p = plain.batch(0, 0);
  const auto image = values(p.image), label = values(p.label);
  const int64_t per = 24 * 24 * 24;
  for (int64_t item = 0; item < 5; ++item) {
    bool found = false;
    for (size_t n = 0; n < volumes.size(); ++n) {
      const auto v = values(volumes[n].voxels);
      if (std::equal(v.begin(), v.end(), image.begin() + item * per)) found = found || classes[n] == static_cast<int64_t>(label[static_cast<size_t>(item)]);
    }
    CHECK(found);
  }
  volumes[1] = prepare_volume(volumes[1], {16, 24, 24});
  CHECK_THROWS_WITH_AS(VolumeLoader(volumes, classes, o), Contains("resize them to one input size"), Error);
}

TEST_CASE("ROC AUC of class probabilities: the second class's score for two, the macro mean for more") {
  // two classes: the AUC of p[:, 1]
  const Tensor two = from_vector<float>({0.9f, 0.1f, 0.4f, 0.6f, 0.3f, 0.7f, 0.8f, 0.2f}, {4, 2});
  const std::vector<int64_t> truth2{0, 1, 0, 1};
  CHECK(metrics::roc_auc_of_probabilities(two, truth2) == doctest::Approx(metrics::roc_auc({0.1, 0.6, 0.7, 0.2}, truth2)));
  CHECK(metrics::roc_auc_of_probabilities(two, truth2) == doctest::Approx(0.5));
  // three classes: each class against the rest, averaged without weights (scikit-learn's
  // multi_class="ovr", average="macro"). By hand, counting positive-over-negative pairs (ties 1/2):
  //   class 0: positives {.8, .6} over negatives {.1, .5, .3}: 6/6 = 1
  //   class 1: positives {.5, .2} over negatives {.1, .3, .2}: (3 + 1 + 0 + 1/2)/6 = 0.75
  //   class 2: positive {.3} over negatives {.1, .1, .4, .5}: 2/4 = 0.5
  // macro mean 0.75; weighting by support (2, 2, 1) would give 0.8, and a micro average 0.79.
  const Tensor three = from_vector<double>({0.8, 0.1, 0.1,  //
                                            0.6, 0.3, 0.1,  //
                                            0.1, 0.5, 0.4,  //
                                            0.5, 0.2, 0.3,  //
                                            0.3, 0.2, 0.5},
                                           {5, 3});
  const std::vector<int64_t> truth3{0, 0, 1, 2, 1};
  CHECK(metrics::roc_auc({0.8, 0.6, 0.1, 0.5, 0.3}, {1, 1, 0, 0, 0}) == doctest::Approx(1.0));
  CHECK(metrics::roc_auc({0.1, 0.3, 0.5, 0.2, 0.2}, {0, 0, 1, 0, 1}) == doctest::Approx(0.75));
  CHECK(metrics::roc_auc({0.1, 0.1, 0.4, 0.3, 0.5}, {0, 0, 0, 1, 0}) == doctest::Approx(0.5));
  CHECK(metrics::roc_auc_of_probabilities(three, truth3) == doctest::Approx(0.75));
  // a class absent from the truth is left out of the mean
  const std::vector<int64_t> no_two{0, 0, 1, 1, 1};
  const double b0 = metrics::roc_auc({0.8, 0.6, 0.1, 0.5, 0.3}, {1, 1, 0, 0, 0}), b1 = metrics::roc_auc({0.1, 0.3, 0.5, 0.2, 0.2}, {0, 0, 1, 1, 1});
  CHECK(metrics::roc_auc_of_probabilities(three, no_two) == doctest::Approx((b0 + b1) / 2));
  CHECK(std::isnan(metrics::roc_auc_of_probabilities(two, {1, 1, 1, 1})));
}

TEST_CASE("every named architecture builds and maps its input to the logits its task needs") {
  using namespace vox::nn::models;
  for (const std::string& arch : architecture_names()) {
    CAPTURE(arch);
    const bool classify = task_of(arch) == Task::classify;
    const std::vector<int64_t> channels = classify ? std::vector<int64_t>{4, 4, 8, 8} : std::vector<int64_t>{4, 8, 8};
    AnyModel m = make_model({.arch = arch, .in_channels = 2, .classes = 3, .channels = channels});
    CHECK(m.channels == channels);
    CHECK(m.module->parameter_count() > 0);
    const int64_t s = std::max<int64_t>(m.size_multiple, 8);
    m.module->eval();
    NoGradGuard no_grad;
    const Tensor y = m.forward(randn({1, s, s, s, 2}));
    CHECK(y.shape() == (classify ? Shape{1, 3} : Shape{1, s, s, s, 3}));
  }
  CHECK(make_model({.arch = "resnet3d-18", .classes = 2}).channels == std::vector<int64_t>{64, 128, 256, 512});
  CHECK_THROWS_WITH_AS(make_model({.arch = "vgg"}), Contains("unknown architecture \"vgg\"; choose one of monai-unet"), Error);
  CHECK_THROWS_WITH_AS(make_model({.arch = "resnet3d-19"}), Contains("no ResNet of depth 19"), Error);
  CHECK_THROWS_WITH_AS(make_model({.arch = "resnet3d-18", .channels = {8, 16}}), Contains("takes 4 channel widths"), Error);
}
