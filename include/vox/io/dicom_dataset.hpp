#pragma once
// DICOM data sets (PS3.5): the parser of Part-10 files and of bare data sets.
//
// What it reads:
//   - Part-10 files (preamble, "DICM", the file meta group), files whose preamble is missing,
//     and data sets with no meta group at all (the byte order and VR encoding are then found
//     from the first element, as DCMTK and pydicom do);
//   - implicit VR little endian, explicit VR little and big endian, and deflated explicit VR
//     little endian; encapsulated transfer syntaxes keep their pixel fragments for the decoders
//     in dicom_pixels.hpp;
//   - sequences and items of defined and undefined length, nested, private ones included;
//     in implicit VR a defined-length sequence is recognised by its first item tag;
//   - UN elements of undefined length (read as implicit VR little endian sequences, PS3.5 6.2.2).
// Every value is kept as a view into one shared buffer, so pixel data is never copied here.
//
// Malformed input raises vox::Error naming the file, the tag and the byte offset. Lengths are
// checked against the bytes left before anything is read, nesting is limited, and a deflated
// data set is inflated only up to a limit, so no input makes the parser crash, hang or run out
// of memory.
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vox/core/error.hpp"
#include "vox/io/file.hpp"
#include "vox/io/read_limits.hpp"

namespace vox::io {

constexpr uint32_t dicom_tag(uint16_t group, uint16_t element) { return (uint32_t{group} << 16) | element; }

// The tags vox reads, by keyword.
namespace dicom_tags {
constexpr uint32_t transfer_syntax_uid = dicom_tag(0x0002, 0x0010);
constexpr uint32_t sop_class_uid = dicom_tag(0x0008, 0x0016);
constexpr uint32_t sop_instance_uid = dicom_tag(0x0008, 0x0018);
constexpr uint32_t modality = dicom_tag(0x0008, 0x0060);
constexpr uint32_t series_description = dicom_tag(0x0008, 0x103E);
constexpr uint32_t patient_id = dicom_tag(0x0010, 0x0020);
constexpr uint32_t slice_thickness = dicom_tag(0x0018, 0x0050);
constexpr uint32_t spacing_between_slices = dicom_tag(0x0018, 0x0088);
constexpr uint32_t gantry_tilt = dicom_tag(0x0018, 0x1120);
constexpr uint32_t study_instance_uid = dicom_tag(0x0020, 0x000D);
constexpr uint32_t series_instance_uid = dicom_tag(0x0020, 0x000E);
constexpr uint32_t series_number = dicom_tag(0x0020, 0x0011);
constexpr uint32_t instance_number = dicom_tag(0x0020, 0x0013);
constexpr uint32_t image_position_patient = dicom_tag(0x0020, 0x0032);
constexpr uint32_t image_orientation_patient = dicom_tag(0x0020, 0x0037);
constexpr uint32_t plane_position_sequence = dicom_tag(0x0020, 0x9113);
constexpr uint32_t plane_orientation_sequence = dicom_tag(0x0020, 0x9116);
constexpr uint32_t samples_per_pixel = dicom_tag(0x0028, 0x0002);
constexpr uint32_t photometric_interpretation = dicom_tag(0x0028, 0x0004);
constexpr uint32_t planar_configuration = dicom_tag(0x0028, 0x0006);
constexpr uint32_t number_of_frames = dicom_tag(0x0028, 0x0008);
constexpr uint32_t rows = dicom_tag(0x0028, 0x0010);
constexpr uint32_t columns = dicom_tag(0x0028, 0x0011);
constexpr uint32_t pixel_spacing = dicom_tag(0x0028, 0x0030);
constexpr uint32_t bits_allocated = dicom_tag(0x0028, 0x0100);
constexpr uint32_t bits_stored = dicom_tag(0x0028, 0x0101);
constexpr uint32_t high_bit = dicom_tag(0x0028, 0x0102);
constexpr uint32_t pixel_representation = dicom_tag(0x0028, 0x0103);
constexpr uint32_t window_center = dicom_tag(0x0028, 0x1050);
constexpr uint32_t window_width = dicom_tag(0x0028, 0x1051);
constexpr uint32_t rescale_intercept = dicom_tag(0x0028, 0x1052);
constexpr uint32_t rescale_slope = dicom_tag(0x0028, 0x1053);
constexpr uint32_t rescale_type = dicom_tag(0x0028, 0x1054);
constexpr uint32_t pixel_measures_sequence = dicom_tag(0x0028, 0x9110);
constexpr uint32_t pixel_value_transformation_sequence = dicom_tag(0x0028, 0x9145);
constexpr uint32_t grid_frame_offset_vector = dicom_tag(0x3004, 0x000C);
constexpr uint32_t dose_grid_scaling = dicom_tag(0x3004, 0x000E);
constexpr uint32_t shared_functional_groups = dicom_tag(0x5200, 0x9229);
constexpr uint32_t per_frame_functional_groups = dicom_tag(0x5200, 0x9230);
constexpr uint32_t float_pixel_data = dicom_tag(0x7FE0, 0x0008);
constexpr uint32_t double_float_pixel_data = dicom_tag(0x7FE0, 0x0009);
constexpr uint32_t pixel_data = dicom_tag(0x7FE0, 0x0010);
constexpr uint32_t item = dicom_tag(0xFFFE, 0xE000);
constexpr uint32_t item_delimitation = dicom_tag(0xFFFE, 0xE00D);
constexpr uint32_t sequence_delimitation = dicom_tag(0xFFFE, 0xE0DD);
}  // namespace dicom_tags

// The transfer syntaxes vox knows, and how each one encodes the data set and the pixels.
struct TransferSyntax {
  std::string uid;
  std::string name;
  bool explicit_vr = true;
  bool big_endian = false;
  bool deflated = false;
  bool encapsulated = false;  // pixel data in fragments: RLE or a JPEG family

