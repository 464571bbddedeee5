// libFuzzer target: any byte string fed to the safetensors reader either parses or throws
// vox::Error. Crashes, hangs, leaks and sanitizer reports are bugs. Run with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>

#include <vox/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    vox::io::parse_safetensors(reinterpret_cast<const char*>(data), size, "fuzz");
  } catch (const vox::Error&) {
  }
  return 0;
}
