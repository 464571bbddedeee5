#!/usr/bin/env bash
# The whole test suite: install what is missing; where nvcc is installed, build the CUDA backend
# and run its tests (label gpu; without a GPU they report themselves skipped); fuzz every parser
# for a bounded time; build and run every test under AddressSanitizer and
# UndefinedBehaviorSanitizer; and last, the release build and every test (CTest: doctest
# programs, PyTorch parity, the main job), so that the run ends with the main suite's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_debian_packages "${VOX_BUILD_PACKAGES[@]}" "${VOX_TEST_PACKAGES[@]}"
jobs="$(nproc)"

nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
if [ -x "$nvcc" ]; then
  echo "== vox: the CUDA backend and its tests (label gpu), compiled with $("$nvcc" --version | tail -1)"
  cmake -S . -B build/cuda -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" -DVOX_ENABLE_CUDA=ON \
    -DVOX_BUILD_TESTS=ON -DVOX_BUILD_EXAMPLES=OFF -DVOX_BUILD_BENCHMARKS=OFF > /dev/null
  nccl_test=""  # the NCCL process group's test, where NCCL came with the toolkit
  [ -e "$(dirname "$nvcc")/../include/nccl.h" ] && nccl_test=test_dist_nccl
  cmake --build build/cuda -j"$jobs" --target test_cuda test_cuda_hardening test_amp_cuda test_int8_cuda $nccl_test test_parity_cuda vox_cuda_ops_timing vox_cli
  (cd build/cuda && ctest -L gpu --output-on-failure)
else
  echo "== vox: nvcc not found; the CUDA backend was not compiled"
fi

echo "== vox: every parser's libFuzzer target (clang, ASan + UBSan), 15 seconds each"
bash scripts/fuzz.sh 15

echo "== vox: every test under AddressSanitizer and UndefinedBehaviorSanitizer"
cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DVOX_SANITIZE=ON \
  -DVOX_BUILD_TESTS=ON -DVOX_BUILD_EXAMPLES=ON -DVOX_BUILD_BENCHMARKS=OFF > /dev/null
cmake --build build/sanitize -j"$jobs"
(cd build/sanitize && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest --output-on-failure -j"$jobs")

echo "== vox: release build and tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DVOX_BUILD_TESTS=ON -DVOX_BUILD_EXAMPLES=ON -DVOX_BUILD_BENCHMARKS=OFF -DVOX_SANITIZE=OFF > /dev/null
cmake --build build/release -j"$jobs"
(cd build/release && ctest --output-on-failure -j"$jobs")
