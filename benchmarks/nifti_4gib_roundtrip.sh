#!/usr/bin/env bash
# A real round trip of a NIfTI volume larger than 4 GiB through .nii.gz: the writer must stream
# the deflate past zlib's 32-bit counters, and the reader must get every byte back. Not in CI:
# it writes about 4.3 GB of voxels and needs some 13 GB of memory and a few minutes.
#   bash benchmarks/nifti_4gib_roundtrip.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
cat > "$work/roundtrip.cpp" <<'CPP'
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <vox/io/nifti.hpp>

int main(int argc, char** argv) {
  using namespace vox;
  const std::string path = std::string(argv[1]) + "/big.nii.gz";
  // u8, 2048 x 2048 x 1025 = 4,299,161,600 bytes: past 2^32 by some 4 MB
  io::Image image;
  image.voxels = empty({1025, 2048, 2048}, DType::u8);
  uint8_t* v = image.voxels.data<uint8_t>();
  for (int64_t i = 0; i < image.voxels.numel(); ++i) v[i] = static_cast<uint8_t>((i * 2654435761u) >> 24);  // a repeating pattern
  auto t0 = std::chrono::steady_clock::now();
  io::write_nifti(path, image);
  auto t1 = std::chrono::steady_clock::now();
  std::printf("wrote %lld voxel bytes in %.1f s (%.2f GB on disk)\n", static_cast<long long>(image.voxels.numel()),
              std::chrono::duration<double>(t1 - t0).count(), std::filesystem::file_size(path) / 1e9);
  const io::NiftiImage back = io::read_nifti(path);
  auto t2 = std::chrono::steady_clock::now();
  const bool same = back.image.voxels.shape() == image.voxels.shape() &&
                    std::memcmp(back.image.voxels.raw_data(), image.voxels.raw_data(), static_cast<size_t>(image.voxels.numel())) == 0;
  std::printf("read back in %.1f s: %s\n", std::chrono::duration<double>(t2 - t1).count(), same ? "identical" : "DIFFERENT");
  std::filesystem::remove(path);
  return same ? 0 : 1;
}
CPP
g++ -std=c++20 -O2 -I include -I . "$work/roundtrip.cpp" -o "$work/roundtrip" -lz
"$work/roundtrip" "$work"
