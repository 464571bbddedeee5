// DICOM against pydicom: every file of pydicom's own test set is either parsed by vox with as
// many top-level elements as pydicom finds, or (where pydicom fails too, or the file is cut off)
// refused with a vox::Error; every file pydicom's numpy and RLE handlers decode gives vox equal
// stored values, and every JPEG, JPEG-LS and JPEG 2000 file GDCM decodes gives vox equal values
// where this build has the decoder. Series written by pydicom at test time (shuffled names and InstanceNumbers,
// oblique and reversed geometry, implicit VR and big endian, enhanced multi-frame) give the
// expected volume and affine; missing slices, uneven spacing, gantry tilt and mixed orientations
// are reported. Malformed bytes raise vox::Error. Fixtures: tests/io/make_dicom_fixtures.py.
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <vox/io/dicom.hpp>
#include <vox/io/json.hpp>
#include <vox/io/safetensors.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::io;
using namespace vox::testing;
using doctest::Contains;

namespace {
std::string fixture_dir() { return vox::testing::fixture_dir("VOX_DICOM_DIR", "dicom"); }
std::string slurp(const std::string& path) {
  const std::vector<char> bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}
std::string file_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }
const json::Value& field(const json::Value& object, const std::string& key) {
  const json::Value* v = object.find(key);
  REQUIRE_MESSAGE(v != nullptr, "fixture field " << key);
  return *v;
}

// Files vox refuses on purpose, with the reason; every other file pydicom parses, vox parses.
bool vox_refuses(const std::string& name) {
  return name == "MR_truncated.dcm"        // pixel data longer than the file
         || name == "rtplan_truncated.dcm"  // an element longer than the file
         || name == "no_meta.dcm"           // a stray byte before the first element
         || name == "DICOMDIR-nooffset";    // its last record overruns the sequence's declared length
}
}  // namespace

TEST_CASE("every pydicom test file: vox parses what pydicom parses, and decodes equal pixels") {
  const json::Value entries = json::parse(slurp(fixture_dir() + "/pydicom.json"));
  const Safetensors expected = load_safetensors(fixture_dir() + "/pydicom.safetensors");
  int parsed = 0, decoded = 0, refused = 0;
  for (size_t i = 0; i < entries.as_array().size(); ++i) {
    const json::Value& entry = entries.as_array()[i];
    const std::string path = field(entry, "path").as_string();
    const std::string name = file_name(path);
    INFO(path);
    DicomFile file;
    try {
      file = read_dicom(path);
    } catch (const Error& e) {
      INFO(e.what());
      CHECK((vox_refuses(name) || !field(entry, "parses").as_bool()));
      ++refused;
      continue;
    }
    CHECK_FALSE(vox_refuses(name));
    ++parsed;
    if (field(entry, "parses").as_bool()) CHECK(static_cast<double>(file.data.elements().size()) == field(entry, "elements").as_double());
    if (field(entry, "pixels").as_bool()) {
      const Tensor got = dicom_stored_values(file);
      const Tensor& want = expected.at("pixels." + std::to_string(i));
      REQUIRE(got.shape() == want.shape());
      CHECK(values(got) == values(want));
      ++decoded;
    }
  }
  MESSAGE(parsed << " files parsed, " << decoded << " decoded and equal to pydicom, " << refused << " refused");
  // the README's figures: 57 files decode to pydicom's values exactly; 5 are refused (the four
  // vox_refuses names, and one that pydicom cannot parse either)
  CHECK(decoded == 57);
  CHECK(refused == 5);
}

