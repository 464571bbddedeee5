#!/usr/bin/env bash
# GradScaler fixture: torch.amp.GradScaler needs PyTorch >= 2.3 on the CPU (Debian's 1.13 has it
# for CUDA only), so it runs in a virtual environment with PyTorch from PyPI: the peers' one
# (benchmarks/peers/), created here with torch and numpy alone where it is missing (about a
# minute). Writes OUTDIR/scaler.json.
#   bash make_scaler_fixture.sh OUTDIR
set -euo pipefail
out="$1"
venv="${VOX_PEER_VENV:-$HOME/.cache/vox/peers-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, numpy; torch.amp.GradScaler('cpu')" 2> /dev/null; then
  echo "== creating $venv with torch and numpy from PyPI"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch numpy
fi
"$venv/bin/python" "$(dirname "$0")/make_scaler_fixture.py" "$out"
