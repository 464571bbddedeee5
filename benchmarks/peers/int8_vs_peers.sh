#!/usr/bin/env bash
# INT8 inference on the CPU: one of `vox bench`'s models in vox's f32 and INT8 (every convolution
# in INT8, min-max calibrated on the input) against OpenVINO's default (bf16 on a CPU with bf16
# instructions) and its INT8 through NNCF's post-training quantization, and ONNX Runtime's f32 and
# static INT8 (QDQ, per-channel), one after the other in one run with the same thread count. The
# peers calibrate on 4 random inputs (model_peer.py --precision int8). Writes the markdown table
# between the "int8 MODEL" markers of docs/perf.md and prints it.
#   benchmarks/peers/int8_vs_peers.sh MODEL SIZE BATCH [ITERS] [THREADS] [VOX_BINARY]
# The issue's runs: monai-unet 96 1, unet3d 64 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:?usage: int8_vs_peers.sh MODEL SIZE BATCH [ITERS] [THREADS] [VOX_BINARY]}"; size="${2:?SIZE}"; batch="${3:?BATCH}"
iters="${4:-10}"; threads="${5:-2}"; vox="${6:-build/release/tools/vox}"
case "$model" in monai-unet | unet3d | resnet3d-18) ;; *) echo "int8_vs_peers.sh: MODEL must be monai-unet, unet3d or resnet3d-18, got $model" >&2; exit 2 ;; esac
venv="${VOX_PEER_VENV:-$HOME/.cache/vox/peers-venv}"
source benchmarks/peers/peer_common.sh
if [ ! -x "$vox" ]; then
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release > /dev/null
  cmake --build build/release -j"$(nproc)" --target vox_cli
fi
ensure_peer_venv "$venv"
ensure_nncf "$venv"

peer() { "$venv/bin/python" benchmarks/peers/model_peer.py --model "$model" --size "$size" --batch "$batch" --iters "$iters" --threads "$threads" --mode infer "$@"; }
bench() { "$vox" bench --model "$model" --size "$size" --batch "$batch" --iters "$iters" --threads "$threads" --mode infer "$@"; }
versions="$("$venv/bin/python" -c 'import openvino, nncf, onnxruntime; print("OpenVINO " + openvino.__version__.split("-")[0] + ", NNCF " + nncf.__version__ + ", ONNX Runtime " + onnxruntime.__version__)')"

read -r vox32 vox32_rss < <(measure "vox f32" bench --precision f32)
read -r vox8 vox8_rss < <(measure "vox int8" bench --precision int8)
read -r ov16 ov16_rss < <(measure "openvino default (bf16)" peer --runtime openvino --precision bf16)
read -r ov8 ov8_rss < <(measure "openvino nncf int8" peer --runtime openvino --precision int8)
read -r ort32 ort32_rss < <(measure "onnxruntime f32" peer --runtime onnxruntime --precision f32)
read -r ort8 ort8_rss < <(measure "onnxruntime int8" peer --runtime onnxruntime --precision int8)
r() { python3 -c "print(f'{$1 / $vox8:.2f}')"; }
table="$(cat <<TABLE
Command: \`bash benchmarks/peers/int8_vs_peers.sh $model $size $batch $iters $threads\` ($(date -u +%Y-%m-%d); $model, ${size}^3, batch $batch, inference;
$iters timed iterations after 2 warm-up ones, median; $threads threads everywhere; $versions; peak RSS of the
whole process). Ratio = that runtime's time / vox INT8's time (above 1: vox INT8 faster).

| runtime | ms per iteration | ratio | peak RSS MiB |
| --- | --- | --- | --- |
| vox f32 | $vox32 | $(r "$vox32") | $vox32_rss |
| vox INT8 | $vox8 | 1.00 | $vox8_rss |
| OpenVINO default (bf16) | $ov16 | $(r "$ov16") | $ov16_rss |
| OpenVINO INT8 (NNCF) | $ov8 | $(r "$ov8") | $ov8_rss |
| ONNX Runtime f32 | $ort32 | $(r "$ort32") | $ort32_rss |
| ONNX Runtime INT8 (QDQ, per-channel) | $ort8 | $(r "$ort8") | $ort8_rss |
TABLE
)"
echo "$table"
write_perf_table "int8 $model" "$model at ${size}^3 on the CPU in INT8: vox against OpenVINO and ONNX Runtime" "$table"
