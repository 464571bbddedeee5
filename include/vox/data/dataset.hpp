#pragma once
// Datasets on disk, their preprocessing cache, and the patch loader that feeds training.
//
//   - load_msd_dataset: a Medical Segmentation Decathlon folder (dataset.json with "training"
//     [{image, label}] and "test" [paths], "modality" and "labels" as {"0": "background"}) or an
//     nnU-Net v2 raw folder (dataset.json with "channel_names" and "labels" as {"background": 0};
//     cases found as imagesTr/<id>_0000<ending> with labelsTr/<id><ending>). Missing files and
//     malformed JSON raise vox::Error naming them. load_folder_dataset pairs the files of an
//     images folder and a labels folder by name.
//   - preprocess_case: read, check that image and label share a grid, crop to the non-zero
//     region (nnU-Net), resample to a target spacing (trilinear / nearest), normalise (nnU-Net's
//     CT scheme with the dataset's foreground statistics, or a per-image z-score).
//   - PreprocessCache: preprocessed cases stored as safetensors under a folder named by a
//     fingerprint of the preprocessing options and of each source file's size and time, so a
//     second run reads them instead of recomputing, and any change recomputes.
//   - PatchLoader: batches of patches, a pure function of (seed, epoch, batch index): each item
//     draws its case, crop and augmentation from its own random stream, so any number of threads
//     gives the same batches. As nnU-Net, a third of each batch (the last items) is centred on
//     foreground; the rest are placed uniformly. Items are built in parallel, and the next batch
//     is prepared on a background thread while the current one is used.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vox/data/augment.hpp"
#include "vox/data/crop_pad.hpp"
#include "vox/data/intensity.hpp"
#include "vox/data/resample.hpp"
#include "vox/data/sampling.hpp"
#include "vox/io/json.hpp"
#include "vox/io/nifti.hpp"
#include "vox/io/safetensors.hpp"

