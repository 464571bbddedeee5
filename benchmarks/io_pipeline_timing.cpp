// The I/O pipeline of issue 4, timed: read a CT volume (NIfTI .nii.gz, or a DICOM series),
// window it (abdomen, 40/400 HU) and resample it to 1.5 mm isotropic (trilinear). Prints, per
// input, the median over the runs of each step and of the whole, in milliseconds, one line each:
//   <input> read_ms window_ms resample_ms total_ms voxels_out
// benchmarks/peers/io_pipeline_vs_python.sh runs it beside nibabel + scipy.
//   vox_io_pipeline_timing NIFTI_PATH DICOM_DIR [RUNS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <vox/data/intensity.hpp>
#include <vox/data/resample.hpp>
#include <vox/io/dicom.hpp>
#include <vox/io/nifti.hpp>

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

template <class Read>
void run(const char* name, Read read, int runs) {
  using clock = std::chrono::steady_clock;
  std::vector<double> t_read, t_window, t_resample, t_total;
  int64_t voxels = 0;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = clock::now();
    vox::io::Image image = read();
    const auto t1 = clock::now();
    image.voxels = vox::data::apply_window(image.voxels, vox::data::window_preset("abdomen"));
    const auto t2 = clock::now();
    const vox::io::Image out = vox::data::resample_to_spacing(image, {1.5, 1.5, 1.5}, vox::data::Interpolation::linear);
    const auto t3 = clock::now();
    voxels = out.voxels.numel();
    auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    t_read.push_back(ms(t0, t1)), t_window.push_back(ms(t1, t2)), t_resample.push_back(ms(t2, t3)), t_total.push_back(ms(t0, t3));
  }
  std::printf("%s %.1f %.1f %.1f %.1f %lld\n", name, median(t_read), median(t_window), median(t_resample), median(t_total),
              static_cast<long long>(voxels));
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: vox_io_pipeline_timing NIFTI_PATH DICOM_DIR [RUNS]\n");
    return 2;
  }
  const std::string nifti = argv[1], dicom = argv[2];
  const int runs = argc > 3 ? std::atoi(argv[3]) : 5;
  try {
    run("nifti", [&] { return vox::io::read_nifti(nifti).image; }, runs);
    run("dicom", [&] { return vox::io::read_dicom_volume(dicom).image; }, runs);
  } catch (const vox::Error& e) {
    std::fprintf(stderr, "vox: %s\n", e.what());
    return 1;
  }
  return 0;
}
