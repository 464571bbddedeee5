#!/usr/bin/env bash
# Mixed precision on the CPU: one of `vox bench`'s models in vox's f32 and bf16 autocast against
# PyTorch's f32 and bf16 autocast (the latest from PyPI) and OpenVINO's f32 and bf16 inference, one
# after the other in one run with the same thread count. Writes the markdown table between the
# "bf16 MODEL" markers of docs/perf.md and prints it.
#   benchmarks/peers/bf16_vs_peers.sh MODEL SIZE BATCH [ITERS] [THREADS] [VOX_BINARY]
# The issue's runs: monai-unet 96 1, unet3d 64 1, resnet3d-18 64 2. The PyPI packages come from
# the same virtual environment as model_vs_peers.sh ($VOX_PEER_VENV, peer_common.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:?usage: bf16_vs_peers.sh MODEL SIZE BATCH [ITERS] [THREADS] [VOX_BINARY]}"; size="${2:?SIZE}"; batch="${3:?BATCH}"
iters="${4:-10}"; threads="${5:-2}"; vox="${6:-build/release/tools/vox}"
case "$model" in monai-unet | unet3d | resnet3d-18) ;; *) echo "bf16_vs_peers.sh: MODEL must be monai-unet, unet3d or resnet3d-18, got $model" >&2; exit 2 ;; esac
venv="${VOX_PEER_VENV:-$HOME/.cache/vox/peers-venv}"
source benchmarks/peers/peer_common.sh
if [ ! -x "$vox" ]; then
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release > /dev/null
  cmake --build build/release -j"$(nproc)" --target vox_cli
fi
ensure_peer_venv "$venv"

peer() { "$venv/bin/python" benchmarks/peers/model_peer.py --model "$model" --size "$size" --batch "$batch" --iters "$iters" --threads "$threads" "$@"; }
bench() { "$vox" bench --model "$model" --size "$size" --batch "$batch" --iters "$iters" --threads "$threads" "$@"; }
torch_version="$("$venv/bin/python" -c 'import torch; print(torch.__version__)')"

rows=""
for mode in train infer; do
  read -r vox32 vox32_rss < <(measure "vox $mode f32" bench --mode "$mode" --precision f32)
  read -r vox16 vox16_rss < <(measure "vox $mode bf16" bench --mode "$mode" --precision bf16)
  read -r pt32 pt32_rss < <(measure "torch $mode f32" peer --runtime torch --mode "$mode" --precision f32)
  read -r pt16 pt16_rss < <(measure "torch $mode bf16" peer --runtime torch --mode "$mode" --precision bf16)
  r() { python3 -c "print(f'{$1 / $vox16:.2f}')"; }
  rows+="| $mode | vox f32 | $vox32 | $(r "$vox32") | $vox32_rss |"$'\n'
  rows+="| $mode | vox bf16 autocast | $vox16 | 1.00 | $vox16_rss |"$'\n'
  rows+="| $mode | PyTorch $torch_version f32 | $pt32 | $(r "$pt32") | $pt32_rss |"$'\n'
  rows+="| $mode | PyTorch $torch_version bf16 autocast | $pt16 | $(r "$pt16") | $pt16_rss |"$'\n'
  if [ "$mode" = infer ]; then
    read -r ov32 ov32_rss < <(measure "openvino f32" peer --runtime openvino --mode infer --precision f32)
    read -r ov16 ov16_rss < <(measure "openvino bf16" peer --runtime openvino --mode infer --precision bf16)
    rows+="| infer | OpenVINO f32 | $ov32 | $(r "$ov32") | $ov32_rss |"$'\n'
    rows+="| infer | OpenVINO bf16 | $ov16 | $(r "$ov16") | $ov16_rss |"$'\n'
  fi
done

table="$(cat <<EOF
Command: \`bash benchmarks/peers/bf16_vs_peers.sh $model $size $batch $iters $threads\` ($(date -u +%Y-%m-%d); $model, ${size}^3, batch $batch; $iters timed iterations
after 2 warm-up ones, median; $threads threads everywhere; peak RSS of the whole process). Ratio =
that runtime's time / vox bf16's time (above 1: vox bf16 faster).

| mode | runtime | ms per iteration | ratio | peak RSS MiB |
| --- | --- | --- | --- | --- |
${rows%$'\n'}
EOF
)"
echo "$table"
write_perf_table "bf16 $model" "$model at ${size}^3 on the CPU in bf16: vox against PyTorch and OpenVINO" "$table"
