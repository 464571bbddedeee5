// libFuzzer target: any byte string parsed as a DICOM file, then its geometry, rescale and pixel
// data read as a volume would read them: each step gives a result or throws vox::Error. Crashes,
// hangs, leaks, sanitizer reports and allocations beyond what the input can hold are bugs.
// scripts/fuzz.sh seeds it with pydicom's test files where Debian installs them, and compiles in
// the JPEG, JPEG-LS and JPEG 2000 decoders it finds, so their glue is fuzzed too. It runs with
// the production limits, not smaller ones, so that what it finds is what users would meet.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <vox/io/dicom.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    // production defaults: the same limits a user's read has
    const vox::io::DicomFile file = vox::io::parse_dicom(std::vector<uint8_t>(data, data + size), "fuzz.dcm");
    (void)vox::io::dicom_claimed_pixel_bytes(file, size);
    std::vector<std::string> warnings;
    (void)vox::io::dicom_detail::slices_of(file, 0, warnings);
    (void)vox::io::dicom_window(file.data);
    (void)vox::io::dicom_stored_values(file);
  } catch (const vox::Error&) {
  }
  return 0;
}