namespace vox::data {

struct DatasetCase {
  std::string id, image, label;  // label: a label map's path; empty for unlabelled or classification cases
  int64_t class_index = -1;      // classification: the case's class; -1 when it has none
};

struct MsdDataset {
  std::string root, name;
  std::vector<std::string> channels;     // modality names, in channel order
  std::vector<std::string> label_names;  // by label value
  std::vector<DatasetCase> training, test;
  int64_t classes() const { return static_cast<int64_t>(label_names.size()); }
  // A classification dataset: each training case has a class (a number as its "label").
  bool classification() const { return !training.empty() && training.front().class_index >= 0; }
};

namespace dataset_detail {
namespace fs = std::filesystem;

inline std::string resolve(const std::string& root, const std::string& relative) {
  const fs::path p = fs::path(root) / fs::path(relative).lexically_normal();
  VOX_CHECK(fs::exists(p), "dataset", root, ": ", relative, " is listed in dataset.json but does not exist");
  return p.string();
}
inline std::string stem_of(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  for (const char* ext : {".nii.gz", ".nii", ".mha", ".nrrd"})
    if (name.size() > std::strlen(ext) && name.compare(name.size() - std::strlen(ext), std::strlen(ext), ext) == 0)
      return name.substr(0, name.size() - std::strlen(ext));
  return name;
}
inline bool is_integer(const std::string& s) { return !s.empty() && std::all_of(s.begin(), s.end(), ::isdigit); }

// {"0": "a", "1": "b"} (MSD) or {"a": 0, "b": 1} (nnU-Net v2) into names by value.
inline std::vector<std::string> names_by_value(const json::Value& object, const std::string& what) {
  std::map<int64_t, std::string> by_value;
  for (const auto& [key, value] : object.as_object(what.c_str())) {
    if (is_integer(key)) by_value[static_cast<int64_t>(io::parse_number(key, what + " key"))] = value.as_string(what.c_str());
    else by_value[value.as_int64(what.c_str())] = key;
  }
  std::vector<std::string> out;
  for (const auto& [value, name] : by_value) {
    VOX_CHECK(value == static_cast<int64_t>(out.size()), "dataset", what, " values must run 0, 1, 2, ... without gaps; ", value,
              " follows ", out.size() - 1);
    out.push_back(name);
  }
  return out;
}
}  // namespace dataset_detail

inline MsdDataset load_msd_dataset(const std::string& root) {
  using namespace dataset_detail;
  const std::string json_path = (fs::path(root) / "dataset.json").string();
  VOX_CHECK(fs::exists(json_path), "dataset", root, " has no dataset.json (expected the Medical Segmentation Decathlon or nnU-Net v2 layout)");
  const std::vector<char> bytes = io::read_file(json_path);
  const json::Value doc = json::parse(std::string(bytes.begin(), bytes.end()), json_path);
  MsdDataset d;
  d.root = root;
  if (const json::Value* name = doc.find("name")) d.name = name->as_string("name");
  const json::Value* modality = doc.find("modality");
  if (!modality) modality = doc.find("channel_names");
  VOX_CHECK(modality != nullptr, "dataset", json_path, ": neither \"modality\" nor \"channel_names\"");
  d.channels = names_by_value(*modality, "modality");
  const json::Value* labels = doc.find("labels");
  VOX_CHECK(labels != nullptr, "dataset", json_path, ": no \"labels\"");
  d.label_names = names_by_value(*labels, "labels");
  VOX_CHECK(d.classes() >= 2, "dataset", json_path, ": at least background and one class are needed");
  if (const json::Value* training = doc.find("training")) {
    // {"image": path, "label": path} for segmentation, {"image": path, "label": class} for classification
    auto entry = [&](const json::Value& c, const char* list) {
      const json::Value *image = c.find("image"), *label = c.find("label");
      VOX_CHECK(image && label, "dataset", json_path, ": a \"", list, "\" entry lacks \"image\" or \"label\"");
      DatasetCase out{stem_of(image->as_string()), resolve(root, image->as_string()), "", -1};
      if (label->is_number()) {
        out.class_index = label->as_int64("label");
        VOX_CHECK(out.class_index >= 0 && out.class_index < d.classes(), "dataset", json_path, ": ", out.id, " has class ",
                  out.class_index, " but \"labels\" names ", d.classes(), " classes (0 to ", d.classes() - 1, ")");
      } else {
        out.label = resolve(root, label->as_string("label"));
      }
      return out;
    };
    for (const json::Value& c : training->as_array("training")) d.training.push_back(entry(c, "training"));
    for (const DatasetCase& c : d.training)
      VOX_CHECK((c.class_index >= 0) == (d.training.front().class_index >= 0), "dataset", json_path,
                ": training entries mix label maps and class numbers (", d.training.front().id, " and ", c.id, ")");
    if (const json::Value* test = doc.find("test"))
      for (const json::Value& t : test->as_array("test"))
        d.test.push_back(t.is_object() ? entry(t, "test") : DatasetCase{stem_of(t.as_string()), resolve(root, t.as_string()), "", -1});
  } else {
    // nnU-Net v2: labelsTr/<id><ending>, imagesTr/<id>_0000<ending> (one file per channel; vox reads _0000)
    const json::Value* ending = doc.find("file_ending");
    const std::string ext = ending ? ending->as_string("file_ending") : ".nii.gz";
    VOX_CHECK(d.channels.size() == 1, "dataset", json_path, ": nnU-Net layouts with ", d.channels.size(),
              " channels in separate files are not read yet; merge them into one 4-D image per case (MSD layout)");
    std::vector<std::string> ids;
    for (const auto& entry : fs::directory_iterator(fs::path(root) / "labelsTr")) {
      const std::string name = entry.path().filename().string();
      if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0)
        ids.push_back(name.substr(0, name.size() - ext.size()));
    }
    std::sort(ids.begin(), ids.end());
    for (const std::string& id : ids)
      d.training.push_back({id, resolve(root, "imagesTr/" + id + "_0000" + ext), resolve(root, "labelsTr/" + id + ext)});
  }
  VOX_CHECK(!d.training.empty(), "dataset", json_path, ": no training cases");
  return d;
}

