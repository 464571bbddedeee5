#!/usr/bin/env bash
# A model's training step and inference on the GPU, vox against PyTorch in one run (the CUDA
# backend's acceptance table: MONAI U-Net, 128^3, batch 2). vox runs `vox bench --device cuda`;
# PyTorch runs benchmarks/peers/model_peer.py --device cuda (f32, TF32 off on both sides,
# channels_last_3d and cudnn.benchmark for PyTorch). Needs nvcc, a GPU, and a python3 with a
# CUDA PyTorch and MONAI. Prints both programs' raw lines, then a markdown table: medians, the
# ratio PyTorch / vox (above 1: vox faster) and the peak device memory of each (vox's caching
# allocator's peak allocated bytes; PyTorch's max_memory_allocated). vox runs each mode twice:
# eagerly, and replaying a CUDA graph of the iteration (`vox bench --graph`).
#   bash benchmarks/peers/gpu_model_vs_torch.sh [MODEL] [SIZE] [BATCH] [ITERS] [BUILD_DIR] [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:-monai-unet}"; size="${2:-128}"; batch="${3:-2}"; iters="${4:-20}"
build="${5:-build/gpu}"; python="${6:-python3}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DVOX_ENABLE_CUDA=ON -DVOX_BUILD_TESTS=OFF -DVOX_BUILD_EXAMPLES=OFF > /dev/null
cmake --build "$build" -j"$(nproc)" --target vox_cli > /dev/null
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for mode in train infer; do
  echo "== vox, $mode"
  "$build/tools/vox" bench --device cuda --model "$model" --size "$size" --batch "$batch" --mode "$mode" --iters "$iters" |
    tee /dev/stderr | sed -n "s/^\(ms_per_iter\|peak_gpu_mib\)=/vox $mode \1 /p" >> "$log"
  echo "== vox, $mode, replaying a CUDA graph"
  "$build/tools/vox" bench --device cuda --graph --model "$model" --size "$size" --batch "$batch" --mode "$mode" \
    --iters "$iters" | tee /dev/stderr | sed -n "s/^\(ms_per_iter\|peak_gpu_mib\)=/vox ${mode}_graph \1 /p" >> "$log"
  echo "== PyTorch, $mode"
  "$python" benchmarks/peers/model_peer.py --device cuda --model "$model" --size "$size" --batch "$batch" --mode "$mode" \
    --iters "$iters" | tee /dev/stderr | sed -n "s/^\(ms_per_iter\|peak_gpu_mib\)=/torch $mode \1 /p" >> "$log"
done
echo
echo "$model, ${size}^3, batch $batch, f32, $iters iterations; $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo
echo "| mode | vox ms | PyTorch ms | ratio (PyTorch / vox) | vox peak MiB | PyTorch peak MiB |"
echo "| --- | --- | --- | --- | --- | --- |"
# vox's graph rows are set against PyTorch's eager step, as the issue's target asks.
awk '{v[$1" "$2" "$3]=$4}
     END {split("train infer train_graph infer_graph", ms, " ");
          for (i = 1; i <= 4; i++) {k = ms[i]; t = k; sub(/_graph/, "", t); name = k; sub(/_graph/, " (vox: CUDA graph)", name);
            printf "| %s | %.1f | %.1f | %.2f | %.0f | %.0f |\n", name, v["vox "k" ms_per_iter"], v["torch "t" ms_per_iter"],
                   v["torch "t" ms_per_iter"] / v["vox "k" ms_per_iter"], v["vox "k" peak_gpu_mib"], v["torch "t" peak_gpu_mib"]}}' "$log"
