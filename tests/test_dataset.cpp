// Built-in data, datasets on disk, the preprocessing cache and the patch loader: the synthetic
// dataset round-trips through the MSD layout, nnU-Net v2 folders load too, bad datasets are
// refused with errors that name the file, the cache is used when nothing changed, and the loader
// gives the same batches for any thread count, with nnU-Net's share of foreground patches.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <vox/data/dataset.hpp>
#include <vox/data/synthetic.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::data;
using namespace vox::testing;
using doctest::Contains;
namespace fs = std::filesystem;

namespace {
const SphereOptions small{.size = {24, 20, 16}, .spacing = {1.5, 1.5, 2.0}, .classes = 3, .spheres_per_class = 1};
}  // namespace

TEST_CASE("synthetic spheres are seeded, labelled and written as an MSD dataset that loads back") {
  Random a(9), b(9);
  const Sample x = synthetic_spheres(small, a), y = synthetic_spheres(small, b);
  CHECK(values(x.image.voxels) == values(y.image.voxels));
  CHECK(values(x.label.voxels) == values(y.label.voxels));
  std::vector<int64_t> count(3, 0);
  for (double v : values(x.label.voxels)) count[static_cast<size_t>(v)]++;
  CHECK(count[1] > 0);
  CHECK(count[2] > 0);
  // class c is brighter than class c - 1 on average
  std::vector<double> sum(3, 0);
  const auto iv = values(x.image.voxels), lv = values(x.label.voxels);
  for (size_t n = 0; n < iv.size(); ++n) sum[static_cast<size_t>(lv[n])] += iv[n];
  CHECK(sum[1] / double(count[1]) > sum[0] / double(count[0]) + 0.5);
  CHECK(sum[2] / double(count[2]) > sum[1] / double(count[1]) + 0.5);

  const std::string root = fresh_dir("msd");
  write_synthetic_dataset(root, 4, 2, small, 11);
  const MsdDataset d = load_msd_dataset(root);
  CHECK(d.name == "vox synthetic spheres");
  CHECK(d.training.size() == 4);
  CHECK(d.test.size() == 2);
  CHECK(d.classes() == 3);
  CHECK(d.label_names[2] == "sphere 2");
  CHECK(d.channels == std::vector<std::string>{"synthetic"});
  const Sample s = preprocess_case(d.training[0], {.normalization = Normalization::none, .crop_to_nonzero = false}, d.classes());
  CHECK(s.image.voxels.shape() == Shape{16, 20, 24, 1});
  CHECK(s.label.voxels.dtype() == DType::u8);
  CHECK(s.image.spacing == std::array<double, 3>{1.5, 1.5, 2.0});
  // the case is the one the seed made
  Random r = Random(11).fork(0);
  CHECK(values(s.label.voxels) == values(synthetic_spheres(small, r).label.voxels));
}

TEST_CASE("create_test_image_3d follows MONAI's recipe") {
  Random rng(3);
  const Sample clean = create_test_image_3d({40, 36, 32}, rng, 6, 10, 3, 0.0, 4);
  const auto image = values(clean.image.voxels), label = values(clean.label.voxels);
  const double top = *std::max_element(label.begin(), label.end());
  REQUIRE(top >= 1);
  // without noise the image is the class map rescaled to [0, 1]
  for (size_t v = 0; v < image.size(); ++v) REQUIRE(image[v] == doctest::Approx(label[v] / top));
  const Sample noisy = create_test_image_3d({40, 36, 32}, rng, 6, 10, 3, 0.25, 4);
  const auto ni = values(noisy.image.voxels);
  CHECK(*std::min_element(ni.begin(), ni.end()) == 0.0);
  CHECK(*std::max_element(ni.begin(), ni.end()) == 1.0);
  CHECK_THROWS_WITH_AS(create_test_image_3d({20, 20, 20}, rng, 3, 10, 3), Contains("larger than 2 * max_radius"), Error);
}

TEST_CASE("the Shepp-Logan phantom has its defining values") {
  const io::Image p = shepp_logan({65, 65, 65});  // a voxel every 1/32 on [-1, 1]
  const auto v = values(p.voxels);
  auto at = [&](int64_t i, int64_t j, int64_t k) { return v[static_cast<size_t>((k * 65 + j) * 65 + i)]; };
  CHECK(at(32, 32, 32) == doctest::Approx(0.2));  // the centre: inside the skull (1) and the brain (-0.8) only
  CHECK(at(0, 0, 0) == 0.0);                      // outside the head
  CHECK(at(32, 3, 32) == doctest::Approx(1.0));   // y = -0.90625: in the skull (b 0.92), not the brain (to -0.8924)
  CHECK(at(32, 2, 32) == 0.0);                    // y = -0.9375: outside
  CHECK(p.spacing[0] == doctest::Approx(2.0 / 64));
}

