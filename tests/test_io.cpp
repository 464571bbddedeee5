// JSON, safetensors and line plots: round trips, and malformed input rejected with a vox::Error
// what and where, never a crash.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <vox/io/file.hpp>
#include <vox/io/plot.hpp>
#include <vox/io/safetensors.hpp>

#include "harness.hpp"

using namespace vox;
using doctest::Contains;

TEST_CASE("json parses documents and reports the byte offset of errors") {
  const json::Value v = json::parse(R"({"a": [1, -2.5e3, true, null], "b": {"c": "x\n\u00e9\ud83d\ude00"}, "big": 9007199254740993})");
  CHECK(v.find("a")->as_array()[1].as_double() == -2500.0);
  CHECK(v.find("big")->as_int64() == 9007199254740993LL);
  CHECK(v.find("b")->find("c")->as_string() == "x\n\xc3\xa9\xf0\x9f\x98\x80");
  CHECK_THROWS_WITH_AS(json::parse(R"({"a": 1,})", "cfg"), Contains("cfg: expected a string key at byte 8"), Error);
  CHECK_THROWS_WITH_AS(json::parse(R"({"a": 1, "a": 2})"), Contains("duplicate key"), Error);
  CHECK_THROWS_WITH_AS(json::parse("[1, 2"), Contains("expected ',' or ']'"), Error);
  CHECK_THROWS_WITH_AS(json::parse("01"), Contains("unexpected data"), Error);
  CHECK_THROWS_WITH_AS(json::parse("\"\\ud800\""), Contains("surrogate"), Error);
  CHECK_THROWS_WITH_AS(json::parse(std::string(1000, '[')), Contains("nesting deeper than 64"), Error);
  CHECK_THROWS_WITH_AS(json::parse("1.5").as_int64("n"), Contains("n must be an integer"), Error);
  CHECK_THROWS_AS(json::parse(""), Error);
  std::string many = "{";
  for (int i = 0; i < 100000; ++i) {
    many += i ? ",\"k" : "\"k";
    many += std::to_string(i);
    many += "\":0";
  }
  CHECK(json::parse(many + "}").as_object().size() == 100000);  // no quadratic blow-up
  CHECK_THROWS_WITH_AS(json::parse(many + ",\"k5\":1}"), Contains("duplicate key \"k5\""), Error);
  CHECK_THROWS_AS(json::parse("\"abc"), Error);
}

TEST_CASE("safetensors round-trips every dtype and the metadata") {
  const std::string path = (std::filesystem::temp_directory_path() / "vox_roundtrip.safetensors").string();
  std::map<std::string, Tensor> tensors;
  for (DType t : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i8, DType::u8, DType::i32, DType::i64, DType::boolean})
    tensors[std::string(dtype_name(t))] = randint(0, 2, {2, 3}, DType::i64).to(t);
  tensors["permuted"] = randn({3, 4}).permute({1, 0});
  tensors["scalar"] = scalar(2.5);
  tensors["empty"] = zeros({0, 4});
  io::save_safetensors(path, tensors, {{"format", "pt"}});
  const io::Safetensors loaded = io::load_safetensors(path);
  CHECK(loaded.metadata.at("format") == "pt");
  for (const auto& [name, t] : tensors) {
    INFO(name);
    const Tensor& l = loaded.at(name);
    CHECK(l.dtype() == t.dtype());
    CHECK(l.shape() == t.shape());
    CHECK(testing::values(l) == testing::values(t));
  }
  std::filesystem::remove(path);
}

namespace {
std::string image(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}
void expect_rejected(const std::string& bytes, const std::string& message) {
  INFO("expecting: " << message);
  CHECK_THROWS_WITH_AS(io::parse_safetensors(bytes.data(), bytes.size(), "w.safetensors"), Contains(message.c_str()), Error);
}
}  // namespace

