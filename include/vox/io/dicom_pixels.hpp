#pragma once
// DICOM pixel data: the stored values of every frame, as pydicom's pixel_array gives them.
//
//   - native (uncompressed) data of BitsAllocated 1, 8, 16, 32 or 64, signed or unsigned, either
//     byte order, PlanarConfiguration 0 or 1, YBR_FULL_422 upsampled as pydicom does; float
//     and double float pixel data;
//   - RLE Lossless (PS3.5 Annex G), any number of samples and bytes per sample;
//   - the JPEG family through the optional decoders of dicom_codecs.hpp.
// Bits outside BitsStored/HighBit are dropped and signed values sign-extended (PS3.5 8.1.1).
// The values are not inverted for MONOCHROME1 nor converted from YBR: they are the stored
// values, to which dicom_modality_values() applies RescaleSlope/RescaleIntercept.
//
// Voxels come as [frames, rows, columns] (one sample) or [frames, rows, columns, samples], in
// the smallest vox dtype that holds them: u8 or i8 for 8 bits and less, i32 for 16 bits and for
// signed 32 bits, i64 for unsigned 32 and 64 bits, f32/f64 for float pixel data.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "vox/core/tensor.hpp"
#include "vox/io/dicom_codecs.hpp"
#include "vox/io/dicom_dataset.hpp"

namespace vox::io {

struct DicomPixelFormat {
  int64_t rows = 0, columns = 0, frames = 1, samples = 1;
  int bits_allocated = 0, bits_stored = 0, high_bit = 0;
  bool is_signed = false;
  bool is_float = false;  // Float Pixel Data or Double Float Pixel Data
  int planar_configuration = 0;
  std::string photometric;