  static TransferSyntax from_uid(const std::string& uid) {
    struct Known {
      const char* uid;
      const char* name;
      bool explicit_vr, big_endian, deflated, encapsulated;
    };
    static const Known known[] = {
        {"1.2.840.10008.1.2", "Implicit VR Little Endian", false, false, false, false},
        {"1.2.840.10008.1.2.1", "Explicit VR Little Endian", true, false, false, false},
        {"1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian", true, false, true, false},
        {"1.2.840.10008.1.2.2", "Explicit VR Big Endian", true, true, false, false},
        {"1.2.840.10008.1.2.5", "RLE Lossless", true, false, false, true},
        {"1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", true, false, false, true},
        {"1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 and 4)", true, false, false, true},
        {"1.2.840.10008.1.2.4.57", "JPEG Lossless (Process 14)", true, false, false, true},
        {"1.2.840.10008.1.2.4.70", "JPEG Lossless (Process 14, Selection Value 1)", true, false, false, true},
        {"1.2.840.10008.1.2.4.80", "JPEG-LS Lossless", true, false, false, true},
        {"1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless", true, false, false, true},
        {"1.2.840.10008.1.2.4.90", "JPEG 2000 (Lossless Only)", true, false, false, true},
        {"1.2.840.10008.1.2.4.91", "JPEG 2000", true, false, false, true},
        {"1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 (Lossless Only)", true, false, false, true},
        {"1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000", true, false, false, true},
    };
    for (const Known& k : known)
      if (uid == k.uid) return {k.uid, k.name, k.explicit_vr, k.big_endian, k.deflated, k.encapsulated};
    fail("dicom", "transfer syntax ", uid.empty() ? std::string("(empty)") : uid,
         " is not one vox knows (implicit/explicit VR little endian, explicit VR big endian, deflated, RLE, JPEG, JPEG-LS, JPEG 2000)");
  }
};

class DicomDataSet;

// One element: its VR ("  " when implicit and not in vox's dictionary), and its value as a view
// into the shared buffer. A sequence holds items; encapsulated pixel data holds fragments, the
// first of which is the basic offset table.
struct DicomElement {
  uint32_t tag = 0;
  char vr[2] = {' ', ' '};
  size_t offset = 0, length = 0;  // the value's bytes in the buffer
  bool undefined_length = false;
  std::vector<DicomDataSet> items;
  std::vector<std::pair<size_t, size_t>> fragments;  // (offset, length) of each encapsulated item

