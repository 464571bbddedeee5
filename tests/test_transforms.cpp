// Preprocessing, augmentation and sampling. Deterministic transforms against what MONAI 1.2.0,
// scipy and numpy make of the same volume (tests/data/make_transform_fixtures.py, at test time):
// ResizeWithPadOrCrop, DivisiblePad, Resize (trilinear and nearest-exact), CropForeground,
// the sliding-window grid, gaussian_filter, nnU-Net's CT normalisation. Then the properties the
// random transforms must have: geometry kept, labels moved with images and never blended,
// statistics retained where promised, the same seed giving the same sample.
#include <cstdlib>
#include <set>

#include <vox/data/augment.hpp>
#include <vox/data/crop_pad.hpp>
#include <vox/data/intensity.hpp>
#include <vox/data/resample_spline.hpp>
#include <vox/data/sampling.hpp>

#include "transform_fixtures.hpp"

using namespace vox;
using namespace vox::data;
using namespace vox::testing;
using doctest::Contains;

namespace {
using Fixtures = TransformFixtures;
Index3 index3(const json::Value& v) {
  const auto& a = v.as_array();
  return {a[0].as_int64(), a[1].as_int64(), a[2].as_int64()};
}
io::Image image_of(const Tensor& voxels, std::array<double, 3> spacing = {1, 1, 1}) {
  io::Image im;
  im.voxels = voxels;
  im.spacing = spacing;
  return im;
}
// An oblique geometry, so that origin bookkeeping is tested in every direction.
io::Image oblique(const Tensor& voxels) {
  io::Image im = image_of(voxels, {0.8, 1.3, 2.1});
  const double c = std::cos(0.4), s = std::sin(0.4);
  im.direction = {{{c, -s, 0}, {s, c, 0}, {0, 0, 1}}};
  im.origin = {10, -5, 3};
  return im;
}
std::array<double, 3> world(const io::Image& im, double i, double j, double k) {
  const io::Affine a = im.affine(io::Convention::lps);
  return {a[0][0] * i + a[0][1] * j + a[0][2] * k + a[0][3], a[1][0] * i + a[1][1] * j + a[1][2] * k + a[1][3],
          a[2][0] * i + a[2][1] * j + a[2][2] * k + a[2][3]};
}
void check_same_point(const std::array<double, 3>& a, const std::array<double, 3>& b) {
  for (int r = 0; r < 3; ++r) CHECK(a[r] == doctest::Approx(b[r]).epsilon(1e-12).scale(1.0));
}
}  // namespace

TEST_CASE("pad/crop, divisible pad, resize and foreground crop equal MONAI's, with world positions kept") {
  const Fixtures f;
  const Tensor& volume = f.tensors.at("volume");
  const io::Image im = oblique(volume);
  const auto& pad_crop = f["pad_or_crop"].as_array();
  for (size_t n = 0; n < pad_crop.size(); ++n) {
    const Index3 size = index3(pad_crop[n]);
    INFO("ResizeWithPadOrCrop " << size[0] << "x" << size[1] << "x" << size[2]);
    const io::Image out = pad_or_crop_to_size(im, size);
    CHECK(values(out.voxels) == values(f.tensors.at("pad_or_crop." + std::to_string(n))));
    // the voxel that was (0, 0, 0) is where it was
    const Box box = centred_box({11, 10, 9}, size);
    check_same_point(world(out, double(-box.begin[0]), double(-box.begin[1]), double(-box.begin[2])), world(im, 0, 0, 0));
  }
  const auto& divisible = f["divisible"].as_array();
  for (size_t n = 0; n < divisible.size(); ++n) {
    INFO("DivisiblePad " << n);
    CHECK(values(pad_to_multiple(im, index3(divisible[n])).voxels) == values(f.tensors.at("divisible." + std::to_string(n))));
  }
  const auto& resizes = f["resize"].as_array();
  for (size_t n = 0; n < resizes.size(); ++n) {
    const Index3 size = index3(*resizes[n].find("size"));
    const bool nearest = resizes[n].find("mode")->as_string() == "nearest-exact";
    INFO("Resize " << n);
    const io::Image out = resize(im, size, nearest ? ResizeMode::nearest : ResizeMode::linear);
    // torch interpolates in f32; vox in f64 then stores f32
    VOX_CHECK_CLOSE(values(out.voxels), values(f.tensors.at("resize." + std::to_string(n))), 2e-6, 1e-6, "resize");
    // the extent is kept: the outer voxel corners stay put
    check_same_point(world(out, -0.5, -0.5, -0.5), world(im, -0.5, -0.5, -0.5));
    check_same_point(world(out, double(size[0]) - 0.5, double(size[1]) - 0.5, double(size[2]) - 0.5), world(im, 10.5, 9.5, 8.5));
  }
  const Box box = foreground_box(im, 1.5, {1, 1, 1});
  const io::Image cropped = extract_region(im, box);
  CHECK(values(cropped.voxels) == values(f.tensors.at("foreground")));
  check_same_point(world(cropped, 0, 0, 0), world(im, double(box.begin[0]), double(box.begin[1]), double(box.begin[2])));
  // a label cropped together with its image
  io::Image image = im, label = image_of(gt(volume, full({}, 1.5, DType::f64)).to(DType::u8));
  crop_to_foreground(image, &label);
  CHECK(label.voxels.shape() == image.voxels.shape());
  CHECK(values(image.voxels) == values(extract_region(im, foreground_box(image_of(volume), 1.5)).voxels));
}

