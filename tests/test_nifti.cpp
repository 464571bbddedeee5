// NIfTI against nibabel: every file nibabel reads (its own test files, and files it wrote for
// every datatype, both byte orders, scaling, 4-D, qform-only and code-less geometry, .hdr/.img
// pairs and NIfTI-2) must give vox the same voxels, affine and orientation code. Then vox's
// writer round-trips, reorientation keeps every voxel at its world position, and malformed files
// raise vox::Error. Fixtures: tests/io/make_nifti_fixtures.py, made at test time.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <vox/io/nifti.hpp>
#include <vox/io/safetensors.hpp>

#include "harness.hpp"

using namespace vox;
using namespace vox::io;
using namespace vox::testing;
using doctest::Contains;

namespace {
std::string fixture_dir() { return vox::testing::fixture_dir("VOX_NIFTI_DIR", "nifti"); }
std::string temp_path(const std::string& name) { return (std::filesystem::temp_directory_path() / ("vox_test_" + name)).string(); }

void check_affine(const Affine& got, const Affine& want, double tol, const std::string& what) {
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) {
      INFO(what << " affine[" << r << "][" << c << "]");
      CHECK(got[r][c] == doctest::Approx(want[r][c]).epsilon(tol).scale(1.0));
    }
}

Affine affine_of(const Tensor& t) {
  Affine a{};
  const auto v = values(t);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) a[r][c] = v[static_cast<size_t>(4 * r + c)];
  return a;
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
}  // namespace

TEST_CASE("every NIfTI file nibabel reads gives vox the same voxels, affine and orientation") {
  const Safetensors expected = load_safetensors(fixture_dir() + "/expected.safetensors");
  const int count = std::stoi(expected.metadata.at("count"));
  REQUIRE(count == 34);  // the README's figure
  for (int i = 0; i < count; ++i) {
    const std::string path = expected.metadata.at("path." + std::to_string(i));
    INFO(path);
    const NiftiImage n = read_nifti(path);
    const Tensor& want = expected.at("data." + std::to_string(i));
    REQUIRE(n.image.voxels.shape() == want.shape());
    // Integers exactly; f32 results (scaled in f64 like nibabel, then stored) within half an f32
    // ulp of nibabel's f64 values.
    const double rtol = n.image.voxels.dtype() == DType::f32 ? 6e-8 : 0.0;
    VOX_CHECK_CLOSE(values(n.image.voxels), values(want), 0.0, rtol, path << " voxels");
    check_affine(n.image.affine(Convention::ras), affine_of(expected.at("affine." + std::to_string(i))), 1e-9, path);
    CHECK(n.image.orientation_code() == expected.metadata.at("code." + std::to_string(i)));
  }
}

TEST_CASE("stored types map to vox dtypes without loss, and scaling follows nibabel") {
  const std::string dir = fixture_dir();
  const std::vector<std::pair<std::string, DType>> cases{
      {"dtype_u1_le.nii", DType::u8}, {"dtype_i1_be.nii", DType::i8}, {"dtype_i2_be.nii", DType::i32},
      {"dtype_u2_le.nii", DType::i32}, {"dtype_i4_be.nii", DType::i32}, {"dtype_u4_le.nii", DType::i64},
      {"dtype_i8_be.nii", DType::i64}, {"dtype_u8_le.nii", DType::i64}, {"dtype_f4_be.nii", DType::f32},
      {"dtype_f8_le.nii", DType::f64}, {"scaled.nii", DType::f32}};
  for (const auto& [name, dtype] : cases) {
    INFO(name);
    const NiftiImage n = read_nifti(dir + "/" + name);
    CHECK(n.image.voxels.dtype() == dtype);
  }
  CHECK(read_nifti(dir + "/dtype_i2_be.nii").info.big_endian);
  CHECK_FALSE(read_nifti(dir + "/dtype_i2_le.nii").info.big_endian);
  const NiftiImage scaled = read_nifti(dir + "/scaled.nii");
  CHECK(scaled.info.scl_slope == 2.5);
  CHECK(scaled.info.scl_inter == -10.0);
  CHECK(read_nifti(dir + "/nifti2.nii.gz").info.version == 2);
  CHECK(read_nifti(dir + "/pair.img").image.voxels.shape() == Shape{7, 6, 5});  // either half of a pair
}