  bool is(const char* two) const { return vr[0] == two[0] && vr[1] == two[1]; }
};

// The VR of the tags vox reads, for implicit VR data sets, where the file does not say.
inline const char* dicom_known_vr(uint32_t tag) {
  using namespace dicom_tags;
  switch (tag) {
    case samples_per_pixel: case planar_configuration: case rows: case columns: case bits_allocated:
    case bits_stored: case high_bit: case pixel_representation: return "US";
    case shared_functional_groups: case per_frame_functional_groups: case plane_position_sequence:
    case plane_orientation_sequence: case pixel_measures_sequence: case pixel_value_transformation_sequence:
      return "SQ";
    case float_pixel_data: return "OF";
    case double_float_pixel_data: return "OD";
  }
  return "  ";
}

// A data set: elements by tag, their values read on request in the data set's byte order.
class DicomDataSet {
 public:
  DicomDataSet() = default;
  DicomDataSet(std::shared_ptr<const std::vector<uint8_t>> buffer, bool big_endian, std::string source)
      : buffer_(std::move(buffer)), big_endian_(big_endian), source_(std::move(source)) {}

  bool has(uint32_t tag) const { return elements_.count(tag) != 0; }
  const DicomElement* find(uint32_t tag) const {
    auto it = elements_.find(tag);
    return it == elements_.end() ? nullptr : &it->second;
  }
  const DicomElement& at(uint32_t tag) const {
    const DicomElement* e = find(tag);
    VOX_CHECK(e != nullptr, "dicom", source_, ": ", tag_name(tag), " is missing");
    return *e;
  }
  const std::map<uint32_t, DicomElement>& elements() const { return elements_; }
  bool big_endian() const { return big_endian_; }
  const std::string& source() const { return source_; }
  const uint8_t* bytes(const DicomElement& e) const { return buffer_->data() + e.offset; }
  const std::shared_ptr<const std::vector<uint8_t>>& buffer() const { return buffer_; }

  // A text value with trailing spaces and NULs removed (leading spaces too, as DS/IS/UI allow).
  std::string text(uint32_t tag, const std::string& fallback = "") const {
    const DicomElement* e = find(tag);
    if (!e) return fallback;
    std::string s(reinterpret_cast<const char*>(bytes(*e)), e->length);
    return trim(s);
  }
  // The backslash-separated values of a multi-valued text element.
  std::vector<std::string> texts(uint32_t tag) const {
    std::vector<std::string> out;
    const DicomElement* e = find(tag);
    if (!e || e->length == 0) return out;
    const std::string s(reinterpret_cast<const char*>(bytes(*e)), e->length);
    size_t start = 0;
    while (true) {
      const size_t end = s.find('\\', start);
      out.push_back(trim(s.substr(start, end == std::string::npos ? std::string::npos : end - start)));
      if (end == std::string::npos) break;
      start = end + 1;
    }
    return out;
  }

  // Numeric values of DS/IS (text) or US/SS/UL/SL/FL/FD (binary) elements.
  std::vector<double> numbers(uint32_t tag) const {
    std::vector<double> out;
    const DicomElement* e = find(tag);
    if (!e) return out;
    const char* vr = e->vr[0] == ' ' ? dicom_known_vr(tag) : e->vr;
    auto binary = [&]<class T>() {
      VOX_CHECK(e->length % sizeof(T) == 0, "dicom", source_, ": ", tag_name(tag), " (", std::string(vr, 2), ") has ", e->length,
                " bytes, not a multiple of ", sizeof(T));
      for (size_t n = 0; n < e->length / sizeof(T); ++n) out.push_back(static_cast<double>(read<T>(bytes(*e) + n * sizeof(T))));
    };
    const std::string v(vr, 2);
    if (v == "US") binary.template operator()<uint16_t>();
    else if (v == "SS") binary.template operator()<int16_t>();
    else if (v == "UL") binary.template operator()<uint32_t>();
    else if (v == "SL") binary.template operator()<int32_t>();
    else if (v == "FL") binary.template operator()<float>();
    else if (v == "FD") binary.template operator()<double>();
    else
      for (const std::string& s : texts(tag)) {
        if (s.empty()) continue;
        char* end = nullptr;
        const double d = std::strtod(s.c_str(), &end);
        VOX_CHECK(end != s.c_str() && *end == '\0', "dicom", source_, ": ", tag_name(tag), " value \"", s, "\" is not a number");
        out.push_back(d);
      }
    return out;
  }
  double number(uint32_t tag, double fallback) const {
    const std::vector<double> v = numbers(tag);
    return v.empty() ? fallback : v[0];
  }
  // A required number: missing or empty raises an error naming the tag.
  double number(uint32_t tag) const {
    const std::vector<double> v = numbers(tag);
    VOX_CHECK(!v.empty(), "dicom", source_, ": ", tag_name(tag), " is missing or empty");
    return v[0];
  }