TEST_CASE("compressed pydicom test files decode as GDCM decodes them") {
  const json::Value entries = json::parse(slurp(fixture_dir() + "/pydicom.json"));
  const Safetensors expected = load_safetensors(fixture_dir() + "/pydicom.safetensors");
  int lossless = 0, lossy = 0, without_decoder = 0, refused = 0;
  for (size_t i = 0; i < entries.as_array().size(); ++i) {
    const json::Value& entry = entries.as_array()[i];
    if (!field(entry, "gdcm").as_bool()) continue;
    const std::string path = field(entry, "path").as_string();
    INFO(path);
    const DicomFile file = read_dicom(path);
    if (!dicom_has_decoder(file.syntax.uid)) {
      CHECK_THROWS_WITH_AS(dicom_stored_values(file), Contains(file.syntax.name.c_str()), Error);
      ++without_decoder;
      continue;
    }
    Tensor got;
    try {
      got = dicom_stored_values(file);
    } catch (const Error& e) {
      // only the precisions and processes Debian's libjpeg-turbo 2 lacks may be refused, and the
      // codestream pydicom corrupted on purpose (GDCM returns something for it anyway)
      INFO(e.what());
      CHECK((std::string(e.what()).find("libjpeg-turbo 3") != std::string::npos ||
             file_name(path) == "JPEG2000-embedded-sequence-delimiter.dcm"));
      ++refused;
      continue;
    }
    const Tensor& want = expected.at("gdcm." + std::to_string(i));
    REQUIRE(got.shape() == want.shape());
    CHECK(values(got) == values(want));  // lossy ones too: the same IDCT and upsampling give the same bytes
    ++(field(entry, "lossy").as_bool() ? lossy : lossless);
  }
  MESSAGE(lossless << " lossless and " << lossy << " lossy compressed files equal to GDCM; " << refused << " refused, "
                   << without_decoder << " without a decoder in this build");
  // the README's figure: the 20 files GDCM decodes that Debian's decoders can. tests/CMakeLists.txt
  // refuses to build the suite without the three decoders, unless VOX_DICOM_CODECS is off.
#if defined(VOX_WITH_LIBJPEG) && defined(VOX_WITH_CHARLS) && defined(VOX_WITH_OPENJPEG)
  CHECK(lossless + lossy == 20);
  CHECK(refused == 4);  // lossless and 12-bit JPEG (libjpeg-turbo 3), and the corrupted codestream
  CHECK(without_decoder == 0);
#else
  CHECK(lossless + lossy == 0);
#endif
}

TEST_CASE("the transfer syntaxes and pixel layouts vox decodes natively") {
  const std::string dir = fixture_dir();
  const json::Value entries = json::parse(slurp(dir + "/pydicom.json"));
  std::map<std::string, std::string> syntax_of;
  for (size_t i = 0; i < entries.as_array().size(); ++i) {
    const std::string path = field(entries.as_array()[i], "path").as_string();
    try {
      syntax_of[file_name(path)] = read_dicom(path, {.stop_before_pixels = true}).syntax.name;
    } catch (const Error&) {
    }
  }
  CHECK(syntax_of["MR_small_implicit.dcm"] == "Implicit VR Little Endian");
  CHECK(syntax_of["MR_small.dcm"] == "Explicit VR Little Endian");
  CHECK(syntax_of["MR_small_bigendian.dcm"] == "Explicit VR Big Endian");
  CHECK(syntax_of["image_dfl.dcm"] == "Deflated Explicit VR Little Endian");
  CHECK(syntax_of["MR_small_RLE.dcm"] == "RLE Lossless");
  CHECK(syntax_of["ExplVR_BigEndNoMeta.dcm"] == "Explicit VR Big Endian");   // no meta: guessed
  CHECK(syntax_of["ExplVR_LitEndNoMeta.dcm"] == "Explicit VR Little Endian");

  // the same MR slice in five encodings decodes to the same values
  const std::string base = std::filesystem::path(field(entries.as_array()[0], "path").as_string()).parent_path().string();
  const std::string files_dir = base.substr(0, base.find("test_files") + std::string("test_files").size());
  const Tensor reference = dicom_stored_values(read_dicom(files_dir + "/MR_small.dcm"));
  for (const char* other : {"MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_RLE.dcm", "MR_small_padded.dcm"}) {
    INFO(other);
    CHECK(values(dicom_stored_values(read_dicom(files_dir + "/" + other))) == values(reference));
  }
  // CT: stored values, then Hounsfield units through RescaleSlope/RescaleIntercept
  const DicomFile ct = read_dicom(files_dir + "/CT_small.dcm");
  const DicomRescale rescale = dicom_rescale(ct.data);
  CHECK(rescale.slope == 1.0);
  CHECK(rescale.intercept == -1024.0);
  const DicomVolume volume = read_dicom_volume(files_dir + "/CT_small.dcm");
  CHECK(volume.image.voxels.dtype() == DType::f32);
  const auto stored = values(dicom_stored_values(ct)), hu = values(volume.image.voxels);
  for (size_t n = 0; n < stored.size(); ++n) REQUIRE(hu[n] == stored[n] - 1024.0);
  // multi-frame RLE and 32-bit RGB
  CHECK(dicom_stored_values(read_dicom(files_dir + "/SC_rgb_rle_32bit_2frame.dcm")).shape() == Shape{2, 100, 100, 3});
  CHECK(dicom_stored_values(read_dicom(files_dir + "/rtdose_rle.dcm")).shape() == Shape{15, 10, 10});
  // a compressed syntax without its decoder names the syntax
  if (!dicom_has_decoder("1.2.840.10008.1.2.4.80"))
    CHECK_THROWS_WITH_AS(dicom_stored_values(read_dicom(files_dir + "/MR_small_jpeg_ls_lossless.dcm")), Contains("JPEG-LS Lossless"),
                         Error);
}