// Image/label pairs from two folders: every image file (.nii, .nii.gz) of `images` whose name,
// or whose name less an nnU-Net channel suffix "_0000", names a file in `labels`.
inline MsdDataset load_folder_dataset(const std::string& images, const std::string& labels, int64_t classes) {
  using namespace dataset_detail;
  VOX_CHECK(fs::is_directory(images) && fs::is_directory(labels), "dataset", images, " and ", labels, " must both be folders");
  VOX_CHECK(classes >= 2, "dataset", "classes must be at least 2 (background and one class), got ", classes);
  MsdDataset d;
  d.root = images;
  d.name = fs::path(images).parent_path().filename().string();
  d.channels = {"image"};
  d.label_names.push_back("background");
  for (int64_t c = 1; c < classes; ++c) d.label_names.push_back("class " + std::to_string(c));
  std::vector<std::string> unpaired;
  for (const auto& entry : fs::directory_iterator(images)) {
    const std::string name = entry.path().filename().string();
    const std::string stem = stem_of(name);
    if (stem == name) continue;  // not an image file
    const std::string ext = name.substr(stem.size());
    std::string id = stem;
    if (id.size() > 5 && id.compare(id.size() - 5, 5, "_0000") == 0) id = id.substr(0, id.size() - 5);
    const fs::path label = fs::path(labels) / (id + ext), same = fs::path(labels) / name;
    if (fs::exists(label)) d.training.push_back({id, entry.path().string(), label.string()});
    else if (fs::exists(same)) d.training.push_back({id, entry.path().string(), same.string()});
    else unpaired.push_back(name);
  }
  std::sort(d.training.begin(), d.training.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
  VOX_CHECK(!d.training.empty(), "dataset", "no image in ", images, " has a label of the same name in ", labels,
            unpaired.empty() ? std::string() : " (for example " + unpaired.front() + ")");
  return d;
}

enum class Normalization { none, zscore, ct };

struct PreprocessOptions {
  std::array<double, 3> spacing{0, 0, 0};  // 0: keep the case's spacing
  Normalization normalization = Normalization::zscore;
  bool crop_to_nonzero = true;
  ForegroundIntensities ct;  // for Normalization::ct (from foreground_intensities over the training set)

  std::string fingerprint() const {
    char text[256];
    std::snprintf(text, sizeof(text), "s%.6g,%.6g,%.6g;n%d;c%d;ct%.9g,%.9g,%.9g,%.9g", spacing[0], spacing[1], spacing[2],
                  static_cast<int>(normalization), crop_to_nonzero ? 1 : 0, ct.mean, ct.std, ct.percentile_00_5, ct.percentile_99_5);
    return text;
  }
};

// One case, ready for training: image f32 [D, H, W, C], label u8 [D, H, W] (undefined for
// unlabelled cases), on the same grid.
inline Sample preprocess_case(const DatasetCase& c, const PreprocessOptions& o, int64_t classes) {
  Sample s;
  s.image = io::read_nifti(c.image).image;
  if (!c.label.empty()) {
    s.label = io::read_nifti(c.label).image;
    VOX_CHECK(s.label.voxels.rank() == 3, "dataset", c.label, ": a label must be one 3-D volume");
    const Index3 a = detail::size_of(s.image), b = detail::size_of(s.label);
    VOX_CHECK(a == b, "dataset", c.id, ": image ", a[0], "x", a[1], "x", a[2], " and label ", b[0], "x", b[1], "x", b[2], " differ in size");
    for (int r = 0; r < 3; ++r) {
      VOX_CHECK(std::abs(s.image.spacing[r] - s.label.spacing[r]) <= 1e-3 * s.image.spacing[r] &&
                    std::abs(s.image.origin[r] - s.label.origin[r]) <= 1e-2,
                "dataset", c.id, ": image and label geometry differ (spacing or origin)");
    }
    const std::vector<int64_t> v = s.label.voxels.to_vector<int64_t>();
    for (size_t n = 0; n < v.size(); ++n)
      VOX_CHECK(v[n] >= 0 && v[n] < classes, "dataset", c.label, ": label value ", v[n], " at voxel ", n, " is not one of the ", classes,
                " classes");
    s.label.voxels = s.label.voxels.to(DType::u8);
  }
  if (o.crop_to_nonzero) {
    const Box box = foreground_box(s.image, 0.0);
    s.image = extract_region(s.image, box);
    if (s.has_label()) s.label = extract_region(s.label, box);
  }
  if (o.spacing[0] > 0) {
    s.image = resample_to_spacing(s.image, o.spacing, Interpolation::linear);
    if (s.has_label()) s.label = resample_to_spacing(s.label, o.spacing, Interpolation::nearest);
  }
  if (o.normalization == Normalization::ct) s.image.voxels = ct_normalize(s.image.voxels, o.ct);
  else if (o.normalization == Normalization::zscore) s.image.voxels = z_score(s.image.voxels);
  else s.image.voxels = s.image.voxels.to(DType::f32);
  if (s.image.voxels.rank() == 3) s.image.voxels = s.image.voxels.reshape({s.image.depth(), s.image.height(), s.image.width(), 1});
  return s;
}

// Preprocessed cases on disk, keyed by options and source files.
class PreprocessCache {
 public:
  PreprocessCache(std::string directory, PreprocessOptions options) : options_(std::move(options)) {
    const std::string key = options_.fingerprint();
    directory_ = (std::filesystem::path(directory) / ("v1-" + hex(std::hash<std::string>{}(key)))).string();
  }
  const std::string& directory() const { return directory_; }

  // The case from the cache, or preprocessed now and stored. `hit` says which.
  Sample get(const DatasetCase& c, int64_t classes, bool* hit = nullptr) {
    namespace fs = std::filesystem;
    const std::string path = (fs::path(directory_) / (c.id + "-" + hex(source_key(c)) + ".safetensors")).string();
    if (fs::exists(path)) {
      if (hit) *hit = true;
      return load(path);
    }
    if (hit) *hit = false;
    Sample s = preprocess_case(c, options_, classes);
    fs::create_directories(directory_);
    std::map<std::string, Tensor> tensors{{"image", s.image.voxels}};
    if (s.has_label()) tensors["label"] = s.label.voxels;
    std::map<std::string, std::string> meta;
    for (int a = 0; a < 3; ++a) {
      meta["spacing." + std::to_string(a)] = number(s.image.spacing[a]);
      meta["origin." + std::to_string(a)] = number(s.image.origin[a]);
      for (int b = 0; b < 3; ++b) meta["direction." + std::to_string(a) + std::to_string(b)] = number(s.image.direction[a][b]);
    }
    io::save_safetensors(path, tensors, meta);
    return s;
  }

 private:
  static std::string hex(size_t v) {
    char text[24];
    std::snprintf(text, sizeof(text), "%016zx", v);
    return text;
  }
  static std::string number(double v) {
    char text[40];
    std::snprintf(text, sizeof(text), "%.17g", v);
    return text;
  }
  static size_t source_key(const DatasetCase& c) {
    namespace fs = std::filesystem;
    std::string key;
    for (const std::string& p : {c.image, c.label}) {
      if (p.empty()) continue;
      key += p + ":" + std::to_string(fs::file_size(p)) + ":" +
             std::to_string(fs::last_write_time(p).time_since_epoch().count()) + ";";
    }
    return std::hash<std::string>{}(key);
  }
  static Sample load(const std::string& path) {
    const io::Safetensors st = io::load_safetensors(path);
    Sample s;
    s.image.voxels = st.at("image");
    if (st.tensors.count("label")) s.label.voxels = st.at("label");
    auto meta = [&](const std::string& key) {
      const auto it = st.metadata.find(key);
      VOX_CHECK(it != st.metadata.end(), "PreprocessCache", path, " lacks \"", key, "\"; delete the cache folder to rebuild it");
      return io::parse_number(it->second, path + " " + key);
    };
    for (int a = 0; a < 3; ++a) {
      s.image.spacing[a] = meta("spacing." + std::to_string(a));
      s.image.origin[a] = meta("origin." + std::to_string(a));
      for (int b = 0; b < 3; ++b) s.image.direction[a][b] = meta("direction." + std::to_string(a) + std::to_string(b));
    }
    s.label.spacing = s.image.spacing, s.label.origin = s.image.origin, s.label.direction = s.image.direction;
    return s;
  }

  PreprocessOptions options_;
  std::string directory_;
};

struct LoaderOptions {
  Index3 patch{64, 64, 64};  // (i, j, k)
  int64_t batch_size = 2;
  double foreground_fraction = 0.33;  // nnU-Net's oversample_foreground_percent
  bool augment = true;
  AugmentConfig augmentation;
  uint64_t seed = 0;
  int threads = 0;  // 0: one per hardware thread
};

// A batch: image [B, D, H, W, C] f32 and label [B, D, H, W] u8 (patch-sized, channels last), or
// label [B] u8 (the class of each item) for classification.
struct Batch {
  Tensor image, label;
};

// What the trainer draws batches from. A batch is a pure function of (epoch, index), so that a
// resumed run sees the batches the uninterrupted one would have, and each of its items a pure
// function of (epoch, index, item), so that data-parallel ranks can each build their share.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int64_t batch_size() const = 0;
  // Items `items` (positions in [0, batch_size)) of batch `index` of `epoch`, in that order.
  virtual Batch items(int64_t epoch, int64_t index, const std::vector<int64_t>& items) const = 0;
  // The whole batch.
  virtual Batch batch(int64_t epoch, int64_t index) const {
    std::vector<int64_t> all(static_cast<size_t>(batch_size()));
    for (int64_t i = 0; i < batch_size(); ++i) all[static_cast<size_t>(i)] = i;
    return items(epoch, index, all);
  }

  // Batches of one epoch in order, each prepared while the previous one is being used.
  class Epoch {
   public:
    Epoch(const BatchSource& loader, int64_t epoch, int64_t batches) : loader_(loader), epoch_(epoch), batches_(batches) {
      if (batches_ > 0) next_ = prepare(0);
    }
    bool done() const { return index_ >= batches_; }
    Batch next() {
      VOX_CHECK(!done(), "BatchSource::Epoch", "all ", batches_, " batches were taken");
      Batch current = next_.get();
      if (++index_ < batches_) next_ = prepare(index_);
      return current;
    }

   private:
    // (captures no `this`, so an Epoch may be moved while a batch is being prepared)
    std::future<Batch> prepare(int64_t index) {
      return std::async(std::launch::async, [&loader = loader_, epoch = epoch_, index] { return loader.batch(epoch, index); });
    }
    const BatchSource& loader_;
    int64_t epoch_, batches_, index_ = 0;
    std::future<Batch> next_;
  };
  Epoch epoch(int64_t epoch, int64_t batches) const { return Epoch(*this, epoch, batches); }

};

