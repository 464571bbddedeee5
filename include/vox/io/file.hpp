#pragma once
// Whole-file reads and atomic writes: a file is written under a temporary name in the same
// directory, synced, and renamed into place, so a crash or a failed write never leaves a
// half-written file behind (nor a temporary one).
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
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

namespace file_detail {
// A name beside `path` that no other writer in this process or another one is using.
inline std::string temporary_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
}
// Forces a file's data to the disk, so that a crash after the rename cannot leave it empty.
inline bool sync_to_disk(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  return synced;
}
}  // namespace file_detail

// Calls write(std::ofstream&) on a temporary file beside `path`; once the writer has returned and
// the data is flushed and synced, renames it to `path`. If anything fails (the writer throws, the
// disk fills), the temporary is removed, the error propagates, and a previous file at `path` is
// left as it was.
template <class Writer>
void write_file_atomically(const std::string& path, Writer&& write) {
  const std::string temporary = file_detail::temporary_name(path);
  try {
    {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      VOX_CHECK(out.good(), "write_file", "cannot create ", temporary);
      write(out);
      out.flush();
      VOX_CHECK(out.good(), "write_file", "writing ", temporary, " failed (disk full?)");
      out.close();
      VOX_CHECK(!out.fail(), "write_file", "closing ", temporary, " failed (disk full?)");
    }
    VOX_CHECK(file_detail::sync_to_disk(temporary), "write_file", "cannot sync ", temporary, " to the disk");
    std::error_code ec;
    std::filesystem::rename(temporary, path, ec);
    VOX_CHECK(!ec, "write_file", "cannot rename ", temporary, " to ", path, ": ", ec.message());
  } catch (...) {
    std::remove(temporary.c_str());
    throw;
  }
}

}  // namespace vox::io
