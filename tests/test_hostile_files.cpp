// Hostile and broken files: small inputs that claim huge sizes, bombs, quadratic layouts and
// invalid numbers, each a probe from the review of issue 17. Every reader must refuse them with a
// vox::Error (or read them) without allocating more than the input justifies. CTest runs this
// program under `ulimit -v` (tests/CMakeLists.txt), so an over-allocation is a failure here,
// not a slow machine elsewhere; the sanitizer build runs it without the limit, which AddressSanitizer's
// own reservations would break.
#include <zlib.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <vox/io/dicom.hpp>
#include <vox/io/json.hpp>
#include <vox/io/nifti.hpp>
#include <vox/io/safetensors.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::io;
using doctest::Contains;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  static const std::string dir = vox::testing::fresh_dir("hostile_files");
  return fs::path(dir) / name;
}

void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// `zeros` zero bytes after `head`, deflated (gzip wrapper when `gzip`, else raw) a chunk at a
// time, so the test itself never holds the inflated size.
std::vector<uint8_t> deflate_zeros(const std::vector<uint8_t>& head, size_t zeros, bool gzip) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 9, Z_DEFLATED, gzip ? 15 + 16 : -15, 9, Z_DEFAULT_STRATEGY) == Z_OK);
  std::vector<uint8_t> out, buffer(1 << 20);
  const std::vector<uint8_t> chunk(1 << 20, 0);
  auto feed = [&](const uint8_t* data, size_t size, int flush) {
    zs.next_in = const_cast<Bytef*>(data);
    zs.avail_in = static_cast<uInt>(size);
    do {
      zs.next_out = buffer.data();
      zs.avail_out = static_cast<uInt>(buffer.size());
      deflate(&zs, flush);
      out.insert(out.end(), buffer.begin(), buffer.end() - zs.avail_out);
    } while (zs.avail_out == 0);
  };
  feed(head.data(), head.size(), Z_NO_FLUSH);
  for (size_t left = zeros; left > 0;) {
    const size_t n = std::min(left, chunk.size());
    left -= n;
    feed(chunk.data(), n, left == 0 ? Z_FINISH : Z_NO_FLUSH);
  }
  if (zeros == 0) feed(nullptr, 0, Z_FINISH);
  deflateEnd(&zs);
  return out;
}

// DICOM elements, little endian: implicit VR, and explicit VR with a 2- or 4-byte length.
void put_implicit(std::vector<uint8_t>& out, uint16_t group, uint16_t element, const std::vector<uint8_t>& value) {
  const uint32_t n = static_cast<uint32_t>(value.size());
  const uint8_t head[8] = {uint8_t(group), uint8_t(group >> 8), uint8_t(element), uint8_t(element >> 8),
                           uint8_t(n), uint8_t(n >> 8), uint8_t(n >> 16), uint8_t(n >> 24)};
  out.insert(out.end(), head, head + 8);
  out.insert(out.end(), value.begin(), value.end());
}
void put_explicit(std::vector<uint8_t>& out, uint16_t group, uint16_t element, const char* vr, const std::vector<uint8_t>& value,
                  bool undefined_length = false) {
  const uint8_t tag[4] = {uint8_t(group), uint8_t(group >> 8), uint8_t(element), uint8_t(element >> 8)};
  out.insert(out.end(), tag, tag + 4);
  out.push_back(static_cast<uint8_t>(vr[0]));
  out.push_back(static_cast<uint8_t>(vr[1]));
  const bool long_length = std::string(vr) == "OB" || std::string(vr) == "OW" || std::string(vr) == "SQ" || std::string(vr) == "UN";
  const uint32_t n = undefined_length ? 0xFFFFFFFFu : static_cast<uint32_t>(value.size());
  if (long_length) {
    const uint8_t len[6] = {0, 0, uint8_t(n), uint8_t(n >> 8), uint8_t(n >> 16), uint8_t(n >> 24)};
    out.insert(out.end(), len, len + 6);
  } else {
    out.push_back(uint8_t(n));
    out.push_back(uint8_t(n >> 8));
  }
  out.insert(out.end(), value.begin(), value.end());
}
std::vector<uint8_t> us(uint16_t v) { return {uint8_t(v), uint8_t(v >> 8)}; }
std::vector<uint8_t> text(std::string s) {
  if (s.size() % 2) s += ' ';
  return {s.begin(), s.end()};
}
void put_item(std::vector<uint8_t>& out, uint16_t element, const std::vector<uint8_t>& value) {
  const uint32_t n = static_cast<uint32_t>(value.size());
  const uint8_t head[8] = {0xFE, 0xFF, uint8_t(element), uint8_t(element >> 8), uint8_t(n), uint8_t(n >> 8), uint8_t(n >> 16), uint8_t(n >> 24)};
  out.insert(out.end(), head, head + 8);
  out.insert(out.end(), value.begin(), value.end());
}

