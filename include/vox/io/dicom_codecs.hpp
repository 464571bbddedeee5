#pragma once
// Decoders of encapsulated JPEG-family pixel data, each optional at build time and taken from a
// well-kept library (CMake defines the macro and links the library when it finds it; see
// VOX_DICOM_CODECS in CMakeLists.txt):
//   VOX_WITH_LIBJPEG   libjpeg-turbo: JPEG baseline and extended of 8 bits per sample. (12-bit
//                      extended and lossless JPEG need libjpeg-turbo 3, which Debian 12 lacks.)
//   VOX_WITH_CHARLS    CharLS: JPEG-LS lossless and near-lossless
//   VOX_WITH_OPENJPEG  OpenJPEG: JPEG 2000, lossless and lossy (not High-Throughput)
// Each returns one frame as native little-endian bytes, samples interleaved. Colour is what
// GDCM gives: JPEG samples stay in the colour space the data set names (RGB, or YBR_FULL and
// YBR_FULL_422, which series assembly turns into RGB); JPEG 2000 with a component transform
// (YBR_RCT, YBR_ICT) comes out as RGB. Without the decoder a transfer syntax needs, the error names the syntax and
// the library to install. Decoder failures become vox::Error with the library's message.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "vox/core/error.hpp"
#include "vox/io/dicom_dataset.hpp"

#if defined(VOX_WITH_LIBJPEG)
#include <csetjmp>
#include <cstdio>
#include <jpeglib.h>
#endif
#if defined(VOX_WITH_CHARLS)
#include <charls/charls.h>
#endif
#if defined(VOX_WITH_OPENJPEG)
#include <openjpeg.h>
#endif

namespace vox::io {

// What one compressed frame must decode to.
struct DicomFrameShape {
  int64_t rows = 0, columns = 0, samples = 1;
  int bits_allocated = 8;
  bool ybr = false;  // PhotometricInterpretation YBR_FULL or YBR_FULL_422
  size_t bytes() const { return static_cast<size_t>(rows * columns * samples * (bits_allocated / 8)); }
};

// The most bytes of pixel data one stored byte may decode to, by transfer syntax; pixel data
// that claims more is refused before anything is decoded or allocated:
//   - native: 1 (the bytes must all be there); deflated data sets: 1,032 (deflate's limit);
//   - RLE: 64 (PackBits turns 2 bytes into at most 128);
//   - lossless JPEG: 32 (Huffman coding spends at least 1 bit on a sample of up to 16 bits);
//   - JPEG baseline and extended: 1,024 (at least 2 bits on an 8x8 block: DC and end-of-block);
//   - JPEG-LS and JPEG 2000: 16,384, because run mode and empty code blocks code a blank frame in
//     a few bits (a blank 512x512 frame of 16 bits may be some 150 bytes); the read ceiling
//     (read_limits.hpp) bounds what is left.
inline uint64_t dicom_max_expansion(const TransferSyntax& syntax) {
  const std::string& uid = syntax.uid;
  if (!syntax.encapsulated) return syntax.deflated ? 1032 : 1;
  if (uid == "1.2.840.10008.1.2.5") return 64;
  if (uid == "1.2.840.10008.1.2.4.57" || uid == "1.2.840.10008.1.2.4.70") return 32;
  if (uid == "1.2.840.10008.1.2.4.50" || uid == "1.2.840.10008.1.2.4.51") return 1024;
  return 16384;
}

namespace dicom_codecs {

enum class Codec { none, jpeg, jpeg_ls, jpeg_2000 };

inline Codec codec_of(const std::string& uid) {
  if (uid == "1.2.840.10008.1.2.4.50" || uid == "1.2.840.10008.1.2.4.51" || uid == "1.2.840.10008.1.2.4.57" ||
      uid == "1.2.840.10008.1.2.4.70")
    return Codec::jpeg;
  if (uid == "1.2.840.10008.1.2.4.80" || uid == "1.2.840.10008.1.2.4.81") return Codec::jpeg_ls;
  if (uid == "1.2.840.10008.1.2.4.90" || uid == "1.2.840.10008.1.2.4.91") return Codec::jpeg_2000;
  return Codec::none;
}

inline bool available(Codec codec) {
  switch (codec) {
#if defined(VOX_WITH_LIBJPEG)
    case Codec::jpeg: return true;
#endif
#if defined(VOX_WITH_CHARLS)
    case Codec::jpeg_ls: return true;
#endif
#if defined(VOX_WITH_OPENJPEG)
    case Codec::jpeg_2000: return true;
#endif
    default: return false;
  }
}

inline const char* library_of(Codec codec) {
  switch (codec) {
    case Codec::jpeg: return "libjpeg-turbo (Debian: libjpeg62-turbo-dev)";
    case Codec::jpeg_ls: return "CharLS (Debian: libcharls-dev)";
    case Codec::jpeg_2000: return "OpenJPEG (Debian: libopenjp2-7-dev)";
    default: return "a decoder no library of vox provides";
  }
}

#if defined(VOX_WITH_LIBJPEG)
struct JpegErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

inline std::vector<uint8_t> decode_jpeg(const std::vector<uint8_t>& encoded, const DicomFrameShape& shape, const std::string& src) {
  VOX_CHECK(shape.bits_allocated == 8, "dicom", src, ": JPEG of ", shape.bits_allocated,
            "-bit samples (12-bit extended or lossless JPEG) needs libjpeg-turbo 3; this build has an 8-bit libjpeg");
  jpeg_decompress_struct info{};
  JpegErrorManager errors{};
  info.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = [](j_common_ptr cinfo) {
    auto* e = reinterpret_cast<JpegErrorManager*>(cinfo->err);
    e->base.format_message(cinfo, e->message);
    std::longjmp(e->jump, 1);
  };
  errors.base.output_message = [](j_common_ptr) {};  // warnings (corrupt data recovered) stay quiet
  // Everything with a destructor lives before setjmp: longjmp skips destructors.
  std::vector<uint8_t> out;
  std::string got;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&info);
    fail("dicom", src, ": libjpeg: ", errors.message);
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, encoded.data(), static_cast<unsigned long>(encoded.size()));
  jpeg_read_header(&info, TRUE);
  const bool sizes_match = info.image_width == static_cast<JDIMENSION>(shape.columns) &&
                           info.image_height == static_cast<JDIMENSION>(shape.rows) && info.num_components == shape.samples;
  if (!sizes_match) {
    got = std::to_string(info.image_width) + "x" + std::to_string(info.image_height) + "x" + std::to_string(info.num_components);
    jpeg_destroy_decompress(&info);
    fail("dicom", src, ": the JPEG frame is ", got, " (columns x rows x samples), the data set says ", shape.columns, "x", shape.rows,
         "x", shape.samples);
  }
  if (shape.samples == 3) {
    // The data set's photometric interpretation names the codestream's colour space, as GDCM and
    // DCMTK read it (libjpeg's own guess calls marker-less RGB streams YCbCr). Samples are kept
    // in that space: YBR becomes RGB later, as for uncompressed YBR.
    info.jpeg_color_space = info.out_color_space = shape.ybr ? JCS_YCbCr : JCS_RGB;
  }
  jpeg_start_decompress(&info);
  out.resize(shape.bytes());
  const size_t stride = static_cast<size_t>(shape.columns * shape.samples);
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = out.data() + static_cast<size_t>(info.output_scanline) * stride;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return out;
}
#endif