TEST_CASE("the sliding-window grid is MONAI's dense_patch_slices") {
  const Fixtures f;
  for (const json::Value& c : f["grid"].as_array()) {
    const Index3 size = index3(*c.find("size")), patch = index3(*c.find("patch"));
    const double overlap = c.find("overlap")->as_double();
    INFO(size[0] << "x" << size[1] << "x" << size[2] << " patch " << patch[0] << "x" << patch[1] << "x" << patch[2] << " overlap " << overlap);
    std::set<Index3> want, got;
    for (const json::Value& s : c.find("starts")->as_array()) want.insert(index3(s));
    const std::vector<Box> boxes = grid_boxes(size, patch, overlap);
    for (const Box& b : boxes) got.insert(b.begin);
    CHECK(got == want);
    CHECK(boxes.size() == want.size());
  }
  CHECK_THROWS_WITH_AS(grid_boxes({8, 8, 8}, {4, 4, 4}, 1.0), Contains("overlap must be in [0, 1)"), Error);
}

TEST_CASE("Gaussian smoothing is scipy's gaussian_filter; CT normalisation is nnU-Net's, with numpy's statistics") {
  const Fixtures f;
  const Tensor& volume = f.tensors.at("volume");
  const auto& sigmas = f["gaussian"].as_array();
  for (size_t n = 0; n < sigmas.size(); ++n) {
    const auto& s = sigmas[n].as_array();
    std::vector<float> v = volume.to_vector<float>();
    gaussian_filter(v, {11, 10, 9}, {s[0].as_double(), s[1].as_double(), s[2].as_double()});
    VOX_CHECK_CLOSE(std::vector<double>(v.begin(), v.end()), values(f.tensors.at("gaussian." + std::to_string(n))), 1e-6, 1e-6,
                    "gaussian_filter");
  }
  const std::vector<Tensor> images{f.tensors.at("ct.image.0"), f.tensors.at("ct.image.1")};
  const std::vector<Tensor> labels{f.tensors.at("ct.label.0"), f.tensors.at("ct.label.1")};
  const ForegroundIntensities stats = foreground_intensities(images, labels);
  const json::Value& want = f["ct"];
  CHECK(stats.voxels == want.find("voxels")->as_int64());
  CHECK(stats.mean == doctest::Approx(want.find("mean")->as_double()).epsilon(1e-12));
  CHECK(stats.std == doctest::Approx(want.find("std")->as_double()).epsilon(1e-12));
  CHECK(stats.median == doctest::Approx(want.find("median")->as_double()).epsilon(1e-12));
  CHECK(stats.percentile_00_5 == doctest::Approx(want.find("p00_5")->as_double()).epsilon(1e-12));
  CHECK(stats.percentile_99_5 == doctest::Approx(want.find("p99_5")->as_double()).epsilon(1e-12));
  CHECK(stats.min == want.find("min")->as_double());
  CHECK(stats.max == want.find("max")->as_double());
  for (int n = 0; n < 2; ++n)
    VOX_CHECK_CLOSE(values(ct_normalize(images[static_cast<size_t>(n)], stats)), values(f.tensors.at("ct.normalized." + std::to_string(n))),
                    1e-6, 1e-6, "ct_normalize");  // f32 output
  CHECK_THROWS_WITH_AS(foreground_intensities({images[0]}, {zeros_like(labels[0])}), Contains("no foreground voxel"), Error);
}

