#pragma once
// The one ceiling on what a reader may allocate for what a file claims to hold.
//
// Every reader first bounds an allocation by what its input can really hold: a .gz stream is
// inflated no further than its header's declared size, a compressed DICOM frame may claim at
// most a documented multiple of its own bytes, and uncompressed data must be present in full.
// Within those bounds a small hostile file can still claim a great deal (a gzip stream inflates
// up to about 1,032 times; JPEG-LS and JPEG 2000 code blank areas in a few bits), so one
// configurable ceiling caps the decoded bytes of any one file or series:
//   - ReadLimits::max_bytes in the read options of NIfTI, DICOM and series reads;
//   - its default is 8 GiB, or VOX_MAX_READ_MIB (in MiB) when that is set in the environment,
//     which is how the vox programs are told.
// Past it, the reader throws a vox::Error that names the file, the claim and the ceiling.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "vox/core/error.hpp"

namespace vox::io {

inline constexpr uint64_t kDefaultReadCeilingBytes = uint64_t{8} << 30;

// VOX_MAX_READ_MIB when set (a positive whole number of MiB), else 8 GiB; read on every call so
// that a program may set it before reading.
inline uint64_t default_read_ceiling() {
  const char* env = std::getenv("VOX_MAX_READ_MIB");
  if (env == nullptr || *env == '\0') return kDefaultReadCeilingBytes;
  char* end = nullptr;
  const unsigned long long mib = std::strtoull(env, &end, 10);
  VOX_CHECK(*end == '\0' && mib > 0 && mib <= (uint64_t{1} << 40), "read limits", "VOX_MAX_READ_MIB=\"", env,
            "\" is not a positive whole number of MiB");
  return static_cast<uint64_t>(mib) << 20;
}

struct ReadLimits {
  uint64_t max_bytes = default_read_ceiling();  // decoded bytes of one file (or one series)
};

// Throws unless `claimed` decoded bytes of `what` in `source` fit the ceiling.
inline void check_read_claim(uint64_t claimed, const ReadLimits& limits, const char* reader, const std::string& source,
                             const std::string& what) {
  VOX_CHECK(claimed <= limits.max_bytes, reader, source, ": ", what, " claims ", claimed, " bytes, above the read ceiling of ",
            limits.max_bytes, " bytes (raise ReadLimits::max_bytes, or VOX_MAX_READ_MIB for the vox programs)");
}

}  // namespace vox::io
