// What MONAI, scipy and numpy made of the test volumes (tests/data/make_transform_fixtures.py),
// shared by test_transforms, test_metrics and test_inference.
#pragma once

#include <cstdlib>
#include <string>

#include <vox/io/file.hpp>
#include <vox/io/json.hpp>
#include <vox/io/safetensors.hpp>

#include "harness.hpp"

namespace vox::testing {

struct TransformFixtures {
  static std::string dir() { return fixture_dir("VOX_TRANSFORM_DIR", "transforms"); }
  io::Safetensors tensors = io::load_safetensors(dir() + "/transforms.safetensors");
  json::Value cases = [] {
    const std::vector<char> bytes = io::read_file(dir() + "/transforms.json");
    return json::parse(std::string(bytes.begin(), bytes.end()));
  }();
  // One case by name; a missing one fails the test that asked.
  const json::Value& operator[](const std::string& key) const {
    const json::Value* v = cases.find(key);
    REQUIRE_MESSAGE(v != nullptr, "fixture " << key);
    return *v;
  }
};

}  // namespace vox::testing
