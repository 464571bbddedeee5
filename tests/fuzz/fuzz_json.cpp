// libFuzzer target for the JSON parser: parse or throw vox::Error, nothing else.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <vox/io/json.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    vox::json::parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const vox::Error&) {
  }
  return 0;
}
