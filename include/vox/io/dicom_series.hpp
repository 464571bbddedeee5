#pragma once
// DICOM series: files (or the frames of one multi-frame file) assembled into an oriented volume.
//
//   - A directory is scanned (recursively) and its files grouped by SeriesInstanceUID; files that
//     are not DICOM, or hold no image, are skipped and counted. One series is read: the one asked
//     for, else the one with the most slices, and the choice is reported.
//   - Slices are sorted by ImagePositionPatient projected onto the normal of
//     ImageOrientationPatient (row cosine x column cosine), never by InstanceNumber or file name.
//     The slice spacing is the distance between those projections.
//   - Problems are detected and reported: differing orientations, sizes or pixel spacings (always
//     errors), two slices at one position, missing slices and uneven spacing, and gantry tilt
//     (slices displaced within their plane). The last three are errors unless `allow_uneven`;
//     then they become warnings, the slices are stacked at their mean spacing along the normal,
//     and the warning says so.
//   - Multi-frame files: enhanced objects give each frame's position in the per-frame functional
//     groups; RT dose gives GridFrameOffsetVector; frames without positions are stacked at
//     SpacingBetweenSlices (or SliceThickness), with a warning.
//   - Voxels are [slices, rows, columns] (+ samples as channels): the stored values, or, where any
//     slice has a RescaleSlope/RescaleIntercept other than 1/0, f32 modality values (HU for CT).
//     YBR_FULL and YBR_FULL_422 colour is converted to RGB as pydicom converts it.
//   - Geometry (see image.hpp): direction columns are the row cosine (along i), the column cosine
//     (along j) and the normal (along k); spacing is (PixelSpacing[1], PixelSpacing[0], slice
//     spacing); the origin is the first sorted slice's position. All LPS, as DICOM is.
#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <numbers>
#include <string>
#include <vector>

#include "kernels/cpu/parallel.hpp"
#include "vox/io/dicom_pixels.hpp"
#include "vox/io/image.hpp"

