// Floor 6, data: intensity transforms with MONAI's formulas, on values whose results are worked
// out by hand below.
#include <vox/data/intensity.hpp>
#include <vox/data/resample.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::testing;
using doctest::Contains;

TEST_CASE("CT windows map [centre - width/2, centre + width/2] to [0, 1] and clip") {
  const Tensor hu = from_vector<int32_t>({-1400, -1350, -600, 150, 2000}, {5});
  // lung: -600 / 1500 -> range [-1350, 150]
  VOX_CHECK_CLOSE(values(data::apply_window(hu, data::window_preset("lung"))), (std::vector<double>{0, 0, 0.5, 1, 1}), 1e-7, 0,
                  "lung window");
  const Tensor out = data::apply_window(hu, {40, 400});  // [-160, 240]
  CHECK(out.dtype() == DType::f32);
  VOX_CHECK_CLOSE(values(out), (std::vector<double>{0, 0, 0, 310.0 / 400, 1}), 1e-7, 0, "abdomen window");
  CHECK_THROWS_WITH_AS(data::window_preset("kidney"), Contains("the presets are lung"), Error);
  CHECK_THROWS_WITH_AS(data::apply_window(hu, {0, 0}), Contains("width must be positive"), Error);
}

TEST_CASE("scale_intensity_range follows MONAI's ScaleIntensityRange, with and without clipping") {
  const Tensor x = from_vector<float>({-10, 0, 5, 20}, {2, 2});
  // (x - 0) / (10 - 0) * (1 - (-1)) + (-1)
  VOX_CHECK_CLOSE(values(data::scale_intensity_range(x, 0, 10, -1, 1, false)), (std::vector<double>{-3, -1, 0, 3}), 1e-7, 0, "no clip");
  VOX_CHECK_CLOSE(values(data::scale_intensity_range(x, 0, 10, -1, 1, true)), (std::vector<double>{-1, -1, 0, 1}), 1e-7, 0, "clip");
  CHECK(data::scale_intensity_range(x, 0, 10, -1, 1, true).shape() == Shape{2, 2});
  CHECK_THROWS_WITH_AS(data::scale_intensity_range(x, 3, 3, 0, 1, true), Contains("a_min and a_max are both 3"), Error);
}

TEST_CASE("z_score follows MONAI's NormalizeIntensity, over all voxels or the non-zero ones") {
  const Tensor x = from_vector<double>({0, 2, 4, 0, 6, 0}, {6});
  // all: mean 2, population variance (4 + 0 + 4 + 4 + 16 + 4) / 6 = 16 / 3
  const double s = std::sqrt(16.0 / 3.0);
  VOX_CHECK_CLOSE(values(data::z_score(x)), (std::vector<double>{-2 / s, 0, 2 / s, -2 / s, 4 / s, -2 / s}), 1e-6, 0, "all voxels");
  // non-zero: {2, 4, 6}, mean 4, variance 8 / 3; zeros stay zero
  const double t = std::sqrt(8.0 / 3.0);
  VOX_CHECK_CLOSE(values(data::z_score(x, true)), (std::vector<double>{0, -2 / t, 0, 0, 2 / t, 0}), 1e-6, 0, "non-zero voxels");
  VOX_CHECK_CLOSE(values(data::z_score(full({4}, 7.0))), (std::vector<double>{0, 0, 0, 0}), 0, 0, "constant: std counts as 1");
}

TEST_CASE("resampling to a spacing keeps world geometry: linear reproduces a linear field, nearest keeps labels") {
  io::Image image;
  image.spacing = {1.0, 2.0, 3.0};
  image.origin = {-5.0, 4.0, 10.0};
  const double c = std::cos(0.4), s = std::sin(0.4);
  image.direction = {{{c, -s, 0}, {s, c, 0}, {0, 0, 1}}};  // oblique in-plane
  const int64_t nx = 9, ny = 7, nz = 5;
  // A field linear in world coordinates: trilinear interpolation reproduces it exactly.
  auto field = [](double x, double y, double z) { return 0.5 * x - 0.25 * y + 0.125 * z + 3.0; };
  auto world = [](const io::Image& im, double i, double j, double k, int row) {
    return im.origin[row] + im.direction[row][0] * im.spacing[0] * i + im.direction[row][1] * im.spacing[1] * j +
           im.direction[row][2] * im.spacing[2] * k;
  };
  std::vector<double> v;
  for (int64_t k = 0; k < nz; ++k)
    for (int64_t j = 0; j < ny; ++j)
      for (int64_t i = 0; i < nx; ++i) v.push_back(field(world(image, i, j, k, 0), world(image, i, j, k, 1), world(image, i, j, k, 2)));
  image.voxels = from_vector<double>(v, {nz, ny, nx});

  const io::Image r = data::resample_to_spacing(image, {0.75, 1.5, 2.0}, data::Interpolation::linear);
  CHECK(r.voxels.shape() == Shape{8, 9, 12});  // round(5 * 3 / 2), round(7 * 2 / 1.5), round(9 * 1 / 0.75)
  CHECK(r.origin == image.origin);
  CHECK(r.voxels.dtype() == DType::f32);
  const auto out = values(r.voxels);
  int checked = 0;
  for (int64_t k = 0; k < 8; ++k)
    for (int64_t j = 0; j < 9; ++j)
      for (int64_t i = 0; i < 12; ++i) {
        // only samples inside the input grid (past its last voxel the edge value is repeated)
        if (i * 0.75 > nx - 1 || j * 1.5 / 2.0 > ny - 1 || k * 2.0 / 3.0 > nz - 1) continue;
        const double want = field(world(r, i, j, k, 0), world(r, i, j, k, 1), world(r, i, j, k, 2));
        CHECK(out[static_cast<size_t>((k * 9 + j) * 12 + i)] == doctest::Approx(want).epsilon(1e-6));
        ++checked;
      }
  CHECK(checked > 500);

  io::Image labels = image;
  labels.voxels = from_vector<int64_t>(std::vector<int64_t>(static_cast<size_t>(nx * ny * nz), 0), {nz, ny, nx});
  int64_t* lp = labels.voxels.data<int64_t>();
  for (int64_t n = 0; n < nx * ny * nz; ++n) lp[n] = (n * 7) % 4;
  const io::Image rl = data::resample_to_spacing(labels, {0.75, 1.5, 2.0}, data::Interpolation::nearest);
  CHECK(rl.voxels.dtype() == DType::i64);
  for (double value : values(rl.voxels)) CHECK((value == 0 || value == 1 || value == 2 || value == 3));
  // voxel (0, 0, 0) is the same voxel; the output's voxel (4, 0, 0) sits at input i = 3
  CHECK(values(rl.voxels)[0] == double(lp[0]));
  CHECK(values(rl.voxels)[4] == double(lp[3]));
  CHECK_THROWS_WITH_AS(data::resample_to_spacing(image, {0, 1, 1}, data::Interpolation::linear), Contains("spacing must be positive"),
                       Error);
}
