#!/usr/bin/env bash
# Builds every parser's libFuzzer target with clang (ASan + UBSan) and runs each for a while.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_debian_packages clang libclang-rt-dev zlib1g-dev libjpeg62-turbo-dev libcharls-dev libopenjp2-7-dev
seconds="${1:-60}"
out=build/fuzz
pydicom_files=/usr/lib/python3/dist-packages/pydicom/data/test_files
mkdir -p "$out"
# the DICOM decoders that are installed, as CMake finds them
codec_flags=(); codec_libs=()
if [ -f /usr/include/jpeglib.h ]; then codec_flags+=(-DVOX_WITH_LIBJPEG); codec_libs+=(-ljpeg); fi
if [ -f /usr/include/charls/charls.h ]; then codec_flags+=(-DVOX_WITH_CHARLS); codec_libs+=(-lcharls); fi
for dir in /usr/include/openjpeg-2.5 /usr/include/openjpeg-2.4; do
  if [ -f "$dir/openjpeg.h" ]; then codec_flags+=(-DVOX_WITH_OPENJPEG -I"$dir"); codec_libs+=(-lopenjp2); break; fi
done
for target in tests/fuzz/fuzz_*.cpp; do
  name="$(basename "$target" .cpp)"
  clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I include -I . "${codec_flags[@]}" "$target" -o "$out/$name" -lz "${codec_libs[@]}"
  mkdir -p "$out/corpus-$name"
  # seed files from Debian's packages, read where they are installed (never copied here)
  seeds=()
  if [ "$name" = fuzz_dicom ] && [ -d "$pydicom_files" ]; then seeds=("$pydicom_files"); fi
  # a dictionary of the format's tags and fields, where one is kept beside the target
  dict=()
  if [ -f "tests/fuzz/${name#fuzz_}.dict" ]; then dict=(-dict="tests/fuzz/${name#fuzz_}.dict"); fi
  # The targets run with vox's production limits; inputs up to 32 KiB, and an RSS limit that the
  # largest allocation such an input can justify (32 KiB of JPEG 2000 at 16,384:1, decoded
  # alongside its frames) stays under.
  echo "== $name for ${seconds}s"
  "$out/$name" -max_total_time="$seconds" -max_len=32768 -timeout=10 -rss_limit_mb=4096 -malloc_limit_mb=3072 \
    "${dict[@]}" "$out/corpus-$name" "${seeds[@]}"
done