class PatchLoader : public BatchSource {
 public:
  PatchLoader(std::vector<Sample> cases, LoaderOptions options) : cases_(std::move(cases)), o_(std::move(options)) {
    VOX_CHECK(!cases_.empty(), "PatchLoader", "no cases");
    VOX_CHECK(o_.batch_size >= 1, "PatchLoader", "batch_size must be positive");
    for (const Sample& s : cases_) {
      VOX_CHECK(s.has_label(), "PatchLoader", "every training case needs a label");
      VOX_CHECK(s.image.channels() == cases_[0].image.channels(), "PatchLoader", "cases differ in channel count");
    }
  }

  int64_t batch_size() const override { return o_.batch_size; }

  // Items of batch `index` of `epoch`: the same for any thread count and any selection.
  Batch items(int64_t epoch, int64_t index, const std::vector<int64_t>& items) const override {
    const int64_t b = o_.batch_size, n_items = static_cast<int64_t>(items.size()), channels = cases_[0].image.channels();
    for (int64_t item : items) VOX_CHECK(item >= 0 && item < b, "PatchLoader", "item ", item, " of a batch of ", b);
    const Index3& p = o_.patch;
    Batch out{empty({n_items, p[2], p[1], p[0], channels}, DType::f32), empty({n_items, p[2], p[1], p[0]}, DType::u8)};
    const int64_t per_image = p[0] * p[1] * p[2] * channels, per_label = p[0] * p[1] * p[2];
    auto make = [&](int64_t at) {
      const int64_t item = items[static_cast<size_t>(at)];
      Random rng = Random(o_.seed).fork(static_cast<uint64_t>(epoch)).fork(static_cast<uint64_t>(index * b + item));
      const Sample& source = cases_[static_cast<size_t>(rng.integer(0, static_cast<int64_t>(cases_.size())))];
      // nnU-Net: the last round(b * fraction) items of a batch are centred on foreground
      const bool foreground = item >= b - static_cast<int64_t>(std::llround(double(b) * o_.foreground_fraction));
      const Index3 n = detail::size_of(source.image);
      const Box box = foreground ? pos_neg_crop_box(source.label, p, 1, 0, rng) : random_crop_box(n, p, rng);
      Sample s{extract_region(source.image, box), extract_region(source.label, box)};
      if (o_.augment) augment(s, o_.augmentation, rng);
      const Tensor image = s.image.voxels.to(DType::f32).contiguous(), label = s.label.voxels.to(DType::u8).contiguous();
      std::copy(image.data<float>(), image.data<float>() + per_image, out.image.data<float>() + at * per_image);
      std::copy(label.data<uint8_t>(), label.data<uint8_t>() + per_label, out.label.data<uint8_t>() + at * per_label);
    };
    const int threads = o_.threads > 0 ? o_.threads : std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> workers;
    std::exception_ptr error;
    std::mutex error_mutex;
    for (int t = 0; t < std::min<int64_t>(threads, n_items); ++t)
      workers.emplace_back([&, t] {
        for (int64_t at = t; at < n_items; at += std::min<int64_t>(threads, n_items)) {
          try {
            make(at);
          } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
          }
        }
      });
    for (std::thread& w : workers) w.join();
    if (error) std::rethrow_exception(error);
    return out;
  }

  const std::vector<Sample>& cases() const { return cases_; }

 private:
  std::vector<Sample> cases_;
  LoaderOptions o_;
};

}  // namespace vox::data