namespace vox::io {

struct DicomSeriesOptions {
  std::string series_uid;     // empty: the series with the most slices
  bool allow_uneven = false;  // missing slices, uneven spacing, gantry tilt: warn instead of fail
  bool recursive = true;      // scan subdirectories too
  bool rescale = true;        // apply RescaleSlope/RescaleIntercept
  std::function<void(const std::string&)> report;  // choices and warnings as they happen (may be empty)
  ReadLimits limits;          // the volume's decoded bytes may not pass limits.max_bytes
};

struct DicomSeriesSummary {
  std::string uid, description, modality;
  std::vector<std::string> paths;
  int64_t rows = 0, columns = 0;
};

struct DicomVolume {
  Image image;
  std::string series_uid, modality, description, transfer_syntax, photometric;
  int64_t slices = 0;
  DicomRescale rescale;  // of the first slice
  DicomWindow window;    // of the first slice (absent: width 0)
  std::vector<std::string> warnings;
  std::vector<DicomSeriesSummary> series;  // every series found beside the one read
};

namespace dicom_detail {

using Vec3 = std::array<double, 3>;
inline Vec3 cross(const Vec3& a, const Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
inline double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

// One slice of the volume: a whole single-frame file, or one frame of a multi-frame file.
struct Slice {
  size_t file = 0;
  int64_t frame = 0;
  Vec3 position{0, 0, 0};
  std::array<double, 6> orientation{1, 0, 0, 0, 1, 0};
  std::array<double, 2> pixel_spacing{1, 1};  // between rows, between columns
  bool has_position = false;
  DicomRescale rescale;
  double along = 0;  // position projected onto the normal
};

template <size_t N>
std::array<double, N> numbers_n(const DicomDataSet& ds, uint32_t tag, const char* what) {
  const std::vector<double> v = ds.numbers(tag);
  VOX_CHECK(v.size() == N, "dicom", ds.source(), ": ", what, " ", DicomDataSet::tag_name(tag), " has ", v.size(), " values, ", N,
            " expected");
  for (const double x : v)
    VOX_CHECK(std::isfinite(x), "dicom", ds.source(), ": ", what, " ", DicomDataSet::tag_name(tag), " holds ", x, ", not a finite number");
  std::array<double, N> out{};
  std::copy(v.begin(), v.end(), out.begin());
  return out;
}

// PixelSpacing: two finite distances above 0 (a spacing of 0 would later divide by zero).
inline std::array<double, 2> spacing_of(const DicomDataSet& ds) {
  const std::array<double, 2> spacing = numbers_n<2>(ds, dicom_tags::pixel_spacing, "pixel spacing");
  VOX_CHECK(spacing[0] > 0 && spacing[1] > 0, "dicom", ds.source(), ": PixelSpacing ", spacing[0], "\\", spacing[1],
            " is not two distances above 0 mm");
  return spacing;
}

// The orientation's row and column cosines, checked to be unit length and orthogonal.
inline std::pair<Vec3, Vec3> cosines(const std::array<double, 6>& o, const std::string& src) {
  Vec3 r{o[0], o[1], o[2]}, c{o[3], o[4], o[5]};
  const double lr = std::sqrt(dot(r, r)), lc = std::sqrt(dot(c, c));
  VOX_CHECK(std::abs(lr - 1) < 1e-2 && std::abs(lc - 1) < 1e-2 && std::abs(dot(r, c)) < 1e-2, "dicom", src,
            ": ImageOrientationPatient is not two orthogonal unit vectors");
  for (double& v : r) v /= lr;
  for (double& v : c) v /= lc;
  return {r, c};
}

// The slices a file contributes: itself, or each of its frames.
inline std::vector<Slice> slices_of(const DicomFile& file, size_t index, std::vector<std::string>& warnings) {
  using namespace dicom_tags;
  const DicomDataSet& ds = file.data;
  const int64_t frames = ds.integer(number_of_frames, 1, 1, int64_t{1} << 20, "NumberOfFrames");
  Slice base;
  base.file = index;
  if (ds.has(image_orientation_patient)) base.orientation = numbers_n<6>(ds, image_orientation_patient, "orientation");
  if (ds.has(pixel_spacing)) base.pixel_spacing = spacing_of(ds);
  if (ds.has(image_position_patient)) {
    base.position = numbers_n<3>(ds, image_position_patient, "position");
    base.has_position = true;
  }
  base.rescale = dicom_rescale(ds);
  if (ds.has(dose_grid_scaling)) base.rescale.slope *= ds.number(dose_grid_scaling);  // RT dose: stored values x scaling = Gy
  // enhanced multi-frame: the shared functional groups, then each frame's own
  auto apply_groups = [&](const DicomDataSet& group, Slice& s) {
    for (const DicomDataSet& item : group.items(plane_orientation_sequence))
      s.orientation = numbers_n<6>(item, image_orientation_patient, "orientation");
    for (const DicomDataSet& item : group.items(pixel_measures_sequence))
      if (item.has(pixel_spacing)) s.pixel_spacing = spacing_of(item);
    for (const DicomDataSet& item : group.items(plane_position_sequence)) {
      s.position = numbers_n<3>(item, image_position_patient, "position");
      s.has_position = true;
    }
  };
  for (const DicomDataSet& shared : ds.items(shared_functional_groups)) apply_groups(shared, base);
  std::vector<Slice> out;
  const std::vector<DicomDataSet>& per_frame = ds.items(per_frame_functional_groups);
  const std::vector<double> offsets = ds.numbers(grid_frame_offset_vector);
  bool positioned = frames == 1 || static_cast<int64_t>(per_frame.size()) == frames || static_cast<int64_t>(offsets.size()) == frames;
  for (int64_t f = 0; f < frames; ++f) {
    Slice s = base;
    s.frame = f;
    if (static_cast<int64_t>(per_frame.size()) == frames) {
      s.has_position = false;
      apply_groups(per_frame[static_cast<size_t>(f)], s);
      s.rescale = dicom_rescale(ds, f);
      positioned = positioned && s.has_position;
    } else if (static_cast<int64_t>(offsets.size()) == frames && base.has_position) {
      const auto [r, c] = cosines(s.orientation, file.path);
      const Vec3 n = cross(r, c);
      for (int a = 0; a < 3; ++a) s.position[a] = base.position[a] + offsets[static_cast<size_t>(f)] * n[a];
    }
    out.push_back(s);
  }
  if (frames > 1 && !positioned) {
    const double step = ds.number(spacing_between_slices, ds.number(slice_thickness, 1.0));
    warnings.push_back(file.path + ": " + std::to_string(frames) + " frames without per-frame positions; stacked " +
                       std::to_string(step) + " mm apart along the normal");
    const auto [r, c] = cosines(base.orientation, file.path);
    const Vec3 n = cross(r, c);
    for (int64_t f = 0; f < frames; ++f)
      for (int a = 0; a < 3; ++a) out[static_cast<size_t>(f)].position[a] = base.position[a] + static_cast<double>(f) * step * n[a];
  }
  return out;
}

inline uint8_t clamp_byte(double v) { return static_cast<uint8_t>(std::clamp(std::round(v), 0.0, 255.0)); }

// YBR_FULL -> RGB (PS3.3 C.7.6.3.1.2, as pydicom's convert_color_space), 8-bit samples.
inline void ybr_full_to_rgb(uint8_t* p, int64_t pixels) {
  for (int64_t n = 0; n < pixels; ++n, p += 3) {
    const double y = p[0], cb = p[1] - 128.0, cr = p[2] - 128.0;
    p[0] = clamp_byte(y + 1.402 * cr);
    p[1] = clamp_byte(y - 0.344136 * cb - 0.714136 * cr);
    p[2] = clamp_byte(y + 1.772 * cb);
  }
}

inline bool is_directory(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec);
}

}  // namespace dicom_detail

// Every series under a directory, largest first. Non-DICOM files are skipped; `skipped` counts them.
inline std::vector<DicomSeriesSummary> scan_dicom_directory(const std::string& directory, bool recursive, int64_t* skipped = nullptr) {
  using namespace dicom_tags;
  VOX_CHECK(dicom_detail::is_directory(directory), "dicom", directory, " is not a directory");
  std::vector<std::string> paths;
  std::error_code ec;
  auto collect = [&](const std::filesystem::directory_entry& entry) {
    if (entry.is_regular_file(ec)) paths.push_back(entry.path().string());
  };
  if (recursive)
    for (const auto& entry : std::filesystem::recursive_directory_iterator(directory, ec)) collect(entry);
  else
    for (const auto& entry : std::filesystem::directory_iterator(directory, ec)) collect(entry);
  VOX_CHECK(!ec, "dicom", "cannot list ", directory, ": ", ec.message());
  std::sort(paths.begin(), paths.end());
  std::map<std::string, DicomSeriesSummary> by_uid;
  int64_t not_images = 0;
  for (const std::string& path : paths) {
    DicomFile file;
    try {
      file = read_dicom_header(path);
    } catch (const Error&) {
      ++not_images;  // not DICOM, or not readable as DICOM: skipped, counted
      continue;
    }
    const DicomDataSet& ds = file.data;
    if (!ds.has(rows) || !ds.has(columns)) {
      ++not_images;  // DICOMDIR, structured reports, RT plans: no image
      continue;
    }
    int64_t height = 0, width = 0;
    try {
      height = ds.integer(rows, 1, 65535, "Rows");
      width = ds.integer(columns, 1, 65535, "Columns");
    } catch (const Error&) {
      ++not_images;  // Rows or Columns that are no image size: skipped, counted
      continue;
    }
    const std::string uid = ds.text(series_instance_uid, "(no SeriesInstanceUID)");
    DicomSeriesSummary& s = by_uid[uid];
    s.uid = uid;
    s.paths.push_back(path);
    if (s.paths.size() == 1) {
      s.description = ds.text(series_description);
      s.modality = ds.text(modality);
      s.rows = height;
      s.columns = width;
    }
  }
  if (skipped) *skipped = not_images;
  std::vector<DicomSeriesSummary> out;
  for (auto& [uid, s] : by_uid) out.push_back(std::move(s));
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.paths.size() > b.paths.size(); });
  return out;
}