// A Part-10 preamble and file meta group naming `syntax`.
std::vector<uint8_t> part10(const std::string& syntax) {
  std::vector<uint8_t> out(128, 0);
  for (char c : std::string("DICM")) out.push_back(static_cast<uint8_t>(c));
  std::string uid = syntax;
  if (uid.size() % 2) uid += '\0';
  put_explicit(out, 0x0002, 0x0010, "UI", {uid.begin(), uid.end()});
  return out;
}

// The image fields of an explicit VR data set: `frames` frames of rows x columns, 16 bits.
void put_image_fields(std::vector<uint8_t>& out, uint16_t rows, uint16_t columns, const std::string& frames) {
  put_explicit(out, 0x0028, 0x0002, "US", us(1));
  put_explicit(out, 0x0028, 0x0004, "CS", text("MONOCHROME2"));
  put_explicit(out, 0x0028, 0x0008, "IS", text(frames));
  put_explicit(out, 0x0028, 0x0010, "US", us(rows));
  put_explicit(out, 0x0028, 0x0011, "US", us(columns));
  put_explicit(out, 0x0028, 0x0100, "US", us(16));
  put_explicit(out, 0x0028, 0x0101, "US", us(16));
  put_explicit(out, 0x0028, 0x0102, "US", us(15));
}

}  // namespace