  int64_t pixels_per_frame() const { return rows * columns; }
  int bytes_per_sample() const { return bits_allocated == 1 ? 1 : bits_allocated / 8; }
};

inline DicomPixelFormat dicom_pixel_format(const DicomDataSet& ds) {
  using namespace dicom_tags;
  const std::string& src = ds.source();
  DicomPixelFormat f;
  f.rows = ds.integer(rows, 1, 65535, "Rows");
  f.columns = ds.integer(columns, 1, 65535, "Columns");
  f.samples = ds.integer(samples_per_pixel, 1, 1, 4, "SamplesPerPixel");
  f.frames = ds.integer(number_of_frames, 1, 1, int64_t{1} << 20, "NumberOfFrames");
  f.is_float = ds.has(float_pixel_data) || ds.has(double_float_pixel_data);
  f.bits_allocated = static_cast<int>(ds.integer(bits_allocated, ds.has(double_float_pixel_data) ? 64 : 32, 1, 64, "BitsAllocated"));
  f.bits_stored = static_cast<int>(ds.integer(bits_stored, f.bits_allocated, 1, 64, "BitsStored"));
  f.high_bit = static_cast<int>(ds.integer(high_bit, f.bits_stored - 1, 0, 63, "HighBit"));
  f.is_signed = ds.number(pixel_representation, 0) == 1;
  f.planar_configuration = static_cast<int>(ds.integer(planar_configuration, 0, 0, 1, "PlanarConfiguration"));
  f.photometric = ds.text(photometric_interpretation, "MONOCHROME2");
  VOX_CHECK(f.samples == 1 || f.samples == 3 || f.samples == 4, "dicom", src, ": SamplesPerPixel ", f.samples, " is not 1, 3 or 4");
  VOX_CHECK(f.bits_allocated == 1 || f.bits_allocated == 8 || f.bits_allocated == 16 || f.bits_allocated == 32 ||
                f.bits_allocated == 64,
            "dicom", src, ": BitsAllocated ", f.bits_allocated, " is not 1, 8, 16, 32 or 64");
  VOX_CHECK(f.bits_stored >= 1 && f.bits_stored <= f.bits_allocated, "dicom", src, ": BitsStored ", f.bits_stored,
            " does not fit BitsAllocated ", f.bits_allocated);
  VOX_CHECK(f.high_bit >= f.bits_stored - 1 && f.high_bit < f.bits_allocated, "dicom", src, ": HighBit ", f.high_bit,
            " does not fit BitsStored ", f.bits_stored, " and BitsAllocated ", f.bits_allocated);
  VOX_CHECK(!f.is_float || f.bits_allocated == (ds.has(double_float_pixel_data) ? 64 : 32), "dicom", src, ": ",
            ds.has(double_float_pixel_data) ? "Double Float" : "Float", " Pixel Data needs BitsAllocated ",
            ds.has(double_float_pixel_data) ? 64 : 32, ", not ", f.bits_allocated);
  VOX_CHECK(f.planar_configuration == 0 || f.planar_configuration == 1, "dicom", src, ": PlanarConfiguration ",
            f.planar_configuration, " is not 0 or 1");
  return f;
}

// The bytes of pixel data the header says the file holds (before any compression), and a check
// that the file's `file_bytes` can hold them at the syntax's largest expansion: a header that
// claims a huge image over a few bytes is refused before anything is allocated for it.
inline uint64_t dicom_claimed_pixel_bytes(const DicomFile& file, uint64_t file_bytes) {
  const DicomPixelFormat f = dicom_pixel_format(file.data);
  const bool ybr422 = f.photometric == "YBR_FULL_422" && !file.syntax.encapsulated;
  const uint64_t pixels = static_cast<uint64_t>(f.pixels_per_frame()) * static_cast<uint64_t>(f.frames);
  const uint64_t claimed = ybr422 ? pixels * 2 : (pixels * static_cast<uint64_t>(f.samples) * static_cast<uint64_t>(f.bits_allocated) + 7) / 8;
  const uint64_t expansion = dicom_max_expansion(file.syntax);
  VOX_CHECK(claimed <= file_bytes * expansion, "dicom", file.path, ": the header claims ", f.frames, " frame(s) of ", f.rows, "x",
            f.columns, "x", f.samples, " samples of ", f.bits_allocated, " bits (", claimed, " bytes), more than the ", file_bytes,
            "-byte file can hold in ", file.syntax.name, " (at most ", expansion, " bytes per stored byte)");
  return claimed;
}

namespace dicom_detail {

// Calls fn.template operator()<T>() for the dtypes stored values come in.
template <class F>
void dispatch_stored(DType dtype, F&& fn) {
  switch (dtype) {
    case DType::u8: return fn.template operator()<uint8_t>();
    case DType::i8: return fn.template operator()<int8_t>();
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::i64: return fn.template operator()<int64_t>();
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    default: fail("dicom", "no stored values of dtype ", dtype_name(dtype));
  }
}

inline DType stored_dtype(const DicomPixelFormat& f) {
  if (f.is_float) return f.bits_allocated == 64 ? DType::f64 : DType::f32;
  if (f.bits_allocated <= 8) return f.is_signed ? DType::i8 : DType::u8;
  if (f.bits_allocated == 16) return DType::i32;
  if (f.bits_allocated == 32) return f.is_signed ? DType::i32 : DType::i64;
  return DType::i64;
}

// PackBits (PS3.5 G.3.1) of one RLE segment into exactly `size` bytes.
inline void unpack_rle_segment(const uint8_t* in, size_t in_size, uint8_t* out, size_t size, const std::string& src) {
  size_t i = 0, o = 0;
  while (o < size && i < in_size) {
    const int8_t n = static_cast<int8_t>(in[i++]);
    if (n >= 0) {
      const size_t count = static_cast<size_t>(n) + 1;
      VOX_CHECK(i + count <= in_size && o + count <= size, "dicom", src, ": RLE literal run overruns its segment");
      std::memcpy(out + o, in + i, count);
      i += count, o += count;
    } else if (n != -128) {
      const size_t count = static_cast<size_t>(1 - n);
      VOX_CHECK(i < in_size && o + count <= size, "dicom", src, ": RLE replicate run overruns its segment");
      std::memset(out + o, in[i++], count);
      o += count;
    }
  }
  VOX_CHECK(o == size, "dicom", src, ": RLE segment decodes to ", o, " bytes, ", size, " expected");
}

// One RLE frame into native little-endian bytes, samples interleaved.
inline std::vector<uint8_t> decode_rle_frame(const std::vector<uint8_t>& frame, const DicomPixelFormat& f, const std::string& src) {
  VOX_CHECK(frame.size() >= 64, "dicom", src, ": RLE frame of ", frame.size(), " bytes has no 64-byte header");
  auto u32 = [&](size_t at) {
    return uint32_t{frame[at]} | uint32_t{frame[at + 1]} << 8 | uint32_t{frame[at + 2]} << 16 | uint32_t{frame[at + 3]} << 24;
  };
  const int bytes = f.bytes_per_sample();
  VOX_CHECK(f.bits_allocated % 8 == 0, "dicom", src, ": RLE of BitsAllocated ", f.bits_allocated, " is not defined");
  const uint32_t segments = u32(0);
  VOX_CHECK(segments == static_cast<uint32_t>(f.samples * bytes), "dicom", src, ": RLE frame has ", segments, " segments, ",
            f.samples * bytes, " expected for ", f.samples, " samples of ", f.bits_allocated, " bits");
  const size_t pixels = static_cast<size_t>(f.pixels_per_frame());
  // PackBits expands two bytes to at most 128: refuse sizes the frame cannot hold before allocating
  VOX_CHECK(pixels * segments <= 64 * frame.size(), "dicom", src, ": a ", frame.size(), "-byte RLE frame cannot hold ", segments,
            " segments of ", pixels, " pixels");
  std::vector<uint8_t> plane(pixels), out(pixels * static_cast<size_t>(f.samples * bytes));
  for (uint32_t s = 0; s < segments; ++s) {
    const size_t begin = u32(4 + 4 * s), end = s + 1 < segments ? u32(8 + 4 * s) : frame.size();
    VOX_CHECK(begin >= 64 && begin <= end && end <= frame.size(), "dicom", src, ": RLE segment ", s, " has offsets ", begin,
              "..", end, " outside its ", frame.size(), "-byte frame");
    unpack_rle_segment(frame.data() + begin, end - begin, plane.data(), pixels, src);
    // segments run sample by sample, most significant byte first
    const int sample = static_cast<int>(s) / bytes, byte = bytes - 1 - static_cast<int>(s) % bytes;
    for (size_t p = 0; p < pixels; ++p) out[(p * static_cast<size_t>(f.samples) + sample) * bytes + byte] = plane[p];
  }
  return out;
}

// The fragments of each frame of encapsulated pixel data (PS3.5 A.4), concatenated.
inline std::vector<std::vector<uint8_t>> encapsulated_frames(const DicomDataSet& ds, const DicomElement& e, int64_t frames) {
  const std::string& src = ds.source();
  VOX_CHECK(!e.fragments.empty(), "dicom", src, ": encapsulated pixel data has no basic offset table item");
  const std::vector<std::pair<size_t, size_t>> fragments(e.fragments.begin() + 1, e.fragments.end());
  VOX_CHECK(!fragments.empty(), "dicom", src, ": encapsulated pixel data holds no fragments");
  auto join = [&](size_t first, size_t last) {
    std::vector<uint8_t> out;
    const uint8_t* base = ds.buffer()->data();
    for (size_t n = first; n < last; ++n)
      out.insert(out.end(), base + fragments[n].first, base + fragments[n].first + fragments[n].second);
    return out;
  };
  std::vector<std::vector<uint8_t>> out;
  const auto& table = e.fragments.front();
  if (fragments.size() == static_cast<size_t>(frames)) {
    for (size_t n = 0; n < fragments.size(); ++n) out.push_back(join(n, n + 1));
  } else if (frames == 1) {
    out.push_back(join(0, fragments.size()));
  } else if (table.second == static_cast<size_t>(frames) * 4) {
    // basic offset table: each frame's first item, in bytes from the first fragment's item tag
    // The table must increase, so one forward walk over the fragments finds every start.
    const size_t base = fragments[0].first - 8;
    std::vector<size_t> starts;
    size_t index = 0;
    for (int64_t f = 0; f < frames; ++f) {
      const uint8_t* p = ds.buffer()->data() + table.first + 4 * f;
      const size_t offset = uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
      VOX_CHECK(starts.empty() || offset > fragments[starts.back()].first - 8 - base, "dicom", src,
                ": basic offset table is not increasing at frame ", f);
      while (index < fragments.size() && fragments[index].first - 8 - base < offset) ++index;
      VOX_CHECK(index < fragments.size() && fragments[index].first - 8 - base == offset, "dicom", src, ": basic offset table entry ",
                f, " (", offset, ") is not a fragment start");
      starts.push_back(index);
    }
    starts.push_back(fragments.size());
    for (int64_t f = 0; f < frames; ++f) out.push_back(join(starts[f], starts[f + 1]));
  } else {
    // no table: a frame begins with a JPEG SOI (FF D8) or JPEG 2000 SOC (FF 4F) marker
    std::vector<size_t> starts;
    for (size_t n = 0; n < fragments.size(); ++n) {
      const uint8_t* p = ds.buffer()->data() + fragments[n].first;
      if (fragments[n].second >= 2 && p[0] == 0xFF && (p[1] == 0xD8 || p[1] == 0x4F)) starts.push_back(n);
    }
    VOX_CHECK(static_cast<int64_t>(starts.size()) == frames && starts[0] == 0, "dicom", src, ": cannot tell which of ",
              fragments.size(), " fragments belong to which of ", frames, " frames (no basic offset table)");
    starts.push_back(fragments.size());
    for (int64_t f = 0; f < frames; ++f) out.push_back(join(starts[f], starts[f + 1]));
  }
  return out;
}

// Native little-endian sample bytes (interleaved, or planar as stored) into the output tensor,
// keeping the bits BitsStored/HighBit name.
template <class Out>
void store_samples(const uint8_t* bytes, const DicomPixelFormat& f, bool planar, Out* out) {
  const int64_t pixels = f.pixels_per_frame(), samples = f.samples, width = f.bytes_per_sample();
  const int shift = f.high_bit + 1 - f.bits_stored;
  const bool masked = !f.is_float && (f.bits_stored < f.bits_allocated);
  const uint64_t mask = f.bits_stored >= 64 ? ~uint64_t{0} : (uint64_t{1} << f.bits_stored) - 1;
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t s = 0; s < samples; ++s) {
      const int64_t at = planar ? s * pixels + p : p * samples + s;
      const uint8_t* q = bytes + at * width;
      Out value;
      if constexpr (std::is_floating_point_v<Out>) {
        if (width == 4) {
          float v;
          std::memcpy(&v, q, 4);
          value = static_cast<Out>(v);
        } else {
          double v;
          std::memcpy(&v, q, 8);
          value = static_cast<Out>(v);
        }
      } else {
        uint64_t raw = 0;
        for (int64_t b = width - 1; b >= 0; --b) raw = raw << 8 | q[b];
        int64_t v;
        if (masked) {
          raw = (raw >> shift) & mask;
          v = f.is_signed && (raw >> (f.bits_stored - 1)) ? static_cast<int64_t>(raw | ~mask) : static_cast<int64_t>(raw);
        } else if (f.is_signed) {
          v = width == 1 ? int8_t(raw) : width == 2 ? int16_t(raw) : width == 4 ? int32_t(raw) : static_cast<int64_t>(raw);
        } else {
          v = static_cast<int64_t>(raw);
        }
        value = static_cast<Out>(v);
      }
      out[p * samples + s] = value;
    }
}

}  // namespace dicom_detail

