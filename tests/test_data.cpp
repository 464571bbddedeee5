// Floor 6, data: intensity transforms with MONAI's formulas, on values whose results are worked
// out by hand below.
#include <vox/data/intensity.hpp>

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
