#!/usr/bin/env bash
# The main job: install what is missing, build (Release), and train a 3-D segmentation network
# on built-in synthetic data on the CPU, reporting the held-out Dice. Extra arguments go to the
# program (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_debian_packages "${VOX_BUILD_PACKAGES[@]}"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DVOX_BUILD_TESTS=OFF > /dev/null
cmake --build build/release -j"$(nproc)" --target vox_train_synthetic
./build/release/examples/vox_train_synthetic "$@"
