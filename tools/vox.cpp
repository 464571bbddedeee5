// The vox command-line program.
//   vox info PATH                         what a NIfTI file holds: size, type, geometry, values
//   vox convert IN OUT [--orient CODE] [--spacing S | --spacing X,Y,Z [--labels]]
//                      [--window PRESET | --window CENTER,WIDTH] [--nifti2]
// Bad input ends the program with status 1 and one line "vox: <what went wrong>".
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <vox/data/intensity.hpp>
#include <vox/data/resample.hpp>
#include <vox/io/nifti.hpp>

using namespace vox;

namespace {

const char* kUsage =
    "usage: vox <command> [options]\n"
    "  vox info PATH            size, type, spacing, orientation, affine and value range of a NIfTI file\n"
    "  vox convert IN OUT       rewrite a NIfTI file (.nii or .nii.gz by OUT's name), geometry preserved\n"
    "      --orient CODE        reorient first, e.g. RAS or LPS (nibabel's orientation codes)\n"
    "      --spacing S|X,Y,Z    resample to this voxel spacing in mm (trilinear; nearest with --labels)\n"
    "      --window W           apply a CT window, to [0, 1]: a preset (lung, mediastinum, abdomen, liver,\n"
    "                           bone, brain, subdural, stroke) or CENTER,WIDTH in HU\n"
    "      --nifti2             write NIfTI-2 instead of NIfTI-1\n";

struct UsageError {
  std::string message;
};

std::string format_number(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.6g", v);
  return buffer;
}

int info(const std::vector<std::string>& args) {
  if (args.size() != 1) throw UsageError{"info takes one PATH"};
  const std::string& path = args[0];
  const io::NiftiImage n = io::read_nifti(path);
  const io::Image& im = n.image;
  const bool gz = io::nifti_detail::has_suffix(path, ".gz");
  const bool pair = io::nifti_detail::has_suffix(path, ".hdr") || io::nifti_detail::has_suffix(path, ".img") ||
                    io::nifti_detail::has_suffix(path, ".hdr.gz") || io::nifti_detail::has_suffix(path, ".img.gz");
  std::cout << "file:        " << path << "\n";
  std::cout << "format:      NIfTI-" << n.info.version << (pair ? " (.hdr/.img pair" : " (single file") << (gz ? ", gzip)" : ")")
            << ", " << (n.info.big_endian ? "big" : "little") << "-endian\n";
  std::cout << "dims:        " << im.width() << " x " << im.height() << " x " << im.depth() << " (i x j x k)";
  if (im.channels() > 1) std::cout << ", " << im.channels() << " volumes";
  std::cout << "\n";
  std::cout << "dtype:       NIfTI datatype " << n.info.datatype << ", read as " << dtype_name(im.voxels.dtype()) << "\n";
  std::cout << "spacing:     " << format_number(im.spacing[0]) << " x " << format_number(im.spacing[1]) << " x "
            << format_number(im.spacing[2]) << " mm\n";
  std::cout << "orientation: " << im.orientation_code() << "\n";
  std::cout << "geometry:    " << (n.info.sform_code > 0 ? "sform" : n.info.qform_code > 0 ? "qform" : "none (nibabel's default)")
            << " (qform_code " << n.info.qform_code << ", sform_code " << n.info.sform_code << ")\n";
  const io::Affine a = im.affine(io::Convention::ras);
  std::cout << "affine (RAS):\n";
  for (const auto& row : a)
    std::cout << "  [" << format_number(row[0]) << ", " << format_number(row[1]) << ", " << format_number(row[2]) << ", "
              << format_number(row[3]) << "]\n";
  if (n.info.scl_slope != 0 && std::isfinite(n.info.scl_slope) && (n.info.scl_slope != 1 || n.info.scl_inter != 0))
    std::cout << "scaling:     slope " << format_number(n.info.scl_slope) << ", inter " << format_number(n.info.scl_inter) << "\n";
  const std::vector<double> v = im.voxels.to_vector<double>();
  double lo = INFINITY, hi = -INFINITY;
  int64_t nans = 0;
  for (double e : v) {
    if (std::isnan(e)) ++nans;
    else lo = std::min(lo, e), hi = std::max(hi, e);
  }
  std::cout << "range:       " << format_number(lo) << " .. " << format_number(hi);
  if (nans) std::cout << " (" << nans << " NaN)";
  std::cout << "\n";
  if (!n.info.description.empty()) std::cout << "description: " << n.info.description << "\n";
  return 0;
}

int convert(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  std::string orient, window, spacing;
  bool labels = false;
  int version = 1;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (a == "--orient") orient = value();
    else if (a == "--window") window = value();
    else if (a == "--spacing") spacing = value();
    else if (a == "--labels") labels = true;
    else if (a == "--nifti2") version = 2;
    else if (!a.empty() && a[0] == '-') throw UsageError{"unknown option " + a};
    else positional.push_back(a);
  }
  if (positional.size() != 2) throw UsageError{"convert takes IN and OUT"};
  io::Image image = io::read_nifti(positional[0]).image;
  if (!orient.empty()) image = io::reorient(image, orient);
  if (!spacing.empty()) {
    std::vector<double> mm;
    try {
      for (size_t start = 0; start <= spacing.size();) {
        const size_t comma = std::min(spacing.find(',', start), spacing.size());
        mm.push_back(std::stod(spacing.substr(start, comma - start)));
        start = comma + 1;
      }
    } catch (const std::exception&) {
      throw UsageError{"--spacing takes S or X,Y,Z in mm, got " + spacing};
    }
    if (mm.size() == 1) mm = {mm[0], mm[0], mm[0]};
    if (mm.size() != 3) throw UsageError{"--spacing takes S or X,Y,Z in mm, got " + spacing};
    image = data::resample_to_spacing(image, {mm[0], mm[1], mm[2]}, labels ? data::Interpolation::nearest : data::Interpolation::linear);
  }
  if (!window.empty()) {
    data::Window w;
    const size_t comma = window.find(',');
    if (comma == std::string::npos) {
      w = data::window_preset(window);
    } else {
      try {
        w = {std::stod(window.substr(0, comma)), std::stod(window.substr(comma + 1))};
      } catch (const std::exception&) {
        throw UsageError{"--window takes a preset name or CENTER,WIDTH, got " + window};
      }
    }
    image.voxels = data::apply_window(image.voxels, w);
  }
  io::write_nifti(positional[1], image, version);
  std::cout << "wrote " << positional[1] << ": " << image.width() << " x " << image.height() << " x " << image.depth() << ", "
            << image.orientation_code() << ", " << dtype_name(image.voxels.dtype()) << "\n";
  return 0;
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  try {
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    if (args[0] == "info") return info(rest);
    if (args[0] == "convert") return convert(rest);
    throw UsageError{"unknown command \"" + args[0] + "\""};
  } catch (const UsageError& e) {
    std::cerr << "vox: " << e.message << "\n" << kUsage;
    return 2;
  } catch (const Error& e) {
    std::cerr << "vox: " << one_line(e.what()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "vox: " << one_line(e.what()) << "\n";
    return 1;
  }
}