TEST_CASE("series written by pydicom give the expected volume and affine") {
  const std::string dir = fixture_dir();
  const json::Value cases = json::parse(slurp(dir + "/series.json"));
  const Safetensors expected = load_safetensors(dir + "/series.safetensors");
  auto check_volume = [&](const DicomVolume& v, const std::string& name, bool check_affine) {
    const Tensor& want = expected.at("volume." + name);
    REQUIRE(v.image.voxels.shape() == want.shape());
    CHECK(values(v.image.voxels) == values(want));  // rescaled values of 16-bit data are exact in f32
    if (!check_affine) return;
    const Affine a = v.image.affine(Convention::lps);
    const auto w = values(expected.at("affine." + name));
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) {
        INFO(name << " affine[" << r << "][" << c << "]");
        CHECK(a[r][c] == doctest::Approx(w[static_cast<size_t>(4 * r + c)]).epsilon(1e-6).scale(1.0));
      }
  };
  for (const char* name : {"axial", "oblique", "reversed_normal", "implicit_vr", "big_endian", "enhanced"}) {
    INFO(name);
    const DicomVolume v = read_dicom_volume(field(field(cases, name), "path").as_string());
    check_volume(v, name, true);
    CHECK(v.warnings.empty());
  }
  // the stray README.txt beside the axial series is skipped
  int64_t skipped = 0;
  CHECK(scan_dicom_directory(field(field(cases, "axial"), "path").as_string(), true, &skipped).size() == 1);
  CHECK(skipped == 1);

  // two series: the larger by default, and the choice reported; the other on request
  const std::string two = field(field(cases, "two_series"), "path").as_string();
  std::vector<std::string> reports;
  DicomSeriesOptions options;
  options.report = [&](const std::string& line) { reports.push_back(line); };
  const DicomVolume larger = read_dicom_volume(two, options);
  CHECK(larger.series_uid == field(field(cases, "two_series"), "uid").as_string());
  check_volume(larger, "two_series", true);
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].find("chosen of 2 series") != std::string::npos);
  options.series_uid = field(field(cases, "two_series"), "other_uid").as_string();
  check_volume(read_dicom_volume(two, options), "two_series_small", true);
  options.series_uid = "1.2.3";
  CHECK_THROWS_WITH_AS(read_dicom_volume(two, options), Contains("no series 1.2.3"), Error);
}

TEST_CASE("missing slices, uneven spacing, gantry tilt and mixed orientations are reported") {
  const std::string dir = fixture_dir();
  const json::Value cases = json::parse(slurp(dir + "/series.json"));
  const Safetensors expected = load_safetensors(dir + "/series.safetensors");
  const std::vector<std::pair<std::string, std::string>> uneven{
      {"missing_slice", "1 missing slice"}, {"uneven_spacing", "uneven spacing"}, {"gantry_tilt", "gantry tilt"}};
  for (const auto& [name, words] : uneven) {
    INFO(name);
    const std::string path = field(field(cases, name), "path").as_string();
    CHECK_THROWS_WITH_AS(read_dicom_volume(path), Contains(words.c_str()), Error);
    DicomSeriesOptions allow;
    allow.allow_uneven = true;
    const DicomVolume v = read_dicom_volume(path, allow);
    REQUIRE(v.warnings.size() == 1);
    CHECK(v.warnings[0].find(words) != std::string::npos);
    CHECK(values(v.image.voxels) == values(expected.at("volume." + name)));  // every slice, in spatial order
  }
  CHECK_THROWS_WITH_AS(read_dicom_volume(field(field(cases, "mixed_orientation"), "path").as_string()), Contains("mixed orientations"), Error);
}