TEST_CASE("safetensors: entries that all name one large range are refused before any tensor is made") {
  // 64 entries over the same 16 MiB: the old reader copied all of them (1 GiB) before it saw the overlap
  std::string header = "{";
  for (int i = 0; i < 64; ++i) {  // (appends only: GCC 12 warns falsely on `"," + std::string`)
    if (i) header += ',';
    header += "\"t";
    header += std::to_string(i);
    header += "\":{\"dtype\":\"U8\",\"shape\":[16777216],\"data_offsets\":[0,16777216]}";
  }
  header += "}";
  std::vector<char> file(8 + header.size() + (size_t{16} << 20), 0);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) file[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  std::memcpy(file.data() + 8, header.data(), header.size());
  CHECK_THROWS_WITH_AS(parse_safetensors(file.data(), file.size(), "overlap.safetensors"), Contains("overlap at data byte 0"), Error);
  // a header longer than real files need is refused before it is parsed
  std::vector<char> big(8 + (size_t{9} << 20), ' ');
  n = size_t{9} << 20;
  for (int i = 0; i < 8; ++i) big[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  CHECK_THROWS_WITH_AS(parse_safetensors(big.data(), big.size(), "big.safetensors"), Contains("exceeds 8 MiB"), Error);
}

TEST_CASE("JSON: the worst shapes of document cost a bounded multiple of their text") {
  // 20 MB of zeros took 1,451 MiB with 88-byte values; now 16-byte values in exact-size arrays
  const size_t n = 20'000'000;
  std::string zeros = "[";
  zeros.reserve(n + 2);
  for (size_t i = 0; i + 2 < n; i += 2) zeros += "0,";
  zeros += "0]";
  CHECK(json::parse(zeros).as_array().size() == n / 2);
  std::string singles = "[";
  for (size_t i = 0; i + 4 < n; i += 4) singles += "[0],";
  singles += "[0]]";
  CHECK(json::parse(singles).as_array().size() == n / 4);
  std::string strings = "[";
  size_t count = 1;
  for (; strings.size() + 3 < n; ++count) strings += "\"\",";
  strings += "\"\"]";
  CHECK(json::parse(strings).as_array().size() == count);
  // exactness survives the compact form
  const json::Value v = json::parse(R"({"i":9223372036854775807,"f":0.1,"z":-0,"big":18446744073709551616})");
  CHECK(v.find("i")->as_int64() == 9223372036854775807);
  CHECK(v.find("f")->as_double() == 0.1);
  CHECK(std::signbit(v.find("z")->as_double()));
  CHECK_THROWS_WITH_AS(v.find("big")->as_int64(), Contains("fits in 64 bits, got 18446744073709551616"), Error);
}

TEST_CASE("NIfTI: a gzip bomb is refused at the read ceiling, before it is inflated") {
  // a header declaring 1 GiB of u8 voxels, and the 1 GiB of zeros, in about 1 MB of gzip
  std::vector<uint8_t> header(352, 0);
  auto put = [&]<class T>(size_t at, T value) { std::memcpy(header.data() + at, &value, sizeof(T)); };
  put(0, int32_t{348});
  const int16_t dims[8] = {3, 1024, 1024, 1024, 1, 1, 1, 1};
  for (int i = 0; i < 8; ++i) put(40 + 2 * i, dims[i]), put(76 + 4 * i, 1.0f);
  put(70, int16_t{2}), put(72, int16_t{8}), put(108, 352.0f);
  std::memcpy(header.data() + 344, "n+1\0", 4);
  const fs::path path = scratch("bomb.nii.gz");
  write_bytes(path, deflate_zeros(header, size_t{1} << 30, true));
  CHECK_THROWS_WITH_AS(read_nifti(path.string(), {.max_bytes = uint64_t{64} << 20}), Contains("above the read ceiling of 67108864"), Error);
  // the environment variable sets the default ceiling
  ::setenv("VOX_MAX_READ_MIB", "64", 1);
  CHECK(ReadLimits{}.max_bytes == uint64_t{64} << 20);
  CHECK_THROWS_WITH_AS(read_nifti(path.string()), Contains("bomb.nii.gz: the header (1073741824 voxels of datatype 2) claims 1073741824 bytes"), Error);
  ::setenv("VOX_MAX_READ_MIB", "lots", 1);
  CHECK_THROWS_WITH_AS(ReadLimits{}, Contains("VOX_MAX_READ_MIB=\"lots\""), Error);
  ::unsetenv("VOX_MAX_READ_MIB");
  CHECK(ReadLimits{}.max_bytes == kDefaultReadCeilingBytes);
  // a header that claims more than its stream holds costs only what the stream holds
  write_bytes(path, deflate_zeros(header, 1000, true));
  CHECK_THROWS_WITH_AS(read_nifti(path.string()), Contains("declares 1073741824 bytes of voxels"), Error);
}

TEST_CASE("DICOM: a deflated data set that inflates past the ceiling is refused") {
  std::vector<uint8_t> head;
  put_explicit(head, 0x0008, 0x0060, "CS", text("CT"));
  const uint32_t huge = 1u << 30;
  const uint8_t ob[12] = {0x09, 0x00, 0x10, 0x00, 'O', 'B', 0, 0, uint8_t(huge), uint8_t(huge >> 8), uint8_t(huge >> 16), uint8_t(huge >> 24)};
  head.insert(head.end(), ob, ob + 12);
  std::vector<uint8_t> file = part10("1.2.840.10008.1.2.1.99");
  const std::vector<uint8_t> deflated = deflate_zeros(head, huge, false);
  file.insert(file.end(), deflated.begin(), deflated.end());
  CHECK_THROWS_WITH_AS(parse_dicom(file, "bomb.dcm", {.limits = {.max_bytes = uint64_t{64} << 20}}),
                       Contains("inflates past the read ceiling of 67108864"), Error);
}

TEST_CASE("DICOM: compressed frames and series that claim more than their bytes can hold") {
  // one 100-byte JPEG 2000 fragment for a 65535 x 65535 frame of 16 bits (8 GiB)
  std::vector<uint8_t> file = part10("1.2.840.10008.1.2.4.90");
  put_image_fields(file, 65535, 65535, "1");
  put_explicit(file, 0x7FE0, 0x0010, "OB", {}, true);
  put_item(file, 0xE000, {});
  put_item(file, 0xE000, std::vector<uint8_t>(100, 0xFF));
  put_item(file, 0xE0DD, {});
  const DicomFile parsed = parse_dicom(file, "claims.dcm");
  CHECK_THROWS_WITH_AS(decode_compressed_frame(parsed.syntax, std::vector<uint8_t>(100, 0xFF), {65535, 65535, 1, 16, false}, "claims.dcm"),
                       Contains("a 100-byte JPEG 2000 (Lossless Only) frame cannot hold 65535x65535x1 samples"), Error);
  CHECK_THROWS_WITH_AS(dicom_claimed_pixel_bytes(parsed, file.size()), Contains("more than the"), Error);
  // a small native file claiming 2^20 frames: the series reader refuses it before listing slices
  std::vector<uint8_t> native = part10("1.2.840.10008.1.2.1");
  put_explicit(native, 0x0020, 0x000E, "UI", text("1.2.3"));
  put_image_fields(native, 4096, 4096, "1048576");
  put_explicit(native, 0x7FE0, 0x0010, "OW", std::vector<uint8_t>(64, 0));
  const fs::path path = scratch("frames.dcm");
  write_bytes(path, native);
  CHECK_THROWS_WITH_AS(read_dicom_volume(path.string()), Contains("frames.dcm: the header claims 1048576 frame(s)"), Error);
}

TEST_CASE("DICOM: the basic offset table of a million frames is matched in linear time") {
  // 2^20 frames, each one 2-byte fragment except the last, which has two: the frame count then
  // differs from the fragment count, so the table is used (the old lookup was quadratic: minutes)
  const int64_t frames = int64_t{1} << 20;
  std::vector<uint8_t> ds;
  put_implicit(ds, 0x0028, 0x0008, text(std::to_string(frames)));
  std::vector<uint8_t> table;
  for (int64_t f = 0; f < frames; ++f) {
    const uint32_t offset = static_cast<uint32_t>(f * 10);
    for (int b = 0; b < 4; ++b) table.push_back(static_cast<uint8_t>(offset >> (8 * b)));
  }
  const uint8_t pixel_head[8] = {0xE0, 0x7F, 0x10, 0x00, 0xFF, 0xFF, 0xFF, 0xFF};
  ds.insert(ds.end(), pixel_head, pixel_head + 8);
  put_item(ds, 0xE000, table);
  for (int64_t f = 0; f <= frames; ++f) put_item(ds, 0xE000, {uint8_t(f), uint8_t(f >> 8)});
  put_item(ds, 0xE0DD, {});
  const DicomFile file = parse_dicom(ds, "frames.dcm");
  const std::vector<std::vector<uint8_t>> split =
      dicom_detail::encapsulated_frames(file.data, file.data.at(dicom_tags::pixel_data), frames);
  REQUIRE(split.size() == static_cast<size_t>(frames));
  CHECK(split[12345] == std::vector<uint8_t>{uint8_t(12345), uint8_t(12345 >> 8)});
  CHECK(split.back().size() == 4);
  // a table that does not increase is refused
  std::vector<uint8_t> bad = ds;
  const size_t table_at = file.data.at(dicom_tags::pixel_data).fragments.front().first;
  std::memset(bad.data() + table_at + 4, 0, 4);  // frame 1 starts where frame 0 does
  const DicomFile bad_file = parse_dicom(bad, "bad.dcm");
  CHECK_THROWS_WITH_AS(dicom_detail::encapsulated_frames(bad_file.data, bad_file.data.at(dicom_tags::pixel_data), frames),
                       Contains("not increasing at frame 1"), Error);
}

TEST_CASE("DICOM: a directory scan reads only the first bytes of files that are not DICOM") {
  const fs::path dir = scratch("scan");
  fs::create_directories(dir);
  // a 1 GiB sparse file of zeros (a video, an archive): the old scan read it whole
  const fs::path big = dir / "video.bin";
  { std::ofstream(big, std::ios::binary).put('\0'); }
  fs::resize_file(big, uint64_t{1} << 30);
  write_bytes(dir / "notes.txt", text("not an image"));
  int64_t skipped = 0;
  CHECK(scan_dicom_directory(dir.string(), true, &skipped).empty());
  CHECK(skipped == 2);
  CHECK_THROWS_WITH_AS(read_dicom_header(big.string()), Contains("not a DICOM file"), Error);
  fs::remove(big);
}

TEST_CASE("DICOM: image fields that are not whole numbers in range, and spacings of 0, are refused") {
  auto file_with = [](const char* vr, const std::string& rows, const std::string& spacing) {
    std::vector<uint8_t> f = part10("1.2.840.10008.1.2.1");
    put_explicit(f, 0x0028, 0x0010, vr, text(rows));
    put_explicit(f, 0x0028, 0x0011, "US", us(2));
    put_explicit(f, 0x0028, 0x0030, "DS", text(spacing));
    put_explicit(f, 0x0028, 0x0100, "US", us(8));
    put_explicit(f, 0x7FE0, 0x0010, "OB", std::vector<uint8_t>(4, 1));
    return parse_dicom(f, "fields.dcm");
  };
  for (const std::string rows : {"NaN", "1e300", "-3", "2.5", "70000"})
    CHECK_THROWS_WITH_AS(dicom_pixel_format(file_with("IS", rows, "1\\1").data), Contains("Rows (0028,0010) ="), Error);
  CHECK(dicom_pixel_format(file_with("IS", "2", "1\\1").data).rows == 2);
  std::vector<std::string> warnings;
  CHECK_THROWS_WITH_AS(dicom_detail::slices_of(file_with("IS", "2", "0\\1"), 0, warnings), Contains("is not two distances above 0"), Error);
  CHECK_THROWS_WITH_AS(dicom_detail::slices_of(file_with("IS", "2", "nan\\1"), 0, warnings), Contains("not a finite number"), Error);
}