TEST_CASE("malformed safetensors are rejected with the file, the tensor and the problem") {
  const std::string eight(8, '\x01');
  expect_rejected("abc", "too short");
  expect_rejected(std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", "runs past the end");
  expect_rejected(image("[1]", ""), "must be a JSON object");
  expect_rejected(image("{\"w\":", ""), "w.safetensors header: unexpected end of input");
  expect_rejected(image(R"({"w":{"dtype":"F32","shape":[2]}})", eight), "needs dtype, shape and data_offsets");
  expect_rejected(image(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", eight), "dtype \"Q4\" is not supported");
  expect_rejected(image(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight), "8 bytes of data for shape [3]");
  expect_rejected(image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", eight), "fall outside the 8-byte data section");
  expect_rejected(image(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight), "out of range");
  expect_rejected(image(R"({"w":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]}})", eight), "at most 8");
  expect_rejected(image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight), "data_offsets [8, 0]");
  expect_rejected(image(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})", eight), "overflows");
  expect_rejected(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", eight),
                  "overlap");
  expect_rejected(image(R"({"b":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\x01\x07", 2)), "bool byte 1");
  expect_rejected(image(R"({"__metadata__":{"k":1}})", ""), "is not a string");
  CHECK_THROWS_WITH_AS(io::load_safetensors("/nonexistent/w.safetensors"), Contains("cannot open /nonexistent/w.safetensors"), Error);
}

TEST_CASE("random corruptions of a valid file: truncations are refused, data-byte changes read back exactly") {
  const std::string path = (std::filesystem::temp_directory_path() / "vox_fuzz_seed.safetensors").string();
  io::save_safetensors(path, {{"a", randn({3, 4})}, {"b", ones({5}, DType::i64)}}, {{"k", "v"}});
  const std::vector<char> valid = io::read_file(path);
  std::filesystem::remove(path);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(valid[static_cast<size_t>(i)]);
  const size_t data_start = 8 + static_cast<size_t>(header_size);
  Generator gen(99);
  const auto positions = randint(0, static_cast<int64_t>(valid.size()), {2000}, DType::i64, &gen).to_vector<int64_t>();
  const auto bytes = randint(0, 256, {2000}, DType::i64, &gen).to_vector<int64_t>();
  int truncated = 0, in_data = 0;
  for (size_t i = 0; i < positions.size(); ++i) {
    const size_t at = static_cast<size_t>(positions[i]);
    std::vector<char> corrupt = valid;
    corrupt[at] = static_cast<char>(bytes[i]);
    INFO("byte ", at, " set to ", bytes[i]);
    if (i % 7 == 0) {  // cut before the end: some tensor's data is missing, always
      ++truncated;
      CHECK_THROWS_AS(io::parse_safetensors(corrupt.data(), at, "fuzz"), Error);
    } else if (at >= data_start) {  // a data byte: the file stays valid and reads back byte for byte
      ++in_data;
      const io::Safetensors got = io::parse_safetensors(corrupt.data(), corrupt.size(), "fuzz");
      std::string read_back(valid.begin(), valid.begin() + static_cast<std::ptrdiff_t>(data_start));
      for (const char* name : {"a", "b"}) {  // save_safetensors writes them in name order
        const Tensor& t = got.at(name);
        read_back.append(static_cast<const char*>(t.raw_data()), static_cast<size_t>(t.numel()) * dtype_size(t.dtype()));
      }
      CHECK(read_back == std::string(corrupt.begin(), corrupt.end()));
    } else {  // a header byte: read or refused with a vox::Error, nothing else
      try {
        (void)io::parse_safetensors(corrupt.data(), corrupt.size(), "fuzz");
      } catch (const Error&) {
      }
    }
  }
  CHECK(truncated > 200);
  CHECK(in_data > 200);
}

TEST_CASE("an atomic write that fails leaves the previous file and no temporary behind") {
  const std::filesystem::path dir = testing::fresh_dir("atomic_write");
  const std::string path = (dir / "weights.safetensors").string();
  io::save_safetensors(path, {{"w", ones({4})}});
  const std::vector<char> before = io::read_file(path);
  // a writer that throws halfway (as a failed conversion or a full disk would)
  CHECK_THROWS_WITH_AS(io::write_file_atomically(path,
                                                 [](std::ofstream& out) {
                                                   out << "half a file";
                                                   fail("writer", "gave up");
                                                 }),
                       Contains("gave up"), Error);
  CHECK(io::read_file(path) == before);
  // only the file is left: the temporary was removed
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++entries;
  CHECK(entries == 1);
  // a directory that cannot be written to: an error naming the temporary, nothing left
  CHECK_THROWS_WITH_AS(io::save_safetensors((dir / "missing" / "w.safetensors").string(), {{"w", ones({4})}}), Contains("cannot create"),
                       Error);
}

TEST_CASE("line plots draw their title, tick values and curve with the bitmap font") {
  // a glyph lands where it is put, pixel for pixel
  io::Canvas c(12, 9, 0);
  c.text(1, 1, "7", {255, 255, 255});
  const auto& seven = io::plot_detail::glyph('7');
  for (int64_t y = 0; y < 9; ++y)
    for (int64_t x = 0; x < 12; ++x) {
      const bool ink = y >= 1 && y < 8 && x >= 1 && x < 6 && seven[static_cast<size_t>(y - 1)][x - 1] == '#';
      CHECK(c.pixels[static_cast<size_t>((y * 12 + x) * 3)] == (ink ? 255 : 0));
    }
  CHECK(io::plot_detail::glyph('L')[0] == io::plot_detail::glyph('l')[0]);  // capitals are drawn as lower case
  CHECK(std::string(io::plot_detail::glyph('%')[3]) == ".....");             // unknown characters are blank
  // the title holds exactly the ink of its glyphs; the tick values are drawn beside the axes
  const io::Canvas plot = io::line_plot({{1, 0.5}, {2, 0.25}, {3, 0.125}}, {.title = "loss"});
  int64_t title = 0, expected = 0;
  for (size_t p = 0; p < plot.pixels.size(); p += 3)
    title += plot.pixels[p] == io::kTitleColour[0] && plot.pixels[p + 1] == io::kTitleColour[1] && plot.pixels[p + 2] == io::kTitleColour[2];
  for (char ch : std::string("loss"))
    for (const char* row : io::plot_detail::glyph(ch)) expected += std::count(row, row + 5, '#');
  CHECK(title == expected);
  CHECK(io::tick_label(0.125) == "0.125");
  CHECK(io::tick_label(-0.0) == "0");
  int64_t left_ink = 0;  // y tick labels live left of the axis
  for (int64_t y = 0; y < plot.height; ++y)
    for (int64_t x = 0; x < 50; ++x) left_ink += plot.pixels[static_cast<size_t>((y * plot.width + x) * 3)] == 200;
  CHECK(left_ink > 5 * 15);
}