TEST_CASE("cubic B-spline resampling is scipy's map_coordinates(order=3); nnU-Net's anisotropic rule keeps slices apart") {
  const Fixtures f;
  const Tensor& volume = f.tensors.at("volume");
  auto spacing_of = [](const json::Value& v) {
    const auto& a = v.as_array();
    return std::array<double, 3>{a[0].as_double(), a[1].as_double(), a[2].as_double()};
  };
  const json::Value& b = f["bspline"];
  const io::Image spline = resample_bspline(image_of(volume, spacing_of(*b.find("old"))), spacing_of(*b.find("new")));
  const Tensor& want = f.tensors.at("bspline");
  REQUIRE(spline.voxels.shape() == want.shape());
  VOX_CHECK_CLOSE(values(spline.voxels), values(want), 2e-6, 1e-6, "bspline");  // f32 output of f64 arithmetic
  // interpolation: on the input grid the spline gives the samples back
  const io::Image same = resample_bspline(image_of(volume, {1, 1, 1}), {1, 1, 1});
  VOX_CHECK_CLOSE(values(same.voxels), values(volume), 1e-6, 1e-6, "bspline at the samples");

  const json::Value& n = f["nnunet"];
  const std::array<double, 3> old = spacing_of(*n.find("old")), target = spacing_of(*n.find("new"));
  CHECK(nnunet_separate_axis(old, target) == 2);                  // 3.2 / 0.8 = 4 > 3
  CHECK(nnunet_separate_axis({1, 1, 2.5}, {1, 1, 1}) == -1);     // 2.5 <= 3
  CHECK(nnunet_separate_axis({1, 1, 1}, {0.5, 0.5, 2}) == 2);     // the target is anisotropic
  CHECK(nnunet_separate_axis({4, 1, 4}, {1, 1, 1}) == -1);        // two axes share the largest spacing
  const io::Image anisotropic = resample_nnunet(image_of(volume, old), target, false);
  VOX_CHECK_CLOSE(values(anisotropic.voxels), values(f.tensors.at("nnunet")), 2e-6, 1e-6, "nnunet");
  // labels: nearest, dtype kept
  const io::Image labels = resample_nnunet(image_of(gt(volume, full({}, 0.0)).to(DType::u8), old), target, true);
  CHECK(labels.voxels.dtype() == DType::u8);
  CHECK(labels.voxels.shape() == anisotropic.voxels.shape());
}

TEST_CASE("spatial augmentation: identity is identity, a quarter turn is rot90, labels stay labels") {
  Random rng(1);
  // 6x6x3 ramp with a label where the ramp is high
  const Tensor ramp = arange(108, DType::f32).reshape({3, 6, 6});
  Sample s{image_of(ramp), image_of(gt(ramp, full({}, 60.0)).to(DType::u8))};
  Sample same = s;
  spatial_transform(same, {}, rng);
  CHECK(values(same.image.voxels) == values(s.image.voxels));
  CHECK(values(same.label.voxels) == values(s.label.voxels));
  // +90 degrees about k on a square grid turns the content from i towards j (right-handed, as
  // SpatialParams documents), the direction of numpy's rot90(axes=(i, j)) = flip(m, j).T: voxel
  // (i, j) takes the input's (j, n-1-i). The opposite turn would take (n-1-j, i).
  Sample turned = s;
  spatial_transform(turned, {.rotation = {0, 0, std::numbers::pi / 2}}, rng);
  const auto in = values(s.image.voxels), out = values(turned.image.voxels);
  for (int64_t k = 0; k < 3; ++k)
    for (int64_t j = 0; j < 6; ++j)
      for (int64_t i = 0; i < 6; ++i) {
        INFO("voxel (i, j, k) = (" << i << ", " << j << ", " << k << ")");
        CHECK(out[static_cast<size_t>((k * 6 + j) * 6 + i)] == doctest::Approx(in[static_cast<size_t>((k * 6 + (5 - i)) * 6 + j)]).epsilon(1e-5));
      }
  // random rotation, scaling and elastic deformation: label values stay in {0, 1}, and every
  // labelled voxel lies where the image is high (they moved together)
  Sample warped = s;
  spatial_transform(warped, {.rotation = {0.3, -0.2, 0.5}, .scale = 1.2, .elastic_alpha = 2, .elastic_sigma = 2}, rng);
  const auto wl = values(warped.label.voxels), wi = values(warped.image.voxels);
  int labelled = 0;
  for (size_t v = 0; v < wl.size(); ++v) {
    REQUIRE((wl[v] == 0 || wl[v] == 1));
    if (wl[v] == 1) {
      ++labelled;
      CHECK(wi[v] > 40);  // nearest label, trilinear image: within one voxel of the 60 boundary
    }
  }
  CHECK(labelled > 0);
  CHECK(warped.label.voxels.dtype() == DType::u8);
}

