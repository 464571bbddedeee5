#!/usr/bin/env bash
# Model parity fixtures: MONAI's own networks (monai 1.2.0 from PyPI, the newest release that runs
# on Debian's python3-torch 1.13) and nnU-Net's (dynamic-network-architectures 0.3.1), installed
# without dependencies into a virtual environment that sees Debian's torch and numpy. Writes the
# fixtures into OUTDIR.
#   bash make_model_fixtures.sh OUTDIR
set -euo pipefail
out="$1"
mkdir -p "$out"
venv="$out/venv"
source "$(dirname "$0")/monai_venv.sh"
ensure_monai_venv "$venv"
"$venv/bin/python" "$(dirname "$0")/make_model_fixtures.py" "$out"
