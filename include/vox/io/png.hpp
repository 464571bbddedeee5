#pragma once
// PNG writing (8-bit greyscale or RGB, zlib-compressed, written atomically), enough for previews
// and plots: a signature, IHDR, one IDAT of filter-0 rows, IEND, each chunk with its CRC.
#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

#include "vox/core/error.hpp"
#include "vox/io/file.hpp"

namespace vox::io {

// pixels: height rows of width * channels bytes (channels 1: grey, 3: RGB).
inline void write_png(const std::string& path, const std::vector<uint8_t>& pixels, int64_t width, int64_t height, int channels) {
  VOX_CHECK(channels == 1 || channels == 3, "write_png", "channels must be 1 or 3, got ", channels);
  VOX_CHECK(width >= 1 && height >= 1 && width < (1 << 24) && height < (1 << 24), "write_png", "size ", width, "x", height, " is not an image");
  VOX_CHECK(static_cast<int64_t>(pixels.size()) == width * height * channels, "write_png", pixels.size(), " bytes for ", width, "x",
            height, "x", channels);
  std::vector<uint8_t> raw;
  raw.reserve(static_cast<size_t>((width * channels + 1) * height));
  for (int64_t y = 0; y < height; ++y) {
    raw.push_back(0);  // filter: none
    raw.insert(raw.end(), pixels.begin() + y * width * channels, pixels.begin() + (y + 1) * width * channels);
  }
  uLongf packed_size = compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> packed(packed_size);
  VOX_CHECK(compress2(packed.data(), &packed_size, raw.data(), static_cast<uLong>(raw.size()), 6) == Z_OK, "write_png", "zlib failed");
  packed.resize(packed_size);
  auto be32 = [](std::vector<uint8_t>& out, uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
  };
  std::vector<uint8_t> file = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  auto chunk = [&](const char* type, const std::vector<uint8_t>& data) {
    be32(file, static_cast<uint32_t>(data.size()));
    const size_t start = file.size();
    file.insert(file.end(), type, type + 4);
    file.insert(file.end(), data.begin(), data.end());
    be32(file, static_cast<uint32_t>(crc32(0, file.data() + start, static_cast<uInt>(file.size() - start))));
  };
  std::vector<uint8_t> header;
  be32(header, static_cast<uint32_t>(width));
  be32(header, static_cast<uint32_t>(height));
  header.insert(header.end(), {8, static_cast<uint8_t>(channels == 3 ? 2 : 0), 0, 0, 0});  // depth 8, colour type, deflate, filter, no interlace
  chunk("IHDR", header);
  chunk("IDAT", packed);
  chunk("IEND", {});
  write_file_atomically(path, [&](std::ofstream& out) { out.write(reinterpret_cast<const char*>(file.data()), static_cast<std::streamsize>(file.size())); });
}

}  // namespace vox::io