// The photometric interpretation of the values dicom_stored_values() gives: JPEG 2000 decoding
// turns YBR_RCT and YBR_ICT into RGB; JPEG YBR_FULL_422 is upsampled to YBR_FULL; everything else
// keeps what the data set says.
inline std::string dicom_decoded_photometric(const DicomFile& file) {
  const DicomPixelFormat f = dicom_pixel_format(file.data);
  if (dicom_codecs::codec_of(file.syntax.uid) == dicom_codecs::Codec::jpeg_2000 && f.samples == 3) return "RGB";
  if (f.photometric == "YBR_FULL_422") return "YBR_FULL";  // every decoder here upsamples the chroma
  return f.photometric;
}

// The stored values of every frame; see the top of this file for the layout and dtypes.
// Pixel data that would decode to more than its bytes can hold (dicom_max_expansion) or than the
// read ceiling is refused before it is decoded.
inline Tensor dicom_stored_values(const DicomFile& file, const ReadLimits& limits = {}) {
  using namespace dicom_detail;
  const DicomDataSet& ds = file.data;
  const std::string& src = file.path;
  const DicomPixelFormat f = dicom_pixel_format(ds);
  const DicomElement* pixels = ds.find(dicom_tags::pixel_data);
  if (!pixels) pixels = ds.find(dicom_tags::float_pixel_data);
  if (!pixels) pixels = ds.find(dicom_tags::double_float_pixel_data);
  VOX_CHECK(pixels != nullptr, "dicom", src, ": no pixel data (7FE0,0010), (7FE0,0008) or (7FE0,0009)");
  const bool ybr422 = f.photometric == "YBR_FULL_422" && !file.syntax.encapsulated;
  VOX_CHECK(!ybr422 || (f.samples == 3 && f.bits_allocated == 8 && f.columns % 2 == 0), "dicom", src,
            ": YBR_FULL_422 needs 3 samples of 8 bits and an even number of columns");
  const int64_t samples_per_frame = f.pixels_per_frame() * f.samples;
  const int width = f.bytes_per_sample();
  const size_t frame_bytes = static_cast<size_t>(ybr422 ? f.pixels_per_frame() * 2 : samples_per_frame * width);

  check_read_claim(static_cast<uint64_t>(frame_bytes) * static_cast<uint64_t>(f.frames), limits, "dicom", src,
                   "the pixel data (" + std::to_string(f.frames) + " frame(s) of " + std::to_string(frame_bytes) + " bytes)");
  // every frame as native little-endian bytes
  std::vector<std::vector<uint8_t>> frames;
  bool planar = f.planar_configuration == 1 && f.samples > 1;
  if (file.syntax.encapsulated) {
    VOX_CHECK(pixels->undefined_length, "dicom", src, ": ", file.syntax.name, " needs encapsulated pixel data (undefined length)");
    const std::vector<std::vector<uint8_t>> encoded = encapsulated_frames(ds, *pixels, f.frames);
    const bool rle = file.syntax.uid == "1.2.840.10008.1.2.5";
    for (const std::vector<uint8_t>& frame : encoded)
      frames.push_back(rle ? decode_rle_frame(frame, f, src)
                           : decode_compressed_frame(file.syntax, frame,
                                                     {f.rows, f.columns, f.samples, f.bits_allocated, f.photometric.rfind("YBR_FULL", 0) == 0},
                                                     src));
    planar = false;  // the decoders interleave
    for (const std::vector<uint8_t>& frame : frames)
      VOX_CHECK(frame.size() == frame_bytes, "dicom", src, ": a decoded frame has ", frame.size(), " bytes, ", frame_bytes, " expected");
  } else {
    VOX_CHECK(!pixels->undefined_length, "dicom", src, ": encapsulated pixel data in the uncompressed syntax ", file.syntax.name);
    const uint8_t* data = ds.bytes(*pixels);
    if (f.bits_allocated == 1) {
      // bits are packed across frames, least significant bit first
      const size_t total = static_cast<size_t>(samples_per_frame * f.frames);
      VOX_CHECK(pixels->length * 8 >= total, "dicom", src, ": pixel data holds ", pixels->length, " bytes, ", (total + 7) / 8, " needed");
      std::vector<uint8_t> bits(total);
      for (size_t n = 0; n < total; ++n) bits[n] = (data[n / 8] >> (n % 8)) & 1;
      for (int64_t fr = 0; fr < f.frames; ++fr)
        frames.emplace_back(bits.begin() + fr * samples_per_frame, bits.begin() + (fr + 1) * samples_per_frame);
    } else {
      VOX_CHECK(pixels->length >= frame_bytes * static_cast<size_t>(f.frames), "dicom", src, ": pixel data holds ", pixels->length,
                " bytes, but ", f.frames, " frame(s) of ", f.rows, "x", f.columns, "x", f.samples, " samples of ", f.bits_allocated,
                " bits need ", frame_bytes * static_cast<size_t>(f.frames));
      // big endian: each sample of 16 bits and more is byte-swapped (as pydicom and DCMTK write
      // 32-bit samples, even under VR OW); 8-bit samples in OW come as swapped 16-bit words
      const size_t swap_width = !ds.big_endian() ? 1 : width > 1 ? static_cast<size_t>(width) : pixels->is("OW") ? 2 : 1;
      for (int64_t fr = 0; fr < f.frames; ++fr) {
        std::vector<uint8_t> frame(data + fr * frame_bytes, data + (fr + 1) * frame_bytes);
        if (swap_width > 1)
          for (size_t n = 0; n + swap_width <= frame.size(); n += swap_width) std::reverse(frame.begin() + n, frame.begin() + n + swap_width);
        if (ybr422) {  // Y1 Y2 Cb Cr -> Y1 Cb Cr Y2 Cb Cr
          std::vector<uint8_t> full(static_cast<size_t>(samples_per_frame));
          for (size_t q = 0, o = 0; q + 4 <= frame.size(); q += 4, o += 6) {
            full[o] = frame[q], full[o + 3] = frame[q + 1];
            full[o + 1] = full[o + 4] = frame[q + 2];
            full[o + 2] = full[o + 5] = frame[q + 3];
          }
          frame = std::move(full);
        }
        frames.push_back(std::move(frame));
      }
    }
  }

  Shape shape{f.frames, f.rows, f.columns};
  if (f.samples > 1) shape.push_back(f.samples);
  DicomPixelFormat stored = f;
  if (f.bits_allocated == 1) stored.bits_allocated = stored.bits_stored = 8, stored.high_bit = 7;  // unpacked to bytes
  Tensor out = empty(shape, stored_dtype(f));
  dispatch_stored(out.dtype(), [&]<class T>() {
    T* dst = out.data<T>();
    for (int64_t fr = 0; fr < f.frames; ++fr) store_samples(frames[fr].data(), stored, planar, dst + fr * samples_per_frame);
  });
  return out;
}