TEST_CASE("nnU-Net v2 folders load; broken datasets are refused with the file named") {
  const std::string root = fresh_dir("nnunet");
  fs::create_directories(root + "/imagesTr");
  fs::create_directories(root + "/labelsTr");
  Random rng(2);
  for (const char* id : {"case_b", "case_a"}) {
    const Sample s = synthetic_spheres(small, rng);
    io::write_nifti(root + "/imagesTr/" + id + "_0000.nii.gz", s.image);
    io::write_nifti(root + "/labelsTr/" + id + ".nii.gz", s.label);
  }
  std::ofstream(root + "/dataset.json") << R"({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2},
                                               "numTraining": 2, "file_ending": ".nii.gz"})";
  const MsdDataset d = load_msd_dataset(root);
  REQUIRE(d.training.size() == 2);
  CHECK(d.training[0].id == "case_a");
  CHECK(d.label_names == std::vector<std::string>{"background", "a", "b"});

  // the same files as a plain pair of folders
  const MsdDataset folders = load_folder_dataset(root + "/imagesTr", root + "/labelsTr", 3);
  REQUIRE(folders.training.size() == 2);
  CHECK(folders.training[1].id == "case_b");
  CHECK(folders.training[1].label == root + "/labelsTr/case_b.nii.gz");
  CHECK_THROWS_WITH_AS(load_folder_dataset(root + "/labelsTr", root + "/imagesTr", 3), Contains("no image in"), Error);

  // a listed file that is missing
  const std::string broken = fresh_dir("broken");
  std::ofstream(broken + "/dataset.json") << R"({"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "x"},
                                                 "training": [{"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"}]})";
  CHECK_THROWS_WITH_AS(load_msd_dataset(broken), Contains("imagesTr/gone.nii.gz is listed in dataset.json but does not exist"), Error);
  CHECK_THROWS_WITH_AS(load_msd_dataset(fresh_dir("empty")), Contains("has no dataset.json"), Error);
  // labels with a gap, and a label value beyond the class count
  std::ofstream(broken + "/dataset.json") << R"({"modality": {"0": "MRI"}, "labels": {"0": "background", "2": "x"}, "training": []})";
  CHECK_THROWS_WITH_AS(load_msd_dataset(broken), Contains("without gaps"), Error);
  CHECK_THROWS_WITH_AS(preprocess_case(d.training[0], {}, 2), Contains("label value 2"), Error);
  // image and label of different sizes
  io::write_nifti(root + "/labelsTr/case_a.nii.gz", extract_region(preprocess_case(d.training[0], {}, 3).label, {{0, 0, 0}, {5, 5, 5}}));
  CHECK_THROWS_WITH_AS(preprocess_case(d.training[0], {}, 3), Contains("differ in size"), Error);
}

TEST_CASE("the preprocessing cache is read when nothing changed, and recomputed when something did") {
  const std::string root = fresh_dir("cache_data");
  write_synthetic_dataset(root, 2, 0, small, 4);
  const MsdDataset d = load_msd_dataset(root);
  const std::string cache_dir = fresh_dir("cache");
  PreprocessCache cache(cache_dir, {.spacing = {2, 2, 2}});
  bool hit = true;
  const Sample first = cache.get(d.training[0], d.classes(), &hit);
  CHECK_FALSE(hit);
  const Sample second = cache.get(d.training[0], d.classes(), &hit);
  CHECK(hit);
  CHECK(values(second.image.voxels) == values(first.image.voxels));
  CHECK(values(second.label.voxels) == values(first.label.voxels));
  CHECK(second.image.spacing == first.image.spacing);
  CHECK(second.image.origin == first.image.origin);
  CHECK(first.image.spacing == std::array<double, 3>{2, 2, 2});
  // other options: another folder, computed afresh
  PreprocessCache other(cache_dir, {.spacing = {3, 3, 3}});
  CHECK(other.directory() != cache.directory());
  other.get(d.training[0], d.classes(), &hit);
  CHECK_FALSE(hit);
}

TEST_CASE("the patch loader is deterministic across threads and oversamples foreground as nnU-Net") {
  Random rng(8);
  std::vector<Sample> cases;
  for (int n = 0; n < 3; ++n) {
    Sample s = synthetic_spheres({.size = {40, 36, 32}, .classes = 2, .spheres_per_class = 1, .min_radius = 0.05, .max_radius = 0.08}, rng);
    s.image.voxels = s.image.voxels.reshape({32, 36, 40, 1});
    cases.push_back(s);
  }
  LoaderOptions o{.patch = {16, 16, 16}, .batch_size = 3, .seed = 21, .threads = 1};
  const PatchLoader one(cases, o);
  o.threads = 3;
  const PatchLoader three(cases, o);
  for (int64_t index : {0, 7}) {
    const Batch a = one.batch(2, index), b = three.batch(2, index);
    CHECK(a.image.shape() == Shape{3, 16, 16, 16, 1});
    CHECK(a.label.shape() == Shape{3, 16, 16, 16});
    CHECK(values(a.image) == values(b.image));
    CHECK(values(a.label) == values(b.label));
  }
  CHECK(values(one.batch(2, 0).image) != values(one.batch(3, 0).image));
  // without augmentation, the last item of every batch (round(3 * 0.33) = 1) holds foreground
  o.augment = false;
  const PatchLoader plain(cases, o);
  auto epoch = plain.epoch(0, 20);
  int batches = 0;
  while (!epoch.done()) {
    const Batch b = epoch.next();
    const auto l = values(b.label);
    CHECK(std::any_of(l.begin() + 2 * 4096, l.end(), [](double v) { return v > 0; }));
    ++batches;
  }
  CHECK(batches == 20);
  CHECK_THROWS_WITH_AS(epoch.next(), Contains("all 20 batches were taken"), Error);
}