  // A whole number from `lo` to `hi` (`fallback` when missing or empty). NaN, infinities,
  // fractions and values out of range raise an error naming the tag, instead of the undefined
  // behaviour of casting such a double.
  int64_t integer(uint32_t tag, int64_t fallback, int64_t lo, int64_t hi, const char* what) const {
    const std::vector<double> v = numbers(tag);
    if (v.empty()) return fallback;
    return checked_integer(tag, v[0], lo, hi, what);
  }
  // The same, for a required element.
  int64_t integer(uint32_t tag, int64_t lo, int64_t hi, const char* what) const {
    return checked_integer(tag, number(tag), lo, hi, what);
  }

  // The items of a sequence (empty when the element is missing).
  const std::vector<DicomDataSet>& items(uint32_t tag) const {
    static const std::vector<DicomDataSet> none;
    const DicomElement* e = find(tag);
    return e ? e->items : none;
  }

  template <class T>
  T read(const uint8_t* p) const {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, p, sizeof(T));
    if (big_endian_) std::reverse(tmp, tmp + sizeof(T));
    T v;
    std::memcpy(&v, tmp, sizeof(T));
    return v;
  }

  static std::string tag_name(uint32_t tag) {
    static const char* hex = "0123456789ABCDEF";
    std::string s = "(gggg,eeee)";
    for (int n = 0; n < 4; ++n) {
      s[1 + n] = hex[(tag >> (28 - 4 * n)) & 0xF];
      s[6 + n] = hex[(tag >> (12 - 4 * n)) & 0xF];
    }
    return s;
  }

 private:
  friend class DicomParser;
  int64_t checked_integer(uint32_t tag, double d, int64_t lo, int64_t hi, const char* what) const {
    VOX_CHECK(std::isfinite(d) && d == std::floor(d) && d >= static_cast<double>(lo) && d <= static_cast<double>(hi), "dicom", source_,
              ": ", what, " ", tag_name(tag), " = ", d, " is not a whole number from ", lo, " to ", hi);
    return static_cast<int64_t>(d);
  }
  static std::string trim(std::string s) {
    while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
    size_t lead = 0;
    while (lead < s.size() && s[lead] == ' ') ++lead;
    return s.substr(lead);
  }

  std::shared_ptr<const std::vector<uint8_t>> buffer_ = std::make_shared<const std::vector<uint8_t>>();
  bool big_endian_ = false;
  std::string source_;
  std::map<uint32_t, DicomElement> elements_;
};

// A parsed file: the meta group (empty when the file has none) and the data set.
struct DicomFile {
  std::string path;
  TransferSyntax syntax;
  bool has_meta = false;
  bool stopped_before_pixels = false;  // read with stop_before_pixels, and the pixel data was reached
  DicomDataSet meta;
  DicomDataSet data;
};

struct DicomReadOptions {
  bool stop_before_pixels = false;  // headers only: series assembly reads the pixels later
  ReadLimits limits;                // a deflated data set may not inflate past limits.max_bytes
};

// The recursive-descent parser over one buffer. Every read is bounds-checked.
class DicomParser {
 public:
  DicomParser(std::shared_ptr<const std::vector<uint8_t>> buffer, std::string source)
      : buffer_(std::move(buffer)), b_(buffer_->data()), source_(std::move(source)) {}

