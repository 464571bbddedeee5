// libFuzzer target: any byte string read as a NIfTI file (plain, or gzip when it starts with the
// gzip magic) either gives an image or throws vox::Error. Crashes, hangs, leaks, sanitizer
// reports and allocations beyond what the input can hold are bugs. Run with scripts/fuzz.sh.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include <vox/io/nifti.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/vox_fuzz_nifti_" + std::to_string(getpid()) + ".nii";
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    vox::io::read_nifti(path);
  } catch (const vox::Error&) {
  }
  return 0;
}