TEST_CASE("flips keep world positions; intensity transforms keep what they promise") {
  const Tensor volume = randn({5, 6, 7}, DType::f32);
  Sample s{oblique(volume), oblique(gt(volume, full({}, 0.0)).to(DType::u8))};
  const io::Image before = s.image;
  for (int axis = 0; axis < 3; ++axis) {
    Sample f = s;
    flip(f, axis);
    // voxel (0, 0, 0) of the flipped image is the far voxel along `axis` of the original, in the same place
    std::array<double, 3> far{0, 0, 0};
    far[static_cast<size_t>(axis)] = axis == 0 ? 6 : axis == 1 ? 5 : 4;
    check_same_point(world(f.image, 0, 0, 0), world(before, far[0], far[1], far[2]));
    flip(f, axis);
    CHECK(values(f.image.voxels) == values(s.image.voxels));
    CHECK(values(f.label.voxels) == values(s.label.voxels));
  }
  // quarter turns: every voxel stays at its world position; four turns are the identity
  for (const auto& [a, b] : std::vector<std::pair<int, int>>{{0, 1}, {1, 2}, {2, 0}, {1, 0}})
    for (int k = 1; k <= 3; ++k) {
      INFO("rot90 k " << k << " in plane " << a << "," << b);
      Sample r = s;
      rot90(r, k, a, b);
      const io::Affine A = before.affine(io::Convention::lps);
      const auto rv = values(r.image.voxels), iv = values(before.voxels);
      const Shape& rs = r.image.voxels.shape();
      bool all = true;
      for (int64_t z = 0; z < rs[0]; ++z)
        for (int64_t y = 0; y < rs[1]; ++y)
          for (int64_t x = 0; x < rs[2]; ++x) {
            const auto w = world(r.image, double(x), double(y), double(z));
            double idx[3];
            for (int c = 0; c < 3; ++c) {  // A's columns are orthogonal, of length spacing
              double dot = 0, len2 = 0;
              for (int row = 0; row < 3; ++row) dot += (w[row] - A[row][3]) * A[row][c], len2 += A[row][c] * A[row][c];
              idx[c] = dot / len2;
            }
            const int64_t i = std::llround(idx[0]), j = std::llround(idx[1]), kk = std::llround(idx[2]);
            all = all && std::abs(idx[0] - double(i)) < 1e-9 && std::abs(idx[1] - double(j)) < 1e-9 && std::abs(idx[2] - double(kk)) < 1e-9 &&
                  rv[static_cast<size_t>((z * rs[1] + y) * rs[2] + x)] == iv[static_cast<size_t>((kk * 6 + j) * 7 + i)];
          }
      CHECK(all);
      rot90(r, 4 - k, a, b);
      CHECK(values(r.image.voxels) == values(s.image.voxels));
      CHECK(values(r.label.voxels) == values(s.label.voxels));
    }
  // a translation moves the content: +2 mm along i on a 1 mm grid shifts voxels by 2
  Sample moved{image_of(volume), image_of(gt(volume, full({}, 0.0)).to(DType::u8))};
  Random unused(0);
  spatial_transform(moved, {.translation = {2, 0, 0}}, unused);
  const auto mv = values(moved.image.voxels), ov = values(volume);
  CHECK(mv[static_cast<size_t>((2 * 6 + 3) * 7 + 5)] == doctest::Approx(ov[static_cast<size_t>((2 * 6 + 3) * 7 + 3)]));
  CHECK(mv[static_cast<size_t>((2 * 6 + 3) * 7 + 0)] == 0.0);  // moved in from outside

  // gamma with retained statistics keeps mean and std; contrast keeps the range
  io::Image g = image_of(add(mul(rand({4, 5, 6}), full({}, 3.0)), full({}, 1.0)));
  const auto stats_of = [](const io::Image& im) {
    const auto v = values(im.voxels);
    double m = 0, q = 0;
    for (double x : v) m += x;
    m /= double(v.size());
    for (double x : v) q += (x - m) * (x - m);
    return std::pair{m, std::sqrt(q / double(v.size()))};
  };
  const auto [m0, s0] = stats_of(g);
  for (bool invert : {false, true}) {
    io::Image h = g;
    gamma(h, 1.4, invert);
    const auto [m1, s1] = stats_of(h);
    CHECK(m1 == doctest::Approx(m0).epsilon(1e-5));
    CHECK(s1 == doctest::Approx(s0).epsilon(1e-4));
    CHECK(values(h.voxels) != values(g.voxels));
  }
  io::Image c = g;
  contrast(c, 1.3);
  const auto cv = values(c.voxels), gv = values(g.voxels);
  CHECK(*std::min_element(cv.begin(), cv.end()) >= *std::min_element(gv.begin(), gv.end()) - 1e-6);
  CHECK(*std::max_element(cv.begin(), cv.end()) <= *std::max_element(gv.begin(), gv.end()) + 1e-6);
  // low resolution at zoom 1 changes nothing
  io::Image l = g;
  simulate_low_resolution(l, 1.0, 0);
  VOX_CHECK_CLOSE(values(l.voxels), values(g.voxels), 1e-6, 0, "lowres at zoom 1");
}