#if defined(VOX_WITH_CHARLS)
inline std::vector<uint8_t> decode_jpeg_ls(const std::vector<uint8_t>& encoded, const DicomFrameShape& shape, const std::string& src) {
  struct Decoder {
    charls_jpegls_decoder* d = charls_jpegls_decoder_create();
    ~Decoder() { charls_jpegls_decoder_destroy(d); }
  } decoder;
  VOX_CHECK(decoder.d != nullptr, "dicom", src, ": cannot create a CharLS decoder");
  auto check = [&](charls_jpegls_errc status, const char* step) {
    VOX_CHECK(status == charls::jpegls_errc::success, "dicom", src, ": CharLS ", step, ": ", charls_get_error_message(status));
  };
  check(charls_jpegls_decoder_set_source_buffer(decoder.d, encoded.data(), encoded.size()), "source");
  check(charls_jpegls_decoder_read_header(decoder.d), "header");
  charls_frame_info frame{};
  check(charls_jpegls_decoder_get_frame_info(decoder.d, &frame), "frame info");
  const int bytes = frame.bits_per_sample <= 8 ? 1 : 2;
  VOX_CHECK(frame.width == static_cast<uint32_t>(shape.columns) && frame.height == static_cast<uint32_t>(shape.rows) &&
                frame.component_count == shape.samples && bytes == shape.bits_allocated / 8,
            "dicom", src, ": the JPEG-LS frame is ", frame.width, "x", frame.height, "x", frame.component_count, " of ",
            frame.bits_per_sample, " bits, the data set says ", shape.columns, "x", shape.rows, "x", shape.samples, " of ",
            shape.bits_allocated);
  size_t size = 0;
  check(charls_jpegls_decoder_get_destination_size(decoder.d, 0, &size), "size");
  VOX_CHECK(size == shape.bytes(), "dicom", src, ": CharLS would write ", size, " bytes, ", shape.bytes(), " expected");
  std::vector<uint8_t> out(size);
  check(charls_jpegls_decoder_decode_to_buffer(decoder.d, out.data(), out.size(), 0), "decode");
  charls_interleave_mode mode{};
  check(charls_jpegls_decoder_get_interleave_mode(decoder.d, &mode), "interleave mode");
  if (mode == charls::interleave_mode::none && shape.samples > 1) {  // planes -> interleaved samples
    std::vector<uint8_t> interleaved(out.size());
    const size_t pixels = static_cast<size_t>(shape.rows * shape.columns), samples = static_cast<size_t>(shape.samples);
    for (size_t s = 0; s < samples; ++s)
      for (size_t p = 0; p < pixels; ++p)
        std::memcpy(&interleaved[(p * samples + s) * bytes], &out[(s * pixels + p) * bytes], static_cast<size_t>(bytes));
    out.swap(interleaved);
  }
  return out;  // CharLS writes 16-bit samples in native (little-endian) order
}
#endif

