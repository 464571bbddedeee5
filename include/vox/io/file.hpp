#pragma once
// Whole-file reads and atomic writes: a file is written under a temporary name in the same
// directory and renamed into place, so a crash never leaves a half-written file behind.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "vox/core/error.hpp"

namespace vox::io {

inline std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  VOX_CHECK(in.good(), "read_file", "cannot open ", path);
  const std::streamsize size = in.tellg();
  VOX_CHECK(size >= 0, "read_file", "cannot read the size of ", path);
  std::vector<char> data(static_cast<size_t>(size));
  in.seekg(0);
  VOX_CHECK(size == 0 || in.read(data.data(), size).good(), "read_file", "cannot read ", path);
  return data;
}

// A number written as text (a CSV cell, safetensors metadata): the whole text must be one finite
// number, else a vox::Error naming `what`.
inline double parse_number(const std::string& text, const std::string& what) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  VOX_CHECK(!text.empty() && end == text.c_str() + text.size() && std::isfinite(v), "parse_number", what, ": \"", text,
            "\" is not a finite number");
  return v;
}

// Calls write(std::ofstream&) on a temporary file, then renames it to `path`.
template <class Writer>
void write_file_atomically(const std::string& path, Writer&& write) {
  const std::string temporary = path + ".tmp-" + std::to_string(std::hash<std::string>{}(path) ^ static_cast<size_t>(std::rand()));
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    VOX_CHECK(out.good(), "write_file", "cannot create ", temporary);
    write(out);
    out.flush();
    if (!out.good()) {
      out.close();
      std::remove(temporary.c_str());
      fail("write_file", "writing ", temporary, " failed (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
  if (ec) {
    std::remove(temporary.c_str());
    fail("write_file", "cannot rename ", temporary, " to ", path, ": ", ec.message());
  }
}

}  // namespace vox::io