TEST_CASE("augment: the same seed gives the same sample; labels keep their values") {
  const Tensor volume = randn({8, 9, 10}, DType::f32);
  const Sample s{image_of(volume), image_of(gt(volume, full({}, 0.5)).to(DType::u8))};
  AugmentConfig always;  // every transform fires
  always.p_rotation = always.p_scale = always.p_elastic = always.p_noise = always.p_blur = always.p_brightness = always.p_contrast =
      always.p_lowres = always.p_gamma_inverted = always.p_gamma = 1.0;
  always.max_alpha = 3, always.min_sigma = always.max_sigma = 2;
  Sample a = s, b = s, c = s;
  Random ra = Random(42).fork(3), rb = Random(42).fork(3), rc = Random(42).fork(4);
  augment(a, always, ra);
  augment(b, always, rb);
  augment(c, always, rc);
  CHECK(values(a.image.voxels) == values(b.image.voxels));
  CHECK(values(a.label.voxels) == values(b.label.voxels));
  CHECK(values(a.image.voxels) != values(c.image.voxels));
  for (double v : values(a.label.voxels)) REQUIRE((v == 0 || v == 1));
}

TEST_CASE("crops: positive/negative balance, classes, and boxes inside the image") {
  // a 20x20x20 label with one small foreground cube of class 1 and one of class 2
  Tensor label = zeros({20, 20, 20}, DType::u8);
  uint8_t* l = label.data<uint8_t>();
  for (int k = 2; k < 5; ++k)
    for (int j = 2; j < 5; ++j)
      for (int i = 2; i < 5; ++i) l[(k * 20 + j) * 20 + i] = 1;
  for (int k = 15; k < 17; ++k)
    for (int j = 14; j < 16; ++j)
      for (int i = 16; i < 18; ++i) l[(k * 20 + j) * 20 + i] = 2;
  const io::Image lab = image_of(label);
  Random rng(5);
  int with_foreground = 0;
  const int crops = 400;
  for (int n = 0; n < crops; ++n) {
    const Box b = pos_neg_crop_box(lab, {6, 6, 6}, 1, 1, rng);
    for (int a = 0; a < 3; ++a) REQUIRE((b.begin[a] >= 0 && b.begin[a] + 6 <= 20));
    const auto v = values(extract_region(lab, b).voxels);
    with_foreground += std::any_of(v.begin(), v.end(), [](double x) { return x > 0; });
  }
  // half the crops are centred on foreground; background-centred ones rarely reach the cubes
  CHECK(with_foreground > crops * 45 / 100);
  CHECK(with_foreground < crops * 75 / 100);
  int class2 = 0;
  for (int n = 0; n < crops; ++n) {
    const auto v = values(extract_region(lab, class_balanced_crop_box(lab, {4, 4, 4}, 3, {0, 1, 1}, rng)).voxels);
    class2 += std::count(v.begin(), v.end(), 2.0) > 0;
  }
  CHECK(class2 > crops * 40 / 100);  // half the crops centre on class 2, 8 of 6000 voxels
  CHECK(class2 < crops * 60 / 100);
  // a label value beyond the class count is refused
  CHECK_THROWS_WITH_AS(class_balanced_crop_box(lab, {4, 4, 4}, 2, {}, rng), Contains("label value 2"), Error);
  // the image smaller than the crop: the box is padded around it
  const Box small = random_crop_box({3, 20, 20}, {6, 6, 6}, rng);
  CHECK(small.begin[0] == -1);
}