#if defined(VOX_WITH_OPENJPEG)
struct MemoryStream {
  const uint8_t* data;
  size_t size, at = 0;
};

inline std::vector<uint8_t> decode_jpeg_2000(const std::vector<uint8_t>& encoded, const DicomFrameShape& shape, const std::string& src) {
  VOX_CHECK(encoded.size() >= 12, "dicom", src, ": a JPEG 2000 frame of ", encoded.size(), " bytes is too short");
  static const uint8_t jp2_signature[12] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};
  const bool jp2 = std::memcmp(encoded.data(), jp2_signature, 12) == 0;
  struct Resources {
    opj_codec_t* codec = nullptr;
    opj_stream_t* stream = nullptr;
    opj_image_t* image = nullptr;
    ~Resources() {
      if (image) opj_image_destroy(image);
      if (stream) opj_stream_destroy(stream);
      if (codec) opj_destroy_codec(codec);
    }
  } r;
  MemoryStream memory{encoded.data(), encoded.size()};
  r.codec = opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
  std::string last_error;
  opj_set_error_handler(r.codec, [](const char* message, void* user) { *static_cast<std::string*>(user) = message; }, &last_error);
  opj_set_warning_handler(r.codec, [](const char*, void*) {}, nullptr);
  opj_set_info_handler(r.codec, [](const char*, void*) {}, nullptr);
  opj_dparameters_t parameters;
  opj_set_default_decoder_parameters(&parameters);
  VOX_CHECK(opj_setup_decoder(r.codec, &parameters), "dicom", src, ": OpenJPEG setup: ", last_error);
  r.stream = opj_stream_create(1 << 16, OPJ_TRUE);
  opj_stream_set_user_data(r.stream, &memory, nullptr);
  opj_stream_set_user_data_length(r.stream, memory.size);
  opj_stream_set_read_function(r.stream, [](void* buffer, OPJ_SIZE_T n, void* user) -> OPJ_SIZE_T {
    auto* m = static_cast<MemoryStream*>(user);
    if (m->at >= m->size) return static_cast<OPJ_SIZE_T>(-1);
    const size_t take = std::min(n, m->size - m->at);
    std::memcpy(buffer, m->data + m->at, take);
    m->at += take;
    return take;
  });
  opj_stream_set_skip_function(r.stream, [](OPJ_OFF_T n, void* user) -> OPJ_OFF_T {
    auto* m = static_cast<MemoryStream*>(user);
    const OPJ_OFF_T room = n < 0 ? -static_cast<OPJ_OFF_T>(m->at) : static_cast<OPJ_OFF_T>(m->size - m->at);
    const OPJ_OFF_T step = n < 0 ? std::max(n, room) : std::min(n, room);
    m->at = static_cast<size_t>(static_cast<OPJ_OFF_T>(m->at) + step);
    return step;
  });
  opj_stream_set_seek_function(r.stream, [](OPJ_OFF_T to, void* user) -> OPJ_BOOL {
    auto* m = static_cast<MemoryStream*>(user);
    if (to < 0 || static_cast<size_t>(to) > m->size) return OPJ_FALSE;
    m->at = static_cast<size_t>(to);
    return OPJ_TRUE;
  });
  VOX_CHECK(opj_read_header(r.stream, r.codec, &r.image), "dicom", src, ": OpenJPEG header: ", last_error);
  VOX_CHECK(static_cast<int64_t>(r.image->numcomps) == shape.samples, "dicom", src, ": the JPEG 2000 frame has ", r.image->numcomps,
            " components, the data set says ", shape.samples, " samples");
  VOX_CHECK(r.image->x1 - r.image->x0 == static_cast<OPJ_UINT32>(shape.columns) &&
                r.image->y1 - r.image->y0 == static_cast<OPJ_UINT32>(shape.rows),
            "dicom", src, ": the JPEG 2000 frame is ", r.image->x1 - r.image->x0, "x", r.image->y1 - r.image->y0,
            ", the data set says ", shape.columns, "x", shape.rows);
  VOX_CHECK(opj_decode(r.codec, r.stream, r.image) && opj_end_decompress(r.codec, r.stream), "dicom", src, ": OpenJPEG: ",
            last_error.empty() ? std::string("decoding failed") : last_error);
  const int bytes = shape.bits_allocated / 8;
  const size_t pixels = static_cast<size_t>(shape.rows * shape.columns), samples = static_cast<size_t>(shape.samples);
  std::vector<uint8_t> out(shape.bytes());
  for (size_t s = 0; s < samples; ++s) {
    const opj_image_comp_t& c = r.image->comps[s];
    VOX_CHECK(c.w == static_cast<OPJ_UINT32>(shape.columns) && c.h == static_cast<OPJ_UINT32>(shape.rows) && c.data != nullptr &&
                  c.dx == 1 && c.dy == 1,
              "dicom", src, ": JPEG 2000 component ", s, " is ", c.w, "x", c.h, " (subsampled ", c.dx, "x", c.dy, "), the data set says ",
              shape.columns, "x", shape.rows);
    VOX_CHECK(static_cast<int>(c.prec) <= shape.bits_allocated, "dicom", src, ": JPEG 2000 component ", s, " has ", c.prec,
              " bits, more than BitsAllocated ", shape.bits_allocated);
    for (size_t p = 0; p < pixels; ++p) {
      const uint32_t v = static_cast<uint32_t>(c.data[p]);  // two's complement keeps signed values' bits
      for (int b = 0; b < bytes; ++b) out[(p * samples + s) * static_cast<size_t>(bytes) + static_cast<size_t>(b)] = static_cast<uint8_t>(v >> (8 * b));
    }
  }
  return out;
}
#endif

}  // namespace dicom_codecs