TEST_CASE("malformed DICOM raises vox::Error, never crashes") {
  const std::string dir = fixture_dir();
  const json::Value entries = json::parse(slurp(dir + "/pydicom.json"));
  std::string mr;
  for (size_t i = 0; i < entries.as_array().size(); ++i)
    if (file_name(field(entries.as_array()[i], "path").as_string()) == "MR_small.dcm") mr = field(entries.as_array()[i], "path").as_string();
  REQUIRE(!mr.empty());
  const std::vector<char> raw = read_file(mr);
  const std::vector<uint8_t> bytes(raw.begin(), raw.end());
  // cut off at every length: a cut that parses gives a prefix of the whole file's elements (same
  // tags, offsets and lengths), without the pixel data when the cut falls before its end; a cut
  // inside the pixel data's value is refused with an error naming it. (MR_small.dcm ends with a
  // (FFFC,FFFC) padding element after its pixel data.)
  const DicomFile whole = parse_dicom(bytes, "whole");
  const DicomElement& pixel_element = whole.data.at(dicom_tags::pixel_data);
  const size_t pixels_end = pixel_element.offset + pixel_element.length;
  int parsed = 0, inside_pixels = 0;
  for (size_t n = 0; n < bytes.size(); n += 7) {
    INFO("cut at ", n);
    const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    if (n > pixel_element.offset && n < pixels_end) {
      ++inside_pixels;
      CHECK_THROWS_WITH_AS(parse_dicom(cut, "cut"), Contains("(7FE0,0010) at byte"), Error);
      continue;
    }
    try {
      const DicomFile f = parse_dicom(cut, "cut");
      ++parsed;
      if (n < pixels_end) CHECK(!f.data.has(dicom_tags::pixel_data));
      for (const auto& [tag, e] : f.data.elements()) {
        const DicomElement* full = whole.data.find(tag);
        REQUIRE(full != nullptr);
        CHECK((e.offset == full->offset && e.length == full->length));
      }
    } catch (const Error&) {
    }
  }
  CHECK(inside_pixels > 100);
  CHECK(parsed > 0);
  // a length past the end names the tag and the byte offset
  const DicomFile good = parse_dicom(bytes, "MR_small.dcm");
  const size_t pixels_at = good.data.at(dicom_tags::pixel_data).offset;
  CHECK_THROWS_WITH_AS(parse_dicom(std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(pixels_at + 100)), "short.dcm"),
                       Contains("(7FE0,0010) at byte"), Error);
  // not DICOM at all
  CHECK_THROWS_WITH_AS(parse_dicom(std::vector<uint8_t>(300, 'x'), "text.txt"), Contains("not a DICOM file"), Error);
  // an unknown transfer syntax is named
  std::vector<uint8_t> unknown = bytes;
  const std::string uid = "1.2.840.10008.1.2.1";
  auto at = std::search(unknown.begin(), unknown.end(), uid.begin(), uid.end());
  REQUIRE(at != unknown.end());
  *(at + static_cast<std::ptrdiff_t>(uid.size()) - 1) = '7';
  CHECK_THROWS_WITH_AS(parse_dicom(unknown, "unknown.dcm"), Contains("transfer syntax 1.2.840.10008.1.2.7"), Error);
  // Rows that disagree with the pixel data's length
  CHECK(dicom_pixel_format(good.data).rows == 64);
  std::vector<uint8_t> big_rows = bytes;
  const size_t rows_at = good.data.at(dicom_tags::rows).offset;
  big_rows[rows_at] = 0xFF, big_rows[rows_at + 1] = 0x00;
  CHECK_THROWS_WITH_AS(dicom_stored_values(parse_dicom(big_rows, "rows.dcm")), Contains("pixel data holds"), Error);
}

namespace {
// One implicit VR little endian element.
void put(std::vector<uint8_t>& out, uint16_t group, uint16_t element, const std::vector<uint8_t>& value) {
  const uint32_t length = static_cast<uint32_t>(value.size());
  const uint8_t head[8] = {uint8_t(group), uint8_t(group >> 8), uint8_t(element), uint8_t(element >> 8),
                           uint8_t(length), uint8_t(length >> 8), uint8_t(length >> 16), uint8_t(length >> 24)};
  out.insert(out.end(), head, head + 8);
  out.insert(out.end(), value.begin(), value.end());
}
std::vector<uint8_t> us(uint16_t v) { return {uint8_t(v), uint8_t(v >> 8)}; }
}  // namespace

