#!/usr/bin/env bash
# One of `vox bench`'s models on the CPU: vox against the latest PyTorch from PyPI, Debian's
# python3-torch, ONNX Runtime and OpenVINO, one after the other in one run, with the same thread
# count. Training iterations are forward + loss (DiceCE for the U-Nets, cross-entropy for the
# classifier) + backward + Adam; inference iterations are the forward pass. Writes the markdown
# table between the "peers MODEL" markers of docs/perf.md and prints it.
#   benchmarks/peers/model_vs_peers.sh MODEL SIZE BATCH [ITERS] [THREADS] [VOX_BINARY]
# MODEL is monai-unet (the seed U-Net: MONAI UNet, 16-256 channels, 2 residual units), unet3d
# (MLPerf, filters 32-320) or resnet3d-18 (MONAI's resnet18); SIZE is the cube's edge.
# The issue's runs: monai-unet 96 1, unet3d 64 1, resnet3d-18 64 2 (unet_vs_peers.sh runs the first).
# The PyPI packages go to a virtual environment in $VOX_PEER_VENV (default
# ~/.cache/vox/peers-venv), created on first use (torch pulls about 5 GB).
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:?usage: model_vs_peers.sh MODEL SIZE BATCH [ITERS] [THREADS] [VOX_BINARY]}"; size="${2:?SIZE}"; batch="${3:?BATCH}"
iters="${4:-10}"; threads="${5:-2}"; vox="${6:-build/release/tools/vox}"
case "$model" in monai-unet | unet3d | resnet3d-18) ;; *) echo "model_vs_peers.sh: MODEL must be monai-unet, unet3d or resnet3d-18, got $model" >&2; exit 2 ;; esac
venv="${VOX_PEER_VENV:-$HOME/.cache/vox/peers-venv}"
source scripts/deps.sh
source benchmarks/peers/peer_common.sh
install_debian_packages python3-torch python3-numpy python3-venv
if [ ! -x "$vox" ]; then
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release > /dev/null
  cmake --build build/release -j"$(nproc)" --target vox_cli
fi
ensure_peer_venv "$venv"
# Debian's torch runs MONAI from a venv that sees the system packages
source tests/parity/monai_venv.sh
monai_venv="${VOX_MONAI_VENV:-$HOME/.cache/vox/monai-venv}"
ensure_monai_venv "$monai_venv"
debian_python="$monai_venv/bin/python"

peer() { "$1" benchmarks/peers/model_peer.py --model "$model" --size "$size" --batch "$batch" --iters "$iters" --threads "$threads" "${@:2}"; }
bench() { "$vox" bench --model "$model" --size "$size" --batch "$batch" --iters "$iters" --threads "$threads" "$@"; }

torch_version="$("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
debian_version="$("$debian_python" -c 'import torch; print(torch.__version__)')"
read -r vox_train vox_train_rss < <(measure "vox train" bench --mode train)
read -r pt_train pt_train_rss < <(measure "torch $torch_version train" peer "$venv/bin/python" --runtime torch --mode train)
read -r deb_train deb_train_rss < <(measure "torch $debian_version train" peer "$debian_python" --runtime torch --mode train)
read -r vox_infer vox_infer_rss < <(measure "vox infer" bench --mode infer)
read -r pt_infer pt_infer_rss < <(measure "torch $torch_version infer" peer "$venv/bin/python" --runtime torch --mode infer)
read -r deb_infer deb_infer_rss < <(measure "torch $debian_version infer" peer "$debian_python" --runtime torch --mode infer)
read -r ort_infer ort_infer_rss < <(measure "onnxruntime infer" peer "$venv/bin/python" --runtime onnxruntime --mode infer)
read -r ov_infer ov_infer_rss < <(measure "openvino infer" peer "$venv/bin/python" --runtime openvino --mode infer)

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
table="$(cat <<EOF
Command: \`bash benchmarks/peers/model_vs_peers.sh $model $size $batch $iters $threads\` ($(date -u +%Y-%m-%d); $model, ${size}^3, batch $batch; $iters timed iterations
after 2 warm-up ones, median; $threads threads everywhere; peak RSS of the whole process, Python's
interpreter and imports included). Ratio = peer time / vox time (above 1: vox faster).

| mode | runtime | ms per iteration | ratio | peak RSS MiB |
| --- | --- | --- | --- | --- |
| train | vox | $vox_train | 1.00 | $vox_train_rss |
| train | PyTorch $torch_version (PyPI) | $pt_train | $(ratio "$pt_train" "$vox_train") | $pt_train_rss |
| train | PyTorch $debian_version (Debian) | $deb_train | $(ratio "$deb_train" "$vox_train") | $deb_train_rss |
| infer | vox | $vox_infer | 1.00 | $vox_infer_rss |
| infer | PyTorch $torch_version (PyPI) | $pt_infer | $(ratio "$pt_infer" "$vox_infer") | $pt_infer_rss |
| infer | PyTorch $debian_version (Debian) | $deb_infer | $(ratio "$deb_infer" "$vox_infer") | $deb_infer_rss |
| infer | ONNX Runtime | $ort_infer | $(ratio "$ort_infer" "$vox_infer") | $ort_infer_rss |
| infer | OpenVINO | $ov_infer | $(ratio "$ov_infer" "$vox_infer") | $ov_infer_rss |
EOF
)"
echo "$table"
write_perf_table "peers $model" "$model at ${size}^3 on the CPU: vox against PyTorch, ONNX Runtime and OpenVINO" "$table"
