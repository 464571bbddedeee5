// Helpers every `vox` command shares: usage errors, number parsing, reading an image from NIfTI
// or DICOM with the DICOM options, JSON numbers.
#pragma once

#include <algorithm>
#include <optional>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <vox/io/dicom.hpp>
#include <vox/io/nifti.hpp>

using namespace vox;

// A command used wrongly: status 2 and one line (vox --help gives the usage).
struct UsageError {
  std::string message;
};

// "cpu", "cuda" or "cuda:N".
inline Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() < 8 && text.find_first_not_of("0123456789", 5) == std::string::npos)
    return Device::cuda(std::stoi(text.substr(5)));
  throw UsageError{"--device takes cpu, cuda or cuda:N, got " + text};
}

// The device named by --device, checked to exist in this build and on this machine.
inline Device usable_device(const std::string& text) {
  const Device device = parse_device(text);
  if (device.is_cpu()) return device;
  if (!cuda_is_available())
    throw UsageError{"--device " + text + ": " +
                     (detail::cuda_backend_slot() ? std::string("no CUDA device is visible")
                                                  : std::string("this vox was built without the CUDA backend (configure with -DVOX_ENABLE_CUDA=ON)"))};
  const int count = cuda_backend("--device").device_count();
  if (device.index >= count) throw UsageError{"--device " + text + ": only " + std::to_string(count) + " CUDA device(s) are visible"};
  return device;
}

inline std::string format_number(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.6g", v == 0 ? 0.0 : v);  // no "-0"
  return buffer;
}

inline bool is_nifti_path(const std::string& path) {
  for (const char* ext : {".nii", ".nii.gz", ".hdr", ".hdr.gz", ".img", ".img.gz"})
    if (io::nifti_detail::has_suffix(path, ext)) return true;
  return false;
}

// The options every command that reads an image takes.
struct InputOptions {
  io::DicomSeriesOptions dicom;
  // Takes args[i] (and its value) when it is an input option; false otherwise.
  bool take(const std::vector<std::string>& args, size_t& i) {
    if (args[i] == "--allow-uneven") {
      dicom.allow_uneven = true;
      return true;
    }
    if (args[i] == "--series") {
      if (i + 1 >= args.size()) throw UsageError{"--series needs a SeriesInstanceUID"};
      dicom.series_uid = args[++i];
      return true;
    }
    return false;
  }
};

inline io::DicomVolume read_dicom_reporting(const std::string& path, InputOptions options) {
  options.dicom.report = [](const std::string& line) { std::cerr << "vox: " << line << "\n"; };
  return io::read_dicom_volume(path, options.dicom);
}

inline io::Image read_image(const std::string& path, const InputOptions& options) {
  if (is_nifti_path(path)) return io::read_nifti(path).image;
  return read_dicom_reporting(path, options).image;
}

inline std::vector<int64_t> parse_sizes(const std::string& text, const std::string& option) {
  std::vector<int64_t> out;
  try {
    for (size_t start = 0; start <= text.size();) {
      const size_t comma = std::min(text.find(',', start), text.size());
      out.push_back(std::stoll(text.substr(start, comma - start)));
      start = comma + 1;
    }
  } catch (const std::exception&) {
    throw UsageError{option + " takes N or X,Y,Z, got " + text};
  }
  if (out.size() == 1) out = {out[0], out[0], out[0]};
  if (out.size() != 3) throw UsageError{option + " takes N or X,Y,Z, got " + text};
  return out;
}

inline int64_t parse_count(const std::string& text, const std::string& option);

// "A,B,C" as whole numbers.
inline std::vector<int64_t> parse_list(const std::string& text, const std::string& option) {
  std::vector<int64_t> out;
  for (size_t start = 0; start <= text.size();) {
    const size_t comma = std::min(text.find(',', start), text.size());
    out.push_back(parse_count(text.substr(start, comma - start), option));
    start = comma + 1;
  }
  return out;
}

inline int64_t parse_count(const std::string& text, const std::string& option) {
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used);
    if (used == text.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  throw UsageError{option + " takes a whole number, got " + text};
}

// A precision flag's value: f32 (no autocast), bf16 or f16 (autocast in that dtype).
inline std::optional<DType> parse_precision(const std::string& text, const std::string& option) {
  if (text == "f32") return std::nullopt;
  if (text == "bf16") return DType::bf16;
  if (text == "f16") return DType::f16;
  throw UsageError{option + " takes f32, bf16 or f16, got " + text};
}

inline double parse_real(const std::string& text, const std::string& option) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw UsageError{option + " takes a number, got " + text};
}

inline std::string json_number(double v) {
  if (std::isnan(v)) return "null";
  if (std::isinf(v)) return "\"inf\"";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.6g", v);
  return buffer;
}

