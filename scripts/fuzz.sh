#!/usr/bin/env bash
# Builds every parser's libFuzzer target with clang (ASan + UBSan) and runs each for a while.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_debian_packages clang libclang-rt-dev zlib1g-dev
seconds="${1:-60}"
out=build/fuzz
mkdir -p "$out"
for target in tests/fuzz/fuzz_*.cpp; do
  name="$(basename "$target" .cpp)"
  clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I include -I . "$target" -o "$out/$name" -lz
  mkdir -p "$out/corpus-$name"
  echo "== $name for ${seconds}s"
  "$out/$name" -max_total_time="$seconds" -max_len=4096 -timeout=10 "$out/corpus-$name"
done
