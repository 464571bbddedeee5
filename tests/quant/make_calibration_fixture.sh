#!/usr/bin/env bash
# Calibration fixture: ONNX Runtime's calibrators from PyPI, in the peers' virtual environment
# (benchmarks/peers/), created here with onnxruntime, onnx and numpy alone where it is missing.
# Writes OUTDIR/batches.f32 and OUTDIR/calibration.json.
#   bash make_calibration_fixture.sh OUTDIR
set -euo pipefail
out="$1"
venv="${VOX_PEER_VENV:-$HOME/.cache/vox/peers-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import onnxruntime.quantization, onnx, numpy" 2> /dev/null; then
  echo "== installing onnxruntime, onnx and numpy from PyPI into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check onnxruntime onnx numpy
fi
"$venv/bin/python" "$(dirname "$0")/make_calibration_fixture.py" "$out"
