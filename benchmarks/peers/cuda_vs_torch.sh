#!/usr/bin/env bash
# vox's CUDA ops against PyTorch's on the same GPU, in one run: builds vox_cuda_ops_timing
# (needs nvcc), runs it and benchmarks/peers/cuda_ops_torch.py (needs a python3 with a CUDA
# PyTorch), prints both programs' raw lines, a markdown table of medians and ratios (PyTorch
# time / vox time: above 1, vox is faster), and one of vox's implicit GEMM against cuDNN.
#   bash benchmarks/peers/cuda_vs_torch.sh [BUILD_DIR] [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build/gpu}"; python="${2:-python3}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DVOX_ENABLE_CUDA=ON -DVOX_BUILD_TESTS=OFF -DVOX_BUILD_EXAMPLES=OFF > /dev/null
cmake --build "$build" -j"$(nproc)" --target vox_cuda_ops_timing > /dev/null
log="$(mktemp)"
"$build/benchmarks/gpu/vox_cuda_ops_timing" | tee "$log"
"$python" benchmarks/peers/cuda_ops_torch.py | tee -a "$log"
echo
echo "| op | vox ms | torch ms | vox rate | torch rate | ratio (torch / vox) |"
echo "| --- | --- | --- | --- | --- | --- |"
awk '$1=="vox" {v[$2]=$3; vr[$2]=$4" "$5; order[++n]=$2} $1=="torch" {t[$2]=$3; tr[$2]=$4" "$5}
     END {for (i=1;i<=n;i++) {k=order[i]; if (k in t) printf "| %s | %.3f | %.3f | %s | %s | %.2f |\n", k, v[k], t[k], vr[k], tr[k], t[k]/v[k]}}' "$log"
# vox's implicit GEMM (f32 CUDA cores, f16 tensor cores) against cuDNN, both called by vox.
echo
echo "| op | implicit GEMM ms | cuDNN ms | implicit GEMM rate | cuDNN rate | ratio (cuDNN / implicit GEMM) |"
echo "| --- | --- | --- | --- | --- | --- |"
awk '$1=="vox" {v[$2]=$3; vr[$2]=$4" "$5; order[++n]=$2}
     END {for (i=1;i<=n;i++) {k=order[i]; if (k !~ /_implicit_gemm$/) continue; b=k; sub(/_implicit_gemm$/, "", b);
          printf "| %s | %.3f | %.3f | %s | %s | %.2f |\n", b, v[k], v[b], vr[k], vr[b], v[b]/v[k]}}' "$log"
rm -f "$log"
