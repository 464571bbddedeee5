#pragma once
// Whole-volume classification data.
//
//   - synthetic_shape: a built-in task. One solid of equal volume whatever its class (0 sphere,
//     1 cube, 2 cylinder), randomly sized, placed and turned, in textured noise with a random
//     contrast, so that neither brightness nor size tells the classes apart: only shape does.
//   - write_synthetic_shapes_dataset: such cases as an MSD-style folder whose dataset.json gives
//     each image's class as a number ("label": 1), which load_msd_dataset reads as classification.
//   - prepare_volume: read, z-score, resize to the network's input size (trilinear).
//   - VolumeLoader: batches of whole volumes and their classes, a pure function of (seed, epoch,
//     index) like PatchLoader: each item draws its case and augmentation from its own stream.
#include <array>
#include <cmath>
#include <filesystem>
#include <numbers>
#include <string>
#include <thread>
#include <vector>

#include "vox/data/augment.hpp"
#include "vox/data/crop_pad.hpp"
#include "vox/data/dataset.hpp"
#include "vox/data/filter.hpp"
#include "vox/data/intensity.hpp"
#include "vox/data/random.hpp"
#include "vox/io/nifti.hpp"

namespace vox::data {

inline const std::vector<std::string>& shape_names() {
  static const std::vector<std::string> names{"sphere", "cube", "cylinder"};
  return names;
}

struct ShapeOptions {
  std::array<int64_t, 3> size{32, 32, 32};  // (i, j, k)
  int64_t classes = 2;                      // 2: sphere or cube; 3: also cylinders
  double min_radius = 6, max_radius = 9;    // voxels, of the sphere of the same volume
  double noise = 0.25;
};

// One case of class `shape`: image [k, j, i] f32, spacing 1 mm.
inline io::Image synthetic_shape(int64_t shape, const ShapeOptions& o, Random& rng) {
  VOX_CHECK(o.classes >= 2 && o.classes <= 3, "synthetic_shape", "classes must be 2 or 3, got ", o.classes);
  VOX_CHECK(shape >= 0 && shape < o.classes, "synthetic_shape", "shape ", shape, " is not below classes ", o.classes);
  const auto [nx, ny, nz] = o.size;
  const double r = rng.uniform(o.min_radius, o.max_radius);
  // a turned cube reaches half_side * sqrt(3) = 1.4 r from its centre
  VOX_CHECK(double(std::min({nx, ny, nz})) > 2.8 * o.max_radius + 2, "synthetic_shape", "each size must exceed 2.8 * max_radius + 2 = ",
            2.8 * o.max_radius + 2, " voxels, so that every solid fits whole");
  // equal volumes: (4/3) pi r^3 = side^3 = 2 pi rc^3 (a cylinder as tall as it is wide)
  const double half_side = 0.5 * r * std::cbrt(4.0 * std::numbers::pi / 3.0), rc = r * std::cbrt(2.0 / 3.0);
  const double reach = shape == 0 ? r : shape == 1 ? half_side * std::sqrt(3.0) : rc * std::sqrt(2.0);
  std::array<double, 3> centre;
  for (int a = 0; a < 3; ++a) centre[a] = rng.uniform(reach + 1, double(o.size[a]) - reach - 1);
  // a rotation from three random angles (the same kind augment draws)
  const double ax = rng.uniform(0, 2 * std::numbers::pi), ay = rng.uniform(0, 2 * std::numbers::pi), az = rng.uniform(0, 2 * std::numbers::pi);
  const double cx = std::cos(ax), sx = std::sin(ax), cy = std::cos(ay), sy = std::sin(ay), cz = std::cos(az), sz = std::sin(az);
  const double R[3][3] = {{cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx},
                          {sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx},
                          {-sy, cy * sx, cy * cx}};
  const double contrast = rng.uniform(0.6, 1.4);
  std::vector<float> image(static_cast<size_t>(nx * ny * nz));
  for (float& v : image) v = static_cast<float>(rng.normal());
  gaussian_filter(image, o.size, {2, 2, 2});
  for (int64_t k = 0; k < nz; ++k)
    for (int64_t j = 0; j < ny; ++j)
      for (int64_t i = 0; i < nx; ++i) {
        const double d[3] = {double(i) + 0.5 - centre[0], double(j) + 0.5 - centre[1], double(k) + 0.5 - centre[2]};
        double p[3];  // in the solid's own frame: R^T d
        for (int a = 0; a < 3; ++a) p[a] = R[0][a] * d[0] + R[1][a] * d[1] + R[2][a] * d[2];
        const bool inside = shape == 0   ? p[0] * p[0] + p[1] * p[1] + p[2] * p[2] <= r * r
                            : shape == 1 ? std::max({std::abs(p[0]), std::abs(p[1]), std::abs(p[2])}) <= half_side
                                         : p[0] * p[0] + p[1] * p[1] <= rc * rc && std::abs(p[2]) <= rc;
        float& v = image[static_cast<size_t>((k * ny + j) * nx + i)];
        v = static_cast<float>(3.0 * 0.15 * v + (inside ? contrast : 0.0) + o.noise * rng.normal());
      }
  io::Image out;
  out.voxels = empty({nz, ny, nx}, DType::f32);
  std::copy(image.begin(), image.end(), out.voxels.data<float>());
  out.spacing = {1, 1, 1};
  return out;
}

// An MSD-style folder: imagesTr, imagesTs and dataset.json with each case's class as its label.
inline void write_synthetic_shapes_dataset(const std::string& directory, int64_t training, int64_t test, const ShapeOptions& o,
                                           uint64_t seed) {
  namespace fs = std::filesystem;
  for (const char* sub : {"imagesTr", "imagesTs"}) fs::create_directories(fs::path(directory) / sub);
  std::string entries, tests;
  for (int64_t n = 0; n < training + test; ++n) {
    Random rng = Random(seed).fork(static_cast<uint64_t>(n));
    const int64_t shape = n % o.classes;  // balanced classes
    const io::Image image = synthetic_shape(shape, o, rng);
    char name[48];
    std::snprintf(name, sizeof(name), "shape_%03lld.nii.gz", static_cast<long long>(n));
    const std::string folder = n < training ? "imagesTr" : "imagesTs";
    io::write_nifti((fs::path(directory) / folder / name).string(), image);
    std::string& list = n < training ? entries : tests;
    list += std::string(list.empty() ? "" : ",\n    ") + "{\"image\": \"./" + folder + "/" + name + "\", \"label\": " + std::to_string(shape) + "}";
  }
  std::string labels;
  for (int64_t c = 0; c < o.classes; ++c)
    labels += std::string(c ? ", " : "") + "\"" + std::to_string(c) + "\": \"" + shape_names()[static_cast<size_t>(c)] + "\"";
  const std::string json = "{\n  \"name\": \"vox synthetic shapes\",\n  \"description\": \"one solid per volume; the class is its shape\",\n"
                           "  \"tensorImageSize\": \"3D\",\n  \"modality\": {\"0\": \"synthetic\"},\n  \"labels\": {" + labels +
                           "},\n  \"numTraining\": " + std::to_string(training) + ",\n  \"numTest\": " + std::to_string(test) +
                           ",\n  \"training\": [\n    " + entries + "\n  ],\n  \"test\": [\n    " + tests + "\n  ]\n}\n";
  io::write_file_atomically((fs::path(directory) / "dataset.json").string(), [&](std::ofstream& out) { out << json; });
}

// A volume as a classifier sees it: z-scored and resized to `input` (i, j, k), channels last.
inline io::Image prepare_volume(io::Image image, const Index3& input) {
  image.voxels = z_score(image.voxels);
  image = resize(image, input, ResizeMode::linear);
  if (image.voxels.rank() == 3) image.voxels = image.voxels.reshape({image.depth(), image.height(), image.width(), 1});
  return image;
}

struct VolumeLoaderOptions {
  int64_t batch_size = 8;
  bool augment = true;
  AugmentConfig augmentation;
  uint64_t seed = 0;
  int threads = 0;  // 0: one per hardware thread
};

// Batches of whole volumes (all of one size) and their classes: image [B, D, H, W, C] f32, label [B] u8.
class VolumeLoader : public BatchSource {
 public:
  VolumeLoader(std::vector<io::Image> volumes, std::vector<int64_t> classes, VolumeLoaderOptions options)
      : volumes_(std::move(volumes)), classes_(std::move(classes)), o_(std::move(options)) {
    VOX_CHECK(!volumes_.empty() && volumes_.size() == classes_.size(), "VolumeLoader", volumes_.size(), " volumes for ",
              classes_.size(), " classes");
    VOX_CHECK(o_.batch_size >= 1, "VolumeLoader", "batch_size must be positive");
    for (size_t n = 0; n < volumes_.size(); ++n) {
      VOX_CHECK(volumes_[n].voxels.shape() == volumes_[0].voxels.shape(), "VolumeLoader", "volume ", n, " is ",
                volumes_[n].voxels.shape(), " but volume 0 is ", volumes_[0].voxels.shape(), "; resize them to one input size");
      VOX_CHECK(classes_[n] >= 0 && classes_[n] < 256, "VolumeLoader", "class ", classes_[n], " of volume ", n, " is outside [0, 255]");
    }
  }

