#!/usr/bin/env bash
# Peak resident memory of `vox infer` on a CT-sized volume (512 x 512 x 400, int16, 0.8 x 0.8 x
# 1.25 mm), against what full-volume float32 accumulators for every class would take alone. A
# small MONAI U-Net is trained for one iteration first: the network's width barely matters here,
# the accumulators and the volume's copies do.
#   benchmarks/inference_memory.sh [VOX_BINARY] [WORK_DIR]
set -euo pipefail
vox="$(realpath "${1:-build/release/tools/vox}")"
work="${2:-${TMPDIR:-/tmp}/vox-inference-memory}"
mkdir -p "$work"
if [ ! -f "$work/ct.nii.gz" ]; then
  /usr/bin/python3 - "$work/ct.nii.gz" <<'PY'
import sys
import nibabel as nib
import numpy as np
rng = np.random.default_rng(0)
i, j, k = np.ogrid[:512, :512, :400]
ct = np.full((512, 512, 400), -1000, np.int16)                   # air
body = np.broadcast_to((i - 256) ** 2 + (j - 256) ** 2 < 200 ** 2, ct.shape)
ct[body] = 40                                                    # soft tissue
ct[((i - 300) ** 2 + (j - 220) ** 2 + (k - 200) ** 2) < 60 ** 2] = 150  # an organ
ct += rng.integers(-20, 20, ct.shape, dtype=np.int16)
nib.save(nib.Nifti1Image(ct, np.diag([0.8, 0.8, 1.25, 1.0])), sys.argv[1])
PY
fi
if [ ! -f "$work/run/checkpoint_latest.safetensors" ]; then
  "$vox" synthetic "$work/data" --cases 4 --test 0 --size 64,64,64 > /dev/null 2>&1
  "$vox" train --data "$work/data" --run "$work/run" --epochs 1 --iterations 1 --patch 128,128,128 --channels 8,16,32,64 --batch 1 > /dev/null 2>&1
fi
/usr/bin/time -v "$vox" infer --model "$work/run" --input "$work/ct.nii.gz" --output "$work/prediction.nii.gz" --overlap 0.25 \
  2> "$work/infer.log" > /dev/null
grep -E "slab accumulators|Maximum resident|Elapsed" "$work/infer.log"
rss_kib="$(awk '/Maximum resident/ {print $NF}' "$work/infer.log")"
voxels=$((512 * 512 * 400))
echo "volume: 512 x 512 x 400 = $voxels voxels; the int16 input is $((voxels * 2 / 1048576)) MiB, one float32 copy $((voxels * 4 / 1048576)) MiB"
echo "full-volume float32 accumulators for 2 classes plus their weight map (MONAI's default): $((voxels * 4 * 3 / 1048576)) MiB on their own"
echo "peak_rss_mib=$((rss_kib / 1024))"
