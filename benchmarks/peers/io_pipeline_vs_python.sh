#!/usr/bin/env bash
# Issue 4's I/O benchmark, in one run: a 512x512x300 int16 CT volume as .nii.gz and as a DICOM
# series, read, windowed and resampled to 1.5 mm by vox and by nibabel + scipy (+ pydicom), one
# after the other. Prints both tables and the ratios (python time / vox time; above 1: vox faster).
#   bash benchmarks/peers/io_pipeline_vs_python.sh [RUNS] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/deps.sh
install_debian_packages "${VOX_BUILD_PACKAGES[@]}" python3-numpy python3-scipy python3-nibabel python3-pydicom libbenchmark-dev
runs="${1:-5}"
work="${2:-build/io-bench}"
mkdir -p "$work"
[ -f "$work/ct.nii.gz" ] && [ -d "$work/dicom" ] || /usr/bin/python3 benchmarks/peers/make_io_volume.py "$work"
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DVOX_BUILD_BENCHMARKS=ON -DVOX_BUILD_TESTS=OFF -DVOX_BUILD_EXAMPLES=OFF > /dev/null
cmake --build build/bench --target vox_io_pipeline_timing -j"$(nproc)" > /dev/null
echo "machine: $(nproc) threads; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "input read_ms window_ms resample_ms total_ms voxels_out (medians of $runs runs)"
vox_out="$(build/bench/benchmarks/vox_io_pipeline_timing "$work/ct.nii.gz" "$work/dicom" "$runs")"
echo "vox:"; echo "$vox_out"
py_out="$(/usr/bin/python3 benchmarks/peers/io_pipeline_python.py "$work/ct.nii.gz" "$work/dicom" "$runs")"
echo "nibabel + scipy (+ pydicom):"; echo "$py_out"
paste -d' ' <(echo "$vox_out") <(echo "$py_out") | awk '{ printf "ratio %s: read %.2f  window %.2f  resample %.2f  total %.2f\n", $1, $8/$2, $9/$3, $10/$4, $11/$5 }'