  // Parses elements from `pos` up to `end`, or up to an item delimiter when `undefined_item`, or
  // up to the first element outside `only_group` when that is given (the file meta group).
  // Returns the position after the last element read.
  size_t parse(DicomDataSet& ds, size_t pos, size_t end, bool explicit_vr, bool big_endian, bool undefined_item, int depth,
               bool stop_before_pixels, int only_group = -1) {
    VOX_CHECK(depth <= 64, "dicom", source_, ": sequences nested more than 64 deep at byte ", pos);
    while (pos < end) {
      VOX_CHECK(end - pos >= 8, "dicom", source_, ": ", end - pos, " stray bytes at byte ", pos, " where an element should start");
      const size_t start = pos;
      const uint32_t tag = read_tag(pos, big_endian);
      if (only_group >= 0 && static_cast<int>(tag >> 16) != only_group) return start;
      if (tag == dicom_tags::item_delimitation) {
        VOX_CHECK(undefined_item, "dicom", source_, ": item delimiter outside an item of undefined length at byte ", start);
        return pos + 8;
      }
      VOX_CHECK(tag != dicom_tags::sequence_delimitation, "dicom", source_, ": sequence delimiter outside a sequence at byte ", start);
      VOX_CHECK(tag != dicom_tags::item, "dicom", source_, ": item tag outside a sequence at byte ", start);
      if (stop_before_pixels && (tag == dicom_tags::pixel_data || tag == dicom_tags::float_pixel_data ||
                                 tag == dicom_tags::double_float_pixel_data)) {
        reached_pixels_ = true;
        return end;
      }
      DicomElement e;
      e.tag = tag;
      uint32_t length;
      pos += 4;
      if (explicit_vr) {
        e.vr[0] = static_cast<char>(b_[pos]), e.vr[1] = static_cast<char>(b_[pos + 1]);
        VOX_CHECK(e.vr[0] >= 'A' && e.vr[0] <= 'Z' && e.vr[1] >= 'A' && e.vr[1] <= 'Z', "dicom", source_, ": ",
                  DicomDataSet::tag_name(tag), " at byte ", start, " has no valid VR (bytes 0x", hex2(b_[pos]), " 0x",
                  hex2(b_[pos + 1]), "); is the transfer syntax right?");
        if (long_length_vr(e.vr)) {
          VOX_CHECK(end - pos >= 8, "dicom", source_, ": ", DicomDataSet::tag_name(tag), " at byte ", start, " is cut off");
          length = read32(pos + 4, big_endian);
          pos += 8;
        } else {
          length = read16(pos + 2, big_endian);
          pos += 4;
        }
      } else {
        const char* known = dicom_known_vr(tag);
        e.vr[0] = known[0], e.vr[1] = known[1];
        length = read32(pos, big_endian);
        pos += 4;
      }
      if (length == 0xFFFFFFFFu) {
        e.undefined_length = true;
        if (tag == dicom_tags::pixel_data) {
          pos = parse_fragments(e, pos, end, big_endian);
        } else {
          // a sequence, or UN of undefined length: implicit VR little endian inside (PS3.5 6.2.2)
          VOX_CHECK(e.is("SQ") || e.is("UN") || !explicit_vr, "dicom", source_, ": ", DicomDataSet::tag_name(tag), " (",
                    std::string(e.vr, 2), ") at byte ", start, " has undefined length, which only sequences may have");
          const bool un = e.is("UN");
          pos = parse_items(e, pos, end, true, un ? false : explicit_vr, un ? false : big_endian, depth, stop_before_pixels);
          e.vr[0] = 'S', e.vr[1] = 'Q';
        }
      } else {
        VOX_CHECK(length <= end - pos, "dicom", source_, ": ", DicomDataSet::tag_name(tag), " at byte ", start, " declares ",
                  length, " bytes but only ", end - pos, " remain");
        e.offset = pos, e.length = length;
        if (e.is("SQ")) {
          parse_items(e, pos, pos + length, false, explicit_vr, big_endian, depth, stop_before_pixels);
        } else if (!explicit_vr && e.is("  ") && looks_like_item(pos, length, big_endian)) {
          // implicit VR and not in vox's dictionary: a sequence if it parses as one, else bytes
          try {
            parse_items(e, pos, pos + length, false, explicit_vr, big_endian, depth, stop_before_pixels);
            e.vr[0] = 'S', e.vr[1] = 'Q';
          } catch (const Error&) {
            e.items.clear();
          }
        }
        pos += length;
      }
      ds.elements_[tag] = std::move(e);
    }
    VOX_CHECK(!undefined_item, "dicom", source_, ": an item of undefined length is not closed before byte ", end);
    return pos;
  }

  DicomDataSet make_set(bool big_endian) const { return DicomDataSet(buffer_, big_endian, source_); }
  bool reached_pixels() const { return reached_pixels_; }

