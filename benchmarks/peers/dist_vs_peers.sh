#!/usr/bin/env bash
# Data-parallel training on one machine: one training step of a `vox bench` model with vox on
# 1 rank x THREADS threads (the whole batch), vox on RANKS ranks x 1 thread (mpirun; the batch
# shared out), and PyTorch DDP (gloo, the latest from PyPI) on RANKS ranks x 1 thread, one after
# the other in one run. Reports vox's allreduce time per step and how much of it the backward
# pass hides. Writes the table between the "dist MODEL" markers of docs/perf.md and prints it.
#   benchmarks/peers/dist_vs_peers.sh MODEL SIZE GLOBAL_BATCH [ITERS] [RANKS] [VOX_BINARY]
# The issue's run: monai-unet 96 2 10 2.
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:?usage: dist_vs_peers.sh MODEL SIZE GLOBAL_BATCH [ITERS] [RANKS] [VOX_BINARY]}"; size="${2:?SIZE}"; batch="${3:?GLOBAL_BATCH}"
iters="${4:-10}"; ranks="${5:-2}"; vox="${6:-build/release/tools/vox}"
[ $((batch % ranks)) -eq 0 ] || { echo "dist_vs_peers.sh: GLOBAL_BATCH $batch must be a multiple of RANKS $ranks" >&2; exit 2; }
venv="${VOX_PEER_VENV:-$HOME/.cache/vox/peers-venv}"
source benchmarks/peers/peer_common.sh
ensure_peer_venv "$venv"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
per_rank=$((batch / ranks))
common=(--model "$model" --size "$size" --iters "$iters" --mode train)
log="$(mktemp)"
read -r one one_rss < <(measure "vox 1 rank x $ranks threads" "$vox" bench "${common[@]}" --batch "$batch" --threads "$ranks")
echo "== vox $ranks ranks x 1 thread: mpirun -np $ranks $vox bench ${common[*]} --batch $per_rank --threads 1" >&2
mpirun --oversubscribe -np "$ranks" --bind-to core "$vox" bench "${common[@]}" --batch "$per_rank" --threads 1 > "$log" 2>&1 ||
  { cat "$log" >&2; exit 1; }
grep -v "^iteration" "$log" >&2 || true
many="$(sed -n 's/^ms_per_iter=//p' "$log")" comm="$(sed -n 's/^comm_ms=//p' "$log")" exposed="$(sed -n 's/^exposed_comm_ms=//p' "$log")"
read -r ddp ddp_rss < <(measure "torch DDP $ranks ranks x 1 thread" "$venv/bin/python" benchmarks/peers/ddp_peer.py --model "$model" --size "$size" \
  --batch "$per_rank" --ranks "$ranks" --threads 1 --iters "$iters")
rm -f "$log"
torch_version="$("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
table="$(python3 - "$model" "$size" "$batch" "$ranks" "$one" "$many" "$comm" "$exposed" "$ddp" "$torch_version" <<'PY'
import sys
model, size, batch, ranks = sys.argv[1:5]
one, many, comm, exposed, ddp = map(float, sys.argv[5:10])
torch_version = sys.argv[10]
hidden = 100 * (1 - min(1.0, exposed / comm)) if comm > 0 else 100
print(f"{model} {size}^3, global batch {batch}, one training step (median ms; ratio = that / vox's {ranks}-rank step):\n")
print("| run | ms | ratio |\n| --- | --- | --- |")
print(f"| vox, {ranks} ranks x 1 thread (MPI) | {many:.1f} | 1.00 |")
print(f"| vox, 1 rank x {ranks} threads | {one:.1f} | {one / many:.2f} |")
print(f"| PyTorch {torch_version} DDP (gloo), {ranks} ranks x 1 thread | {ddp:.1f} | {ddp / many:.2f} |")
print(f"\nvox's allreduces: {comm:.1f} ms per step, {exposed:.1f} ms of it after the backward pass ({hidden:.0f}% hidden behind it).")
PY
)"
cmd="bash benchmarks/peers/dist_vs_peers.sh $model $size $batch $iters $ranks"
write_perf_table "dist $model" "Data-parallel training on one machine: $model" "$table

(\`$cmd\`, $(date -u +%F))"
echo "$table"
