#pragma once
// Built-in data, so that vox runs end to end with nothing downloaded:
//   - synthetic_spheres: a segmentation case: a noisy textured background with a few spheres of
//     each foreground class, each class brighter than the last; the label says which voxel is
//     which class. Seeded: the same seed gives the same case.
//   - create_test_image_3d: MONAI's recipe of the same name (spheres of random classes, noise);
//   - shepp_logan: the 3-D Shepp-Logan head phantom (ten ellipsoids, the table of Schabel's
//     phantom3d, "modified" intensities of Toft for visible contrast), sampled on [-1, 1]^3.
//   - write_synthetic_dataset: a Medical Segmentation Decathlon folder (imagesTr, labelsTr,
//     imagesTs, dataset.json) of sphere cases as NIfTI, which load_msd_dataset reads, plus
//     labelsTs with the test cases' labels, so that held-out predictions can be scored.
#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "vox/data/augment.hpp"
#include "vox/data/filter.hpp"
#include "vox/data/random.hpp"
#include "vox/io/nifti.hpp"

namespace vox::data {

struct SphereOptions {
  std::array<int64_t, 3> size{64, 64, 64};  // (i, j, k)
  std::array<double, 3> spacing{1.5, 1.5, 1.5};
  int64_t classes = 2;             // including background
  int64_t spheres_per_class = 2;
  double min_radius = 0.08, max_radius = 0.16;  // fractions of the smallest extent
  double noise = 0.35;             // std of the voxel noise; class c has mean c
};

inline Sample synthetic_spheres(const SphereOptions& o, Random& rng) {
  VOX_CHECK(o.classes >= 2 && o.classes <= 255, "synthetic_spheres", "classes must be in [2, 255], got ", o.classes);
  const auto [nx, ny, nz] = o.size;
  VOX_CHECK(nx >= 8 && ny >= 8 && nz >= 8, "synthetic_spheres", "each size must be at least 8");
  const int64_t voxels = nx * ny * nz;
  std::vector<float> image(static_cast<size_t>(voxels));
  std::vector<uint8_t> label(static_cast<size_t>(voxels), 0);
  // background texture: smoothed noise, so that intensity alone does not separate the classes
  for (float& v : image) v = static_cast<float>(rng.normal());
  gaussian_filter(image, o.size, {2, 2, 2});
  for (float& v : image) v *= 3.0f;
  const double extent = std::min({nx * o.spacing[0], ny * o.spacing[1], nz * o.spacing[2]});
  for (int64_t c = 1; c < o.classes; ++c)
    for (int64_t s = 0; s < o.spheres_per_class; ++s) {
      const double r = rng.uniform(o.min_radius, o.max_radius) * extent;  // mm
      std::array<double, 3> centre;
      for (int a = 0; a < 3; ++a) {
        const double length = double(o.size[a]) * o.spacing[a];
        centre[a] = rng.uniform(r + o.spacing[a], length - r - o.spacing[a]);
      }
      for (int64_t k = 0; k < nz; ++k)
        for (int64_t j = 0; j < ny; ++j)
          for (int64_t i = 0; i < nx; ++i) {
            const double dx = (double(i) + 0.5) * o.spacing[0] - centre[0], dy = (double(j) + 0.5) * o.spacing[1] - centre[1],
                         dz = (double(k) + 0.5) * o.spacing[2] - centre[2];
            if (dx * dx + dy * dy + dz * dz <= r * r) label[static_cast<size_t>((k * ny + j) * nx + i)] = static_cast<uint8_t>(c);
          }
    }
  for (size_t v = 0; v < image.size(); ++v)
    image[v] = static_cast<float>(0.15 * image[v] + double(label[v]) + o.noise * rng.normal());
  Sample out;
  out.image.voxels = empty({nz, ny, nx}, DType::f32);
  std::copy(image.begin(), image.end(), out.image.voxels.data<float>());
  out.label.voxels = empty({nz, ny, nx}, DType::u8);
  std::copy(label.begin(), label.end(), out.label.voxels.data<uint8_t>());
  out.image.spacing = out.label.spacing = o.spacing;
  return out;
}

// MONAI's create_test_image_3d recipe (monai.data.synthetic), drawn from vox's generator: `objects`
// spheres with centres at least `max_radius` from every face and radii in [min_radius, max_radius);
// each sphere gets the class ceil(u * classes) (u uniform), or a brightness in [0.5, 1) when
// classes is 1; the label is the ceiling of that; noise uniform in [0, classes * max_noise) is
// combined by maximum; the image is rescaled to [0, 1]. Sizes are (i, j, k) = MONAI's
// (height, width, depth).
inline Sample create_test_image_3d(const std::array<int64_t, 3>& size, Random& rng, int64_t objects = 12, int64_t max_radius = 30,
                                   int64_t min_radius = 5, double max_noise = 0.0, int64_t classes = 5) {
  VOX_CHECK(max_radius > min_radius, "create_test_image_3d", "min_radius ", min_radius, " should be less than max_radius ", max_radius);
  VOX_CHECK(min_radius >= 1, "create_test_image_3d", "min_radius ", min_radius, " should be at least 1");
  const int64_t smallest = std::min({size[0], size[1], size[2]});
  VOX_CHECK(smallest > 2 * max_radius, "create_test_image_3d", "the smallest size ", smallest, " should be larger than 2 * max_radius = ",
            2 * max_radius);
  VOX_CHECK(classes >= 1 && classes <= 255, "create_test_image_3d", "classes must be in [1, 255], got ", classes);
  const auto [nx, ny, nz] = size;
  std::vector<double> image(static_cast<size_t>(nx * ny * nz), 0.0);
  for (int64_t n = 0; n < objects; ++n) {
    const int64_t x = rng.integer(max_radius, nx - max_radius), y = rng.integer(max_radius, ny - max_radius),
                  z = rng.integer(max_radius, nz - max_radius), r = rng.integer(min_radius, max_radius);
    const double value = classes > 1 ? std::ceil(rng.uniform() * double(classes)) : rng.uniform() * 0.5 + 0.5;
    for (int64_t k = 0; k < nz; ++k)
      for (int64_t j = 0; j < ny; ++j)
        for (int64_t i = 0; i < nx; ++i)
          if ((i - x) * (i - x) + (j - y) * (j - y) + (k - z) * (k - z) <= r * r) image[static_cast<size_t>((k * ny + j) * nx + i)] = value;
  }
  Sample out;
  out.label.voxels = empty({nz, ny, nx}, DType::u8);
  uint8_t* label = out.label.voxels.data<uint8_t>();
  for (size_t v = 0; v < image.size(); ++v) {
    label[v] = static_cast<uint8_t>(std::ceil(image[v]));
    image[v] = std::max(image[v], rng.uniform(0.0, double(classes) * max_noise));
  }
  const auto [lo, hi] = std::minmax_element(image.begin(), image.end());
  const double min = *lo, range = *hi - *lo;
  out.image.voxels = empty({nz, ny, nx}, DType::f32);
  float* im = out.image.voxels.data<float>();
  for (size_t v = 0; v < image.size(); ++v) im[v] = static_cast<float>(range > 0 ? (image[v] - min) / range : image[v]);
  return out;
}

// The 3-D Shepp-Logan phantom on a grid of `size` voxels (i, j, k) spanning [-1, 1]^3.
inline io::Image shepp_logan(const std::array<int64_t, 3>& size) {
  struct Ellipsoid {
    double intensity, a, b, c, x0, y0, z0, phi, theta, psi;  // semi-axes, centre, Euler angles (degrees)
  };
  static const Ellipsoid table[10] = {
      {1.0, 0.6900, 0.920, 0.810, 0.00, 0.0000, 0.00, 0, 0, 0},
      {-0.8, 0.6624, 0.874, 0.780, 0.00, -0.0184, 0.00, 0, 0, 0},
      {-0.2, 0.1100, 0.310, 0.220, 0.22, 0.0000, 0.00, -18, 0, 10},
      {-0.2, 0.1600, 0.410, 0.280, -0.22, 0.0000, 0.00, 18, 0, 10},
      {0.1, 0.2100, 0.250, 0.410, 0.00, 0.3500, -0.15, 0, 0, 0},
      {0.1, 0.0460, 0.046, 0.050, 0.00, 0.1000, 0.25, 0, 0, 0},
      {0.1, 0.0460, 0.046, 0.050, 0.00, -0.1000, 0.25, 0, 0, 0},
      {0.1, 0.0460, 0.023, 0.050, -0.08, -0.6050, 0.00, 0, 0, 0},
      {0.1, 0.0230, 0.023, 0.020, 0.00, -0.6060, 0.00, 0, 0, 0},
      {0.1, 0.0230, 0.046, 0.020, 0.06, -0.6050, 0.00, 0, 0, 0},
  };
  for (int a = 0; a < 3; ++a) VOX_CHECK(size[a] >= 2, "shepp_logan", "each size must be at least 2, got ", size[a]);
  io::Image im;
  im.voxels = zeros({size[2], size[1], size[0]}, DType::f32);
  for (int a = 0; a < 3; ++a) im.spacing[a] = 2.0 / double(size[a] - 1);
  float* v = im.voxels.data<float>();
  const double deg = std::numbers::pi / 180;
  for (const Ellipsoid& e : table) {
    const double cphi = std::cos(e.phi * deg), sphi = std::sin(e.phi * deg), cth = std::cos(e.theta * deg), sth = std::sin(e.theta * deg),
                 cpsi = std::cos(e.psi * deg), spsi = std::sin(e.psi * deg);
    const double r[3][3] = {{cpsi * cphi - cth * sphi * spsi, cpsi * sphi + cth * cphi * spsi, spsi * sth},
                            {-spsi * cphi - cth * sphi * cpsi, -spsi * sphi + cth * cphi * cpsi, cpsi * sth},
                            {sth * sphi, -sth * cphi, cth}};
    for (int64_t k = 0; k < size[2]; ++k)
      for (int64_t j = 0; j < size[1]; ++j)
        for (int64_t i = 0; i < size[0]; ++i) {
          const double p[3] = {-1 + 2.0 * double(i) / double(size[0] - 1), -1 + 2.0 * double(j) / double(size[1] - 1),
                               -1 + 2.0 * double(k) / double(size[2] - 1)};
          const double x = r[0][0] * p[0] + r[0][1] * p[1] + r[0][2] * p[2] - e.x0;
          const double y = r[1][0] * p[0] + r[1][1] * p[1] + r[1][2] * p[2] - e.y0;
          const double z = r[2][0] * p[0] + r[2][1] * p[1] + r[2][2] * p[2] - e.z0;
          if (x * x / (e.a * e.a) + y * y / (e.b * e.b) + z * z / (e.c * e.c) <= 1)
            v[(k * size[1] + j) * size[0] + i] += static_cast<float>(e.intensity);
        }
  }
  return im;
}

// An MSD-layout dataset of sphere cases: `training` labelled cases and `test` unlabelled ones.
inline void write_synthetic_dataset(const std::string& directory, int64_t training, int64_t test, const SphereOptions& o, uint64_t seed) {
  namespace fs = std::filesystem;
  for (const char* sub : {"imagesTr", "labelsTr", "imagesTs", "labelsTs"}) fs::create_directories(fs::path(directory) / sub);
  std::string entries, tests;
  for (int64_t n = 0; n < training + test; ++n) {
    Random rng = Random(seed).fork(static_cast<uint64_t>(n));
    Sample s = synthetic_spheres(o, rng);
    char name[48];
    std::snprintf(name, sizeof(name), "spheres_%03lld.nii.gz", static_cast<long long>(n));
    if (n < training) {
      io::write_nifti((fs::path(directory) / "imagesTr" / name).string(), s.image);
      io::write_nifti((fs::path(directory) / "labelsTr" / name).string(), s.label);
      entries += std::string(entries.empty() ? "" : ",\n    ") + "{\"image\": \"./imagesTr/" + name + "\", \"label\": \"./labelsTr/" + name + "\"}";
    } else {
      io::write_nifti((fs::path(directory) / "imagesTs" / name).string(), s.image);
      io::write_nifti((fs::path(directory) / "labelsTs" / name).string(), s.label);  // beyond MSD: lets held-out cases be scored
      tests += std::string(tests.empty() ? "" : ", ") + "\"./imagesTs/" + name + "\"";
    }
  }
  std::string labels = "\"0\": \"background\"";
  for (int64_t c = 1; c < o.classes; ++c) labels += ", \"" + std::to_string(c) + "\": \"sphere " + std::to_string(c) + "\"";
  const std::string json = "{\n  \"name\": \"vox synthetic spheres\",\n  \"description\": \"spheres in textured noise, written by vox\",\n"
                           "  \"tensorImageSize\": \"3D\",\n  \"modality\": {\"0\": \"synthetic\"},\n  \"labels\": {" + labels +
                           "},\n  \"numTraining\": " + std::to_string(training) + ",\n  \"numTest\": " + std::to_string(test) +
                           ",\n  \"training\": [\n    " + entries + "\n  ],\n  \"test\": [" + tests + "]\n}\n";
  io::write_file_atomically((fs::path(directory) / "dataset.json").string(), [&](std::ofstream& out) { out << json; });
}

}  // namespace vox::data
