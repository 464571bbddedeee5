#!/usr/bin/env bash
# The main job: install what is missing, build (Release), and run `vox demo`: write a synthetic
# segmentation dataset, train MONAI's 3-D U-Net on it on the CPU with nnU-Net-style augmentation,
# predict the held-out volumes by sliding windows, and report their Dice (target 0.90). Outputs go
# to vox-demo/ (predictions as NIfTI, PNG previews, the run's metrics and curves). Arguments are
# passed to `vox demo` (try --help on `vox`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_debian_packages "${VOX_BUILD_PACKAGES[@]}"
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DVOX_BUILD_TESTS=OFF -DVOX_BUILD_EXAMPLES=OFF -DVOX_BUILD_BENCHMARKS=OFF > /dev/null
cmake --build build/demo -j"$(nproc)" --target vox_cli
./build/demo/tools/vox demo "$@"
