#!/usr/bin/env bash
# `vox demo --amp bf16`: the main job under bf16 autocast reaches held-out Dice >= 0.90, within
# 0.01 of the f32 demo (main_job_vox_demo, the fixture that ran first, same data and seed).
#   bash tests/cli/demo_bf16.sh VOX F32_DEMO_DIR WORK_DIR
set -euo pipefail
vox="$1" f32="$2" work="$3"
rm -rf "$work"
"$vox" demo --amp bf16 --dir "$work"
/usr/bin/python3 - "$f32/summary.json" "$work/summary.json" <<'PY'
import json, sys
f32 = json.load(open(sys.argv[1]))["mean_dice"]
bf16 = json.load(open(sys.argv[2]))["mean_dice"]
print(f"held-out mean Dice: f32 {f32:.4f}, bf16 autocast {bf16:.4f}")
assert bf16 >= 0.90, f"bf16 demo Dice {bf16} below 0.90"
assert abs(bf16 - f32) <= 0.01, f"bf16 demo Dice {bf16} is more than 0.01 from the f32 demo's {f32}"
PY