TEST_CASE("vox's writer round-trips voxels and geometry, NIfTI-1 and -2, plain and gzip") {
  NiftiImage source = read_nifti(fixture_dir() + "/dtype_i2_be.nii");  // oblique geometry
  for (int version : {1, 2})
    for (const std::string ext : {".nii", ".nii.gz"}) {
      const std::string path = temp_path("roundtrip_v" + std::to_string(version) + ext);
      write_nifti(path, source.image, version);
      const NiftiImage back = read_nifti(path);
      std::filesystem::remove(path);
      INFO(path);
      CHECK(back.info.version == version);
      CHECK(back.image.voxels.dtype() == DType::i32);
      CHECK(values(back.image.voxels) == values(source.image.voxels));
      // NIfTI-1 stores the affine in f32
      check_affine(back.image.affine(Convention::ras), source.image.affine(Convention::ras), version == 1 ? 1e-6 : 1e-12, path);
      CHECK(back.info.sform_code == 1);
      CHECK(back.info.qform_code == 1);
    }
  // the qform alone reproduces the geometry too (sform code cleared by hand)
  Image four_d = read_nifti(fixture_dir() + "/four_d.nii.gz").image;
  const std::string path = temp_path("qform.nii");
  write_nifti(path, four_d);
  std::vector<char> bytes = read_file(path);
  bytes[254] = 0;  // sform_code, little-endian int16
  bytes[255] = 0;
  write_bytes(path, bytes);
  const NiftiImage back = read_nifti(path);
  std::filesystem::remove(path);
  CHECK(back.info.sform_code == 0);
  CHECK(back.image.voxels.shape() == four_d.voxels.shape());
  CHECK(values(back.image.voxels) == values(four_d.voxels));
  check_affine(back.image.affine(Convention::ras), four_d.affine(Convention::ras), 1e-5, "qform");
}

TEST_CASE("gzip is written in chunks: any chunk size gives the same readable volume") {
  // The writer feeds zlib a chunk at a time, so volumes past zlib's 32-bit counters (4 GiB) are
  // written whole; small chunks here exercise the same loop (benchmarks/nifti_4gib_roundtrip.sh
  // runs a real 4 GiB round trip).
  Image image = read_nifti(fixture_dir() + "/four_d.nii.gz").image;
  image.voxels = randn({23, 19, 17, 3}, DType::f64);  // incompressible, and not a multiple of any chunk
  for (const size_t chunk : {size_t{1}, size_t{7}, size_t{4096}, size_t{1} << 24}) {
    const std::string path = temp_path("chunks_" + std::to_string(chunk) + ".nii.gz");
    write_nifti(path, image, NiftiWriteOptions{.version = 2, .chunk_bytes = chunk});
    const NiftiImage back = read_nifti(path);
    std::filesystem::remove(path);
    INFO("chunk ", chunk);
    CHECK(back.image.voxels.shape() == image.voxels.shape());
    CHECK(values(back.image.voxels) == values(image.voxels));
  }
  CHECK_THROWS_WITH_AS(write_nifti(temp_path("zero.nii.gz"), image, NiftiWriteOptions{.chunk_bytes = 0}), Contains("chunk_bytes 0"), Error);
}