// Whether this build decodes pixel data of a transfer syntax (native and RLE always).
inline bool dicom_has_decoder(const std::string& uid) {
  const TransferSyntax syntax = TransferSyntax::from_uid(uid);
  if (!syntax.encapsulated || uid == "1.2.840.10008.1.2.5") return true;
  return dicom_codecs::available(dicom_codecs::codec_of(uid));
}

// One compressed frame into native little-endian bytes, samples interleaved.
inline std::vector<uint8_t> decode_compressed_frame(const TransferSyntax& syntax, const std::vector<uint8_t>& encoded,
                                                    const DicomFrameShape& shape, const std::string& source) {
  using namespace dicom_codecs;
  const Codec codec = codec_of(syntax.uid);
  VOX_CHECK(available(codec), "dicom", source, ": pixel data in ", syntax.name, " (", syntax.uid,
            ") needs a decoder this build of vox lacks: ", library_of(codec));
  VOX_CHECK(shape.bits_allocated % 8 == 0 && shape.bits_allocated <= 16, "dicom", source, ": ", syntax.name, " of BitsAllocated ",
            shape.bits_allocated, " is not decoded (8 or 16)");
  VOX_CHECK(shape.bytes() <= dicom_max_expansion(syntax) * encoded.size(), "dicom", source, ": a ", encoded.size(), "-byte ",
            syntax.name, " frame cannot hold ", shape.rows, "x", shape.columns, "x", shape.samples, " samples of ", shape.bits_allocated,
            " bits (", shape.bytes(), " bytes; at most ", dicom_max_expansion(syntax), " bytes per stored byte)");
  std::vector<uint8_t> out;
#if defined(VOX_WITH_LIBJPEG)
  if (codec == Codec::jpeg) {
    VOX_CHECK(syntax.uid == "1.2.840.10008.1.2.4.50" || syntax.uid == "1.2.840.10008.1.2.4.51", "dicom", source, ": ", syntax.name,
              " needs libjpeg-turbo 3 (lossless JPEG); this build has libjpeg-turbo 2");
    out = decode_jpeg(encoded, shape, source);
  }
#endif
#if defined(VOX_WITH_CHARLS)
  if (codec == Codec::jpeg_ls) out = decode_jpeg_ls(encoded, shape, source);
#endif
#if defined(VOX_WITH_OPENJPEG)
  if (codec == Codec::jpeg_2000) out = decode_jpeg_2000(encoded, shape, source);
#endif
  VOX_CHECK(out.size() == shape.bytes(), "dicom", source, ": a decoded ", syntax.name, " frame has ", out.size(), " bytes, ",
            shape.bytes(), " expected");
  return out;
}

}  // namespace vox::io
