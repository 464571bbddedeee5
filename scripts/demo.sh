#!/usr/bin/env bash
# The main job: install what is missing, build (Release), and train MONAI's 3-D U-Net on
# built-in synthetic data (MONAI's random-sphere recipe) on the CPU, reporting the held-out
# Dice. Arguments replace the defaults (try --help; --arch tiny runs a small net in seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_debian_packages "${VOX_BUILD_PACKAGES[@]}"
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DVOX_BUILD_TESTS=OFF -DVOX_BUILD_EXAMPLES=ON -DVOX_BUILD_BENCHMARKS=OFF > /dev/null
cmake --build build/demo -j"$(nproc)" --target vox_train_synthetic
if [ "$#" -eq 0 ]; then set -- --arch monai-unet; fi
./build/demo/examples/vox_train_synthetic "$@"