// The volume of a list of files of one series (or of one multi-frame file).
inline DicomVolume assemble_dicom_series(const std::vector<std::string>& paths, const DicomSeriesOptions& options = {}) {
  using namespace dicom_detail;
  using namespace dicom_tags;
  VOX_CHECK(!paths.empty(), "dicom", "a series needs at least one file");
  DicomVolume volume;
  auto warn = [&](const std::string& message) {
    volume.warnings.push_back(message);
    if (options.report) options.report("warning: " + message);
  };
  std::vector<DicomFile> files;
  std::vector<Slice> slices;
  std::vector<std::string> frame_warnings;
  uint64_t claimed = 0;
  for (const std::string& path : paths) {  // headers first; pixels once the order is known
    files.push_back(read_dicom_header(path));
    // what the header claims must fit the file and the ceiling before slices are listed for it
    std::error_code ec;
    const uint64_t file_bytes = std::filesystem::file_size(path, ec);
    VOX_CHECK(!ec, "dicom", path, ": cannot read its size: ", ec.message());
    claimed += dicom_claimed_pixel_bytes(files.back(), file_bytes);
    check_read_claim(claimed, options.limits, "dicom", path, "the pixel data of the series up to this file");
    for (Slice& s : slices_of(files.back(), files.size() - 1, frame_warnings)) slices.push_back(s);
  }
  for (const std::string& w : frame_warnings) warn(w);
  const DicomFile& first = files.front();
  const DicomPixelFormat format = dicom_pixel_format(first.data);
  const std::string where = paths.size() == 1 ? paths[0] : "series " + first.data.text(series_instance_uid, "(no SeriesInstanceUID)");

  // the same image size, pixel spacing and orientation everywhere
  for (size_t f = 1; f < files.size(); ++f) {
    const DicomPixelFormat other = dicom_pixel_format(files[f].data);
    VOX_CHECK(other.rows == format.rows && other.columns == format.columns && other.samples == format.samples, "dicom", where, ": ",
              files[f].path, " is ", other.rows, "x", other.columns, "x", other.samples, ", but ", first.path, " is ", format.rows,
              "x", format.columns, "x", format.samples);
  }
  const Slice& s0 = slices.front();
  for (const Slice& s : slices) {
    for (int a = 0; a < 6; ++a)
      VOX_CHECK(std::abs(s.orientation[a] - s0.orientation[a]) < 1e-4, "dicom", where, ": mixed orientations (",
                files[s.file].path, " frame ", s.frame, " differs from ", files[s0.file].path,
                "); a volume needs one ImageOrientationPatient");
    for (int a = 0; a < 2; ++a)
      VOX_CHECK(std::abs(s.pixel_spacing[a] - s0.pixel_spacing[a]) < 1e-4, "dicom", where, ": PixelSpacing differs between ",
                files[s0.file].path, " and ", files[s.file].path);
  }
  const auto [row_cosine, column_cosine] = cosines(s0.orientation, where);
  const Vec3 normal = cross(row_cosine, column_cosine);
  for (Slice& s : slices) s.along = dot(s.position, normal);
  std::stable_sort(slices.begin(), slices.end(), [](const Slice& a, const Slice& b) { return a.along < b.along; });

  // spacing along the normal, and what is wrong with it
  double slice_spacing = first.data.number(spacing_between_slices, first.data.number(slice_thickness, 1.0));
  if (slices.size() > 1) {
    std::vector<double> gaps;
    for (size_t k = 1; k < slices.size(); ++k) {
      const double gap = slices[k].along - slices[k - 1].along;
      VOX_CHECK(gap > 1e-4, "dicom", where, ": ", files[slices[k - 1].file].path, " and ", files[slices[k].file].path,
                " lie at the same position (", slices[k].along,
                " mm along the normal); several echoes, phases or acquisitions in one series are not one volume");
      gaps.push_back(gap);
    }
    std::vector<double> sorted = gaps;
    std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2), sorted.end());
    const double median = sorted[sorted.size() / 2];
    const double mean = (slices.back().along - slices.front().along) / static_cast<double>(slices.size() - 1);
    std::vector<std::string> problems;
    for (size_t k = 0; k < gaps.size(); ++k) {
      if (std::abs(gaps[k] - median) <= 0.01 * median) continue;
      const double ratio = gaps[k] / median;
      const long missing = std::lround(ratio) - 1;
      problems.push_back(missing >= 1 && std::abs(ratio - std::round(ratio)) < 0.05
                             ? std::to_string(missing) + " missing slice(s) between " + std::to_string(slices[k].along) + " and " +
                                   std::to_string(slices[k + 1].along) + " mm"
                             : "uneven spacing: " + std::to_string(gaps[k]) + " mm between " + std::to_string(slices[k].along) +
                                   " and " + std::to_string(slices[k + 1].along) + " mm where the median is " +
                                   std::to_string(median) + " mm");
    }
    // gantry tilt: consecutive positions displaced within the slice plane
    double worst_tilt = 0;
    for (size_t k = 1; k < slices.size(); ++k) {
      Vec3 d;
      for (int a = 0; a < 3; ++a) d[a] = slices[k].position[a] - slices[k - 1].position[a];
      const double along = dot(d, normal);
      const double in_plane = std::sqrt(std::max(0.0, dot(d, d) - along * along));
      worst_tilt = std::max(worst_tilt, std::atan2(in_plane, along) * 180.0 / std::numbers::pi);
    }
    if (worst_tilt > 0.05)
      problems.push_back("gantry tilt: slices are displaced within their plane by up to " + std::to_string(worst_tilt) +
                         " degrees (GantryDetectorTilt " + first.data.text(gantry_tilt, "absent") + ")");
    if (!problems.empty()) {
      std::string all;
      for (const std::string& p : problems) all += (all.empty() ? "" : "; ") + p;
      VOX_CHECK(options.allow_uneven, "dicom", where, ": ", all, " (allow_uneven / --allow-uneven stacks the slices at their mean spacing)");
      warn(where + ": " + all + "; the " + std::to_string(slices.size()) + " slices are stacked " + std::to_string(mean) +
           " mm apart along the normal");
    }
    slice_spacing = mean;
  }
  VOX_CHECK(slice_spacing > 0 && std::isfinite(slice_spacing), "dicom", where, ": slice spacing ", slice_spacing, " is not positive");

  // voxels: each file read in full and decoded once (files in parallel), its frames written to
  // their sorted places
  bool rescaled = false;
  for (const Slice& s : slices) rescaled = rescaled || (options.rescale && !s.rescale.identity());
  const int64_t n = static_cast<int64_t>(slices.size()), per_slice = format.rows * format.columns * format.samples;
  Shape shape{n, format.rows, format.columns};
  if (format.samples > 1) shape.push_back(format.samples);
  const std::string photometric = dicom_decoded_photometric(first);
  const bool ybr = photometric == "YBR_FULL" || photometric == "YBR_FULL_422";
  std::vector<std::vector<int64_t>> places(files.size());  // sorted positions k of each file's slices
  for (int64_t k = 0; k < n; ++k) places[slices[static_cast<size_t>(k)].file].push_back(k);
  const DType stored_type = dicom_detail::stored_dtype(format);
  const DType voxel_type = rescaled ? DType::f32 : stored_type;
  check_read_claim(static_cast<uint64_t>(n) * static_cast<uint64_t>(per_slice) * dtype_size(voxel_type), options.limits, "dicom", where,
                   "the volume of " + std::to_string(n) + " slices");
  Tensor voxels = empty(shape, voxel_type);
  std::vector<std::string> errors(files.size());
  kernels::cpu::parallel_for(0, static_cast<int64_t>(files.size()), 1, [&](int64_t first_file, int64_t last_file) {
    for (int64_t f = first_file; f < last_file; ++f) {
      try {
        const Tensor source =
            dicom_stored_values(read_dicom(files[static_cast<size_t>(f)].path, {.limits = options.limits}), options.limits);
        VOX_CHECK(source.dtype() == stored_type && source.numel() / source.size(0) == per_slice, "dicom", where, ": ",
                  files[static_cast<size_t>(f)].path, " stores other pixels (", dtype_name(source.dtype()), ") than ", first.path, " (",
                  dtype_name(stored_type), ")");
        for (int64_t k : places[static_cast<size_t>(f)]) {
          const Slice& s = slices[static_cast<size_t>(k)];
          VOX_CHECK(s.frame < source.size(0), "dicom", files[s.file].path, ": frame ", s.frame, " is missing");
          dispatch_stored(source.dtype(), [&]<class T>() {
            const T* from = source.data<T>() + s.frame * per_slice;
            dispatch_stored(voxels.dtype(), [&]<class U>() {
              U* to = voxels.data<U>() + k * per_slice;
              for (int64_t v = 0; v < per_slice; ++v)
                to[v] = rescaled ? static_cast<U>(s.rescale.slope * static_cast<double>(from[v]) + s.rescale.intercept)
                                 : static_cast<U>(from[v]);
            });
          });
          if (ybr && voxels.dtype() == DType::u8) ybr_full_to_rgb(voxels.data<uint8_t>() + k * per_slice, format.rows * format.columns);
        }
      } catch (const Error& e) {
        errors[static_cast<size_t>(f)] = e.what();
      }
    }
  });
  for (const std::string& e : errors)
    if (!e.empty()) throw Error(e);
  if (format.photometric == "MONOCHROME1")
    warn(where + ": MONOCHROME1 (higher values display darker); the values are kept as stored, not inverted");

  Image& image = volume.image;
  image.voxels = voxels;
  image.spacing = {s0.pixel_spacing[1], s0.pixel_spacing[0], slice_spacing};
  image.origin = slices.front().position;
  for (int r = 0; r < 3; ++r) {
    image.direction[r][0] = row_cosine[static_cast<size_t>(r)];
    image.direction[r][1] = column_cosine[static_cast<size_t>(r)];
    image.direction[r][2] = normal[static_cast<size_t>(r)];
  }
  volume.series_uid = first.data.text(series_instance_uid);
  volume.modality = first.data.text(modality);
  volume.description = first.data.text(series_description);
  volume.transfer_syntax = first.syntax.name;
  volume.photometric = ybr ? "RGB" : photometric;
  volume.slices = n;
  volume.rescale = slices.front().rescale;
  volume.window = dicom_window(files[slices.front().file].data);
  return volume;
}

