#!/usr/bin/env bash
# INT8 on the main job's run (main_job_vox_demo, the fixture that ran first): `vox quantize` with
# the default calibration (min-max on the training cases, every layer in INT8) keeps the held-out
# Dice at >= 99.9% of the float network's (MLPerf's 3d-unet-99.9 rule); the INT8 run then goes
# through `vox infer` and `vox evaluate` as the README shows. `vox prune` removes 30% of the
# channels (ranked globally) and fine-tunes for 2 epochs: fewer parameters, the Dice back near the
# float network's, and the pruned run goes through `vox infer` and `vox quantize` too. Misuse is
# refused with status 2.
#   bash tests/cli/quantize_demo.sh VOX F32_DEMO_DIR WORK_DIR
set -euo pipefail
vox="$1" demo="$2" work="$3"
rm -rf "$work"
mkdir -p "$work"
"$vox" quantize --model "$demo/run" --calib "$demo/data" --output "$work/run_int8"
for f in config.json model_int8.safetensors quantization.json sensitivity.png; do
  [ -s "$work/run_int8/$f" ] || { echo "vox quantize wrote no $f"; exit 1; }
done
/usr/bin/python3 - "$work/run_int8/quantization.json" "$work/run_int8/config.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
config = json.load(open(sys.argv[2]))
f, q = report["float_dice"], report["int8_dice"]
print(f"held-out Dice: float {f:.4f}, INT8 {q:.4f} ({100 * q / f:.2f}%), {len(report['layers'])} layers, kernel {report['kernel']}")
assert q >= 0.999 * f, f"INT8 Dice {q} is below 99.9% of the float network's {f}"
assert config["quantization"]["method"] == "minmax" and config["quantization"]["kept_float"] == []
assert all(layer["dice_alone_int8"] is not None for layer in report["layers"] if layer["precision"] == "int8")
PY
case_id=spheres_012
"$vox" infer --model "$work/run_int8" --input "$demo/data/imagesTs/$case_id.nii.gz" --output "$work/$case_id.nii.gz" --precision int8
"$vox" evaluate --pred "$work/$case_id.nii.gz" --gt "$demo/data/labelsTs/$case_id.nii.gz" > "$work/scores.json"
/usr/bin/python3 - "$work/scores.json" <<'PY'
import json, sys
dice = json.load(open(sys.argv[1]))["classes"][0]["dice"]
print(f"vox infer on the INT8 run: Dice {dice:.4f}")
assert dice >= 0.90, f"INT8 inference Dice {dice} below 0.90"
PY
"$vox" prune --model "$demo/run" --data "$demo/data" --output "$work/run_pruned" --amount 0.3 --global --finetune-epochs 2 \
  > "$work/prune.txt"
cat "$work/prune.txt"
/usr/bin/python3 - "$work/prune.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
before = int(re.search(r"run: (\d+) parameters", text).group(1))
after = int(re.search(r"pruned \(.*\): (\d+) parameters", text).group(1))
dice = float(re.search(r"validation Dice ([0-9.]+) \(before", text).group(1))
tuned, float_dice = map(float, re.search(r"fine-tuned 2 epochs: validation Dice ([0-9.]+) .*before pruning: ([0-9.]+)", text).groups())
print(f"pruned: {before} -> {after} parameters, held-out Dice {float_dice:.4f} -> {dice:.4f}, {tuned:.4f} after fine-tuning")
assert after < 0.8 * before, "pruning 30% of the channels left more than 80% of the parameters"
assert dice >= 0.90, f"the pruned network's Dice {dice} is below 0.90"
assert tuned > dice, f"fine-tuning did not raise the pruned network's Dice {dice} (got {tuned})"
assert tuned >= 0.99 * float_dice, f"the fine-tuned pruned network's Dice {tuned} is below 99% of the float network's {float_dice}"
PY
"$vox" infer --model "$work/run_pruned" --input "$demo/data/imagesTs/$case_id.nii.gz" --output "$work/pruned.nii.gz"
"$vox" quantize --model "$work/run_pruned" --calib "$demo/data" --output "$work/run_pruned_int8" --no-sensitivity
"$vox" infer --model "$work/run_pruned_int8" --input "$demo/data/imagesTs/$case_id.nii.gz" --output "$work/pruned_int8.nii.gz"
refused() {  # refused EXPECTED_TEXT COMMAND...: status 2 and the text on stderr
  local expected="$1" status=0
  shift
  "$@" 2> "$work/stderr" > /dev/null || status=$?
  [ "$status" = 2 ] && grep -q -e "$expected" "$work/stderr" || { echo "expected status 2 and '$expected' from: $*"; cat "$work/stderr"; exit 1; }
}
refused "takes an INT8 run" "$vox" infer --model "$demo/run" --input "$demo/data/imagesTs/$case_id.nii.gz" --output "$work/x.nii.gz" --precision int8
refused "does not apply" "$vox" infer --model "$work/run_int8" --input "$demo/data/imagesTs/$case_id.nii.gz" --output "$work/x.nii.gz" --precision bf16
refused "already an INT8 run" "$vox" quantize --model "$work/run_int8" --calib "$demo/data" --output "$work/again"
refused "--method takes" "$vox" quantize --model "$demo/run" --calib "$demo/data" --output "$work/bad" --method kl
refused "exactly one of" "$vox" quantize --model "$demo/run" --output "$work/bad"
refused "--amount must be" "$vox" prune --model "$demo/run" --data "$demo/data" --output "$work/bad" --amount 1
refused "takes a float run" "$vox" train --data "$demo/data" --init "$work/run_int8" --run "$work/bad" --epochs 1
refused "already pruned" "$vox" prune --model "$work/run_pruned" --data "$demo/data" --output "$work/bad"
"$vox" bench --model monai-unet --size 32 --mode infer --iters 1 --warmup 1 --precision int8 > "$work/bench.txt"
grep -q "infer in int8" "$work/bench.txt"
echo "INT8 and pruning on the main job's run: ok"
