#!/usr/bin/env bash
# On a machine with a CUDA GPU: build the CUDA backend, run the tests labelled gpu, run the op
# tests again under compute-sanitizer's memcheck, train on the built-in data (eager, then with a
# CUDA graph) and infer with the result on the GPU and on the CPU, then time vox's CUDA ops
# (conv3d passes included) and the MONAI U-Net (128^3, batch 2, training step and inference)
# against PyTorch's in one run. Everything is logged into LOG_DIR (default build/gpu-logs), the
# device line first.
#   bash scripts/gpu_check.sh [LOG_DIR] [STAGE ...]
# STAGE: build, test, memcheck, train, ops, model; all of them, in that order, by default. The
# device tool allows 10 minutes a call, so a session may run them a few at a time: the build
# stays in build/gpu between calls.
# DOCTEST_DIR may name a doctest CMake package directory where doctest is not installed.
# VOX_WHEELS may name a folder with a MONAI wheel, installed (without dependencies) for the
# model comparison where python3 has no MONAI; the GPU machines reach no package index.
set -uo pipefail
cd "$(dirname "$0")/.."
logs="${1:-build/gpu-logs}"
shift || true
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build test memcheck train ops model)
mkdir -p "$logs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logs/device.txt"
nvcc --version | tail -1 | tee -a "$logs/device.txt"
status=0
for stage in "${stages[@]}"; do
  echo "== $stage ($(date -u +%H:%M:%S))"
  case "$stage" in
    build)
      extra=()
      [ -n "${DOCTEST_DIR:-}" ] && extra+=("-Ddoctest_DIR=$DOCTEST_DIR")
      # The parity fixtures come from the python3 on PATH, the one with PyTorch on the GPU machines.
      cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DVOX_ENABLE_CUDA=ON -DVOX_BUILD_TESTS=ON -DVOX_BUILD_EXAMPLES=OFF \
        -DVOX_PYTHON="$(command -v python3)" -DVOX_ENABLE_MPI="$(command -v mpirun > /dev/null && echo ON || echo OFF)" "${extra[@]}" \
        > "$logs/configure.log" 2>&1 || { tail -30 "$logs/configure.log"; exit 1; }
      cmake --build build/gpu -j"$(nproc)" --target test_cuda test_cuda_hardening test_amp_cuda test_int8_cuda test_dist_nccl test_parity_cuda vox_cuda_ops_timing vox_cli > "$logs/build.log" 2>&1 ||
        { tail -40 "$logs/build.log"; exit 1; } ;;
    test)
      # -V: each program's whole output (doctest's counts included) goes into the log.
      (cd build/gpu && ctest -L gpu -V) > "$logs/ctest_gpu.log" 2>&1 || status=1
      grep -E "tests passed|tests failed|\[doctest\] (test cases|assertions)" "$logs/ctest_gpu.log" ;;
    memcheck)
      # The op tests; the model-sized cases (a U-Net step, the trainer) only repeat their ops.
      if command -v compute-sanitizer > /dev/null; then
        compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 build/gpu/tests/test_cuda \
          --test-case-exclude="*U-Net*,*trainer*" > "$logs/memcheck.log" 2>&1 || status=1
        tail -3 "$logs/memcheck.log"
      else
        echo "compute-sanitizer is not installed: no memcheck" | tee "$logs/memcheck.log"
        status=1
      fi ;;
    train)
      # The main job on the GPU: the built-in synthetic data, eagerly and replaying a CUDA graph.
      for mode in eager graph; do
        flags=(--device cuda)
        [ "$mode" = graph ] && flags+=(--cuda-graph)
        build/gpu/tools/vox train --synthetic --run "build/gpu-run-$mode" --epochs 3 "${flags[@]}" > "$logs/train_$mode.log" 2>&1 || status=1
        tail -2 "$logs/train_$mode.log"
      done
      # The trained network on a test case, on the GPU and on the CPU: the labels should agree.
      case_in="$(ls build/gpu-run-eager/synthetic-data/imagesTs/*.nii.gz | head -1)"
      for device in cuda cpu; do
        build/gpu/tools/vox infer --model build/gpu-run-eager --input "$case_in" --output "build/gpu-infer-$device.nii.gz" \
          --device "$device" >> "$logs/train_eager.log" 2>&1 || status=1
      done
      build/gpu/tools/vox evaluate --pred build/gpu-infer-cuda.nii.gz --gt build/gpu-infer-cpu.nii.gz 2>&1 |
        tee "$logs/infer_gpu_vs_cpu.json" || status=1 ;;
    ops)
      bash benchmarks/peers/cuda_vs_torch.sh build/gpu python3 2>&1 | tee "$logs/bench_vs_torch.log" || status=1 ;;
    model)
      if ! python3 -c "import monai" 2> /dev/null && [ -n "${VOX_WHEELS:-}" ]; then
        site="$(mktemp -d)"
        python3 -m pip install -q --no-deps --no-index --find-links "$VOX_WHEELS" --target "$site" monai &&
          export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
      fi
      bash benchmarks/peers/gpu_model_vs_torch.sh monai-unet 128 2 20 build/gpu python3 2>&1 | tee "$logs/unet_vs_torch.log" || status=1 ;;
    *) echo "unknown stage $stage (build, test, memcheck, train, ops, model)"; exit 2 ;;
  esac
done
exit $status