// A DICOM volume from a file (single- or multi-frame) or a directory of series.
inline DicomVolume read_dicom_volume(const std::string& path, const DicomSeriesOptions& options = {}) {
  if (!dicom_detail::is_directory(path)) return assemble_dicom_series({path}, options);
  int64_t skipped = 0;
  std::vector<DicomSeriesSummary> series = scan_dicom_directory(path, options.recursive, &skipped);
  VOX_CHECK(!series.empty(), "dicom", path, ": no DICOM image found (", skipped, " file(s) skipped as not DICOM or not images)");
  size_t chosen = 0;
  if (!options.series_uid.empty()) {
    while (chosen < series.size() && series[chosen].uid != options.series_uid) ++chosen;
    if (chosen == series.size()) {
      std::string known;
      for (const auto& s : series) known += "\n  " + s.uid + " (" + std::to_string(s.paths.size()) + " files)";
      fail("dicom", path, ": no series ", options.series_uid, "; the series found are:", known);
    }
  }
  if (options.report && series.size() > 1)
    options.report("series " + series[chosen].uid + " (" + std::to_string(series[chosen].paths.size()) + " files" +
                   (series[chosen].description.empty() ? "" : ", \"" + series[chosen].description + "\"") + ") chosen of " +
                   std::to_string(series.size()) + " series in " + path +
                   (options.series_uid.empty() ? " as the largest; --series UID picks another" : ""));
  DicomVolume volume = assemble_dicom_series(series[chosen].paths, options);
  volume.series = std::move(series);
  return volume;
}

}  // namespace vox::io
