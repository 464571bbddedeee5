#!/usr/bin/env bash
# conv3d, 32 -> 32 channels, 64^3, 3x3x3, padding 1, batch 1: vox against PyTorch (Debian's
# python3-torch) in one run, with the same number of threads. Prints both programs' raw lines
# and a markdown table of medians and ratios (PyTorch time / vox time: above 1, vox is faster).
#   bash benchmarks/peers/conv3d_vs_torch.sh [THREADS] [SIZE] [CHANNELS]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/deps.sh
install_debian_packages "${VOX_BUILD_PACKAGES[@]}" libbenchmark-dev python3-torch python3-numpy
threads="${1:-$(nproc)}"; size="${2:-64}"; channels="${3:-32}"
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DVOX_BUILD_BENCHMARKS=ON -DVOX_BUILD_TESTS=OFF > /dev/null
cmake --build build/bench -j"$(nproc)" --target vox_conv3d_timing > /dev/null
log="$(mktemp)"
./build/bench/benchmarks/vox_conv3d_timing --threads "$threads" --size "$size" --channels "$channels" | tee "$log"
OMP_NUM_THREADS="$threads" /usr/bin/python3 benchmarks/peers/conv3d_torch.py --threads "$threads" --size "$size" --channels "$channels" | tee -a "$log"
echo
echo "| pass | vox ms | torch NCDHW ms | torch channels_last_3d ms | ratio (best torch / vox) |"
echo "| --- | --- | --- | --- | --- |"
for pass in forward input_grad weight_grad; do
  v=$(awk -v p="$pass" '$1=="vox" && $2==p {print $3}' "$log")
  a=$(awk -v p="$pass" '$1=="torch-ncdhw" && $2==p {print $3}' "$log")
  b=$(awk -v p="$pass" '$1=="torch-channels_last_3d" && $2==p {print $3}' "$log")
  awk -v p="$pass" -v v="$v" -v a="$a" -v b="$b" 'BEGIN { best = (a < b ? a : b); printf "| %s | %.1f | %.1f | %.1f | %.2f |\n", p, v, a, b, best / v }'
done
rm -f "$log"