TEST_CASE("data sets built by hand: float pixel data, bit-packed frames, inconsistent fields") {
  auto image = [](uint16_t bits_allocated, uint32_t pixel_tag_element, std::vector<uint8_t> pixels, uint16_t rows, uint16_t columns) {
    std::vector<uint8_t> ds;
    put(ds, 0x0008, 0x0060, {'C', 'T'});
    put(ds, 0x0028, 0x0010, us(rows));
    put(ds, 0x0028, 0x0011, us(columns));
    put(ds, 0x0028, 0x0100, us(bits_allocated));
    put(ds, 0x7FE0, static_cast<uint16_t>(pixel_tag_element), pixels);
    return ds;
  };
  float value = -2.5f;
  std::vector<uint8_t> bytes(4);
  std::memcpy(bytes.data(), &value, 4);
  const Tensor floats = dicom_stored_values(parse_dicom(image(32, 0x0008, bytes, 1, 1), "float.dcm"));
  CHECK(floats.dtype() == DType::f32);
  CHECK(values(floats) == std::vector<double>{-2.5});
  // Float Pixel Data with 16 bits allocated (a fuzzer's find): refused, not read past its end
  CHECK_THROWS_WITH_AS(dicom_stored_values(parse_dicom(image(16, 0x0008, bytes, 1, 1), "float16.dcm")),
                       Contains("needs BitsAllocated 32"), Error);
  // 1-bit data: packed least significant bit first
  const Tensor bits = dicom_stored_values(parse_dicom(image(1, 0x0010, {0b10110010}, 2, 4), "bits.dcm"));
  CHECK(bits.shape() == Shape{1, 2, 4});
  CHECK(values(bits) == std::vector<double>{0, 1, 0, 0, 1, 1, 0, 1});
  // the implicit VR syntax was found from the first element, without meta information
  CHECK(parse_dicom(image(1, 0x0010, {0}, 1, 1), "bits.dcm").syntax.name == "Implicit VR Little Endian");
  // BitsStored/HighBit: 12 bits at bit 11, signed, sign-extended; bits above HighBit dropped
  std::vector<uint8_t> ds;
  put(ds, 0x0028, 0x0010, us(1));
  put(ds, 0x0028, 0x0011, us(2));
  put(ds, 0x0028, 0x0100, us(16));
  put(ds, 0x0028, 0x0101, us(12));
  put(ds, 0x0028, 0x0102, us(11));
  put(ds, 0x0028, 0x0103, us(1));
  put(ds, 0x7FE0, 0x0010, {0xFF, 0xFF, 0xFF, 0xF7});  // 0x0FFF -> -1; 0xF7FF -> 0x7FF = 2047
  CHECK(values(dicom_stored_values(parse_dicom(ds, "bits12.dcm"))) == std::vector<double>{-1, 2047});
}

TEST_CASE("headers are read from a file's first bytes, or from the whole file when those do not hold them") {
  const json::Value entries = json::parse(slurp(fixture_dir() + "/pydicom.json"));
  for (const char* name : {"CT_small.dcm", "MR_small_implicit.dcm", "image_dfl.dcm", "rtdose.dcm"}) {
    std::string path;
    for (const json::Value& e : entries.as_array())
      if (file_name(field(e, "path").as_string()) == name) path = field(e, "path").as_string();
    REQUIRE(!path.empty());
    INFO(name);
    const DicomFile full = read_dicom(path, {.stop_before_pixels = true});
    for (size_t prefix : {size_t{64}, size_t{700}, size_t{1} << 16}) {
      const DicomFile head = read_dicom_header(path, prefix);
      CHECK(head.data.elements().size() == full.data.elements().size());
      CHECK(head.data.text(dicom_tags::sop_instance_uid) == full.data.text(dicom_tags::sop_instance_uid));
      CHECK(head.data.numbers(dicom_tags::image_position_patient) == full.data.numbers(dicom_tags::image_position_patient));
    }
  }
}

TEST_CASE("RLE segments that overrun are refused") {
  DicomPixelFormat f;
  f.rows = 2, f.columns = 2, f.bits_allocated = 8, f.bits_stored = 8, f.high_bit = 7;
  std::vector<uint8_t> frame(64, 0);
  frame[0] = 1;   // one segment
  frame[4] = 64;  // at byte 64
  frame.push_back(10);  // literal run of 11 bytes for a 4-byte plane
  frame.insert(frame.end(), 11, 7);
  CHECK_THROWS_WITH_AS(dicom_detail::decode_rle_frame(frame, f, "rle"), Contains("overruns"), Error);
  frame.resize(65);
  frame[64] = static_cast<uint8_t>(-3);  // replicate 4 times
  frame.push_back(9);
  CHECK(dicom_detail::decode_rle_frame(frame, f, "rle") == std::vector<uint8_t>{9, 9, 9, 9});
  frame[0] = 2;
  CHECK_THROWS_WITH_AS(dicom_detail::decode_rle_frame(frame, f, "rle"), Contains("2 segments, 1 expected"), Error);
}