 private:
  static bool long_length_vr(const char* vr) {
    static const char* longs[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
    for (const char* l : longs)
      if (vr[0] == l[0] && vr[1] == l[1]) return true;
    return false;
  }
  static std::string hex2(uint8_t v) {
    static const char* hex = "0123456789ABCDEF";
    return {hex[v >> 4], hex[v & 15]};
  }
  uint16_t read16(size_t p, bool be) const { return be ? uint16_t(b_[p] << 8 | b_[p + 1]) : uint16_t(b_[p] | b_[p + 1] << 8); }
  uint32_t read32(size_t p, bool be) const {
    return be ? (uint32_t{b_[p]} << 24 | uint32_t{b_[p + 1]} << 16 | uint32_t{b_[p + 2]} << 8 | b_[p + 3])
              : (uint32_t{b_[p]} | uint32_t{b_[p + 1]} << 8 | uint32_t{b_[p + 2]} << 16 | uint32_t{b_[p + 3]} << 24);
  }
  uint32_t read_tag(size_t p, bool be) const { return uint32_t{read16(p, be)} << 16 | read16(p + 2, be); }
  bool looks_like_item(size_t pos, size_t length, bool be) const {
    return length >= 8 && (read_tag(pos, be) == dicom_tags::item);
  }

  // Items of a sequence, up to `end` (defined length) or up to a sequence delimiter (undefined).
  size_t parse_items(DicomElement& seq, size_t pos, size_t end, bool undefined, bool explicit_vr, bool big_endian, int depth,
                     bool stop_before_pixels) {
    const size_t limit = end;
    while (undefined || pos < limit) {
      VOX_CHECK(pos <= limit && limit - pos >= 8, "dicom", source_, ": sequence ", DicomDataSet::tag_name(seq.tag),
                " is cut off at byte ", pos);
      const uint32_t tag = read_tag(pos, big_endian);
      const uint32_t length = read32(pos + 4, big_endian);
      pos += 8;
      if (tag == dicom_tags::sequence_delimitation) {
        VOX_CHECK(undefined, "dicom", source_, ": sequence delimiter inside ", DicomDataSet::tag_name(seq.tag),
                  " of defined length at byte ", pos - 8);
        return pos;
      }
      VOX_CHECK(tag == dicom_tags::item, "dicom", source_, ": ", DicomDataSet::tag_name(tag), " at byte ", pos - 8,
                " where an item of sequence ", DicomDataSet::tag_name(seq.tag), " should be");
      VOX_CHECK(seq.items.size() < (size_t{1} << 24), "dicom", source_, ": more than 2^24 items in ", DicomDataSet::tag_name(seq.tag));
      DicomDataSet item = make_set(big_endian);
      if (length == 0xFFFFFFFFu) {
        pos = parse(item, pos, limit, explicit_vr, big_endian, true, depth + 1, stop_before_pixels);
      } else {
        VOX_CHECK(length <= limit - pos, "dicom", source_, ": item of ", DicomDataSet::tag_name(seq.tag), " at byte ", pos - 8,
                  " declares ", length, " bytes but only ", limit - pos, " remain");
        parse(item, pos, pos + length, explicit_vr, big_endian, false, depth + 1, stop_before_pixels);
        pos += length;
      }
      seq.items.push_back(std::move(item));
    }
    return pos;
  }

  // Encapsulated pixel data (PS3.5 A.4): items of bytes up to a sequence delimiter.
  size_t parse_fragments(DicomElement& e, size_t pos, size_t end, bool big_endian) {
    while (true) {
      VOX_CHECK(pos <= end && end - pos >= 8, "dicom", source_, ": encapsulated pixel data is cut off at byte ", pos,
                " (no sequence delimiter)");
      const uint32_t tag = read_tag(pos, big_endian);
      const uint32_t length = read32(pos + 4, big_endian);
      pos += 8;
      if (tag == dicom_tags::sequence_delimitation) return pos;
      VOX_CHECK(tag == dicom_tags::item, "dicom", source_, ": ", DicomDataSet::tag_name(tag), " at byte ", pos - 8,
                " inside encapsulated pixel data, where a fragment item should be");
      VOX_CHECK(length != 0xFFFFFFFFu && length <= end - pos, "dicom", source_, ": pixel data fragment at byte ", pos - 8,
                " declares ", length, " bytes but only ", end - pos, " remain");
      e.fragments.emplace_back(pos, length);
      pos += length;
    }
  }

  std::shared_ptr<const std::vector<uint8_t>> buffer_;
  const uint8_t* b_;
  std::string source_;
  bool reached_pixels_ = false;
};

namespace dicom_detail {

// Raw deflate (RFC 1951, no zlib header), as the deflated transfer syntax stores the data set.
inline std::vector<uint8_t> inflate_raw(const uint8_t* in, size_t size, size_t limit, const std::string& source) {
  struct Inflater {
    z_stream zs{};
    bool started = false;
    ~Inflater() {
      if (started) inflateEnd(&zs);
    }
  } inflater;
  z_stream& zs = inflater.zs;
  VOX_CHECK(inflateInit2(&zs, -15) == Z_OK, "dicom", source, ": cannot start inflating the deflated data set");
  inflater.started = true;
  std::vector<uint8_t> out;
  size_t fed = 0;
  while (true) {
    if (zs.avail_in == 0 && fed < size) {
      const size_t next = std::min<size_t>(size - fed, std::numeric_limits<uInt>::max());
      zs.next_in = const_cast<Bytef*>(in + fed);
      zs.avail_in = static_cast<uInt>(next);
      fed += next;
    }
    VOX_CHECK(out.size() < limit, "dicom", source, ": the deflated data set inflates past the read ceiling of ", limit,
              " bytes (raise ReadLimits::max_bytes, or VOX_MAX_READ_MIB for the vox programs)");
    const size_t chunk = std::min<size_t>(limit - out.size(), size_t{1} << 22);
    const size_t before = out.size();
    out.resize(before + chunk);
    zs.next_out = out.data() + before;
    zs.avail_out = static_cast<uInt>(chunk);
    const int status = inflate(&zs, Z_NO_FLUSH);
    out.resize(before + chunk - zs.avail_out);
    if (status == Z_STREAM_END) break;
    if (status == Z_BUF_ERROR && zs.avail_in == 0 && fed == size) fail("dicom", source, ": the deflated data set is cut off");
    VOX_CHECK(status == Z_OK, "dicom", source, ": corrupt deflated data set (zlib: ", zs.msg ? zs.msg : "error", ")");
  }
  return out;
}

// For a data set without meta information: the encoding the first element reveals.
inline TransferSyntax guess_syntax(const uint8_t* b, size_t size, const std::string& source) {
  VOX_CHECK(size >= 8, "dicom", source, ": ", size, " bytes is too short for a DICOM data set");
  const uint16_t group_le = uint16_t(b[0] | b[1] << 8), group_be = uint16_t(b[0] << 8 | b[1]);
  const bool vr_letters = b[4] >= 'A' && b[4] <= 'Z' && b[5] >= 'A' && b[5] <= 'Z';
  // Data sets begin with a low group (0008 usually); a byte-swapped one reads as 0x0800 and up.
  const bool little = group_le != 0 && group_le <= 0x00FF;
  const bool big = !little && group_be != 0 && group_be <= 0x00FF;
  VOX_CHECK(little || big, "dicom", source, ": not a DICOM file (no 128-byte preamble with \"DICM\", and the first bytes are not a data element)");
  if (big) return TransferSyntax::from_uid("1.2.840.10008.1.2.2");
  return TransferSyntax::from_uid(vr_letters ? "1.2.840.10008.1.2.1" : "1.2.840.10008.1.2");
}

}  // namespace dicom_detail

// Parses a DICOM file held in memory. `source` names it in errors.
inline DicomFile parse_dicom(std::vector<uint8_t> bytes, const std::string& source, const DicomReadOptions& options = {}) {
  using namespace dicom_detail;
  DicomFile file;
  file.path = source;
  auto buffer = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  const uint8_t* b = buffer->data();
  const size_t size = buffer->size();
  size_t pos = 0;
  if (size >= 132 && std::memcmp(b + 128, "DICM", 4) == 0) pos = 132;
  else if (size >= 4 && std::memcmp(b, "DICM", 4) == 0) pos = 4;  // preamble stripped
  const bool meta_at_start = size >= pos + 8 && b[pos] == 0x02 && b[pos + 1] == 0x00;  // group 0002, little endian
  DicomParser parser(buffer, source);
  file.meta = parser.make_set(false);
  if (meta_at_start) {
    // The meta group is explicit VR little endian and ends where group 0002 does.
    pos = parser.parse(file.meta, pos, size, true, false, false, 0, false, 0x0002);
    file.has_meta = true;
  } else {
    VOX_CHECK(pos == 0, "dicom", source, ": \"DICM\" is not followed by the file meta information group (0002,xxxx)");
  }
  const std::string uid = file.meta.text(dicom_tags::transfer_syntax_uid);
  file.syntax = uid.empty() ? guess_syntax(b + pos, size - pos, source) : TransferSyntax::from_uid(uid);
  if (!uid.empty() && file.syntax.explicit_vr && !file.syntax.big_endian && !file.syntax.deflated && size - pos >= 8 &&
      !(b[pos + 4] >= 'A' && b[pos + 4] <= 'Z' && b[pos + 5] >= 'A' && b[pos + 5] <= 'Z'))
    file.syntax.explicit_vr = false;  // says explicit VR but is written implicit, as some writers do (pydicom reads it so too)
  if (file.syntax.deflated) {
    std::vector<uint8_t> inflated = inflate_raw(b + pos, size - pos, static_cast<size_t>(options.limits.max_bytes), source);
    auto inflated_buffer = std::make_shared<const std::vector<uint8_t>>(std::move(inflated));
    DicomParser inner(inflated_buffer, source);
    file.data = inner.make_set(false);
    inner.parse(file.data, 0, inflated_buffer->size(), true, false, false, 0, options.stop_before_pixels);
    file.stopped_before_pixels = inner.reached_pixels();
    return file;
  }
  file.data = parser.make_set(file.syntax.big_endian);
  parser.parse(file.data, pos, size, file.syntax.explicit_vr, file.syntax.big_endian, false, 0, options.stop_before_pixels);
  file.stopped_before_pixels = parser.reached_pixels();
  return file;
}

inline DicomFile read_dicom(const std::string& path, const DicomReadOptions& options = {}) {
  const std::vector<char> raw = read_file(path);
  return parse_dicom(std::vector<uint8_t>(raw.begin(), raw.end()), path, options);
}

namespace dicom_detail {
// Whether a file's first bytes can begin DICOM: "DICM" after the preamble or at the start, or a
// first data element of a low group. Other files (NIfTI, zip, video, text) fail at once.
inline bool looks_like_dicom(const std::vector<uint8_t>& head) {
  if (head.size() >= 132 && std::memcmp(head.data() + 128, "DICM", 4) == 0) return true;
  if (head.size() >= 4 && std::memcmp(head.data(), "DICM", 4) == 0) return true;
  if (head.size() < 8) return false;
  const uint16_t group_le = uint16_t(head[0] | head[1] << 8), group_be = uint16_t(head[0] << 8 | head[1]);
  return (group_le != 0 && group_le <= 0x00FF) || (group_be != 0 && group_be <= 0x00FF);
}
}  // namespace dicom_detail

// The header (everything before the pixel data) of a file, reading only its first bytes when
// they hold it: series scans touch a few kilobytes of each file instead of all of it. A file
// that does not begin as DICOM is refused after its first 64 KiB; one whose header runs past
// them is read in growing prefixes (x16 each time), so only a file that really is DICOM up to
// its end is ever read whole.
inline DicomFile read_dicom_header(const std::string& path, size_t prefix = size_t{1} << 16) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  VOX_CHECK(in.good(), "read_file", "cannot open ", path);
  const std::streamoff end = in.tellg();
  VOX_CHECK(end >= 0, "read_file", "cannot read the size of ", path);
  const size_t file_size = static_cast<size_t>(end);
  in.seekg(0);
  std::vector<uint8_t> head;
  prefix = std::min(std::max<size_t>(prefix, 132), file_size);  // 132: enough to see "DICM" after the preamble
  while (true) {
    const size_t have = head.size();
    head.resize(prefix);
    in.read(reinterpret_cast<char*>(head.data() + have), static_cast<std::streamsize>(prefix - have));
    VOX_CHECK(static_cast<size_t>(in.gcount()) == prefix - have, "read_file", "cannot read ", path);
    VOX_CHECK(have > 0 || dicom_detail::looks_like_dicom(head), "dicom", path,
              ": not a DICOM file (no \"DICM\" after a 128-byte preamble, and the first bytes are not a data element)");
    if (prefix == file_size) return parse_dicom(std::move(head), path, {.stop_before_pixels = true});  // the whole file
    try {
      DicomFile file = parse_dicom(head, path, {.stop_before_pixels = true});
      if (file.stopped_before_pixels) return file;
    } catch (const Error&) {
      // an element runs past the prefix, or the file is malformed: a longer prefix tells which
    }
    prefix = file_size / 16 < prefix ? file_size : prefix * 16;
  }
}

}  // namespace vox::io