  int64_t batch_size() const override { return o_.batch_size; }

  Batch items(int64_t epoch, int64_t index, const std::vector<int64_t>& items) const override {
    const int64_t b = o_.batch_size, n_items = static_cast<int64_t>(items.size()), per_item = volumes_[0].voxels.numel();
    for (int64_t item : items) VOX_CHECK(item >= 0 && item < b, "VolumeLoader", "item ", item, " of a batch of ", b);
    const io::Image& first = volumes_[0];
    Batch out{empty({n_items, first.depth(), first.height(), first.width(), first.channels()}, DType::f32), empty({n_items}, DType::u8)};
    std::vector<std::thread> workers;
    const int64_t threads = std::min<int64_t>(n_items, o_.threads > 0 ? o_.threads : std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
    for (int64_t t = 0; t < threads; ++t)
      workers.emplace_back([&, t] {
        try {
          for (int64_t at = t; at < n_items; at += threads) {
            const int64_t item = items[static_cast<size_t>(at)];
            Random rng = Random(o_.seed).fork(static_cast<uint64_t>(epoch)).fork(static_cast<uint64_t>(index * b + item));
            const size_t n = static_cast<size_t>(rng.integer(0, static_cast<int64_t>(volumes_.size())));
            Sample s{volumes_[n], {}};
            s.image.voxels = s.image.voxels.clone();
            if (o_.augment) augment(s, o_.augmentation, rng);
            const Tensor image = s.image.voxels.to(DType::f32).contiguous();
            std::copy(image.data<float>(), image.data<float>() + per_item, out.image.data<float>() + at * per_item);
            out.label.data<uint8_t>()[at] = static_cast<uint8_t>(classes_[n]);
          }
        } catch (...) {
          errors[static_cast<size_t>(t)] = std::current_exception();
        }
      });
    for (std::thread& w : workers) w.join();
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    return out;
  }

 private:
  std::vector<io::Image> volumes_;
  std::vector<int64_t> classes_;
  VolumeLoaderOptions o_;
};

}  // namespace vox::data