// RescaleSlope/RescaleIntercept (1, 0 when absent): of the data set, overridden by the shared
// functional groups and then by frame `frame`'s own (enhanced multi-frame objects keep them
// there). CT values become Hounsfield units.
struct DicomRescale {
  double slope = 1, intercept = 0;
  bool identity() const { return slope == 1 && intercept == 0; }
};

inline DicomRescale dicom_rescale(const DicomDataSet& ds, int64_t frame = -1) {
  using namespace dicom_tags;
  DicomRescale r{ds.number(rescale_slope, 1.0), ds.number(rescale_intercept, 0.0)};
  auto take = [&](const DicomDataSet& group) {
    for (const DicomDataSet& t : group.items(pixel_value_transformation_sequence)) {
      r.slope = t.number(rescale_slope, r.slope);
      r.intercept = t.number(rescale_intercept, r.intercept);
    }
  };
  for (const DicomDataSet& shared : ds.items(shared_functional_groups)) take(shared);
  const std::vector<DicomDataSet>& per_frame = ds.items(per_frame_functional_groups);
  if (frame >= 0 && frame < static_cast<int64_t>(per_frame.size())) take(per_frame[static_cast<size_t>(frame)]);
  VOX_CHECK(std::isfinite(r.slope) && std::isfinite(r.intercept), "dicom", ds.source(), ": RescaleSlope ", r.slope,
            " or RescaleIntercept ", r.intercept, " is not finite");
  return r;
}

// WindowCenter/WindowWidth, the first pair when several are given (none: both 0).
struct DicomWindow {
  double center = 0, width = 0;
  bool present() const { return width > 0; }
};

inline DicomWindow dicom_window(const DicomDataSet& ds) {
  return {ds.number(dicom_tags::window_center, 0.0), ds.number(dicom_tags::window_width, 0.0)};
}

}  // namespace vox::io