TEST_CASE("reorientation keeps every voxel at its world position") {
  const Image image = read_nifti(fixture_dir() + "/dtype_f4_le.nii").image;  // oblique, f32
  for (const std::string code : {"RAS", "LPS", "SPL", "IAR", "ASR"}) {
    INFO(code);
    const Image r = reorient(image, code);
    CHECK(r.orientation_code() == code);
    const Affine a = image.affine(Convention::lps), b = r.affine(Convention::lps);
    // for each voxel of r, its world point is a voxel of `image` with the same value
    const auto rv = values(r.voxels), iv = values(image.voxels);
    for (int64_t k = 0; k < r.depth(); ++k)
      for (int64_t j = 0; j < r.height(); ++j)
        for (int64_t i = 0; i < r.width(); ++i) {
          double world[3];
          for (int row = 0; row < 3; ++row) world[row] = b[row][0] * i + b[row][1] * j + b[row][2] * k + b[row][3];
          // invert a: a's columns are orthogonal with lengths = spacing
          double idx[3];
          for (int col = 0; col < 3; ++col) {
            double dot = 0;
            for (int row = 0; row < 3; ++row) dot += (world[row] - a[row][3]) * a[row][col];
            idx[col] = dot / (image.spacing[col] * image.spacing[col]);
          }
          const int64_t si = std::llround(idx[0]), sj = std::llround(idx[1]), sk = std::llround(idx[2]);
          REQUIRE(std::abs(idx[0] - si) < 1e-6);
          REQUIRE(std::abs(idx[1] - sj) < 1e-6);
          REQUIRE(std::abs(idx[2] - sk) < 1e-6);
          CHECK(rv[static_cast<size_t>((k * r.height() + j) * r.width() + i)] ==
                iv[static_cast<size_t>((sk * image.height() + sj) * image.width() + si)]);
        }
  }
  CHECK_THROWS_WITH_AS(reorient(image, "RAR"), Contains("names one world axis twice"), Error);
  CHECK_THROWS_WITH_AS(reorient(image, "RXS"), Contains("is not one of R L A P S I"), Error);
}

TEST_CASE("malformed NIfTI files raise vox::Error naming the file and the problem") {
  const std::vector<char> good = read_file(fixture_dir() + "/dtype_i2_le.nii");
  const std::string path = temp_path("bad.nii");
  auto expect = [&](std::vector<char> bytes, const char* message) {
    write_bytes(path, bytes);
    INFO(message);
    CHECK_THROWS_WITH_AS(read_nifti(path), Contains(message), Error);
  };
  expect({good.begin(), good.begin() + 100}, "too short for a NIfTI header");
  expect({good.begin(), good.end() - 7}, "but the file holds");
  std::vector<char> bad = good;
  bad[0] = 99;
  expect(bad, "sizeof_hdr is neither 348");
  bad = good;
  std::memcpy(bad.data() + 344, "xyz", 3);
  expect(bad, "magic \"xyz\"");
  bad = good;
  const int16_t large[4] = {3, 1000, 1000, 100};
  std::memcpy(bad.data() + 40, large, sizeof(large));
  expect(bad, "but the file holds");  // 200 MB declared, 472 bytes there: refused before allocating
  const int16_t huge[4] = {3, 32767, 32767, 32767};
  std::memcpy(bad.data() + 40, huge, sizeof(huge));
  expect(bad, "size is absurd");
  bad = good;
  const int16_t rank9 = 9;
  std::memcpy(bad.data() + 40, &rank9, 2);
  expect(bad, "dim[0] = 9");
  bad = good;
  const int16_t complex64 = 32;
  std::memcpy(bad.data() + 70, &complex64, 2);
  expect(bad, "datatype 32 (complex64) is not supported");
  bad = good;
  const float offset = 1e12f;
  std::memcpy(bad.data() + 108, &offset, 4);
  expect(bad, "vox_offset");
  // a truncated gzip stream
  const std::string gz = temp_path("bad.nii.gz");
  NiftiImage n = read_nifti(fixture_dir() + "/dtype_i2_le.nii");
  write_nifti(gz, n.image);
  std::vector<char> zipped = read_file(gz);
  zipped.resize(zipped.size() / 2);
  write_bytes(gz, zipped);
  CHECK_THROWS_AS(read_nifti(gz), Error);
  std::filesystem::remove(gz);
  std::filesystem::remove(path);
  CHECK_THROWS_WITH_AS(read_nifti(temp_path("does_not_exist.nii")), Contains("cannot open"), Error);
}
